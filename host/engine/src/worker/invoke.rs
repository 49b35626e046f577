//! The middle of a worker's batch: guest calls, through a pool of instances.
//!
//! [`InstancePool`] keeps one idle instance per entity type; [`Pooled`] is an
//! instance taken from it, which goes back when dropped unless a call on it
//! faulted (an instance that trapped, ran out of time or memory, or returned
//! invalid output is never reused). The runtime checks what a guest returns
//! against the limits; this module turns outcomes into staged events,
//! pending replies and errors.
//!
//! Invariant: a command changes its entity in memory only after the guest
//! decided and its output passed the limits; anything else leaves the entity
//! as it was.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use foldhash::HashMap;

use stead_journal::{CommandIdRecord, EntityKey, EventRecord, OutboxSend, Refusal, TimerWrite};
use stead_runtime::{CommandCall, Deployment, GuestFault, GuestInstance, Rejection};

use super::Worker;
use super::commit::{Batch, Pending, Staged};
use crate::Error;
use crate::entity::{ActivationError, activate};
use crate::request::CommandRequest;

/// Idle instances, one per entity type. Lives on its worker's thread.
#[derive(Default)]
pub(crate) struct InstancePool {
    idle: Rc<RefCell<HashMap<String, GuestInstance>>>,
}

impl InstancePool {
    /// An instance of the live `deployment`: the pooled one if it belongs to
    /// that deployment (a new deployment replaces older instances), else a
    /// new one.
    fn take(&self, deployment: Arc<Deployment>) -> Result<Pooled, GuestFault> {
        let name = &deployment.info.name;
        let pooled = self.idle.borrow_mut().remove_entry(name.as_str());
        let (entity_type, instance) = match pooled {
            Some((key, instance)) if instance.deployment_hash == deployment.hash => (key, instance),
            _ => (name.clone(), deployment.instantiate()?),
        };
        Ok(Pooled {
            instance: Some(instance),
            deployment,
            entity_type,
            pool: self.idle.clone(),
            faulted: false,
        })
    }
}

/// An instance out of the pool; back into it on drop unless it faulted.
pub(crate) struct Pooled {
    instance: Option<GuestInstance>,
    /// The deployment the instance belongs to.
    deployment: Arc<Deployment>,
    entity_type: String,
    pool: Rc<RefCell<HashMap<String, GuestInstance>>>,
    faulted: bool,
}

impl Pooled {
    /// The instance (the caller marks it `faulted` if a call of its faults).
    fn get(&mut self) -> &mut GuestInstance {
        self.instance
            .as_mut()
            .expect("a pooled instance is present until dropped")
    }

    /// Runs a guest call; a fault discards the instance.
    fn call<T>(
        &mut self,
        f: impl FnOnce(&mut GuestInstance) -> Result<T, GuestFault>,
    ) -> Result<T, GuestFault> {
        let result = f(self.get());
        if result.is_err() {
            self.faulted = true;
        }
        result
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if !self.faulted
            && let Some(instance) = self.instance.take()
        {
            self.pool
                .borrow_mut()
                .insert(std::mem::take(&mut self.entity_type), instance);
        }
    }
}

/// A command's result before its append.
struct Invoked {
    seq_nr: u64,
    reply: Vec<u8>,
    duplicate: bool,
    /// The entity refused the command (now, or earlier under this id): the
    /// error goes back once the refusal is recorded.
    refused: Option<Error>,
}

/// An earlier outcome of a command id.
enum Duplicate {
    /// The command was accepted: the seq-nr of its last event and its reply.
    Replied(u64, Vec<u8>),
    /// The command was refused, when the entity was at this seq-nr.
    Refused(u64, Error),
}

/// The longest refusal message the index keeps (a longer one is cut).
const MAX_REFUSAL_BYTES: usize = 4096;

