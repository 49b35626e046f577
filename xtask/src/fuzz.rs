//! `cargo xtask fuzz [--seconds N] [--target NAME] [--sanitizer address|none]`:
//! coverage-guided fuzzing of the host with cargo-fuzz (libFuzzer).
//!
//! The targets live in `fuzz/` (its own cargo workspace, built into
//! `fuzz/target`): `journal_decode`, `command_decode`, `deploy_validate`
//! (see each file's documentation). This chore:
//!
//! 1. installs `cargo-fuzz` when it is missing (`cargo install --locked`);
//! 2. writes the seed corpus `fuzz/corpus/<target>/seed-*` (committed; real
//!    keys and records from the host's encoders, commands in the
//!    `command_decode` input format, tiny wasm binaries and edits of the
//!    real `account` component);
//! 3. builds every target (release, debug assertions, AddressSanitizer by
//!    default) on the stable toolchain: cargo-fuzz passes nightly-only
//!    flags (`-Zsanitizer`, `-Cpasses=sancov-module`), which stable accepts
//!    with `RUSTC_BOOTSTRAP=1`;
//! 4. runs each target for N seconds (`-max_total_time`, `-rss_limit_mb=4096`)
//!    on a working corpus in `target/fuzz/corpus/<target>` (new inputs go
//!    there; the committed seeds are read only), prints its executions and
//!    coverage from libFuzzer's final `#N DONE cov: ...` line and writes
//!    `target/fuzz/report.json`. The full output of each run is in
//!    `target/fuzz/<target>.log`.
//!
//! A crash fails the chore after the remaining targets ran, naming the
//! reproducer (`fuzz/artifacts/<target>/crash-*`; replay it with
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use stead_journal::EntityKey;
use stead_journal::record::{self, EventRecord, SnapshotRecord};
use stead_journal_sled::keys;

use crate::{cargo, step};

/// Every fuzz target of `fuzz/`, in the order they run.
const TARGETS: [&str; 3] = ["journal_decode", "command_decode", "deploy_validate"];

/// The cargo-fuzz release installed when none is found (builds on 1.95).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

const USAGE: &str =
    "usage: cargo xtask fuzz [--seconds N] [--target NAME] [--sanitizer address|none]";

struct Options {
    seconds: u64,
    targets: Vec<&'static str>,
    sanitizer: String,
}

fn parse(flags: &[String]) -> Result<Options> {
    let mut options = Options {
        seconds: 60,
        targets: TARGETS.to_vec(),
        sanitizer: "address".into(),
    };
    let mut flags = flags.iter();
    while let Some(flag) = flags.next() {
        let mut value = || {
            flags
                .next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--seconds" => {
                // 0 would be libFuzzer's "no limit".
                options.seconds = value()?
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .with_context(|| format!("--seconds takes a number above 0\n{USAGE}"))?;
            }
            "--target" => {
                let name = value()?;
                let Some(target) = TARGETS.iter().find(|t| **t == name.as_str()) else {
                    bail!(
                        "unknown fuzz target `{name}` (targets: {})",
                        TARGETS.join(", ")
                    );
                };
                options.targets = vec![target];
            }
            "--sanitizer" => {
                let name = value()?;
                if !matches!(name.as_str(), "address" | "none") {
                    bail!("--sanitizer is `address` or `none`\n{USAGE}");
                }
                options.sanitizer = name.clone();
            }
            other => bail!("unknown flag `{other}`\n{USAGE}"),
        }
    }
    Ok(options)
}

/// What one target's run gave.
struct Outcome {
    target: &'static str,
    seconds: f64,
    /// From libFuzzer's final `#N DONE cov: C ft: F corp: K/..` line.
    executions: Option<u64>,
    coverage: Option<u64>,
    features: Option<u64>,
    corpus: Option<u64>,
    exec_per_s: Option<u64>,
    /// The reproducer libFuzzer wrote, on a crash.
    crash: Option<String>,
    ok: bool,
    log: PathBuf,
}

