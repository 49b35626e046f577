//! `cargo xtask demo`: the product's story end to end, with the real binary.
//!
//! Builds the guests and `stead`, starts `stead up` on a temporary data
//! directory, deploys `account` and `cart`, runs a short story through the
//! CLI, kills the node with SIGKILL, restarts it and shows the same state
//! recovered from snapshot plus replay, then stops it and cleans up; then
//! the same story on a 3-node cluster ([`cluster`]): failover to another
//! node after SIGKILL. Every step checks its result; any surprise ends the
//! demo with an error.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

mod cluster;

/// The path of a built example component, as text for the CLI.
fn guest_path(name: &str) -> Result<String> {
    crate::root()
        .join("target/guests")
        .join(format!("{name}.wasm"))
        .to_str()
        .map(str::to_owned)
        .context("the repository path is not UTF-8")
}

struct Node {
    child: Child,
    grpc: String,
    http: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(stead: &Path, data: &Path) -> Result<Node> {
    let mut child = Command::new(stead)
        .args(["up", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data)
        .env("STEAD_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting stead up")?;
    let stdout = child.stdout.take().context("stdout of stead up")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the ready line")?;
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_owned)
            .with_context(|| format!("stead up did not report {key} (said {line:?})"))
    };
    let grpc = format!("http://{}", field("grpc=")?);
    let http = field("http=")?;
    println!("    {}", line.trim());
    Ok(Node { child, grpc, http })
}

/// Runs a CLI command, shows it, and returns (success, stdout, stderr).
fn stead(bin: &Path, node: &Node, args: &[&str]) -> Result<(bool, String, String)> {
    let shown: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains(['{', ' ', '"']) {
                format!("'{a}'")
            } else {
                (*a).to_owned()
            }
        })
        .collect();
    println!("  $ stead {}", shown.join(" "));
    let out = Command::new(bin)
        .arg("--addr")
        .arg(&node.grpc)
        .args(args)
        .output()
        .context("running stead")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for line in stdout.lines().chain(stderr.lines()) {
        println!("    {line}");
    }
    Ok((out.status.success(), stdout, stderr))
}

fn expect_ok(bin: &Path, node: &Node, args: &[&str], contains: &str) -> Result<String> {
    let (ok, out, err) = stead(bin, node, args)?;
    ensure!(ok, "`stead {}` failed: {err}", args.join(" "));
    ensure!(
        out.contains(contains),
        "`stead {}` printed {out:?}, expected {contains:?}",
        args.join(" ")
    );
    Ok(out)
}

fn expect_json(bin: &Path, node: &Node, args: &[&str], expected: Value) -> Result<()> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = stead(bin, node, &all)?;
    ensure!(ok, "`stead {}` failed: {err}", args.join(" "));
    let got: Value =
        serde_json::from_str(out.trim()).with_context(|| format!("not JSON: {out}"))?;
    ensure!(
        got == expected,
        "`stead {}` gave {got}, expected {expected}",
        args.join(" ")
    );
    Ok(())
}

fn expect_refused(bin: &Path, node: &Node, args: &[&str], reason: &str) -> Result<()> {
    let (ok, _, err) = stead(bin, node, args)?;
    ensure!(
        !ok,
        "`stead {}` succeeded, expected a refusal",
        args.join(" ")
    );
    ensure!(
        err.contains(reason),
        "`stead {}` said {err:?}, expected {reason:?}",
        args.join(" ")
    );
    Ok(())
}

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

