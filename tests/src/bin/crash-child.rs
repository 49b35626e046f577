//! A node under load, to be killed: opens a `Node` on a data directory,
//! deploys `account` if needed, opens `ENTITIES` accounts and then sends
//! deposits with unique command ids from many concurrent tasks forever,
//! printing `ack <entity> <command-id> <seq-nr> <amount>` for every
//! acknowledged command. Used by `tests/crash_recovery.rs`.
//!
//! usage: crash-child <data-dir> <account.wasm> <entities> <round>

use std::io::Write;
use std::sync::Arc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, wasm, entities, round] = &args[..] else {
        eprintln!("usage: crash-child <data-dir> <account.wasm> <entities> <round>");
        std::process::exit(2);
    };
    let entities: u64 = entities.parse().expect("entities");
    let node = Arc::new(stead_tests::open_node(std::path::Path::new(dir), |_| {}));
    if node.types().is_empty() {
        node.deploy(&std::fs::read(wasm).expect("wasm"))
            .expect("deploy");
    }
    for e in 0..entities {
        let id = format!("acc-{e}");
        match node.send_blocking(
            "account",
            &id,
            br#"{"open":{"owner":"crash"}}"#.to_vec(),
            Some(format!("open-{e}")),
        ) {
            // Opened in an earlier round (beyond the dedup window): fine.
            Ok(_) | Err(stead_node::NodeError::Rejected(_)) => {}
            Err(e) => panic!("open: {e}"),
        }
    }
    println!("ready");
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let tasks: Vec<_> = (0..32u64)
            .map(|task| {
                let node = node.clone();
                let out = out.clone();
                let round = round.clone();
                tokio::spawn(async move {
                    for n in 0u64.. {
                        let entity = (task * 7 + n * 13) % entities;
                        let amount = n % 7 + 1;
                        let command_id = format!("r{round}-t{task}-n{n}");
                        let command =
                            format!(r#"{{"deposit":{{"amount":{amount}}}}}"#).into_bytes();
                        let id = format!("acc-{entity}");
                        if let Ok(reply) = node
                            .send("account", &id, command, Some(command_id.clone()))
                            .await
                        {
                            let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                            let _ =
                                writeln!(out, "ack {id} {command_id} {} {amount}", reply.seq_nr);
                            let _ = out.flush();
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
}
