//! A model-based property test of a journal backend.
//!
//! [`Model`] is the [`Journal`] contract (see the module docs of
//! [`crate`]) written as the simplest thing that satisfies it: a map from
//! entity to its events, a map of snapshots, and the shards' lease epochs,
//! all in memory. The property drives random sequences of operations through
//! the model and a real [`SledJournal`] on a temporary directory and compares
//! every result:
//!
//! - appends of one or several entities per call, with the right, a stale or
//!   a future expected sequence number, the held, a stale, a future or another
//!   shard's fence token, and (rarely) no events;
//! - snapshot saves and loads, event reads from any sequence number (0, past
//!   the end, `u64::MAX`) with any limit, last sequence numbers, the entities
//!   of a shard;
//! - the outbox: sends and timer changes with appends, pages of a shard's
//!   pending sends and timers, fenced acknowledgements and answers;
//! - claims of some shards (each moves their epochs, so earlier tokens are
//!   stale) and **reopens**: the journal is dropped and opened again on the
//!   same directory (for a shared store: reconnected), which forgets the
//!   leases the dropped handle held (every append
//!   is fenced until shards are claimed again) and must keep everything
//!   acknowledged. After a reopen, and at the end of every case, the whole key
//!   space is compared.
//!
//! A few shards, types and ids (one id a prefix of the other) keep collisions
//! frequent. Snapshots need not be durable when `save_snapshot` returns, but a
//! clean close must keep them, so the model expects them to survive a reopen.
//!
//! tidy: long file: the model, the random operations and the runner that
//! compares them are one property; split, each part would only make sense
//! with the others open beside it.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::Opener;
use stead_types::effects::{SendCommand, Timer, TimerChange};

use crate::{
    Answer, AppendError, CommandIdRecord, EntityAppend, EntityKey, EventRecord, FenceToken,
    FiredTimer, Journal, JournalError, OutboxSend, PendingSend, PendingTimer, Refusal, SendId,
    ShardId, SnapshotRecord, StoredEvent, TimerWrite,
};

const SHARDS: ShardId = 3;
const TYPES: [&str; 2] = ["acc", "cart"];
/// One id is a prefix of the other (in each shard): their key ranges must
/// stay apart.
const IDS: [&str; 2] = ["a", "ab"];
const ENTITIES: usize = SHARDS as usize * TYPES.len() * IDS.len();
/// Command ids of indexed commands (one a prefix of another).
const COMMAND_IDS: [&str; 3] = ["k", "k2", "cmd-é"];
/// Timer names (one a prefix of another).
const TIMER_NAMES: [&str; 3] = ["t", "t2", "expire-é"];

/// The `i`-th entity of the key space.
fn entity(i: usize) -> EntityKey {
    let per_shard = TYPES.len() * IDS.len();
    let i = i % ENTITIES;
    let shard = ShardId::try_from(i / per_shard).expect("few shards");
    // An entity is named by its type and id, its shard derived from them:
    // the same type and id never appear in two shards.
    EntityKey::new(
        shard,
        TYPES[(i % per_shard) / IDS.len()],
        format!("{shard}{}", IDS[i % IDS.len()]),
    )
}

fn all_shards() -> Vec<ShardId> {
    (0..SHARDS).collect()
}

/// The journal contract in memory.
#[derive(Debug, Default)]
struct Model {
    events: BTreeMap<EntityKey, Vec<EventRecord>>,
    snapshots: HashMap<EntityKey, SnapshotRecord>,
    command_ids: BTreeMap<(EntityKey, String), CommandIdRecord>,
    /// Each shard's durable lease epoch (its last claim's).
    leases: HashMap<ShardId, u64>,
    /// The epochs the open journal holds; a reopen forgets them.
    held: HashMap<ShardId, u64>,
    outbox: BTreeMap<SendId, (SendCommand, Option<Answer>)>,
    /// (entity, timer name) -> (seq-nr that set it, timer).
    timers: BTreeMap<(EntityKey, String), (u64, Timer)>,
    /// Each shard's events in commit order: (entity, seq-nr).
    streams: BTreeMap<ShardId, Vec<(EntityKey, u64)>>,
}

impl Model {
    fn claim_shards(&mut self, shards: &[ShardId]) -> Vec<FenceToken> {
        shards
            .iter()
            .map(|&shard| {
                let epoch = self.lease(shard) + 1;
                self.leases.insert(shard, epoch);
                self.held.insert(shard, epoch);
                FenceToken { shard, epoch }
            })
            .collect()
    }

