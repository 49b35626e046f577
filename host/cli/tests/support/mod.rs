//! Support for end-to-end tests: the `stead` binary started as a real
//! process on free ports and a temporary data directory, and the guests
//! built once per test process.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use stead_component::build::{BuildRequest, build};

pub(crate) fn root() -> PathBuf {
    // host/cli -> the repository root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("host/cli lives two levels below the root")
        .to_owned()
}

/// Path of the built guest `name` (e.g. `account`), building once.
pub(crate) fn guest_path(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = root();
        let request = BuildRequest {
            crate_dir: root.join("guests"),
            target_dir: root.join("target/wasm-build"),
            out_dir: root.join("target/guests"),
            show_cargo_output: false,
        };
        build(&request, &mut |line| eprintln!("{line}")).expect("guests build");
    });
    root().join("target/guests").join(format!("{name}.wasm"))
}

/// A `stead up` process; killed when dropped.
pub(crate) struct StartedNode {
    pub(crate) child: Child,
    pub(crate) grpc: SocketAddr,
    pub(crate) http: SocketAddr,
    /// The `stead ready: ...` line.
    pub(crate) ready: String,
}

impl StartedNode {
    /// Starts `stead up` on `data_dir` with free ports and waits until ready.
    pub(crate) fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    pub(crate) fn start_with(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(data_dir, extra, &[])
    }

    /// Like [`Self::start_with`], with extra environment variables.
    pub(crate) fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        // Test defaults, unless `extra` sets them.
        let mut defaults = Vec::new();
        for (flag, value) in [
            ("--grpc", "127.0.0.1:0"),
            ("--http", "127.0.0.1:0"),
            ("--shards", "16"),
            ("--workers", "2"),
        ] {
            if !extra.contains(&flag) {
                defaults.extend([flag, value]);
            }
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_stead"))
            .arg("up")
            .args(defaults)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("STEAD_LOG", "error")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("stead starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("ready line");
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
                .parse()
                .expect("address")
        };
        let (grpc, http) = (addr("grpc="), addr("http="));
        Self {
            child,
            grpc,
            http,
            ready: line.trim_end().to_owned(),
        }
    }

    pub(crate) fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// The gRPC address for a node started with `--tls-cert`, by the name
    /// its test certificate is for.
    pub(crate) fn grpc_tls_url(&self) -> String {
        format!("https://localhost:{}", self.grpc.port())
    }

    /// An HTTPS URL for a node started with `--tls-cert`.
    pub(crate) fn tls_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.http.port())
    }

    /// SIGKILL, then reap.
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("stead did not stop within 5 s of SIGTERM");
    }
}

impl Drop for StartedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP agent that returns error statuses instead of failing on them.
pub(crate) fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Runs the `stead` CLI; returns (exit success, stdout, stderr).
pub(crate) fn cli(args: &[&str]) -> (bool, String, String) {
    cli_with_env(args, &[])
}

/// Runs the `stead` CLI with extra environment variables.
pub(crate) fn cli_with_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stead"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("stead runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `stead up` with `args` expecting it to stop by itself (a refused
/// start) within 60 s; returns (exit status, stdout, stderr).
pub(crate) fn up_expecting_exit(
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stead"))
        .arg("up")
        .args(args)
        .env("STEAD_LOG", "error")
        .env_remove("STEAD_ADMIN_TOKEN")
        .env_remove("STEAD_ADMIN_TOKEN_FILE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stead starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "stead up {args:?} kept running; stdout: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
