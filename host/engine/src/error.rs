//! [`Error`]: every failure a caller of the engine (and of the node above
//! it) must tell apart. It is the one error type from the shard boundary to
//! the API edge, which maps it to statuses once (`stead-api`'s `errors`).
//!
//! Invariant: whatever the variant, the entity's state and journal are as
//! they were before the failed request (a command either took effect and
//! got its reply, or did nothing; `DeadlineExceeded` after queueing says
//! which is unknown and how to learn it).

use stead_journal::{AppendError, EntityKey, JournalError, ShardId};
use stead_runtime::GuestFault;

use crate::entity::ActivationError;

/// Serde: a forwarded request's error crosses to the node that received it
/// as it was, so the API answers the same status wherever it landed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Error {
    #[error("unknown entity type `{0}`")]
    UnknownType(String),
    #[error("invalid entity id: {0}")]
    InvalidId(String),
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("guest fault in `{entity_type}`: {fault}")]
    GuestFault {
        entity_type: String,
        fault: GuestFault,
    },
    #[error("overloaded: {0}")]
    Overloaded(String),
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    #[error(transparent)]
    Storage(JournalError),
    #[error("conflicting write: {0}")]
    Conflict(String),
    #[error("idempotency key reused: {0}")]
    IdempotencyKeyReused(String),
    #[error("deploy refused: {0}")]
    Deploy(String),
    #[error("this node does not own shard {0}")]
    NotOwner(ShardId),
    /// No node serves the shard yet (it is moving, or its owner died and
    /// its lease has not expired): nothing ran; retry shortly.
    #[error("shard {shard} is moving between nodes: {reason}; nothing ran, retry shortly")]
    ShardMoving { shard: ShardId, reason: String },
    #[error(
        "shard {0} is not served here for now: this node could not renew its lease in time (is the journal reachable?); it is claimed again as soon as possible, retry shortly"
    )]
    LeaseLapsed(ShardId),
    #[error("node configuration: {0}")]
    Config(String),
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn guest(entity_type: &str, fault: GuestFault) -> Self {
        Error::GuestFault {
            entity_type: entity_type.to_owned(),
            fault,
        }
    }

    pub(crate) fn activation(key: &EntityKey, e: ActivationError) -> Self {
        match e {
            ActivationError::Journal(e) => Error::Storage(e),
            ActivationError::Guest(fault) => Error::guest(&key.entity_type, fault),
            ActivationError::Gap { .. } => Error::Storage(JournalError::Corrupt {
                key: key.to_string(),
                reason: e.to_string(),
            }),
        }
    }
}

impl From<AppendError> for Error {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Conflict { .. } => Error::Conflict(e.to_string()),
            AppendError::Fenced { shard, .. } => Error::NotOwner(shard),
            AppendError::Invalid { .. } => Error::Internal(e.to_string()),
            AppendError::Storage(e) => Error::Storage(e),
        }
    }
}

impl From<stead_runtime::RegistryError> for Error {
    fn from(e: stead_runtime::RegistryError) -> Self {
        Error::Deploy(e.to_string())
    }
}

impl From<stead_runtime::DeploymentError> for Error {
    fn from(e: stead_runtime::DeploymentError) -> Self {
        Error::Deploy(e.to_string())
    }
}
