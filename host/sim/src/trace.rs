//! The trace of a run: one line per thing that happened (faults, leases,
//! commands and their outcomes), stamped with simulated time. Two runs of
//! one seed must give the same trace byte for byte; its SHA-256 is what the
//! determinism test compares.

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// A shared, append-only trace.
#[derive(Clone, Default)]
pub struct Trace {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Trace {
    /// Appends a line, stamped with the simulated time.
    pub fn line(&self, what: impl Into<String>) {
        let ms = turmoil::sim_elapsed().map_or(0, |d| d.as_millis());
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.push(format!("{ms:>8} {}", what.into()));
    }

    /// Appends a line stamped `ms` (for the driver, outside any host).
    pub fn line_at(&self, ms: u128, what: impl Into<String>) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.push(format!("{ms:>8} {}", what.into()));
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Hex SHA-256 of the lines, each ended by a newline.
    pub fn hash(&self) -> String {
        let mut hasher = Sha256::new();
        for line in self.lines() {
            hasher.update(line.as_bytes());
            hasher.update(b"\n");
        }
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}
