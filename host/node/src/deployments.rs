//! Deployments shared through the journal's store (with a shared journal):
//! a deploy on any node is stored in the database, and every node loads the
//! deploys it has not seen, at open and then by polling every
//! [`POLL_INTERVAL`]. The node's own `components/` directory stays the
//! cache of components and their compiled code.
//!
//! Invariants: a deploy is stored only after this node validated and
//! compiled it, and made live here only after it is stored (so no node
//! serves a version the others will never load); stored deploys are loaded
//! in their order, so every node ends on the last one of each type; a stored
//! component whose bytes do not match its SHA-256 is never loaded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use stead_journal::{DeploymentStore, StoredDeployment};
use stead_runtime::{Deployment, Registry};

use crate::NodeError;

/// How often a node looks for deploys made on other nodes.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The shortest time between two on-demand looks ([`SharedDeployments::refresh`]):
/// a flood of requests for an unknown type costs the database one query
/// per interval, not one per request.
const REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// The store, the registry it feeds, and how far this node has loaded.
pub(crate) struct SharedDeployments {
    store: Arc<dyn DeploymentStore>,
    registry: Arc<Registry>,
    /// The last stored deploy this node has loaded (or skipped as live).
    seen: AtomicU64,
    /// When the last on-demand refresh looked.
    refreshed: std::sync::Mutex<Option<std::time::Instant>>,
}

impl SharedDeployments {
    pub(crate) fn new(store: Arc<dyn DeploymentStore>, registry: Arc<Registry>) -> Self {
        Self {
            store,
            registry,
            seen: AtomicU64::new(0),
            refreshed: std::sync::Mutex::new(None),
        }
    }

    /// [`SharedDeployments::load_new`] on demand (a request for a type
    /// unknown here), at most once per [`REFRESH_INTERVAL`]; concurrent
    /// callers wait for one look instead of each making their own.
    pub(crate) fn refresh(&self) -> Result<usize, NodeError> {
        let mut last = self
            .refreshed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < REFRESH_INTERVAL) {
            return Ok(0);
        }
        *last = Some(std::time::Instant::now());
        self.load_new()
    }

    /// Loads the latest deploy of every type (at open). A component that
    /// does not load fails the open: the node would serve an older version
    /// than the cluster.
    pub(crate) fn load_latest(&self) -> Result<(), NodeError> {
        let latest = self.store.latest().map_err(NodeError::Storage)?;
        let mut max = 0;
        for stored in &latest {
            max = max.max(stored.seq);
            self.install(stored)?;
        }
        self.seen.fetch_max(max, Ordering::AcqRel);
        if !latest.is_empty() {
            tracing::info!(types = latest.len(), "loaded the shared deployments");
        }
        Ok(())
    }

    /// Loads the deploys stored since the last one seen, in order; stops at
    /// the first that fails (retried at the next poll).
    pub(crate) fn load_new(&self) -> Result<usize, NodeError> {
        let new = self
            .store
            .since(self.seen.load(Ordering::Acquire))
            .map_err(NodeError::Storage)?;
        let mut loaded = 0;
        for stored in &new {
            if self.install(stored)? {
                loaded += 1;
            }
            self.seen.fetch_max(stored.seq, Ordering::AcqRel);
        }
        Ok(loaded)
    }

    /// Stores a deploy this node has prepared.
    pub(crate) fn publish(&self, deployment: &Deployment, bytes: &[u8]) -> Result<u64, NodeError> {
        self.store
            .publish(&deployment.info.name, &deployment.hash, bytes)
            .map_err(NodeError::Storage)
    }

    /// Makes a stored deploy live here unless it already is; returns
    /// whether it was installed.
    fn install(&self, stored: &StoredDeployment) -> Result<bool, NodeError> {
        if self
            .registry
            .get(&stored.type_name)
            .is_some_and(|live| live.hash == stored.sha256)
        {
            return Ok(false);
        }
        let actual = stead_runtime::component_hash(&stored.component);
        if actual != stored.sha256 {
            return Err(NodeError::Deploy(format!(
                "the stored component #{} of `{}` is corrupt: its SHA-256 is {actual}, not {}",
                stored.seq, stored.type_name, stored.sha256
            )));
        }
        let deployment = self.registry.prepare(&stored.component)?;
        self.registry.install(&deployment, &stored.component)?;
        tracing::info!(entity_type = %deployment.info.name, version = %deployment.info.version, hash = %deployment.hash, seq = stored.seq, "loaded a deploy made on another node");
        Ok(true)
    }
}

/// The polling thread; stopped when dropped.
pub(crate) struct Poller {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Poller {
    pub(crate) fn start(shared: Arc<SharedDeployments>) -> std::io::Result<Self> {
        let (stop, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("stead-deploy-poller".into())
            .spawn(move || poll(&shared, &stopped))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn poll(shared: &SharedDeployments, stop: &Receiver<()>) {
    let mut failing = false;
    loop {
        match stop.recv_timeout(POLL_INTERVAL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        match shared.load_new() {
            Ok(_) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "loading deploys made on other nodes failed; retrying");
                }
                failing = true;
            }
        }
    }
}