impl Worker {
    /// Runs one command: its reply waits in `batch` for the append, or its
    /// error goes back at once.
    pub(crate) async fn handle(&mut self, cmd: CommandRequest, batch: &mut Batch) {
        let CommandRequest {
            key,
            command,
            command_id,
            digest,
            reply,
            span,
            deadline_ms: _,
        } = cmd;
        match self
            .invoke(&key, &command, &command_id, digest.as_ref(), batch)
            .await
        {
            Ok(invoked) => {
                span.record("seq_nr", invoked.seq_nr);
                batch.pending.push(Pending {
                    key,
                    reply_tx: reply,
                    reply: invoked.reply,
                    seq_nr: invoked.seq_nr,
                    duplicate: invoked.duplicate,
                    refused: invoked.refused,
                    digest,
                    span,
                });
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    async fn invoke(
        &mut self,
        key: &EntityKey,
        command: &[u8],
        command_id: &str,
        digest: Option<&[u8; 32]>,
        batch: &mut Batch,
    ) -> Result<Invoked, Error> {
        let mut instance = self.instance_for(&key.entity_type)?;
        self.ensure_active(key, &mut instance).await?;
        // Deduplication: a command id already persisted for this entity gets
        // the original reply (or refusal) and persists nothing.
        match self.find_duplicate(key, command_id, digest, batch).await? {
            Some(Duplicate::Replied(seq_nr, reply)) => {
                tracing::debug!(seq_nr, "duplicate command id: original reply");
                return Ok(Invoked {
                    seq_nr,
                    reply,
                    duplicate: true,
                    refused: None,
                });
            }
            Some(Duplicate::Refused(seq_nr, error)) => {
                tracing::debug!(seq_nr, error = %error, "duplicate command id: original refusal");
                return Ok(Invoked {
                    seq_nr,
                    reply: Vec::new(),
                    duplicate: true,
                    refused: Some(error),
                });
            }
            None => {}
        }
        let entity = self.entities.get(key).ok_or_else(vanished)?;
        let seq_before = entity.seq_nr;
        let call = CommandCall {
            entity_type: &key.entity_type,
            entity_id: &key.entity_id,
            seq_nr: seq_before,
            now_ms: batch.now_ms,
            command_id,
        };
        let limits = &self.limits;
        let decision = match instance.call(|i| i.decide(call, &entity.state, command, limits)) {
            Ok(Ok(decision)) => decision,
            Ok(Err(rejection)) => {
                let deployment = instance.deployment.clone();
                drop(instance);
                return self.refuse(key, rejection, command_id, digest, deployment, batch);
            }
            Err(fault) => {
                tracing::warn!(entity_type = %key.entity_type, entity_id = %key.entity_id, fault = %fault, "guest fault");
                return Err(Error::guest(&key.entity_type, fault));
            }
        };
        let deployment = instance.deployment.clone();
        drop(instance);
        let n = decision.events.len() as u64;
        let seq_after = seq_before + n;
        if let Some(last) = decision.events.len().checked_sub(1) {
            let staged = batch.staged.entry(key.clone()).or_insert_with(|| Staged {
                expected_seq_nr: seq_before,
                events: Vec::new(),
                command_ids: Vec::new(),
                sends: Vec::new(),
                timers: Vec::new(),
                deployment: deployment.clone(),
            });
            // Sends and timers go with the events that caused them (the
            // runtime refused any without events), under the seq-nr of the
            // command's last event: their ids never repeat.
            for (index, send) in (0u32..).zip(decision.sends) {
                staged.sends.push(OutboxSend {
                    seq_nr: seq_after,
                    index,
                    send,
                });
            }
            staged
                .timers
                .extend(decision.timers.into_iter().map(|change| TimerWrite {
                    seq_nr: seq_after,
                    change,
                }));
            // A caller's id is indexed for the dedup horizon with the events.
            if let Some(digest) = digest {
                staged.command_ids.push(CommandIdRecord {
                    command_id: command_id.to_owned(),
                    seq_nr: seq_after,
                    at_ms: batch.now_ms,
                    digest: *digest,
                    refusal: None,
                });
            }
            // The snapshot policy and version of the code that ran last.
            staged.deployment = deployment;
            for (i, payload) in decision.events.into_iter().enumerate() {
                staged.events.push(EventRecord {
                    command_id: command_id.to_owned(),
                    timestamp_ms: batch.now_ms,
                    payload,
                    reply: (i == last).then(|| decision.reply.clone()),
                });
            }
        }
        if let Some(entity) = self.entities.get_mut(key) {
            entity.state = decision.state;
            entity.seq_nr = seq_after;
            if n > 0 {
                entity
                    .dedup
                    .push(command_id, seq_after, self.options.dedup_window);
            }
        }
        Ok(Invoked {
            seq_nr: seq_after,
            reply: decision.reply,
            duplicate: false,
            refused: None,
        })
    }

    /// A command the guest refused. A caller-given id's refusal is recorded
    /// in the index (an append without events) and the error waits for it:
    /// a retry, or a late copy of the command, then gets the same refusal
    /// instead of running against a state that may have changed since (a
    /// saga told "refused" must never see the command applied later).
    fn refuse(
        &mut self,
        key: &EntityKey,
        rejection: Rejection,
        command_id: &str,
        digest: Option<&[u8; 32]>,
        deployment: Arc<Deployment>,
        batch: &mut Batch,
    ) -> Result<Invoked, Error> {
        let error = refusal(key, rejection);
        tracing::debug!(error = %error, "command refused");
        let record = match &error {
            Error::Rejected(m) => Refusal::Rejected(bounded(m)),
            Error::InvalidCommand(m) => Refusal::InvalidCommand(bounded(m)),
            // A guest fault is not the entity's answer: not remembered.
            _ => return Err(error),
        };
        let Some(digest) = digest else {
            return Err(error);
        };
        let seq_nr = self.entities.get(key).ok_or_else(vanished)?.seq_nr;
        let staged = batch.staged.entry(key.clone()).or_insert_with(|| Staged {
            expected_seq_nr: seq_nr,
            events: Vec::new(),
            command_ids: Vec::new(),
            sends: Vec::new(),
            timers: Vec::new(),
            deployment,
        });
        staged.command_ids.push(CommandIdRecord {
            command_id: command_id.to_owned(),
            seq_nr,
            at_ms: batch.now_ms,
            digest: *digest,
            refusal: Some(record),
        });
        Ok(Invoked {
            seq_nr,
            reply: Vec::new(),
            duplicate: false,
            refused: Some(error),
        })
    }

    /// An instance of the type's live deployment.
    fn instance_for(&self, entity_type: &str) -> Result<Pooled, Error> {
        let deployment = self
            .registry
            .get(entity_type)
            .ok_or_else(|| Error::UnknownType(entity_type.to_owned()))?;
        self.pool
            .take(deployment)
            .map_err(|fault| Error::guest(entity_type, fault))
    }

    /// Makes sure `key` is in memory, recovering it if needed.
    async fn ensure_active(&mut self, key: &EntityKey, instance: &mut Pooled) -> Result<(), Error> {
        if !self.entities.contains_key(key) {
            let window = self.options.dedup_window;
            let activated =
                activate(self.journal.as_ref(), instance.get(), key, window, false).await;
            // Activation faults discard the instance; journal errors keep it.
            if let Err(ActivationError::Guest(_)) = &activated {
                instance.faulted = true;
            }
            let entity = activated.map_err(|e| Error::activation(key, e))?;
            self.activations += 1;
            tracing::debug!(seq_nr = entity.seq_nr, "activated");
            self.entities.insert(key.clone(), entity);
        }
        let now = self.mono_ms();
        if let Some(entity) = self.entities.get_mut(key) {
            entity.last_used_ms = now;
        }
        Ok(())
    }

    /// The original outcome of a command id this entity already took: the
    /// seq-nr of its last event and its reply. Looked up in the entity's
    /// window first (a hash match is confirmed against this batch's pending
    /// replies or the stored event); a caller-given id (with a `digest` of
    /// its command) missing there is looked up in this batch's staged events
    /// and then in the journal's index, within the dedup horizon. A caller's
    /// id found with another command's digest is refused.
    async fn find_duplicate(
        &self,
        key: &EntityKey,
        command_id: &str,
        digest: Option<&[u8; 32]>,
        batch: &Batch,
    ) -> Result<Option<Duplicate>, Error> {
        let Some(entity) = self.entities.get(key) else {
            return Ok(None);
        };
        for seq_nr in entity.dedup.candidates(command_id) {
            if seq_nr > entity.durable_seq_nr {
                // Persisted in this batch: its reply is pending here.
                if let Some(p) = batch.pending.iter().find(|p| {
                    !p.duplicate && p.refused.is_none() && p.key == *key && p.seq_nr == seq_nr
                }) {
                    if let (Some(theirs), Some(ours)) = (p.digest.as_ref(), digest)
                        && theirs != ours
                    {
                        return Err(reused(command_id));
                    }
                    return Ok(Some(Duplicate::Replied(seq_nr, p.reply.clone())));
                }
                continue;
            }
            if let Some(reply) = self.stored_reply(key, command_id, seq_nr).await? {
                if let Some(digest) = digest
                    && let Some(indexed) = self.find_command_id(key, command_id).await?
                    && indexed.digest != *digest
                {
                    return Err(reused(command_id));
                }
                return Ok(Some(Duplicate::Replied(seq_nr, reply)));
            }
        }
        // Ids the host generated are unique: only a caller's can come back.
        let Some(digest) = digest else {
            return Ok(None);
        };
        if let Some(staged) = batch.staged.get(key)
            && let Some(refused) = staged
                .command_ids
                .iter()
                .find(|c| c.command_id == command_id && c.refusal.is_some())
        {
            // Refused earlier in this batch.
            return remembered(refused, command_id, digest).map(Some);
        }
        if let Some(staged) = batch.staged.get(key)
            && let Some(i) = staged
                .events
                .iter()
                .position(|e| e.command_id == command_id && e.reply.is_some())
        {
            // Taken earlier in this batch, past the window's capacity.
            let seq_nr = staged.expected_seq_nr + i as u64 + 1;
            let indexed = staged.command_ids.iter().find(|c| c.seq_nr == seq_nr);
            if indexed.is_some_and(|c| c.digest != *digest) {
                return Err(reused(command_id));
            }
            let reply = staged.events[i].reply.clone().unwrap_or_default();
            return Ok(Some(Duplicate::Replied(seq_nr, reply)));
        }
        let indexed = match batch.indexed.get(&(key.clone(), command_id.to_owned())) {
            Some(prefetched) => prefetched.clone(),
            None => self.find_command_id(key, command_id).await?,
        };
        let Some(indexed) = indexed else {
            return Ok(None);
        };
        let horizon = u64::try_from(self.options.dedup_horizon.as_millis()).unwrap_or(u64::MAX);
        if indexed.at_ms.saturating_add(horizon) < batch.now_ms {
            // Past the horizon (not yet swept): a new command.
            return Ok(None);
        }
        if indexed.refusal.is_some() {
            return remembered(&indexed, command_id, digest).map(Some);
        }
        if indexed.digest != *digest {
            return Err(reused(command_id));
        }
        Ok(self
            .stored_reply(key, command_id, indexed.seq_nr)
            .await?
            .map(|reply| Duplicate::Replied(indexed.seq_nr, reply)))
    }

    /// The index entry of one caller-given command id.
    async fn find_command_id(
        &self,
        key: &EntityKey,
        command_id: &str,
    ) -> Result<Option<CommandIdRecord>, Error> {
        let lookup = [(key.clone(), command_id.to_owned())];
        let found = self
            .journal
            .find_command_ids(&lookup)
            .await
            .map_err(Error::Storage)?;
        Ok(found.into_iter().next().flatten())
    }

    /// The reply stored with `command_id`'s last event at `seq_nr`, if that
    /// event is there and is that command's.
    async fn stored_reply(
        &self,
        key: &EntityKey,
        command_id: &str,
        seq_nr: u64,
    ) -> Result<Option<Vec<u8>>, Error> {
        let events = self
            .journal
            .read_events(key, seq_nr, 1)
            .await
            .map_err(Error::Storage)?;
        Ok(events.into_iter().next().and_then(|event| {
            (event.seq_nr == seq_nr && event.record.command_id == command_id)
                .then_some(event.record.reply)
                .flatten()
        }))
    }

    /// The entity's view, recovering it if needed.
    pub(crate) async fn view(&mut self, key: &EntityKey) -> Result<Vec<u8>, Error> {
        let mut instance = self.instance_for(&key.entity_type)?;
        self.ensure_active(key, &mut instance).await?;
        let entity = self.entities.get(key).ok_or_else(vanished)?;
        let limits = &self.limits;
        instance
            .call(|i| i.checked_view(&key.entity_type, &key.entity_id, &entity.state, limits))
            .map_err(|fault| Error::guest(&key.entity_type, fault))
    }

    /// The entity's raw state bytes, recovering it if needed.
    #[cfg(feature = "testing")]
    pub(crate) async fn state_of(&mut self, key: &EntityKey) -> Result<Vec<u8>, Error> {
        let mut instance = self.instance_for(&key.entity_type)?;
        self.ensure_active(key, &mut instance).await?;
        self.entities
            .get(key)
            .map(|e| e.state.clone())
            .ok_or_else(vanished)
    }
}

fn reused(command_id: &str) -> Error {
    Error::IdempotencyKeyReused(format!(
        "command id `{command_id}` was used for a different command of this entity; a retry must repeat the command exactly, a new command needs a new id"
    ))
}

/// The refusal remembered under a command id, if the retry carries the
/// same command.
fn remembered(
    record: &CommandIdRecord,
    command_id: &str,
    digest: &[u8; 32],
) -> Result<Duplicate, Error> {
    if record.digest != *digest {
        return Err(reused(command_id));
    }
    let error = match &record.refusal {
        Some(Refusal::Rejected(m)) => Error::Rejected(m.clone()),
        Some(Refusal::InvalidCommand(m)) => Error::InvalidCommand(m.clone()),
        None => return Err(Error::Internal("a refusal without its refusal".into())),
    };
    Ok(Duplicate::Refused(record.seq_nr, error))
}

/// `message`, cut at a character boundary to what the index keeps.
fn bounded(message: &str) -> String {
    let mut end = message.len().min(MAX_REFUSAL_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_owned()
}

fn vanished() -> Error {
    Error::Internal("entity vanished after activation".into())
}

/// The error of a command the guest refused (the instance stays usable).
fn refusal(key: &EntityKey, rejection: Rejection) -> Error {
    match rejection {
        Rejection::Rejected(m) => Error::Rejected(m),
        Rejection::InvalidCommand(m) => Error::InvalidCommand(m),
        Rejection::InvalidState(m) => Error::guest(
            &key.entity_type,
            GuestFault::InvalidOutput(format!("the guest cannot decode this entity's state: {m}")),
        ),
    }
}
