//! `cargo xtask sim`: the deterministic cluster simulator over many seeds,
//! in parallel processes (one per core), summed up in one report.
//!
//! `--seeds N [--start S]` runs seeds S..S+N; `--seed S` runs one and
//! prints its trace (the replay of a failing seed); `--broken VARIANT`
//! runs a deliberately broken variant (the checkers must catch it).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{root, run_cargo, step};

pub(crate) fn run(flags: &[String]) -> Result<()> {
    let root = root();
    let mut seeds = 100u64;
    let mut start = 1u64;
    let mut one: Option<u64> = None;
    let mut broken: Option<String> = None;
    let mut jobs = std::thread::available_parallelism().map_or(2, |n| n.get() as u64);
    let mut it = flags.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seeds" => seeds = value()?.parse().context("--seeds")?,
            "--start" => start = value()?.parse().context("--start")?,
            "--seed" => one = Some(value()?.parse().context("--seed")?),
            "--jobs" => jobs = value()?.parse::<u64>().context("--jobs")?.max(1),
            "--broken" => broken = Some(value()?.clone()),
            other => bail!("unknown flag `{other}` (see `cargo xtask help`)"),
        }
    }
    crate::build_guests()?;
    run_cargo(
        "release build of the simulator",
        &root,
        &[
            "build",
            "--release",
            "-p",
            "stead-sim",
            "--bin",
            "stead-sim",
        ],
    )?;
    let binary = root.join("target/release/stead-sim");
    let component = root.join("target/guests/account.wasm");
    let mut common: Vec<String> = vec!["--component".into(), component.display().to_string()];
    if let Some(b) = &broken {
        common.extend(["--broken".into(), b.clone()]);
    }
    if let Some(seed) = one {
        step(&format!("replaying seed {seed}"));
        let output = Command::new(&binary)
            .args(&common)
            .args(["--seed", &seed.to_string(), "--trace"])
            .stderr(Stdio::inherit())
            .output()
            .context("running stead-sim")?;
        let report: Value =
            serde_json::from_slice(&output.stdout).context("reading the seed's report")?;
        for line in report["trace"].as_array().into_iter().flatten() {
            println!("    {}", line.as_str().unwrap_or(""));
        }
        let mut summary = Summary::default();
        summary.add(&report);
        println!(
            "    trace sha-256         {}",
            report["trace_hash"].as_str().unwrap_or("")
        );
        summary.print(0.0);
        if !summary.failing.is_empty() {
            bail!("seed {seed} found violations (listed above)");
        }
        return Ok(());
    }
    step(&format!("{seeds} seeds from {start} on {jobs} processes"));
    let started = Instant::now();
    let jobs = jobs.min(seeds.max(1));
    let mut children = Vec::new();
    for k in 0..jobs {
        let count = (seeds + jobs - 1 - k) / jobs;
        if count == 0 {
            continue;
        }
        let child = Command::new(&binary)
            .args(&common)
            .args([
                "--seeds",
                &count.to_string(),
                "--start",
                &(start + k).to_string(),
                "--stride",
                &jobs.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting stead-sim")?;
        children.push(child);
    }
    let mut summary = Summary::default();
    let readers: Vec<_> = children
        .iter_mut()
        .filter_map(|c| c.stdout.take())
        .map(|out| {
            std::thread::spawn(move || {
                BufReader::new(out)
                    .lines()
                    .map_while(Result::ok)
                    .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
                    .collect::<Vec<Value>>()
            })
        })
        .collect();
    for reader in readers {
        for report in reader.join().unwrap_or_default() {
            summary.add(&report);
        }
    }
    for mut child in children {
        let _ = child.wait();
    }
    summary.print(started.elapsed().as_secs_f64());
    if !summary.failing.is_empty() {
        bail!(
            "{} seed(s) found violations; replay one with `cargo xtask sim --seed {}`",
            summary.failing.len(),
            summary.failing[0]
        );
    }
    if summary.seeds < seeds {
        bail!("only {} of {seeds} seeds reported", summary.seeds);
    }
    Ok(())
}

#[derive(Default)]
struct Summary {
    seeds: u64,
    simulated_ms: u64,
    operations: u64,
    faults: BTreeMap<String, u64>,
    rare: BTreeMap<String, u64>,
    failing: Vec<u64>,
}

impl Summary {
    fn add(&mut self, report: &Value) {
        self.seeds += 1;
        self.simulated_ms += report["simulated_ms"].as_u64().unwrap_or(0);
        self.operations += report["operations"].as_u64().unwrap_or(0);
        for (into, key) in [(&mut self.faults, "faults"), (&mut self.rare, "rare")] {
            if let Some(map) = report[key].as_object() {
                for (k, v) in map {
                    *into.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
                }
            }
        }
        let violations = report["violations"].as_array().map_or(0, Vec::len);
        if violations > 0 {
            let seed = report["seed"].as_u64().unwrap_or(0);
            println!("    seed {seed}: {}", report["violations"]);
            self.failing.push(seed);
        }
    }

    fn print(&self, wall_s: f64) {
        let simulated_s = self.simulated_ms as f64 / 1000.0;
        println!("    seeds                 {}", self.seeds);
        println!("    simulated time        {simulated_s:.0} s");
        println!("    wall time             {wall_s:.0} s");
        println!(
            "    simulated s per wall s {:.1}",
            simulated_s / wall_s.max(0.001)
        );
        println!("    operations            {}", self.operations);
        for (k, v) in &self.faults {
            println!("    fault: {k:<28} {v}");
        }
        for (k, v) in &self.rare {
            println!("    reached: {k:<26} {v}");
        }
        println!("    seeds with violations {}", self.failing.len());
    }
}
