//! Reliable messaging on a real node, with the real `account` and
//! `transfer` components: sends delivered after their events are durable
//! and answered back to the sender (a saga's steps), refusals final and
//! heard, timers firing on the node's clock and never before their time,
//! cancelled timers never firing, and pending sends and timers resumed
//! after a restart; on the embedded (sled) journal and on PostgreSQL.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stead_node::{JournalConfig, Node, NodeConfig, NodeError};
use stead_postgres_testing as pg;
use stead_tests::{guest, json, test_config};
use stead_types::config::PostgresOptions;

fn open(config: NodeConfig) -> Node {
    Node::open(config).expect("node opens")
}

fn deploy_both(node: &Node) {
    node.deploy(&guest("account")).expect("deploy account");
    node.deploy(&guest("transfer")).expect("deploy transfer");
}

fn send(node: &Node, entity_type: &str, id: &str, command: Value) -> Result<Value, NodeError> {
    node.send_blocking(entity_type, id, command.to_string().into_bytes(), None)
        .map(|reply| json(&reply.reply))
}

fn view(node: &Node, entity_type: &str, id: &str) -> Value {
    json(&node.view_blocking(entity_type, id).expect("view"))
}

fn open_account(node: &Node, id: &str, balance: u64) {
    send(node, "account", id, json!({"open": {"owner": id}})).expect("open");
    if balance > 0 {
        send(node, "account", id, json!({"deposit": {"amount": balance}})).expect("deposit");
    }
}

fn balance(node: &Node, id: &str) -> u64 {
    view(node, "account", id)["balance"]
        .as_u64()
        .expect("a balance")
}

