//! The courier's deliveries: starting them (a send to its target, the
//! target's recorded answer, the sender's `on-accepted` / `on-refused`
//! command back to it, a timer's command to its entity), and what each
//! outcome does next.
//!
//! A send moves through [`Phase`]s: `Target` until its target answers; then,
//! if the sender declared a command for that answer, `Recording` until the
//! answer is durable in the journal, and `Back` until the sender took its
//! command; then it is acknowledged. Recording first makes the answer
//! final: a delivery repeated after a crash or a failover resumes from the
//! recorded answer instead of asking the target again (whose answer to the
//! same command could differ by then).

use stead_journal::{Answer, AppendError, EntityKey, FenceToken, FiredTimer, SendId};
use tracing::Instrument;

use super::stats::bump;
use super::{Ack, Courier, Done, Job, MAX_IN_FLIGHT, Phase, ids};
use crate::dispatch::{Delivery, Verdict};

/// Backoff of a delivery that got no answer: doubling from the first.
const FIRST_RETRY_MS: u64 = 50;
const MAX_RETRY_MS: u64 = 5_000;

impl Courier {
    pub(super) fn start_deliveries(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        let Some(dispatch) = self.dispatch.get() else {
            return;
        };
        // Answers to record, per lease: one durable journal call each.
        let mut recordings: Vec<(FenceToken, Vec<(SendId, Answer)>)> = Vec::new();
        while self.deliveries_in_flight < MAX_IN_FLIGHT {
            let Some(job) = self.ready.pop_front() else {
                break;
            };
            let Some(fence) = self.shards.get(&job.shard()).map(|s| s.fence) else {
                continue;
            };
            let (delivery, seq_nr, kind) = match &job {
                Job::Send(id) => {
                    let Some(state) = self.sends.get_mut(id) else {
                        continue;
                    };
                    if state.in_flight {
                        continue;
                    }
                    state.in_flight = true;
                    match &state.phase {
                        Phase::Target => (
                            Delivery {
                                entity_type: state.send.entity_type.clone(),
                                entity_id: state.send.entity_id.clone(),
                                command: state.send.command.clone(),
                                command_id: ids::send(id),
                            },
                            0,
                            "send",
                        ),
                        Phase::Recording { answer, .. } => {
                            let entry = (id.clone(), *answer);
                            match recordings.iter_mut().find(|(f, _)| *f == fence) {
                                Some((_, answers)) => answers.push(entry),
                                None => recordings.push((fence, vec![entry])),
                            }
                            continue;
                        }
                        Phase::Back { command, answer } => (
                            Delivery {
                                entity_type: id.source.entity_type.clone(),
                                entity_id: id.source.entity_id.clone(),
                                command: command.clone(),
                                command_id: ids::reply(id, *answer == Answer::Accepted),
                            },
                            0,
                            match answer {
                                Answer::Accepted => "on-accepted",
                                Answer::Refused => "on-refused",
                            },
                        ),
                    }
                }
                Job::Timer(key, name) => {
                    let slot = (key.clone(), name.clone());
                    let Some(state) = self.timers.get_mut(&slot) else {
                        continue;
                    };
                    if state.in_flight {
                        continue;
                    }
                    state.in_flight = true;
                    (
                        Delivery {
                            entity_type: key.entity_type.clone(),
                            entity_id: key.entity_id.clone(),
                            command: state.command.clone(),
                            command_id: ids::timer(key, name, state.seq_nr),
                        },
                        state.seq_nr,
                        "timer",
                    )
                }
            };
            let span = tracing::info_span!(
                "deliver",
                kind,
                entity_type = %delivery.entity_type,
                entity_id = %delivery.entity_id,
                command_id = %delivery.command_id,
            );
            tracing::debug!(parent: &span, in_flight = self.deliveries_in_flight, "delivering");
            let future = dispatch.dispatch(delivery);
            self.deliveries_in_flight += 1;
            self.in_flight.push(Box::pin(
                async move {
                    let outcome = future.await;
                    Done::Delivered {
                        job,
                        fence,
                        seq_nr,
                        outcome,
                    }
                }
                .instrument(span),
            ));
        }
        for (fence, answers) in recordings {
            let journal = self.journal.clone();
            self.deliveries_in_flight += 1;
            self.in_flight.push(Box::pin(async move {
                let result = journal.answer_sends(fence, &answers).await;
                let ids = answers.into_iter().map(|(id, _)| id).collect();
                Done::Recorded { ids, fence, result }
            }));
        }
    }

    pub(super) fn on_done(&mut self, done: Done) {
        match done {
            Done::Loaded {
                fence,
                read,
                result,
            } => self.loaded(fence, read, result),
            Done::Reload(fence, read) => {
                if self.latest_read(fence, read) {
                    self.load(fence, read, std::time::Duration::ZERO);
                }
            }
            Done::Delivered {
                job,
                fence,
                seq_nr,
                outcome,
            } => {
                self.deliveries_in_flight -= 1;
                if self.current(fence) {
                    let verdict = Verdict::of(&outcome);
                    match job {
                        Job::Send(id) => self.send_answered(fence, id, verdict),
                        Job::Timer(key, name) => {
                            self.timer_answered(fence, key, name, seq_nr, verdict);
                        }
                    }
                }
            }
            Done::Recorded { ids, fence, result } => {
                self.deliveries_in_flight -= 1;
                if self.current(fence) {
                    for id in ids {
                        self.recorded(id, result.clone());
                    }
                }
            }
            Done::Acked { fence, result } => {
                if let Err(e) = result {
                    // The journal keeps what was not acknowledged: the next
                    // holder delivers it again, and the target's dedup
                    // recognises it.
                    tracing::debug!(shard = fence.shard, error = %e, "acknowledging deliveries failed");
                }
            }
        }
    }

