//! Fuzz target `journal_decode`: bytes as a journal key, an event record, an
//! event page, a snapshot record and an entity index entry
//! (`host/journal-sled/src/keys.rs`, `host/journal/src/record.rs`).
//!
//! Properties:
//! - no decoder panics, whatever the bytes;
//! - no decoder allocates much more than the input holds (a length field
//!   claiming 4 GiB must be refused before allocating): every allocation
//!   made while decoding is checked by a counting global allocator;
//! - whatever decodes is canonical: encoding it gives back exactly the input
//!   bytes, and decoding those gives the same value again.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;
use stead_journal::record::{self, EventRecord, SnapshotRecord};
use stead_journal_sled::keys::{self, DecodedKey};

/// Slack on top of the input's length a decoder may allocate at once (error
/// messages, small fixed buffers).
const SLACK_BYTES: usize = 4096;

/// Counts the allocations made while `ARMED`: the largest single one and the
/// total. Only the fuzzing thread allocates while armed.
struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static TOTAL: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if ARMED.load(Ordering::Relaxed) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
        TOTAL.fetch_add(size, Ordering::Relaxed);
    }
}

// A global allocator is unsafe by nature; this one only forwards to `System`.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above; `ptr` was allocated by `System` through us.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `decode` with allocation counting; panics if it allocated more than
/// the input can justify.
fn bounded<T>(what: &str, input: &[u8], decode: impl FnOnce() -> T) -> T {
    LARGEST.store(0, Ordering::Relaxed);
    TOTAL.store(0, Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
    let out = decode();
    ARMED.store(false, Ordering::Relaxed);
    let (largest, total) = (
        LARGEST.load(Ordering::Relaxed),
        TOTAL.load(Ordering::Relaxed),
    );
    assert!(
        largest <= input.len() + SLACK_BYTES && total <= 4 * input.len() + 4 * SLACK_BYTES,
        "{what}: decoding {} bytes allocated {largest} bytes at once, {total} in all",
        input.len()
    );
    out
}

fn check_key(data: &[u8]) {
    let Ok(decoded) = bounded("key", data, || keys::decode(data)) else {
        return;
    };
    let encoded = match &decoded {
        DecodedKey::Entity(key) => keys::entity_key(key),
        DecodedKey::Event(key, seq_nr) => keys::event_key(key, *seq_nr),
        DecodedKey::Snapshot(key) => keys::snapshot_key(key),
        DecodedKey::Command(key, command_id) => keys::command_key(key, command_id),
        DecodedKey::Expiry {
            shard,
            at_ms,
            unique,
        } => keys::expiry_key(*shard, *at_ms, *unique),
        DecodedKey::Outbox(key, seq_nr, index) => keys::outbox_key(key, *seq_nr, *index),
        DecodedKey::Timer(key, name) => keys::timer_key(key, name),
        DecodedKey::Stream { shard, position } => keys::stream_key(*shard, *position),
    };
    assert_eq!(encoded, data, "key {decoded:?} re-encodes differently");
    assert_eq!(keys::decode(&encoded), Ok(decoded));
}

fn check_event(data: &[u8]) {
    let Ok(event) = bounded("event record", data, || EventRecord::decode(data)) else {
        return;
    };
    let encoded = event.encode();
    assert_eq!(encoded, data, "event {event:?} re-encodes differently");
    assert_eq!(EventRecord::decode(&encoded), Ok(event));
}

fn check_page(data: &[u8]) {
    // As a tail page to append to: the header is checked, nothing panics.
    if let Ok(page) = record::PageBuf::from_stored(data, 0) {
        assert!(page.count() > 0 && page.last_seq() >= page.first_seq());
    }
    let Ok((first_seq, raw)) = bounded("event page", data, || record::split_stored(data, 1)) else {
        return;
    };
    if data.first() != Some(&record::PAGE_V1) {
        return; // a single event record: check_event covers it
    }
    let Ok(events) = raw
        .iter()
        .map(|r| EventRecord::decode(r))
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    let mut page = record::PageBuf::new(first_seq);
    for event in &events {
        page.push(event);
    }
    assert_eq!(page.as_bytes(), data, "page re-encodes differently");
}

fn check_snapshot(data: &[u8]) {
    let Ok(snapshot) = bounded("snapshot record", data, || SnapshotRecord::decode(data)) else {
        return;
    };
    let encoded = snapshot.encode();
    assert_eq!(
        encoded, data,
        "snapshot {snapshot:?} re-encodes differently"
    );
    assert_eq!(SnapshotRecord::decode(&encoded), Ok(snapshot));
}

fn check_command_id(data: &[u8]) {
    let Ok(entry) = bounded("command-id entry", data, || {
        record::decode_command_id("fuzz", data)
    }) else {
        return;
    };
    let encoded = record::encode_command_id(&entry);
    assert_eq!(
        &encoded[..],
        data,
        "command-id entry re-encodes differently"
    );
}

fn check_expiry_list(data: &[u8]) {
    let Ok(list) = bounded("expiry list", data, || keys::decode_expiry_list(data)) else {
        return;
    };
    assert_eq!(
        keys::encode_expiry_list(&list),
        data,
        "expiry list re-encodes differently"
    );
}

fn check_entity(data: &[u8]) {
    let Ok(seq_nr) = bounded("entity entry", data, || record::decode_entity(data)) else {
        return;
    };
    let encoded = record::encode_entity(seq_nr);
    assert_eq!(
        encoded.as_slice(),
        data,
        "entity entry re-encodes differently"
    );
    assert_eq!(record::decode_entity(&encoded), Ok(seq_nr));
}

fuzz_target!(|data: &[u8]| {
    check_key(data);
    check_event(data);
    check_page(data);
    check_snapshot(data);
    check_entity(data);
    check_command_id(data);
    check_expiry_list(data);
});
