//! `cargo xtask bench [--quick]`: the standard benchmark suite of one node.
//!
//! Builds release binaries, starts a fresh `stead up` on a temporary data
//! directory, deploys `account`, runs `stead bench http|grpc|hot` against it,
//! stops it; does the same on a PostgreSQL journal (a server started on this
//! machine) and runs `stead bench takeover` and `stead bench failover` (a
//! 3-node cluster) there; runs `stead bench
//! engine|memory|recovery` in process, then prints a table and writes
//! `target/bench/report.json`. wrk and PostgreSQL are installed from
//! Debian's packages when missing.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

struct Sizes {
    duration: u64,
    http_entities: usize,
    engine_commands: usize,
    engine_entities: usize,
    memory_entities: usize,
    recovery_events: usize,
    recovery_entities: usize,
    takeover_rounds: usize,
    failover_rounds: usize,
    forwarded_commands: usize,
    transfers: usize,
    timers: usize,
    /// Events a subscriber reads catching up, and again following.
    subscribe_events: usize,
}

const FULL: Sizes = Sizes {
    duration: 20,
    http_entities: 10_000,
    engine_commands: 300_000,
    engine_entities: 10_000,
    memory_entities: 1_000_000,
    recovery_events: 10_000,
    recovery_entities: 100_000,
    takeover_rounds: 5,
    failover_rounds: 20,
    forwarded_commands: 5_000,
    transfers: 20_000,
    timers: 100_000,
    subscribe_events: 100_000,
};

const QUICK: Sizes = Sizes {
    duration: 3,
    http_entities: 1_000,
    engine_commands: 50_000,
    engine_entities: 10_000,
    memory_entities: 100_000,
    recovery_events: 10_000,
    recovery_entities: 10_000,
    takeover_rounds: 2,
    failover_rounds: 3,
    forwarded_commands: 1_000,
    transfers: 3_000,
    timers: 10_000,
    subscribe_events: 10_000,
};

fn ensure_wrk() -> Result<()> {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return Ok(());
    }
    println!("    wrk not found: installing Debian's package");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-q", "wrk"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success())
        || (Command::new("apt-get")
            .args(["update", "-q"])
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("apt-get")
                .args(["install", "-y", "-q", "wrk"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success()));
    ensure!(
        ok,
        "wrk is missing and could not be installed: apt-get install wrk"
    );
    Ok(())
}

fn run_bench(stead: &Path, args: &[String]) -> Result<Vec<Value>> {
    println!("  $ stead {}", args.join(" "));
    let out = Command::new(stead)
        .args(args)
        .arg("--json")
        .stderr(Stdio::inherit())
        .output()
        .context("running stead bench")?;
    ensure!(out.status.success(), "`stead {}` failed", args.join(" "));
    let figures: Vec<Value> = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "stead bench printed {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    for f in &figures {
        println!("    {}", line(f));
    }
    Ok(figures)
}