    fn release(&mut self, shards: &[ShardId]) {
        for shard in shards {
            self.held.remove(shard);
        }
    }

    fn reopen(&mut self) {
        self.held.clear();
    }

    fn lease(&self, shard: ShardId) -> u64 {
        self.leases.get(&shard).copied().unwrap_or(0)
    }

    fn last_seq_nr(&self, key: &EntityKey) -> u64 {
        self.events.get(key).map_or(0, |e| e.len() as u64)
    }

    /// In order: each append sees the ones before it in the same call.
    fn append(&mut self, appends: &[EntityAppend]) -> Vec<Result<(), AppendError>> {
        appends.iter().map(|a| self.append_one(a)).collect()
    }

    fn append_one(&mut self, append: &EntityAppend) -> Result<(), AppendError> {
        let key = &append.key;
        append.check()?;
        let current = self.held.get(&key.shard).copied().unwrap_or(0);
        if current == 0 || append.fence.epoch != current {
            return Err(AppendError::Fenced {
                shard: key.shard,
                presented: append.fence.epoch,
                current,
            });
        }
        let actual = self.last_seq_nr(key);
        if append.expected_seq_nr != actual {
            return Err(AppendError::Conflict {
                key: key.clone(),
                expected: append.expected_seq_nr,
                actual,
            });
        }
        self.events
            .entry(key.clone())
            .or_default()
            .extend(append.events.iter().cloned());
        let stream = self.streams.entry(key.shard).or_default();
        for seq_nr in actual + 1..=actual + append.events.len() as u64 {
            stream.push((key.clone(), seq_nr));
        }
        for record in &append.command_ids {
            self.command_ids
                .insert((key.clone(), record.command_id.clone()), record.clone());
        }
        for send in &append.sends {
            let id = SendId {
                source: key.clone(),
                seq_nr: send.seq_nr,
                index: send.index,
            };
            self.outbox.insert(id, (send.send.clone(), None));
        }
        for write in &append.timers {
            let slot = (key.clone(), write.change.name().to_owned());
            match &write.change {
                TimerChange::Set(timer) => {
                    self.timers.insert(slot, (write.seq_nr, timer.clone()));
                }
                TimerChange::Cancel(_) => {
                    self.timers.remove(&slot);
                }
            }
        }
        Ok(())
    }

    fn check_fence(&self, fence: FenceToken) -> Result<(), AppendError> {
        let current = self.held.get(&fence.shard).copied().unwrap_or(0);
        if current == 0 || fence.epoch != current {
            return Err(AppendError::Fenced {
                shard: fence.shard,
                presented: fence.epoch,
                current,
            });
        }
        Ok(())
    }

    /// A shard's pending sends, in id order.
    fn outbox(&self, shard: ShardId) -> Vec<PendingSend> {
        self.outbox
            .iter()
            .filter(|(id, _)| id.source.shard == shard)
            .map(|(id, (send, answer))| PendingSend {
                id: id.clone(),
                send: send.clone(),
                answer: *answer,
            })
            .collect()
    }

    fn answer_sends(
        &mut self,
        fence: FenceToken,
        answers: &[(SendId, Answer)],
    ) -> Result<(), AppendError> {
        self.check_fence(fence)?;
        for (id, answer) in answers
            .iter()
            .filter(|(id, _)| id.source.shard == fence.shard)
        {
            if let Some((_, slot @ None)) = self.outbox.get_mut(id) {
                *slot = Some(*answer);
            }
        }
        Ok(())
    }

    /// A shard's timers, in (entity, name) order.
    fn timers(&self, shard: ShardId) -> Vec<PendingTimer> {
        self.timers
            .iter()
            .filter(|((key, _), _)| key.shard == shard)
            .map(|((key, _), (seq_nr, timer))| PendingTimer {
                key: key.clone(),
                seq_nr: *seq_nr,
                timer: timer.clone(),
            })
            .collect()
    }

    fn ack_sends(&mut self, fence: FenceToken, ids: &[SendId]) -> Result<(), AppendError> {
        self.check_fence(fence)?;
        for id in ids.iter().filter(|id| id.source.shard == fence.shard) {
            self.outbox.remove(id);
        }
        Ok(())
    }

    fn ack_timers(&mut self, fence: FenceToken, fired: &[FiredTimer]) -> Result<(), AppendError> {
        self.check_fence(fence)?;
        for f in fired.iter().filter(|f| f.key.shard == fence.shard) {
            let slot = (f.key.clone(), f.name.clone());
            if self
                .timers
                .get(&slot)
                .is_some_and(|(seq, _)| *seq == f.seq_nr)
            {
                self.timers.remove(&slot);
            }
        }
        Ok(())
    }