/// Runs the chore: builds the guests (`command_decode` and `deploy_validate`
/// read `target/guests/account.wasm`), then fuzzes.
pub(crate) fn run(root: &Path, flags: &[String]) -> Result<()> {
    let options = parse(flags)?;
    crate::build_guests()?;
    ensure_cargo_fuzz()?;
    write_seeds(root)?;

    let fuzz_dir = root.join("target/fuzz");
    std::fs::create_dir_all(&fuzz_dir)
        .with_context(|| format!("creating {}", fuzz_dir.display()))?;
    step(&format!(
        "build the fuzz targets (cargo-fuzz, sanitizer {}, stable toolchain with RUSTC_BOOTSTRAP=1; \
         the first build takes a while)",
        options.sanitizer
    ));
    let build = ["fuzz", "build", "--sanitizer", &options.sanitizer];
    println!("    $ RUSTC_BOOTSTRAP=1 cargo {}", build.join(" "));
    let status = cargo_fuzz()
        .args(build)
        .current_dir(root)
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", build.join(" "));
    }

    let mut outcomes = Vec::new();
    for target in &options.targets {
        outcomes.push(run_target(root, target, &options)?);
    }

    step("fuzzing summary");
    println!(
        "    {:<16} {:>8} {:>12} {:>8} {:>8} {:>7} {:>8}  result",
        "target", "seconds", "executions", "exec/s", "cov", "ft", "corpus"
    );
    let show = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    for o in &outcomes {
        println!(
            "    {:<16} {:>8.0} {:>12} {:>8} {:>8} {:>7} {:>8}  {}",
            o.target,
            o.seconds,
            show(o.executions),
            show(o.exec_per_s),
            show(o.coverage),
            show(o.features),
            show(o.corpus),
            match (&o.crash, o.ok) {
                (Some(crash), _) => format!("CRASH: {crash}"),
                (None, true) => "ok".to_owned(),
                (None, false) => format!("FAILED (see {})", o.log.display()),
            }
        );
    }
    let report = serde_json::json!({
        "seconds_per_target": options.seconds,
        "sanitizer": options.sanitizer,
        "ok": outcomes.iter().all(|o| o.ok),
        "targets": outcomes.iter().map(|o| serde_json::json!({
            "name": o.target,
            "duration_s": (o.seconds * 10.0).round() / 10.0,
            "executions": o.executions,
            "exec_per_s": o.exec_per_s,
            "coverage": o.coverage,
            "features": o.features,
            "corpus": o.corpus,
            "crash": o.crash,
            "ok": o.ok,
            "log": o.log,
        })).collect::<Vec<_>>(),
    });
    let report_path = fuzz_dir.join("report.json");
    std::fs::write(&report_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!("\n    report: {}", report_path.display());

    let failed: Vec<_> = outcomes.iter().filter(|o| !o.ok).collect();
    if failed.is_empty() {
        return Ok(());
    }
    for o in &failed {
        match &o.crash {
            Some(crash) => println!(
                "    {}: reproduce with `RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer {} {} {crash}`",
                o.target, options.sanitizer, o.target
            ),
            None => println!("    {}: failed, see {}", o.target, o.log.display()),
        }
    }
    bail!("{} of {} fuzz targets failed", failed.len(), outcomes.len())
}

/// `cargo fuzz` on the stable toolchain.
fn cargo_fuzz() -> Command {
    let mut command = cargo();
    command.env("RUSTC_BOOTSTRAP", "1");
    command
}

