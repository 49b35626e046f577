//! Guests that trap, loop forever, eat memory or return garbage: each command
//! gets its specific error, nothing is persisted, and the node goes on
//! serving every other entity type.

use std::time::{Duration, Instant};

use stead_node::NodeError;
use stead_runtime::GuestFault;
use stead_tests::{guest, json, temp_node};

fn node_with_account_and(hostile: &str) -> (tempfile::TempDir, stead_node::Node) {
    let (dir, node) = temp_node(|_| {});
    node.deploy(&guest("account")).expect("account");
    node.deploy(&guest(hostile)).expect("hostile guest deploys");
    node.send_blocking(
        "account",
        "healthy",
        br#"{"open":{"owner":"ada"}}"#.to_vec(),
        None,
    )
    .expect("account works");
    (dir, node)
}

fn fault_of(result: Result<stead_node::CommandReply, NodeError>) -> GuestFault {
    match result {
        Err(NodeError::GuestFault { fault, .. }) => fault,
        other => panic!("expected a guest fault, got {other:?}"),
    }
}

fn account_still_serves(node: &stead_node::Node, n: u64) {
    let reply = node
        .send_blocking(
            "account",
            "healthy",
            br#"{"deposit":{"amount":1}}"#.to_vec(),
            None,
        )
        .expect("account still serves");
    assert_eq!(json(&reply.reply)["balance"], n);
}

/// Resident set size of this process, in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("rss pages");
    pages * 4096
}

