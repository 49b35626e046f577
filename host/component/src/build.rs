//! Building guest crates into validated entity components.
//!
//! `cargo build --release --target wasm32-unknown-unknown` on the crate (or
//! every crate of a guest workspace), then every `cdylib` core module becomes a
//! component ([`super::componentize`]) that must pass [`super::validate`]
//! before it is written to `<out_dir>/<name>.wasm`.
//!
//! Invariants: a file in `out_dir` is always a complete, validated component
//! (written to a temporary file, then renamed); an unchanged component is not
//! rewritten, so a second build with nothing changed is a cargo no-op plus a
//! re-validation.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::toolchain::{self, Toolchain, ToolchainError, WASM_TARGET, tail};
use super::validate::{ComponentReport, ValidationError};

/// What to build and where.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// A guest crate, or a workspace of guest crates (built whole).
    pub crate_dir: PathBuf,
    /// Cargo's target directory for the wasm build.
    pub target_dir: PathBuf,
    /// Where `<name>.wasm` components are written.
    pub out_dir: PathBuf,
    /// Show cargo's own output (progress, warnings) on stderr; otherwise it is
    /// captured and its tail returned if the build fails.
    pub show_cargo_output: bool,
}

/// One component the build produced.
#[derive(Debug, Clone)]
pub struct BuiltComponent {
    /// The crate's library name, e.g. `account`.
    pub name: String,
    /// `<out_dir>/<name>.wasm`.
    pub path: PathBuf,
    /// Size of the component in bytes.
    pub size: u64,
    /// Its imports and exports, as validated.
    pub report: ComponentReport,
    /// Whether the file was (re)written by this build.
    pub changed: bool,
}

/// Why a guest build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Toolchain(#[from] ToolchainError),
    #[error("{0} has no Cargo.toml: not a guest crate")]
    NotACrate(PathBuf),
    #[error("could not run {cargo}: {source}")]
    Spawn {
        cargo: String,
        source: std::io::Error,
    },
    #[error("the guest build failed ({status}){output}")]
    CargoFailed { status: String, output: String },
    #[error(
        "the build of {0} produced no wasm cdylib: add `crate-type = [\"cdylib\"]` under [lib]"
    )]
    NoComponent(PathBuf),
    #[error("guest `{name}`: {source}")]
    Componentize {
        name: String,
        source: super::ComponentizeError,
    },
    #[error("guest `{name}` is not a valid entity component: {source}")]
    Invalid {
        name: String,
        source: ValidationError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Builds, componentizes and validates the guest(s) of `request`, installing
/// a toolchain first if needed (see [`toolchain::find_or_install`]).
pub fn build(
    request: &BuildRequest,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<BuiltComponent>, BuildError> {
    let manifest = request.crate_dir.join("Cargo.toml");
    let manifest_text = std::fs::read_to_string(&manifest)
        .map_err(|_| BuildError::NotACrate(request.crate_dir.clone()))?;
    let toolchain = toolchain::find_or_install(progress)?;
    progress(&format!(
        "building {} for {WASM_TARGET} with {toolchain}",
        request.crate_dir.display()
    ));
    let is_virtual_workspace = !manifest_text.lines().any(|l| l.trim() == "[package]");
    let modules = cargo_build(request, &manifest, &toolchain, is_virtual_workspace)?;
    if modules.is_empty() {
        return Err(BuildError::NoComponent(request.crate_dir.clone()));
    }
    std::fs::create_dir_all(&request.out_dir).map_err(|source| BuildError::Io {
        path: request.out_dir.clone(),
        source,
    })?;
    let contract = super::Contract::embedded().map_err(|source| BuildError::Invalid {
        name: "(contract)".into(),
        source,
    })?;
    let mut built = Vec::with_capacity(modules.len());
    for (name, core_path) in modules {
        let core = std::fs::read(&core_path).map_err(|source| BuildError::Io {
            path: core_path.clone(),
            source,
        })?;
        let component = super::componentize(&core).map_err(|source| BuildError::Componentize {
            name: name.clone(),
            source,
        })?;
        let report = contract
            .validate(&component)
            .map_err(|source| BuildError::Invalid {
                name: name.clone(),
                source,
            })?;
        let path = request.out_dir.join(format!("{name}.wasm"));
        let changed = write_if_changed(&path, &component)?;
        built.push(BuiltComponent {
            name,
            path,
            size: component.len() as u64,
            report,
            changed,
        });
    }
    built.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(built)
}

/// Runs cargo and returns `(library name, core module path)` per cdylib.
fn cargo_build(
    request: &BuildRequest,
    manifest: &Path,
    toolchain: &Toolchain,
    whole_workspace: bool,
) -> Result<Vec<(String, PathBuf)>, BuildError> {
    let (cargo, mut command) = match toolchain {
        Toolchain::Prebuilt { cargo } => (cargo.clone(), Command::new(cargo)),
        Toolchain::DebianBuildStd { cargo, rustc } => {
            let mut command = Command::new(cargo);
            command
                .env("RUSTC", rustc)
                // build-std is unstable; Debian's rustc is a release build.
                .env("RUSTC_BOOTSTRAP", "1")
                // rustup's library path must not leak into Debian's rustc.
                .env_remove("LD_LIBRARY_PATH")
                .env_remove("RUSTUP_TOOLCHAIN");
            (cargo.clone(), command)
        }
    };
    command
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(WASM_TARGET)
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(&request.target_dir);
    if whole_workspace {
        command.arg("--workspace");
    }
    if matches!(toolchain, Toolchain::DebianBuildStd { .. }) {
        command.arg("-Zbuild-std=std,panic_abort");
    }
    // Settings of an enclosing cargo (xtask, tests) must not change the guest
    // build: they would rebuild std or redirect the output.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        command.env_remove(var);
    }
    command.stdout(Stdio::piped()).stdin(Stdio::null());
    command.stderr(if request.show_cargo_output {
        Stdio::inherit()
    } else {
        Stdio::piped()
    });
    let mut child = command.spawn().map_err(|source| BuildError::Spawn {
        cargo: cargo.display().to_string(),
        source,
    })?;
    // Drain stderr on its own thread so a full pipe cannot stall cargo.
    let stderr_reader = child.stderr.take().map(|mut stderr| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        })
    });
    let mut modules = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|source| BuildError::Io {
                path: manifest.to_owned(),
                source,
            })?;
            if let Some(module) = cdylib_artifact(&line) {
                modules.push(module);
            }
        }
    }
    let status = child.wait().map_err(|source| BuildError::Spawn {
        cargo: cargo.display().to_string(),
        source,
    })?;
    let stderr = stderr_reader
        .and_then(|h| h.join().ok())
        .unwrap_or_default();
    if !status.success() {
        let output = if stderr.is_empty() {
            String::new()
        } else {
            format!(":\n{}", tail(&stderr, 40))
        };
        return Err(BuildError::CargoFailed {
            status: status.to_string(),
            output,
        });
    }
    Ok(modules)
}

