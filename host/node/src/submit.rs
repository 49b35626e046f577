//! [`Submitter`]: what it takes to queue a command, without the node: the
//! entity check (type deployed, id valid), the command id (the caller's,
//! with its digest, or a generated one), the deadline, and the queue of the
//! shard's worker. The node's API calls and its courier's local deliveries
//! share it, so a delivered send is checked exactly like a client's
//! command.
//!
//! Invariant: a command is queued only once all of this holds; what fails
//! here is answered at once and nothing runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use stead_engine::CommandQueue;
use stead_journal::EntityKey;
use stead_runtime::Registry;
use stead_types::Clock;
use stead_types::config::Limits;
use stead_types::shard::shard_of;

use crate::{CommandReply, NodeError};

/// The longest request timeout a command is given, whatever the config says:
/// its deadlines (`now + 2 * timeout`) must not overflow.
const MAX_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// A queued command's outcome, available once its events are durable.
pub struct PendingReply {
    rx: tokio::sync::oneshot::Receiver<Result<CommandReply, NodeError>>,
    /// How long an async caller waits: the request timeout twice over. A
    /// command that started before its deadline finishes within a batch, so
    /// only a stalled journal gets here.
    give_up_after: std::time::Duration,
}

impl PendingReply {
    /// Waits for the outcome. If none comes long after the request deadline
    /// (a stalled disk), says so: the command may still be applied, and a
    /// retry with the same command id tells which.
    pub async fn wait(self) -> Result<CommandReply, NodeError> {
        match tokio::time::timeout(self.give_up_after, self.rx).await {
            Ok(outcome) => outcome
                .map_err(|_| NodeError::ShuttingDown)?,
            Err(_) => Err(NodeError::DeadlineExceeded(
                "no outcome in time; the command may still be applied: retry with the same command id to learn its outcome".into(),
            )),
        }
    }

    /// Waits for the outcome, blocking the thread (not from async code).
    pub fn wait_blocking(self) -> Result<CommandReply, NodeError> {
        self.rx
            .blocking_recv()
            .map_err(|_| NodeError::ShuttingDown)?
    }
}

/// Queues commands (see the module docs). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Submitter {
    pub(crate) registry: Arc<Registry>,
    pub(crate) limits: Limits,
    pub(crate) shard_count: u32,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) queue: CommandQueue,
    /// Prefix of generated command ids, unique per start.
    id_prefix: Arc<str>,
    next_id: Arc<AtomicU64>,
}

impl Submitter {
    pub(crate) fn new(
        registry: Arc<Registry>,
        limits: Limits,
        shard_count: u32,
        clock: Arc<dyn Clock>,
        queue: CommandQueue,
    ) -> Self {
        // Unique per start (a restart is at least a millisecond later).
        let boot = clock.wall_ms();
        Self {
            registry,
            limits,
            shard_count,
            clock,
            queue,
            id_prefix: format!("{boot:x}").into(),
            next_id: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The key of a deployed type's entity with a valid id.
    pub(crate) fn entity_key(
        &self,
        entity_type: &str,
        entity_id: &str,
    ) -> Result<EntityKey, NodeError> {
        if self.registry.get(entity_type).is_none() {
            return Err(NodeError::UnknownType(entity_type.to_owned()));
        }
        check_entity_id(entity_id, self.limits.max_entity_id_bytes)?;
        let shard = shard_of(entity_type, entity_id, self.shard_count);
        Ok(EntityKey::new(shard, entity_type, entity_id))
    }

    /// Queues a command without waiting for it: fails at once if the command
    /// is invalid or the worker's queue is full (`Overloaded`).
    pub(crate) fn submit(
        &self,
        entity_type: &str,
        entity_id: &str,
        command: Vec<u8>,
        command_id: Option<String>,
    ) -> Result<PendingReply, NodeError> {
        let timeout = self.limits.request_timeout.min(MAX_REQUEST_TIMEOUT);
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline_ms = self.clock.mono_ms().saturating_add(timeout_ms);
        Ok(PendingReply {
            rx: self.enqueue(entity_type, entity_id, command, command_id, deadline_ms)?,
            give_up_after: 2 * timeout,
        })
    }

    fn enqueue(
        &self,
        entity_type: &str,
        entity_id: &str,
        command: Vec<u8>,
        command_id: Option<String>,
        deadline_ms: u64,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<CommandReply, NodeError>>, NodeError> {
        let key = self.entity_key(entity_type, entity_id)?;
        let limits = &self.limits;
        if command.len() > limits.max_command_bytes {
            return Err(NodeError::InvalidCommand(format!(
                "command of {} bytes exceeds the limit of {}",
                command.len(),
                limits.max_command_bytes
            )));
        }
        let (command_id, digest) = match command_id {
            Some(id) => {
                if id.is_empty()
                    || id.len() > limits.max_command_id_bytes
                    || id.chars().any(char::is_control)
                {
                    return Err(NodeError::InvalidCommand(format!(
                        "command id must be 1 to {} bytes without control characters",
                        limits.max_command_id_bytes
                    )));
                }
                // The caller may retry it: its command's digest goes along,
                // so a retry with another command is refused.
                let digest: [u8; 32] = Sha256::digest(&command).into();
                (id, Some(digest))
            }
            None => (
                format!(
                    "{}-{}",
                    self.id_prefix,
                    self.next_id.fetch_add(1, Ordering::Relaxed)
                ),
                None,
            ),
        };
        let span = tracing::info_span!(
            "command",
            entity_type = %key.entity_type,
            entity_id = %key.entity_id,
            command_id = %command_id,
            seq_nr = tracing::field::Empty,
        );
        self.queue
            .command(key, command, command_id, digest, deadline_ms, span)
    }
}

/// Entity ids: 1 to `max` bytes of UTF-8 without control characters.
fn check_entity_id(id: &str, max: usize) -> Result<(), NodeError> {
    if id.is_empty() {
        return Err(NodeError::InvalidId("entity id must not be empty".into()));
    }
    if id.len() > max {
        return Err(NodeError::InvalidId(format!(
            "entity id of {} bytes exceeds the limit of {max}",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(NodeError::InvalidId(
            "entity id must not contain control characters".into(),
        ));
    }
    Ok(())
}
