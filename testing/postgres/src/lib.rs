//! A real PostgreSQL server for tests and benchmarks, never a mock, and
//! the one `stead cluster up` runs for a local cluster ([`Server::open_kept`]:
//! its files kept in the cluster's data directory).
//!
//! [`Server::start`] runs `initdb` into a temporary directory and starts
//! `postgres` on a free loopback port (as the `postgres` user when the
//! process is root, since PostgreSQL refuses to run as root). The server is
//! a child of a thread that lives as long as the process, with
//! `PR_SET_PDEATHSIG`, so it dies with the test process even on a panic or a
//! SIGKILL: no stray servers.
//!
//! [`database`] hands each test a fresh database on one server shared by
//! the process: the server named by `STEAD_TEST_POSTGRES` (a base URL such
//! as `postgres://stead@127.0.0.1:5432`, which `cargo xtask test` sets so a
//! whole run shares one server), else one started on first use. A test that
//! restarts or stops its server (an outage) starts its own [`Server`].
//!
//! Binaries are found in `STEAD_PG_BIN`, then the newest
//! `/usr/lib/postgresql/*/bin`, then `PATH`.

#![allow(unsafe_code)] // one pre_exec hook that only calls prctl (see `spawn_postgres`)

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The role every test server is created with (trust authentication on
/// loopback only).
pub const USER: &str = "stead";

/// Why a server or database could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "PostgreSQL's server binaries (initdb, postgres) were not found in STEAD_PG_BIN, /usr/lib/postgresql/*/bin or PATH; install them (Debian: apt-get install postgresql; `cargo xtask test` does it when root)"
    )]
    NotInstalled,
    #[error("{what}: {detail}")]
    Failed { what: String, detail: String },
    #[error("PostgreSQL: {0}")]
    Sql(#[from] postgres::Error),
}

fn failed(what: impl Into<String>, detail: impl ToString) -> Error {
    Error::Failed {
        what: what.into(),
        detail: detail.to_string(),
    }
}

/// The directory with `initdb` and `postgres`.
pub fn bin_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("STEAD_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
        .ok_or(Error::NotInstalled)
}

/// Whether the server binaries are installed.
pub fn installed() -> bool {
    bin_dir().is_ok()
}

/// The uid and gid to run the server as: `postgres` when we are root.
fn server_user() -> Result<Option<(nix::unistd::Uid, nix::unistd::Gid)>, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .map_err(|e| failed("looking up the postgres user", e))?
        .ok_or_else(|| {
            failed(
                "running PostgreSQL as root",
                "no `postgres` user to run it as (Debian's postgresql package creates it)",
            )
        })?;
    Ok(Some((user.uid, user.gid)))
}

/// A PostgreSQL server of this process, stopped (immediate shutdown) and
/// deleted on drop.
pub struct Server {
    dir: ServerDir,
    port: u16,
    /// `name=value` server settings beyond the defaults.
    settings: Vec<String>,
    child: Mutex<Option<Child>>,
}

/// Where a server's files live.
enum ServerDir {
    /// Deleted with the server (tests, benchmarks).
    Temp(tempfile::TempDir),
    /// Kept (`stead cluster up`'s journal).
    Kept(PathBuf),
}

impl ServerDir {
    fn path(&self) -> &Path {
        match self {
            ServerDir::Temp(dir) => dir.path(),
            ServerDir::Kept(dir) => dir,
        }
    }
}

