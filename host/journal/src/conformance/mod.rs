//! The conformance suite of the [`Journal`] contract.
//!
//! Every backend runs [`run_all`] with a function that opens the backend on a
//! directory (fresh for each case; reopened on the same directory for the
//! durability cases). A failure names the case and the guarantee broken.

use std::path::Path;

mod model;
mod outbox;
mod stream;

use crate::{
    AppendError, CommandIdRecord, EntityAppend, EntityKey, EventRecord, FenceToken, Journal,
    Refusal, SnapshotRecord,
};

/// An event record with `command_id` and `payload`, no reply.
pub fn event(command_id: &str, payload: &[u8]) -> EventRecord {
    EventRecord {
        command_id: command_id.to_owned(),
        timestamp_ms: 1,
        payload: payload.to_vec(),
        reply: None,
    }
}

fn append(key: &EntityKey, expected: u64, fence: FenceToken, payloads: &[&str]) -> EntityAppend {
    EntityAppend {
        key: key.clone(),
        expected_seq_nr: expected,
        fence,
        events: payloads
            .iter()
            .map(|p| event("cmd", p.as_bytes()))
            .collect(),
        command_ids: Vec::new(),
        sends: Vec::new(),
        timers: Vec::new(),
    }
}

/// A command-id index entry.
pub fn command_id(command_id: &str, seq_nr: u64, at_ms: u64, digest: u8) -> CommandIdRecord {
    CommandIdRecord {
        command_id: command_id.to_owned(),
        seq_nr,
        at_ms,
        digest: [digest; 32],
        refusal: None,
    }
}

fn payloads<J: Journal>(journal: &J, key: &EntityKey, from: u64) -> Vec<(u64, String)> {
    journal
        .read_events(key, from, usize::MAX)
        .expect("read_events")
        .into_iter()
        .map(|e| {
            (
                e.seq_nr,
                String::from_utf8_lossy(&e.record.payload).into_owned(),
            )
        })
        .collect()
}

/// Opens a backend on a directory.
pub type Opener<'a, J> = &'a dyn Fn(&Path) -> J;
/// One named case of the suite.
type Case<J> = (&'static str, fn(Opener<'_, J>));

/// Runs every case against the backend `open` opens, then the model-based
/// property test (random operations against the simplest model of the
/// contract, across reopens and fence changes).
pub fn run_all<J: Journal>(open: Opener<'_, J>) {
    run_cases(open);
    model::check_against_model(open);
}

/// Runs the named cases only.
pub fn run_cases<J: Journal>(open: Opener<'_, J>) {
    let cases: &[Case<J>] = &[
        (
            "events_are_numbered_from_one_and_read_in_order",
            events_are_numbered_from_one_and_read_in_order,
        ),
        (
            "a_stale_expected_seq_nr_conflicts_and_writes_nothing",
            a_stale_expected_seq_nr_conflicts_and_writes_nothing,
        ),
        (
            "appends_of_one_call_succeed_or_fail_per_entity",
            appends_of_one_call_succeed_or_fail_per_entity,
        ),
        (
            "successive_appends_to_one_entity_in_one_call_chain",
            successive_appends_to_one_entity_in_one_call_chain,
        ),
        (
            "a_stale_or_foreign_fence_is_refused",
            a_stale_or_foreign_fence_is_refused,
        ),
        (
            "a_released_lease_fences_its_holder_and_the_next_claim_moves_past_it",
            a_released_lease_fences_its_holder_and_the_next_claim_moves_past_it,
        ),
        (
            "a_renewal_keeps_held_leases_and_reports_lost_ones",
            a_renewal_keeps_held_leases_and_reports_lost_ones,
        ),
        (
            "command_ids_are_indexed_with_their_events_and_survive_a_reopen",
            command_ids_are_indexed_with_their_events_and_survive_a_reopen,
        ),
        (
            "a_refusal_is_indexed_without_events_fenced_and_sequence_checked",
            a_refusal_is_indexed_without_events_fenced_and_sequence_checked,
        ),
        (
            "a_command_id_indexed_outside_its_append_is_invalid",
            a_command_id_indexed_outside_its_append_is_invalid,
        ),
        (
            "expiry_removes_the_oldest_entries_of_the_fenced_shard_within_the_limit",
            expiry_removes_the_oldest_entries_of_the_fenced_shard_within_the_limit,
        ),
        (
            "snapshots_are_latest_wins_and_per_entity",
            snapshots_are_latest_wins_and_per_entity,
        ),
        (
            "shards_list_only_their_own_entities",
            shards_list_only_their_own_entities,
        ),
        (
            "entities_with_prefix_ids_do_not_see_each_others_events",
            entities_with_prefix_ids_do_not_see_each_others_events,
        ),
        (
            "everything_acknowledged_survives_a_reopen",
            everything_acknowledged_survives_a_reopen,
        ),
        (
            "sends_and_timers_are_written_with_their_events_and_removed_only_under_the_fence",
            outbox::sends_and_timers_are_written_with_their_events_and_removed_only_under_the_fence,
        ),
        (
            "a_types_stream_follows_commit_order_per_shard_and_resumes_from_any_position",
            stream::a_types_stream_follows_commit_order_per_shard_and_resumes_from_any_position,
        ),
    ];
    for (name, case) in cases {
        eprintln!("journal conformance: {name}");
        case(open);
    }
}

