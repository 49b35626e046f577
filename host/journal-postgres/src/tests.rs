//! The PostgreSQL journal against a real server: the whole conformance
//! suite and model test, then what only a shared journal has (leases that
//! expire, fencing between two nodes, the schema's version, outages).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stead_journal::conformance;
use stead_journal::{
    AppendError, CommitObserver, EntityAppend, EntityKey, FenceToken, Journal, JournalError,
};
use stead_postgres_testing as pg;
use stead_types::config::PostgresOptions;

use crate::PostgresJournal;

fn options(url: &str, node: &str) -> PostgresOptions {
    PostgresOptions::new(url, node)
}

fn open(url: &str, node: &str) -> PostgresJournal {
    PostgresJournal::open(options(url, node)).expect("open the journal")
}

fn append(key: &EntityKey, expected: u64, fence: FenceToken, payload: &str) -> EntityAppend {
    EntityAppend {
        key: key.clone(),
        expected_seq_nr: expected,
        fence,
        events: vec![conformance::event("c", payload.as_bytes())],
        command_ids: Vec::new(),
        sends: Vec::new(),
        timers: Vec::new(),
    }
}

#[test]
fn the_postgres_journal_passes_the_conformance_suite_and_the_model_test() {
    // The suite opens a backend "on a directory": each directory is one
    // database, so a reopen of a directory reconnects to the same data.
    let databases: Mutex<HashMap<PathBuf, pg::Database>> = Mutex::new(HashMap::new());
    let opener = |dir: &Path| {
        let url = {
            let mut dbs = databases.lock().expect("lock");
            dbs.entry(dir.to_path_buf())
                .or_insert_with(|| pg::database().expect("a test database"))
                .url()
        };
        open(&url, "conformance")
    };
    conformance::run_all(&opener);
}

#[test]
fn a_live_nodes_lease_is_not_claimed_until_it_expires_and_then_fences_it() {
    let db = pg::database().expect("database");
    let mut short = options(&db.url(), "node-a");
    short.lease_ttl = Duration::from_millis(600);
    let a = PostgresJournal::open(short).expect("open a");
    let b = open(&db.url(), "node-b");
    let key = EntityKey::new(3, "t", "x");

    let fa = a.claim_shards(&[3]).expect("a claims")[0];
    assert_eq!(a.append(vec![append(&key, 0, fa, "a1")]), vec![Ok(())]);
    assert_eq!(
        b.claim_shards(&[3]).expect("b tries"),
        vec![],
        "a lease that has not expired is not taken"
    );
    std::thread::sleep(Duration::from_millis(700));
    let fb = b.claim_shards(&[3]).expect("b claims")[0];
    assert!(fb.epoch > fa.epoch);
    assert_eq!(
        a.append(vec![append(&key, 1, fa, "late")]),
        vec![Err(AppendError::Fenced {
            shard: 3,
            presented: fa.epoch,
            current: fb.epoch
        })],
        "the old holder's append after the claim is refused"
    );
    assert_eq!(a.renew_shards(&[fa]), Ok(vec![]), "and its renewal too");
    assert_eq!(
        a.append(vec![append(&key, 1, fa, "later")]),
        vec![Err(AppendError::Fenced {
            shard: 3,
            presented: fa.epoch,
            current: 0
        })],
        "a lost lease is forgotten: refused without a round trip"
    );
    assert_eq!(b.append(vec![append(&key, 1, fb, "b1")]), vec![Ok(())]);
    assert_eq!(b.last_seq_nr(&key), Ok(2));
}

#[test]
fn a_renewed_lease_outlives_its_ttl_and_a_released_one_is_free_at_once() {
    let db = pg::database().expect("database");
    let mut short = options(&db.url(), "node-a");
    short.lease_ttl = Duration::from_millis(500);
    let a = PostgresJournal::open(short).expect("open a");
    let b = open(&db.url(), "node-b");
    let fa = a.claim_shards(&[1, 2]).expect("claim");
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(a.renew_shards(&fa), Ok(fa.clone()));
    }
    assert_eq!(b.claim_shards(&[1, 2]), Ok(vec![]), "renewed leases hold");
    a.release_shards(&fa[..1]).expect("release");
    let fb = b.claim_shards(&[1, 2]).expect("claim");
    assert_eq!(fb.len(), 1, "only the released shard is free: {fb:?}");
    assert_eq!(fb[0].shard, 1);
    assert_eq!(fb[0].epoch, fa[0].epoch + 1, "a release keeps the epoch");
}