fn ensure_cargo_fuzz() -> Result<()> {
    let found = cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success());
    if let Some(out) = found {
        println!("    using {}", String::from_utf8_lossy(&out.stdout).trim());
        return Ok(());
    }
    step(&format!(
        "cargo-fuzz is not installed: installing cargo-fuzz {CARGO_FUZZ_VERSION} \
         (cargo install cargo-fuzz --locked, ~2 min)"
    ));
    let version = format!("={CARGO_FUZZ_VERSION}");
    let args = ["install", "cargo-fuzz", "--locked", "--version", &version];
    println!("    $ cargo {}", args.join(" "));
    let status = cargo()
        .args(args)
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn run_target(root: &Path, target: &'static str, options: &Options) -> Result<Outcome> {
    step(&format!("fuzz {target} for {} s", options.seconds));
    let corpus = root.join("target/fuzz/corpus").join(target);
    let seeds = root.join("fuzz/corpus").join(target);
    let work = root.join("target/fuzz/work").join(target);
    let log = root.join("target/fuzz").join(format!("{target}.log"));
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let max_time = format!("-max_total_time={}", options.seconds);
    let mut args = vec![
        "fuzz",
        "run",
        "--sanitizer",
        &options.sanitizer,
        target,
        path_str(&corpus)?,
        path_str(&seeds)?,
        "--",
        &max_time,
        "-rss_limit_mb=4096",
        // Node start and the first deploy happen in the first input: generous.
        "-timeout=120",
        "-print_final_stats=1",
    ];
    if target == "command_decode" {
        // The node's threads (workers, journal, servers) hold allocations
        // across inputs: libFuzzer would take every input for a possible
        // leak and run it again under a full LeakSanitizer scan (~20 exec/s
        // instead of hundreds). Leaks are still checked at exit.
        args.push("-detect_leaks=0");
    }
    println!("    $ RUSTC_BOOTSTRAP=1 cargo {}", args.join(" "));
    println!("    (libFuzzer output: {})", log.display());
    let started = Instant::now();
    // libFuzzer writes to stderr; read it, keep it whole in the log, and
    // show the interesting lines.
    let mut child = cargo_fuzz()
        .args(args)
        .env("STEAD_FUZZ_GUESTS", root.join("target/guests"))
        .env("STEAD_FUZZ_WORK", &work)
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo fuzz run")?;
    let mut text = String::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).split(b'\n') {
            let line = line.context("reading libFuzzer output")?;
            let line = String::from_utf8_lossy(&line);
            if is_interesting(&line) {
                println!("    {line}");
            }
            text.push_str(&line);
            text.push('\n');
        }
    }
    let status = child.wait().context("waiting for cargo fuzz run")?;
    let seconds = started.elapsed().as_secs_f64();
    std::fs::write(&log, &text).with_context(|| format!("writing {}", log.display()))?;
    // The node's data of `command_decode`: only for the run.
    let _ = std::fs::remove_dir_all(&work);

    let done = final_stats(&text);
    let crash = text
        .lines()
        .filter_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
        .next_back()
        .map(str::to_owned);
    let outcome = Outcome {
        target,
        seconds,
        executions: done
            .executions
            .or_else(|| stat(&text, "number_of_executed_units")),
        coverage: done.coverage,
        features: done.features,
        corpus: done.corpus,
        exec_per_s: done
            .exec_per_s
            .or_else(|| stat(&text, "average_exec_per_sec")),
        ok: status.success() && crash.is_none(),
        crash,
        log,
    };
    println!(
        "    {target}: {} executions in {seconds:.0} s, cov {} ft {}, corpus {}{}",
        outcome.executions.unwrap_or(0),
        outcome.coverage.unwrap_or(0),
        outcome.features.unwrap_or(0),
        outcome.corpus.unwrap_or(0),
        if outcome.ok { "" } else { ": FAILED" }
    );
    Ok(outcome)
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("non-UTF-8 path {}", path.display()))
}

