//! Logging from entity code.
//!
//! On `wasm32` a line goes to the host's `log` import, which tags it with the
//! entity type and id and writes it to the host's log. On native targets (the
//! test kit) lines are kept per thread so tests can read them with [`take`].

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Writes a line at `level`.
pub fn log(level: Level, message: &str) {
    imp::log(level, message);
}

/// Writes a line at `Trace`.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Writes a line at `Debug`.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes a line at `Info`.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes a line at `Warn`.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Writes a line at `Error`.
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Takes the lines logged on this thread so far (native targets only).
#[cfg(not(target_arch = "wasm32"))]
pub fn take() -> Vec<(Level, String)> {
    imp::LINES.with(|lines| std::mem::take(&mut *lines.borrow_mut()))
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use crate::__private::bindings::stead::entity::host;
    use crate::__private::bindings::stead::entity::types::LogLevel;

    pub(super) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        host::log(level, message);
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Level;
    use std::cell::RefCell;

    /// Lines kept for a test, bounded so a chatty entity cannot exhaust memory.
    const MAX_LINES: usize = 10_000;

    thread_local! {
        pub(super) static LINES: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn log(level: Level, message: &str) {
        LINES.with(|lines| {
            let mut lines = lines.borrow_mut();
            if lines.len() < MAX_LINES {
                lines.push((level, message.to_owned()));
            }
        });
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn native_log_lines_are_kept_per_thread_until_taken() {
        let _ = take();
        info("one");
        warn("two");
        assert_eq!(
            take(),
            vec![(Level::Info, "one".into()), (Level::Warn, "two".into())]
        );
        assert!(take().is_empty());
    }
}
