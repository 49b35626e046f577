//! Clusters of real `stead up` processes on a real PostgreSQL journal:
//! gossip, placement, forwarding between nodes, failover after SIGKILL and
//! graceful leaves on SIGTERM, each checked against the journal (no
//! acknowledged command lost, none applied twice, events contiguous) and
//! by the simulator's checkers on the recorded history (linearizable per
//! entity, every acknowledgement durable).

use std::time::{Duration, Instant};

use stead_postgres_testing as pg;
use stead_tests::cluster::{Load, LocalCluster, check_ledger};
use stead_tests::{guests_dir, stead_binary};
use stead_types::shard::shard_of;

/// The shard count `NodeProcess` starts nodes with.
const SHARDS: u32 = 16;

fn accounts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("acc-{i}")).collect()
}

/// A settled cluster of `n` nodes with `account` deployed on every node.
fn cluster(url: &str, n: usize) -> LocalCluster {
    let mut cluster = LocalCluster::new(&stead_binary(), url, n, &[]).expect("cluster slots");
    cluster.start_all().expect("start the nodes");
    let settled = cluster
        .wait_settled(Duration::from_secs(30))
        .expect("the cluster settles");
    eprintln!("{n} nodes settled in {settled:?}");
    cluster
        .node(0)
        .expect("node 1")
        .deploy(&guests_dir())
        .expect("deploy");
    // A deploy reaches the other nodes through the journal within a second.
    for i in cluster.running() {
        let http = cluster.node(i).expect("running").http.clone();
        let started = Instant::now();
        while stead_tests::chaos::client::Reader::new(&http)
            .get_json("/v1/types")
            .map(|t| !t.to_string().contains("\"account\""))
            .unwrap_or(true)
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "deploy did not reach node {i}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    cluster
}

#[test]
fn a_killed_node_loses_no_acknowledged_command_and_its_entities_are_served_again_elsewhere() {
    let db = pg::database().expect("database");
    let mut cluster = cluster(&db.url(), 3);
    let entities = accounts(24);
    let load = Load::start(cluster.http_addrs(None), &entities, 6);
    std::thread::sleep(Duration::from_secs(2));

    // The victim holds acc-0's shard.
    let shard = shard_of("account", "acc-0", SHARDS);
    let holder = cluster
        .holder(0, u64::from(shard))
        .expect("acc-0's shard has a holder");
    let victim = cluster.index_of(&holder).expect("a known node");
    let survivors: Vec<usize> = cluster
        .running()
        .into_iter()
        .filter(|&i| i != victim)
        .collect();
    let victims_entities: Vec<&String> = entities
        .iter()
        .filter(|e| shard_of("account", e, SHARDS) == shard)
        .collect();
    let killed = Instant::now();
    cluster.kill(victim);
    load.set_nodes(cluster.http_addrs(None));

    // A probe through a survivor: acc-0's view is served only by its
    // shard's holder, so its first success is the failover's end.
    let probe = stead_tests::chaos::client::Reader::new(
        &cluster.node(survivors[0]).expect("survivor").http,
    );
    let failover = loop {
        if probe.view("account", "acc-0").is_ok() {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "acc-0 not served again within 30 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    eprintln!(
        "failover: {failover:?} from SIGKILL of {holder} to acc-0 served again ({} of its entities on the shard)",
        victims_entities.len()
    );
    std::thread::sleep(Duration::from_secs(3));
    let report = load.finish();
    let reader_node = cluster.node(survivors[0]).expect("survivor").http.clone();
    let checked = check_ledger(&reader_node, &entities, &report).expect("the ledger holds");
    eprintln!(
        "{checked}; {} unanswered requests retried, slowest {:?}, errors: {:?}",
        report.unreachable,
        report.slowest,
        report.errors.iter().take(5).collect::<Vec<_>>()
    );
    // A dead node's requests wait while its shards move, then succeed: the
    // only errors allowed are those the node gave before it knew.
    let unexpected = report.unexpected_errors();
    assert!(
        unexpected.is_empty(),
        "{} unexpected errors, the first: {:?}",
        unexpected.len(),
        unexpected.iter().take(3).collect::<Vec<_>>()
    );
    cluster
        .wait_settled(Duration::from_secs(30))
        .expect("the survivors settle");
}

#[test]
fn a_rolling_restart_under_load_gives_retrying_clients_no_error() {
    let db = pg::database().expect("database");
    let mut cluster = cluster(&db.url(), 3);
    let entities = accounts(24);
    let load = Load::start(cluster.http_addrs(None), &entities, 6);
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    for i in 0..cluster.len() {
        // Clients move off the node first, as a load balancer would.
        load.set_nodes(cluster.http_addrs(Some(i)));
        cluster.stop(i).expect("a graceful stop");
        cluster.start(i).expect("restart");
        load.set_nodes(cluster.http_addrs(None));
        cluster
            .wait_settled(Duration::from_secs(30))
            .expect("the cluster settles after a restart");
    }
    let rolled = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let report = load.finish();
    let reader = cluster.node(0).expect("node 1").http.clone();
    let checked = check_ledger(&reader, &entities, &report).expect("the ledger holds");
    eprintln!(
        "rolling restart of 3 nodes in {rolled:?}: {checked}; slowest {:?}, {} unanswered requests retried",
        report.slowest, report.unreachable
    );
    assert!(
        report.errors.is_empty(),
        "{} errors, the first: {:?}",
        report.errors.len(),
        report.errors.iter().take(3).collect::<Vec<_>>()
    );
}

#[test]
fn a_frozen_node_past_its_ttl_serves_nothing_stale_and_writes_nothing_when_it_wakes() {
    let db = pg::database().expect("database");
    let cluster = cluster(&db.url(), 3);
    let entities = accounts(24);
    let load = Load::start(cluster.http_addrs(None), &entities, 6);
    std::thread::sleep(Duration::from_secs(1));

    let shard = shard_of("account", "acc-0", SHARDS);
    let holder = cluster.holder(0, u64::from(shard)).expect("a holder");
    let victim = cluster.index_of(&holder).expect("a known node");
    let survivor = cluster
        .running()
        .into_iter()
        .find(|&i| i != victim)
        .expect("a survivor");
    let victim_http = cluster.node(victim).expect("victim").http.clone();
    let survivor_http = cluster.node(survivor).expect("survivor").http.clone();
    cluster.signal(victim, "-STOP").expect("SIGSTOP");
    let frozen = Instant::now();
    // Clients blocked on the frozen node stay blocked; the others move on.
    load.set_nodes(cluster.http_addrs(Some(victim)));
    let reader = stead_tests::chaos::client::Reader::new(&survivor_http);
    while reader.view("account", "acc-0").is_err() {
        assert!(
            frozen.elapsed() < Duration::from_secs(30),
            "acc-0 not taken over"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "acc-0 served by another node {:?} after the freeze",
        frozen.elapsed()
    );

    // Writes after the takeover, through the survivor: the frozen node's
    // memory of acc-0 is now stale. They and the views below are in the
    // load's history (client 100), so the checkers judge them with the rest.
    let recorder = load.recorder();
    let mut client = stead_tests::chaos::client::Client::http(&survivor_http);
    let mut after_freeze = Vec::new();
    for n in 0..5 {
        let command = serde_json::json!({"deposit": {"amount": 1000}});
        let key = format!("after-freeze-{n}");
        let invoked_at = recorder.now();
        let outcome = client.send("account", "acc-0", &command, &key);
        recorder
            .record_command(100, "acc-0", &command, &key, invoked_at, &outcome)
            .expect("recorded");
        match outcome {
            stead_tests::chaos::client::Outcome::Acked { seq_nr, .. } => {
                after_freeze.push(("acc-0".to_owned(), key, seq_nr));
            }
            other => panic!("{other:?}"),
        }
    }
    let balance = |view: serde_json::Value| view["balance"].as_u64().unwrap_or(0);
    let after = balance(recorder.record_view(100, &reader, "acc-0").expect("view"));

    std::thread::sleep(Duration::from_secs(1));
    cluster.signal(victim, "-CONT").expect("SIGCONT");
    // At once: the woken node answers from the shard's new holder, never
    // from its own memory (the linearizability check below says so
    // exactly; this says it plainly).
    let woken = balance(
        recorder
            .record_view(
                101,
                &stead_tests::chaos::client::Reader::new(&victim_http),
                "acc-0",
            )
            .expect("the woken node answers"),
    );
    assert!(
        woken >= after,
        "the woken node served a stale view: balance {woken}, the journal had {after}"
    );
    load.set_nodes(cluster.http_addrs(None));
    std::thread::sleep(Duration::from_secs(2));
    let mut report = load.finish();
    report.acked.extend(after_freeze);
    // A write of the woken node under its old lease would show as a gap, a
    // double or an unacknowledged event, and as a history no order explains.
    let checked = check_ledger(&survivor_http, &entities, &report).expect("the ledger holds");
    eprintln!("{checked}; errors: {}", report.errors.len());
    let unexpected = report.unexpected_errors();
    assert!(
        unexpected.is_empty(),
        "{:?}",
        unexpected.iter().take(3).collect::<Vec<_>>()
    );
}

#[test]
fn a_fourth_node_joins_under_load_takes_its_share_and_leaves_again_without_an_error() {
    let db = pg::database().expect("database");
    let mut cluster = cluster(&db.url(), 3);
    let entities = accounts(24);
    let load = Load::start(cluster.http_addrs(None), &entities, 6);
    std::thread::sleep(Duration::from_secs(1));

    let fourth = cluster.add_slot().expect("a slot");
    let joined = Instant::now();
    cluster.start(fourth).expect("start the fourth node");
    load.set_nodes(cluster.http_addrs(None));
    let settled = cluster
        .wait_settled(Duration::from_secs(30))
        .expect("the cluster settles with 4 nodes");
    let status = cluster.status(fourth).expect("status");
    let held = status["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["node_id"] == cluster.node_id(fourth)))
        .and_then(|m| m["shards_held"].as_u64())
        .expect("the fourth node's count");
    eprintln!(
        "the fourth node joined and holds {held} of {SHARDS} shards, settled {:?} after it started ({settled:?} of waiting)",
        joined.elapsed()
    );
    assert!(held > 0, "the fourth node took no shard");

    // It leaves gracefully: clients move off it first.
    load.set_nodes(cluster.http_addrs(Some(fourth)));
    cluster.stop(fourth).expect("a graceful leave");
    cluster
        .wait_settled(Duration::from_secs(30))
        .expect("the cluster settles with 3 nodes");
    std::thread::sleep(Duration::from_secs(1));
    let report = load.finish();
    let checked = check_ledger(&cluster.node(0).expect("node 1").http, &entities, &report)
        .expect("the ledger holds");
    eprintln!("{checked}; slowest {:?}", report.slowest);
    assert!(
        report.errors.is_empty(),
        "{} errors, the first: {:?}",
        report.errors.len(),
        report.errors.iter().take(3).collect::<Vec<_>>()
    );
}

/// A base port with `count` free TCP ports after it (on loopback).
fn free_ports(count: u16) -> u16 {
    for _ in 0..100 {
        let base = 20_000 + fastrand::u16(..30_000);
        let free = (0..count).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no {count} free consecutive ports");
}

#[test]
fn stead_cluster_up_runs_a_local_cluster_that_status_shows_and_ctrl_c_stops() {
    use std::io::BufRead;
    let data = tempfile::tempdir().expect("dir");
    // The database runs as the `postgres` user when the tests run as root:
    // it must be able to reach the directory (a temporary one is 0700).
    std::fs::set_permissions(
        data.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let (grpc, http, postgres) = (free_ports(2), free_ports(2), free_ports(1));
    let stderr_dir = tempfile::tempdir().expect("dir");
    let stderr_path = stderr_dir.path().join("stderr");
    let mut child = std::process::Command::new(stead_binary())
        .args(["cluster", "up", "--nodes", "2"])
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--grpc-base",
            &grpc.to_string(),
            "--http-base",
            &http.to_string(),
        ])
        .args(["--postgres-port", &postgres.to_string()])
        .stdout(std::process::Stdio::piped())
        // Kept for the failure message: the ports are picked free here but
        // bound later, so another test's node can take one in between.
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("stead cluster up");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("a line");
        let done = line.starts_with("try:");
        lines.push(line);
        if done {
            break;
        }
    }
    let printed = format!(
        "{}\n(stderr: {})",
        lines.join("\n"),
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    for i in 0..2u16 {
        assert!(
            printed.contains(&format!(
                "node-{i}  grpc=127.0.0.1:{}  http=127.0.0.1:{}",
                grpc + i,
                http + i
            )),
            "{printed}"
        );
    }
    // Both nodes become ready members; `stead cluster status` shows them.
    let addr = format!("http://127.0.0.1:{grpc}");
    let started = Instant::now();
    let status = loop {
        let out = std::process::Command::new(stead_binary())
            .args(["--json", "--addr", &addr, "cluster", "status"])
            .output()
            .expect("stead cluster status");
        let status: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let settled = status["members"]
            .as_array()
            .is_some_and(|m| m.len() == 2 && m.iter().all(|m| m["state"] == "ready"))
            && status["shards"].as_array().is_some_and(|s| {
                s.iter()
                    .all(|s| !s["holder"].is_null() && s["holder"] == s["placed"])
            });
        if settled {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not settled: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["node_id"], "node-0");
    // Ctrl-C: the nodes leave, the database stops, the data stays.
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(interrupted.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit}");
    for kept in ["postgres/data/PG_VERSION", "node-0/node.json", "node-1.log"] {
        assert!(data.path().join(kept).exists(), "{kept} kept");
    }
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", postgres)).is_ok(),
        "the database stopped"
    );
}
