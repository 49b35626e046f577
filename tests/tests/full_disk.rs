//! A full disk: with the node's data dir on a small tmpfs, filling it makes
//! commands fail with `storage_full` (HTTP 507) while reads keep working;
//! once space is freed the node accepts commands again, and nothing
//! acknowledged is lost or duplicated, also across a restart. Needs root to
//! mount the tmpfs; skipped with a message otherwise.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stead_tests::chaos::NodeProcess;
use stead_tests::chaos::client::{Client, Outcome, Reader};
use stead_tests::{guests_dir, stead_binary};

const ACCOUNTS: usize = 8;

/// A tmpfs mounted for the test; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Self, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if out.status.success() {
            Ok(Self(at.to_owned()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes a file until the file system is full; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("ballast");
    let mut file = std::fs::File::create(&path).expect("ballast");
    for chunk in [1 << 20, 64 << 10, 4 << 10, 512] {
        let bytes = vec![0xAB_u8; chunk];
        while file.write_all(&bytes).is_ok() {}
    }
    let _ = file.sync_all();
    path
}

struct Account {
    id: String,
    /// (command id, amount) of every deposit sent, acknowledged or not.
    sent: Vec<(String, u64)>,
}

fn deposit(client: &mut Client, account: &mut Account, n: usize) -> Outcome {
    let command_id = format!("{}-d{n}", account.id);
    let amount = n as u64 % 7 + 1;
    account.sent.push((command_id.clone(), amount));
    client.send(
        "account",
        &account.id,
        &json!({"deposit": {"amount": amount}}),
        &command_id,
    )
}

/// Every command sent is in the journal exactly once (after the retries)
/// and the balance is their sum.
fn verify(reader: &Reader, accounts: &[Account]) {
    for account in accounts {
        let events = reader.events("account", &account.id).expect("events");
        let ids: Vec<&str> = events.iter().map(|e| e.command_id.as_str()).collect();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "{}: duplicated events", account.id);
        for (command_id, _) in &account.sent {
            assert!(
                ids.contains(&command_id.as_str()),
                "{}: {command_id} lost",
                account.id
            );
        }
        assert_eq!(
            events.len(),
            account.sent.len() + 1,
            "{}: open + deposits",
            account.id
        );
        let balance: u64 = account.sent.iter().map(|(_, a)| a).sum();
        let view = reader.view("account", &account.id).expect("view");
        assert_eq!(view["balance"], balance, "{}: {view}", account.id);
    }
}

#[test]
fn a_full_disk_fails_commands_keeps_reads_and_recovers_when_space_is_freed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let _tmpfs = match Tmpfs::mount(&mnt, "48m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("skipped: mounting a tmpfs needs root ({why})");
            return;
        }
    };
    let data = mnt.join("data");
    let node = NodeProcess::start(&stead_binary(), &data).expect("node starts");
    node.deploy(&guests_dir()).expect("deploy");
    let mut client = Client::http(&node.http);
    let mut accounts: Vec<Account> = (0..ACCOUNTS)
        .map(|i| Account {
            id: format!("a{i}"),
            sent: Vec::new(),
        })
        .collect();
    for account in &accounts {
        let open = client.send(
            "account",
            &account.id,
            &json!({"open": {"owner": "ada"}}),
            &format!("{}-open", account.id),
        );
        assert!(matches!(open, Outcome::Acked { .. }), "{open:?}");
    }

    let ballast = fill(&mnt);
    // sled has some space reserved in its segments: keep writing until the
    // disk says no, then a little more.
    let mut full_errors = 0;
    let mut n = 0;
    let started = Instant::now();
    while full_errors < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the disk never filled"
        );
        let account = &mut accounts[n % ACCOUNTS];
        match deposit(&mut client, account, n) {
            Outcome::Acked { .. } => {}
            Outcome::Refused { code, message } => {
                assert_eq!(code, "storage_full", "{message}");
                full_errors += 1;
            }
            other => panic!("the node must answer, not fail: {other:?}"),
        }
        n += 1;
    }

    // Reads keep working while the disk is full.
    let reader = Reader::new(&node.http);
    for account in &accounts {
        let view: Value = reader
            .view("account", &account.id)
            .expect("view while full");
        assert_eq!(view["status"], "open");
        assert!(reader.events("account", &account.id).is_ok());
    }

    // Free the space: commands are accepted again (within the reopen interval).
    std::fs::remove_file(&ballast).expect("free the space");
    let resumed = Instant::now();
    loop {
        let account = &mut accounts[n % ACCOUNTS];
        let outcome = deposit(&mut client, account, n);
        n += 1;
        match outcome {
            Outcome::Acked { .. } => break,
            Outcome::Refused { code, .. } if code == "storage_full" || code == "storage" => {
                assert!(
                    resumed.elapsed() < Duration::from_secs(10),
                    "writes did not resume"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            other => panic!("{other:?}"),
        }
    }
    // Commands refused while full may or may not have been persisted:
    // retried with their ids, each is applied exactly once.
    for account in &mut accounts {
        for (command_id, amount) in account.sent.clone() {
            let outcome = client.send(
                "account",
                &account.id,
                &json!({"deposit": {"amount": amount}}),
                &command_id,
            );
            assert!(
                matches!(outcome, Outcome::Acked { .. }),
                "{command_id}: {outcome:?}"
            );
        }
    }
    verify(&reader, &accounts);

    // And all of it survives a restart.
    node.kill();
    let node = NodeProcess::start(&stead_binary(), &data).expect("node restarts");
    verify(&Reader::new(&node.http), &accounts);
    node.stop().expect("clean stop");
}