/// Waits until the transfer `id` is in `status` (10 s at most).
fn wait_for(node: &Node, id: &str, status: &str) -> Value {
    let started = Instant::now();
    loop {
        let v = view(node, "transfer", id);
        if v["status"] == status {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "transfer {id} is {v}, not {status}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn start(node: &Node, id: &str, from: &str, to: &str, amount: u64) {
    let reply = send(
        node,
        "transfer",
        id,
        json!({"start": {"from": from, "to": to, "amount": amount}}),
    )
    .expect("start");
    assert_eq!(reply["status"], "debiting");
}

/// The saga's three endings, on one node.
fn transfers_end_completed_failed_or_refunded(config: NodeConfig) {
    let node = open(config);
    deploy_both(&node);
    open_account(&node, "alice", 100);
    open_account(&node, "bob", 0);

    start(&node, "t-1", "alice", "bob", 30);
    wait_for(&node, "t-1", "completed");
    assert_eq!((balance(&node, "alice"), balance(&node, "bob")), (70, 30));

    // The source cannot pay: the debit is refused, the saga hears it.
    start(&node, "t-2", "alice", "bob", 1_000);
    wait_for(&node, "t-2", "failed");
    // The target is not open: the credit is refused, the source refunded.
    start(&node, "t-3", "alice", "carol", 20);
    wait_for(&node, "t-3", "refunded");
    assert_eq!((balance(&node, "alice"), balance(&node, "bob")), (70, 30));

    wait_until_settled(&node);
    let stats = node.messaging_stats();
    // t-1: debit, credit; t-2: debit (refused); t-3: debit, credit
    // (refused), refund. Each answered back to the transfer.
    assert_eq!(stats.sends_accepted, 4, "{stats:?}");
    assert_eq!(stats.sends_refused, 2, "{stats:?}");
    assert_eq!(stats.replies_delivered, 6, "{stats:?}");
    assert_eq!(stats.replies_refused, 0, "{stats:?}");
    // Each delivery took effect once: one withdrawal and one deposit per
    // step, whatever was retried.
    let events = node
        .events("account", "alice", 1, usize::MAX)
        .expect("events");
    let kinds: Vec<String> = events
        .iter()
        .map(|e| {
            json(&e.record.payload)
                .as_object()
                .expect("event")
                .keys()
                .next()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        kinds,
        ["opened", "deposited", "withdrawn", "withdrawn", "deposited"],
        "alice: open, deposit 100, t-1's debit, t-3's debit and refund"
    );
    node.shutdown();
}

/// Waits until nothing is pending (every counter is up to date then).
fn wait_until_settled(node: &Node) {
    let started = Instant::now();
    while node.messaging_stats().pending_sends + node.messaging_stats().pending_timers > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            node.messaging_stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn transfers_end_completed_failed_or_refunded_on_sled() {
    let dir = tempfile::tempdir().expect("dir");
    transfers_end_completed_failed_or_refunded(test_config(dir.path()));
}

#[test]
fn transfers_end_completed_failed_or_refunded_on_postgres() {
    let db = pg::database().expect("database");
    let dir = tempfile::tempdir().expect("dir");
    let mut config = test_config(dir.path());
    config.journal = JournalConfig::Postgres(PostgresOptions::new(db.url(), "node"));
    transfers_end_completed_failed_or_refunded(config);
}

#[test]
fn a_send_to_a_type_not_deployed_is_refused_for_good_and_the_sender_hears_it() {
    let dir = tempfile::tempdir().expect("dir");
    let node = open(test_config(dir.path()));
    node.deploy(&guest("transfer")).expect("deploy transfer");
    start(&node, "t-1", "alice", "bob", 5);
    wait_for(&node, "t-1", "failed");
    wait_until_settled(&node);
    let stats = node.messaging_stats();
    assert_eq!(
        (stats.sends_refused, stats.replies_delivered),
        (1, 1),
        "{stats:?}"
    );
    node.shutdown();
}

#[test]
fn a_timer_fires_on_the_nodes_clock_never_before_its_time_and_a_cancelled_one_never() {
    let dir = tempfile::tempdir().expect("dir");
    let node = open(test_config(dir.path()));
    deploy_both(&node);
    open_account(&node, "alice", 10);
    open_account(&node, "bob", 0);
    let now = now_ms();
    let at = now + 600;
    send(
        &node,
        "transfer",
        "later",
        json!({"schedule": {"from": "alice", "to": "bob", "amount": 4, "at_ms": at}}),
    )
    .expect("schedule");
    send(
        &node,
        "transfer",
        "never",
        json!({"schedule": {"from": "alice", "to": "bob", "amount": 1, "at_ms": now + 300}}),
    )
    .expect("schedule");
    send(&node, "transfer", "never", json!({"cancel": {}})).expect("cancel");
    assert_eq!(view(&node, "transfer", "later")["status"], "scheduled");
    let done = wait_for(&node, "later", "completed");
    let began = done["began_at_ms"].as_u64().expect("began");
    assert!(began >= at, "began at {began}, due at {at}");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(view(&node, "transfer", "never")["status"], "cancelled");
    assert_eq!((balance(&node, "alice"), balance(&node, "bob")), (6, 4));
    wait_until_settled(&node);
    let stats = node.messaging_stats();
    assert_eq!(
        (stats.timers_fired, stats.pending_timers),
        (1, 0),
        "{stats:?}"
    );
    node.shutdown();
}

#[test]
fn pending_sends_and_timers_resume_after_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let due = now_ms() + 1_500;
    {
        // A node that keeps its sends and timers in the journal without
        // delivering them: what a crash right after the commit leaves.
        let node = Node::builder(test_config(dir.path()))
            .hold_deliveries()
            .open()
            .expect("open");
        deploy_both(&node);
        open_account(&node, "alice", 50);
        open_account(&node, "bob", 0);
        start(&node, "now", "alice", "bob", 10);
        send(
            &node,
            "transfer",
            "soon",
            json!({"schedule": {"from": "alice", "to": "bob", "amount": 5, "at_ms": due}}),
        )
        .expect("schedule");
        assert_eq!(view(&node, "transfer", "now")["status"], "debiting");
        node.shutdown();
    }
    let node = open(test_config(dir.path()));
    wait_for(&node, "now", "completed");
    let done = wait_for(&node, "soon", "completed");
    assert!(done["began_at_ms"].as_u64() >= Some(due), "{done}");
    assert_eq!((balance(&node, "alice"), balance(&node, "bob")), (35, 15));
    wait_until_settled(&node);
    node.shutdown();
    // Acknowledged: a third start delivers nothing again.
    let node = open(test_config(dir.path()));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!((balance(&node, "alice"), balance(&node, "bob")), (35, 15));
    let stats = node.messaging_stats();
    assert_eq!(
        (stats.sends_accepted, stats.timers_fired),
        (0, 0),
        "{stats:?}"
    );
    node.shutdown();
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}

#[test]
fn a_recorded_answer_is_final_even_if_the_target_would_answer_otherwise_now() {
    use stead_journal::{Answer, Journal};
    let dir = tempfile::tempdir().expect("dir");
    {
        let node = Node::builder(test_config(dir.path()))
            .hold_deliveries()
            .open()
            .expect("open");
        deploy_both(&node);
        open_account(&node, "alice", 50);
        open_account(&node, "bob", 0);
        start(&node, "t-1", "alice", "bob", 10);
        node.shutdown();
    }
    // What a node that crashed after recording the source's refusal, and
    // before the transfer heard it, leaves in the journal. Alice could pay
    // now: asking her again would be accepted.
    {
        let journal = stead_journal_sled::SledJournal::open(
            &dir.path().join("journal"),
            stead_types::config::SledOptions::default(),
        )
        .expect("journal");
        let shards: Vec<u32> = (0..16).collect();
        let tokens = journal.claim_shards(&shards).expect("claim");
        let mut answered = 0;
        for fence in tokens {
            let pending = journal.read_outbox(fence.shard, None, 10).expect("outbox");
            for send in pending {
                assert_eq!(send.answer, None);
                journal
                    .answer_sends(fence, &[(send.id, Answer::Refused)])
                    .expect("answer");
                answered += 1;
            }
        }
        assert_eq!(answered, 1, "the debit is the one pending send");
    }
    let node = open(test_config(dir.path()));
    wait_for(&node, "t-1", "failed");
    wait_until_settled(&node);
    assert_eq!(balance(&node, "alice"), 50, "the debit was not asked again");
    let stats = node.messaging_stats();
    assert_eq!(
        (stats.sends_accepted, stats.replies_delivered),
        (0, 1),
        "{stats:?}"
    );
    node.shutdown();
}
