//! `stead build`: a guest crate (or workspace) to validated components.

use std::path::PathBuf;

use anyhow::{Context, Result};

use stead_component::build::{BuildRequest, build};

pub(crate) fn build_command(
    path: Option<PathBuf>,
    out: Option<PathBuf>,
    target_dir: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let crate_dir = path.unwrap_or_else(|| PathBuf::from("."));
    let crate_dir = crate_dir
        .canonicalize()
        .with_context(|| format!("{} does not exist", crate_dir.display()))?;
    let request = BuildRequest {
        target_dir: target_dir.unwrap_or_else(|| crate_dir.join("target/stead-wasm")),
        out_dir: out.unwrap_or_else(|| crate_dir.join("target/stead")),
        crate_dir,
        show_cargo_output: !json,
    };
    let built = build(&request, &mut |line| eprintln!("stead: {line}"))?;
    for component in &built {
        if json {
            println!(
                "{}",
                serde_json::json!({"name": component.name, "path": component.path, "size_bytes": component.size})
            );
        } else {
            println!("{} ({} bytes)", component.path.display(), component.size);
        }
    }
    Ok(())
}
