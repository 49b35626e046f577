//! `stead bench`: the benchmark scenarios' flags, dispatched to
//! [`crate::bench`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::parse::nonzero_usize;

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    scenario: BenchScenario,
    /// Entity type of the workload.
    #[arg(long = "type", global = true, default_value = "account")]
    entity_type: String,
    /// Sent once to each entity before measuring.
    #[arg(long, global = true, default_value = r#"{"open":{"owner":"bench"}}"#)]
    setup: String,
    /// Sent by every measured request.
    #[arg(long, global = true, default_value = r#"{"deposit":{"amount":1}}"#)]
    command: String,
    /// Seconds each network measurement runs.
    #[arg(long, global = true, default_value_t = 20)]
    duration: u64,
    /// Directory on the disk to measure (flush yardstick, in-process nodes).
    #[arg(long, global = true, default_value_os_t = std::env::temp_dir())]
    work_dir: PathBuf,
    /// The node under test runs on this PostgreSQL journal: figures are
    /// named `http-postgres`/`hot-postgres`, against its targets, and the
    /// hot entity is compared with one commit to this database.
    #[arg(long, global = true, value_name = "URL", hide_env_values = true)]
    postgres: Option<String>,
}

#[derive(Subcommand)]
enum BenchScenario {
    /// HTTP ingress with wrk, beside the no-op route (a running node).
    Http {
        /// HTTP address of the node.
        #[arg(long, default_value = "127.0.0.1:7480")]
        http: String,
        #[arg(long, default_value_t = 10_000)]
        entities: usize,
        #[arg(long, default_value_t = 64)]
        connections: usize,
    },
    /// gRPC with many requests in flight over a few connections (a running node).
    Grpc {
        #[arg(long, default_value_t = 10_000)]
        entities: usize,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// One entity, one connection, sequential; beside one durable flush
    /// (or one PostgreSQL commit, with --postgres).
    Hot,
    /// Two nodes on the --postgres journal: the holder SIGKILLed, the time
    /// to the first command persisted by the other.
    Takeover {
        #[arg(long)]
        component: PathBuf,
        /// Lease ttl of both nodes, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        ttl_ms: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// A cluster on the --postgres journal: the latency of a forwarded
    /// command against one sent to the entity's holder, then rounds of
    /// SIGKILL of an entity's holder and the time to the first command
    /// served for it through a survivor.
    Failover {
        #[arg(long)]
        component: PathBuf,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Sequential commands timed at the holder, and forwarded.
        #[arg(long, default_value_t = 2000)]
        commands: usize,
    },
    /// In process: commands/s through shards, wasm and journal.
    Engine {
        #[arg(long)]
        component: PathBuf,
        #[arg(long, default_value_t = 200_000)]
        commands: usize,
        #[arg(long, default_value_t = 10_000)]
        entities: usize,
        /// Shard worker threads of the in-process node (default: one per core,
        /// as `stead up`).
        #[arg(long, value_parser = nonzero_usize)]
        workers: Option<std::num::NonZeroUsize>,
    },
    /// In process: RSS per active entity, and after passivation.
    Memory {
        #[arg(long)]
        component: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        entities: usize,
    },
    /// In process: sends delivered/s, a saga's latency, timer lateness with
    /// many timers pending and their memory (the `account` and `transfer`
    /// components).
    Messaging {
        #[arg(long)]
        account: PathBuf,
        #[arg(long)]
        transfer: PathBuf,
        #[arg(long, default_value_t = 20_000)]
        transfers: usize,
        #[arg(long, default_value_t = 100_000)]
        timers: usize,
    },
    /// In process: events/s to one subscriber catching up and following
    /// while the node serves commands; the delay from command to subscriber.
    Subscribe {
        #[arg(long)]
        component: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        events: usize,
    },
    /// In process: activation of a long history; restart over many entities.
    Recovery {
        #[arg(long)]
        component: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        events: usize,
        #[arg(long, default_value_t = 100_000)]
        entities: usize,
        #[arg(long, default_value_t = 1_000)]
        sample: usize,
    },
}

pub(crate) fn bench(args: BenchArgs, addr: &str, json: bool) -> Result<()> {
    use crate::bench::{inprocess, network};
    let duration = std::time::Duration::from_secs(args.duration.max(1));
    let workload = |entities| network::Workload {
        entity_type: args.entity_type.clone(),
        entities,
        setup: (!args.setup.is_empty()).then(|| args.setup.clone()),
        command: args.command.clone(),
    };
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
    };
    let figures = match args.scenario {
        BenchScenario::Http {
            http,
            entities,
            connections,
        } => runtime()?.block_on(network::http(
            addr,
            &http,
            &workload(entities),
            connections,
            duration,
            args.postgres.as_deref(),
        ))?,
        BenchScenario::Grpc {
            entities,
            connections,
            concurrency,
        } => runtime()?.block_on(network::grpc(
            addr,
            &workload(entities),
            connections,
            concurrency,
            duration,
        ))?,
        BenchScenario::Hot => runtime()?.block_on(network::hot(
            addr,
            &workload(1),
            duration,
            &args.work_dir,
            args.postgres.as_deref(),
        ))?,
        BenchScenario::Takeover {
            component,
            ttl_ms,
            rounds,
        } => {
            let url = args
                .postgres
                .as_deref()
                .context("the takeover scenario needs --postgres URL")?;
            runtime()?.block_on(crate::bench::takeover::takeover(
                &args.work_dir,
                &component,
                url,
                std::time::Duration::from_millis(ttl_ms.max(10)),
                rounds.max(1),
            ))?
        }
        BenchScenario::Failover {
            component,
            nodes,
            rounds,
            commands,
        } => {
            let url = args
                .postgres
                .as_deref()
                .context("the failover scenario needs --postgres URL")?;
            runtime()?.block_on(crate::bench::failover::failover(
                &args.work_dir,
                &component,
                url,
                nodes.max(2),
                rounds.max(1),
                commands.max(2),
                duration,
            ))?
        }
        BenchScenario::Engine {
            component,
            commands,
            entities,
            workers,
        } => inprocess::engine(
            &args.work_dir,
            &component,
            commands,
            entities,
            workers.map(std::num::NonZeroUsize::get),
            duration,
        )?,
        BenchScenario::Memory {
            component,
            entities,
        } => inprocess::memory(&args.work_dir, &component, entities)?,
        BenchScenario::Recovery {
            component,
            events,
            entities,
            sample,
        } => inprocess::recovery(&args.work_dir, &component, events, entities, sample)?,
        BenchScenario::Messaging {
            account,
            transfer,
            transfers,
            timers,
        } => crate::bench::messaging::messaging(
            &args.work_dir,
            &account,
            &transfer,
            transfers.max(1),
            timers.max(1),
        )?,
        BenchScenario::Subscribe { component, events } => {
            crate::bench::subscribe::subscribe(&args.work_dir, &component, events.max(1))?
        }
    };
    if json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        for figure in &figures {
            println!("{}", figure.line());
        }
    }
    Ok(())
}
