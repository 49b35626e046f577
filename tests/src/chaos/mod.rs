//! The crash loop: a real `stead up` process on one data directory, killed
//! again and again under load, checked after every restart.
//!
//! Each round starts the node, checks everything acknowledged so far (and
//! resolves what was in doubt), drives concurrent commands with command ids
//! on many `account` and `cart` entities over HTTP and gRPC, then kills the
//! node at a random moment: with SIGKILL (the page cache survives) or by a
//! power cut (the data dir is on [`crate::lazyfs`], and every write not yet
//! made durable is lost). A last restart checks the last round.
//!
//! What a check proves, for every entity:
//! - every acknowledged command's event is in the journal exactly once, in
//!   the order acknowledged, with sequence numbers contiguous from 1, and no
//!   event belongs to a command the client never sent;
//! - the view equals the fold of the journal's events by an independent
//!   model ([`model::Model`]), and every reply equals the fold up to its event;
//! - retrying an acknowledged command id returns its original reply and
//!   persists nothing; retrying a command in doubt is answered as a
//!   duplicate exactly when its event is in the journal;
//! - no entity that had an acknowledged command is missing.
//!
//! Every `account` command, retry and view is also recorded in the history
//! format the deterministic simulator records ([`history`]); the run
//! ends with the simulator's checkers on it: each account's history is
//! linearizable, and the journal holds every acknowledgement.
//!
//! Invariant of the driver: at most one command of an entity is in flight,
//! so an entity's acknowledged commands have a total order the journal must
//! match.

mod check;
pub mod client;
pub mod history;
pub mod model;

use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use check::check;
use client::{Client, Outcome};
use history::{HistoryChecked, Recorder, check_history, dump_accounts};
use model::{Kind, Ledger, Sent};

/// How the node is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL: the process dies, the kernel keeps every write it took.
    SigKill,
    /// A power cut: the data dir is on a LazyFS-style mount that forgets
    /// every write not yet fsynced, then the process is SIGKILLed.
    PowerLoss,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::SigKill => "sigkill",
            Fault::PowerLoss => "power-loss",
        })
    }
}

/// One chaos run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// The `stead` binary.
    pub stead: PathBuf,
    /// Directory holding `account.wasm` and `cart.wasm`.
    pub guests: PathBuf,
    /// A directory of the run's own (the node's data, mounts).
    pub work_dir: PathBuf,
    pub rounds: u32,
    /// Entities driven, half `account`, half `cart`.
    pub entities: usize,
    /// Concurrent clients (half HTTP, half gRPC), one command each in flight.
    pub clients: usize,
    /// The kill comes at a random moment in this window after load starts.
    pub kill_window: (Duration, Duration),
    pub fault: Fault,
    /// Seeds every random choice of the run (commands, kill moments).
    pub seed: u64,
    /// A PostgreSQL journal (`postgres://...`) instead of the embedded one;
    /// the node restarts under the same node id, so it takes its shards
    /// back at once.
    pub journal: Option<String>,
}

impl ChaosConfig {
    /// A run's defaults: 1,000 entities, 16 clients, kill 0.2 to 2 s in.
    pub fn new(stead: PathBuf, guests: PathBuf, work_dir: PathBuf, fault: Fault) -> Self {
        Self {
            stead,
            guests,
            work_dir,
            rounds: 5,
            entities: 1000,
            clients: 16,
            kill_window: (Duration::from_millis(200), Duration::from_millis(2000)),
            fault,
            seed: 1,
            journal: None,
        }
    }
}

/// What one round did, for progress and the report.
#[derive(Debug, Clone, Default)]
pub struct RoundReport {
    pub round: u32,
    pub round_seed: u64,
    /// Commands acknowledged during the round's load.
    pub acked: u64,
    /// Commands in flight when the node died (resolved at the next start).
    pub in_doubt: u64,
    /// Of the previous round's in-doubt commands: those found persisted.
    pub in_doubt_persisted: u64,
    /// Events read back and checked at the start of the round.
    pub events_verified: u64,
    /// Retries of acknowledged command ids answered as duplicates.
    pub retries_checked: u64,
    /// Of those, retries of commands past the node's dedup window (found in
    /// the journal's command-id index).
    pub retries_past_window: u64,
    /// Bytes of unsynced writes the power cut dropped (power loss only).
    pub lost_unsynced_bytes: u64,
    pub kill_after: Duration,
    pub restart_to_ready: Duration,
}

/// Totals of a run.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    pub fault: Option<Fault>,
    pub rounds: u32,
    pub crashes: u32,
    pub acked: u64,
    pub in_doubt: u64,
    pub events_verified_last: u64,
    pub events_verified_total: u64,
    pub retries_checked: u64,
    pub retries_past_window: u64,
    /// The simulator's checkers on the run's account history.
    pub history: HistoryChecked,
    pub elapsed: Duration,
}

