//! The conformance case of shard streams: an entity type's events per shard
//! in commit order, paged from any position, durable, continuing past a
//! lease's earlier holder.

use super::{Opener, append};
use crate::{CommandIdRecord, EntityAppend, EntityKey, Journal, Refusal, ShardId, StreamEvent};

/// `(shard, entity id, seq-nr, payload)` of a page.
fn seen(page: &[StreamEvent]) -> Vec<(ShardId, String, u64, String)> {
    page.iter()
        .map(|e| {
            (
                e.shard,
                e.entity_id.clone(),
                e.event.seq_nr,
                String::from_utf8_lossy(&e.event.record.payload).into_owned(),
            )
        })
        .collect()
}

fn ev(shard: ShardId, id: &str, seq_nr: u64, payload: &str) -> (ShardId, String, u64, String) {
    (shard, id.to_owned(), seq_nr, payload.to_owned())
}

/// Positions grow within each shard of a page.
fn assert_growing(page: &[StreamEvent]) {
    for w in page.windows(2) {
        if w[0].shard == w[1].shard {
            assert!(
                w[0].position < w[1].position,
                "positions grow in a shard: {page:?}"
            );
        }
    }
}

pub(super) fn a_types_stream_follows_commit_order_per_shard_and_resumes_from_any_position<
    J: Journal,
>(
    open: Opener<'_, J>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = EntityKey::new(0, "account", "a");
    let b = EntityKey::new(1, "account", "b");
    let c = EntityKey::new(0, "account", "c");
    let x = EntityKey::new(0, "order", "x");
    let similar = EntityKey::new(0, "accounts", "a");
    let expected = vec![
        ev(0, "a", 1, "a1"),
        ev(0, "a", 2, "a2"),
        ev(0, "c", 1, "c1"),
        ev(0, "a", 3, "a3"),
        ev(1, "b", 1, "b1"),
    ];
    let last_position;
    {
        let j = open(dir.path());
        let tokens = j.claim_shards(&[0, 1]).expect("claim");
        let (f0, f1) = (tokens[0], tokens[1]);
        assert_eq!(
            j.read_stream("account", &[(0, 0), (1, 0)], 10),
            Ok(Vec::new()),
            "an empty stream"
        );
        let results = j.append(vec![
            append(&a, 0, f0, &["a1", "a2"]),
            append(&x, 0, f0, &["o1"]),
            append(&b, 0, f1, &["b1"]),
            append(&c, 0, f0, &["c1"]),
            append(&similar, 0, f0, &["s1"]),
        ]);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        // A refusal appends no event: nothing in the stream.
        let refusal = EntityAppend {
            events: Vec::new(),
            command_ids: vec![CommandIdRecord {
                command_id: "r".into(),
                seq_nr: 2,
                at_ms: 1,
                digest: [1; 32],
                refusal: Some(Refusal::Rejected("no".into())),
            }],
            ..append(&a, 2, f0, &[])
        };
        assert_eq!(j.append(vec![refusal]), vec![Ok(())]);
        // A refused append (stale seq-nr) takes no position.
        let refused = j.append(vec![append(&c, 0, f0, &["never"])]);
        assert!(refused[0].is_err());
        assert_eq!(j.append(vec![append(&a, 2, f0, &["a3"])]), vec![Ok(())]);

        let all = j
            .read_stream("account", &[(0, 0), (1, 0)], 10)
            .expect("read_stream");
        assert_eq!(
            seen(&all),
            expected,
            "each shard in commit order (one call's appends in the call's order), shards as asked, other types apart"
        );
        assert_growing(&all);
        assert_eq!(
            seen(
                &j.read_stream("account", &[(1, 0), (0, 0)], 10)
                    .expect("read")
            ),
            vec![
                expected[4].clone(),
                expected[0].clone(),
                expected[1].clone(),
                expected[2].clone(),
                expected[3].clone()
            ],
            "shards in the order asked"
        );
        assert_eq!(
            seen(&j.read_stream("order", &[(0, 0), (1, 0)], 10).expect("read")),
            vec![ev(0, "x", 1, "o1")]
        );
        // Paging: at most `limit` per shard, resumed from the last position.
        let first = j.read_stream("account", &[(0, 0)], 2).expect("read");
        assert_eq!(
            seen(&first),
            expected[..2].to_vec(),
            "a page holds its limit"
        );
        let rest = j
            .read_stream("account", &[(0, first[1].position)], 10)
            .expect("read");
        assert_eq!(
            seen(&rest),
            expected[2..4].to_vec(),
            "resumed after the page"
        );
        last_position = rest[1].position;
        assert_eq!(
            j.read_stream("account", &[(0, last_position)], 10),
            Ok(Vec::new()),
            "nothing after the last position"
        );
        // A lease given up and claimed again: positions go on past it.
        j.release_shards(&[f0]).expect("release");
        let again = j.claim_shards(&[0]).expect("claim again")[0];
        assert_eq!(j.append(vec![append(&a, 3, again, &["a4"])]), vec![Ok(())]);
        let after = j
            .read_stream("account", &[(0, last_position)], 10)
            .expect("read");
        assert_eq!(seen(&after), vec![ev(0, "a", 4, "a4")]);
        assert!(after[0].position > last_position);
    }
    let j = open(dir.path());
    let all = j
        .read_stream("account", &[(0, 0), (1, 0)], 10)
        .expect("read after a reopen");
    let mut with_a4 = expected.clone();
    with_a4.insert(4, ev(0, "a", 4, "a4"));
    assert_eq!(seen(&all), with_a4, "the stream survives a reopen");
    assert_eq!(all[3].position, last_position, "with its positions");
    let fence = j.claim_shards(&[0]).expect("claim")[0];
    assert_eq!(j.append(vec![append(&c, 1, fence, &["c2"])]), vec![Ok(())]);
    let next = j
        .read_stream("account", &[(0, all[4].position)], 10)
        .expect("read");
    assert_eq!(
        seen(&next),
        vec![ev(0, "c", 2, "c2")],
        "positions go on after a reopen"
    );
}
