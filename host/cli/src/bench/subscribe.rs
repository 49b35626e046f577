//! Subscription figures, with the node in this process on the embedded
//! journal (real `fdatasync`) and the real `account` component:
//!
//! - **catch-up**: events/s one subscriber reads of a history already
//!   written (from the start, nothing else running);
//! - **live**: events/s one subscriber receives while the node serves
//!   commands as fast as it takes them (the commands/s beside it), and the
//!   delay from an event's command to the subscriber (p50/p99: its
//!   `timestamp_ms` to when the subscriber had it, on the same clock).
//!
//! Nothing here asserts a timing; the figures go to `BENCHMARKS.md`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::inprocess::{drive_with_ids, node};
use super::{Figure, Latencies, ms, progress};
use stead_node::Node;

/// Accounts the deposits go to.
const ACCOUNTS: usize = 1_000;

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
    )
    .unwrap_or(u64::MAX)
}

/// `n` deposits spread over the accounts, with ids from `prefix`.
fn deposits(node: &Node, prefix: &str, n: usize) -> Result<Duration> {
    const DEPOSIT: &str = r#"{"deposit":{"amount":1}}"#;
    let prefix = prefix.to_owned();
    drive_with_ids(node, "account", n, move |i| {
        (
            format!("a{}", i % ACCOUNTS),
            DEPOSIT,
            Some(format!("{prefix}{i}")),
        )
    })
}

pub fn subscribe(work_dir: &Path, account: &Path, events: usize) -> Result<Vec<Figure>> {
    let (_dir, node, _) = node(work_dir, account, |_| {})?;
    let node = Arc::new(node);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a runtime for the subscriber")?;
    let mut figures = Vec::new();

    progress(&format!(
        "{ACCOUNTS} accounts and {events} deposits of history"
    ));
    for i in 0..ACCOUNTS {
        node.send_blocking(
            "account",
            &format!("a{i}"),
            br#"{"open":{"owner":"bench"}}"#.to_vec(),
            None,
        )?;
    }
    deposits(&node, "h", events)?;
    let history = ACCOUNTS + events;

    progress("catch-up: one subscriber reads the history");
    let mut sub = node.subscribe("account", None)?;
    let started = Instant::now();
    runtime.block_on(async {
        for _ in 0..history {
            sub.next().await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let catch_up = history as f64 / started.elapsed().as_secs_f64();
    figures.push(Figure::new(
        "subscribe",
        "catch-up: events/s to one subscriber (history, nothing else running)",
        catch_up,
        "events/s",
    ));

    progress(&format!(
        "live: {events} deposits while the subscriber follows"
    ));
    let writer = {
        let node = node.clone();
        std::thread::spawn(move || deposits(&node, "l", events))
    };
    let started = Instant::now();
    let delays = runtime.block_on(async {
        let mut delays = Vec::with_capacity(events);
        for _ in 0..events {
            let event = tokio::time::timeout(Duration::from_secs(120), sub.next())
                .await
                .context("the subscriber got no event for 120 s")??;
            delays.push(Duration::from_millis(
                now_ms().saturating_sub(event.timestamp_ms),
            ));
        }
        Ok::<_, anyhow::Error>(delays)
    })?;
    let followed = started.elapsed();
    let written = match writer.join() {
        Ok(result) => result?,
        Err(_) => bail!("the writer panicked"),
    };
    figures.push(
        Figure::new(
            "subscribe",
            "live: events/s to one subscriber while the node serves commands",
            events as f64 / followed.as_secs_f64(),
            "events/s",
        )
        .against(
            "commands/s served meanwhile",
            events as f64 / written.as_secs_f64(),
            "commands/s",
        ),
    );
    let l = Latencies::of(delays);
    figures.push(Figure::new(
        "subscribe",
        "live: command to subscriber p50 (ms clock)",
        ms(l.p50),
        "ms",
    ));
    figures.push(Figure::new(
        "subscribe",
        "live: command to subscriber p99",
        ms(l.p99),
        "ms",
    ));
    Ok(figures)
}
