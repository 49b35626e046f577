//! The demo's second chapter: a 3-node local cluster (`stead cluster up`),
//! one deploy, commands through every node, SIGKILL of the node that owns a
//! chosen entity while a client keeps sending, the failover time, the
//! entity intact on a survivor, and the killed node back with its shards.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use super::step;

/// The local cluster's ports: `stead cluster up`'s defaults.
const GRPC_BASE: u16 = 7400;
const HTTP_BASE: u16 = 7480;
const POSTGRES_PORT: u16 = 7432;
const NODES: u16 = 3;
/// `stead cluster up` runs every node with the default shard count.
const SHARDS: u32 = stead_types::config::DEFAULT_SHARD_COUNT;

/// The `stead cluster up` process, interrupted (a graceful stop) on drop.
struct LocalCluster {
    child: Child,
    /// node name -> pid, as it printed them.
    pids: Vec<(String, u32)>,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn grpc(i: u16) -> String {
    format!("http://127.0.0.1:{}", GRPC_BASE + i)
}

fn http(i: u16) -> String {
    format!("http://127.0.0.1:{}", HTTP_BASE + i)
}

/// Runs a CLI command against node `i`, shown; fails unless it succeeds.
fn run(bin: &Path, node: u16, args: &[&str]) -> Result<String> {
    println!("  $ stead --addr {} {}", grpc(node), args.join(" "));
    let out = Command::new(bin)
        .arg("--addr")
        .arg(grpc(node))
        .args(args)
        .output()
        .context("running stead")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in stdout.lines() {
        println!("    {line}");
    }
    ensure!(
        out.status.success(),
        "`stead {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// A deposit over HTTP with an idempotency key; the balance when accepted.
fn deposit(node: u16, id: &str, key: &str) -> Option<u64> {
    let mut response = agent()
        .post(&format!("{}/v1/entities/account/{id}", http(node)))
        .header("idempotency-key", key)
        .send(r#"{"deposit":{"amount":1}}"#)
        .ok()?;
    if response.status().as_u16() != 200 {
        return None;
    }
    let body: Value = response.body_mut().read_json().ok()?;
    body["balance"].as_u64()
}

fn cluster_status(node: u16) -> Result<Value> {
    let mut response = agent()
        .get(&format!("{}/v1/cluster", http(node)))
        .call()
        .context("GET /v1/cluster")?;
    response.body_mut().read_json().context("cluster status")
}

/// How many shards `node_id` holds, as node `seen_by` sees it.
fn held_by(seen_by: u16, node_id: &str) -> Result<u64> {
    let status = cluster_status(seen_by)?;
    Ok(status["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["node_id"] == node_id))
        .and_then(|m| m["shards_held"].as_u64())
        .unwrap_or(0))
}

/// Whether node `i` sees every shard held by the node it is placed on.
fn settled(i: u16) -> bool {
    cluster_status(i).is_ok_and(|s| {
        s["shards"].as_array().is_some_and(|shards| {
            shards
                .iter()
                .all(|s| !s["holder"].is_null() && s["holder"] == s["placed"])
        })
    })
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Result<Duration> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > within {
            bail!("{what}: not within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(started.elapsed())
}

pub(crate) fn story(bin: &Path, data: &Path, first_step: u32) -> Result<()> {
    let account = super::guest_path("account")?;
    let mut n = first_step;
    let mut next = |text: &str| {
        step(n, text);
        n += 1;
    };

    next("a local cluster in one command: its own PostgreSQL and 3 nodes");
    println!(
        "  $ stead cluster up --nodes {NODES} --data-dir {}",
        data.display()
    );
    let mut child = Command::new(bin)
        .args(["cluster", "up", "--nodes", &NODES.to_string()])
        .arg("--data-dir")
        .arg(data)
        .env("STEAD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting stead cluster up")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut cluster = LocalCluster {
        child,
        pids: Vec::new(),
    };
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.context("reading stead cluster up")?;
        println!("    {line}");
        if let Some(name) = line.split_whitespace().find(|w| w.starts_with("node-"))
            && let Some(pid) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("pid="))
                .and_then(|p| p.parse().ok())
        {
            cluster.pids.push((name.to_owned(), pid));
        }
        if line.starts_with("try:") {
            break;
        }
    }
    ensure!(
        cluster.pids.len() == usize::from(NODES),
        "stead cluster up did not start {NODES} nodes (are ports {GRPC_BASE}.. or {POSTGRES_PORT} taken?)"
    );
    // Its later lines (a node's exit) go nowhere.
    std::thread::spawn(move || lines.for_each(drop));
    wait_for(
        "every node ready with its shards",
        Duration::from_secs(30),
        || {
            (0..NODES).all(|i| {
                agent()
                    .get(&format!("{}/readyz", http(i)))
                    .call()
                    .is_ok_and(|r| r.status().as_u16() == 200)
                    && settled(i)
            })
        },
    )?;
    run(bin, 0, &["cluster", "status"])?;

    next("deploy once (to node-0): every node serves the type");
    run(bin, 0, &["deploy", &account])?;

    next("commands through every node: each forwards to the entity's owner");
    let entity = "zoe";
    run(
        bin,
        1,
        &["send", "account", entity, r#"{"open":{"owner":"zoe"}}"#],
    )?;
    for i in 0..NODES {
        run(
            bin,
            i,
            &[
                "send",
                "account",
                entity,
                r#"{"deposit":{"amount":10}}"#,
                "--id",
                &format!("via-{i}"),
            ],
        )?;
    }
    let shard = stead_types::shard::shard_of("account", entity, SHARDS);
    let status = cluster_status(0)?;
    let owner = status["shards"][shard as usize]["holder"]
        .as_str()
        .context("zoe's shard has a holder")?
        .to_owned();
    let owner_index: u16 = owner
        .strip_prefix("node-")
        .and_then(|i| i.parse().ok())
        .context("a node name")?;
    let survivor = (owner_index + 1) % NODES;
    println!("    {entity} lives in shard {shard}, held by {owner}");

    next(&format!(
        "SIGKILL {owner} while a client keeps depositing to {entity} through node-{survivor}"
    ));
    let pid = cluster
        .pids
        .iter()
        .find(|(name, _)| *name == owner)
        .map(|(_, pid)| *pid)
        .context("the owner's pid")?;
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        let mut acked = 0u64;
        let mut failed = 0u64;
        let mut k = 0;
        while stop_rx.try_recv().is_err() {
            // One key per deposit, retried until accepted: none lost, none twice.
            let key = format!("load-{k}");
            loop {
                if deposit(survivor, entity, &key).is_some() {
                    acked += 1;
                    break;
                }
                failed += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            k += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        (acked, failed)
    });
    std::thread::sleep(Duration::from_millis(1500));
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .context("kill -KILL")?;
    ensure!(status.success(), "kill -KILL {pid} failed");
    println!("    kill -9 {pid} ({owner})");
    let failover = wait_for(
        &format!("{entity} served again after the kill"),
        Duration::from_secs(30),
        || {
            agent()
                .get(&format!("{}/v1/entities/account/{entity}", http(survivor)))
                .call()
                .is_ok_and(|r| r.status().as_u16() == 200)
        },
    )?;
    std::thread::sleep(Duration::from_millis(1000));
    let _ = stop_tx.send(());
    let (acked, failed) = client
        .join()
        .map_err(|_| anyhow::anyhow!("the client panicked"))?;
    println!(
        "    failover: {:.2} s from kill -9 to {entity} served again by a survivor",
        failover.as_secs_f64()
    );
    println!(
        "    the client: {acked} deposits acknowledged, {failed} attempts answered with an error and retried"
    );
    let view = run(bin, survivor, &["--json", "get", "account", entity])?;
    let balance = serde_json::from_str::<Value>(view.trim())
        .ok()
        .and_then(|v| v["balance"].as_u64())
        .context("a balance")?;
    ensure!(
        balance == 30 + acked,
        "{entity}'s balance is {balance}, expected 30 + {acked} acknowledged deposits"
    );
    println!("    {entity} intact: 3 x 10 + {acked} x 1 = {balance}");

    next(&format!(
        "restart {owner}: it rejoins and its shards flow back"
    ));
    let seeds: Vec<String> = (0..NODES)
        .map(|i| format!("127.0.0.1:{}", GRPC_BASE + i))
        .collect();
    let node_dir = data.join(&owner);
    let url = format!("postgres://stead@127.0.0.1:{POSTGRES_PORT}/stead");
    let grpc_addr = format!("127.0.0.1:{}", GRPC_BASE + owner_index);
    let http_addr = format!("127.0.0.1:{}", HTTP_BASE + owner_index);
    println!(
        "  $ stead up --grpc {grpc_addr} --http {http_addr} --data-dir {} --journal {url} --node-id {owner} --seeds {}",
        node_dir.display(),
        seeds.join(",")
    );
    let mut restarted = Command::new(bin)
        .args(["up", "--grpc", &grpc_addr, "--http", &http_addr])
        .arg("--data-dir")
        .arg(&node_dir)
        .args([
            "--journal",
            &url,
            "--node-id",
            &owner,
            "--seeds",
            &seeds.join(","),
        ])
        .env("STEAD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("restarting the node")?;
    let back = wait_for(
        &format!("{owner} holding shards again"),
        Duration::from_secs(30),
        || held_by(survivor, &owner).is_ok_and(|held| held > 0),
    );
    let settled = wait_for("the cluster settled", Duration::from_secs(30), || {
        settled(survivor)
    });
    let outcome = back.and_then(|back| {
        let settled = settled?;
        println!(
            "    {owner} holds {} shards again ({:.1} s to the first, {:.1} s to all)",
            held_by(survivor, &owner)?,
            back.as_secs_f64(),
            (back + settled).as_secs_f64()
        );
        run(bin, owner_index, &["get", "account", entity])?;
        run(bin, 0, &["cluster", "status"])
    });
    let _ = Command::new("kill")
        .args(["-TERM", &restarted.id().to_string()])
        .status();
    let _ = restarted.wait();
    outcome?;
    next("stop the cluster (Ctrl-C: each node leaves, releasing its shards)");
    drop(cluster);
    println!("    stopped");
    Ok(())
}
