//! `cargo xtask`: the project's chores, in Rust rather than shell scripts.
//!
//! - `build-guests`: build `guests/` into validated components in `target/guests/`
//! - `demo`: build the guests and show what was built
//! - `test`: every test of both workspaces, guest build and validation included
//! - `lint`: `cargo fmt --check` and `cargo clippy -D warnings`, both workspaces
//! - `chaos`: the long crash loop (SIGKILL and power-loss rounds)
//! - `fuzz`: coverage-guided fuzzing of the host with cargo-fuzz (not part of `test`)
//! - `sim`: the deterministic cluster simulator over many seeds (see `host/sim`)

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use stead_component::build::{BuildRequest, BuiltComponent, build};

mod bench;
mod demo;
mod fuzz;
mod postgres;
mod sim;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  build-guests   build guests/ into validated components in target/guests/
  demo           build everything and run the story: deploy, send, SIGKILL, recover;
                 then a 3-node cluster: failover after SIGKILL, the node back
  test           run every test (both workspaces, guest build and validation)
  bench [--quick] the benchmark suite (release build; report in target/bench/)
  lint           cargo fmt --check and cargo clippy -D warnings, both workspaces
  chaos [--rounds N] [--fault sigkill|power-loss|both] [--seed S] [--entities N]
                 the long crash loop: N rounds of each fault against real node
                 processes (power loss needs root and /dev/fuse); report in target/chaos/
  chaos --cluster [--rounds N] [--seed S] [--nodes N]
                 the long cluster loop: a PostgreSQL and N nodes (3) under load, each
                 round a SIGKILL, SIGSTOP past the ttl or SIGTERM of a random node
  sim [--seeds N] [--start S] [--jobs J] [--broken VARIANT] | sim --seed S
                 the deterministic cluster simulator: N seeds (100) from S (1) on J
                 processes (one per core), each a 3-5 node cluster under drawn faults,
                 every invariant checked; --seed S replays one seed with its trace
  fuzz [--seconds N] [--target NAME] [--sanitizer address|none]
                 cargo-fuzz (libFuzzer) on each fuzz/ target for N s (default 60),
                 installing cargo-fuzz if missing; report in target/fuzz/";

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        println!("{USAGE}");
        return Ok(());
    };
    match command.as_str() {
        "build-guests" => build_guests().map(|_| ()),
        "demo" => demo(),
        "bench" => {
            let quick = args.iter().any(|a| a == "--quick");
            build_guests()?;
            run_cargo(
                "release build of stead",
                &root(),
                &["build", "--release", "-p", "stead-cli", "--bin", "stead"],
            )?;
            bench::run(&root(), quick)
        }
        "test" => test(),
        "chaos" => chaos(&args[1..]),
        "fuzz" => fuzz::run(&root(), &args[1..]),
        "sim" => sim::run(&args[1..]),
        "lint" => lint(),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

/// `cargo xtask chaos`: builds the guests, `stead` and the chaos runner,
/// then runs it with the user's flags (see `tests/src/bin/stead-chaos.rs`;
/// with `--cluster`, `tests/src/bin/stead-cluster-chaos.rs`).
fn chaos(flags: &[String]) -> Result<()> {
    let root = root();
    let cluster = flags.iter().any(|f| f == "--cluster");
    let flags: Vec<&String> = flags.iter().filter(|f| *f != "--cluster").collect();
    let runner = if cluster {
        postgres::ensure_installed()?;
        "stead-cluster-chaos"
    } else {
        "stead-chaos"
    };
    build_guests()?;
    run_cargo(
        "build stead and the chaos runner",
        &root,
        &[
            "build",
            "-p",
            "stead-cli",
            "--bin",
            "stead",
            "-p",
            "stead-tests",
            "--bin",
            runner,
        ],
    )?;
    step("chaos");
    let report = root.join(if cluster {
        "target/chaos/cluster-report.json"
    } else {
        "target/chaos/report.json"
    });
    let status = Command::new(root.join("target/debug").join(runner))
        .arg("--stead")
        .arg(root.join("target/debug/stead"))
        .arg("--guests")
        .arg(root.join("target/guests"))
        .arg("--report")
        .arg(&report)
        .args(flags)
        .status()
        .context("running stead-chaos")?;
    if !status.success() {
        bail!("chaos failed ({status}); the seed to replay it is printed above");
    }
    println!("\n    report: {}", report.display());
    Ok(())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_owned()
}

pub(crate) fn step(message: &str) {
    println!("\n==> {message}");
}

/// Warns when the disk holding `dir` has less than `needed_gib` free: a full
/// disk shows up mid-build as a linker bus error or "No space left on
/// device", far from its cause. Silent when the file system cannot tell.
pub(crate) fn warn_if_low_disk(dir: &Path, needed_gib: u64, what: &str) {
    let Ok(stat) = nix::sys::statvfs::statvfs(dir) else {
        return;
    };
    let free_gib = stat.blocks_available() * stat.fragment_size() / (1 << 30);
    if free_gib < needed_gib {
        println!(
            "xtask: warning: {free_gib} GiB free on the disk of {}; {what} needs up to {needed_gib} GiB",
            dir.display()
        );
    }
}

fn build_guests() -> Result<Vec<BuiltComponent>> {
    let root = root();
    step("building guests/ into components (first build compiles std for wasm32: ~2 min)");
    let started = Instant::now();
    let request = BuildRequest {
        crate_dir: root.join("guests"),
        target_dir: root.join("target/wasm-build"),
        out_dir: root.join("target/guests"),
        show_cargo_output: true,
    };
    let built = build(&request, &mut |line| println!("    {line}")).context("guest build")?;
    for component in &built {
        let path = component
            .path
            .strip_prefix(&root)
            .unwrap_or(&component.path);
        println!(
            "    {} {:>8} bytes  {}, valid stead:entity component",
            path.display(),
            component.size,
            if component.changed {
                "written"
            } else {
                "unchanged"
            },
        );
    }
    println!(
        "    {} components in {:.1}s",
        built.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(built)
}

fn demo() -> Result<()> {
    let built = build_guests()?;
    let root = root();
    for component in built.iter().filter(|c| is_example(&c.name)) {
        println!("    {}: {}", component.name, component.report);
    }
    run_cargo(
        "build the stead binary",
        &root,
        &["build", "-p", "stead-cli", "--bin", "stead"],
    )?;
    postgres::ensure_installed()?;
    step("the demo");
    demo::run(&root, &root.join("target/debug/stead"))
}

fn is_example(name: &str) -> bool {
    matches!(name, "account" | "cart")
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run_cargo(what: &str, dir: &Path, args: &[&str]) -> Result<()> {
    step(what);
    println!("    $ cargo {}", args.join(" "));
    let status = cargo()
        .args(args)
        .current_dir(dir)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Totals of `test result:` lines seen so far.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    /// Reads `test result: ok. 23 passed; 0 failed; 1 ignored; ...`.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test ...`, echoing its output and adding up its results.
fn run_cargo_tests(
    what: &str,
    dir: &Path,
    args: &[&str],
    envs: &[(&str, &std::ffi::OsStr)],
    tally: &mut Tally,
) -> Result<()> {
    step(what);
    println!("    $ cargo {}", args.join(" "));
    let mut child = cargo()
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(dir)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test output")?;
            tally.add_line(&line);
            println!("{line}");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() {
        println!(
            "\nxtask: {} passed, {} failed",
            tally.passed,
            tally.failed.max(1)
        );
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn test() -> Result<()> {
    let started = Instant::now();
    let root = root();
    // One target dir for both workspaces: the harness reuses the root's wasmtime.
    let target = root.join("target");
    let target = target.to_str().context("non-UTF-8 path")?;
    let components = root.join("target/guests");
    warn_if_low_disk(&root, 5, "a clean build of every test (target/ about 4 GB)");
    run_cargo("format check (root)", &root, &["fmt", "--all", "--check"])?;
    run_cargo(
        "format check (guests)",
        &root.join("guests"),
        &["fmt", "--all", "--check"],
    )?;
    build_guests()?;
    let mut tally = Tally::default();
    run_cargo_tests(
        "guest test-kit tests (native)",
        &root.join("guests"),
        &["test", "--workspace", "--target-dir", target],
        &[],
        &mut tally,
    )?;
    run_cargo_tests(
        "guest test-kit tests through the built components (wasm harness)",
        &root.join("guests"),
        &[
            "test",
            "-p",
            "account",
            "-p",
            "cart",
            "-p",
            "transfer",
            "--features",
            "harness",
            "--target-dir",
            target,
        ],
        &[("STEAD_TESTKIT_COMPONENTS", components.as_os_str())],
        &mut tally,
    )?;
    // One PostgreSQL server for every shared-journal test of the run.
    let postgres = postgres::start()?;
    let postgres_url = postgres.url();
    run_cargo_tests(
        "root workspace tests (sdk, host, integration)",
        &root,
        &["test", "--workspace"],
        &[("STEAD_TEST_POSTGRES", std::ffi::OsStr::new(&postgres_url))],
        &mut tally,
    )?;
    drop(postgres);
    step(&format!(
        "all tests passed in {:.0}s ({} ignored)",
        started.elapsed().as_secs_f64(),
        tally.ignored
    ));
    println!("xtask: {} passed, {} failed", tally.passed, tally.failed);
    Ok(())
}

fn lint() -> Result<()> {
    let root = root();
    let target = root.join("target");
    let target = target.to_str().context("non-UTF-8 path")?;
    run_cargo("format check (root)", &root, &["fmt", "--all", "--check"])?;
    run_cargo(
        "format check (guests)",
        &root.join("guests"),
        &["fmt", "--all", "--check"],
    )?;
    run_cargo(
        "clippy (root)",
        &root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    run_cargo(
        "clippy (sdk with its wasm harness)",
        &root,
        &[
            "clippy",
            "-p",
            "stead-sdk",
            "--features",
            "harness",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    run_cargo(
        "clippy (guests)",
        &root.join("guests"),
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--target-dir",
            target,
            "--",
            "-D",
            "warnings",
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn tally_adds_up_cargo_test_result_lines() {
        let mut tally = Tally::default();
        tally.add_line("test result: ok. 23 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        tally.add_line("test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured");
        tally.add_line("running 4 tests");
        assert_eq!((tally.passed, tally.failed, tally.ignored), (25, 3, 1));
    }
}
