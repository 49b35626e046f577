//! Fuzz target `deploy_validate`: component validation, the first thing a
//! deploy does with the bytes it is given
//! (`stead_component::validate`, against the embedded contract versions).
//!
//! Two modes, by the input's first byte:
//! - [`MUTATE`] (`M`): the real `account` component (read at start from
//!   `$STEAD_FUZZ_GUESTS/account.wasm`, default `../target/guests/`), edited
//!   by the rest of the input, five bytes per edit:
//!   `op:u8 offset:u24be value:u8` with `op % 4` = 0 set the byte at
//!   `offset`, 1 insert `value` before it, 2 delete it, 3 truncate there
//!   (offsets are taken modulo the current length). No edit at all must
//!   validate: the harness checks that first.
//! - anything else: the input itself is the component's bytes.
//!
//! Property: validation never panics; it returns a report or an error.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stead_component::validate;

/// First byte of an input in mutation mode.
const MUTATE: u8 = b'M';

struct Harness {
    account: Vec<u8>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let (path, account) = common::account_component();
        if let Err(e) = validate(&account) {
            panic!("{} does not validate unchanged: {e}", path.display());
        }
        Harness { account }
    })
}

/// Applies the edits of `ops` (see the module documentation) to `bytes`.
fn mutate(mut bytes: Vec<u8>, ops: &[u8]) -> Vec<u8> {
    for op in ops.chunks_exact(5) {
        if bytes.is_empty() {
            break;
        }
        let offset = u32::from_be_bytes([0, op[1], op[2], op[3]]) as usize % bytes.len();
        let value = op[4];
        match op[0] % 4 {
            0 => bytes[offset] = value,
            1 => bytes.insert(offset, value),
            2 => {
                bytes.remove(offset);
            }
            _ => bytes.truncate(offset),
        }
    }
    bytes
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    let mutated;
    let bytes = match data.split_first() {
        Some((&MUTATE, ops)) => {
            mutated = mutate(harness.account.clone(), ops);
            &mutated[..]
        }
        _ => data,
    };
    if let Ok(report) = validate(bytes) {
        // A valid component's report must be displayable.
        let _ = report.to_string();
    }
});
