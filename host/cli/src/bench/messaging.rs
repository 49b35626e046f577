//! Messaging figures, with the node in this process on the embedded journal
//! (real `fdatasync`) and the real `account` and `transfer` components:
//!
//! - **sends delivered per second**: transfers between accounts, each two
//!   sends (the debit, the credit) and their two answers back to the
//!   transfer, started as fast as the node takes them; measured from the
//!   first start to the last answer, when nothing is pending any more;
//! - **latency** of one transfer at a time, from its start's
//!   acknowledgement to its completion (two sends and two answers, each a
//!   durable append);
//! - **timer lateness** with many timers pending: transfers scheduled over
//!   a few seconds, each firing's lateness read from the transfer (`began_at`
//!   minus its time), and the memory the pending timers take.
//!
//! Nothing here asserts a timing; the figures go to `BENCHMARKS.md`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::inprocess::{drive_with_ids, node};
use super::{Figure, Latencies, ms, progress, rss_bytes};
use stead_node::Node;

/// Accounts the transfers move money between.
const ACCOUNTS: usize = 100;

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
    )
    .unwrap_or(u64::MAX)
}

fn view(node: &Node, entity_type: &str, id: &str) -> Result<Value> {
    let bytes = node.view_blocking(entity_type, id)?;
    serde_json::from_slice(&bytes).context("a view that is not JSON")
}

