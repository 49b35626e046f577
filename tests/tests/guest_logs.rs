//! A guest's `log` lines reach the host's `tracing` output, tagged with the
//! entity type and id of the call, even when the call then traps.
//! (Its own test binary: it installs a global subscriber.)

use std::io::Write;
use std::sync::{Arc, Mutex};

use stead_tests::{guest, temp_node};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn guest_log_lines_are_traced_with_entity_type_and_id() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter("stead::guest=trace")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let (_dir, node) = temp_node(|_| {});
    node.deploy(&guest("hostile_trap")).expect("deploy");
    let result = node.send_blocking("hostile-trap", "t-42", br#"{"boom":{}}"#.to_vec(), None);
    assert!(result.is_err(), "the call traps");
    let text = String::from_utf8(capture.0.lock().expect("lock").clone()).expect("utf8");
    let line = text
        .lines()
        .find(|l| l.contains("boom requested: trapping now"))
        .unwrap_or_else(|| panic!("no guest log line in:\n{text}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("entity_type=\"hostile-trap\""), "{line}");
    assert!(line.contains("entity_id=\"t-42\""), "{line}");
}
