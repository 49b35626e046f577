//! `stead-sim`: runs seeds of the deterministic cluster simulator and
//! prints one JSON report per seed (`cargo xtask sim` runs several of
//! these processes in parallel and sums them up).
//!
//! Usage: `stead-sim --component account.wasm [--seed S | --seeds N
//! --start S0 --stride K] [--broken VARIANT] [--trace]`.
//!
//! This binary owns the process's randomness: its `getrandom` (which std's
//! `HashMap` keys, `rand`'s thread generator and tokio's generator all come
//! from) answers from a generator seeded by the seed being run. Each seed
//! runs in a process of its own (several seeds: one child process each),
//! since some libraries keep process-wide counters (tokio seeds each
//! runtime's generator from one), so a seed's run is the same on every try
//! whatever ran before it.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use stead_sim::db::Broken;
use stead_sim::{SimOptions, run_seed};

/// The seed whose run is in progress (the `getrandom` below draws from it).
static CURRENT_SEED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Per thread: a splitmix64 state, seeded at the thread's first draw.
    static STATE: RefCell<Option<u64>> = const { RefCell::new(None) };
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Replaces libc's `getrandom` for this process (std and the `getrandom`
/// crate look the symbol up at run time; the build script exports it).
///
/// # Safety
/// `buf` must be valid for `len` bytes, as libc's contract says.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getrandom(buf: *mut u8, len: usize, _flags: u32) -> isize {
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        let s = state.get_or_insert_with(|| CURRENT_SEED.load(Ordering::Relaxed) ^ 0x5eed);
        for i in 0..len {
            let byte = (splitmix(s) & 0xff) as u8;
            // SAFETY: the caller gives `len` writable bytes at `buf`.
            unsafe { buf.add(i).write(byte) };
        }
    });
    isize::try_from(len).unwrap_or(isize::MAX)
}

/// Replaces libc's `clock_gettime` for this process: on a thread running a
/// seed, the monotonic clocks read the simulated time and the real-time
/// clock the simulated epoch plus it; everywhere else, the kernel's.
/// (std's `Instant` and `SystemTime` call it; tokio's paused clock and the
/// simulated time then agree.)
///
/// # Safety
/// `tp` must be valid for writing a `timespec`, as libc's contract says.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn clock_gettime(
    clock: libc::clockid_t,
    tp: *mut libc::timespec,
) -> libc::c_int {
    if let Some(ns) = stead_sim::clock::virtual_now_ns() {
        let ns = match clock {
            libc::CLOCK_REALTIME | libc::CLOCK_REALTIME_COARSE => {
                Some(stead_sim::clock::EPOCH_MS * 1_000_000 + ns)
            }
            libc::CLOCK_MONOTONIC
            | libc::CLOCK_MONOTONIC_RAW
            | libc::CLOCK_MONOTONIC_COARSE
            | libc::CLOCK_BOOTTIME => Some(1_000_000_000_000 + ns),
            _ => None,
        };
        if let Some(ns) = ns {
            // SAFETY: the caller gives a writable timespec at `tp`.
            unsafe {
                (*tp).tv_sec = (ns / 1_000_000_000) as libc::time_t;
                (*tp).tv_nsec = (ns % 1_000_000_000) as libc::c_long;
            }
            return 0;
        }
    }
    // SAFETY: the same contract, handed to the kernel.
    unsafe { libc::syscall(libc::SYS_clock_gettime, clock, tp) as libc::c_int }
}

