//! Recovery through the optional `replay` export (`apply-events`, many
//! events per guest call): it rebuilds the very state the per-event path
//! does, components built before the export are still served event by event,
//! and a guest whose `apply-events` fails is recovered event by event.

use stead_tests::{guest, json, root, temp_node};

/// `account` as built by the SDK before `replay` existed (handler only).
fn handler_only_account() -> Vec<u8> {
    std::fs::read(root().join("tests/fixtures/account-handler-only.wasm"))
        .expect("fixture component")
}

/// More events than one journal read (1,024) and than one guest call folds,
/// with no snapshot in between: every event is replayed.
const EVENTS: u64 = 2_600;

/// Opens an account, seeds `EVENTS - 1` deposits of 1..=n, and returns its
/// view before and after passivation (activation from the journal alone).
fn view_before_and_after_recovery(component: &[u8]) -> (serde_json::Value, serde_json::Value) {
    let (_dir, node) = temp_node(|_| {});
    node.deploy(component).expect("deploys");
    node.send_blocking(
        "account",
        "a",
        br#"{"open":{"owner":"ada"}}"#.to_vec(),
        None,
    )
    .expect("open");
    let deposits: Vec<Vec<u8>> = (1..EVENTS)
        .map(|n| format!(r#"{{"deposited":{{"amount":{n}}}}}"#).into_bytes())
        .collect();
    let seq = node
        .seed_events_blocking("account", "a", deposits)
        .expect("seeded");
    assert_eq!(seq, EVENTS);
    let before = json(&node.view_blocking("account", "a").expect("view"));
    let passivated = node.passivate_all_blocking().expect("passivate");
    assert!(passivated >= 1, "the account was active");
    let after = json(
        &node
            .view_blocking("account", "a")
            .expect("view after recovery"),
    );
    // The recovered entity goes on where it left off.
    let reply = node
        .send_blocking(
            "account",
            "a",
            br#"{"deposit":{"amount":1}}"#.to_vec(),
            None,
        )
        .expect("deposit after recovery");
    assert_eq!(reply.seq_nr, EVENTS + 1);
    (before, after)
}

#[test]
fn batched_replay_rebuilds_the_same_state_as_replay_event_by_event() {
    let batched = guest("account");
    let (dir, node) = temp_node(|_| {});
    assert!(node.deploy(&batched).expect("deploys").batched_replay);
    assert!(
        !node
            .deploy(&handler_only_account())
            .expect("deploys")
            .batched_replay
    );
    drop(node);
    drop(dir);

    let (before, after_batched) = view_before_and_after_recovery(&batched);
    let (_, after_per_event) = view_before_and_after_recovery(&handler_only_account());
    let expected_balance = (EVENTS - 1) * EVENTS / 2;
    assert_eq!(before["balance"], expected_balance, "{before}");
    assert_eq!(after_batched, before, "batched recovery");
    assert_eq!(after_per_event, before, "event-by-event recovery");
}

#[test]
fn a_component_without_the_replay_export_is_served_and_recovers_event_by_event() {
    let (_dir, node) = temp_node(|_| {});
    let info = node.deploy(&handler_only_account()).expect("deploys");
    assert_eq!(info.name, "account");
    assert!(!info.batched_replay);
    node.send_blocking(
        "account",
        "old",
        br#"{"open":{"owner":"bo"}}"#.to_vec(),
        None,
    )
    .expect("open");
    for _ in 0..250 {
        node.send_blocking(
            "account",
            "old",
            br#"{"deposit":{"amount":2}}"#.to_vec(),
            None,
        )
        .expect("deposit");
    }
    node.passivate_all_blocking().expect("passivate");
    let view = json(
        &node
            .view_blocking("account", "old")
            .expect("view after recovery"),
    );
    assert_eq!(view["balance"], 500, "{view}");
}

#[test]
fn a_guest_whose_apply_events_traps_is_recovered_event_by_event() {
    let (_dir, node) = temp_node(|_| {});
    let info = node.deploy(&guest("hostile_output")).expect("deploys");
    assert!(
        info.batched_replay,
        "it exports `replay` (which always traps)"
    );
    for _ in 0..5 {
        node.send_blocking("hostile-output", "h", b"ok".to_vec(), None)
            .expect("ok persists one event");
    }
    node.passivate_all_blocking().expect("passivate");
    // Five events to replay: the batch traps, the fallback folds each one.
    node.view_blocking("hostile-output", "h")
        .expect("recovered despite the trapping batch");
    let reply = node
        .send_blocking("hostile-output", "h", b"ok".to_vec(), None)
        .expect("serves after recovery");
    assert_eq!(reply.seq_nr, 6);
}
