//! Finding, or installing, a Rust toolchain that builds `wasm32-unknown-unknown`.
//!
//! Two kinds work:
//! - **prebuilt**: a rustc whose sysroot holds a wasm32 std (rustup's
//!   `wasm32-unknown-unknown` target); plain `cargo build --target ...`.
//! - **Debian build-std**: Debian's `rustc-web` with its library source
//!   (`rust-web-src`) and `rust-web-llvm` (`/usr/bin/rust-lld`, a link to
//!   `lld-22`'s linker); std is built from source with `-Zbuild-std`. Used
//!   where rustup cannot download a wasm32 std. If neither is present and the
//!   machine is Debian and we are root, the packages are installed (about
//!   25 s; concurrent builds wait for one install).
//!
//! Anything else stops with an error saying exactly what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The wasm target every guest is built for.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Debian packages of the build-std recipe.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "rust-web-llvm",
    "lld-22",
];

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_LLD: &str = "/usr/bin/rust-lld";
/// Oldest rustc that builds edition-2024 crates.
const MIN_RUSTC: (u32, u32) = (1, 85);

/// A toolchain able to build guests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toolchain {
    /// A cargo whose rustc has a prebuilt wasm32 std.
    Prebuilt { cargo: PathBuf },
    /// Debian's cargo and rustc, building std from source.
    DebianBuildStd { cargo: PathBuf, rustc: PathBuf },
}

impl std::fmt::Display for Toolchain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Toolchain::Prebuilt { cargo } => {
                write!(f, "{} with a prebuilt {WASM_TARGET} std", cargo.display())
            }
            Toolchain::DebianBuildStd { rustc, .. } => {
                write!(f, "Debian {} building std from source", rustc.display())
            }
        }
    }
}

/// No usable toolchain, and none could be installed.
#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    #[error(
        "no Rust toolchain that builds {WASM_TARGET} was found. Install one: \
         `rustup target add {WASM_TARGET}`, or on Debian (as root): \
         `apt-get install rustc-web cargo-web rust-web-src rust-web-llvm lld-22`"
    )]
    Missing,
    #[error("installing Debian packages ({packages}) failed: `{command}` {status}: {output}")]
    InstallFailed {
        packages: String,
        command: String,
        status: String,
        output: String,
    },
    #[error(
        "Debian packages {packages} were installed, but {missing} is still missing; \
         check `apt-cache policy rustc-web lld-22`"
    )]
    StillMissing { packages: String, missing: String },
}

/// Finds a toolchain without changing the machine.
pub fn find() -> Option<Toolchain> {
    find_prebuilt().or_else(|| debian_build_std().ok())
}

/// Finds a toolchain, installing Debian's packages when that is possible and
/// needed. `progress` receives one line per step worth telling a person.
pub fn find_or_install(progress: &mut dyn FnMut(&str)) -> Result<Toolchain, ToolchainError> {
    if let Some(toolchain) = find() {
        return Ok(toolchain);
    }
    if !(Path::new("/etc/debian_version").exists() && is_root()) {
        return Err(ToolchainError::Missing);
    }
    let packages = DEBIAN_PACKAGES.join(" ");
    // Concurrent builds (parallel tests, several tools) install once: the
    // first takes the lock and installs, the others wait and find it done.
    let lock_path = std::env::temp_dir().join("stead-wasm-toolchain.lock");
    let lock = std::fs::File::create(&lock_path).and_then(|f| f.lock().map(|()| f));
    if let Some(toolchain) = find() {
        return Ok(toolchain);
    }
    progress(&format!(
        "no wasm32 toolchain found: installing Debian packages {packages} (about 30 s)"
    ));
    run_apt(&["update", "-q"], &packages)?;
    let mut install = vec![
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        // Wait for another apt rather than fail on its lock.
        "-o",
        "DPkg::Lock::Timeout=600",
    ];
    install.extend_from_slice(DEBIAN_PACKAGES);
    run_apt(&install, &packages)?;
    drop(lock);
    debian_build_std().map_err(|missing| ToolchainError::StillMissing { packages, missing })
}

fn find_prebuilt() -> Option<Toolchain> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let std_dir = sysroot.join("lib/rustlib").join(WASM_TARGET).join("lib");
    if !std_dir.is_dir() {
        return None;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Some(Toolchain::Prebuilt {
        cargo: PathBuf::from(cargo),
    })
}

/// The Debian recipe if all of it is present, else what is missing.
fn debian_build_std() -> Result<Toolchain, String> {
    for (path, package) in [
        (DEBIAN_RUSTC, "rustc-web"),
        (DEBIAN_CARGO, "cargo-web"),
        (DEBIAN_LLD, "rust-web-llvm and lld-22"),
    ] {
        // `exists` follows symlinks: rust-lld is a link to lld-22.
        if !Path::new(path).exists() {
            return Err(format!("{path} (package {package})"));
        }
    }
    let version = Command::new(DEBIAN_RUSTC)
        .arg("--version")
        .output()
        .map_err(|e| format!("a working {DEBIAN_RUSTC} ({e})"))?;
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    match parse_rustc_version(&version) {
        Some(v) if v >= MIN_RUSTC => {}
        _ => {
            return Err(format!(
                "rustc >= {}.{} at {DEBIAN_RUSTC} (found {:?}; package rustc-web)",
                MIN_RUSTC.0,
                MIN_RUSTC.1,
                version.trim()
            ));
        }
    }
    let src = Path::new("/usr/lib/rustlib/src/rust/library/std");
    if !src.is_dir() {
        return Err(format!("{} (package rust-web-src)", src.display()));
    }
    Ok(Toolchain::DebianBuildStd {
        cargo: DEBIAN_CARGO.into(),
        rustc: DEBIAN_RUSTC.into(),
    })
}

/// `rustc 1.96.0 (ac68faa20 2026-05-25)` -> `(1, 96)`.
fn parse_rustc_version(text: &str) -> Option<(u32, u32)> {
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run_apt(args: &[&str], packages: &str) -> Result<(), ToolchainError> {
    let command = format!("apt-get {}", args.join(" "));
    let failed = |status: String, output: String| ToolchainError::InstallFailed {
        packages: packages.to_owned(),
        command: command.clone(),
        status,
        output,
    };
    let out = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| failed("could not start".into(), e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&out.stderr);
        Err(failed(out.status.to_string(), tail(&text, 20)))
    }
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustc_versions_parse_from_version_lines() {
        assert_eq!(
            parse_rustc_version(
                "rustc 1.96.0 (ac68faa20 2026-05-25) (built from a source tarball)"
            ),
            Some((1, 96))
        );
        assert_eq!(parse_rustc_version("rustc 1.63.0"), Some((1, 63)));
        assert_eq!(parse_rustc_version("garbage"), None);
    }

    #[test]
    fn the_missing_toolchain_error_says_what_to_install() {
        let text = ToolchainError::Missing.to_string();
        assert!(
            text.contains("rustup target add wasm32-unknown-unknown"),
            "{text}"
        );
        assert!(
            text.contains("apt-get install rustc-web cargo-web rust-web-src rust-web-llvm lld-22"),
            "{text}"
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
