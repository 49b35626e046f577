//! A deployed component: validated, compiled once, its imports linked once.
//!
//! Compiled code is cached on disk as a precompiled artifact named by the
//! SHA-256 of the component bytes (`<cache>/<hash>.cwasm`), so a restart loads
//! native code instead of recompiling. An artifact that wasmtime refuses (a
//! different wasmtime version or settings) is recompiled and replaced.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::EntityInfo;
use super::Runtime;
use super::instance::{GuestInstance, NativeEntity, WasmCode, WasmInstance};
use stead_component::{ValidationError, validate};

/// A component ready to instantiate.
pub struct Deployment {
    pub info: EntityInfo,
    /// Lowercase hex SHA-256 of the component bytes.
    pub hash: String,
    pub size: usize,
    /// The contract version the component was validated against (`None`
    /// for native logic).
    pub contract: Option<stead_component::ContractVersion>,
    code: Code,
    runtime: Arc<Runtime>,
}

/// What instances are made of.
enum Code {
    Wasm(Arc<WasmCode>),
    Native(Arc<dyn NativeEntity>),
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("info", &self.info)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// Why a component cannot be deployed.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("invalid component: {0}")]
    Invalid(#[from] ValidationError),
    #[error("the component does not compile: {0}")]
    Compile(String),
    #[error("the component cannot be instantiated: {0}")]
    Instantiate(String),
    #[error("`describe` failed: {0}")]
    Describe(super::GuestFault),
    #[error("invalid entity type name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("component cache {path}: {reason}")]
    Cache { path: String, reason: String },
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn component_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Deployment {
    /// Validates, compiles (or loads from `cache_dir`), links and describes a
    /// component.
    pub fn load(
        runtime: &Arc<Runtime>,
        bytes: &[u8],
        cache_dir: &Path,
    ) -> Result<Self, DeploymentError> {
        let report = validate(bytes)?;
        let hash = component_hash(bytes);
        let component = compile_cached(runtime, bytes, &hash, cache_dir)?;
        let code = WasmCode::new(runtime.engine(), &component, report.contract)
            .map_err(|e| DeploymentError::Instantiate(format!("{e:#}")))?;
        let mut deployment = Self {
            info: EntityInfo {
                name: String::new(),
                version: String::new(),
                snapshot_every: 0,
            },
            hash,
            size: bytes.len(),
            contract: Some(report.contract),
            code: Code::Wasm(Arc::new(code)),
            runtime: runtime.clone(),
        };
        let mut instance = deployment
            .instantiate()
            .map_err(DeploymentError::Describe)?;
        let info = instance.describe().map_err(DeploymentError::Describe)?;
        check_name(&info.name)?;
        deployment.info = info;
        Ok(deployment)
    }

    /// A deployment of native logic (not persisted; benchmarks' yardstick).
    pub fn native(
        runtime: &Arc<Runtime>,
        entity: Arc<dyn NativeEntity>,
    ) -> Result<Self, DeploymentError> {
        let info = entity.describe();
        check_name(&info.name)?;
        Ok(Self {
            hash: format!("native:{}:{}", info.name, info.version),
            info,
            size: 0,
            contract: None,
            code: Code::Native(entity),
            runtime: runtime.clone(),
        })
    }

    /// Whether the component exports the optional `replay` interface, which
    /// folds many events per call during recovery (native logic always can).
    pub fn has_replay(&self) -> bool {
        match &self.code {
            Code::Wasm(code) => code.has_replay(),
            Code::Native(_) => true,
        }
    }

    /// A fresh instance of this component.
    pub fn instantiate(&self) -> Result<GuestInstance, super::GuestFault> {
        match &self.code {
            Code::Wasm(code) => Ok(GuestInstance::wasm(
                WasmInstance::new(&self.runtime, code)?,
                self.hash.clone(),
            )),
            Code::Native(entity) => Ok(GuestInstance::native(entity.clone(), self.hash.clone())),
        }
    }
}

/// Entity type names are routing keys, path segments and metric labels.
fn check_name(name: &str) -> Result<(), DeploymentError> {
    match stead_types::ids::entity_type_problem(name) {
        Some(reason) => Err(DeploymentError::InvalidName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        }),
        None => Ok(()),
    }
}

fn compile_cached(
    runtime: &Runtime,
    bytes: &[u8],
    hash: &str,
    cache_dir: &Path,
) -> Result<Component, DeploymentError> {
    let path = cache_dir.join(format!("{hash}.cwasm"));
    if path.exists() {
        // SAFETY: the artifact was written by `precompile_component` of this
        // node into its own data directory; wasmtime checks that it was made
        // by a compatible engine and refuses it otherwise (then we recompile).
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize_file(runtime.engine(), &path) };
        match loaded {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "recompiling a stale precompiled component")
            }
        }
    }
    let cache_error = |e: std::io::Error| DeploymentError::Cache {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let artifact = runtime
        .engine()
        .precompile_component(bytes)
        .map_err(|e| DeploymentError::Compile(format!("{e:#}")))?;
    std::fs::create_dir_all(cache_dir).map_err(cache_error)?;
    // Unique temporary name: nodes sharing a cache may compile concurrently.
    let tmp = path.with_extension(format!(
        "cwasm.tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    // Synced before the rename and the directory after it: a power cut
    // leaves the old name, or the whole artifact, never a torn one that
    // wasmtime would have to trust.
    std::fs::write(&tmp, &artifact)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .map_err(cache_error)?;
    std::fs::rename(&tmp, &path).map_err(cache_error)?;
    std::fs::File::open(cache_dir)
        .and_then(|d| d.sync_all())
        .map_err(cache_error)?;
    // SAFETY: as above; these bytes were just produced by this engine.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(runtime.engine(), &artifact) };
    component.map_err(|e| DeploymentError::Compile(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_type_names_are_checked() {
        assert!(check_name("account").is_ok());
        assert!(check_name("cart-v2_x").is_ok());
        for bad in ["", "Account", "a b", "a/b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn component_hash_is_hex_sha256() {
        assert_eq!(
            component_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