#[test]
fn a_trapping_guest_fails_the_command_and_keeps_its_state() {
    let (_dir, node) = node_with_account_and("hostile_trap");
    node.send_blocking("hostile-trap", "t", br#"{"ok":{}}"#.to_vec(), None)
        .expect("ok");
    for _ in 0..3 {
        let fault =
            fault_of(node.send_blocking("hostile-trap", "t", br#"{"boom":{}}"#.to_vec(), None));
        assert!(
            matches!(&fault, GuestFault::Trap(m) if m.contains("unreachable")),
            "{fault:?}"
        );
    }
    let after = node
        .send_blocking("hostile-trap", "t", br#"{"ok":{}}"#.to_vec(), None)
        .expect("a fresh instance");
    assert_eq!(
        (after.seq_nr, json(&after.reply)),
        (2, serde_json::json!(2)),
        "state untouched by the traps"
    );
    assert_eq!(
        node.events("hostile-trap", "t", 1, 10)
            .expect("events")
            .len(),
        2
    );
    account_still_serves(&node, 1);
}

#[test]
fn a_guest_that_loops_forever_is_stopped_at_its_deadline() {
    let (_dir, node) = temp_node(|c| c.engine.call_deadline = Duration::from_millis(50));
    node.deploy(&guest("account")).expect("account");
    node.deploy(&guest("hostile_loop")).expect("loop");
    node.send_blocking(
        "account",
        "healthy",
        br#"{"open":{"owner":"ada"}}"#.to_vec(),
        None,
    )
    .expect("open");
    let started = Instant::now();
    let fault = fault_of(node.send_blocking("hostile-loop", "l", br#"{"spin":{}}"#.to_vec(), None));
    assert_eq!(fault, GuestFault::Deadline(Duration::from_millis(50)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped promptly: {:?}",
        started.elapsed()
    );
    assert!(fault.to_string().contains("CPU deadline"), "{fault}");
    let ok = node
        .send_blocking("hostile-loop", "l", br#"{"ok":{}}"#.to_vec(), None)
        .expect("ok");
    assert_eq!(ok.seq_nr, 1, "the spinning command persisted nothing");
    account_still_serves(&node, 1);
}

#[test]
fn a_guest_that_eats_memory_hits_the_limit_and_memory_stays_bounded() {
    let limit = 32 * 1024 * 1024;
    let (_dir, node) = temp_node(|c| c.engine.memory_limit = limit);
    node.deploy(&guest("account")).expect("account");
    node.deploy(&guest("hostile_memory")).expect("hog");
    node.send_blocking(
        "account",
        "healthy",
        br#"{"open":{"owner":"ada"}}"#.to_vec(),
        None,
    )
    .expect("open");
    let before = rss_bytes();
    for _ in 0..10 {
        let fault =
            fault_of(node.send_blocking("hostile-memory", "m", br#"{"grow":{}}"#.to_vec(), None));
        assert_eq!(fault, GuestFault::MemoryLimit(limit));
        assert!(fault.to_string().contains("memory limit"), "{fault}");
    }
    let growth = rss_bytes().saturating_sub(before);
    assert!(
        growth < 4 * limit as u64,
        "RSS grew by {growth} bytes over 10 hogs of {limit}"
    );
    let ok = node
        .send_blocking("hostile-memory", "m", br#"{"ok":{}}"#.to_vec(), None)
        .expect("ok");
    assert_eq!(ok.seq_nr, 1);
    account_still_serves(&node, 1);
}

#[test]
fn malformed_guest_output_is_refused_with_the_reason() {
    // A generous deadline: lifting the 8 MiB state out of the guest takes
    // ~0.1 s in a debug build, and this test is about refusing it.
    let (_dir, node) = temp_node(|c| c.engine.call_deadline = Duration::from_secs(5));
    node.deploy(&guest("account")).expect("account");
    node.deploy(&guest("hostile_output"))
        .expect("hostile guest deploys");
    node.send_blocking(
        "account",
        "healthy",
        br#"{"open":{"owner":"ada"}}"#.to_vec(),
        None,
    )
    .expect("account works");
    for (command, reason) in [
        ("not-json-event", "event 0 is not JSON"),
        ("too-many-events", "1000 events exceed the limit of 100"),
        ("huge-event", "exceeds the limit of 262144"),
        ("huge-state", "state of 8388608 bytes exceeds the limit"),
        ("not-json-reply", "reply is not JSON"),
        (
            "send-no-event",
            "1 sends and 0 timer changes without an event",
        ),
        ("too-many-sends", "33 sends exceed the limit of 32"),
        ("send-bad-type", "send 0 targets entity type \"Not A Type\""),
        ("send-empty-id", "send 0 targets an entity id of 0 bytes"),
        ("send-not-json", "send 0's command is not JSON"),
        (
            "refusal-not-json",
            "send 0's on-refused command is not JSON",
        ),
        (
            "acceptance-not-json",
            "send 0's on-accepted command is not JSON",
        ),
        ("too-many-timers", "33 timer changes exceed the limit of 32"),
        ("timer-no-name", "timer change 0 names a timer of 0 bytes"),
        ("timer-too-far", "past the limit of 31536000 s ahead"),
        ("timer-not-json", "timer \"t\"'s command is not JSON"),
    ] {
        let fault =
            fault_of(node.send_blocking("hostile-output", "o", command.as_bytes().to_vec(), None));
        assert!(
            matches!(&fault, GuestFault::InvalidOutput(m) if m.contains(reason)),
            "{command}: {fault:?}"
        );
    }
    assert!(
        node.events("hostile-output", "o", 1, 10)
            .expect("events")
            .is_empty(),
        "nothing persisted"
    );
    let ok = node
        .send_blocking("hostile-output", "o", b"ok".to_vec(), None)
        .expect("ok");
    assert_eq!(ok.seq_nr, 1);
    // Valid sends and timers persist, and are delivered: the send to an
    // account that is not open is refused (final, counted), and the timer's
    // command, which its own entity does not know, is refused when it
    // fires. Neither is retried for ever.
    for (command, seq_nr) in [("send-ok", 2), ("timer-ok", 3)] {
        let reply = node
            .send_blocking("hostile-output", "o", command.as_bytes().to_vec(), None)
            .expect(command);
        assert_eq!(reply.seq_nr, seq_nr, "{command}");
    }
    let started = std::time::Instant::now();
    loop {
        let stats = node.messaging_stats();
        let settled = (stats.pending_sends, stats.pending_timers) == (0, 0);
        if stats.sends_refused == 1 && stats.timers_refused == 1 && settled {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{stats:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    account_still_serves(&node, 1);
}