/// Lines of libFuzzer's output worth showing live: its setup, the periodic
/// `pulse` lines, the end, and anything that is not a progress line
/// (crash reports, panics, cargo errors).
fn is_interesting(line: &str) -> bool {
    if line.starts_with('#') {
        return line.contains("INITED") || line.contains("DONE") || line.contains("pulse");
    }
    let progress = [
        "NEW_FUNC",
        "# Uses:",
        "Recommended dictionary",
        "End of recommended",
    ];
    if line.trim().is_empty()
        || line.starts_with("stat::")
        || progress.iter().any(|p| line.contains(p))
    {
        return false;
    }
    match line.strip_prefix("INFO: ") {
        Some(info) => ["Seed:", "seed corpus", "-max_len"]
            .iter()
            .any(|keep| info.contains(keep)),
        None => true,
    }
}

/// The numbers of a libFuzzer status line, e.g.
/// `#123456 DONE   cov: 4242 ft: 9876 corp: 321/45Kb lim: 4096 exec/s: 2057 rss: 512Mb`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Stats {
    executions: Option<u64>,
    coverage: Option<u64>,
    features: Option<u64>,
    corpus: Option<u64>,
    exec_per_s: Option<u64>,
}

/// The stats of the last `DONE` line (or, without one, the last status line).
fn final_stats(text: &str) -> Stats {
    let status_lines = || text.lines().filter(|l| l.starts_with('#'));
    let line = status_lines()
        .rfind(|l| l.contains(" DONE "))
        .or_else(|| status_lines().rfind(|l| l.contains("cov: ")));
    line.map(parse_status_line).unwrap_or_default()
}

