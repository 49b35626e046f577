//! `stead cluster up`: a local cluster in one command: a PostgreSQL server
//! of its own under the data directory (the system's server binaries) and N
//! `stead up` processes on consecutive ports (node-i, from 0: gRPC 7400+i,
//! HTTP 7480+i, gossip on UDP 7400+i; node-0 is where client commands go by
//! default), until Ctrl-C or SIGTERM, which stops the
//! nodes gracefully (each leaves the cluster, releasing its shards), then
//! the database. `stead cluster status` is in [`super::client`].
//!
//! Invariant: nothing is started unless every port is free, and whatever
//! was started is stopped when a later step fails.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The journal database of a local cluster.
const DATABASE: &str = "stead";

#[derive(clap::Args)]
pub(crate) struct ClusterUpArgs {
    /// Number of nodes (1 to 20).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
    nodes: u16,
    /// Where the database and each node's data live (`postgres/`,
    /// `node-<i>/`, `node-<i>.log`); kept between runs.
    #[arg(long, default_value = ".stead-cluster")]
    data_dir: PathBuf,
    /// The loopback port of the cluster's PostgreSQL.
    #[arg(long, default_value_t = 7432)]
    postgres_port: u16,
    /// gRPC port of node-0 (node-i listens on this + i).
    #[arg(long, default_value_t = 7400)]
    grpc_base: u16,
    /// HTTP port of node-0 (node-i listens on this + i).
    #[arg(long, default_value_t = 7480)]
    http_base: u16,
    /// More `stead up` flags for every node, after `--`.
    #[arg(last = true)]
    node_args: Vec<String>,
}

/// A started node process.
struct NodeChild {
    name: String,
    child: Child,
}

pub(crate) fn cluster_up(args: &ClusterUpArgs) -> Result<()> {
    let nodes = usize::from(args.nodes);
    let ports: Vec<(u16, u16)> = (0..args.nodes)
        .map(|i| {
            let grpc = args.grpc_base.checked_add(i);
            let http = args.http_base.checked_add(i);
            grpc.zip(http).context("ports beyond 65535")
        })
        .collect::<Result<_>>()?;
    // Refused before anything starts.
    for (port, what) in ports
        .iter()
        .flat_map(|(g, h)| [(*g, "gRPC"), (*h, "HTTP")])
        .chain([(args.postgres_port, "PostgreSQL")])
    {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).with_context(|| {
            format!("port {port} ({what}) is taken: is a cluster already running? choose other ports with --grpc-base, --http-base or --postgres-port")
        })?;
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = args
        .data_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;

    eprintln!(
        "starting PostgreSQL on 127.0.0.1:{} ...",
        args.postgres_port
    );
    let postgres =
        stead_postgres_testing::Server::open_kept(&data_dir.join("postgres"), args.postgres_port)
            .context("starting the cluster's PostgreSQL")?;
    postgres
        .ensure_database(DATABASE)
        .context("creating the journal database")?;
    let url = postgres.database_url(DATABASE);

    let seeds: Vec<String> = ports
        .iter()
        .map(|(g, _)| format!("127.0.0.1:{g}"))
        .collect();
    let stead = std::env::current_exe().context("finding the stead binary")?;
    let mut children: Vec<NodeChild> = Vec::with_capacity(nodes);
    let started = (|| -> Result<Vec<(String, String, String, u32)>> {
        let mut lines = Vec::with_capacity(nodes);
        for (i, (grpc, http)) in ports.iter().enumerate() {
            let name = format!("node-{i}");
            let (child, ready) = start_node(
                &stead,
                &data_dir,
                &name,
                *grpc,
                *http,
                &url,
                &seeds,
                &args.node_args,
            )?;
            let pid = child.id();
            children.push(NodeChild {
                name: name.clone(),
                child,
            });
            lines.push((name, ready.0, ready.1, pid));
        }
        Ok(lines)
    })();
    let started = match started {
        Ok(started) => started,
        Err(e) => {
            stop_nodes(&mut children);
            return Err(e);
        }
    };
    println!("stead cluster: {nodes} nodes on PostgreSQL at {}", url);
    for (name, grpc, http, pid) in &started {
        println!(
            "  {name}  grpc={grpc}  http={http}  pid={pid}  log={}",
            data_dir.join(format!("{name}.log")).display()
        );
    }
    println!("try: stead cluster status    (Ctrl-C stops the cluster)");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut watch = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                () = super::up::shutdown_signal() => break,
                _ = watch.tick() => {
                    for node in &mut children {
                        if let Ok(Some(status)) = node.child.try_wait() {
                            eprintln!("{} exited ({status}); see its log", node.name);
                        }
                    }
                    children.retain_mut(|n| !matches!(n.child.try_wait(), Ok(Some(_))));
                }
            }
        }
    });
    eprintln!("stopping the nodes (each leaves the cluster) ...");
    stop_nodes(&mut children);
    drop(postgres);
    eprintln!("stopped; the data stays in {}", data_dir.display());
    Ok(())
}

/// Starts one `stead up` and waits for its ready line; its log goes to
/// `<data>/<name>.log`. Returns the child and its gRPC and HTTP addresses.
#[allow(clippy::too_many_arguments)] // one call site, every value distinct
fn start_node(
    stead: &Path,
    data_dir: &Path,
    name: &str,
    grpc: u16,
    http: u16,
    url: &str,
    seeds: &[String],
    extra: &[String],
) -> Result<(Child, (String, String))> {
    let log_path = data_dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let grpc_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, grpc));
    let http_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, http));
    let mut child = Command::new(stead)
        .arg("up")
        .args([
            "--grpc",
            &grpc_addr.to_string(),
            "--http",
            &http_addr.to_string(),
        ])
        .arg("--data-dir")
        .arg(data_dir.join(name))
        .args(["--journal", url, "--node-id", name])
        .args(["--seeds", &seeds.join(",")])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    if read.is_err() || !line.starts_with("stead ready") {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "{name} did not start; its log {} says why",
            log_path.display()
        );
    }
    Ok((child, (grpc_addr.to_string(), http_addr.to_string())))
}

/// SIGTERM to every node (each leaves gracefully), then waits; SIGKILL
/// after 20 s.
fn stop_nodes(children: &mut Vec<NodeChild>) {
    for node in children.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &node.child.id().to_string()])
            .status();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for node in children.iter_mut() {
        loop {
            match node.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if std::time::Instant::now() > deadline => {
                    eprintln!("{} did not stop within 20 s: killed", node.name);
                    let _ = node.child.kill();
                    let _ = node.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    children.clear();
}