#[test]
fn after_a_claim_commits_not_one_append_of_the_old_holder_lands() {
    let db = pg::database().expect("database");
    let mut short = options(&db.url(), "old");
    short.lease_ttl = Duration::from_millis(300);
    let old = Arc::new(PostgresJournal::open(short).expect("open old"));
    let new = open(&db.url(), "new");
    let key = EntityKey::new(0, "t", "contended");
    let fence = old.claim_shards(&[0]).expect("claim")[0];
    let stop = Arc::new(AtomicBool::new(false));
    let fenced_at = Arc::new(Mutex::new(None::<u64>));
    // The old holder appends as fast as it can and never renews.
    let writer = {
        let (old, stop, fenced_at, key) =
            (old.clone(), stop.clone(), fenced_at.clone(), key.clone());
        std::thread::spawn(move || {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                match old.append(vec![append(&key, seq, fence, "old")]).remove(0) {
                    Ok(()) => seq += 1,
                    Err(AppendError::Fenced { .. }) => {
                        fenced_at.lock().expect("lock").get_or_insert(seq);
                    }
                    Err(e) => panic!("unexpected: {e}"),
                }
            }
            seq
        })
    };
    let token = loop {
        if let Some(token) = new.claim_shards(&[0]).expect("claim").pop() {
            break token;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let at_claim = new.last_seq_nr(&key).expect("last");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        new.last_seq_nr(&key),
        Ok(at_claim),
        "an event of the old holder landed after the claim"
    );
    assert_eq!(
        new.append(vec![append(&key, at_claim, token, "new")]),
        vec![Ok(())]
    );
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("writer");
    assert_eq!(
        written, at_claim,
        "the old holder's acknowledged appends are all there"
    );
    assert!(at_claim > 0, "the old holder wrote before the claim");
    assert!(fenced_at.lock().expect("lock").is_some());
}

#[test]
fn a_database_with_a_newer_schema_is_refused_with_a_clear_error() {
    let db = pg::database().expect("database");
    drop(open(&db.url(), "n"));
    let mut client = db.client().expect("client");
    client
        .batch_execute("UPDATE stead_schema SET version = 99")
        .expect("bump");
    let refused = PostgresJournal::open(options(&db.url(), "n"))
        .err()
        .expect("a newer schema must be refused")
        .to_string();
    assert!(
        refused.contains("schema version 99") && refused.contains("newer"),
        "{refused}"
    );
}

#[test]
fn a_version_1_database_is_migrated_in_place_through_every_version_keeping_its_events() {
    let db = pg::database().expect("database");
    let key = EntityKey::new(0, "t", "kept");
    {
        let j = open(&db.url(), "n");
        let fence = j.claim_shards(&[0]).expect("claim")[0];
        assert_eq!(j.append(vec![append(&key, 0, fence, "e1")]), vec![Ok(())]);
    }
    // What a database written by a version-1 build looks like.
    let mut client = db.client().expect("client");
    client
        .batch_execute(
            "DROP TABLE stead_outbox; DROP TABLE stead_timers;
             ALTER TABLE stead_command_ids DROP COLUMN refusal_kind, DROP COLUMN refusal;
             DROP TABLE stead_positions; DROP INDEX stead_events_stream;
             ALTER TABLE stead_events DROP COLUMN position;
             UPDATE stead_schema SET version = 1",
        )
        .expect("downgrade");
    let j = open(&db.url(), "n");
    assert_eq!(j.last_seq_nr(&key), Ok(1), "the events are kept");
    let fence = j.claim_shards(&[0]).expect("claim")[0];
    let mut next = append(&key, 1, fence, "e2");
    next.sends = vec![stead_journal::OutboxSend {
        seq_nr: 2,
        index: 0,
        send: stead_types::effects::SendCommand {
            entity_type: "t".into(),
            entity_id: "other".into(),
            command: b"{}".to_vec(),
            on_accepted: None,
            on_refused: None,
        },
    }];
    assert_eq!(j.append(vec![next]), vec![Ok(())]);
    assert_eq!(j.read_outbox(0, None, 10).map(|s| s.len()), Ok(1));
    // Version 3: the older event got a stream position, the new one the next.
    let stream = j.read_stream("t", &[(0, 0)], 10).expect("stream");
    assert_eq!(
        stream
            .iter()
            .map(|e| (e.position, e.event.seq_nr))
            .collect::<Vec<_>>(),
        vec![(1, 1), (2, 2)]
    );
    // Version 3: a refusal in the idempotency index.
    let refused = stead_journal::CommandIdRecord {
        command_id: "k".into(),
        seq_nr: 2,
        at_ms: 5,
        digest: [7; 32],
        refusal: Some(stead_journal::Refusal::Rejected("no".into())),
    };
    let mut refusal = append(&key, 2, fence, "unused");
    refusal.events.clear();
    refusal.command_ids = vec![refused.clone()];
    assert_eq!(j.append(vec![refusal]), vec![Ok(())]);
    assert_eq!(j.find_command_id(&key, "k"), Ok(Some(refused)));
    let version: i32 = client
        .query_one("SELECT version FROM stead_schema", &[])
        .expect("version")
        .get(0);
    assert_eq!(version, crate::schema::VERSION);
}