fn parse_status_line(line: &str) -> Stats {
    let mut words = line.split_whitespace();
    let executions = words
        .next()
        .and_then(|w| w.strip_prefix('#'))
        .and_then(|n| n.parse().ok());
    let mut stats = Stats {
        executions,
        ..Stats::default()
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    for pair in words.windows(2) {
        // `corp: 321/45Kb`: the entry count before the slash.
        let value = pair[1].split('/').next().and_then(|n| n.parse().ok());
        match pair[0] {
            "cov:" => stats.coverage = value,
            "ft:" => stats.features = value,
            "corp:" => stats.corpus = value,
            "exec/s:" => stats.exec_per_s = value,
            _ => {}
        }
    }
    stats
}

/// `stat::<name>: <n>` of `-print_final_stats=1`.
fn stat(text: &str, name: &str) -> Option<u64> {
    let prefix = format!("stat::{name}:");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .next_back()
        .and_then(|n| n.trim().parse().ok())
}

/// Writes the seed corpus (`seed-*` files, small, committed) and removes
/// `seed-*` files it no longer generates. Other files are left alone.
fn write_seeds(root: &Path) -> Result<()> {
    let mut written = 0;
    let mut total = 0;
    for (target, seeds) in [
        ("journal_decode", journal_seeds()),
        ("command_decode", command_seeds()),
        ("deploy_validate", deploy_seeds()),
    ] {
        let dir = root.join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let names: Vec<String> = seeds
            .iter()
            .map(|(name, _)| format!("seed-{name}"))
            .collect();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("seed-") && !names.iter().any(|n| n == name) {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
        }
        for (name, (_, bytes)) in names.iter().zip(&seeds) {
            let path = dir.join(name);
            total += 1;
            if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
                std::fs::write(&path, bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
                written += 1;
            }
        }
    }
    println!("    seed corpus: {total} files in fuzz/corpus/ ({written} written)");
    Ok(())
}

type Seeds = Vec<(&'static str, Vec<u8>)>;

/// Real keys and records, from the host's own encoders, and a few broken ones.
fn journal_seeds() -> Seeds {
    let key = EntityKey::new(7, "account", "acc-1");
    let event = EventRecord {
        command_id: "cmd-1".into(),
        timestamp_ms: 1_700_000_000_000,
        payload: br#"{"deposited":{"amount":100}}"#.to_vec(),
        reply: Some(br#"{"balance":100}"#.to_vec()),
    };
    let mut truncated = event.encode();
    truncated.truncate(truncated.len() - 3);
    vec![
        ("key-entity", keys::entity_key(&key)),
        ("key-event", keys::event_key(&key, 42)),
        ("key-snapshot", keys::snapshot_key(&key)),
        ("key-command", keys::command_key(&key, "idem-1")),
        ("key-expiry", keys::expiry_key(0, 1_700_000_000_000, 7)),
        (
            "expiry-list",
            keys::encode_expiry_list(&[("account".into(), "acc-1".into(), "idem-1".into())]),
        ),
        (
            "key-unicode",
            keys::event_key(&EntityKey::new(0, "t", "ü/é"), 1),
        ),
        ("event-reply", event.encode()),
        (
            "event-no-reply",
            EventRecord {
                reply: None,
                ..event.clone()
            }
            .encode(),
        ),
        ("event-truncated", truncated),
        ("page", {
            let mut page = record::PageBuf::new(41);
            page.push(&event);
            page.push(&EventRecord {
                reply: None,
                ..event.clone()
            });
            page.as_bytes().to_vec()
        }),
        (
            "snapshot",
            SnapshotRecord {
                seq_nr: 100,
                version: "0.1.0".into(),
                state: vec![1, 0, 3, b'a', b'd', b'a', 100],
                dedup: vec![(0x1234_5678_9abc_def0, 99), (u64::MAX, 100)],
            }
            .encode(),
        ),
        ("entity", record::encode_entity(77).to_vec()),
    ]
}

/// One input of `command_decode` (format in `fuzz/fuzz_targets/command_decode.rs`).
fn command(flags: u8, entity_type: &str, id: &str, key: &[u8], body: &str) -> Vec<u8> {
    let mut out = vec![flags];
    for field in [entity_type.as_bytes(), id.as_bytes(), key] {
        out.push(u8::try_from(field.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&field[..field.len().min(255)]);
    }
    out.extend_from_slice(body.as_bytes());
    out
}

/// Commands of the `account` component, valid and not (flags: type in bits
/// 0-1, id in bits 2-4, key in bits 5-6, unescaped URL in bit 7).
fn command_seeds() -> Seeds {
    const ID_FIELD: u8 = 6 << 2;
    const TYPE_FIELD: u8 = 3;
    const FIXED_KEY: u8 = 1 << 5;
    const KEY_FIELD: u8 = 2 << 5;
    vec![
        (
            "open",
            command(0, "", "", b"", r#"{"open":{"owner":"ada"}}"#),
        ),
        (
            "deposit-keyed",
            command(FIXED_KEY, "", "", &[1], r#"{"deposit":{"amount":100}}"#),
        ),
        (
            "withdraw",
            command(0, "", "", b"", r#"{"withdraw":{"amount":30}}"#),
        ),
        ("close", command(1 << 2, "", "", b"", r#"{"close":{}}"#)),
        (
            "open-other",
            command(
                2 << 2 | KEY_FIELD,
                "",
                "",
                b"order-17",
                r#"{"open":{"owner":"grace"}}"#,
            ),
        ),
        (
            "deposit-overflow",
            command(
                0,
                "",
                "",
                b"",
                r#"{"deposit":{"amount":18446744073709551615}}"#,
            ),
        ),
        (
            "deposit-negative",
            command(0, "", "", b"", r#"{"deposit":{"amount":-1}}"#),
        ),
        ("truncated-json", command(0, "", "", b"", r#"{"deposit":"#)),
        (
            "unknown-command",
            command(0, "", "", b"", r#"{"transfer":{"to":"x"}}"#),
        ),
        (
            "unknown-field",
            command(0, "", "", b"", r#"{"close":{"now":true}}"#),
        ),
        ("empty-body", command(0, "", "", b"", "")),
        (
            "unknown-type",
            command(TYPE_FIELD | ID_FIELD, "cart", "c-1", b"", r#"{"add":{}}"#),
        ),
        (
            "unicode-id",
            command(ID_FIELD, "", "ü/ä %20?#", b"", r#"{"open":{"owner":"ü"}}"#),
        ),
        (
            "empty-id",
            command(ID_FIELD, "", "", b"", r#"{"open":{"owner":"a"}}"#),
        ),
        (
            "control-id",
            command(ID_FIELD, "", "a\nb", b"", r#"{"close":{}}"#),
        ),
        (
            "raw-url",
            command(
                0x80 | ID_FIELD,
                "",
                "a b/c",
                b"",
                r#"{"open":{"owner":"b"}}"#,
            ),
        ),
        // `POST .../x/events`: a route that does not take POST.
        (
            "raw-url-405",
            command(0x80 | ID_FIELD, "", "x/events", b"", "{}"),
        ),
        (
            "bad-key",
            command(KEY_FIELD, "", "", "ké\ty".as_bytes(), r#"{"close":{}}"#),
        ),
        ("non-utf8-body", {
            let mut input = command(0, "", "", b"", "");
            input.extend_from_slice(&[b'{', 0xff, 0xfe, b'}']);
            input
        }),
    ]
}

/// Tiny wasm binaries, and edits of the real `account` component (inputs
/// starting with `M`; format in `fuzz/fuzz_targets/deploy_validate.rs`).
fn deploy_seeds() -> Seeds {
    const CORE: [u8; 8] = [0, b'a', b's', b'm', 1, 0, 0, 0];
    const COMPONENT: [u8; 8] = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];
    let mut nested = COMPONENT.to_vec();
    // A core module section (id 1) holding an empty module.
    nested.extend_from_slice(&[1, 8]);
    nested.extend_from_slice(&CORE);
    // Edits: `op offset:u24be value`, op 0 set, 1 insert, 2 delete, 3 truncate.
    let edit = |ops: &[(u8, u32, u8)]| {
        let mut out = vec![b'M'];
        for &(op, offset, value) in ops {
            out.push(op);
            out.extend_from_slice(&offset.to_be_bytes()[1..]);
            out.push(value);
        }
        out
    };
    vec![
        ("core-module", CORE.to_vec()),
        ("empty-component", COMPONENT.to_vec()),
        ("component-with-module", nested),
        ("magic-only", b"\0asm".to_vec()),
        ("unknown-layer", vec![0, b'a', b's', b'm', 0x0d, 0, 7, 0]),
        ("text", b"(component)".to_vec()),
        ("account-unchanged", edit(&[])),
        ("account-set", edit(&[(0, 9, 0x7f), (0, 4_000, 0)])),
        ("account-insert-delete", edit(&[(1, 20, 0), (2, 60_000, 0)])),
        ("account-truncated", edit(&[(3, 50_000, 0)])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_final_libfuzzer_line() {
        let text = "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                    #65536\tpulse  cov: 90 ft: 200 corp: 20/300b lim: 4096 exec/s: 21845 rss: 40Mb\n\
                    #123456\tDONE   cov: 4242 ft: 9876 corp: 321/45Kb lim: 4096 exec/s: 2057 rss: 512Mb\n\
                    Done 123456 runs in 61 second(s)\n";
        assert_eq!(
            final_stats(text),
            Stats {
                executions: Some(123_456),
                coverage: Some(4242),
                features: Some(9876),
                corpus: Some(321),
                exec_per_s: Some(2057),
            }
        );
    }

    #[test]
    fn seeds_are_small() {
        for (name, bytes) in journal_seeds()
            .into_iter()
            .chain(command_seeds())
            .chain(deploy_seeds())
        {
            assert!(bytes.len() < 4096, "seed {name} has {} bytes", bytes.len());
        }
    }

    #[test]
    fn command_seeds_have_the_documented_layout() {
        let input = command(0x80 | 3, "cart", "c-1", b"k", "{}");
        assert_eq!(input, b"\x83\x04cart\x03c-1\x01k{}");
    }
}
