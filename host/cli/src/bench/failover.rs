//! Cluster failover and forwarding: `nodes` `stead up --seeds` processes on
//! one PostgreSQL database with the cluster's defaults (lease ttl 2 s,
//! gossip every 200 ms). Each round opens a fresh entity, SIGKILLs the node
//! holding its shard, and times the kill to the first command served for
//! that entity through a survivor (a client retrying every 10 ms); the node
//! is restarted under its id and the cluster settles before the next round.
//! After the rounds: a rolling restart of every node (SIGTERM, start, settle)
//! and the shards a new node takes when it joins and gives back
//! when it leaves. Before the rounds: the throughput of gRPC clients (64 in flight) against
//! node 0 alone, then spread over every node once all have joined (all on
//! one machine's cores: the cost of forwarding and coordination, not
//! scale-out), and the latency of commands sent to an entity's holder and
//! of the same commands sent through another node (forwarded).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use stead_api::proto::admin_client::AdminClient;
use stead_api::proto::entities_client::EntitiesClient;
use stead_api::proto::{ClusterStatusRequest, SendRequest};

use super::{Figure, Latencies, ms, progress, start_node};

/// The shard count of the bench's nodes.
const SHARDS: u32 = 64;
/// The failover target of the cluster issue.
const TARGET: Duration = Duration::from_secs(3);

/// One member's fixed identity and its process while it runs.
struct Member {
    id: String,
    gossip: u16,
    data: PathBuf,
    child: Option<Child>,
    grpc: String,
}

impl Member {
    fn start(&mut self, stead: &Path, url: &str, seeds: &str) -> Result<()> {
        let shards = SHARDS.to_string();
        let gossip = format!("127.0.0.1:{}", self.gossip);
        let flags = [
            "--shards",
            &shards,
            "--journal",
            url,
            "--node-id",
            &self.id,
            "--seeds",
            seeds,
            "--gossip",
            &gossip,
            "--data-dir",
        ];
        let args: Vec<&OsStr> = flags
            .iter()
            .map(OsStr::new)
            .chain([self.data.as_os_str()])
            .collect();
        let (child, grpc) =
            start_node(stead, &args).with_context(|| format!("starting {}", self.id))?;
        self.grpc = grpc;
        self.child = Some(child);
        Ok(())
    }

