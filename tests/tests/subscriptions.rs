//! Subscriptions through the `Node` API with real components and journals
//! (sled and PostgreSQL): a subscriber reads every event of its type once,
//! each entity's in seq-nr order, stops, and resumes from its cursor after
//! the node restarted, then follows new events live; other types' events
//! never show; bad input is refused precisely.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use stead_node::{JournalConfig, Node, NodeConfig, NodeError, SubscribedEvent, Subscription};
use stead_postgres_testing as pg;
use stead_tests::{guest, test_config};
use stead_types::config::PostgresOptions;

const ACCOUNTS: usize = 12;

fn open(config: &NodeConfig) -> Node {
    let node = Node::open(config.clone()).expect("node opens");
    node.deploy(&guest("account")).expect("deploy account");
    node.deploy(&guest("cart")).expect("deploy cart");
    node
}

/// `rounds` deposits on every account (opening them first when `open`),
/// and one cart command each round.
fn write(node: &Node, rounds: usize, open: bool) {
    for i in 0..ACCOUNTS {
        let id = format!("acc-{i}");
        if open {
            let cmd = json!({"open": {"owner": format!("o{i}")}}).to_string();
            node.send_blocking("account", &id, cmd.into_bytes(), None)
                .expect("open");
        }
        for r in 0..rounds {
            let cmd = json!({"deposit": {"amount": r + 1}}).to_string();
            node.send_blocking("account", &id, cmd.into_bytes(), None)
                .expect("deposit");
        }
    }
    for r in 0..rounds {
        let cmd = json!({"add_item": {"sku": format!("s{r}"), "quantity": 1}}).to_string();
        node.send_blocking("cart", "c", cmd.into_bytes(), None)
            .expect("cart");
    }
}

/// Reads `n` events within a generous deadline.
fn take(rt: &tokio::runtime::Runtime, sub: &mut Subscription, n: usize) -> Vec<SubscribedEvent> {
    rt.block_on(async {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let next = tokio::time::timeout(Duration::from_secs(20), sub.next())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} events came", out.len()))
                .expect("next event");
            out.push(next);
        }
        out
    })
}

/// Nothing more arrives for a while.
fn quiet(rt: &tokio::runtime::Runtime, sub: &mut Subscription) {
    rt.block_on(async {
        if let Ok(extra) = tokio::time::timeout(Duration::from_millis(400), sub.next()).await {
            panic!("an event beyond the expected ones: {extra:?}");
        }
    });
}

/// Each entity's seq-nrs as seen, in the order seen.
fn per_entity(events: &[SubscribedEvent]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in events {
        assert_eq!(e.entity_type, "account", "only the subscribed type");
        out.entry(e.entity_id.clone()).or_default().push(e.seq_nr);
    }
    out
}

fn a_subscriber_resumes_from_its_cursor_across_a_restart_seeing_every_event_once(
    config: NodeConfig,
) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let node = open(&config);
    write(&node, 4, true); // 12 accounts x (open + 4 deposits) = 60 events
    let mut sub = node.subscribe("account", None).expect("subscribe");
    let first = take(&rt, &mut sub, 25);
    let cursor = sub.cursor().to_string();
    drop(sub);
    drop(node);

    // The node restarts, takes more commands; the subscriber comes back.
    let node = open(&config);
    write(&node, 3, false); // 12 x 3 = 36 more
    let mut sub = node.subscribe("account", Some(&cursor)).expect("resume");
    let rest = take(&rt, &mut sub, 60 + 36 - 25);
    quiet(&rt, &mut sub);

    let mut all = first.clone();
    all.extend(rest);
    let seen = per_entity(&all);
    assert_eq!(seen.len(), ACCOUNTS);
    for (id, seqs) in &seen {
        assert_eq!(
            seqs,
            &(1..=8).collect::<Vec<u64>>(),
            "{id}: every event once, in seq-nr order, across the stop and the restart"
        );
    }
    // Each event is the journal's.
    let e = &all[0];
    let stored = node
        .events("account", &e.entity_id, e.seq_nr, 1)
        .expect("events");
    assert_eq!(stored[0].record.payload, e.payload);

    // Caught up, it follows new events as they commit.
    node.send_blocking(
        "account",
        "acc-0",
        br#"{"deposit":{"amount":7}}"#.to_vec(),
        None,
    )
    .expect("deposit");
    let live = take(&rt, &mut sub, 1);
    assert_eq!((live[0].entity_id.as_str(), live[0].seq_nr), ("acc-0", 9));
    assert!(
        String::from_utf8_lossy(&live[0].payload).contains("deposited"),
        "{live:?}"
    );
}

#[test]
fn a_subscriber_resumes_from_its_cursor_across_a_restart_seeing_every_event_once_on_sled() {
    let dir = tempfile::tempdir().expect("dir");
    a_subscriber_resumes_from_its_cursor_across_a_restart_seeing_every_event_once(test_config(
        dir.path(),
    ));
}

#[test]
fn a_subscriber_resumes_from_its_cursor_across_a_restart_seeing_every_event_once_on_postgres() {
    let db = pg::database().expect("database");
    let dir = tempfile::tempdir().expect("dir");
    let mut config = test_config(dir.path());
    config.journal = JournalConfig::Postgres(PostgresOptions::new(db.url(), "node"));
    a_subscriber_resumes_from_its_cursor_across_a_restart_seeing_every_event_once(config);
}

#[test]
fn a_subscription_to_an_unknown_type_or_with_a_bad_cursor_is_refused_precisely() {
    let dir = tempfile::tempdir().expect("dir");
    let node = open(&test_config(dir.path()));
    assert!(matches!(
        node.subscribe("nope", None),
        Err(NodeError::UnknownType(t)) if t == "nope"
    ));
    for (cursor, why) in [
        ("12:3", "v1."),
        ("v1.x:1", "shard is not"),
        ("v1.999999:1", "shards"),
    ] {
        match node.subscribe("account", Some(cursor)) {
            Err(NodeError::InvalidCommand(m)) => assert!(m.contains(why), "{cursor}: {m}"),
            other => panic!("{cursor}: {:?}", other.map(|_| ())),
        }
    }
}
