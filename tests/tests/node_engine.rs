//! The engine through the `Node` API with real components and real sled
//! files: deploy, commands, views, dedup, snapshots, passivation, restarts.

use serde_json::json;
use stead_node::NodeError;
use stead_tests::{guest, json, open_node, temp_node};

fn send(
    node: &stead_node::Node,
    ty: &str,
    id: &str,
    cmd: &str,
) -> Result<serde_json::Value, NodeError> {
    node.send_blocking(ty, id, cmd.as_bytes().to_vec(), None)
        .map(|r| json(&r.reply))
}

fn view(node: &stead_node::Node, ty: &str, id: &str) -> serde_json::Value {
    json(&node.view_blocking(ty, id).expect("view"))
}

#[test]
fn deploy_send_and_view_an_account() {
    let (_dir, node) = temp_node(|_| {});
    let info = node.deploy(&guest("account")).expect("deploy");
    assert_eq!(
        (
            info.name.as_str(),
            info.version.as_str(),
            info.snapshot_every
        ),
        ("account", "0.1.0", 100)
    );
    assert_eq!(
        send(&node, "account", "acc-1", r#"{"open":{"owner":"ada"}}"#),
        Ok(json!({"balance": 0}))
    );
    assert_eq!(
        send(&node, "account", "acc-1", r#"{"deposit":{"amount":100}}"#),
        Ok(json!({"balance": 100}))
    );
    assert_eq!(
        send(&node, "account", "acc-1", r#"{"withdraw":{"amount":30}}"#),
        Ok(json!({"balance": 70}))
    );
    assert_eq!(
        send(&node, "account", "acc-1", r#"{"withdraw":{"amount":100}}"#),
        Err(NodeError::Rejected(
            "insufficient funds: balance is 70, withdrawal is 100".into()
        ))
    );
    assert_eq!(
        view(&node, "account", "acc-1"),
        json!({"owner": "ada", "balance": 70, "status": "open"})
    );
    let events = node.events("account", "acc-1", 1, 100).expect("events");
    let payloads: Vec<_> = events
        .iter()
        .map(|e| (e.seq_nr, json(&e.record.payload)))
        .collect();
    assert_eq!(
        payloads,
        vec![
            (1, json!({"opened": {"owner": "ada"}})),
            (2, json!({"deposited": {"amount": 100}})),
            (3, json!({"withdrawn": {"amount": 30}})),
        ]
    );
}

#[test]
fn deploy_send_and_view_a_cart() {
    let (_dir, node) = temp_node(|_| {});
    node.deploy(&guest("cart")).expect("deploy");
    send(
        &node,
        "cart",
        "c1",
        r#"{"add_item":{"sku":"tea","quantity":2}}"#,
    )
    .expect("add");
    send(
        &node,
        "cart",
        "c1",
        r#"{"add_item":{"sku":"jam","quantity":1}}"#,
    )
    .expect("add");
    send(&node, "cart", "c1", r#"{"remove_item":{"sku":"jam"}}"#).expect("remove");
    let reply = send(&node, "cart", "c1", r#"{"checkout":{}}"#).expect("checkout");
    assert_eq!(
        reply,
        json!({"items": [{"sku": "tea", "quantity": 2}], "status": "checked_out"})
    );
    assert_eq!(
        send(
            &node,
            "cart",
            "c1",
            r#"{"add_item":{"sku":"tea","quantity":1}}"#
        ),
        Err(NodeError::Rejected("cart is checked out".into()))
    );
    assert_eq!(
        send(&node, "cart", "c2", r#"{"checkout":{}}"#),
        Err(NodeError::Rejected("cannot check out an empty cart".into()))
    );
    let checked_out = node.events("cart", "c1", 4, 10).expect("events");
    let at = json(&checked_out[0].record.payload)["checked_out"]["at_ms"]
        .as_u64()
        .expect("at_ms");
    assert!(
        at > 1_700_000_000_000,
        "the guest saw the host's clock: {at}"
    );
}

#[test]
fn unknown_types_invalid_ids_and_invalid_commands_are_told_apart() {
    let (_dir, node) = temp_node(|_| {});
    node.deploy(&guest("account")).expect("deploy");
    assert_eq!(
        send(&node, "nope", "x", "{}"),
        Err(NodeError::UnknownType("nope".into()))
    );
    assert!(matches!(
        send(&node, "account", "", "{}"),
        Err(NodeError::InvalidId(_))
    ));
    assert!(matches!(
        send(&node, "account", "a\nb", "{}"),
        Err(NodeError::InvalidId(_))
    ));
    assert!(matches!(
        send(&node, "account", &"x".repeat(300), "{}"),
        Err(NodeError::InvalidId(_))
    ));
    match send(&node, "account", "a", r#"{"transfer":{}}"#) {
        Err(NodeError::InvalidCommand(m)) => {
            assert!(m.contains("unknown variant `transfer`"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        send(&node, "account", "a", "not json"),
        Err(NodeError::InvalidCommand(_))
    ));
    assert_eq!(
        node.events("account", "a", 1, 10).expect("events"),
        vec![],
        "nothing persisted"
    );
}

#[test]
fn the_same_command_id_persists_once_and_replies_the_same_also_after_passivation_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deposit = br#"{"deposit":{"amount":5}}"#.to_vec();
    {
        let node = open_node(dir.path(), |_| {});
        node.deploy(&guest("account")).expect("deploy");
        send(&node, "account", "a", r#"{"open":{"owner":"ada"}}"#).expect("open");
        let first = node
            .send_blocking("account", "a", deposit.clone(), Some("dep-1".into()))
            .expect("first");
        assert_eq!((first.seq_nr, first.duplicate), (2, false));
        let again = node
            .send_blocking("account", "a", deposit.clone(), Some("dep-1".into()))
            .expect("again");
        assert_eq!(
            (again.seq_nr, again.duplicate, again.reply.clone()),
            (2, true, first.reply.clone())
        );
        node.passivate_all_blocking().expect("passivate");
        let after_passivation = node
            .send_blocking("account", "a", deposit.clone(), Some("dep-1".into()))
            .expect("3rd");
        assert!(after_passivation.duplicate);
        assert_eq!(after_passivation.reply, first.reply);
        node.shutdown();
    }
    let node = open_node(dir.path(), |_| {});
    let after_restart = node
        .send_blocking("account", "a", deposit.clone(), Some("dep-1".into()))
        .expect("4th");
    assert!(after_restart.duplicate, "deduplicated across a restart");
    assert_eq!(json(&after_restart.reply), json!({"balance": 5}));
    assert_eq!(
        node.events("account", "a", 1, 10).expect("events").len(),
        2,
        "persisted once"
    );
    let other = node
        .send_blocking("account", "a", deposit, Some("dep-2".into()))
        .expect("new id");
    assert_eq!((other.seq_nr, other.duplicate), (3, false));
    assert_eq!(view(&node, "account", "a")["balance"], 10);
}

#[test]
fn duplicates_within_one_batch_are_answered_with_the_original_reply() {
    let (_dir, node) = temp_node(|c| c.shards.workers = 1);
    node.deploy(&guest("account")).expect("deploy");
    send(&node, "account", "a", r#"{"open":{"owner":"ada"}}"#).expect("open");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let node = std::sync::Arc::new(node);
    let replies = runtime.block_on(async {
        let sends = (0..20).map(|_| {
            let node = node.clone();
            async move {
                node.send(
                    "account",
                    "a",
                    br#"{"deposit":{"amount":1}}"#.to_vec(),
                    Some("same".into()),
                )
                .await
            }
        });
        futures_join_all(sends).await
    });
    let fresh: Vec<_> = replies
        .iter()
        .filter(|r| !r.as_ref().expect("ok").duplicate)
        .collect();
    assert_eq!(
        fresh.len(),
        1,
        "exactly one of the concurrent copies persisted"
    );
    assert!(
        replies
            .iter()
            .all(|r| r.as_ref().expect("ok").reply == br#"{"balance":1}"#)
    );
    assert_eq!(
        node.events("account", "a", 1, 100).expect("events").len(),
        2
    );
}

async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[test]
fn activation_from_snapshot_and_replay_equals_a_full_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open_node(dir.path(), |_| {});
    node.deploy(&guest("account")).expect("deploy");
    send(&node, "account", "a", r#"{"open":{"owner":"ada"}}"#).expect("open");
    for i in 1..=249u64 {
        let cmd = if i % 3 == 0 {
            r#"{"withdraw":{"amount":1}}"#
        } else {
            r#"{"deposit":{"amount":2}}"#
        };
        send(&node, "account", "a", cmd).expect("command");
    }
    let live = view(&node, "account", "a");
    node.passivate_all_blocking().expect("passivate");
    let recovered = view(&node, "account", "a");
    assert_eq!(
        recovered, live,
        "recovered from the snapshot at 200 plus 50 events"
    );
    let state_via_snapshot = node.entity_state_blocking("account", "a").expect("state");
    node.shutdown();

    // A full replay through the same component, from the initial state.
    let journal =
        stead_journal_sled::SledJournal::open(&dir.path().join("journal"), Default::default())
            .expect("journal");
    let key = stead_journal::EntityKey::new(
        stead_types::shard::shard_of("account", "a", 16),
        "account",
        "a",
    );
    use stead_journal::Journal;
    let snapshot = journal
        .load_snapshot(&key)
        .expect("load")
        .expect("a snapshot exists");
    assert_eq!(snapshot.seq_nr, 200);
    let runtime = stead_runtime::Runtime::new(Default::default()).expect("runtime");
    let cache = tempfile::tempdir().expect("cache");
    let deployment =
        stead_runtime::Deployment::load(&runtime, &guest("account"), cache.path()).expect("load");
    let mut instance = deployment.instantiate().expect("instance");
    let mut state = instance.initial_state("account", "a").expect("initial");
    let events = journal.read_events(&key, 1, usize::MAX).expect("events");
    assert_eq!(events.len(), 250);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq_nr, i as u64 + 1, "contiguous from 1");
        state = instance
            .apply_event("account", "a", &state, &e.record.payload)
            .expect("apply");
    }
    assert_eq!(
        state, state_via_snapshot,
        "snapshot + replay == full replay"
    );
}

#[test]
fn a_new_version_takes_over_active_entities_with_their_state() {
    let (_dir, node) = temp_node(|_| {});
    node.deploy(&guest("versioned_v1")).expect("v1");
    for n in 1..=3 {
        assert_eq!(
            send(&node, "versioned", "x", r#"{"inc":{}}"#),
            Ok(json!({"version": 1, "count": n}))
        );
    }
    let v2 = node.deploy(&guest("versioned_v2")).expect("v2");
    assert_eq!(v2.version, "2.0.0");
    assert_eq!(node.types().len(), 1, "v2 replaced v1");
    assert_eq!(
        send(&node, "versioned", "x", r#"{"inc":{}}"#),
        Ok(json!({"version": 2, "count": 4}))
    );
    node.passivate_all_blocking().expect("passivate");
    assert_eq!(
        view(&node, "versioned", "x"),
        json!({"version": 2, "count": 4}),
        "recovered by v2 from v1's snapshot and events"
    );
}

#[test]
fn deployments_survive_a_restart_and_reuse_the_compiled_artifact() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let node = open_node(dir.path(), |_| {});
        node.deploy(&guest("account")).expect("deploy");
        node.deploy(&guest("cart")).expect("deploy");
        send(&node, "account", "a", r#"{"open":{"owner":"ada"}}"#).expect("open");
    }
    let cwasm: Vec<_> = std::fs::read_dir(dir.path().join("components"))
        .expect("components dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(cwasm.len(), 2, "one precompiled artifact per component");
    let node = open_node(dir.path(), |_| {});
    let names: Vec<_> = node.types().into_iter().map(|t| t.name).collect();
    assert_eq!(names, vec!["account", "cart"]);
    assert_eq!(view(&node, "account", "a")["owner"], "ada");
}

#[test]
fn invalid_components_are_refused_and_disturb_nothing_deployed() {
    let (_dir, node) = temp_node(|_| {});
    node.deploy(&guest("account")).expect("deploy");
    send(&node, "account", "a", r#"{"open":{"owner":"ada"}}"#).expect("open");
    let before = node.types();
    let core = wat::parse_str("(module)").expect("wat");
    let wrong_world = stead_component::testing::component_from_wit(
        &stead_component::testing::contract_with("export handler;", ""),
    );
    let mut truncated = guest("account");
    truncated.truncate(truncated.len() / 2);
    for (bytes, expected) in [
        (b"garbage bytes".to_vec(), "not a WebAssembly binary"),
        (core, "core WebAssembly module, not a component"),
        (wrong_world, "does not export `stead:entity/handler@0.2.0`"),
        (truncated, "malformed"),
    ] {
        match node.deploy(&bytes) {
            Err(NodeError::Deploy(message)) => assert!(message.contains(expected), "{message}"),
            other => panic!("expected a deploy error containing {expected:?}, got {other:?}"),
        }
    }
    assert_eq!(node.types(), before);
    assert_eq!(
        send(&node, "account", "a", r#"{"deposit":{"amount":1}}"#),
        Ok(json!({"balance": 1}))
    );
}

#[test]
fn a_data_directory_refuses_another_shard_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open_node(dir.path(), |_| {}));
    let mut config = stead_tests::test_config(dir.path());
    config.shard_count = 32;
    match stead_node::Node::open(config) {
        Err(NodeError::Config(m)) => assert!(m.contains("created with 16 shards"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn a_full_queue_is_overloaded_not_unbounded() {
    let (_dir, node) = temp_node(|c| {
        c.shards.workers = 1;
        c.shards.queue_depth = 4;
    });
    node.deploy(&guest("hostile_loop")).expect("deploy");
    // Occupy the worker with a command that runs into its deadline, then
    // overfill the queue behind it.
    let mut receivers = Vec::new();
    let mut overloaded = 0;
    for i in 0..50 {
        let cmd = if i == 0 {
            r#"{"spin":{}}"#
        } else {
            r#"{"ok":{}}"#
        };
        match node.submit("hostile-loop", "x", cmd.as_bytes().to_vec(), None) {
            Ok(rx) => receivers.push(rx),
            Err(NodeError::Overloaded(_)) => overloaded += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(overloaded > 0, "some commands were refused as overloaded");
    for rx in receivers {
        let _ = rx.wait_blocking();
    }
}

/// A trivial native entity: counts commands.
struct NativeCounter;

impl stead_runtime::NativeEntity for NativeCounter {
    fn describe(&self) -> stead_runtime::EntityInfo {
        stead_runtime::EntityInfo {
            name: "native-counter".into(),
            version: "1.0.0".into(),
            snapshot_every: 0,
        }
    }
    fn initial_state(&self, _entity_id: &str) -> Vec<u8> {
        vec![0]
    }
    fn handle_command(
        &self,
        _ctx: (&str, &str, u64, u64, &str),
        state: &[u8],
        _command: &[u8],
    ) -> Result<stead_runtime::CommandOutcome, stead_runtime::Rejection> {
        let n = state.first().copied().unwrap_or(0).wrapping_add(1);
        Ok(stead_runtime::CommandOutcome::new(
            vec![b"{\"inc\":1}".to_vec()],
            Some(vec![n]),
            format!("{n}").into_bytes(),
        ))
    }
    fn apply_event(&self, state: &[u8], _event: &[u8]) -> Result<Vec<u8>, String> {
        Ok(vec![state.first().copied().unwrap_or(0).wrapping_add(1)])
    }
    fn view(&self, state: &[u8]) -> Result<Vec<u8>, String> {
        Ok(format!("{}", state.first().copied().unwrap_or(0)).into_bytes())
    }
}

#[test]
fn a_native_deployment_runs_in_the_same_path_but_is_never_persisted() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let node = open_node(dir.path(), |_| {});
        node.deploy_native(std::sync::Arc::new(NativeCounter))
            .expect("native");
        assert_eq!(send(&node, "native-counter", "c", "{}"), Ok(json!(1)));
        assert_eq!(send(&node, "native-counter", "c", "{}"), Ok(json!(2)));
        node.passivate_all_blocking().expect("passivate");
        assert_eq!(
            view(&node, "native-counter", "c"),
            json!(2),
            "recovered by replay"
        );
        // A real deploy rewrites the manifest: the native type must stay out.
        node.deploy(&guest("account")).expect("account");
        assert_eq!(node.types().len(), 2);
    }
    let node = open_node(dir.path(), |_| {});
    let names: Vec<_> = node.types().into_iter().map(|t| t.name).collect();
    assert_eq!(names, vec!["account"]);
    assert_eq!(
        send(&node, "native-counter", "c", "{}"),
        Err(NodeError::UnknownType("native-counter".into()))
    );
}

#[test]
fn batched_commands_keep_each_entitys_order_and_views_never_run_ahead_of_the_journal() {
    // One worker: one entity's commands spread over many batches, mixed with
    // other entities' and with views from another thread.
    let (_dir, node) = temp_node(|c| c.shards.workers = 1);
    node.deploy(&guest("account")).expect("deploy");
    send(&node, "account", "a", r#"{"open":{"owner":"ada"}}"#).expect("open");
    for i in 0..50 {
        send(
            &node,
            "account",
            &format!("b{i}"),
            r#"{"open":{"owner":"bob"}}"#,
        )
        .expect("open");
    }
    let node = std::sync::Arc::new(node);
    let viewer = {
        let node = node.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..200 {
                let balance = view(&node, "account", "a")["balance"]
                    .as_u64()
                    .expect("balance");
                // Whatever a view shows is in the journal already.
                let stored = node
                    .events("account", "a", 1, 10_000)
                    .expect("events")
                    .len();
                assert!(
                    stored as u64 > balance,
                    "a view showed balance {balance} with {stored} events stored"
                );
                seen.push(balance);
            }
            seen
        })
    };
    let mut pending = Vec::new();
    for i in 0..2_000u64 {
        let deposit = node
            .submit(
                "account",
                "a",
                br#"{"deposit":{"amount":1}}"#.to_vec(),
                None,
            )
            .expect("submit");
        pending.push((i, deposit));
        node.submit(
            "account",
            &format!("b{}", i % 50),
            br#"{"deposit":{"amount":1}}"#.to_vec(),
            None,
        )
        .expect("submit");
    }
    for (i, p) in pending {
        let reply = p.wait_blocking().expect("deposit");
        assert_eq!(reply.seq_nr, i + 2, "deposit {i} out of order");
        assert_eq!(json(&reply.reply), json!({"balance": i + 1}));
    }
    let seen = viewer.join().expect("viewer");
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "views went back: {seen:?}"
    );
    assert_eq!(view(&node, "account", "a")["balance"], json!(2_000));
}
