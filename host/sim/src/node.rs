//! One simulated node: the real `Node`, `Cluster` and gRPC services, on the
//! simulator's seams (its journal is the [`crate::db::Database`] over the
//! simulated network, its loops are tasks of its simulated host, its clock
//! is its [`SimClock`], its sockets are turmoil's).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use stead_cluster::membership::MembershipConfig;
use stead_cluster::router::RoutingCounters;
use stead_cluster::{Cluster, ClusterConfig};
use stead_node::{Node, NodeConfig};
use stead_types::{Joiner, MakeTask, Spawner};

use crate::clock::SimClock;
use crate::db::{DB_PORT, DbJournal};
use crate::net::{Mailbox, SimDialer, SimGossip, incoming};

pub const GRPC_PORT: u16 = 7400;
pub const GOSSIP_PORT: u16 = 7000;

/// Runs a node's loops as tasks of its simulated host.
pub struct HostTasks;

struct Detached;

impl Joiner for Detached {
    fn join(self: Box<Self>) -> bool {
        true
    }
}

impl Spawner for HostTasks {
    fn spawn(&self, _name: String, make: MakeTask) -> std::io::Result<Box<dyn Joiner>> {
        tokio::task::spawn_local(make());
        Ok(Box::new(Detached))
    }
}

/// What a node is started with (again after each crash).
#[derive(Clone)]
pub struct NodeSpec {
    pub id: String,
    pub data_dir: PathBuf,
    pub compile_cache: PathBuf,
    pub component: Arc<Vec<u8>>,
    /// The `transfer` component, deployed beside `account` when present.
    pub saga: Option<Arc<Vec<u8>>>,
    pub shard_count: u32,
    pub clock: Arc<SimClock>,
    /// Every node's host name (the seeds).
    pub members: Vec<String>,
    /// The command-id window per entity (0 in the broken-dedup variant).
    pub dedup_window: usize,
    pub mailbox: Arc<Mailbox>,
    /// The lease ttl the node is told (longer than the database's in the
    /// broken variant where leases never expire).
    pub told_ttl: Duration,
    /// Every start's routing counters, summed in the report.
    pub routing: Arc<std::sync::Mutex<Vec<Arc<RoutingCounters>>>>,
}

fn addr_of(host: &str, port: u16) -> SocketAddr {
    let ip: IpAddr = turmoil::lookup(host);
    SocketAddr::new(ip, port)
}

/// The node's software: opens, joins, serves until its host is crashed.
pub async fn run(spec: NodeSpec) -> turmoil::Result {
    let mut config = NodeConfig::new(&spec.data_dir);
    config.shard_count = spec.shard_count;
    config.acquire_all_at_open = false;
    config.compile_cache = Some(spec.compile_cache.clone());
    config.shards.workers = 2;
    config.shards.dedup_window = spec.dedup_window;
    config.limits.request_timeout = Duration::from_secs(3);
    let db = format!("{}:{DB_PORT}", turmoil::lookup("db"));
    let journal = Arc::new(DbJournal::new(
        &spec.id,
        db,
        spec.told_ttl,
        stead_types::config::DEFAULT_POSTGRES_TIMEOUT,
    ));
    let node = Node::builder(config)
        .async_journal(journal)
        .clock(spec.clock.clone())
        .spawner(Arc::new(HostTasks))
        .open()?;
    if node.types().iter().all(|t| t.name != "account") {
        node.deploy(&spec.component)?;
    }
    if let Some(saga) = &spec.saga
        && node.types().iter().all(|t| t.name != "transfer")
    {
        node.deploy(saga)?;
    }
    let node = Arc::new(node);
    let gossip = addr_of(&spec.id, GOSSIP_PORT);
    let mut membership = MembershipConfig::new(spec.id.clone(), gossip);
    membership.cluster_id = "sim".into();
    membership.generation = stead_types::Clock::wall_ms(spec.clock.as_ref());
    membership.gossip_listen = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), GOSSIP_PORT);
    membership.seeds = spec
        .members
        .iter()
        .filter(|m| **m != spec.id)
        .map(|m| addr_of(m, GOSSIP_PORT).to_string())
        .collect();
    membership.grpc_advertise = addr_of(&spec.id, GRPC_PORT).to_string();
    membership.http_advertise = membership.grpc_advertise.clone();
    let cluster = Cluster::start_on(
        node.clone(),
        ClusterConfig::new(membership),
        &SimGossip {
            mailbox: spec.mailbox.clone(),
        },
        Arc::new(SimDialer),
    )
    .await?;
    spec.routing
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(cluster.routing_counters());
    let state =
        stead_api::ApiState::clustered(node, stead_api::auth::AdminAuth::open(), Arc::new(cluster));
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", GRPC_PORT)).await?;
    stead_api::serve_grpc(state, None, incoming(listener), std::future::pending()).await?;
    Ok(())
}