struct Args {
    component: PathBuf,
    seeds: Vec<u64>,
    broken: Option<String>,
    trace: bool,
    cache: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut component = PathBuf::from("target/guests/account.wasm");
    let (mut seed, mut count, mut start, mut stride) = (None, 1u64, 1u64, 1u64);
    let mut broken = None;
    let mut trace = false;
    let mut cache = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let number = |v: String, name: &str| v.parse::<u64>().map_err(|e| format!("{name}: {e}"));
        match arg.as_str() {
            "--component" => component = PathBuf::from(value("--component")?),
            "--seed" => seed = Some(number(value("--seed")?, "--seed")?),
            "--seeds" => count = number(value("--seeds")?, "--seeds")?,
            "--start" => start = number(value("--start")?, "--start")?,
            "--stride" => stride = number(value("--stride")?, "--stride")?.max(1),
            "--trace" => trace = true,
            "--cache" => cache = Some(PathBuf::from(value("--cache")?)),
            "--broken" => {
                let name = value("--broken")?;
                broken_variant(&name)?;
                broken = Some(name);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let seeds = match seed {
        Some(s) => vec![s],
        None => (0..count).map(|i| start + i * stride).collect(),
    };
    Ok(Args {
        component,
        seeds,
        broken,
        trace,
        cache,
    })
}

fn broken_variant(name: &str) -> Result<Broken, String> {
    match name {
        "append-skips-epoch-check" => Ok(Broken::AppendSkipsEpochCheck),
        "lease-never-expires" => Ok(Broken::LeaseNeverExpires),
        "dedup-forgets-keys" => Ok(Broken::DedupForgetsKeys),
        other => Err(format!(
            "unknown --broken variant `{other}` (append-skips-epoch-check, lease-never-expires, dedup-forgets-keys)"
        )),
    }
}

fn component_bytes(args: &Args) -> Vec<u8> {
    std::fs::read(&args.component).unwrap_or_default()
}

/// The `transfer` component beside the `account` one, if built: the
/// saga workload runs when it is there.
fn saga_bytes(args: &Args) -> Option<Vec<u8>> {
    std::fs::read(args.component.with_file_name("transfer.wasm")).ok()
}

fn warm(args: &Args, cache: &std::path::Path) -> Result<(), stead_sim::SimError> {
    let account = component_bytes(args);
    let saga = saga_bytes(args);
    let mut components: Vec<&[u8]> = vec![&account];
    components.extend(saga.as_deref());
    stead_sim::warm_cache(&components, cache)
}

/// Runs each seed in a child process of its own, passing its report on.
fn run_children(args: &Args) -> bool {
    let Ok(me) = std::env::current_exe() else {
        eprintln!("stead-sim: cannot find its own executable");
        return true;
    };
    let cache = args.cache.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("stead-sim-cache-{}", std::process::id()))
    });
    if let Err(e) = warm(args, &cache) {
        eprintln!("stead-sim: {e}");
        return true;
    }
    let mut failed = false;
    for seed in &args.seeds {
        let mut child = std::process::Command::new(&me);
        child
            .arg("--component")
            .arg(&args.component)
            .arg("--cache")
            .arg(&cache)
            .args(["--seed", &seed.to_string()]);
        if let Some(b) = &args.broken {
            child.args(["--broken", b]);
        }
        if args.trace {
            child.arg("--trace");
        }
        match child.status() {
            Ok(status) => failed |= !status.success(),
            Err(e) => {
                eprintln!("stead-sim: seed {seed}: {e}");
                failed = true;
            }
        }
    }
    if args.cache.is_none() {
        let _ = std::fs::remove_dir_all(&cache);
    }
    failed
}

fn main() {
    // `STEAD_SIM_LOG=stead_node=debug` (a tracing filter): the nodes' logs
    // on stderr, to follow a seed's run.
    if let Ok(filter) = std::env::var("STEAD_SIM_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .without_time()
            .init();
    }
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("stead-sim: {e}");
            std::process::exit(2);
        }
    };
    let component = match std::fs::read(&args.component) {
        Ok(bytes) => Arc::new(bytes),
        Err(e) => {
            eprintln!(
                "stead-sim: {}: {e} (build it with `cargo xtask sim`)",
                args.component.display()
            );
            std::process::exit(2);
        }
    };
    if args.seeds.len() > 1 {
        std::process::exit(i32::from(run_children(&args)));
    }
    let cache = args.cache.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("stead-sim-cache-{}", std::process::id()))
    });
    if let Err(e) = warm(&args, &cache) {
        eprintln!("stead-sim: {e}");
        std::process::exit(2);
    }
    let options = SimOptions {
        component,
        saga: saga_bytes(&args).map(Arc::new),
        compile_cache: cache.clone(),
        broken: args
            .broken
            .as_deref()
            .map_or(Ok(Broken::None), broken_variant)
            .unwrap_or_default(),
        keep_trace: args.trace,
    };
    let mut failed = false;
    for seed in args.seeds {
        CURRENT_SEED.store(seed, Ordering::Relaxed);
        let options = options.clone();
        // A fresh thread per seed: its generators start from the seed.
        let report = std::thread::Builder::new()
            .name(format!("sim-{seed}"))
            .spawn(move || run_seed(seed, &options))
            .map_err(|e| e.to_string())
            .and_then(|t| t.join().map_err(|_| "the run panicked".to_owned()));
        match report {
            Ok(Ok(report)) => {
                failed |= !report.violations.is_empty();
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            }
            Ok(Err(e)) => {
                eprintln!("stead-sim: seed {seed}: {e}");
                failed = true;
            }
            Err(e) => {
                eprintln!(
                    "stead-sim: seed {seed}: {e}; replay with `cargo xtask sim --seed {seed}`"
                );
                failed = true;
            }
        }
    }
    if args.cache.is_none() {
        let _ = std::fs::remove_dir_all(&cache);
    }
    std::process::exit(i32::from(failed));
}