fn line(f: &Value) -> String {
    let num = |v: &Value| {
        v.as_f64().map_or("-".to_owned(), |x| {
            if x >= 100.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.3}")
            }
        })
    };
    let mut out = format!(
        "{:<9} {:<42} {:>12} {:<6}",
        f["scenario"].as_str().unwrap_or(""),
        f["name"].as_str().unwrap_or(""),
        num(&f["value"]),
        f["unit"].as_str().unwrap_or("")
    );
    if let Some(y) = f["yardstick"].as_object() {
        out.push_str(&format!(
            " | {} {} {} | ratio {:.2}",
            y["name"].as_str().unwrap_or(""),
            num(&y["value"]),
            y["unit"].as_str().unwrap_or(""),
            y["ratio"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    if let (Some(t), Some(met)) = (f["target"].as_str(), f["target_met"].as_bool()) {
        out.push_str(&format!(
            " | target {t}: {}",
            if met { "met" } else { "MISSED" }
        ));
    }
    out
}

pub(crate) fn run(root: &Path, quick: bool) -> Result<()> {
    let started = Instant::now();
    let sizes = if quick { QUICK } else { FULL };
    crate::warn_if_low_disk(root, 4, "the release build and the scenarios' journals");
    ensure_wrk()?;
    let stead = root.join("target/release/stead");
    let account = root.join("target/guests/account.wasm");
    let work = root.join("target/bench");
    std::fs::create_dir_all(&work).context("target/bench")?;
    let data = tempfile_dir(&work)?;
    let s = |v: &dyn ToString| v.to_string();
    let common = |extra: &[String]| -> Vec<String> {
        let mut v = vec![
            "--duration".to_owned(),
            s(&sizes.duration),
            "--work-dir".to_owned(),
            s(&work.display()),
        ];
        v.extend_from_slice(extra);
        v
    };

    crate::step("network scenarios against `stead up` (release)");
    let mut figures = Vec::new();
    network_scenarios(
        &stead,
        &account,
        &data,
        &[],
        None,
        &sizes,
        &common,
        &mut figures,
    )?;
    let _ = std::fs::remove_dir_all(&data);

    crate::step("network scenarios on the PostgreSQL journal (a server on this machine)");
    let postgres = crate::postgres::start_for_bench()?;
    let db = postgres.database()?;
    let url = db.url();
    let pg_data = tempfile_dir(&work)?;
    network_scenarios(
        &stead,
        &account,
        &pg_data,
        &[
            "--journal".into(),
            url.clone(),
            "--node-id".into(),
            "bench".into(),
        ],
        Some(&url),
        &sizes,
        &common,
        &mut figures,
    )?;
    let _ = std::fs::remove_dir_all(&pg_data);
    let takeover_db = postgres.database()?;
    figures.extend(run_bench(
        &stead,
        &[
            vec![
                "bench".into(),
                "takeover".into(),
                "--postgres".into(),
                takeover_db.url(),
                "--component".into(),
                account.display().to_string(),
                "--rounds".into(),
                s(&sizes.takeover_rounds),
            ],
            common(&[]),
        ]
        .concat(),
    )?);
    let failover_db = postgres.database()?;
    figures.extend(run_bench(
        &stead,
        &[
            vec![
                "bench".into(),
                "failover".into(),
                "--postgres".into(),
                failover_db.url(),
                "--component".into(),
                account.display().to_string(),
                "--rounds".into(),
                s(&sizes.failover_rounds),
                "--commands".into(),
                s(&sizes.forwarded_commands),
            ],
            common(&[]),
        ]
        .concat(),
    )?);
    drop((db, takeover_db, failover_db, postgres));

    crate::step("in-process scenarios");
    let component = account.display().to_string();
    let in_process = [
        (
            "engine",
            vec![
                ("--commands", sizes.engine_commands),
                ("--entities", sizes.engine_entities),
            ],
        ),
        ("memory", vec![("--entities", sizes.memory_entities)]),
        (
            "recovery",
            vec![
                ("--events", sizes.recovery_events),
                ("--entities", sizes.recovery_entities),
            ],
        ),
        ("subscribe", vec![("--events", sizes.subscribe_events)]),
    ];
    for (scenario, options) in in_process {
        let mut args = vec![
            "bench".to_owned(),
            scenario.to_owned(),
            "--component".to_owned(),
            component.clone(),
        ];
        for (flag, value) in options {
            args.extend([flag.to_owned(), s(&value)]);
        }
        args.extend(common(&[]));
        figures.extend(run_bench(&stead, &args)?);
    }

    figures.extend(run_bench(
        &stead,
        &[
            vec![
                "bench".into(),
                "messaging".into(),
                "--account".into(),
                component.clone(),
                "--transfer".into(),
                root.join("target/guests/transfer.wasm")
                    .display()
                    .to_string(),
                "--transfers".into(),
                s(&sizes.transfers),
                "--timers".into(),
                s(&sizes.timers),
            ],
            common(&[]),
        ]
        .concat(),
    )?);

    crate::step("wasm against native: the same logic in the same command path");
    let args = [
        "bench",
        "-p",
        "stead-cli",
        "--bench",
        "engine",
        "--",
        "--commands",
    ];
    println!(
        "  $ cargo {} {} --entities {}",
        args.join(" "),
        sizes.engine_commands,
        sizes.engine_entities
    );
    let out = crate::cargo()
        .current_dir(root)
        .args(args)
        .arg(s(&sizes.engine_commands))
        .arg("--entities")
        .arg(s(&sizes.engine_entities))
        .arg("--work-dir")
        .arg(&work)
        .stderr(Stdio::inherit())
        .output()
        .context("running the engine bench")?;
    ensure!(out.status.success(), "the engine bench failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .rev()
        .find(|l| l.starts_with('['))
        .context("the engine bench printed no figures")?;
    let native: Vec<Value> = serde_json::from_str(last).context("engine bench figures")?;
    for f in &native {
        println!("    {}", line(f));
    }
    figures.extend(native);

    crate::step(&format!(
        "results ({}, {:.0}s)",
        if quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64()
    ));
    for f in &figures {
        println!("  {}", line(f));
    }
    let report = json!({
        "suite": if quick { "quick" } else { "full" },
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "cpus": std::thread::available_parallelism().map_or(1, usize::from),
        "figures": figures,
    });
    let path = work.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?).context("writing the report")?;
    println!("\n  report: {}", path.display());
    Ok(())
}

fn tempfile_dir(parent: &Path) -> Result<std::path::PathBuf> {
    let dir = parent.join(format!("node-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).context("bench data directory")?;
    Ok(dir)
}

/// Starts `stead up` (with `extra` flags) on `data`, deploys `account`, runs
/// the network scenarios against it, and stops it. With `postgres`, the
/// figures are the shared journal's.
#[allow(clippy::too_many_arguments)]
fn network_scenarios(
    stead: &Path,
    account: &Path,
    data: &Path,
    extra: &[String],
    postgres: Option<&str>,
    sizes: &Sizes,
    common: &dyn Fn(&[String]) -> Vec<String>,
    figures: &mut Vec<Value>,
) -> Result<()> {
    let s = |v: &dyn ToString| v.to_string();
    let mut child = Command::new(stead)
        .args(["up", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .env("STEAD_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting stead up")?;
    let mut ready = String::new();
    BufReader::new(child.stdout.take().context("stdout")?)
        .read_line(&mut ready)
        .context("ready line")?;
    let field = |k: &str| {
        ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .map(str::to_owned)
    };
    let (Some(grpc), Some(http)) = (field("grpc="), field("http=")) else {
        let _ = child.kill();
        bail!("stead up said {ready:?}");
    };
    let addr = format!("http://{grpc}");
    let pg: Vec<String> = postgres
        .map(|url| vec!["--postgres".to_owned(), url.to_owned()])
        .unwrap_or_default();
    let network = (|| -> Result<()> {
        let deployed = Command::new(stead)
            .args(["--addr", &addr, "deploy"])
            .arg(account)
            .status()?;
        ensure!(deployed.success(), "deploy failed");
        figures.extend(run_bench(
            stead,
            &[
                vec![
                    "--addr".into(),
                    addr.clone(),
                    "bench".into(),
                    "http".into(),
                    "--http".into(),
                    http.clone(),
                    "--entities".into(),
                    s(&sizes.http_entities),
                ],
                pg.clone(),
                common(&[]),
            ]
            .concat(),
        )?);
        if postgres.is_none() {
            figures.extend(run_bench(
                stead,
                &[
                    vec![
                        "--addr".into(),
                        addr.clone(),
                        "bench".into(),
                        "grpc".into(),
                        "--entities".into(),
                        s(&sizes.http_entities),
                    ],
                    common(&[]),
                ]
                .concat(),
            )?);
        }
        let hot_duration = (sizes.duration / 2).max(2);
        let mut hot = vec![
            "--addr".to_owned(),
            addr.clone(),
            "bench".into(),
            "hot".into(),
        ];
        hot.extend(pg.clone());
        hot.extend(common(&[]));
        if let Some(i) = hot.iter().position(|a| a == "--duration") {
            hot[i + 1] = s(&hot_duration);
        }
        figures.extend(run_bench(stead, &hot)?);
        Ok(())
    })();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    network
}