    fn find_command_id(&self, key: &EntityKey, command_id: &str) -> Option<CommandIdRecord> {
        self.command_ids
            .get(&(key.clone(), command_id.to_owned()))
            .cloned()
    }

    /// Expires every entry of the shard older than `before_ms` (the property
    /// uses no limit: which entries a limit keeps is the backend's order,
    /// checked by a conformance case instead).
    fn expire_command_ids(
        &mut self,
        fence: FenceToken,
        before_ms: u64,
    ) -> Result<usize, AppendError> {
        self.check_fence(fence)?;
        let before = self.command_ids.len();
        self.command_ids
            .retain(|(key, _), record| key.shard != fence.shard || record.at_ms >= before_ms);
        Ok(before - self.command_ids.len())
    }

    fn read_events(&self, key: &EntityKey, from: u64, limit: usize) -> Vec<StoredEvent> {
        self.events
            .get(key)
            .into_iter()
            .flatten()
            .zip(1u64..)
            .filter(|(_, seq_nr)| *seq_nr >= from)
            .take(limit)
            .map(|(record, seq_nr)| StoredEvent {
                seq_nr,
                record: record.clone(),
            })
            .collect()
    }

    fn entities_in_shard(&self, shard: ShardId) -> Vec<(String, String)> {
        self.events
            .iter()
            .filter(|(key, events)| key.shard == shard && !events.is_empty())
            .map(|(key, _)| (key.entity_type.clone(), key.entity_id.clone()))
            .collect()
    }
}

/// Which fence token an append carries, resolved against the model.
#[derive(Debug, Clone, Copy)]
enum Fence {
    /// The token the open journal holds (after a reopen without a claim:
    /// the token of the previous holder).
    Held,
    /// An epoch older than the shard's lease.
    Stale,
    /// An epoch newer than the shard's lease (a forged token).
    Future,
    /// The held token of the next shard.
    OtherShard,
}

#[derive(Debug, Clone)]
struct AppendSpec {
    entity: usize,
    /// Added to the entity's last sequence number as the model knows it.
    seq_offset: i64,
    fence: Fence,
    events: Vec<EventRecord>,
    /// Index entries: (position among the events, 1-based; 0 or past the
    /// end is refused as invalid), handled at, digest byte.
    command_ids: Vec<(u64, u64, u8)>,
    /// Sends: (position among the events as above, index, target entity).
    sends: Vec<(u64, u32, usize)>,
    /// Timer changes: (position as above, name, fire-at or `None` to cancel).
    timers: Vec<(u64, usize, Option<u64>)>,
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<AppendSpec>),
    SaveSnapshot(usize, SnapshotRecord),
    LoadSnapshot(usize),
    ReadEvents {
        entity: usize,
        from: u64,
        limit: usize,
    },
    LastSeqNr(usize),
    EntitiesInShard(ShardId),
    /// Reads a type's whole stream in pages of this many events per shard.
    ReadStream {
        type_index: usize,
        page: usize,
    },
    Claim(Vec<ShardId>),
    /// Releases the held leases of these shards.
    Release(Vec<ShardId>),
    FindCommandId(usize, &'static str),
    ExpireCommandIds {
        shard: ShardId,
        fence: Fence,
        before_ms: u64,
    },
    Reopen {
        claim_all: bool,
    },
    /// Pages through a shard's outbox and timers with this page size.
    ReadPending {
        shard: ShardId,
        page: usize,
    },
    /// Acknowledges the shard's pending sends at these positions (modulo
    /// their count) and one id that was never written.
    AckSends {
        shard: ShardId,
        fence: Fence,
        picks: Vec<usize>,
    },
    /// Answers the shard's pending sends at these positions (modulo their
    /// count): accepted, or refused.
    AnswerSends {
        shard: ShardId,
        fence: Fence,
        picks: Vec<usize>,
        refused: bool,
    },
    /// Acknowledges the shard's timers at these positions as fired, under
    /// the seq-nr they were set at or (`stale`) an earlier one.
    AckTimers {
        shard: ShardId,
        fence: Fence,
        picks: Vec<usize>,
        stale: bool,
    },
}

