//! Lease takeover on a shared journal: two `stead up` processes on one
//! PostgreSQL database, the holder of every shard SIGKILLed, and the time
//! from the kill to the first command the other node persists (its first
//! append under the claimed lease), measured by a client that retries every
//! 10 ms. Several rounds, the killed node restarted as the next standby.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use stead_api::proto::SendRequest;
use stead_api::proto::entities_client::EntitiesClient;

use super::{Figure, Latencies, ms, progress, start_node};

/// A `stead up` child on the shared journal.
struct Peer {
    child: Child,
    grpc: String,
}

impl Peer {
    fn start(stead: &Path, data: &Path, url: &str, id: &str, ttl: Duration) -> Result<Self> {
        let ttl_ms = format!("{}ms", ttl.as_millis());
        let renew_ms = format!("{}ms", (ttl / 4).as_millis());
        let flags = [
            "--shards",
            "64",
            "--journal",
            url,
            "--node-id",
            id,
            "--lease-ttl",
            &ttl_ms,
            "--lease-renew-interval",
            &renew_ms,
            "--data-dir",
        ];
        let args: Vec<&OsStr> = flags
            .iter()
            .map(OsStr::new)
            .chain([data.as_os_str()])
            .collect();
        let (child, grpc) = start_node(stead, &args)?;
        Ok(Self { child, grpc })
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn send(grpc: &str, entity_id: &str, command: &str, command_id: &str) -> Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(grpc.to_owned())?
        .connect_timeout(Duration::from_millis(200))
        .timeout(Duration::from_secs(2))
        .connect()
        .await?;
    EntitiesClient::new(channel)
        .send(SendRequest {
            entity_type: "account".into(),
            entity_id: entity_id.into(),
            command_json: command.into(),
            command_id: command_id.into(),
        })
        .await?;
    Ok(())
}

/// Kill-to-first-append times over `rounds` takeovers with lease `ttl`.
pub async fn takeover(
    work_dir: &Path,
    component: &Path,
    url: &str,
    ttl: Duration,
    rounds: usize,
) -> Result<Vec<Figure>> {
    let stead: PathBuf = std::env::current_exe().context("the stead binary")?;
    let dir = tempfile::tempdir_in(work_dir).context("a work directory")?;
    let data = |name: &str| dir.path().join(name);
    let mut holder = Peer::start(&stead, &data("a"), url, "takeover-a", ttl)?;
    let deployed = Command::new(&stead)
        .args(["--addr", &holder.grpc, "deploy"])
        .arg(component)
        .stdout(Stdio::null())
        .status()
        .context("deploying")?;
    if !deployed.success() {
        bail!("deploying {} failed", component.display());
    }
    send(
        &holder.grpc,
        "takeover",
        r#"{"open":{"owner":"bench"}}"#,
        "open",
    )
    .await?;
    let mut standby = Peer::start(&stead, &data("b"), url, "takeover-b", ttl)?;
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        // Let the standby load the deploy and the holder renew once more.
        tokio::time::sleep(ttl / 2).await;
        progress(&format!("takeover {}: SIGKILL of the holder", round + 1));
        holder.kill();
        let killed = Instant::now();
        let command_id = format!("deposit-{round}");
        loop {
            let ok = send(
                &standby.grpc,
                "takeover",
                r#"{"deposit":{"amount":1}}"#,
                &command_id,
            )
            .await;
            if ok.is_ok() {
                break;
            }
            if killed.elapsed() > ttl * 10 {
                bail!("the standby did not take over within {:?}", ttl * 10);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = killed.elapsed();
        progress(&format!(
            "  first append on the new holder {took:?} after the kill"
        ));
        samples.push(took);
        let name = if round % 2 == 0 { "a" } else { "b" };
        let restarted = Peer::start(&stead, &data(name), url, &format!("takeover-{name}"), ttl)?;
        holder = std::mem::replace(&mut standby, restarted);
    }
    drop((holder, standby));
    let lat = Latencies::of(samples);
    let budget = ttl + Duration::from_millis(500);
    Ok(vec![
        Figure::new("takeover", "kill to first append, worst", ms(lat.max), "ms")
            .against("lease ttl", ms(ttl), "ms")
            .target(
                &format!("<= ttl + 0.5 s ({} ms)", budget.as_millis()),
                lat.max <= budget,
            ),
        Figure::new(
            "takeover",
            "kill to first append, median",
            ms(lat.p50),
            "ms",
        ),
        Figure::new("takeover", "rounds", lat.count as f64, "kills"),
    ])
}
