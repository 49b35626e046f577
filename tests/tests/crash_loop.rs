//! The crash loop, bounded for `cargo xtask test`: real `stead up` processes
//! on one data directory, killed under concurrent HTTP and gRPC load on
//! 1,000 entities of two types, checked after every restart (see
//! `stead_tests::chaos` for what each check proves), the account history
//! judged by the simulator's checkers at the end. `cargo xtask chaos` runs
//! the long version.

use std::time::Duration;

use stead_tests::chaos::{ChaosConfig, Fault, RoundReport, run};
use stead_tests::{guests_dir, stead_binary};

fn config(fault: Fault, rounds: u32, dir: &std::path::Path) -> ChaosConfig {
    let mut config = ChaosConfig::new(stead_binary(), guests_dir(), dir.to_owned(), fault);
    config.rounds = rounds;
    // A different run each time the suite runs; the seed is printed on failure.
    config.seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    config.kill_window = (Duration::from_millis(300), Duration::from_millis(1500));
    config
}

fn progress(round: &RoundReport) {
    eprintln!(
        "round {}: {} acked, {} in doubt ({} of the last found persisted), {} events verified, killed after {:?}, {} unsynced bytes lost",
        round.round,
        round.acked,
        round.in_doubt,
        round.in_doubt_persisted,
        round.events_verified,
        round.kill_after,
        round.lost_unsynced_bytes
    );
}

#[test]
fn sigkill_rounds_lose_and_duplicate_no_acknowledged_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = run(&config(Fault::SigKill, 4, dir.path()), &mut progress)
        .unwrap_or_else(|failure| panic!("{failure}"));
    eprintln!("{report:?}");
    assert_eq!(report.crashes, 4);
    assert!(report.acked > 0 && report.retries_checked > 0);
    assert!(
        report.retries_past_window > 0,
        "retries of commands older than the node's window went through the index"
    );
    assert!(
        report.history.operations > 0 && report.history.acknowledged > 0,
        "the account history was recorded and judged: {}",
        report.history
    );
}

#[test]
fn power_loss_rounds_lose_no_acknowledged_command() {
    if let Err(why) = stead_tests::lazyfs::fuse_available() {
        eprintln!("skipped: the power-loss file system needs FUSE ({why})");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let report = run(&config(Fault::PowerLoss, 3, dir.path()), &mut progress)
        .unwrap_or_else(|failure| panic!("{failure}"));
    eprintln!("{report:?}");
    assert_eq!(report.crashes, 3);
    assert!(report.acked > 0 && report.retries_checked > 0);
}

#[test]
fn sigkill_rounds_on_the_postgres_journal_lose_and_duplicate_no_acknowledged_command() {
    let db = stead_postgres_testing::database().expect("a test database");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(Fault::SigKill, 3, dir.path());
    config.journal = Some(db.url());
    let report = run(&config, &mut progress).unwrap_or_else(|failure| panic!("{failure}"));
    eprintln!("{report:?}");
    assert_eq!(report.crashes, 3);
    assert!(report.acked > 0 && report.retries_checked > 0);
    assert!(report.retries_past_window > 0);
}