/// Waits until the courier has nothing pending and `done` holds.
fn settle(node: &Node, within: Duration, done: impl Fn(&Node) -> bool) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let stats = node.messaging_stats();
        if stats.pending_sends == 0 && stats.pending_timers == 0 && done(node) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            bail!("messages still pending after {within:?}: {stats:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn messaging(
    work_dir: &Path,
    account: &Path,
    transfer: &Path,
    transfers: usize,
    timers: usize,
) -> Result<Vec<Figure>> {
    let (_dir, node, _) = node(work_dir, account, |_| {})?;
    let bytes =
        std::fs::read(transfer).with_context(|| format!("reading {}", transfer.display()))?;
    node.deploy(&bytes)?;
    let mut figures = Vec::new();

    progress(&format!("opening {ACCOUNTS} accounts"));
    let open: Vec<(String, String)> = (0..ACCOUNTS)
        .flat_map(|i| {
            [
                r#"{"open":{"owner":"bench"}}"#.to_owned(),
                r#"{"deposit":{"amount":1000000000000}}"#.to_owned(),
            ]
            .into_iter()
            .map(move |c| (format!("a{i}"), c))
        })
        .collect();
    for (id, command) in &open {
        node.send_blocking("account", id, command.as_bytes().to_vec(), None)?;
    }

    // Throughput: every transfer's start queued at once, then drained.
    progress(&format!("{transfers} transfers (2 sends + 2 answers each)"));
    let commands: Vec<String> = (0..transfers)
        .map(|i| {
            let from = i % ACCOUNTS;
            let to = (i * 7 + 1) % ACCOUNTS;
            let to = if to == from { (to + 1) % ACCOUNTS } else { to };
            format!(r#"{{"start":{{"from":"a{from}","to":"a{to}","amount":1}}}}"#)
        })
        .collect();
    let leaked: &'static [String] = Box::leak(commands.into_boxed_slice());
    let before = node.messaging_stats();
    let started = Instant::now();
    drive_with_ids(&node, "transfer", transfers, |i| {
        (format!("t{i}"), leaked[i].as_str(), None)
    })?;
    let want = before.sends_accepted + 2 * transfers as u64;
    settle(&node, Duration::from_secs(600), |n| {
        n.messaging_stats().sends_accepted >= want
    })?;
    let elapsed = started.elapsed();
    let sends = 2.0 * transfers as f64 / elapsed.as_secs_f64();
    figures.push(
        Figure::new(
            "messaging",
            "sends delivered/s between entities (each answered back)",
            sends,
            "sends/s",
        )
        .against(
            "transfers completed/s",
            transfers as f64 / elapsed.as_secs_f64(),
            "transfers/s",
        ),
    );

    // Latency: one transfer at a time.
    let samples = 300.min(transfers.max(1));
    progress(&format!("{samples} transfers one at a time"));
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let id = format!("lat{i}");
        let command = format!(
            r#"{{"start":{{"from":"a{}","to":"a{}","amount":1}}}}"#,
            i % ACCOUNTS,
            (i + 1) % ACCOUNTS
        );
        node.send_blocking("transfer", &id, command.into_bytes(), None)?;
        let acked = Instant::now();
        loop {
            if view(&node, "transfer", &id)?["status"] == "completed" {
                break;
            }
            if acked.elapsed() > Duration::from_secs(30) {
                bail!("transfer {id} did not complete");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        latencies.push(acked.elapsed());
    }
    let l = Latencies::of(latencies);
    figures.push(Figure::new(
        "messaging",
        "transfer latency p50, start acknowledged to completed (2 sends, 2 answers)",
        ms(l.p50),
        "ms",
    ));
    figures.push(Figure::new(
        "messaging",
        "transfer latency p99",
        ms(l.p99),
        "ms",
    ));

    // Timers: scheduled over a spread, fired while many are pending.
    progress(&format!("{timers} timers pending"));
    node.passivate_all_blocking()?;
    let rss_before = rss_bytes();
    let first_due = now_ms() + 5_000 + timers as u64 / 20;
    let spread_ms = 5_000u64;
    let schedules: Vec<String> = (0..timers)
        .map(|i| {
            let at = first_due + (i as u64 * spread_ms) / timers.max(1) as u64;
            // From an account that does not exist: the debit is refused at
            // once, so each firing costs one saga step.
            format!(r#"{{"schedule":{{"from":"none{i}","to":"a0","amount":1,"at_ms":{at}}}}}"#)
        })
        .collect();
    let leaked: &'static [String] = Box::leak(schedules.into_boxed_slice());
    drive_with_ids(&node, "transfer", timers, |i| {
        (format!("timer{i}"), leaked[i].as_str(), None)
    })?;
    let scheduled_at = now_ms();
    if scheduled_at >= first_due {
        progress("scheduling took longer than the lead: the first timers fire late");
    }
    node.passivate_all_blocking()?;
    let rss_pending = rss_bytes();
    let pending = node.messaging_stats().pending_timers;
    let fired_before = node.messaging_stats().timers_fired;
    settle(&node, Duration::from_secs(600), |n| {
        n.messaging_stats().timers_fired >= fired_before + timers as u64
    })?;
    let step = (timers / 2_000).max(1);
    let mut lateness = Vec::new();
    for i in (0..timers).step_by(step) {
        let v = view(&node, "transfer", &format!("timer{i}"))?;
        let (Some(due), Some(began)) = (v["scheduled_for_ms"].as_u64(), v["began_at_ms"].as_u64())
        else {
            bail!("timer{i} has not fired: {v}");
        };
        if began < due {
            bail!("timer{i} fired early: at {began}, due at {due}");
        }
        lateness.push(Duration::from_millis(began - due));
    }
    let l = Latencies::of(lateness);
    figures.push(Figure::new(
        "messaging",
        &format!(
            "timer lateness p50 ({timers} timers over {} s)",
            spread_ms / 1000
        ),
        ms(l.p50),
        "ms",
    ));
    figures.push(Figure::new(
        "messaging",
        "timer lateness p99",
        ms(l.p99),
        "ms",
    ));
    figures.push(Figure::new(
        "messaging",
        "memory per pending timer (entities passivated)",
        rss_pending.saturating_sub(rss_before) as f64 / pending.max(1) as f64,
        "bytes",
    ));
    node.shutdown();
    Ok(figures)
}