    /// SIGTERM (a graceful leave) and the exit.
    fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .context("kill -TERM")?;
            if !status.success() {
                bail!("kill -TERM {} failed", self.id);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if child.try_wait().context("waiting for the node")?.is_some() {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("{} did not stop within 30 s of SIGTERM", self.id);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn connect(grpc: &str) -> Result<tonic::transport::Channel> {
    Ok(tonic::transport::Endpoint::from_shared(grpc.to_owned())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_millis(200))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?)
}

async fn send(
    client: &mut EntitiesClient<tonic::transport::Channel>,
    entity_id: &str,
    command: &str,
    command_id: &str,
) -> Result<()> {
    client
        .send(SendRequest {
            entity_type: "account".into(),
            entity_id: entity_id.into(),
            command_json: command.into(),
            command_id: command_id.into(),
        })
        .await?;
    Ok(())
}

/// Whether every running member sees every shard held where it is placed
/// (and `expected` ready members).
async fn settled(members: &[Member], expected: usize) -> bool {
    for member in members.iter().filter(|m| m.child.is_some()) {
        let Ok(channel) = connect(&member.grpc).await else {
            return false;
        };
        let Ok(status) = AdminClient::new(channel)
            .cluster_status(ClusterStatusRequest {})
            .await
        else {
            return false;
        };
        let status = status.into_inner();
        let ready = status.members.iter().filter(|m| m.state == "ready").count();
        if ready != expected
            || status
                .shards
                .iter()
                .any(|s| s.holder.is_empty() || s.holder != s.placed)
        {
            return false;
        }
    }
    true
}

async fn wait_settled(members: &[Member], expected: usize) -> Result<Duration> {
    let started = Instant::now();
    while !settled(members, expected).await {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the cluster did not settle within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(started.elapsed())
}

/// The holder of `entity`'s shard, as `member` sees it.
async fn holder(member: &Member, entity: &str) -> Result<String> {
    let shard = stead_types::shard::shard_of("account", entity, SHARDS);
    let status = AdminClient::new(connect(&member.grpc).await?)
        .cluster_status(ClusterStatusRequest {})
        .await?
        .into_inner();
    status
        .shards
        .iter()
        .find(|s| s.shard == shard)
        .map(|s| s.holder.clone())
        .filter(|h| !h.is_empty())
        .with_context(|| format!("shard {shard} has no holder"))
}

fn free_udp_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Forwarded latency over `commands` sequential commands, then `rounds`
/// failovers.
pub async fn failover(
    work_dir: &Path,
    component: &Path,
    url: &str,
    nodes: usize,
    rounds: usize,
    commands: usize,
    duration: Duration,
) -> Result<Vec<Figure>> {
    let stead: PathBuf = std::env::current_exe().context("the stead binary")?;
    let dir = tempfile::tempdir_in(work_dir).context("a work directory")?;
    let mut members = Vec::with_capacity(nodes);
    for i in 0..nodes.max(2) {
        members.push(Member {
            id: format!("bench-{i}"),
            gossip: free_udp_port()?,
            data: dir.path().join(format!("n{i}")),
            child: None,
            grpc: String::new(),
        });
    }
    let seeds: Vec<String> = members
        .iter()
        .map(|m| format!("127.0.0.1:{}", m.gossip))
        .collect();
    let seeds = seeds.join(",");
    // One node first: the yardstick of the cluster's throughput.
    members[0].start(&stead, url, &seeds)?;
    wait_settled(&members, 1).await?;
    let deployed = Command::new(&stead)
        .args(["--addr", &members[0].grpc, "deploy"])
        .arg(component)
        .stdout(Stdio::null())
        .status()
        .context("deploying")?;
    if !deployed.success() {
        bail!("deploying {} failed", component.display());
    }
    let workload = super::network::Workload {
        entity_type: "account".into(),
        entities: 1000,
        setup: Some(r#"{"open":{"owner":"bench"}}"#.into()),
        command: r#"{"deposit":{"amount":1}}"#.into(),
    };
    let alone =
        super::network::grpc_over(&[members[0].grpc.clone()], &workload, 4, 64, duration, None)
            .await?;
    for member in members.iter_mut().skip(1) {
        member.start(&stead, url, &seeds)?;
    }
    let count = members.len();
    wait_settled(&members, count).await?;
    let all: Vec<String> = members.iter().map(|m| m.grpc.clone()).collect();
    let together = super::network::grpc_over(&all, &workload, 4, 64, duration, None).await?;
    // The same, each client sending only to the entities its node holds:
    // the cluster without forwarding.
    let status = AdminClient::new(connect(&members[0].grpc).await?)
        .cluster_status(ClusterStatusRequest {})
        .await?
        .into_inner();
    let mut held: Vec<Vec<usize>> = vec![Vec::new(); count];
    for id in 0..workload.entities {
        let shard = stead_types::shard::shard_of("account", &format!("bench-{id}"), SHARDS);
        let holder = status
            .shards
            .iter()
            .find(|s| s.shard == shard)
            .map(|s| s.holder.as_str())
            .unwrap_or_default();
        if let Some(node) = members.iter().position(|m| m.id == holder) {
            held[node].push(id);
        }
    }
    let unforwarded =
        super::network::grpc_over(&all, &workload, 4, 64, duration, Some(&held)).await?;
    let figure = |figures: &[Figure], name: &str| {
        figures
            .iter()
            .find(|f| f.name == name)
            .map_or(0.0, |f| f.value)
    };

    // Local against forwarded: one entity, sequential commands sent to its
    // holder, then through another node.
    let entity = "forwarded";
    let mut first = EntitiesClient::new(connect(&members[0].grpc).await?);
    send(&mut first, entity, r#"{"open":{"owner":"bench"}}"#, "open").await?;
    let owner = holder(&members[0], entity).await?;
    let local = members
        .iter()
        .position(|m| m.id == owner)
        .context("the holder")?;
    let other = (local + 1) % count;
    let mut timed = [Vec::with_capacity(commands), Vec::with_capacity(commands)];
    let mut clients = [
        EntitiesClient::new(connect(&members[local].grpc).await?),
        EntitiesClient::new(connect(&members[other].grpc).await?),
    ];
    // Interleaved, so both see the same entity, database and machine state.
    for i in 0..commands {
        for (which, client) in clients.iter_mut().enumerate() {
            let started = Instant::now();
            send(client, entity, r#"{"deposit":{"amount":1}}"#, "").await?;
            // The first command of each sets up the connections.
            if i > 0 {
                timed[which].push(started.elapsed());
            }
        }
    }
    let [at_holder, forwarded] = timed.map(Latencies::of);
    progress(&format!(
        "sequential commands: p50 {:.2} ms at the holder, {:.2} ms forwarded",
        ms(at_holder.p50),
        ms(forwarded.p50)
    ));

    let mut failovers = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let entity = format!("failover-{round}");
        // Node 0 may have been restarted (on a new port) by an earlier round.
        let mut first = EntitiesClient::new(connect(&members[0].grpc).await?);
        send(&mut first, &entity, r#"{"open":{"owner":"bench"}}"#, "open").await?;
        let owner = holder(&members[0], &entity).await?;
        let victim = members
            .iter()
            .position(|m| m.id == owner)
            .context("the holder")?;
        let survivor = (victim + 1) % count;
        let mut client = EntitiesClient::new(connect(&members[survivor].grpc).await?);
        // The victim renews its leases every 500 ms: kill at a random point.
        tokio::time::sleep(Duration::from_millis(300 + 97 * (round as u64 % 5))).await;
        members[victim].kill();
        let killed = Instant::now();
        loop {
            let outcome = send(
                &mut client,
                &entity,
                r#"{"deposit":{"amount":1}}"#,
                &format!("after-kill-{round}"),
            )
            .await;
            if outcome.is_ok() {
                break;
            }
            if killed.elapsed() > Duration::from_secs(30) {
                bail!("{entity} not served again within 30 s of the kill");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = killed.elapsed();
        progress(&format!(
            "failover {}: {owner} killed, {entity} served again after {took:?}",
            round + 1
        ));
        failovers.push(took);
        members[victim].start(&stead, url, &seeds)?;
        wait_settled(&members, count).await?;
    }
    // A rolling restart: each node in turn leaves (SIGTERM), starts again
    // and the cluster settles.
    progress("rolling restart of every node");
    let rolling_started = Instant::now();
    for i in 0..count {
        members[i].stop()?;
        members[i].start(&stead, url, &seeds)?;
        wait_settled(&members, count).await?;
    }
    let rolling = rolling_started.elapsed();
    // A join and a leave: the shards the newcomer takes, then gives back.
    progress("a node joins, then leaves");
    let mut newcomer = Member {
        id: format!("bench-{count}"),
        gossip: free_udp_port()?,
        data: dir.path().join(format!("n{count}")),
        child: None,
        grpc: String::new(),
    };
    // Not in the others' seeds: it finds them through its own.
    newcomer.start(&stead, url, &seeds)?;
    members.push(newcomer);
    let join_settled = wait_settled(&members, count + 1).await?;
    let status = AdminClient::new(connect(&members[0].grpc).await?)
        .cluster_status(ClusterStatusRequest {})
        .await?
        .into_inner();
    let moved = status
        .members
        .iter()
        .find(|m| m.node_id == members[count].id)
        .map_or(0, |m| m.shards_held);
    let leaving = Instant::now();
    members[count].stop()?;
    wait_settled(&members, count).await?;
    let leave_settled = leaving.elapsed();
    drop(members);
    let lat = Latencies::of(failovers);
    let scenario = "failover";
    Ok(vec![
        Figure::new(
            scenario,
            "kill -9 to first command served, worst",
            ms(lat.max),
            "ms",
        )
        .target(&format!("< {} s", TARGET.as_secs()), lat.max < TARGET),
        Figure::new(
            scenario,
            "kill -9 to first command served, median",
            ms(lat.p50),
            "ms",
        ),
        Figure::new(scenario, "rounds", lat.count as f64, "kills"),
        Figure::new(
            scenario,
            &format!("{count} nodes, persisted commands/s (clients on every node)"),
            figure(&together, "persisted commands/s"),
            "req/s",
        )
        .against("1 node", figure(&alone, "persisted commands/s"), "req/s"),
        Figure::new(
            scenario,
            &format!(
                "{count} nodes, persisted commands/s, each client to the holders (no forwarding)"
            ),
            figure(&unforwarded, "persisted commands/s"),
            "req/s",
        )
        .against("1 node", figure(&alone, "persisted commands/s"), "req/s"),
        Figure::new(
            scenario,
            &format!("{count} nodes, p99"),
            figure(&together, "p99"),
            "ms",
        )
        .against("1 node", figure(&alone, "p99"), "ms"),
        Figure::new(
            scenario,
            &format!("rolling restart of {count} nodes (idle)"),
            ms(rolling),
            "ms",
        ),
        Figure::new(
            scenario,
            "shards moved by a join (and back by its leave)",
            f64::from(moved),
            "shards",
        )
        .against(
            "shards / (nodes + 1)",
            f64::from(SHARDS) / (count as f64 + 1.0),
            "shards",
        ),
        Figure::new(scenario, "join to settled", ms(join_settled), "ms"),
        Figure::new(
            scenario,
            "leave (SIGTERM) to settled",
            ms(leave_settled),
            "ms",
        ),
        Figure::new(scenario, "forwarded command, p50", ms(forwarded.p50), "ms").against(
            "at the holder",
            ms(at_holder.p50),
            "ms",
        ),
        Figure::new(scenario, "forwarded command, p99", ms(forwarded.p99), "ms").against(
            "at the holder",
            ms(at_holder.p99),
            "ms",
        ),
    ])
}
