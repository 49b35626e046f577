//! Limits that protect the node from its own callers: a command that waits
//! past its request deadline is never executed, and recovery after a
//! restart is rate-limited per batch without reordering any entity's
//! commands. (Size limits are in `node_engine` and `hostile_guests`; the
//! flags that set every limit in `host/cli/tests/e2e_http.rs`.)

use std::time::Duration;

use stead_node::NodeError;
use stead_tests::{guest, json, temp_node};

/// Occupies the node's only worker for about `call_deadline` with a guest
/// that spins until the CPU deadline stops it.
fn occupy_the_worker(node: &stead_node::Node) -> stead_node::PendingReply {
    node.submit("hostile-loop", "spin", br#"{"spin":{}}"#.to_vec(), None)
        .expect("queued")
}

#[test]
fn a_command_that_waits_past_its_deadline_is_not_executed() {
    let (_dir, node) = temp_node(|c| {
        c.shards.workers = 1;
        c.engine.call_deadline = Duration::from_millis(300);
        c.limits.request_timeout = Duration::from_millis(50);
    });
    node.deploy(&guest("account")).expect("account");
    node.deploy(&guest("hostile_loop")).expect("loop");
    let spinning = occupy_the_worker(&node);
    let late = node
        .submit(
            "account",
            "late",
            br#"{"open":{"owner":"ada"}}"#.to_vec(),
            Some("c1".into()),
        )
        .expect("queued");
    match late.wait_blocking() {
        Err(NodeError::DeadlineExceeded(message)) => {
            assert!(message.contains("not executed"), "{message}");
        }
        other => panic!("expected deadline exceeded, got {other:?}"),
    }
    assert!(
        spinning.wait_blocking().is_err(),
        "the spin hit its CPU deadline"
    );
    assert!(
        node.events("account", "late", 1, 10)
            .expect("events")
            .is_empty(),
        "the late command persisted nothing"
    );
    // The same command id, retried in time, runs once.
    let retried = node
        .send_blocking(
            "account",
            "late",
            br#"{"open":{"owner":"ada"}}"#.to_vec(),
            Some("c1".into()),
        )
        .expect("retry in time");
    assert_eq!((retried.seq_nr, retried.duplicate), (1, false));
}

#[test]
fn recovery_is_rate_limited_per_batch_and_keeps_each_entitys_order() {
    let (dir, node) = temp_node(|c| {
        c.shards.workers = 1;
        c.engine.call_deadline = Duration::from_millis(200);
    });
    node.deploy(&guest("account")).expect("account");
    node.deploy(&guest("hostile_loop")).expect("loop");
    for i in 0..20 {
        node.send_blocking(
            "account",
            &format!("a{i}"),
            br#"{"open":{"owner":"ada"}}"#.to_vec(),
            None,
        )
        .expect("open");
    }
    node.shutdown();

    // After a restart every account is in the journal only; a rush of
    // commands to all of them arrives while the worker is busy, so it finds
    // them in one batch.
    let node = stead_tests::open_node(dir.path(), |c| {
        c.shards.workers = 1;
        c.engine.call_deadline = Duration::from_millis(200);
        c.shards.max_activations_per_batch = 3;
    });
    let spinning = occupy_the_worker(&node);
    let mut pending = Vec::new();
    for round in 0..3 {
        for i in 0..20 {
            let command = format!(r#"{{"deposit":{{"amount":{}}}}}"#, round + 1);
            let reply = node
                .submit("account", &format!("a{i}"), command.into_bytes(), None)
                .expect("queued");
            pending.push((i, round, reply));
        }
    }
    assert!(spinning.wait_blocking().is_err());
    for (i, round, reply) in pending {
        let reply = reply
            .wait_blocking()
            .unwrap_or_else(|e| panic!("a{i} round {round}: {e}"));
        // Each account's deposits run in the order sent: seq-nr 2, 3, 4 with
        // balances 1, 3, 6.
        assert_eq!(reply.seq_nr, 2 + round as u64, "a{i}");
        let balance: u64 = (1..=round as u64 + 1).sum();
        assert_eq!(json(&reply.reply)["balance"], balance, "a{i} round {round}");
    }
    let stats = node.stats_blocking().expect("stats");
    assert_eq!(
        stats.activations, 21,
        "the 20 accounts and the spinning entity"
    );
    assert!(
        stats.deferred > 20,
        "20 activations at 3 per batch hold back many requests: {stats:?}"
    );
}

#[test]
fn a_node_configured_with_the_largest_durations_serves_commands() {
    // Library callers can set any `Duration`; deadlines computed from them
    // (request deadlines, epoch ticks) must not overflow and panic.
    let (_dir, node) = temp_node(|c| {
        c.engine.call_deadline = Duration::MAX;
        c.limits.request_timeout = Duration::MAX;
        c.shards.idle_timeout = Duration::MAX;
    });
    node.deploy(&guest("account")).expect("account");
    for (seq_nr, command) in [
        (1, r#"{"open":{"owner":"ada"}}"#),
        (2, r#"{"deposit":{"amount":7}}"#),
    ] {
        let reply = node
            .send_blocking("account", "big", command.as_bytes().to_vec(), None)
            .expect("served");
        assert_eq!(reply.seq_nr, seq_nr);
    }
    let view = json(&node.view_blocking("account", "big").expect("view"));
    assert_eq!(view["balance"], 7, "{view}");
}
