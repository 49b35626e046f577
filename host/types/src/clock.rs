//! The clock seam: every reading of time that a command or an entity's
//! bookkeeping depends on goes through a [`Clock`], so tests (and later the
//! simulator) can set it.
//!
//! Invariant: [`Clock::mono_ms`] never goes backwards for one clock; the
//! wall time ([`Clock::wall_ms`]) may (it is what guests see as `now-ms`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A source of wall and monotonic time.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch: what commands see as `now-ms`.
    fn wall_ms(&self) -> u64;
    /// Milliseconds since an arbitrary origin, never decreasing: idle times.
    fn mono_ms(&self) -> u64;
}

/// The operating system's clocks.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn wall_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn mono_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The system's monotonic clock with a wall time that can be fixed: what
/// the test harness uses to give a command a chosen `now-ms`.
#[derive(Debug, Default)]
pub struct SettableClock {
    system: SystemClock,
    /// Non-zero: the fixed wall time.
    wall_ms: AtomicU64,
    /// Added to the system's monotonic time: a pause or a jump forward.
    mono_offset_ms: AtomicU64,
}

impl SettableClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fixes the wall time at `now_ms`, or follows the system's with `None`.
    pub fn set_wall_ms(&self, now_ms: Option<u64>) {
        self.wall_ms.store(now_ms.unwrap_or(0), Ordering::Relaxed);
    }

    /// Moves the monotonic time forward by `ms`, as if the process had been
    /// paused that long (it never moves back).
    pub fn advance_mono_ms(&self, ms: u64) {
        self.mono_offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

impl Clock for SettableClock {
    fn wall_ms(&self) -> u64 {
        match self.wall_ms.load(Ordering::Relaxed) {
            0 => self.system.wall_ms(),
            fixed => fixed,
        }
    }

    fn mono_ms(&self) -> u64 {
        self.system
            .mono_ms()
            .saturating_add(self.mono_offset_ms.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settable_clock_fixes_the_wall_time_and_follows_the_system_when_unset() {
        let clock = SettableClock::new();
        clock.set_wall_ms(Some(42));
        assert_eq!(clock.wall_ms(), 42);
        clock.set_wall_ms(None);
        assert!(clock.wall_ms() > 1_600_000_000_000);
        let a = clock.mono_ms();
        assert!(clock.mono_ms() >= a);
        clock.advance_mono_ms(5_000);
        assert!(clock.mono_ms() >= a + 5_000);
    }
}
