//! The host serves every contract version it knows: a component built
//! against the frozen `stead:entity@0.1.0` (before sends and timers existed)
//! is validated as 0.1.0, deployed, and served exactly as the current
//! SDK's build of the same entity, including recovery after a restart, next
//! to 0.2.0 components on the same node.
//!
//! The 0.1.0 component is `tests/fixtures/account-0.1.0.wasm`: the `account`
//! example as the SDK built it before 0.2.0, committed as the artifact a
//! user would have deployed (its SHA-256 is pinned below).

use stead_component::{ContractVersion, validate};
use stead_node::{Node, NodeError};
use stead_tests::{guest, open_node, root};

/// The SHA-256 of the fixture, so a rebuilt file cannot slip in unseen.
const ACCOUNT_0_1_0_SHA256: &str =
    "d7ff35cd3a84697ab15e93a0fd1a1c25c1e25f5fd27d9f8a0c4dcd13da110abc";

fn account_0_1_0() -> Vec<u8> {
    let bytes =
        std::fs::read(root().join("tests/fixtures/account-0.1.0.wasm")).expect("the fixture");
    let hash = stead_runtime::component_hash(&bytes);
    assert_eq!(hash, ACCOUNT_0_1_0_SHA256, "the 0.1.0 fixture changed");
    bytes
}

/// Replies (or errors) and the view after a fixed account script.
fn script(node: &Node, id: &str) -> (Vec<String>, String) {
    let commands = [
        r#"{"deposit":{"amount":5}}"#,
        r#"{"open":{"owner":"ada"}}"#,
        r#"{"deposit":{"amount":100}}"#,
        r#"{"withdraw":{"amount":30}}"#,
        r#"{"withdraw":{"amount":1000}}"#,
        r#"{"open":{"owner":"bob"}}"#,
        r#"{"nonsense":{}}"#,
    ];
    let answers = commands
        .iter()
        .map(
            |c| match node.send_blocking("account", id, c.as_bytes().to_vec(), None) {
                Ok(reply) => format!(
                    "ok {} at {}",
                    String::from_utf8_lossy(&reply.reply),
                    reply.seq_nr
                ),
                Err(NodeError::Rejected(m)) => format!("rejected {m}"),
                Err(NodeError::InvalidCommand(_)) => "invalid".to_owned(),
                Err(e) => format!("error {e}"),
            },
        )
        .collect();
    let view = node.view_blocking("account", id).expect("view");
    (answers, String::from_utf8_lossy(&view).into_owned())
}

#[test]
fn a_0_1_0_component_validates_as_0_1_0_and_the_current_sdk_builds_0_2_0() {
    let old = validate(&account_0_1_0()).expect("the 0.1.0 component is valid");
    assert_eq!(old.contract, ContractVersion::V0_1_0);
    assert!(old.exports.contains_key("stead:entity/replay@0.1.0"));
    let new = validate(&guest("account")).expect("valid");
    assert_eq!(new.contract, ContractVersion::V0_2_0);
}

#[test]
fn a_0_1_0_component_is_served_and_recovered_exactly_as_the_current_build() {
    let old_dir = tempfile::tempdir().expect("dir");
    let new_dir = tempfile::tempdir().expect("dir");
    let old = open_node(old_dir.path(), |_| {});
    let new = open_node(new_dir.path(), |_| {});
    let info = old
        .deploy(&account_0_1_0())
        .expect("the 0.1.0 account deploys");
    assert!(info.batched_replay, "its replay export is bound too");
    assert_eq!(
        info.contract, "0.1.0",
        "the node says which contract it speaks"
    );
    let info = new
        .deploy(&guest("account"))
        .expect("the 0.2.0 account deploys");
    assert_eq!(info.contract, "0.2.0");
    let on_old = script(&old, "a");
    let on_new = script(&new, "a");
    assert_eq!(on_old, on_new, "both versions answer alike");
    assert!(on_old.1.contains("\"balance\":70"), "{}", on_old.1);

    // A restart: the 0.1.0 entity is recovered from its journal by its own
    // bindings (events replayed through its replay export).
    old.shutdown();
    let old = open_node(old_dir.path(), |_| {});
    let view = old.view_blocking("account", "a").expect("recovered");
    assert_eq!(String::from_utf8_lossy(&view), on_old.1);
    let reply = old
        .send_blocking(
            "account",
            "a",
            br#"{"deposit":{"amount":1}}"#.to_vec(),
            None,
        )
        .expect("served after the restart");
    assert_eq!(reply.seq_nr, 4);
}

#[test]
fn components_of_both_versions_serve_side_by_side_on_one_node() {
    let dir = tempfile::tempdir().expect("dir");
    let node = open_node(dir.path(), |_| {});
    node.deploy(&account_0_1_0()).expect("0.1.0");
    node.deploy(&guest("cart")).expect("0.2.0");
    node.send_blocking(
        "account",
        "x",
        br#"{"open":{"owner":"ada"}}"#.to_vec(),
        None,
    )
    .expect("the 0.1.0 account serves");
    node.send_blocking(
        "cart",
        "x",
        br#"{"add_item":{"sku":"tea","quantity":2}}"#.to_vec(),
        None,
    )
    .expect("the 0.2.0 cart serves");
}