    fn send_answered(&mut self, fence: FenceToken, id: SendId, verdict: Verdict) {
        let Some(state) = self.sends.get_mut(&id) else {
            return;
        };
        state.in_flight = false;
        let next = match (&state.phase, verdict) {
            (_, Verdict::Retry(why)) => {
                let attempts = state.attempts;
                state.attempts += 1;
                tracing::debug!(source = %id.source, seq_nr = id.seq_nr, attempts, %why, "delivery not answered; retrying");
                self.retry(Job::Send(id), attempts);
                return;
            }
            (Phase::Target, Verdict::Accepted) => {
                bump(&self.counters.sends_accepted);
                tracing::debug!(source = %id.source, seq_nr = id.seq_nr, index = id.index, "send accepted");
                state
                    .send
                    .on_accepted
                    .clone()
                    .map(|command| (command, Answer::Accepted))
            }
            (Phase::Target, Verdict::Refused(why)) => {
                bump(&self.counters.sends_refused);
                tracing::warn!(
                    source = %id.source,
                    seq_nr = id.seq_nr,
                    target_type = %state.send.entity_type,
                    target_id = %state.send.entity_id,
                    %why,
                    "a send was refused by its target"
                );
                state
                    .send
                    .on_refused
                    .clone()
                    .map(|command| (command, Answer::Refused))
            }
            (Phase::Back { .. } | Phase::Recording { .. }, Verdict::Accepted) => {
                bump(&self.counters.replies_delivered);
                tracing::debug!(source = %id.source, seq_nr = id.seq_nr, "answer delivered to the sender");
                None
            }
            (
                Phase::Back { answer, .. } | Phase::Recording { answer, .. },
                Verdict::Refused(why),
            ) => {
                bump(&self.counters.replies_delivered);
                bump(&self.counters.replies_refused);
                tracing::warn!(
                    source = %id.source,
                    seq_nr = id.seq_nr,
                    answer = ?answer,
                    %why,
                    "the sender refused the command it declared for its send's answer"
                );
                None
            }
        };
        match next {
            Some((command, answer)) => {
                state.phase = Phase::Recording { command, answer };
                state.attempts = 0;
                self.ready.push_back(Job::Send(id));
            }
            None => {
                self.sends.remove(&id);
                self.acks.push((fence, Ack::Send(id)));
            }
        }
    }

    /// The answer is durable (or could not be recorded).
    fn recorded(&mut self, id: SendId, result: Result<(), AppendError>) {
        let Some(state) = self.sends.get_mut(&id) else {
            return;
        };
        state.in_flight = false;
        match result {
            Ok(()) => {
                if let super::Phase::Recording { command, answer } = &state.phase {
                    state.phase = Phase::Back {
                        command: command.clone(),
                        answer: *answer,
                    };
                }
                self.ready.push_back(Job::Send(id));
            }
            // The lease is gone: the next holder resumes from the journal.
            Err(AppendError::Fenced { .. }) => {}
            Err(e) => {
                let attempts = state.attempts;
                state.attempts += 1;
                tracing::debug!(source = %id.source, seq_nr = id.seq_nr, error = %e, "recording a send's answer failed; retrying");
                self.retry(Job::Send(id), attempts);
            }
        }
    }

    fn timer_answered(
        &mut self,
        fence: FenceToken,
        key: EntityKey,
        name: String,
        seq_nr: u64,
        verdict: Verdict,
    ) {
        let slot = (key, name);
        let same = self.timers.get(&slot).is_some_and(|t| t.seq_nr == seq_nr);
        if let Verdict::Retry(why) = &verdict {
            if same && let Some(state) = self.timers.get_mut(&slot) {
                state.in_flight = false;
                let attempts = state.attempts;
                state.attempts += 1;
                tracing::debug!(entity = %slot.0, timer = %slot.1, attempts, %why, "timer not answered; retrying");
                self.retry(Job::Timer(slot.0, slot.1), attempts);
            }
            // Otherwise cancelled or set again while it fired: the one set
            // since has its own time.
            return;
        }
        bump(&self.counters.timers_fired);
        if let Verdict::Refused(why) = &verdict {
            bump(&self.counters.timers_refused);
            tracing::warn!(entity = %slot.0, timer = %slot.1, %why, "a timer's command was refused by its entity");
        }
        if same {
            self.timers.remove(&slot);
        }
        // Removes the timer unless it was set again since (another seq-nr).
        let fired = FiredTimer {
            key: slot.0,
            name: slot.1,
            seq_nr,
        };
        self.acks.push((fence, Ack::Timer(fired)));
    }

    pub(super) fn retry(&mut self, job: Job, attempts: u32) {
        bump(&self.counters.retries);
        let delay = FIRST_RETRY_MS
            .saturating_mul(1u64 << attempts.min(16))
            .min(MAX_RETRY_MS);
        let at = self.clock.mono_ms().saturating_add(delay);
        self.retries.insert((at, job));
    }
}
