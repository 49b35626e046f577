//! The wasm runtime: one wasmtime [`Engine`](wasmtime::Engine) per node,
//! compiled components ([`Deployment`]) and the guest instances that run them
//! ([`GuestInstance`]).
//!
//! Invariants:
//! - One engine per node; an epoch ticker thread advances it every
//!   [`EPOCH_TICK`], which bounds every guest call by its CPU deadline.
//! - Instances are created from an `InstancePre` (imports resolved once per
//!   deployment) and reused across commands and entities; there is never an
//!   instance per entity. An instance whose call failed with a fault (trap,
//!   deadline, memory limit) is discarded, never reused.
//! - A guest fault is a typed [`GuestFault`] for the one call; it never
//!   panics the host and never touches state or journal (the runtime owns
//!   neither).
//! - Guests can reach only `log`: the linker defines nothing else, and
//!   deployment validates the component against the world first.

mod deployment;
mod instance;
mod registry;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use deployment::{Deployment, DeploymentError, component_hash};
pub use instance::{
    CommandCall, CommandOutcome, Decision, GuestFault, GuestInstance, NativeEntity, Rejection,
};
pub use registry::{Registry, RegistryError};
pub use stead_types::config::EngineOptions;

/// How often the engine's epoch advances; deadlines are counted in ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// What `describe` answered at deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityInfo {
    pub name: String,
    pub version: String,
    pub snapshot_every: u32,
}

/// The node's wasm engine and its epoch ticker.
pub struct Runtime {
    engine: wasmtime::Engine,
    options: EngineOptions,
    stop: Arc<AtomicBool>,
}

/// The engine could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the wasm engine: {0}")]
pub struct RuntimeError(String);

impl Runtime {
    /// Creates the engine and starts its epoch ticker.
    pub fn new(options: EngineOptions) -> Result<Arc<Self>, RuntimeError> {
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = wasmtime::Engine::new(&config).map_err(|e| RuntimeError(format!("{e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.weak();
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("stead-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .map_err(|e| RuntimeError(format!("starting the epoch ticker: {e}")))?;
        Ok(Arc::new(Self {
            engine,
            options,
            stop,
        }))
    }

    pub fn engine(&self) -> &wasmtime::Engine {
        &self.engine
    }

    pub fn options(&self) -> &EngineOptions {
        &self.options
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
