//! Test support: real components for any variant of the world, built from WIT
//! text with a generated core module (every export traps if called), so tests
//! can prove what validation refuses without hand-writing wasm.

use wit_component::StringEncoding;
use wit_parser::{LiftLowerAbi, ManglingAndAbi, Resolve};

use super::validate::ENTITY_WORLD;

/// Builds a component for the world `entity` of the WIT package `wit`.
pub fn component_from_wit(wit: &str) -> Vec<u8> {
    component_from_wit_world(wit, ENTITY_WORLD)
}

/// Builds a component for the world `world` of the WIT package `wit`.
pub fn component_from_wit_world(wit: &str, world: &str) -> Vec<u8> {
    let mut resolve = Resolve::default();
    let pkg = resolve.push_str("test.wit", wit).expect("test WIT parses");
    let world = resolve
        .select_world(&[pkg], Some(world))
        .unwrap_or_else(|e| panic!("test WIT has no world `{world}`: {e:#}"));
    let mut module =
        wit_component::dummy_module(&resolve, world, ManglingAndAbi::Legacy(LiftLowerAbi::Sync));
    wit_component::embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)
        .expect("metadata embeds");
    super::componentize(&module).expect("test component encodes")
}

/// The embedded contract's text with `from` replaced by `to` (panics if
/// `from` is absent, so a test cannot silently stop testing anything).
pub fn contract_with(from: &str, to: &str) -> String {
    let wit = super::validate::ENTITY_WIT;
    assert!(wit.contains(from), "the contract has no `{from}`");
    wit.replacen(from, to, 1)
}
