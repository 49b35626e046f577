//! The conformance cases of the outbox: sends and timers written with their
//! events, kept across reopens and claims, removed only under the fence.

use stead_types::effects::{SendCommand, Timer, TimerChange};

use super::{Opener, append};
use crate::{
    Answer, AppendError, EntityKey, FenceToken, FiredTimer, Journal, OutboxSend, PendingSend,
    PendingTimer, SendId, ShardId, TimerWrite,
};

fn send(index: u32, seq_nr: u64, to: &str) -> OutboxSend {
    OutboxSend {
        seq_nr,
        index,
        send: SendCommand {
            entity_type: "account".into(),
            entity_id: to.into(),
            command: format!("{{\"deposit\":{{\"amount\":{index}}}}}").into_bytes(),
            on_accepted: (index == 0).then(|| br#"{"done":{}}"#.to_vec()),
            on_refused: Some(br#"{"refund":{}}"#.to_vec()),
        },
    }
}

fn set(seq_nr: u64, name: &str, fire_at_ms: u64) -> TimerWrite {
    TimerWrite {
        seq_nr,
        change: TimerChange::Set(Timer {
            name: name.into(),
            fire_at_ms,
            command: br#"{"expire":{}}"#.to_vec(),
        }),
    }
}

fn cancel(seq_nr: u64, name: &str) -> TimerWrite {
    TimerWrite {
        seq_nr,
        change: TimerChange::Cancel(name.into()),
    }
}

/// Every pending send of `shard`, read one per page.
fn outbox<J: Journal>(j: &J, shard: ShardId) -> Vec<PendingSend> {
    let mut all: Vec<PendingSend> = Vec::new();
    loop {
        let page = j
            .read_outbox(shard, all.last().map(|s| &s.id), 1)
            .expect("read_outbox");
        if page.is_empty() {
            return all;
        }
        assert_eq!(page.len(), 1, "a page holds at most its limit");
        all.extend(page);
    }
}

/// Every timer of `shard`, read one per page.
fn timers<J: Journal>(j: &J, shard: ShardId) -> Vec<PendingTimer> {
    let mut all: Vec<PendingTimer> = Vec::new();
    loop {
        let after = all.last().map(|t| (&t.key, t.timer.name.as_str()));
        let page = j.read_timers(shard, after, 1).expect("read_timers");
        if page.is_empty() {
            return all;
        }
        assert_eq!(page.len(), 1, "a page holds at most its limit");
        all.extend(page);
    }
}

fn ids(sends: &[PendingSend]) -> Vec<(String, u64, u32)> {
    let mut ids: Vec<_> = sends
        .iter()
        .map(|s| (s.id.source.entity_id.clone(), s.id.seq_nr, s.id.index))
        .collect();
    ids.sort();
    ids
}

fn names(timers: &[PendingTimer]) -> Vec<(String, String, u64, u64)> {
    let mut names: Vec<_> = timers
        .iter()
        .map(|t| {
            (
                t.key.entity_id.clone(),
                t.timer.name.clone(),
                t.seq_nr,
                t.timer.fire_at_ms,
            )
        })
        .collect();
    names.sort();
    names
}

pub(super) fn sends_and_timers_are_written_with_their_events_and_removed_only_under_the_fence<
    J: Journal,
>(
    open: Opener<'_, J>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = EntityKey::new(0, "transfer", "t");
    let b = EntityKey::new(0, "transfer", "t2");
    let elsewhere = EntityKey::new(1, "transfer", "u");
    {
        let j = open(dir.path());
        let tokens = j.claim_shards(&[0, 1]).expect("claim");
        let (f0, f1) = (tokens[0], tokens[1]);
        let mut first = append(&a, 0, f0, &["e1", "e2"]);
        first.sends = vec![send(0, 1, "x"), send(1, 1, "y"), send(0, 2, "z")];
        first.timers = vec![
            set(1, "expire", 500),
            set(2, "remind", 900),
            cancel(2, "gone"),
        ];
        let mut second = append(&b, 0, f0, &["e1"]);
        second.timers = vec![set(1, "expire", 100), set(1, "expire", 200)];
        let mut third = append(&elsewhere, 0, f1, &["e1"]);
        third.sends = vec![send(0, 1, "w")];
        // Refused appends write none of their sends or timers.
        let mut conflict = append(&b, 5, f0, &["e"]);
        conflict.sends = vec![send(0, 6, "never")];
        conflict.timers = vec![set(6, "never", 1)];
        let mut fenced = append(
            &elsewhere,
            1,
            FenceToken {
                shard: 1,
                epoch: f1.epoch + 1,
            },
            &["e"],
        );
        fenced.sends = vec![send(0, 2, "never")];
        let results = j.append(vec![first, second, third, conflict, fenced]);
        assert!(
            matches!(
                results[..],
                [
                    Ok(()),
                    Ok(()),
                    Ok(()),
                    Err(AppendError::Conflict { .. }),
                    Err(AppendError::Fenced { .. })
                ]
            ),
            "{results:?}"
        );
        let pending = outbox(&j, 0);
        assert_eq!(
            ids(&pending),
            vec![("t".into(), 1, 0), ("t".into(), 1, 1), ("t".into(), 2, 0)],
            "the shard's sends, each once, paging one at a time"
        );
        let x = pending
            .iter()
            .find(|s| s.send.entity_id == "x")
            .expect("the send to x");
        assert_eq!(x.send, send(0, 1, "x").send, "a send reads back whole");
        assert_eq!(ids(&outbox(&j, 1)), vec![("u".into(), 1, 0)]);
        assert_eq!(
            names(&timers(&j, 0)),
            vec![
                ("t".into(), "expire".into(), 1, 500),
                ("t".into(), "remind".into(), 2, 900),
                ("t2".into(), "expire".into(), 1, 200),
            ],
            "timers by name, a later set replacing an earlier one"
        );

        // A stale fence removes nothing.
        let stale = FenceToken {
            shard: 0,
            epoch: f0.epoch - 1,
        };
        let first_id = pending[0].id.clone();
        assert!(matches!(
            j.ack_sends(stale, std::slice::from_ref(&first_id)),
            Err(AppendError::Fenced { .. })
        ));
        let fired = FiredTimer {
            key: a.clone(),
            name: "expire".into(),
            seq_nr: 1,
        };
        assert!(matches!(
            j.ack_timers(stale, std::slice::from_ref(&fired)),
            Err(AppendError::Fenced { .. })
        ));
        assert_eq!(outbox(&j, 0).len(), 3);
        assert_eq!(timers(&j, 0).len(), 3);

        // The holder's acks remove them; unknown ids are ignored.
        // Answers: fenced, durable, and the first one stays.
        let answered = pending[1].id.clone();
        assert!(matches!(
            j.answer_sends(stale, &[(answered.clone(), Answer::Refused)]),
            Err(AppendError::Fenced { .. })
        ));
        assert_eq!(
            j.answer_sends(f0, &[(answered.clone(), Answer::Refused)]),
            Ok(())
        );
        assert_eq!(
            j.answer_sends(f0, &[(answered.clone(), Answer::Accepted)]),
            Ok(())
        );
        let unknown = SendId {
            source: a.clone(),
            seq_nr: 99,
            index: 0,
        };
        assert_eq!(
            j.answer_sends(f0, &[(unknown.clone(), Answer::Accepted)]),
            Ok(()),
            "an answer to a send no longer pending is ignored"
        );
        let answers: Vec<_> = outbox(&j, 0)
            .into_iter()
            .map(|s| (s.id.seq_nr, s.id.index, s.answer))
            .collect();
        assert_eq!(
            answers,
            vec![(1, 0, None), (1, 1, Some(Answer::Refused)), (2, 0, None)]
        );
        assert_eq!(j.ack_sends(f0, &[first_id, unknown]), Ok(()));
        assert_eq!(outbox(&j, 0).len(), 2);
        // A timer set again since it fired stays.
        let mut again = append(&a, 2, f0, &["e3"]);
        again.timers = vec![set(3, "expire", 700)];
        assert_eq!(j.append(vec![again]), vec![Ok(())]);
        assert_eq!(j.ack_timers(f0, std::slice::from_ref(&fired)), Ok(()));
        assert_eq!(
            names(&timers(&j, 0)),
            vec![
                ("t".into(), "expire".into(), 3, 700),
                ("t".into(), "remind".into(), 2, 900),
                ("t2".into(), "expire".into(), 1, 200),
            ],
            "an ack of an earlier firing leaves the timer set since"
        );
        let fired_remind = FiredTimer {
            key: a.clone(),
            name: "remind".into(),
            seq_nr: 2,
        };
        assert_eq!(j.ack_timers(f0, &[fired_remind]), Ok(()));
        // A cancel removes a timer.
        let mut cancelled = append(&b, 1, f0, &["e2"]);
        cancelled.timers = vec![cancel(2, "expire")];
        assert_eq!(j.append(vec![cancelled]), vec![Ok(())]);
        assert_eq!(
            names(&timers(&j, 0)),
            vec![("t".into(), "expire".into(), 3, 700)]
        );
        // A send or timer outside its append's events is invalid.
        let mut outside = append(&a, 3, f0, &["e4"]);
        outside.sends = vec![send(0, 3, "early")];
        let mut unnamed = append(&a, 3, f0, &["e4"]);
        unnamed.timers = vec![set(4, "", 1)];
        let mut twice = append(&a, 3, f0, &["e4"]);
        twice.sends = vec![send(0, 4, "p"), send(0, 4, "q")];
        for bad in [outside, unnamed, twice] {
            assert!(matches!(
                j.append(vec![bad])[0],
                Err(AppendError::Invalid { .. })
            ));
        }
    }
    // Pending sends and timers survive a reopen, and a new holder (after a
    // claim) reads and acknowledges them.
    let j = open(dir.path());
    assert_eq!(
        ids(&outbox(&j, 0)),
        vec![("t".into(), 1, 1), ("t".into(), 2, 0)]
    );
    assert_eq!(
        outbox(&j, 0)[0].answer,
        Some(Answer::Refused),
        "an answer survives a reopen"
    );
    assert_eq!(
        names(&timers(&j, 0)),
        vec![("t".into(), "expire".into(), 3, 700)]
    );
    let old = FenceToken { shard: 0, epoch: 1 };
    assert!(
        matches!(j.ack_sends(old, &[]), Err(AppendError::Fenced { .. })),
        "a reopened journal holds no lease until it claims"
    );
    let f0 = j.claim_shards(&[0]).expect("claim")[0];
    let rest: Vec<SendId> = outbox(&j, 0).into_iter().map(|s| s.id).collect();
    assert_eq!(j.ack_sends(f0, &rest), Ok(()));
    assert!(outbox(&j, 0).is_empty());
    assert_eq!(ids(&outbox(&j, 1)), vec![("u".into(), 1, 0)]);
}