impl Server {
    /// Creates a cluster in a fresh temporary directory and starts it.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(&[])
    }

    /// [`Server::start`] with server settings (`name=value`, as `-c`).
    pub fn start_with(settings: &[&str]) -> Result<Self, Error> {
        let bin = bin_dir()?;
        remove_stale_servers();
        let dir = tempfile::Builder::new()
            .prefix("stead-pg-")
            .tempdir()
            .map_err(|e| failed("creating the server's directory", e))?;
        init(&bin, dir.path(), false)?;
        let server = Self {
            dir: ServerDir::Temp(dir),
            port: free_port()?,
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
            child: Mutex::new(None),
        };
        server.start_again()?;
        Ok(server)
    }

    /// A server whose files stay in `dir` (created by `initdb` on first
    /// use, durable: fsync on), started on loopback `port`. Stopped with a
    /// fast shutdown on drop, its data kept.
    pub fn open_kept(dir: &Path, port: u16) -> Result<Self, Error> {
        let bin = bin_dir()?;
        std::fs::create_dir_all(dir)
            .map_err(|e| failed(format!("creating {}", dir.display()), e))?;
        check_reachable(dir)?;
        if !dir.join("data/PG_VERSION").exists() {
            init(&bin, dir, true)?;
        }
        let server = Self {
            dir: ServerDir::Kept(dir.to_owned()),
            port,
            settings: Vec::new(),
            child: Mutex::new(None),
        };
        server.start_again()?;
        Ok(server)
    }

    /// The base URL of the server (no database).
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}", self.port)
    }

    /// The URL of `database` on this server.
    pub fn database_url(&self, database: &str) -> String {
        format!("{}/{database}", self.url())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the server: a fast shutdown (sessions are disconnected, the
    /// data is checkpointed), as `pg_ctl stop -m fast` does.
    pub fn stop(&self) -> Result<(), Error> {
        let mut child = self.lock();
        if let Some(mut running) = child.take() {
            let pid = nix::unistd::Pid::from_raw(running.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)
                .map_err(|e| failed("stopping PostgreSQL", e))?;
            running
                .wait()
                .map_err(|e| failed("waiting for PostgreSQL to stop", e))?;
        }
        Ok(())
    }

    /// Starts the server again on the same directory and port (after
    /// [`Server::stop`]); returns once it accepts connections.
    pub fn start_again(&self) -> Result<(), Error> {
        let mut child = self.lock();
        if child.is_some() {
            return Ok(());
        }
        let mut running = spawn_postgres(&self.data_dir(), self.port, &self.settings)?;
        let ready = wait_ready(&self.url(), &mut running);
        *child = Some(running);
        ready
    }

    /// `pg_ctl restart -m fast`: stop, then start.
    pub fn restart(&self) -> Result<(), Error> {
        self.stop()?;
        self.start_again()
    }

    /// Creates `name` unless it exists (a kept server's journal database).
    pub fn ensure_database(&self, name: &str) -> Result<(), Error> {
        let mut client =
            postgres::Client::connect(&self.database_url("postgres"), postgres::NoTls)?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])?
            .is_some();
        if !exists {
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            client.batch_execute(&format!("CREATE DATABASE {quoted}"))?;
        }
        Ok(())
    }

    /// A fresh database on this server, dropped with the handle.
    pub fn database(&self) -> Result<Database, Error> {
        Database::create(&self.url())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// When the server runs as the `postgres` user (we are root), every
/// directory above `dir` must let it through; say which does not, rather
/// than let `initdb` fail with "Permission denied".
fn check_reachable(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let Some((uid, _)) = server_user()? else {
        return Ok(());
    };
    let dir = dir
        .canonicalize()
        .map_err(|e| failed(format!("resolving {}", dir.display()), e))?;
    for ancestor in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor)
            .map_err(|e| failed(format!("reading {}", ancestor.display()), e))?;
        if meta.uid() != uid.as_raw() && meta.mode() & 0o001 == 0 {
            return Err(failed(
                format!(
                    "PostgreSQL runs as the `postgres` user (it refuses root) and cannot reach {}",
                    dir.display()
                ),
                format!(
                    "{} is not searchable by other users: choose a directory it can reach (e.g. under /var/lib or /tmp), or `chmod o+x {}`",
                    ancestor.display(),
                    ancestor.display()
                ),
            ));
        }
    }
    Ok(())
}

