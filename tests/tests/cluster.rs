//! Clusters of real `stead up` processes on a real PostgreSQL journal:
//! gossip, placement, forwarding between nodes, failover after SIGKILL and
//! graceful leaves on SIGTERM, each checked against the journal (no
//! acknowledged command lost, none applied twice, events contiguous).

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
        while stead_tests::cluster::get_json(&format!("http://{http}/v1/types"))
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

fn http_addrs(cluster: &LocalCluster) -> Vec<String> {
    cluster
        .running()
        .into_iter()
        .filter_map(|i| cluster.node(i).map(|n| n.http.clone()))
        .collect()
}

#[test]
fn a_killed_node_loses_no_acknowledged_command_and_its_entities_are_served_again_elsewhere() {
    let db = pg::database().expect("database");
    let mut cluster = cluster(&db.url(), 3);
    let entities = accounts(24);
    let load = Load::start(http_addrs(&cluster), &entities, 6);
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
    load.set_nodes(http_addrs(&cluster));

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
    let total = check_ledger(&reader_node, &entities, &report).expect("the ledger holds");
    eprintln!(
        "{total} commands acknowledged, {} unanswered requests retried, slowest {:?}, errors: {:?}",
        report.unreachable,
        report.slowest,
        report.errors.iter().take(5).collect::<Vec<_>>()
    );
    // A dead node's requests wait while its shards move, then succeed: the
    // only errors allowed are those the node gave before it knew.
    let unexpected: Vec<&String> = report
        .errors
        .iter()
        .filter(|e| !e.starts_with("unavailable"))
        .collect();
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
    let load = Load::start(http_addrs(&cluster), &entities, 6);
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    for i in 0..cluster.len() {
        // Clients move off the node first, as a load balancer would.
        let others: Vec<String> = cluster
            .running()
            .into_iter()
            .filter(|&j| j != i)
            .filter_map(|j| cluster.node(j).map(|n| n.http.clone()))
            .collect();
        load.set_nodes(others);
        cluster.stop(i).expect("a graceful stop");
        cluster.start(i).expect("restart");
        load.set_nodes(http_addrs(&cluster));
        cluster
            .wait_settled(Duration::from_secs(30))
            .expect("the cluster settles after a restart");
    }
    let rolled = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let report = load.finish();
    let reader = cluster.node(0).expect("node 1").http.clone();
    let total = check_ledger(&reader, &entities, &report).expect("the ledger holds");
    eprintln!(
        "rolling restart of 3 nodes in {rolled:?}: {total} commands, slowest {:?}, {} unanswered requests retried",
        report.slowest, report.unreachable
    );
    assert!(
        report.errors.is_empty(),
        "{} errors, the first: {:?}",
        report.errors.len(),
        report.errors.iter().take(3).collect::<Vec<_>>()
    );
}
