//! Tidy checks of the source tree, in the spirit of rust-analyzer's
//! `tidy.rs`: the architecture stays visible because a test fails when it
//! erodes.
//!
//! - Every Rust file starts with a `//!` doc saying what it owns.
//! - The host's crates depend on each other only in the allowed direction
//!   (see [`ALLOWED`]); Cargo forbids cycles, this forbids the wrong arrows.
//! - No crate's top-level modules import each other in a cycle.
//! - No file is over [`MAX_LINES`] lines unless it says why, in a line
//!   with the marker `tidy: long file:` followed by the reason.
//! - The frozen contract versions under `wit/frozen/` are byte for byte
//!   what was released ([`FROZEN_CONTRACTS`]): components built against
//!   them rely on it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use stead_tests::root;

const MAX_LINES: usize = 800;

/// Every frozen contract version and the SHA-256 of its WIT as released.
const FROZEN_CONTRACTS: &[(&str, &str)] = &[(
    "wit/frozen/0.1.0/entity.wit",
    "3350ab4744313eef18bbd209c13ac693be7043a291000adf0d25de9fb0f82581",
)];
const LONG_FILE_MARKER: &str = "tidy: long file:";

/// Each host crate and the stead crates its library may depend on. The
/// order is the layering: types, then the journal and component (both
/// beside each other), the runtime (never the journal), the engine, the
/// node, the API, the binary.
const ALLOWED: &[(&str, &[&str])] = &[
    ("stead-types", &[]),
    ("stead-journal", &["stead-types"]),
    ("stead-journal-sled", &["stead-types", "stead-journal"]),
    ("stead-journal-postgres", &["stead-types", "stead-journal"]),
    ("stead-component", &[]),
    ("stead-runtime", &["stead-types", "stead-component"]),
    (
        "stead-engine",
        &["stead-types", "stead-journal", "stead-runtime"],
    ),
    (
        "stead-node",
        &[
            "stead-types",
            "stead-journal",
            "stead-journal-sled",
            "stead-journal-postgres",
            "stead-runtime",
            "stead-engine",
        ],
    ),
    ("stead-cluster", &["stead-types", "stead-node"]),
    (
        "stead-api",
        &[
            "stead-types",
            "stead-journal",
            "stead-runtime",
            "stead-node",
            "stead-cluster",
        ],
    ),
    (
        "stead-cli",
        &[
            "stead-types",
            "stead-journal",
            "stead-journal-sled",
            "stead-journal-postgres",
            "stead-component",
            "stead-runtime",
            "stead-node",
            "stead-cluster",
            "stead-api",
            "stead-postgres-testing",
        ],
    ),
    // The SDK's harness runs components in a node, nothing above it.
    ("stead-sdk", &["stead-node"]),
    // The history format and its checkers stand alone.
    ("stead-history", &[]),
    // The simulator runs whole nodes on its seams.
    (
        "stead-sim",
        &[
            "stead-types",
            "stead-journal",
            "stead-node",
            "stead-cluster",
            "stead-api",
            "stead-history",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == "target-check" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every Rust file of the root workspace and the guests.
fn sources() -> Vec<PathBuf> {
    let root = root();
    let mut files = Vec::new();
    for dir in [
        "host", "sdk", "tests", "xtask", "examples", "guests", "fuzz",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} Rust files", files.len());
    files
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Files pasted into others with `include!` (an inner `//!` doc is not
/// allowed there): the including file's doc covers them.
fn included_files(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut included = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("readable source");
        for part in text.split("include!(\"").skip(1) {
            if let Some(target) = part.split('"').next()
                && let Some(dir) = file.parent()
                && let Ok(path) = dir.join(target).canonicalize()
            {
                included.insert(path);
            }
        }
    }
    included
}

#[test]
fn frozen_contract_versions_are_never_edited() {
    for (path, pinned) in FROZEN_CONTRACTS {
        let bytes = std::fs::read(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            &stead_runtime::component_hash(&bytes),
            pinned,
            "{path} changed: a released contract version must stay as released"
        );
    }
    let frozen = std::fs::read_dir(root().join("wit/frozen"))
        .expect("wit/frozen")
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .count();
    assert_eq!(
        frozen,
        FROZEN_CONTRACTS.len(),
        "every frozen version is pinned"
    );
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let files = sources();
    let included = included_files(&files);
    let missing: Vec<String> = files
        .iter()
        .filter(|path| !path.canonicalize().is_ok_and(|p| included.contains(&p)))
        .filter(|path| {
            let text = std::fs::read_to_string(path).expect("readable source");
            !text
                .lines()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.starts_with("//!"))
        })
        .map(|p| relative(p))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` doc at the top: {missing:#?}"
    );
}

#[test]
fn no_file_is_over_the_line_limit_without_a_stated_reason() {
    let long: Vec<String> = sources()
        .iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(path).expect("readable source");
            let lines = text.lines().count();
            (lines > MAX_LINES && !text.contains(LONG_FILE_MARKER))
                .then(|| format!("{} ({lines} lines)", relative(path)))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines without a `{LONG_FILE_MARKER} <reason>` line: {long:#?}"
    );
}

#[test]
fn host_crates_depend_only_on_the_crates_below_them() {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut seen = BTreeSet::new();
    let mut wrong = Vec::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("package name");
        let Some(allowed) = allowed.get(name) else {
            continue;
        };
        seen.insert(name);
        for dep in package["dependencies"].as_array().expect("dependencies") {
            let dep_name = dep["name"].as_str().expect("dependency name");
            // Normal and build dependencies shape the library; dev ones only
            // its tests.
            let normal = dep["kind"].is_null() || dep["kind"] == "build";
            if normal && dep_name.starts_with("stead-") && !allowed.contains(&dep_name) {
                wrong.push(format!("{name} -> {dep_name}"));
            }
        }
    }
    let missing: Vec<_> = allowed.keys().filter(|k| !seen.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "crates named in ALLOWED but not in the workspace: {missing:?}"
    );
    assert!(
        wrong.is_empty(),
        "dependencies against the layering (see ARCHITECTURE.md): {wrong:?}"
    );
}

/// The top-level modules of a crate's `src/` (files and directories), each
/// with the top-level modules its code (outside comments and tests) names
/// through `crate::` or, from a top-level file, `super::`.
fn module_imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("src dir").flatten() {
        let path = entry.path();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if stem == "lib" || stem == "main" {
            continue;
        }
        let mut files = Vec::new();
        if path.is_dir() {
            rust_files(&path, &mut files);
            // A module's tests in their own file (`#[cfg(test)] mod tests;`)
            // are test code, as an inline `mod tests` block is.
            files.retain(|f| f.file_name().is_none_or(|n| n != "tests.rs"));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path.clone());
        }
        modules.entry(stem).or_default().extend(files);
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(module, files)| {
            let mut uses = BTreeSet::new();
            for file in files {
                let text =
                    code_outside_tests(&std::fs::read_to_string(file).expect("readable source"));
                let top_level = file.parent() == Some(src);
                for name in &names {
                    if name == module {
                        continue;
                    }
                    let via_crate = text.contains(&format!("crate::{name}::"))
                        || text.contains(&format!("crate::{name};"))
                        || text.contains(&format!("crate::{{{name}"));
                    let via_super = top_level
                        && (text.contains(&format!("super::{name}::"))
                            || text.contains(&format!("super::{name};")));
                    if via_crate || via_super {
                        uses.insert(name.clone());
                    }
                }
            }
            (module.clone(), uses)
        })
        .collect()
}

