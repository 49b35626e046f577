//! Support for the cross-crate tests in `tests/`: the guests built once per
//! test process, and nodes on temporary data directories.

pub mod chaos;
pub mod cluster;
pub mod lazyfs;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use stead_component::build::{BuildRequest, BuiltComponent, build};
use stead_node::{Node, NodeConfig};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives below the root")
        .to_owned()
}

/// Builds (or finds up to date) the guests workspace, as `cargo xtask` does.
pub fn build_guests() -> Vec<BuiltComponent> {
    let root = root();
    let request = BuildRequest {
        crate_dir: root.join("guests"),
        target_dir: root.join("target/wasm-build"),
        out_dir: root.join("target/guests"),
        show_cargo_output: false,
    };
    build(&request, &mut |line| eprintln!("{line}")).expect("guests build")
}

/// The bytes of the built guest `name` (e.g. `account`, `hostile_trap`),
/// building the guests once per process.
pub fn guest(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<Vec<BuiltComponent>> = OnceLock::new();
    let built = BUILT.get_or_init(build_guests);
    let component = built
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no guest named {name} in {built:?}"));
    std::fs::read(&component.path).expect("component file")
}

/// A node on a fresh temporary directory; the directory lives as long as
/// the returned guard.
pub fn temp_node(configure: impl FnOnce(&mut NodeConfig)) -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open_node(dir.path(), configure);
    (dir, node)
}

/// Opens a node on `dir` with small, test-friendly settings.
pub fn open_node(dir: &Path, configure: impl FnOnce(&mut NodeConfig)) -> Node {
    let mut config = test_config(dir);
    configure(&mut config);
    Node::open(config).expect("node opens")
}

/// The configuration tests start from: 2 workers, 16 shards.
pub fn test_config(dir: &Path) -> NodeConfig {
    let mut config = NodeConfig::new(dir);
    config.shard_count = 16;
    config.shards.workers = 2;
    config
}

/// Parses JSON bytes (for comparing replies and views).
pub fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// The `stead` binary of this workspace (debug), built if needed: the
/// chaos tests run it as real node processes.
pub fn stead_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| debug_binary("stead-cli", "stead"))
        .clone()
}

/// The deterministic simulator's binary (debug), built if needed: the
/// simulation tests run it as processes (it owns the process's randomness
/// and clocks, see `host/sim/src/bin/stead-sim.rs`).
pub fn sim_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| debug_binary("stead-sim", "stead-sim"))
        .clone()
}

/// Builds `bin` of `package` (debug) and returns its path.
fn debug_binary(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(root())
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the {bin} binary failed");
    root().join("target/debug").join(bin)
}

/// The directory of the built guest components (`<name>.wasm`), building
/// them once per process.
pub fn guests_dir() -> PathBuf {
    guest("account");
    root().join("target/guests")
}