pub(crate) fn run(root: &Path, stead_bin: &Path) -> Result<()> {
    let data = std::env::temp_dir().join(format!("stead-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let result = story(root, stead_bin, &data);
    let _ = std::fs::remove_dir_all(&data);
    result?;
    let cluster_data =
        std::env::temp_dir().join(format!("stead-demo-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cluster_data);
    let result = cluster::story(stead_bin, &cluster_data, 9);
    let _ = std::fs::remove_dir_all(&cluster_data);
    result?;
    println!(
        "\nDone: a node was killed mid-life and came back with every acknowledged event; in a cluster, a killed node's entities were served by another within seconds.\n\
         \nTo do the same by hand:\n\
         \n  cargo xtask build-guests && cargo build -p stead-cli\
         \n  target/debug/stead up --data-dir /tmp/stead-data &\
         \n  target/debug/stead deploy target/guests/account.wasm\
         \n  target/debug/stead send account acc-1 '{{\"open\":{{\"owner\":\"ada\"}}}}'\
         \n  target/debug/stead send account acc-1 '{{\"deposit\":{{\"amount\":100}}}}' --id dep-1\
         \n  target/debug/stead get account acc-1\
         \n  target/debug/stead events account acc-1\
         \n  curl -s -XPOST localhost:7480/v1/entities/account/acc-1 -d '{{\"withdraw\":{{\"amount\":30}}}}'\
         \n  kill -9 %1; target/debug/stead up --data-dir /tmp/stead-data &   # state comes back\
         \n  target/debug/stead get account acc-1\
         \n\
         \n  target/debug/stead cluster up --nodes 3 &          # PostgreSQL + 3 nodes: gRPC 7400-7402, HTTP 7480-7482\
         \n  target/debug/stead cluster status"
    );
    Ok(())
}

fn story(root: &Path, bin: &Path, data: &Path) -> Result<()> {
    let guests: PathBuf = root.join("target/guests");
    let account = guests.join("account.wasm");
    let cart = guests.join("cart.wasm");
    let (account, cart) = (
        account.to_str().context("path")?,
        cart.to_str().context("path")?,
    );

    step(
        1,
        &format!(
            "start a node on a fresh data directory ({})",
            data.display()
        ),
    );
    let node = start(bin, data)?;

    step(2, "deploy the two example entities");
    expect_ok(bin, &node, &["deploy", account], "deployed account")?;
    expect_ok(bin, &node, &["deploy", cart], "deployed cart")?;
    expect_ok(bin, &node, &["types"], "cart")?;

    step(
        3,
        "an account: open, deposits, a rejected withdrawal, an idempotent retry",
    );
    expect_json(
        bin,
        &node,
        &["send", "account", "ada-1", r#"{"open":{"owner":"ada"}}"#],
        json!({"reply": {"balance": 0}, "seq_nr": 1, "duplicate": false}),
    )?;
    expect_ok(
        bin,
        &node,
        &["send", "account", "ada-1", r#"{"deposit":{"amount":100}}"#],
        r#"{"balance":100}"#,
    )?;
    expect_ok(
        bin,
        &node,
        &["send", "account", "ada-1", r#"{"deposit":{"amount":50}}"#],
        r#"{"balance":150}"#,
    )?;
    expect_refused(
        bin,
        &node,
        &["send", "account", "ada-1", r#"{"withdraw":{"amount":500}}"#],
        "insufficient funds",
    )?;
    expect_ok(
        bin,
        &node,
        &[
            "send",
            "account",
            "ada-1",
            r#"{"withdraw":{"amount":30}}"#,
            "--id",
            "w-1",
        ],
        r#"{"balance":120}"#,
    )?;
    expect_ok(
        bin,
        &node,
        &[
            "send",
            "account",
            "ada-1",
            r#"{"withdraw":{"amount":30}}"#,
            "--id",
            "w-1",
        ],
        "duplicate: original reply",
    )?;

    step(
        4,
        "a cart: add, remove, check out; after checkout it is final",
    );
    expect_ok(
        bin,
        &node,
        &[
            "send",
            "cart",
            "cart-7",
            r#"{"add_item":{"sku":"tea","quantity":2}}"#,
        ],
        "tea",
    )?;
    expect_ok(
        bin,
        &node,
        &[
            "send",
            "cart",
            "cart-7",
            r#"{"add_item":{"sku":"jam","quantity":1}}"#,
        ],
        "jam",
    )?;
    expect_ok(
        bin,
        &node,
        &["send", "cart", "cart-7", r#"{"remove_item":{"sku":"jam"}}"#],
        "tea",
    )?;
    expect_ok(
        bin,
        &node,
        &["send", "cart", "cart-7", r#"{"checkout":{}}"#],
        "checked_out",
    )?;
    expect_refused(
        bin,
        &node,
        &[
            "send",
            "cart",
            "cart-7",
            r#"{"add_item":{"sku":"tea","quantity":1}}"#,
        ],
        "cart is checked out",
    )?;

    step(
        5,
        "enough deposits for a snapshot (the account snapshots every 100 events)",
    );
    let http = format!("http://{}/v1/entities/account/ada-1", node.http);
    for i in 0..100 {
        let status = Command::new(bin)
            .arg("--addr")
            .arg(&node.grpc)
            .args([
                "send",
                "account",
                "ada-1",
                r#"{"deposit":{"amount":1}}"#,
                "--id",
                &format!("bulk-{i}"),
            ])
            .stdout(Stdio::null())
            .status()
            .context("bulk deposit")?;
        ensure!(status.success(), "bulk deposit {i} failed");
    }
    println!("    100 deposits sent (seq-nr 5 .. 104; snapshot written at 100); also at {http}");
    expect_ok(
        bin,
        &node,
        &["events", "account", "ada-1", "--from", "103"],
        "104",
    )?;
    let before_account = json!({"owner": "ada", "balance": 220, "status": "open"});
    let before_cart = json!({"items": [{"sku": "tea", "quantity": 2}], "status": "checked_out"});
    expect_json(
        bin,
        &node,
        &["get", "account", "ada-1"],
        before_account.clone(),
    )?;
    expect_json(bin, &node, &["get", "cart", "cart-7"], before_cart.clone())?;

    step(
        6,
        "kill the node with SIGKILL: no shutdown, no flush, nothing saved on the way out",
    );
    let mut node = node;
    node.child.kill().context("SIGKILL")?;
    let status = node.child.wait().context("reaping the node")?;
    println!("    node process ended: {status}");
    drop(node);

    step(
        7,
        "start it again on the same data directory: state comes back from snapshot + replay",
    );
    let node = start(bin, data)?;
    expect_json(bin, &node, &["get", "account", "ada-1"], before_account)?;
    println!("    account ada-1: snapshot at seq-nr 100 + 4 events replayed");
    expect_json(bin, &node, &["get", "cart", "cart-7"], before_cart)?;
    println!("    cart cart-7: no snapshot yet (every 50), 4 events replayed");
    println!(
        "    a retry of an acknowledged command id (within the last 64 of the entity) is still recognised:"
    );
    expect_ok(
        bin,
        &node,
        &[
            "send",
            "account",
            "ada-1",
            r#"{"deposit":{"amount":1}}"#,
            "--id",
            "bulk-99",
        ],
        "(seq-nr 104, duplicate: original reply)",
    )?;
    expect_json(
        bin,
        &node,
        &["send", "account", "ada-1", r#"{"withdraw":{"amount":20}}"#],
        json!({"reply": {"balance": 200}, "seq_nr": 105, "duplicate": false}),
    )?;
    expect_ok(bin, &node, &["info"], "active entities")?;

    step(8, "stop the node (SIGTERM: clean shutdown)");
    let pid = node.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .context("kill -TERM")?;
    ensure!(status.success(), "kill -TERM failed");
    let mut node = node;
    for _ in 0..200 {
        if let Some(status) = node.child.try_wait().context("waiting for the node")? {
            ensure!(status.success(), "the node exited with {status}");
            println!("    node stopped cleanly");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("the node did not stop within 5 s of SIGTERM")
}
