//! Entity components as artifacts: building them from a guest crate
//! ([`build`]), turning a core module into a component ([`componentize`]) and
//! checking a component against the `stead:entity` world ([`validate`]).
//!
//! This module knows nothing of running components (that is the runtime's) or
//! of storing them; it only turns source into checked bytes.

pub mod build;
pub mod toolchain;
pub mod validate;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use validate::{ComponentReport, Contract, ContractVersion, ValidationError, validate};

/// A core module could not be turned into a component.
#[derive(Debug, thiserror::Error)]
#[error("cannot turn the core module into a component: {0}")]
pub struct ComponentizeError(String);

/// Wraps a core wasm module (with wit-bindgen's embedded component-type
/// metadata) into a component. No WASI adapter: an entity may import only
/// what its world offers.
pub fn componentize(core_module: &[u8]) -> Result<Vec<u8>, ComponentizeError> {
    wit_component::ComponentEncoder::default()
        .module(core_module)
        .map_err(|e| ComponentizeError(format!("{e:#}")))?
        .validate(true)
        .encode()
        .map_err(|e| ComponentizeError(format!("{e:#}")))
}
