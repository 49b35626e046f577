//! Where the courier hands a delivery: [`Dispatch`], the seam between the
//! node's delivery loop and whoever runs commands. Alone, a node runs them
//! itself ([`LocalDispatch`]); a cluster member sets its router
//! ([`crate::Node::set_dispatch`]), which forwards a command to the node
//! serving its shard.
//!
//! Also here: which outcomes of a delivery are final ([`Verdict`]). A
//! target that accepted or refused a command has answered; anything else
//! (the shard moving, an overloaded worker, an unreachable journal, an
//! outcome unknown) is retried under the same command id, which the
//! target's deduplication turns into one effect.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use crate::submit::Submitter;
use crate::{CommandReply, NodeError};

/// A boxed delivery in flight.
pub type DeliveryFuture = Pin<Box<dyn Future<Output = Result<CommandReply, NodeError>> + Send>>;

/// A command the courier delivers: a send, its acceptance or refusal back
/// to the sender, or a timer's command to its entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub entity_type: String,
    pub entity_id: String,
    pub command: Vec<u8>,
    /// Derived from the delivery's origin, the same on every attempt and
    /// every node: the target's deduplication recognises a repeat.
    pub command_id: String,
}

/// Runs a delivery's command where its entity is served.
pub trait Dispatch: Send + Sync + 'static {
    fn dispatch(&self, delivery: Delivery) -> DeliveryFuture;
}

/// The node alone: every delivery runs on this node's workers.
pub(crate) struct LocalDispatch(pub(crate) Submitter);

impl Dispatch for LocalDispatch {
    fn dispatch(&self, d: Delivery) -> DeliveryFuture {
        let pending = self
            .0
            .submit(&d.entity_type, &d.entity_id, d.command, Some(d.command_id));
        Box::pin(async move { pending?.wait().await })
    }
}

/// The dispatch in use, replaced when the node joins a cluster; `None`
/// once the node stops.
#[derive(Default)]
pub(crate) struct DispatchSlot(RwLock<Option<Arc<dyn Dispatch>>>);

impl DispatchSlot {
    pub(crate) fn set(&self, dispatch: Option<Arc<dyn Dispatch>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = dispatch;
    }

    pub(crate) fn get(&self) -> Option<Arc<dyn Dispatch>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What a delivery's outcome means for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The target took the command (or had taken it: a duplicate).
    Accepted,
    /// The target answered no, for good: its guest rejected the command or
    /// could not run it, or the target cannot exist (an unknown type, an
    /// invalid id). Retrying would not change the answer.
    Refused(String),
    /// No answer yet: try again later under the same command id.
    Retry(String),
}

impl Verdict {
    pub(crate) fn of(outcome: &Result<CommandReply, NodeError>) -> Self {
        match outcome {
            Ok(_) => Verdict::Accepted,
            Err(
                e @ (NodeError::Rejected(_)
                | NodeError::InvalidCommand(_)
                | NodeError::UnknownType(_)
                | NodeError::InvalidId(_)
                | NodeError::GuestFault { .. }
                | NodeError::IdempotencyKeyReused(_)
                | NodeError::Deploy(_)
                | NodeError::Config(_)),
            ) => Verdict::Refused(e.to_string()),
            Err(
                e @ (NodeError::Overloaded(_)
                | NodeError::DeadlineExceeded(_)
                | NodeError::Storage(_)
                | NodeError::Conflict(_)
                | NodeError::NotOwner(_)
                | NodeError::ShardMoving { .. }
                | NodeError::LeaseLapsed(_)
                | NodeError::ShuttingDown
                | NodeError::Internal(_)),
            ) => Verdict::Retry(e.to_string()),
        }
    }
}
