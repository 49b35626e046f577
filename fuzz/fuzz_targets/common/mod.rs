//! What several fuzz targets share: finding the built guest components.

use std::path::PathBuf;

/// `$STEAD_FUZZ_GUESTS`, default the root workspace's `target/guests/`.
pub fn guests_dir() -> PathBuf {
    std::env::var_os("STEAD_FUZZ_GUESTS").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/guests")),
        PathBuf::from,
    )
}

/// The built `account` component and its path; panics, saying how to build
/// it, when it is missing (a harness cannot run without it).
pub fn account_component() -> (PathBuf, Vec<u8>) {
    let path = guests_dir().join("account.wasm");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (build the guests first: `cargo xtask build-guests`)",
            path.display()
        )
    });
    (path, bytes)
}