/// The code of a file without comments (doc links are no imports) and
/// without its test module (tests may reach anywhere in their crate).
fn code_outside_tests(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_modules_that_import_each_other_in_a_cycle() {
    let root = root();
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("host"))
        .expect("host/")
        .flatten()
        .map(|e| e.path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    crates.extend(["sdk/src", "tests/src", "xtask/src"].map(|p| root.join(p)));
    let cycles: Vec<String> = crates
        .iter()
        .filter_map(|src| {
            find_cycle(&module_imports(src))
                .map(|cycle| format!("{}: {}", relative(src), cycle.join(" -> ")))
        })
        .collect();
    assert!(cycles.is_empty(), "module import cycles: {cycles:#?}");
}

#[test]
fn the_cycle_check_finds_a_planted_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn the_import_scan_sees_crate_and_super_paths_but_not_comments_or_tests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    let write = |name: &str, text: &str| std::fs::write(src.join(name), text).expect("write");
    write("lib.rs", "//! root\nmod a;\nmod b;\nmod c;\n");
    write("a.rs", "//! a\nuse super::b::Thing;\n");
    write(
        "b.rs",
        "//! b\nfn f() { crate::a::g() }\n// crate::c::not_an_import\n",
    );
    write(
        "c.rs",
        "//! c\n#[cfg(test)]\nmod tests { use crate::a::g; }\n",
    );
    let graph = module_imports(src);
    let uses = |m: &str| graph[m].iter().cloned().collect::<Vec<_>>();
    assert_eq!(uses("a"), vec!["b"]);
    assert_eq!(uses("b"), vec!["a"]);
    assert!(uses("c").is_empty());
    assert!(find_cycle(&graph).is_some(), "a and b import each other");
}