fn fresh<J: Journal>(open: &dyn Fn(&Path) -> J) -> (tempfile::TempDir, J, FenceToken, FenceToken) {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = open(dir.path());
    let tokens = journal.claim_shards(&[0, 1]).expect("claim_shards");
    (dir, journal, tokens[0], tokens[1])
}

fn events_are_numbered_from_one_and_read_in_order<J: Journal>(open: &dyn Fn(&Path) -> J) {
    let (_dir, j, f0, _) = fresh(open);
    let k = EntityKey::new(0, "account", "a");
    assert_eq!(j.last_seq_nr(&k), Ok(0), "unknown entity has seq 0");
    assert!(j.read_events(&k, 1, 10).expect("read").is_empty());
    assert_eq!(
        j.append(vec![append(&k, 0, f0, &["e1", "e2", "e3"])]),
        vec![Ok(())]
    );
    assert_eq!(
        j.append(vec![append(&k, 3, f0, &["e4", "e5"])]),
        vec![Ok(())]
    );
    assert_eq!(j.last_seq_nr(&k), Ok(5));
    let all = payloads(&j, &k, 1);
    assert_eq!(
        all,
        (1..=5).map(|i| (i, format!("e{i}"))).collect::<Vec<_>>()
    );
    assert_eq!(
        payloads(&j, &k, 4),
        vec![(4, "e4".into()), (5, "e5".into())]
    );
    assert_eq!(payloads(&j, &k, 0).len(), 5, "from 0 reads from the start");
    assert!(
        payloads(&j, &k, 6).is_empty(),
        "reading past the end is empty"
    );
    let limited = j.read_events(&k, 2, 2).expect("read");
    assert_eq!(
        limited.iter().map(|e| e.seq_nr).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(limited[0].record.command_id, "cmd");
}

fn a_stale_expected_seq_nr_conflicts_and_writes_nothing<J: Journal>(open: &dyn Fn(&Path) -> J) {
    let (_dir, j, f0, _) = fresh(open);
    let k = EntityKey::new(0, "account", "a");
    assert_eq!(
        j.append(vec![append(&k, 0, f0, &["e1", "e2"])]),
        vec![Ok(())]
    );
    for stale in [0, 1, 3] {
        let r = j.append(vec![append(&k, stale, f0, &["x"])]);
        assert_eq!(
            r,
            vec![Err(AppendError::Conflict {
                key: k.clone(),
                expected: stale,
                actual: 2
            })]
        );
    }
    assert_eq!(j.last_seq_nr(&k), Ok(2));
    assert_eq!(
        payloads(&j, &k, 1),
        vec![(1, "e1".into()), (2, "e2".into())]
    );
}

fn appends_of_one_call_succeed_or_fail_per_entity<J: Journal>(open: &dyn Fn(&Path) -> J) {
    let (_dir, j, f0, _) = fresh(open);
    let a = EntityKey::new(0, "t", "a");
    let b = EntityKey::new(0, "t", "b");
    assert_eq!(j.append(vec![append(&b, 0, f0, &["b1"])]), vec![Ok(())]);
    let r = j.append(vec![
        append(&a, 0, f0, &["a1", "a2"]),
        append(&b, 0, f0, &["b-stale", "b-stale2"]),
    ]);
    assert_eq!(r[0], Ok(()));
    assert!(matches!(r[1], Err(AppendError::Conflict { .. })), "{r:?}");
    assert_eq!(payloads(&j, &a, 1).len(), 2);
    assert_eq!(
        payloads(&j, &b, 1),
        vec![(1, "b1".into())],
        "the refused entity got none of its events"
    );
    let empty = EntityAppend {
        key: a.clone(),
        expected_seq_nr: 2,
        fence: f0,
        events: vec![],
        command_ids: Vec::new(),
        sends: Vec::new(),
        timers: Vec::new(),
    };
    assert!(matches!(
        j.append(vec![empty])[0],
        Err(AppendError::Invalid { .. })
    ));
}

fn successive_appends_to_one_entity_in_one_call_chain<J: Journal>(open: &dyn Fn(&Path) -> J) {
    let (_dir, j, f0, _) = fresh(open);
    let k = EntityKey::new(0, "t", "a");
    let r = j.append(vec![
        append(&k, 0, f0, &["1", "2"]),
        append(&k, 2, f0, &["3"]),
        append(&k, 0, f0, &["no"]),
    ]);
    assert_eq!(r[0], Ok(()));
    assert_eq!(r[1], Ok(()));
    assert!(
        matches!(r[2], Err(AppendError::Conflict { actual: 3, .. })),
        "{r:?}"
    );
    assert_eq!(j.last_seq_nr(&k), Ok(3));
}

fn a_stale_or_foreign_fence_is_refused<J: Journal>(open: &dyn Fn(&Path) -> J) {
    let (_dir, j, old, f1) = fresh(open);
    let k = EntityKey::new(0, "t", "a");
    let new = j.claim_shards(&[0]).expect("reclaim")[0];
    assert!(new.epoch > old.epoch, "a claim moves the epoch forward");
    let r = j.append(vec![append(&k, 0, old, &["stale"])]);
    assert_eq!(
        r,
        vec![Err(AppendError::Fenced {
            shard: 0,
            presented: old.epoch,
            current: new.epoch
        })]
    );
    assert!(matches!(
        j.append(vec![append(&k, 0, f1, &["x"])])[0],
        Err(AppendError::Invalid { .. })
    ));
    let unclaimed = EntityKey::new(7, "t", "a");
    let forged = FenceToken { shard: 7, epoch: 1 };
    assert!(matches!(
        j.append(vec![append(&unclaimed, 0, forged, &["x"])])[0],
        Err(AppendError::Fenced { .. })
    ));
    assert_eq!(j.last_seq_nr(&k), Ok(0));
    assert_eq!(j.append(vec![append(&k, 0, new, &["ok"])]), vec![Ok(())]);
}

fn a_released_lease_fences_its_holder_and_the_next_claim_moves_past_it<J: Journal>(
    open: Opener<'_, J>,
) {
    let (_dir, journal, fence, _) = fresh(open);
    let key = EntityKey::new(fence.shard, "t", "released");
    assert_eq!(
        journal.append(vec![append(&key, 0, fence, &["a"])]),
        vec![Ok(())]
    );
    journal.release_shards(&[fence]).expect("release");
    let refused = journal.append(vec![append(&key, 1, fence, &["b"])]);
    assert!(
        matches!(refused[..], [Err(AppendError::Fenced { .. })]),
        "an append under a released lease must be fenced: {refused:?}"
    );
    let again = journal.claim_shards(&[fence.shard]).expect("claim")[0];
    assert!(
        again.epoch > fence.epoch,
        "a claim after a release moves the epoch past it: {again:?} after {fence:?}"
    );
    assert_eq!(
        journal.append(vec![append(&key, 1, again, &["b"])]),
        vec![Ok(())]
    );
    assert_eq!(
        payloads(&journal, &key, 1),
        vec![(1, "a".to_owned()), (2, "b".to_owned())],
        "a release keeps everything written"
    );
}

fn a_renewal_keeps_held_leases_and_reports_lost_ones<J: Journal>(open: Opener<'_, J>) {
    let (_dir, journal, f0, f1) = fresh(open);
    assert_eq!(journal.renew_shards(&[f0, f1]), Ok(vec![f0, f1]));
    journal.release_shards(&[f1]).expect("release");
    assert_eq!(
        journal.renew_shards(&[f0, f1]),
        Ok(vec![f0]),
        "a released lease is not renewed"
    );
    let again = journal.claim_shards(&[0]).expect("claim")[0];
    assert_eq!(
        journal.renew_shards(&[f0, again]),
        Ok(vec![again]),
        "a token older than the shard's last claim is lost"
    );
    let key = EntityKey::new(0, "t", "renewed");
    assert_eq!(
        journal.append(vec![append(&key, 0, again, &["a"])]),
        vec![Ok(())],
        "a renewed lease still writes"
    );
}

fn command_ids_are_indexed_with_their_events_and_survive_a_reopen<J: Journal>(open: Opener<'_, J>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = EntityKey::new(0, "t", "keyed");
    let other = EntityKey::new(0, "t", "keyed-2");
    {
        let j = open(dir.path());
        let fence = j.claim_shards(&[0]).expect("claim")[0];
        let mut first = append(&key, 0, fence, &["a", "b", "c"]);
        first.command_ids = vec![command_id("k1", 2, 100, 1), command_id("k2", 3, 101, 2)];
        assert_eq!(j.append(vec![first]), vec![Ok(())]);
        assert_eq!(
            j.find_command_id(&key, "k1"),
            Ok(Some(command_id("k1", 2, 100, 1)))
        );
        assert_eq!(
            j.find_command_id(&key, "k2"),
            Ok(Some(command_id("k2", 3, 101, 2)))
        );
        assert_eq!(j.find_command_id(&key, "k"), Ok(None), "no prefix match");
        assert_eq!(
            j.find_command_ids(&[
                (key.clone(), "k2".to_owned()),
                (key.clone(), "k".to_owned()),
                (other.clone(), "k1".to_owned()),
                (key.clone(), "k1".to_owned()),
            ]),
            Ok(vec![
                Some(command_id("k2", 3, 101, 2)),
                None,
                None,
                Some(command_id("k1", 2, 100, 1)),
            ]),
            "many lookups answer in the order asked"
        );
        assert_eq!(
            j.find_command_id(&other, "k1"),
            Ok(None),
            "an id is per entity"
        );
        // A refused append indexes nothing.
        let mut stale = append(&key, 1, fence, &["x"]);
        stale.command_ids = vec![command_id("k3", 2, 102, 3)];
        let mut fenced = append(
            &other,
            0,
            FenceToken {
                shard: 0,
                epoch: fence.epoch + 1,
            },
            &["y"],
        );
        fenced.command_ids = vec![command_id("k4", 1, 103, 4)];
        let refused = j.append(vec![stale, fenced]);
        assert!(
            matches!(
                refused[..],
                [
                    Err(AppendError::Conflict { .. }),
                    Err(AppendError::Fenced { .. })
                ]
            ),
            "{refused:?}"
        );
        assert_eq!(j.find_command_id(&key, "k3"), Ok(None));
        assert_eq!(j.find_command_id(&other, "k4"), Ok(None));
    }
    let j = open(dir.path());
    assert_eq!(
        j.find_command_id(&key, "k1"),
        Ok(Some(command_id("k1", 2, 100, 1))),
        "an acknowledged index entry survives a reopen"
    );
}

fn a_refusal_is_indexed_without_events_fenced_and_sequence_checked<J: Journal>(
    open: Opener<'_, J>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = EntityKey::new(0, "t", "refuses");
    let unborn = EntityKey::new(0, "t", "never-written");
    let refusal = |id: &str, seq_nr: u64, r: Refusal| CommandIdRecord {
        refusal: Some(r),
        ..command_id(id, seq_nr, 50, 9)
    };
    let refusals =
        |key: &EntityKey, expected: u64, fence: FenceToken, ids: Vec<CommandIdRecord>| {
            EntityAppend {
                events: Vec::new(),
                command_ids: ids,
                ..append(key, expected, fence, &[])
            }
        };
    let rejected = refusal("r1", 2, Refusal::Rejected("insufficient funds".into()));
    let invalid = refusal("r2", 0, Refusal::InvalidCommand("unknown variant".into()));
    {
        let j = open(dir.path());
        let fence = j.claim_shards(&[0]).expect("claim")[0];
        assert_eq!(
            j.append(vec![append(&key, 0, fence, &["a", "b"])]),
            vec![Ok(())]
        );
        assert_eq!(
            j.append(vec![
                refusals(&key, 2, fence, vec![rejected.clone()]),
                refusals(&unborn, 0, fence, vec![invalid.clone()]),
            ]),
            vec![Ok(()), Ok(())],
            "an append of refusals alone is accepted"
        );
        assert_eq!(j.find_command_id(&key, "r1"), Ok(Some(rejected.clone())));
        assert_eq!(j.find_command_id(&unborn, "r2"), Ok(Some(invalid.clone())));
        assert_eq!(j.last_seq_nr(&key), Ok(2), "a refusal appends no event");
        assert_eq!(j.last_seq_nr(&unborn), Ok(0));
        assert_eq!(
            j.entities_in_shard(0),
            Ok(vec![("t".to_owned(), "refuses".to_owned())]),
            "an entity that only refused is not listed"
        );
        // Sequence-checked and fenced like any append; nothing indexed.
        let stale = refusals(
            &key,
            1,
            fence,
            vec![refusal("r3", 1, Refusal::Rejected("x".into()))],
        );
        let foreign = FenceToken {
            shard: 0,
            epoch: fence.epoch + 1,
        };
        let fenced = refusals(
            &key,
            2,
            foreign,
            vec![refusal("r4", 2, Refusal::Rejected("y".into()))],
        );
        let refused = j.append(vec![stale, fenced]);
        assert!(
            matches!(
                refused[..],
                [
                    Err(AppendError::Conflict { .. }),
                    Err(AppendError::Fenced { .. })
                ]
            ),
            "{refused:?}"
        );
        assert_eq!(j.find_command_id(&key, "r3"), Ok(None));
        assert_eq!(j.find_command_id(&key, "r4"), Ok(None));
        // Without events, only refusals: an accepted id, a send or a
        // refusal past the entity's last seq-nr is invalid.
        let mut with_send = refusals(
            &key,
            2,
            fence,
            vec![refusal("r5", 2, Refusal::Rejected("z".into()))],
        );
        with_send.sends = vec![crate::OutboxSend {
            seq_nr: 2,
            index: 0,
            send: stead_types::effects::SendCommand {
                entity_type: "t".into(),
                entity_id: "other".into(),
                command: b"{}".to_vec(),
                on_accepted: None,
                on_refused: None,
            },
        }];
        for bad in [
            refusals(&key, 2, fence, vec![command_id("r6", 2, 1, 1)]),
            refusals(&key, 2, fence, Vec::new()),
            refusals(
                &key,
                2,
                fence,
                vec![refusal("r7", 3, Refusal::Rejected("late".into()))],
            ),
            with_send,
        ] {
            assert!(
                matches!(j.append(vec![bad])[..], [Err(AppendError::Invalid { .. })]),
                "an append without events holds refusals only"
            );
        }
        assert_eq!(
            j.append(vec![append(&key, 2, fence, &["c"])]),
            vec![Ok(())],
            "the entity's sequence goes on from where the refusal found it"
        );
    }
    let j = open(dir.path());
    assert_eq!(
        j.find_command_id(&key, "r1"),
        Ok(Some(rejected)),
        "survives a reopen"
    );
    assert_eq!(j.find_command_id(&unborn, "r2"), Ok(Some(invalid)));
    assert_eq!(j.read_outbox(0, None, 10).map(|s| s.len()), Ok(0));
}

fn a_command_id_indexed_outside_its_append_is_invalid<J: Journal>(open: Opener<'_, J>) {
    let (_dir, j, fence, _) = fresh(open);
    let key = EntityKey::new(0, "t", "outside");
    assert_eq!(j.append(vec![append(&key, 0, fence, &["a"])]), vec![Ok(())]);
    for seq_nr in [1, 3] {
        let mut bad = append(&key, 1, fence, &["b"]);
        bad.command_ids = vec![command_id("k", seq_nr, 1, 1)];
        assert!(
            matches!(j.append(vec![bad])[..], [Err(AppendError::Invalid { .. })]),
            "seq-nr {seq_nr} is not one of the appended events (2)"
        );
    }
    assert_eq!(payloads(&j, &key, 1).len(), 1, "nothing was written");
    assert_eq!(j.find_command_id(&key, "k"), Ok(None));
}

fn expiry_removes_the_oldest_entries_of_the_fenced_shard_within_the_limit<J: Journal>(
    open: Opener<'_, J>,
) {
    let (_dir, j, f0, f1) = fresh(open);
    let a = EntityKey::new(0, "t", "a");
    let b = EntityKey::new(1, "t", "b");
    let mut on_a = append(&a, 0, f0, &["1", "2", "3"]);
    on_a.command_ids = vec![
        command_id("old", 1, 10, 1),
        command_id("mid", 2, 20, 2),
        command_id("new", 3, 30, 3),
    ];
    let mut on_b = append(&b, 0, f1, &["1"]);
    on_b.command_ids = vec![command_id("other-shard", 1, 5, 4)];
    assert_eq!(j.append(vec![on_a, on_b]), vec![Ok(()), Ok(())]);

    assert_eq!(
        j.expire_command_ids(f0, 25, 1),
        Ok(1),
        "the limit bounds the sweep"
    );
    assert_eq!(j.find_command_id(&a, "old"), Ok(None), "oldest first");
    assert!(j.find_command_id(&a, "mid").expect("read").is_some());
    assert_eq!(j.expire_command_ids(f0, 25, 100), Ok(1));
    assert_eq!(j.expire_command_ids(f0, 25, 100), Ok(0));
    assert!(
        j.find_command_id(&a, "new").expect("read").is_some(),
        "at or after the cut-off stays"
    );
    assert!(
        j.find_command_id(&b, "other-shard")
            .expect("read")
            .is_some(),
        "another shard's entries stay"
    );
    let stale = FenceToken {
        shard: 1,
        epoch: f1.epoch + 1,
    };
    assert!(matches!(
        j.expire_command_ids(stale, 100, 100),
        Err(AppendError::Fenced { .. })
    ));
    assert_eq!(
        payloads(&j, &a, 1).len(),
        3,
        "expiry forgets index entries, never events"
    );
}

fn snapshots_are_latest_wins_and_per_entity<J: Journal>(open: &dyn Fn(&Path) -> J) {
    let (_dir, j, _, _) = fresh(open);
    let a = EntityKey::new(0, "t", "a");
    let b = EntityKey::new(0, "t", "b");
    assert_eq!(j.load_snapshot(&a), Ok(None));
    let s1 = SnapshotRecord {
        seq_nr: 10,
        version: "1".into(),
        state: vec![1],
        dedup: vec![(3, 10)],
    };
    let s2 = SnapshotRecord {
        seq_nr: 20,
        version: "2".into(),
        state: vec![2, 2],
        dedup: vec![],
    };
    j.save_snapshot(&a, &s1).expect("save");
    assert_eq!(j.load_snapshot(&a), Ok(Some(s1)));
    j.save_snapshot(&a, &s2).expect("save");
    assert_eq!(j.load_snapshot(&a), Ok(Some(s2)));
    assert_eq!(j.load_snapshot(&b), Ok(None));
}

fn shards_list_only_their_own_entities<J: Journal>(open: &dyn Fn(&Path) -> J) {
    let (_dir, j, f0, f1) = fresh(open);
    let r = j.append(vec![
        append(&EntityKey::new(0, "cart", "x"), 0, f0, &["1"]),
        append(&EntityKey::new(0, "account", "y"), 0, f0, &["1", "2"]),
        append(&EntityKey::new(1, "account", "z"), 0, f1, &["1"]),
    ]);
    assert!(r.iter().all(Result::is_ok), "{r:?}");
    let mut s0 = j.entities_in_shard(0).expect("list");
    s0.sort();
    assert_eq!(
        s0,
        vec![("account".into(), "y".into()), ("cart".into(), "x".into())]
    );
    assert_eq!(
        j.entities_in_shard(1),
        Ok(vec![("account".into(), "z".into())])
    );
    assert_eq!(j.entities_in_shard(2), Ok(vec![]));
}

fn entities_with_prefix_ids_do_not_see_each_others_events<J: Journal>(open: &dyn Fn(&Path) -> J) {
    let (_dir, j, f0, _) = fresh(open);
    let ab = EntityKey::new(0, "t", "ab");
    let abc = EntityKey::new(0, "t", "abc");
    let r = j.append(vec![
        append(&ab, 0, f0, &["ab1"]),
        append(&abc, 0, f0, &["abc1", "abc2"]),
    ]);
    assert!(r.iter().all(Result::is_ok));
    assert_eq!(payloads(&j, &ab, 1), vec![(1, "ab1".into())]);
    assert_eq!(payloads(&j, &abc, 1).len(), 2);
}

fn everything_acknowledged_survives_a_reopen<J: Journal>(open: &dyn Fn(&Path) -> J) {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = EntityKey::new(0, "t", "a");
    let snapshot = SnapshotRecord {
        seq_nr: 1,
        version: "v".into(),
        state: vec![7; 100],
        dedup: vec![],
    };
    let first_epoch = {
        let j = open(dir.path());
        let f0 = j.claim_shards(&[0]).expect("claim")[0];
        let mut with_reply = append(&k, 0, f0, &["e1", "e2"]);
        with_reply.events[1].reply = Some(b"{\"ok\":true}".to_vec());
        assert_eq!(j.append(vec![with_reply]), vec![Ok(())]);
        j.save_snapshot(&k, &snapshot).expect("snapshot");
        f0.epoch
    };
    let j = open(dir.path());
    assert_eq!(j.last_seq_nr(&k), Ok(2));
    let events = j.read_events(&k, 1, 10).expect("read");
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1].record.reply.as_deref(),
        Some(&b"{\"ok\":true}"[..])
    );
    assert_eq!(j.entities_in_shard(0), Ok(vec![("t".into(), "a".into())]));
    let f0 = j.claim_shards(&[0]).expect("claim")[0];
    assert!(
        f0.epoch > first_epoch,
        "epochs never go back across a reopen"
    );
    assert_eq!(j.append(vec![append(&k, 2, f0, &["e3"])]), vec![Ok(())]);
}