/// Parses one line of cargo's JSON messages: a finished `cdylib` with a
/// `.wasm` file is a guest core module.
fn cdylib_artifact(line: &str) -> Option<(String, PathBuf)> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let target = message.get("target")?;
    let is_cdylib = target
        .get("kind")?
        .as_array()?
        .iter()
        .any(|k| k.as_str() == Some("cdylib"));
    if !is_cdylib {
        return None;
    }
    let name = target.get("name")?.as_str()?.replace('-', "_");
    let file = message
        .get("filenames")?
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.ends_with(".wasm"))?;
    Some((name, PathBuf::from(file)))
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool, BuildError> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    let io = |source| BuildError::Io {
        path: path.to_owned(),
        source,
    };
    // Unique per process and call: builds may run concurrently (test threads).
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("wasm.tmp-{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_messages_yield_only_wasm_cdylibs() {
        let cdylib = r#"{"reason":"compiler-artifact","target":{"kind":["cdylib"],"name":"my-cart"},"filenames":["/t/my_cart.wasm"]}"#;
        assert_eq!(
            cdylib_artifact(cdylib),
            Some(("my_cart".into(), PathBuf::from("/t/my_cart.wasm")))
        );
        let rlib = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"serde"},"filenames":["/t/libserde.rlib"]}"#;
        assert_eq!(cdylib_artifact(rlib), None);
        assert_eq!(
            cdylib_artifact(r#"{"reason":"build-finished","success":true}"#),
            None
        );
        assert_eq!(cdylib_artifact("not json"), None);
    }

    #[test]
    fn a_directory_without_cargo_toml_is_not_a_crate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let request = BuildRequest {
            crate_dir: dir.path().to_owned(),
            target_dir: dir.path().join("t"),
            out_dir: dir.path().join("o"),
            show_cargo_output: false,
        };
        let err = build(&request, &mut |_| {}).unwrap_err();
        assert!(matches!(err, BuildError::NotACrate(_)), "{err}");
    }

    #[test]
    fn unchanged_components_are_not_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.wasm");
        assert!(write_if_changed(&path, b"abc").expect("write"));
        assert!(!write_if_changed(&path, b"abc").expect("write"));
        assert!(write_if_changed(&path, b"abd").expect("write"));
        assert_eq!(std::fs::read(&path).expect("read"), b"abd");
    }
}
