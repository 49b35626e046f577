//! Shards that move, on one node and between two nodes sharing a journal:
//! a released shard is no longer served, what was queued before the release
//! finishes durably, an acquired shard recovers its entities from the
//! journal, and a second holder's claim fences the first.

use std::sync::Arc;

use serde_json::json;
use stead_journal::{MemoryJournal, MemoryStore};
use stead_node::{JournalConfig, Node, NodeError};
use stead_tests::{guest, json, temp_node, test_config};

fn send(node: &Node, id: &str, cmd: &str) -> Result<serde_json::Value, NodeError> {
    node.send_blocking("account", id, cmd.as_bytes().to_vec(), None)
        .map(|r| json(&r.reply))
}

#[test]
fn a_released_shard_answers_not_owner_and_an_acquired_one_recovers_its_entities() {
    let (_dir, node) = temp_node(|_| {});
    node.deploy(&guest("account")).expect("deploy");
    send(&node, "acc-1", r#"{"open":{"owner":"ada"}}"#).expect("open");
    send(&node, "acc-1", r#"{"deposit":{"amount":70}}"#).expect("deposit");
    let shard = node.shard_of("account", "acc-1");
    assert_eq!(node.stats_blocking().expect("stats").shards, 16);

    let released = node.release_shards(&[shard]).expect("release");
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].shard, shard);
    assert_eq!(node.stats_blocking().expect("stats").shards, 15);
    assert_eq!(
        send(&node, "acc-1", r#"{"deposit":{"amount":1}}"#),
        Err(NodeError::NotOwner(shard))
    );
    assert_eq!(
        node.view_blocking("account", "acc-1"),
        Err(NodeError::NotOwner(shard))
    );
    // Releasing a shard not held is no error and releases nothing.
    assert_eq!(node.release_shards(&[shard]).expect("again"), vec![]);
    // Other shards are served as before.
    let other = (0..100)
        .map(|i| format!("other-{i}"))
        .find(|id| node.shard_of("account", id) != shard)
        .expect("an id in another shard");
    send(&node, &other, r#"{"open":{"owner":"bo"}}"#).expect("another shard serves");

    let acquired = node.acquire_shards(&[shard]).expect("acquire");
    assert!(
        acquired[0].epoch > released[0].epoch,
        "the new lease's epoch moves past the released one: {acquired:?} after {released:?}"
    );
    assert_eq!(
        send(&node, "acc-1", r#"{"deposit":{"amount":1}}"#),
        Ok(json!({"balance": 71})),
        "the entity is recovered from the journal"
    );
    assert_eq!(node.stats_blocking().expect("stats").shards, 16);
}

#[test]
fn commands_queued_before_a_release_finish_durably_and_later_ones_are_refused() {
    let (_dir, node) = temp_node(|c| c.shards.workers = 1);
    node.deploy(&guest("account")).expect("deploy");
    send(&node, "acc-2", r#"{"open":{"owner":"ada"}}"#).expect("open");
    let shard = node.shard_of("account", "acc-2");
    let before: Vec<_> = (0..50)
        .map(|_| {
            node.submit(
                "account",
                "acc-2",
                br#"{"deposit":{"amount":1}}"#.to_vec(),
                None,
            )
            .expect("queued")
        })
        .collect();
    node.release_shards(&[shard]).expect("release");
    let after = node
        .submit(
            "account",
            "acc-2",
            br#"{"deposit":{"amount":1}}"#.to_vec(),
            None,
        )
        .expect("queued");
    for (i, pending) in before.into_iter().enumerate() {
        let reply = pending.wait_blocking().expect("queued before the release");
        assert_eq!(json(&reply.reply), json!({"balance": i + 1}));
    }
    assert_eq!(after.wait_blocking(), Err(NodeError::NotOwner(shard)));
    let events = node.events("account", "acc-2", 1, 1000).expect("events");
    assert_eq!(
        events.len(),
        51,
        "every acknowledged deposit is in the journal"
    );
    node.acquire_shards(&[shard]).expect("acquire");
    let view = json(&node.view_blocking("account", "acc-2").expect("view"));
    assert_eq!(
        (&view["owner"], &view["balance"]),
        (&json!("ada"), &json!(50))
    );
}

#[test]
fn a_second_node_claiming_a_shard_fences_the_first_on_a_shared_journal() {
    let store = MemoryStore::new();
    let open = |dir: &tempfile::TempDir| node_on(&store, dir, true);
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let a = open(&dir_a);
    a.deploy(&guest("account")).expect("deploy on a");
    send(&a, "acc-3", r#"{"open":{"owner":"ada"}}"#).expect("open on a");
    send(&a, "acc-3", r#"{"deposit":{"amount":5}}"#).expect("deposit on a");
    let shard = a.shard_of("account", "acc-3");

    // b acquires every shard at open: each lease's epoch moves past a's.
    let b = open(&dir_b);
    b.deploy(&guest("account")).expect("deploy on b");
    assert_eq!(
        send(&a, "acc-3", r#"{"deposit":{"amount":1}}"#),
        Err(NodeError::NotOwner(shard)),
        "a stale holder's append is fenced"
    );
    assert_eq!(
        send(&b, "acc-3", r#"{"deposit":{"amount":1}}"#),
        Ok(json!({"balance": 6})),
        "the new holder recovers the entity from the shared journal"
    );
    assert_eq!(
        b.events("account", "acc-3", 1, 100).expect("events").len(),
        3,
        "the fenced append wrote nothing"
    );
}

#[test]
fn a_shard_taken_back_after_another_node_wrote_to_it_is_recovered_from_the_journal_not_from_memory()
{
    let store = MemoryStore::new();
    let open = |dir: &tempfile::TempDir, acquire_all: bool| node_on(&store, dir, acquire_all);
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let a = open(&dir_a, true);
    a.deploy(&guest("account")).expect("deploy on a");
    send(&a, "acc-4", r#"{"open":{"owner":"ada"}}"#).expect("open on a");
    send(&a, "acc-4", r#"{"deposit":{"amount":5}}"#).expect("deposit on a");
    let shard = a.shard_of("account", "acc-4");

    // b takes the shard (a's worker is not told), writes, and gives it up.
    let b = open(&dir_b, false);
    b.deploy(&guest("account")).expect("deploy on b");
    b.acquire_shards(&[shard]).expect("b claims");
    assert_eq!(
        send(&b, "acc-4", r#"{"deposit":{"amount":10}}"#),
        Ok(json!({"balance": 15}))
    );
    b.release_shards(&[shard]).expect("b releases");

    // a claims it back: acc-4 in its memory (balance 5) is stale.
    a.acquire_shards(&[shard]).expect("a claims again");
    assert_eq!(
        send(&a, "acc-4", r#"{"deposit":{"amount":1}}"#),
        Ok(json!({"balance": 16})),
        "a recovered acc-4 from the journal, with b's event"
    );
}

/// A node on `store` (one journal shared by the nodes of a test), claiming
/// every shard at open when `acquire_all`.
fn node_on(store: &Arc<MemoryStore>, dir: &tempfile::TempDir, acquire_all: bool) -> Node {
    let mut config = test_config(dir.path());
    config.journal = JournalConfig::Memory;
    config.acquire_all_at_open = acquire_all;
    Node::builder(config)
        .journal(Arc::new(MemoryJournal::on(store.clone())))
        .open()
        .expect("node opens")
}