fn event_record() -> impl Strategy<Value = EventRecord> {
    (
        prop::sample::select(vec!["", "c1", "c2", "cmd-é"]),
        0u64..3,
        prop::collection::vec(any::<u8>(), 0..8),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..4)),
    )
        .prop_map(|(command_id, timestamp_ms, payload, reply)| EventRecord {
            command_id: command_id.to_owned(),
            timestamp_ms,
            payload,
            reply,
        })
}

fn append_spec() -> impl Strategy<Value = AppendSpec> {
    (
        0..ENTITIES,
        prop_oneof![6 => Just(0i64), 1 => -2i64..0, 1 => 1i64..3],
        prop_oneof![
            10 => Just(Fence::Held),
            1 => Just(Fence::Stale),
            1 => Just(Fence::Future),
            1 => Just(Fence::OtherShard),
        ],
        prop_oneof![
            1 => Just(Vec::new()),
            15 => prop::collection::vec(event_record(), 1..4),
        ],
        prop::collection::vec(
            (
                prop_oneof![12 => 1u64..4, 1 => Just(0u64)],
                0u64..6,
                any::<u8>(),
            ),
            0..3,
        ),
        prop::collection::vec(
            (
                prop_oneof![12 => 1u64..4, 1 => Just(0u64)],
                prop_oneof![8 => 0u32..3, 1 => Just(0u32)],
                0..ENTITIES,
            ),
            0..3,
        ),
        prop::collection::vec(
            (
                prop_oneof![12 => 1u64..4, 1 => Just(0u64)],
                0..TIMER_NAMES.len(),
                prop::option::of(0u64..1_000),
            ),
            0..3,
        ),
    )
        .prop_map(
            |(entity, seq_offset, fence, events, command_ids, sends, timers)| AppendSpec {
                entity,
                seq_offset,
                fence,
                events,
                command_ids,
                sends,
                timers,
            },
        )
}