/// A check failed: nothing about it is tolerated.
#[derive(Debug, Clone)]
pub struct ChaosFailure {
    pub fault: Fault,
    pub run_seed: u64,
    pub round: u32,
    pub reason: String,
}

impl fmt::Display for ChaosFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chaos ({}) failed in round {} of the run with seed {}: {}\n\
             replay: cargo xtask chaos --fault {} --seed {} --rounds {} \
             (the workload and kill moments replay; thread timing does not)",
            self.fault,
            self.round,
            self.run_seed,
            self.reason,
            self.fault,
            self.run_seed,
            self.round
        )
    }
}

impl std::error::Error for ChaosFailure {}

/// The seed of round `round` of a run (SplitMix64 of the pair).
pub fn round_seed(run_seed: u64, round: u32) -> u64 {
    let mut z = run_seed
        .wrapping_add(u64::from(round).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs the crash loop; `progress` sees each round as it ends.
pub fn run(
    config: &ChaosConfig,
    progress: &mut dyn FnMut(&RoundReport),
) -> Result<ChaosReport, ChaosFailure> {
    let fail = |round: u32| {
        move |reason: String| ChaosFailure {
            fault: config.fault,
            run_seed: config.seed,
            round,
            reason,
        }
    };
    let started = Instant::now();
    let mut storage = Storage::new(config).map_err(fail(0))?;
    let mut ledgers: Vec<Ledger> = (0..config.entities)
        .map(|i| {
            let kind = if i % 2 == 0 {
                Kind::Account
            } else {
                Kind::Cart
            };
            Ledger::new(kind, format!("e{i}"))
        })
        .collect();
    let counter = Arc::new(AtomicU64::new(0));
    let recorder = Arc::new(Recorder::new());
    let mut report = ChaosReport {
        fault: Some(config.fault),
        ..ChaosReport::default()
    };
    // Rounds 1..=rounds end with a kill; the extra last start only checks.
    for round in 1..=config.rounds + 1 {
        let seed = round_seed(config.seed, round);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut round_report = RoundReport {
            round,
            round_seed: seed,
            ..RoundReport::default()
        };
        let boot = Instant::now();
        let node = storage.start(config).map_err(fail(round))?;
        round_report.restart_to_ready = boot.elapsed();
        if round == 1 {
            node.deploy(&config.guests).map_err(fail(round))?;
        }
        let checked = check(&node, &mut ledgers, config.clients, &recorder).map_err(fail(round))?;
        round_report.events_verified = checked.events;
        round_report.retries_checked = checked.retries;
        round_report.retries_past_window = checked.retries_past_window;
        round_report.in_doubt_persisted = checked.in_doubt_persisted;
        report.events_verified_last = checked.events;
        report.events_verified_total += checked.events;
        report.retries_checked += checked.retries;
        report.retries_past_window += checked.retries_past_window;
        if round > config.rounds {
            let accounts = ledgers
                .iter()
                .filter(|l| l.kind == Kind::Account)
                .map(|l| l.id.as_str());
            let dump = dump_accounts(&node.http, accounts).map_err(fail(round))?;
            let keep = config.work_dir.join("history.jsonl");
            report.history =
                check_history(&recorder.history(), &dump, Some(&keep)).map_err(fail(round))?;
            node.stop().map_err(fail(round))?;
            report.rounds = config.rounds;
            report.elapsed = started.elapsed();
            progress(&round_report);
            return Ok(report);
        }

        let (low, high) = config.kill_window;
        let kill_after = low + (high.saturating_sub(low)).mul_f64(rng.f64());
        round_report.kill_after = kill_after;
        let load = Load::start(
            &node,
            std::mem::take(&mut ledgers),
            config.clients,
            round,
            &counter,
            &recorder,
            &mut rng,
        )
        .map_err(fail(round))?;
        std::thread::sleep(kill_after);
        round_report.lost_unsynced_bytes = storage.cut_power();
        node.kill();
        let (back, acked, in_doubt) = load.finish().map_err(fail(round))?;
        ledgers = back;
        storage.after_kill().map_err(fail(round))?;
        round_report.acked = acked;
        round_report.in_doubt = in_doubt;
        report.acked += acked;
        report.in_doubt += in_doubt;
        report.crashes += 1;
        if acked == 0 {
            return Err(fail(round)(format!(
                "no command was acknowledged in {kill_after:?} of load"
            )));
        }
        progress(&round_report);
    }
    unreachable!("the loop returns after its last round")
}

/// Where the node's data lives, and how power is cut.
enum Storage {
    Plain {
        data_dir: PathBuf,
    },
    Lazy {
        backing: PathBuf,
        mount_point: PathBuf,
        fs: Option<crate::lazyfs::LazyFs>,
    },
}

impl Storage {
    fn new(config: &ChaosConfig) -> Result<Self, String> {
        let dir = |name: &str| -> Result<PathBuf, String> {
            let path = config.work_dir.join(name);
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(path)
        };
        Ok(match config.fault {
            Fault::SigKill => Storage::Plain {
                data_dir: dir("data")?,
            },
            Fault::PowerLoss => {
                crate::lazyfs::fuse_available()?;
                Storage::Lazy {
                    backing: dir("backing")?,
                    mount_point: dir("mnt")?,
                    fs: None,
                }
            }
        })
    }

    fn start(&mut self, config: &ChaosConfig) -> Result<NodeProcess, String> {
        let data_dir = match self {
            Storage::Plain { data_dir } => data_dir.clone(),
            Storage::Lazy {
                backing,
                mount_point,
                fs,
            } => {
                let mounted = crate::lazyfs::LazyFs::mount(backing, mount_point)
                    .map_err(|e| format!("mounting the power-loss file system: {e}"))?;
                *fs = Some(mounted);
                mount_point.join("data")
            }
        };
        let mut args = Vec::new();
        if let Some(journal) = &config.journal {
            args.extend(["--journal".to_owned(), journal.clone()]);
            args.extend(["--node-id".to_owned(), "chaos-node".to_owned()]);
        }
        NodeProcess::start_with(&config.stead, &data_dir, &args)
    }

    /// Drops every unsynced write (power loss only); the bytes lost.
    fn cut_power(&self) -> u64 {
        match self {
            Storage::Lazy { fs: Some(fs), .. } => fs.cut_power().bytes,
            _ => 0,
        }
    }

    fn after_kill(&mut self) -> Result<(), String> {
        if let Storage::Lazy { fs, .. } = self
            && let Some(fs) = fs.take()
        {
            fs.unmount();
        }
        Ok(())
    }
}

/// A `stead up` process on free ports.
pub struct NodeProcess {
    child: Child,
    pub grpc: String,
    pub http: String,
    stead: PathBuf,
}

impl NodeProcess {
    /// Starts `stead up` on `data_dir` and waits for its ready line.
    pub fn start(stead: &Path, data_dir: &Path) -> Result<Self, String> {
        Self::start_with(stead, data_dir, &[])
    }

    /// [`NodeProcess::start`] with more `stead up` flags.
    pub fn start_with(stead: &Path, data_dir: &Path, args: &[String]) -> Result<Self, String> {
        let mut child = Command::new(stead)
            .args(["up", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(["--shards", "16", "--workers", "2"])
            // A window of 2: retries of older commands (the checks retry the
            // oldest) are recognised through the journal's command-id index.
            .args(["--dedup-window", "2"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("STEAD_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", stead.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("reading the ready line: {e}"))?;
        let addr = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .map(str::to_owned)
                .ok_or_else(|| format!("the node did not become ready (stdout: {line:?})"))
        };
        let (grpc, http) = match (addr("grpc="), addr("http=")) {
            (Ok(g), Ok(h)) => (g, h),
            (Err(e), _) | (_, Err(e)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        Ok(Self {
            child,
            grpc,
            http,
            stead: stead.to_owned(),
        })
    }

    /// Deploys `account` and `cart` with the CLI.
    pub fn deploy(&self, guests: &Path) -> Result<(), String> {
        for name in ["account", "cart"] {
            let out = Command::new(&self.stead)
                .args(["deploy", "--addr", &format!("http://{}", self.grpc)])
                .arg(guests.join(format!("{name}.wasm")))
                .output()
                .map_err(|e| format!("stead deploy: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "deploying {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok(())
    }

    /// The process id (to freeze it with SIGSTOP, say).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and a clean exit.
    pub fn stop(mut self) -> Result<(), String> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("the node exited with {status} on SIGTERM"))
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("the node did not stop within 20 s of SIGTERM".into())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a client thread gives back: its ledgers, the commands acknowledged
/// and how many it left in doubt.
type Share = (Vec<Ledger>, u64, u64);

/// The load of one round: client threads, each owning a share of the
/// entities' ledgers until the node dies.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Result<Share, String>>>,
}

impl Load {
    fn start(
        node: &NodeProcess,
        ledgers: Vec<Ledger>,
        clients: usize,
        round: u32,
        counter: &Arc<AtomicU64>,
        recorder: &Arc<Recorder>,
        rng: &mut fastrand::Rng,
    ) -> Result<Self, String> {
        let clients = clients.max(1);
        let mut shares: Vec<Vec<Ledger>> = (0..clients).map(|_| Vec::new()).collect();
        // Entities change client (and so protocol) from round to round.
        for (i, ledger) in ledgers.into_iter().enumerate() {
            shares[(i + round as usize) % clients].push(ledger);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (c, share) in shares.into_iter().enumerate() {
            let mut client = if c % 2 == 0 {
                Client::http(&node.http)
            } else {
                Client::grpc(&node.grpc)?
            };
            let stop = stop.clone();
            let counter = counter.clone();
            let recorder = recorder.clone();
            let mut rng = fastrand::Rng::with_seed(rng.u64(..));
            threads.push(std::thread::spawn(move || {
                let context = Driver {
                    stop: &stop,
                    counter: &counter,
                    recorder: &recorder,
                    client: c as u64,
                    round,
                };
                drive(&mut client, share, &context, &mut rng)
            }));
        }
        Ok(Self { stop, threads })
    }

    /// Stops the clients (the node is dead by now) and returns the ledgers,
    /// the commands acknowledged and those left in doubt.
    fn finish(self) -> Result<Share, String> {
        self.stop.store(true, Ordering::SeqCst);
        let mut ledgers = Vec::new();
        let (mut acked, mut in_doubt) = (0, 0);
        let mut first_error = None;
        for thread in self.threads {
            match thread.join() {
                Ok(Ok((share, a, d))) => {
                    ledgers.extend(share);
                    acked += a;
                    in_doubt += d;
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert("a client thread panicked".into());
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        // Back in entity order, so the next round's shares are stable.
        ledgers.sort_by_key(|l| l.id[1..].parse::<usize>().unwrap_or(usize::MAX));
        Ok((ledgers, acked, in_doubt))
    }
}

/// What a client thread of the load shares with the run.
struct Driver<'a> {
    stop: &'a AtomicBool,
    counter: &'a AtomicU64,
    recorder: &'a Recorder,
    /// The client's number in the history.
    client: u64,
    round: u32,
}

/// Records an acknowledged account command in the history (carts are not
/// modelled by the history's checkers). Other outcomes are not recorded:
/// the command stays in doubt and is sent again, under its id and first
/// invocation time, until acknowledged (the last round's check resolves
/// every command in doubt).
pub(crate) fn record_acked(
    recorder: &Recorder,
    client: u64,
    ledger: &Ledger,
    sent: &Sent,
    outcome: &Outcome,
) -> Result<(), String> {
    if ledger.kind != Kind::Account || !matches!(outcome, Outcome::Acked { .. }) {
        return Ok(());
    }
    recorder.record_command(
        client,
        &ledger.id,
        &sent.payload,
        &sent.command_id,
        sent.invoked_at,
        outcome,
    )
}

/// One client's loop: a random entity of its share, its next command (or
/// the one in doubt, again), until told to stop. Returns its ledgers, the
/// commands acknowledged, and how many are left in doubt.
fn drive(
    client: &mut Client,
    mut share: Vec<Ledger>,
    context: &Driver<'_>,
    rng: &mut fastrand::Rng,
) -> Result<Share, String> {
    let Driver {
        stop,
        counter,
        recorder,
        round,
        ..
    } = context;
    let mut acked = 0;
    let mut unreachable_since: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) && !share.is_empty() {
        let pick = rng.usize(..share.len());
        let ledger = &mut share[pick];
        let sent = match ledger.in_doubt.take() {
            Some(sent) => sent,
            None => Sent {
                command_id: format!("r{round}-c{}", counter.fetch_add(1, Ordering::Relaxed)),
                payload: ledger.model.next_command(ledger.kind, rng),
                invoked_at: recorder.now(),
            },
        };
        let outcome = client.send(
            ledger.kind.type_name(),
            &ledger.id,
            &sent.payload,
            &sent.command_id,
        );
        record_acked(recorder, context.client, ledger, &sent, &outcome)?;
        match outcome {
            Outcome::Acked {
                reply,
                seq_nr,
                duplicate,
            } => {
                ledger.acknowledge(sent, reply, seq_nr, duplicate)?;
                acked += 1;
                unreachable_since = None;
            }
            outcome if outcome.is_transient() => {
                ledger.in_doubt = Some(sent);
                // The node is dying; don't spin on a closed port.
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(60) {
                    return Err(format!("the node was unreachable for 60 s: {outcome:?}"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            outcome => {
                return Err(format!(
                    "{} {} refused command {} {} over {}: {outcome:?}",
                    ledger.kind.type_name(),
                    ledger.id,
                    sent.command_id,
                    sent.payload,
                    client.protocol()
                ));
            }
        }
    }
    let in_doubt = share.iter().filter(|l| l.in_doubt.is_some()).count() as u64;
    Ok((share, acked, in_doubt))
}
