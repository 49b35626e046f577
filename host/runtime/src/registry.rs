//! The registry of live deployments, one per entity type, persisted in the
//! node's data directory:
//!
//! ```text
//! <dir>/<sha256>.wasm      the component bytes as deployed
//! <cache>/<sha256>.cwasm   its precompiled native code (by default <dir>)
//! <dir>/deployments.json   entity type -> sha256 of the live component
//! ```
//!
//! Invariants: a deploy is all-or-nothing. The component is validated,
//! compiled and described before anything is written; its bytes are durable
//! before `deployments.json` names them; `deployments.json` is replaced
//! atomically (write, fsync, rename, fsync the directory). A refused deploy
//! leaves every live deployment as it was.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::deployment::component_hash;
use super::{Deployment, DeploymentError, Runtime};

const MANIFEST: &str = "deployments.json";

/// Live deployments by entity type.
pub struct Registry {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    cache_dir: PathBuf,
    live: RwLock<HashMap<String, Arc<Deployment>>>,
    /// Serialises deploys (each rewrites the manifest).
    deploy_lock: std::sync::Mutex<()>,
}

/// The registry's files could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Deployment(#[from] DeploymentError),
    #[error("deployment store {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("deployed component for `{entity_type}` ({hash}) no longer loads: {source}")]
    Reload {
        entity_type: String,
        hash: String,
        source: DeploymentError,
    },
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl Registry {
    /// Opens the registry in `dir`, loading every persisted deployment;
    /// compiled code is cached in `cache_dir`.
    pub fn open(
        runtime: Arc<Runtime>,
        dir: &Path,
        cache_dir: &Path,
    ) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let manifest_path = dir.join(MANIFEST);
        let manifest: BTreeMap<String, String> = match std::fs::read(&manifest_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| io_err(&manifest_path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io_err(&manifest_path, e)),
        };
        let mut live = HashMap::new();
        for (entity_type, hash) in manifest {
            let path = dir.join(format!("{hash}.wasm"));
            let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
            let deployment = Deployment::load(&runtime, &bytes, cache_dir).map_err(|source| {
                RegistryError::Reload {
                    entity_type: entity_type.clone(),
                    hash: hash.clone(),
                    source,
                }
            })?;
            live.insert(entity_type, Arc::new(deployment));
        }
        Ok(Self {
            runtime,
            dir: dir.to_owned(),
            cache_dir: cache_dir.to_owned(),
            live: RwLock::new(live),
            deploy_lock: std::sync::Mutex::new(()),
        })
    }

    /// The live deployment of `entity_type`.
    pub fn get(&self, entity_type: &str) -> Option<Arc<Deployment>> {
        self.live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(entity_type)
            .cloned()
    }

    /// Every live deployment, by type name.
    pub fn list(&self) -> Vec<Arc<Deployment>> {
        let mut all: Vec<_> = self
            .live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        all
    }

    /// Validates, compiles and persists a component, then makes it the live
    /// deployment of the entity type it describes. Blocks (compilation).
    pub fn deploy(&self, bytes: &[u8]) -> Result<Arc<Deployment>, RegistryError> {
        let deployment = self.prepare(bytes)?;
        self.install(&deployment, bytes)?;
        Ok(deployment)
    }

    /// Validates, compiles and describes a component without making it
    /// live (a deploy checked before it is shared). Blocks (compilation).
    pub fn prepare(&self, bytes: &[u8]) -> Result<Arc<Deployment>, RegistryError> {
        Ok(Arc::new(Deployment::load(
            &self.runtime,
            bytes,
            &self.cache_dir,
        )?))
    }

    /// Persists a prepared deployment (`bytes` are its component's) and
    /// makes it the live one of its type.
    pub fn install(&self, deployment: &Arc<Deployment>, bytes: &[u8]) -> Result<(), RegistryError> {
        let _guard = self.deploy_lock.lock().unwrap_or_else(|p| p.into_inner());
        let hash = component_hash(bytes);
        let wasm_path = self.dir.join(format!("{hash}.wasm"));
        write_durably(&wasm_path, bytes)?;
        // Native deployments live in memory only; they are never persisted.
        let mut manifest: BTreeMap<String, String> = self
            .list()
            .into_iter()
            .filter(|d| !d.hash.starts_with("native:"))
            .map(|d| (d.info.name.clone(), d.hash.clone()))
            .collect();
        manifest.insert(deployment.info.name.clone(), hash);
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| io_err(&self.dir, e))?;
        write_durably(&self.dir.join(MANIFEST), &json)?;
        self.live
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(deployment.info.name.clone(), deployment.clone());
        Ok(())
    }
}

impl Registry {
    /// Makes native logic the live deployment of its entity type, in memory
    /// only (a restart forgets it). For benchmarks and tests.
    pub fn deploy_native(
        &self,
        entity: Arc<dyn super::NativeEntity>,
    ) -> Result<Arc<Deployment>, RegistryError> {
        let deployment = Arc::new(Deployment::native(&self.runtime, entity)?);
        self.live
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(deployment.info.name.clone(), deployment.clone());
        Ok(deployment)
    }
}

/// Writes `bytes` to `path` so that after a crash it holds either the old
/// content or all of the new.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    file.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
    file.sync_all().map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    if let Some(parent) = path.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(parent, e))?;
    }
    Ok(())
}