fn snapshot_record() -> impl Strategy<Value = SnapshotRecord> {
    (
        0u64..10,
        prop::sample::select(vec!["0.1.0", "0.2.0"]),
        prop::collection::vec(any::<u8>(), 0..6),
        prop::collection::vec((any::<u64>(), 0u64..10), 0..3),
    )
        .prop_map(|(seq_nr, version, state, dedup)| SnapshotRecord {
            seq_nr,
            version: version.to_owned(),
            state,
            dedup,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => prop::collection::vec(append_spec(), 1..4).prop_map(Op::Append),
        2 => (0..ENTITIES, snapshot_record()).prop_map(|(e, s)| Op::SaveSnapshot(e, s)),
        1 => (0..ENTITIES).prop_map(Op::LoadSnapshot),
        4 => (
            0..ENTITIES,
            prop_oneof![8 => 0u64..10, 1 => Just(u64::MAX)],
            prop_oneof![4 => 0usize..5, 1 => Just(usize::MAX)],
        )
            .prop_map(|(entity, from, limit)| Op::ReadEvents { entity, from, limit }),
        2 => (0..ENTITIES).prop_map(Op::LastSeqNr),
        2 => (0..SHARDS).prop_map(Op::EntitiesInShard),
        2 => (0..TYPES.len(), prop_oneof![1usize..3, Just(1000usize)])
            .prop_map(|(type_index, page)| Op::ReadStream { type_index, page }),
        1 => prop::sample::subsequence(all_shards(), 1..=SHARDS as usize).prop_map(Op::Claim),
        1 => prop::sample::subsequence(all_shards(), 1..=SHARDS as usize).prop_map(Op::Release),
        3 => (0..ENTITIES, prop::sample::select(COMMAND_IDS.to_vec()))
            .prop_map(|(e, id)| Op::FindCommandId(e, id)),
        1 => (
            0..SHARDS,
            prop_oneof![6 => Just(Fence::Held), 1 => Just(Fence::Stale)],
            0u64..7,
        )
            .prop_map(|(shard, fence, before_ms)| Op::ExpireCommandIds {
                shard,
                fence,
                before_ms,
            }),
        2 => prop_oneof![4 => Just(true), 1 => Just(false)]
            .prop_map(|claim_all| Op::Reopen { claim_all }),
        2 => (0..SHARDS, prop_oneof![1usize..3, Just(usize::MAX)])
            .prop_map(|(shard, page)| Op::ReadPending { shard, page }),
        2 => (
            0..SHARDS,
            prop_oneof![6 => Just(Fence::Held), 1 => Just(Fence::Stale)],
            prop::collection::vec(0usize..8, 0..3),
        )
            .prop_map(|(shard, fence, picks)| Op::AckSends { shard, fence, picks }),
        2 => (
            0..SHARDS,
            prop_oneof![6 => Just(Fence::Held), 1 => Just(Fence::Stale)],
            prop::collection::vec(0usize..8, 0..3),
            any::<bool>(),
        )
            .prop_map(|(shard, fence, picks, refused)| Op::AnswerSends {
                shard,
                fence,
                picks,
                refused,
            }),
        2 => (
            0..SHARDS,
            prop_oneof![6 => Just(Fence::Held), 1 => Just(Fence::Stale)],
            prop::collection::vec(0usize..8, 0..3),
            prop_oneof![4 => Just(false), 1 => Just(true)],
        )
            .prop_map(|(shard, fence, picks, stale)| Op::AckTimers {
                shard,
                fence,
                picks,
                stale,
            }),
    ]
}

/// The append of `spec`, with its expected seq-nr and fence token resolved
/// against the model (and the appends before it in the same call).
fn resolve(spec: &AppendSpec, model: &Model, earlier: &[EntityAppend]) -> EntityAppend {
    let key = entity(spec.entity);
    let staged: u64 = earlier
        .iter()
        .filter(|a| a.key == key)
        .map(|a| a.events.len() as u64)
        .sum();
    let last = model.last_seq_nr(&key) + staged;
    let expected_seq_nr = last.saturating_add_signed(spec.seq_offset);
    let held = |shard: ShardId| {
        let epoch = model
            .held
            .get(&shard)
            .copied()
            .unwrap_or_else(|| model.lease(shard));
        FenceToken { shard, epoch }
    };
    let fence = match spec.fence {
        Fence::Held => held(key.shard),
        Fence::Stale => FenceToken {
            shard: key.shard,
            epoch: model.lease(key.shard).saturating_sub(1),
        },
        Fence::Future => FenceToken {
            shard: key.shard,
            epoch: model.lease(key.shard) + 1,
        },
        Fence::OtherShard => held((key.shard + 1) % SHARDS),
    };
    let last = spec.events.len() as u64;
    let command_ids = spec
        .command_ids
        .iter()
        .zip(COMMAND_IDS)
        .map(|(&(position, at_ms, digest), command_id)| CommandIdRecord {
            command_id: command_id.to_owned(),
            // Position 0 is outside the append (refused as invalid), except
            // for a refusal, which is indexed at the last seq-nr.
            seq_nr: expected_seq_nr.saturating_add(position.min(last)),
            at_ms,
            digest: [digest; 32],
            // One in four is a refusal (alone, an append without events).
            refusal: (digest % 4 == 0).then(|| Refusal::Rejected(format!("no {digest}"))),
        })
        .collect();
    // Position 0 is outside the append: refused as invalid.
    let at = |position: u64| expected_seq_nr.saturating_add(position.min(last));
    let sends = spec
        .sends
        .iter()
        .map(|&(position, index, target)| {
            let target = entity(target);
            OutboxSend {
                seq_nr: at(position),
                index,
                send: SendCommand {
                    entity_type: target.entity_type,
                    entity_id: target.entity_id,
                    command: format!("{{\"n\":{index}}}").into_bytes(),
                    on_accepted: (index == 1).then(|| b"{}".to_vec()),
                    on_refused: (index == 2).then(|| b"[]".to_vec()),
                },
            }
        })
        .collect();
    let timers = spec
        .timers
        .iter()
        .map(|&(position, name, fire_at)| {
            let name = TIMER_NAMES[name].to_owned();
            TimerWrite {
                seq_nr: at(position),
                change: match fire_at {
                    Some(fire_at_ms) => TimerChange::Set(Timer {
                        name,
                        fire_at_ms,
                        command: format!("{{\"at\":{fire_at_ms}}}").into_bytes(),
                    }),
                    None => TimerChange::Cancel(name),
                },
            }
        })
        .collect();
    EntityAppend {
        key,
        expected_seq_nr,
        fence,
        events: spec.events.clone(),
        command_ids,
        sends,
        timers,
    }
}

/// A type's stream as the model has it: per shard, (id, seq-nr, record).
fn model_stream(model: &Model, entity_type: &str) -> Vec<(ShardId, String, u64, EventRecord)> {
    let mut out = Vec::new();
    for shard in all_shards() {
        for (key, seq_nr) in model.streams.get(&shard).into_iter().flatten() {
            if key.entity_type == entity_type {
                let record = model.events[key][(*seq_nr - 1) as usize].clone();
                out.push((shard, key.entity_id.clone(), *seq_nr, record));
            }
        }
    }
    out
}

/// A type's whole stream read in pages of `page` events per shard, each
/// shard resumed from the last position it returned; positions must grow.
fn read_whole_stream<J: Journal>(
    journal: &J,
    entity_type: &str,
    page: usize,
) -> Result<Vec<(ShardId, String, u64, EventRecord)>, String> {
    let mut cursors: BTreeMap<ShardId, u64> = all_shards().into_iter().map(|s| (s, 0)).collect();
    let mut per_shard: BTreeMap<ShardId, Vec<(ShardId, String, u64, EventRecord)>> =
        BTreeMap::new();
    while !cursors.is_empty() {
        let from: Vec<(ShardId, u64)> = cursors.iter().map(|(s, p)| (*s, *p)).collect();
        let events = journal
            .read_stream(entity_type, &from, page)
            .map_err(|e| e.to_string())?;
        let mut counts: BTreeMap<ShardId, usize> = BTreeMap::new();
        for e in events {
            let at = cursors
                .get_mut(&e.shard)
                .ok_or_else(|| format!("an event of shard {} not asked for", e.shard))?;
            if e.position <= *at {
                return Err(format!(
                    "position {} after {} in shard {}",
                    e.position, at, e.shard
                ));
            }
            *at = e.position;
            *counts.entry(e.shard).or_default() += 1;
            per_shard.entry(e.shard).or_default().push((
                e.shard,
                e.entity_id,
                e.event.seq_nr,
                e.event.record,
            ));
        }
        if counts.values().any(|&n| n > page) {
            return Err(format!("a page over its limit {page}: {counts:?}"));
        }
        cursors.retain(|shard, _| counts.get(shard).copied().unwrap_or(0) == page);
    }
    Ok(per_shard.into_values().flatten().collect())
}

/// Every pending send and timer of `shard`, read in pages of `page`,
/// sorted (the entity order is the backend's own).
fn read_pending<J: Journal>(
    journal: &J,
    shard: ShardId,
    page: usize,
) -> Result<(Vec<PendingSend>, Vec<PendingTimer>), JournalError> {
    let mut sends: Vec<PendingSend> = Vec::new();
    loop {
        let next = journal.read_outbox(shard, sends.last().map(|s| &s.id), page)?;
        let done = next.len() < page || next.is_empty();
        sends.extend(next);
        if done {
            break;
        }
    }
    let mut timers: Vec<PendingTimer> = Vec::new();
    loop {
        let after = timers.last().map(|t| (&t.key, t.timer.name.as_str()));
        let next = journal.read_timers(shard, after, page)?;
        let done = next.len() < page || next.is_empty();
        timers.extend(next);
        if done {
            break;
        }
    }
    sends.sort_by(|a, b| a.id.cmp(&b.id));
    timers.sort_by(|a, b| (&a.key, &a.timer.name).cmp(&(&b.key, &b.timer.name)));
    Ok((sends, timers))
}

/// The token `fence` names for `shard`, resolved against the model.
fn token(fence: Fence, shard: ShardId, model: &Model) -> FenceToken {
    match fence {
        Fence::Stale => FenceToken {
            shard,
            epoch: model.lease(shard).saturating_sub(1),
        },
        _ => FenceToken {
            shard,
            epoch: model
                .held
                .get(&shard)
                .copied()
                .unwrap_or_else(|| model.lease(shard)),
        },
    }
}

/// `Invalid`'s reason is prose; the model only says that it is `Invalid`.
fn without_reasons(results: Vec<Result<(), AppendError>>) -> Vec<Result<(), AppendError>> {
    results
        .into_iter()
        .map(|r| match r {
            Err(AppendError::Invalid { key, .. }) => Err(AppendError::Invalid {
                key,
                reason: String::new(),
            }),
            other => other,
        })
        .collect()
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

/// Compares every entity's events, last seq-nr and snapshot, and every
/// shard's entity list.
fn check_everything<J: Journal>(
    journal: &J,
    model: &Model,
    when: &str,
) -> Result<(), TestCaseError> {
    for i in 0..ENTITIES {
        let key = entity(i);
        prop_assert_eq!(
            journal.last_seq_nr(&key),
            Ok(model.last_seq_nr(&key)),
            "last seq-nr of {} {}",
            key,
            when
        );
        prop_assert_eq!(
            journal.read_events(&key, 0, usize::MAX),
            Ok(model.read_events(&key, 0, usize::MAX)),
            "events of {} {}",
            key,
            when
        );
        prop_assert_eq!(
            journal.load_snapshot(&key),
            Ok(model.snapshots.get(&key).cloned()),
            "snapshot of {} {}",
            key,
            when
        );
        for command_id in COMMAND_IDS {
            prop_assert_eq!(
                journal.find_command_id(&key, command_id),
                Ok(model.find_command_id(&key, command_id)),
                "command id {} of {} {}",
                command_id,
                key,
                when
            );
        }
    }
    for shard in 0..SHARDS {
        prop_assert_eq!(
            journal.entities_in_shard(shard).map(sorted),
            Ok(model.entities_in_shard(shard)),
            "entities of shard {} {}",
            shard,
            when
        );
        prop_assert_eq!(
            read_pending(journal, shard, usize::MAX),
            Ok((model.outbox(shard), model.timers(shard))),
            "outbox and timers of shard {} {}",
            shard,
            when
        );
    }
    Ok(())
}

fn run<J: Journal>(open: Opener<'_, J>, ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut journal = open(dir.path());
    let mut model = Model::default();
    prop_assert_eq!(
        journal.claim_shards(&all_shards()),
        Ok(model.claim_shards(&all_shards()))
    );
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Append(specs) => {
                let mut appends: Vec<EntityAppend> = Vec::with_capacity(specs.len());
                for spec in specs {
                    let append = resolve(spec, &model, &appends);
                    appends.push(append);
                }
                let expected = without_reasons(model.append(&appends));
                let actual = without_reasons(journal.append(appends));
                prop_assert_eq!(actual, expected, "step {}: {:?}", step, op);
            }
            Op::SaveSnapshot(i, snapshot) => {
                let key = entity(*i);
                prop_assert_eq!(journal.save_snapshot(&key, snapshot), Ok(()));
                model.snapshots.insert(key, snapshot.clone());
            }
            Op::LoadSnapshot(i) => {
                let key = entity(*i);
                prop_assert_eq!(
                    journal.load_snapshot(&key),
                    Ok(model.snapshots.get(&key).cloned()),
                    "step {}: {:?}",
                    step,
                    op
                );
            }
            Op::ReadEvents {
                entity: i,
                from,
                limit,
            } => {
                let key = entity(*i);
                prop_assert_eq!(
                    journal.read_events(&key, *from, *limit),
                    Ok(model.read_events(&key, *from, *limit)),
                    "step {}: {:?}",
                    step,
                    op
                );
            }
            Op::LastSeqNr(i) => {
                let key = entity(*i);
                prop_assert_eq!(
                    journal.last_seq_nr(&key),
                    Ok(model.last_seq_nr(&key)),
                    "step {}: {:?}",
                    step,
                    op
                );
            }
            Op::ReadStream { type_index, page } => {
                let entity_type = TYPES[*type_index % TYPES.len()];
                prop_assert_eq!(
                    read_whole_stream(&journal, entity_type, *page),
                    Ok(model_stream(&model, entity_type)),
                    "step {}: {:?}",
                    step,
                    op
                );
            }
            Op::EntitiesInShard(shard) => {
                prop_assert_eq!(
                    journal.entities_in_shard(*shard).map(sorted),
                    Ok::<_, JournalError>(model.entities_in_shard(*shard)),
                    "step {}: {:?}",
                    step,
                    op
                );
            }
            Op::Claim(shards) => {
                prop_assert_eq!(
                    journal.claim_shards(shards),
                    Ok(model.claim_shards(shards)),
                    "step {}: {:?}",
                    step,
                    op
                );
            }
            Op::FindCommandId(i, command_id) => {
                let key = entity(*i);
                prop_assert_eq!(
                    journal.find_command_id(&key, command_id),
                    Ok(model.find_command_id(&key, command_id)),
                    "step {}: {:?}",
                    step,
                    op
                );
            }
            Op::ExpireCommandIds {
                shard,
                fence,
                before_ms,
            } => {
                let token = token(*fence, *shard, &model);
                prop_assert_eq!(
                    journal.expire_command_ids(token, *before_ms, usize::MAX),
                    model.expire_command_ids(token, *before_ms),
                    "step {}: {:?}",
                    step,
                    op
                );
            }
            Op::Release(shards) => {
                let tokens: Vec<FenceToken> = shards
                    .iter()
                    .filter_map(|s| {
                        model
                            .held
                            .get(s)
                            .map(|&epoch| FenceToken { shard: *s, epoch })
                    })
                    .collect();
                prop_assert_eq!(journal.release_shards(&tokens), Ok(()));
                model.release(shards);
            }
            Op::ReadPending { shard, page } => {
                prop_assert_eq!(
                    read_pending(&journal, *shard, *page),
                    Ok((model.outbox(*shard), model.timers(*shard))),
                    "step {}: {:?}",
                    step,
                    op
                );
            }
            Op::AckSends {
                shard,
                fence,
                picks,
            } => {
                let pending = model.outbox(*shard);
                let mut ids: Vec<SendId> = picks
                    .iter()
                    .filter(|_| !pending.is_empty())
                    .map(|p| pending[p % pending.len()].id.clone())
                    .collect();
                ids.push(SendId {
                    source: entity(*shard as usize * TYPES.len() * IDS.len()),
                    seq_nr: u64::MAX,
                    index: 0,
                });
                let token = token(*fence, *shard, &model);
                prop_assert_eq!(
                    journal.ack_sends(token, &ids),
                    model.ack_sends(token, &ids),
                    "step {}: {:?}",
                    step,
                    op
                );
            }
            Op::AnswerSends {
                shard,
                fence,
                picks,
                refused,
            } => {
                let pending = model.outbox(*shard);
                let answer = if *refused {
                    Answer::Refused
                } else {
                    Answer::Accepted
                };
                let answers: Vec<(SendId, Answer)> = picks
                    .iter()
                    .filter(|_| !pending.is_empty())
                    .map(|p| (pending[p % pending.len()].id.clone(), answer))
                    .collect();
                let token = token(*fence, *shard, &model);
                prop_assert_eq!(
                    journal.answer_sends(token, &answers),
                    model.answer_sends(token, &answers),
                    "step {}: {:?}",
                    step,
                    op
                );
            }
            Op::AckTimers {
                shard,
                fence,
                picks,
                stale,
            } => {
                let pending = model.timers(*shard);
                let fired: Vec<FiredTimer> = picks
                    .iter()
                    .filter(|_| !pending.is_empty())
                    .map(|p| {
                        let mut fired = pending[p % pending.len()].fired();
                        if *stale {
                            fired.seq_nr = fired.seq_nr.saturating_sub(1);
                        }
                        fired
                    })
                    .collect();
                let token = token(*fence, *shard, &model);
                prop_assert_eq!(
                    journal.ack_timers(token, &fired),
                    model.ack_timers(token, &fired),
                    "step {}: {:?}",
                    step,
                    op
                );
            }
            Op::Reopen { claim_all } => {
                drop(journal);
                journal = open(dir.path());
                model.reopen();
                check_everything(
                    &journal,
                    &model,
                    &format!("after the reopen at step {step}"),
                )?;
                if *claim_all {
                    prop_assert_eq!(
                        journal.claim_shards(&all_shards()),
                        Ok(model.claim_shards(&all_shards())),
                        "step {}: {:?}",
                        step,
                        op
                    );
                }
            }
        }
    }
    check_everything(&journal, &model, "at the end")
}

