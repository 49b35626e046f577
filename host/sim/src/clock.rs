//! A simulated node's clock: simulated time seen through the node's own
//! offset (wall), rate drift and jumps. Monotonic time only jumps forward
//! (a pause); wall time may jump either way (an NTP step).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use stead_types::Clock;

/// Milliseconds since the Unix epoch at which every simulation starts.
pub const EPOCH_MS: u64 = 1_798_761_600_000; // 2027-01-01

/// One node's view of time.
#[derive(Debug, Default)]
pub struct SimClock {
    /// Rate error in parts per million (positive: runs fast).
    drift_ppm: i64,
    /// Added to the wall time (skew, and backwards or forwards steps).
    wall_offset_ms: AtomicI64,
    /// Added to the monotonic time (forward jumps only).
    mono_jump_ms: AtomicU64,
}

impl SimClock {
    pub fn new(drift_ppm: i64, wall_offset_ms: i64) -> Arc<Self> {
        Arc::new(Self {
            drift_ppm,
            wall_offset_ms: AtomicI64::new(wall_offset_ms),
            mono_jump_ms: AtomicU64::new(0),
        })
    }

    /// Steps the wall clock by `ms` (either way).
    pub fn step_wall(&self, ms: i64) {
        self.wall_offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Jumps the monotonic clock forward by `ms`.
    pub fn jump_mono(&self, ms: u64) {
        self.mono_jump_ms.fetch_add(ms, Ordering::Relaxed);
    }

    fn elapsed_ms(&self) -> u64 {
        let ms = turmoil::sim_elapsed().map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        let drifted = i128::from(ms) + i128::from(ms) * i128::from(self.drift_ppm) / 1_000_000;
        u64::try_from(drifted.max(0)).unwrap_or(0)
    }
}

impl Clock for SimClock {
    fn wall_ms(&self) -> u64 {
        let wall = i128::from(EPOCH_MS)
            + i128::from(self.elapsed_ms())
            + i128::from(self.wall_offset_ms.load(Ordering::Relaxed));
        u64::try_from(wall.max(0)).unwrap_or(0)
    }

    fn mono_ms(&self) -> u64 {
        self.elapsed_ms()
            .saturating_add(self.mono_jump_ms.load(Ordering::Relaxed))
    }
}

thread_local! {
    /// The simulated time (ns) of the run on this thread, for the
    /// process's own clock (see [`virtual_now_ns`]).
    static VIRTUAL_NOW_NS: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Publishes the simulated time of the run on this thread (the driver sets
/// it before each step); `None` once the run is over.
pub fn set_virtual_now(now: Option<std::time::Duration>) {
    VIRTUAL_NOW_NS.with(|v| v.set(now.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))));
}

/// The simulated time of the run on this thread, if one is in progress:
/// what the `stead-sim` binary's `clock_gettime` answers on this thread,
/// so that libraries reading std's clocks directly (hyper's HTTP/2
/// keep-alive deadlines, for one) see simulated time too.
pub fn virtual_now_ns() -> Option<u64> {
    VIRTUAL_NOW_NS.try_with(Cell::get).ok().flatten()
}