#[test]
fn an_unreachable_database_fails_fast_naming_it_without_its_password() {
    // A port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("postgres://ada:s3cret@127.0.0.1:{port}/stead");
    let started = Instant::now();
    let err = PostgresJournal::open(options(&url, "n"))
        .err()
        .expect("nothing listens there");
    let text = err.to_string();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert!(text.contains("127.0.0.1") && text.contains("***"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(matches!(
        JournalError::from(err),
        JournalError::Unavailable(_)
    ));
}

#[test]
fn appends_fail_as_unavailable_while_the_server_is_down_and_resume_after() {
    let server = pg::Server::start().expect("own server");
    let db = server.database().expect("database");
    let mut quick = options(&db.url(), "n");
    quick.timeout = Duration::from_secs(2);
    let journal = PostgresJournal::open(quick).expect("open");
    let key = EntityKey::new(0, "t", "outage");
    let fence = journal.claim_shards(&[0]).expect("claim")[0];
    assert_eq!(
        journal.append(vec![append(&key, 0, fence, "before")]),
        vec![Ok(())]
    );
    server.stop().expect("stop");
    let started = Instant::now();
    let down = journal
        .append(vec![append(&key, 1, fence, "during")])
        .remove(0);
    assert!(
        matches!(
            down,
            Err(AppendError::Storage(JournalError::Unavailable(_)))
        ),
        "{down:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "failed in {:?}",
        started.elapsed()
    );
    server.start_again().expect("start");
    let fence = journal.claim_shards(&[0]).expect("claim again")[0];
    assert_eq!(
        journal.last_seq_nr(&key),
        Ok(1),
        "nothing acknowledged lost"
    );
    assert_eq!(
        journal.append(vec![append(&key, 1, fence, "after")]),
        vec![Ok(())]
    );
}

#[test]
fn concurrent_appenders_share_commits() {
    struct Count(AtomicUsize, AtomicUsize);
    impl CommitObserver for Count {
        fn committed(&self, entities: usize, _: Duration) {
            self.0.fetch_add(1, Ordering::Relaxed);
            self.1.fetch_add(entities, Ordering::Relaxed);
        }
    }
    let db = pg::database().expect("database");
    let journal = Arc::new(open(&db.url(), "n"));
    let count = Arc::new(Count(AtomicUsize::new(0), AtomicUsize::new(0)));
    journal.set_commit_observer(count.clone());
    let shards: Vec<u32> = (0..8).collect();
    let tokens = journal.claim_shards(&shards).expect("claim");
    let threads: Vec<_> = tokens
        .into_iter()
        .map(|fence| {
            let journal = journal.clone();
            std::thread::spawn(move || {
                let key = EntityKey::new(fence.shard, "t", format!("e{}", fence.shard));
                for seq in 0..100 {
                    assert_eq!(
                        journal.append(vec![append(&key, seq, fence, "x")]),
                        vec![Ok(())]
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("appender");
    }
    let (commits, entities) = (
        count.0.load(Ordering::Relaxed),
        count.1.load(Ordering::Relaxed),
    );
    assert_eq!(entities, 800);
    assert!(
        commits < 800,
        "{commits} commits for 800 appends: no sharing"
    );
}

#[test]
fn every_node_of_a_database_must_use_its_shard_count() {
    let db = pg::database().expect("database");
    let first = open(&db.url(), "a");
    first
        .check_shard_count(64)
        .expect("the first count is recorded");
    first.check_shard_count(64).expect("the same count is fine");
    let other = open(&db.url(), "b");
    let refused = other.check_shard_count(256).expect_err("another count");
    assert!(refused.to_string().contains("64 shards"), "{refused}");
}
