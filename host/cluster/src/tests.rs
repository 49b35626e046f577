//! Nodes of one process on a real PostgreSQL journal, gossiping over
//! chitchat's in-process transport (so links can be cut): a node cut off
//! from the others stops serving past the isolation bound, the majority
//! takes its shards, and it serves again once the partition heals.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chitchat::transport::ChannelTransport;
use stead_node::{JournalConfig, Node, NodeConfig};
use stead_types::config::PostgresOptions;

use super::*;

const SHARDS: u32 = 16;

fn gossip(i: u16) -> SocketAddr {
    ([127, 0, 0, 1], 11_000 + i).into()
}

async fn member(
    i: u16,
    url: &str,
    dir: &tempfile::TempDir,
    transport: &ChannelTransport,
) -> (Arc<Node>, Cluster) {
    let mut config = NodeConfig::new(dir.path());
    config.shard_count = SHARDS;
    config.acquire_all_at_open = false;
    config.journal = JournalConfig::Postgres(PostgresOptions::new(url, format!("node-{i}")));
    let node = Arc::new(
        tokio::task::spawn_blocking(move || Node::open(config))
            .await
            .expect("open task")
            .expect("node opens"),
    );
    let mut membership = MembershipConfig::new(format!("node-{i}"), gossip(i));
    membership.seeds = (1..=3).map(|j| gossip(j).to_string()).collect();
    membership.gossip_interval = Duration::from_millis(100);
    membership.grpc_advertise = format!("127.0.0.1:{}", 7400 + i);
    let mut cluster = ClusterConfig::new(membership);
    cluster.isolation_bound = Duration::from_secs(1);
    cluster.settle = Duration::from_millis(300);
    let cluster = Cluster::start_with_transport(node.clone(), cluster, transport)
        .await
        .expect("joins");
    (node, cluster)
}

async fn wait_until(what: &str, within: Duration, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn served(nodes: &[&Arc<Node>]) -> usize {
    nodes.iter().map(|n| n.served_shards().len()).sum()
}

// The nodes and the database's client block: they are made and dropped
// outside the async runtime the gossip runs on.
#[test]
fn a_node_cut_off_from_the_majority_stops_serving_and_the_majority_takes_its_shards() {
    let db = stead_postgres_testing::database().expect("database");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let nodes = runtime.block_on(partition_and_heal(&db.url()));
    drop(runtime);
    drop(nodes);
}

async fn partition_and_heal(url: &str) -> Vec<Arc<Node>> {
    let transport = ChannelTransport::with_mtu(65_507);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (a, ca) = member(1, url, &dirs[0], &transport).await;
    let (b, cb) = member(2, url, &dirs[1], &transport).await;
    let (c, cc) = member(3, url, &dirs[2], &transport).await;
    // Ready too: every shard served can still be one placement short of
    // the settled map (a node serving 3 of the 5 placed on it, the other 2
    // moving to it), and readiness waits for the settled map.
    wait_until(
        "every shard served, each node a share and ready",
        Duration::from_secs(20),
        || {
            served(&[&a, &b, &c]) == SHARDS as usize
                && [&a, &b, &c].iter().all(|n| !n.served_shards().is_empty())
                && [&ca, &cb, &cc].iter().all(|c| c.readiness().is_ok())
        },
    )
    .await;

    // node-3 loses node-1 and node-2; all three still reach the database.
    for other in [1, 2] {
        transport.remove_link(gossip(3), gossip(other)).await;
    }
    wait_until("node-3 stops serving", Duration::from_secs(15), || {
        cc.is_isolated() && c.served_shards().is_empty() && c.wanted_shards().is_empty()
    })
    .await;
    let why = cc.readiness().expect_err("not ready while cut off");
    assert!(why.contains("cut off"), "{why}");
    wait_until(
        "the majority serves every shard",
        Duration::from_secs(15),
        || served(&[&a, &b]) == SHARDS as usize,
    )
    .await;
    assert!(!ca.is_isolated() && !cb.is_isolated());

    // Healed: node-3 reaches the majority and takes its share again.
    for other in [1, 2] {
        transport.add_link(gossip(3), gossip(other)).await;
    }
    wait_until("node-3 serves again", Duration::from_secs(20), || {
        !cc.is_isolated() && !c.served_shards().is_empty()
    })
    .await;
    wait_until("every shard served once", Duration::from_secs(20), || {
        served(&[&a, &b, &c]) == SHARDS as usize
    })
    .await;
    for cluster in [&ca, &cb, &cc] {
        cluster.leave().await;
    }
    vec![a, b, c]
}
