//! Encodings between Rust values and the bytes that cross the WIT boundary.
//!
//! - Commands, events, replies and views: JSON (`serde_json`), since people
//!   type commands and read events, and the host passes them through as bytes.
//! - State: a one-byte format tag followed by `postcard`, a compact binary
//!   serde format. Only the guest reads state bytes; the tag lets a later SDK
//!   change the encoding and still read what an older one wrote.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Tag of the state encoding `postcard` (the only one so far).
pub const STATE_FORMAT_POSTCARD: u8 = 1;

/// A value could not be encoded or decoded; the message is the codec's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl core::fmt::Display for CodecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

/// Encodes a state for the host to keep.
pub fn encode_state<S: Serialize>(state: &S) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![STATE_FORMAT_POSTCARD];
    let body = postcard::to_allocvec(state).map_err(|e| CodecError(e.to_string()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes state bytes written by [`encode_state`].
pub fn decode_state<S: DeserializeOwned>(bytes: &[u8]) -> Result<S, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError("empty state bytes".into())),
        Some((&STATE_FORMAT_POSTCARD, body)) => {
            let (state, rest) = postcard::take_from_bytes(body)
                .map_err(|e| CodecError(format!("state does not decode: {e}")))?;
            if rest.is_empty() {
                Ok(state)
            } else {
                Err(CodecError(format!(
                    "state does not decode: {} trailing bytes",
                    rest.len()
                )))
            }
        }
        Some((tag, _)) => Err(CodecError(format!("unknown state format tag {tag}"))),
    }
}

/// Encodes a command, event, reply or view as JSON.
pub fn encode_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    serde_json::to_vec(value).map_err(|e| CodecError(e.to_string()))
}

/// Decodes a command, event, reply or view from JSON.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    serde_json::from_slice(bytes).map_err(|e| CodecError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct S {
        name: String,
        n: i64,
    }

    #[test]
    fn state_roundtrips_through_the_tagged_binary_encoding() {
        let s = S {
            name: "ada".into(),
            n: -5,
        };
        let bytes = encode_state(&s).expect("encodes");
        assert_eq!(bytes[0], STATE_FORMAT_POSTCARD);
        assert_eq!(decode_state::<S>(&bytes).expect("decodes"), s);
    }

    #[test]
    fn state_decode_refuses_empty_unknown_tag_truncated_and_trailing_bytes() {
        assert_eq!(
            decode_state::<S>(&[]).unwrap_err().0,
            "empty state bytes".to_string()
        );
        assert!(decode_state::<S>(&[9, 0]).unwrap_err().0.contains("tag 9"));
        let mut bytes = encode_state(&S {
            name: "x".into(),
            n: 1,
        })
        .expect("encodes");
        bytes.push(0);
        assert!(
            decode_state::<S>(&bytes)
                .unwrap_err()
                .0
                .contains("trailing")
        );
        assert!(decode_state::<S>(&bytes[..2]).is_err());
    }

    #[test]
    fn json_decode_error_carries_the_decoders_message() {
        let err = decode_json::<S>(br#"{"name":1}"#).unwrap_err();
        assert!(err.0.contains("invalid type"), "{err}");
    }
}
