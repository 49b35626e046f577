//! Idempotency keys (caller-given command ids) through the `Node` API with
//! real components and journals: a retry is recognised for the whole dedup
//! horizon however many commands came in between, across passivation and
//! restarts; past the horizon it is a new command and the sweep removes its
//! index entry; a key reused with another command is refused and persists
//! nothing; a keyed command the entity refused is refused again on retry,
//! whatever the state has become.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stead_journal::{Journal, MemoryJournal, MemoryStore};
use stead_node::{JournalConfig, Node, NodeError, SettableClock};
use stead_tests::{guest, json, open_node, temp_node, test_config};

const DEPOSIT: &str = r#"{"deposit":{"amount":1000}}"#;

fn send(
    node: &Node,
    id: &str,
    cmd: &str,
    key: Option<&str>,
) -> Result<stead_node::CommandReply, NodeError> {
    node.send_blocking(
        "account",
        id,
        cmd.as_bytes().to_vec(),
        key.map(str::to_owned),
    )
}

fn balance(node: &Node, id: &str) -> serde_json::Value {
    json(&node.view_blocking("account", id).expect("view"))["balance"].clone()
}

/// Sends `n` deposits of 1 without keys: pushes earlier ids out of the
/// entity's in-memory window (64).
fn other_commands(node: &Node, id: &str, n: usize) {
    for _ in 0..n {
        send(node, id, r#"{"deposit":{"amount":1}}"#, None).expect("deposit");
    }
}

#[test]
fn a_retried_key_is_a_duplicate_after_a_thousand_commands_a_passivation_and_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open_node(dir.path(), |_| {});
    node.deploy(&guest("account")).expect("deploy");
    send(&node, "a", r#"{"open":{"owner":"ada"}}"#, None).expect("open");
    let first = send(&node, "a", DEPOSIT, Some("K")).expect("deposit");
    assert!(!first.duplicate);
    other_commands(&node, "a", 1000);

    let retry = send(&node, "a", DEPOSIT, Some("K")).expect("retry");
    assert_eq!(
        (retry.duplicate, retry.seq_nr, json(&retry.reply)),
        (true, first.seq_nr, json!({"balance": 1000})),
        "the original reply and seq-nr, 1,000 commands later"
    );
    node.passivate_all_blocking().expect("passivate");
    assert!(
        send(&node, "a", DEPOSIT, Some("K"))
            .expect("retry")
            .duplicate
    );
    drop(node);

    let node = open_node(dir.path(), |_| {});
    let retry = send(&node, "a", DEPOSIT, Some("K")).expect("retry after a restart");
    assert_eq!((retry.duplicate, retry.seq_nr), (true, first.seq_nr));
    assert_eq!(
        balance(&node, "a"),
        2000,
        "1000 + 1000 x 1, the keyed deposit once"
    );
    let events = node.events("account", "a", 1, 10_000).expect("events");
    assert_eq!(
        events.len(),
        1002,
        "open, the deposit, 1,000 others: nothing twice"
    );
}

#[test]
fn a_reused_key_with_another_command_is_refused_and_persists_nothing() {
    let (_dir, node) = temp_node(|_| {});
    node.deploy(&guest("account")).expect("deploy");
    send(&node, "b", r#"{"open":{"owner":"bo"}}"#, None).expect("open");
    send(&node, "b", DEPOSIT, Some("K")).expect("deposit");
    let withdraw = r#"{"withdraw":{"amount":5}}"#;
    // In the window.
    assert!(matches!(
        send(&node, "b", withdraw, Some("K")),
        Err(NodeError::IdempotencyKeyReused(_))
    ));
    // Past the window: found in the journal's index.
    other_commands(&node, "b", 70);
    assert!(matches!(
        send(&node, "b", withdraw, Some("K")),
        Err(NodeError::IdempotencyKeyReused(_))
    ));
    // In one batch with its first use.
    node.passivate_all_blocking().expect("passivate");
    let first = node
        .submit(
            "account",
            "b",
            br#"{"deposit":{"amount":7}}"#.to_vec(),
            Some("L".into()),
        )
        .expect("queued");
    let reused = node
        .submit(
            "account",
            "b",
            withdraw.as_bytes().to_vec(),
            Some("L".into()),
        )
        .expect("queued");
    assert!(!first.wait_blocking().expect("first").duplicate);
    assert!(matches!(
        reused.wait_blocking(),
        Err(NodeError::IdempotencyKeyReused(_))
    ));
    assert_eq!(balance(&node, "b"), 1000 + 70 + 7);
    let events = node.events("account", "b", 1, 1000).expect("events");
    assert_eq!(events.len(), 1 + 1 + 70 + 1, "no withdrawal was persisted");
}

#[test]
fn a_key_past_the_horizon_is_a_new_command_and_the_sweep_forgets_it() {
    let store = MemoryStore::new();
    let journal = Arc::new(MemoryJournal::on(store));
    let clock = Arc::new(SettableClock::new());
    const T0: u64 = 1_700_000_000_000;
    clock.set_wall_ms(Some(T0));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.journal = JournalConfig::Memory;
    config.shards.dedup_horizon = Duration::from_secs(60);
    // Sweeps run every quarter of the idle timeout.
    config.shards.idle_timeout = Duration::from_millis(200);
    let node = Node::builder(config)
        .journal(journal.clone())
        .clock(clock.clone())
        .open()
        .expect("node opens");
    node.deploy(&guest("account")).expect("deploy");
    send(&node, "c", r#"{"open":{"owner":"cy"}}"#, None).expect("open");
    send(&node, "c", DEPOSIT, Some("K")).expect("deposit");
    other_commands(&node, "c", 70);
    let key = stead_journal::EntityKey::new(node.shard_of("account", "c"), "account", "c");
    assert!(journal.find_command_id(&key, "K").expect("read").is_some());

    // Within the horizon: a duplicate.
    clock.set_wall_ms(Some(T0 + 60_000));
    assert!(
        send(&node, "c", DEPOSIT, Some("K"))
            .expect("retry")
            .duplicate
    );
    // Past it: a new command, before and after the sweep removes the entry.
    clock.set_wall_ms(Some(T0 + 60_001));
    let again = send(&node, "c", DEPOSIT, Some("K")).expect("a new command");
    assert!(!again.duplicate);
    assert_eq!(balance(&node, "c"), 2070);
    clock.set_wall_ms(Some(T0 + 200_000));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // Both uses are past the horizon at T0 + 200 s: the sweep removes the
    // entry (the second use's; the first use's was replaced by it).
    while journal.find_command_id(&key, "K").expect("read").is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep never removed the entry"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_refused_keyed_command_gets_the_same_refusal_on_retry_after_the_state_changed_and_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open_node(dir.path(), |_| {});
    node.deploy(&guest("account")).expect("deploy");
    send(&node, "d", r#"{"open":{"owner":"di"}}"#, None).expect("open");
    let withdraw = r#"{"withdraw":{"amount":5}}"#;
    let refusal = |r: Result<stead_node::CommandReply, NodeError>| match r {
        Err(NodeError::Rejected(m)) => m,
        other => panic!("expected the refusal, got {other:?}"),
    };
    let first = refusal(send(&node, "d", withdraw, Some("K")));
    assert!(first.contains("balance is 0"), "{first}");
    // The state changes: the same command would now be accepted, but a
    // retry (or a late copy) of K is the command that was refused.
    send(&node, "d", DEPOSIT, None).expect("deposit");
    assert_eq!(refusal(send(&node, "d", withdraw, Some("K"))), first);
    assert!(
        matches!(
            send(&node, "d", DEPOSIT, Some("K")),
            Err(NodeError::IdempotencyKeyReused(_))
        ),
        "the key is taken by the refused command"
    );
    // Refused and retried in one batch.
    node.passivate_all_blocking().expect("passivate");
    let big = r#"{"withdraw":{"amount":5000}}"#;
    let a = node
        .submit("account", "d", big.as_bytes().to_vec(), Some("L".into()))
        .expect("queued");
    let b = node
        .submit("account", "d", big.as_bytes().to_vec(), Some("L".into()))
        .expect("queued");
    let once = refusal(a.wait_blocking());
    assert_eq!(refusal(b.wait_blocking()), once);
    // An invalid command is remembered too; a guest's answer only, so an
    // unkeyed refusal is not (nothing could retry it).
    let bogus = r#"{"bogus":1}"#;
    assert!(matches!(
        send(&node, "d", bogus, Some("M")),
        Err(NodeError::InvalidCommand(_))
    ));
    other_commands(&node, "d", 70);
    drop(node);

    let node = open_node(dir.path(), |_| {});
    assert_eq!(
        refusal(send(&node, "d", withdraw, Some("K"))),
        first,
        "after 70 commands and a restart"
    );
    assert_eq!(refusal(send(&node, "d", big, Some("L"))), once);
    assert!(matches!(
        send(&node, "d", bogus, Some("M")),
        Err(NodeError::InvalidCommand(_))
    ));
    assert_eq!(balance(&node, "d"), 1070);
    let events = node.events("account", "d", 1, 1000).expect("events");
    assert_eq!(events.len(), 1 + 1 + 70, "a refusal appends no event");
    let fresh = send(&node, "d", withdraw, Some("N")).expect("a new key runs");
    assert_eq!(json(&fresh.reply), json!({"balance": 1065}));
}

#[test]
fn many_keys_on_one_entity_are_each_found_before_and_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open_node(dir.path(), |_| {});
    node.deploy(&guest("account")).expect("deploy");
    send(&node, "e", r#"{"open":{"owner":"ed"}}"#, None).expect("open");
    // Far more keyed commands than the window holds.
    for i in 0..300 {
        send(
            &node,
            "e",
            r#"{"deposit":{"amount":1}}"#,
            Some(&format!("k{i}")),
        )
        .expect("deposit");
    }
    old_keys_are_duplicates_and_a_fresh_one_is_not(&node, "new");
    drop(node);
    // Activated again: every old id is found in the journal's index.
    let node = open_node(dir.path(), |_| {});
    let retry = send(&node, "e", r#"{"deposit":{"amount":1}}"#, Some("new")).expect("retry");
    assert!(retry.duplicate);
    old_keys_are_duplicates_and_a_fresh_one_is_not(&node, "newer");
    assert_eq!(balance(&node, "e"), 300 + 1 + 1);
}

/// Retries of keys `k0`, `k150`, `k299` of entity `e` are duplicates with
/// their original seq-nr; `fresh` is a new command.
fn old_keys_are_duplicates_and_a_fresh_one_is_not(node: &Node, fresh: &str) {
    for i in [0, 150, 299] {
        let retry = send(
            node,
            "e",
            r#"{"deposit":{"amount":1}}"#,
            Some(&format!("k{i}")),
        )
        .expect("retry");
        assert!(retry.duplicate, "k{i}");
        assert_eq!(retry.seq_nr, i as u64 + 2, "k{i}");
    }
    assert!(
        !send(node, "e", r#"{"deposit":{"amount":1}}"#, Some(fresh))
            .expect("fresh")
            .duplicate
    );
}
