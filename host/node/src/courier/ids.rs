//! The command ids of deliveries, derived from their origin: the same on
//! every attempt and on every node, so the target's deduplication
//! recognises a repeat, and short enough for any command-id limit (a
//! 128-bit hash of the origin, in hex, behind the delivery's kind).
//!
//! Invariant: the origin names one delivery for ever (a source entity's
//! seq-nrs only grow), so two deliveries never share an id.

use sha2::{Digest, Sha256};

use stead_journal::{EntityKey, SendId};

fn derived(kind: &str, parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        // Length-prefixed: ("ab", "c") and ("a", "bc") differ.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut out = String::with_capacity(kind.len() + 33);
    out.push_str(kind);
    out.push(':');
    for byte in &digest[..16] {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

fn origin(id: &SendId) -> [Vec<u8>; 4] {
    [
        id.source.entity_type.as_bytes().to_vec(),
        id.source.entity_id.as_bytes().to_vec(),
        id.seq_nr.to_be_bytes().to_vec(),
        id.index.to_be_bytes().to_vec(),
    ]
}

/// The id of a send to its target.
pub(crate) fn send(id: &SendId) -> String {
    let parts = origin(id);
    derived("send", &parts.iter().map(Vec::as_slice).collect::<Vec<_>>())
}

/// The id of a send's `on-accepted` (`accepted`) or `on-refused` command
/// back to its sender.
pub(crate) fn reply(id: &SendId, accepted: bool) -> String {
    let parts = origin(id);
    let kind = if accepted { "accepted" } else { "refused" };
    derived(kind, &parts.iter().map(Vec::as_slice).collect::<Vec<_>>())
}

/// The id of a timer's firing: its entity, name and the seq-nr that set it.
pub(crate) fn timer(key: &EntityKey, name: &str, seq_nr: u64) -> String {
    derived(
        "timer",
        &[
            key.entity_type.as_bytes(),
            key.entity_id.as_bytes(),
            name.as_bytes(),
            &seq_nr.to_be_bytes(),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(entity: &str, seq_nr: u64, index: u32) -> SendId {
        SendId {
            source: EntityKey::new(3, "transfer", entity),
            seq_nr,
            index,
        }
    }

    #[test]
    fn ids_are_stable_distinct_per_origin_and_short() {
        let a = send(&id("t1", 4, 0));
        assert_eq!(a, send(&id("t1", 4, 0)), "the same on every attempt");
        assert!(a.starts_with("send:") && a.len() == 5 + 32, "{a}");
        let others = [
            send(&id("t1", 4, 1)),
            send(&id("t1", 5, 0)),
            send(&id("t2", 4, 0)),
            reply(&id("t1", 4, 0), true),
            reply(&id("t1", 4, 0), false),
            timer(&EntityKey::new(3, "transfer", "t1"), "expire", 4),
        ];
        for other in &others {
            assert_ne!(&a, other);
        }
        assert_ne!(
            timer(&EntityKey::new(0, "a", "bc"), "d", 1),
            timer(&EntityKey::new(0, "ab", "c"), "d", 1),
            "parts are length-prefixed"
        );
        let long = "x".repeat(10_000);
        assert!(send(&id(&long, u64::MAX, u32::MAX)).len() <= 64);
    }
}