/// `initdb` into `<dir>/data`, as the `postgres` user when we are root.
fn init(bin: &Path, dir: &Path, durable: bool) -> Result<(), Error> {
    let user = server_user()?;
    if let Some((uid, gid)) = user {
        nix::unistd::chown(dir, Some(uid), Some(gid))
            .map_err(|e| failed("handing the directory to the postgres user", e))?;
    }
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-U", USER, "-A", "trust", "-E", "UTF8"])
        .args(["--no-instructions", "--locale=C"])
        .stdout(Stdio::null());
    if !durable {
        initdb.arg("--no-sync");
    }
    if let Some((uid, gid)) = user {
        initdb.uid(uid.as_raw()).gid(gid.as_raw());
    }
    let out = initdb.output().map_err(|e| failed("running initdb", e))?;
    if !out.status.success() {
        return Err(failed(
            "initdb",
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(())
}

impl Drop for Server {
    fn drop(&mut self) {
        if let ServerDir::Kept(_) = self.dir {
            // The data stays: shut down cleanly.
            let _ = self.stop();
            return;
        }
        if let Some(mut running) = self.lock().take() {
            // Immediate shutdown: the directory is deleted next.
            let pid = nix::unistd::Pid::from_raw(running.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
            let _ = running.wait();
        }
    }
}

/// Deletes the directories of servers whose process died without cleaning
/// up (the shared server of a process lives in a static and is never
/// dropped): older than ten minutes and with no live postmaster.
fn remove_stale_servers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let stale_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("stead-pg-"));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(600));
        if !stale_name || !old {
            continue;
        }
        let pid = std::fs::read_to_string(path.join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<i32>().ok());
        let alive = pid.is_some_and(|pid| {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        });
        if !alive {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn free_port() -> Result<u16, Error> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| failed("finding a free port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| failed("finding a free port", e))
}

/// Starts `postgres` as a child of a thread that never exits, so the
/// parent-death signal fires only when the whole process goes.
fn spawn_postgres(data: &Path, port: u16, settings: &[String]) -> Result<Child, Error> {
    type Spawn = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Spawn>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Spawn>();
        std::thread::Builder::new()
            .name("postgres-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
                // The sender lives in a static: never reached before exit.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawning the postgres-spawner thread");
        Mutex::new(tx)
    });
    let bin = bin_dir()?;
    let mut command = Command::new(bin.join("postgres"));
    command
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", data.display()))
        .args(["-c", "max_connections=300"])
        .args(["-c", "log_min_messages=fatal"])
        .args(settings.iter().flat_map(|s| ["-c", s.as_str()]))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some((uid, gid)) = server_user()? {
        command.uid(uid.as_raw()).gid(gid.as_raw());
    }
    // SAFETY: the hook runs in the forked child before exec and only makes
    // one async-signal-safe system call (prctl). It runs after the uid
    // change, which would otherwise clear the setting.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGQUIT)
                .map_err(std::io::Error::from)
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((command, tx))
        .map_err(|_| failed("starting postgres", "the spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| failed("starting postgres", "the spawner thread is gone"))?
        .map_err(|e| failed("starting postgres", e))
}

fn wait_ready(url: &str, child: &mut Child) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match postgres::Client::connect(&format!("{url}/postgres"), postgres::NoTls) {
            Ok(_) => return Ok(()),
            Err(e) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(failed("postgres exited at start", status));
                }
                if Instant::now() > deadline {
                    return Err(failed("postgres did not accept connections in 30 s", e));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A database created for one test; dropped (with its sessions) on drop.
pub struct Database {
    server_url: String,
    name: String,
}

impl Database {
    fn create(server_url: &str) -> Result<Self, Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin =
            postgres::Client::connect(&format!("{server_url}/postgres"), postgres::NoTls)?;
        admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
        Ok(Self {
            server_url: server_url.to_owned(),
            name,
        })
    }

    /// The database's URL.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server_url, self.name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A plain client of the database (for checks on its tables).
    pub fn client(&self) -> Result<postgres::Client, Error> {
        Ok(postgres::Client::connect(&self.url(), postgres::NoTls)?)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Ok(mut admin) =
            postgres::Client::connect(&format!("{}/postgres", self.server_url), postgres::NoTls)
        {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A fresh database on the process's shared server (see the module docs).
pub fn database() -> Result<Database, Error> {
    Database::create(&shared_url()?)
}

/// The base URL of the shared server, starting it on first use.
pub fn shared_url() -> Result<String, Error> {
    if let Ok(url) = std::env::var("STEAD_TEST_POSTGRES") {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    static SHARED: OnceLock<Result<Server, String>> = OnceLock::new();
    match SHARED.get_or_init(|| Server::start().map_err(|e| e.to_string())) {
        Ok(server) => Ok(server.url()),
        Err(e) => Err(failed("starting the shared test server", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_server_serves_fresh_databases_and_survives_a_restart() {
        let server = Server::start().expect("server");
        let db = server.database().expect("database");
        let mut client = db.client().expect("client");
        client
            .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
            .expect("write");
        drop(client);
        server.restart().expect("restart");
        let mut client = db.client().expect("client after restart");
        let row = client.query_one("SELECT x FROM t", &[]).expect("read");
        assert_eq!(row.get::<_, i32>(0), 7);
    }

    #[test]
    fn a_stopped_server_refuses_connections_until_started_again() {
        let server = Server::start().expect("server");
        server.stop().expect("stop");
        assert!(
            postgres::Client::connect(&server.database_url("postgres"), postgres::NoTls).is_err()
        );
        server.start_again().expect("start");
        assert!(
            postgres::Client::connect(&server.database_url("postgres"), postgres::NoTls).is_ok()
        );
    }
}