/// Runs the property against the backend `open` opens (64 random cases).
pub(crate) fn check_against_model<J: Journal>(open: Opener<'_, J>) {
    let config = ProptestConfig {
        cases: 64,
        // A failure is reported with its shrunk case; no regression files
        // are written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let ops = prop::collection::vec(op(), 1..40);
    if let Err(e) = runner.run(&ops, |ops| run(open, &ops)) {
        panic!("the journal does not behave like the model: {e}");
    }
}

#[cfg(test)]
#[test]
fn the_model_chains_appends_of_one_call_and_fences_after_a_reopen() {
    let key = entity(0);
    let mut model = Model::default();
    let token = model.claim_shards(&[0])[0];
    let event = super::event("c", b"e");
    let append = |expected| EntityAppend {
        key: key.clone(),
        expected_seq_nr: expected,
        fence: token,
        events: vec![event.clone()],
        command_ids: Vec::new(),
        sends: Vec::new(),
        timers: Vec::new(),
    };
    assert_eq!(
        model.append(&[append(0), append(1), append(1)]),
        vec![
            Ok(()),
            Ok(()),
            Err(AppendError::Conflict {
                key: key.clone(),
                expected: 1,
                actual: 2
            })
        ]
    );
    model.reopen();
    assert_eq!(
        model.append(&[append(2)]),
        vec![Err(AppendError::Fenced {
            shard: 0,
            presented: token.epoch,
            current: 0
        })]
    );
    assert_eq!(model.read_events(&key, 0, usize::MAX).len(), 2);
}
