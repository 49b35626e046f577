//! Admin authentication, the one check both protocols use.
//!
//! The rule: with an admin token configured, every admin call (the gRPC
//! service `stead.v1.Admin`: `Deploy`, `ListTypes`, `NodeInfo`; HTTP
//! `POST /v1/components`) must carry `authorization: Bearer <token>`, else it
//! is refused as `unauthenticated` (gRPC `UNAUTHENTICATED`, HTTP 401 with
//! `WWW-Authenticate: Bearer`), saying whether the token was missing or wrong.
//! Without a token, admin calls are open, so a node listens only on loopback
//! addresses unless it has one ([`check_exposure`], enforced by `stead up`
//! before binding). Entity calls, health, reflection and metrics never need
//! the token.
//!
//! The token is compared in constant time: the SHA-256 of the presented token
//! against the SHA-256 of the configured one, folded over all 32 bytes. The
//! node keeps only the hash.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Shortest admin token accepted, in bytes (after trimming whitespace).
pub const MIN_TOKEN_BYTES: usize = 16;

/// Environment variable holding the admin token itself.
pub const TOKEN_ENV: &str = "STEAD_ADMIN_TOKEN";

/// A token that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the admin token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the admin token from {origin} is empty")]
    Empty { origin: String },
    #[error(
        "the admin token from {origin} is {len} bytes long; it must be at least {MIN_TOKEN_BYTES}"
    )]
    TooShort { origin: String, len: usize },
    #[error("the admin token from {origin} is not visible ASCII (it must fit an HTTP header)")]
    NotAscii { origin: String },
}

/// Reads the admin token: from `file` if given, else from `env` (the value
/// of [`TOKEN_ENV`]); whitespace is trimmed. `None` when neither is given.
pub fn read_token(
    file: Option<&Path>,
    env: Option<OsString>,
) -> Result<Option<String>, TokenError> {
    let (raw, origin) = match (file, env) {
        (Some(path), _) => {
            let raw = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
                path: path.to_owned(),
                source,
            })?;
            (raw, path.display().to_string())
        }
        (None, Some(value)) => (value.to_string_lossy().into_owned(), TOKEN_ENV.to_owned()),
        (None, None) => return Ok(None),
    };
    let token = raw.trim();
    if token.is_empty() {
        return Err(TokenError::Empty { origin });
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::NotAscii { origin });
    }
    if token.len() < MIN_TOKEN_BYTES {
        return Err(TokenError::TooShort {
            origin,
            len: token.len(),
        });
    }
    Ok(Some(token.to_owned()))
}

/// Why an admin call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("missing admin token: send `authorization: Bearer <token>`")]
    Missing,
    #[error("the authorization is not a bearer token: send `authorization: Bearer <token>`")]
    NotBearer,
    #[error("wrong admin token")]
    Wrong,
}

impl Denied {
    /// The gRPC status: `UNAUTHENTICATED`, `stead-error: unauthenticated`.
    pub fn to_status(self) -> tonic::Status {
        let mut status = tonic::Status::unauthenticated(self.to_string());
        status.metadata_mut().insert(
            "stead-error",
            tonic::metadata::MetadataValue::from_static("unauthenticated"),
        );
        status
    }
}

impl IntoResponse for Denied {
    /// 401 with `WWW-Authenticate: Bearer` and the JSON error body.
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": "unauthenticated", "message": self.to_string()}});
        let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"stead\""),
        );
        response
    }
}

/// The admin token of a node, if it has one (only its hash is kept).
#[derive(Clone, Default)]
pub struct AdminAuth {
    token_sha256: Option<[u8; 32]>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.is_required() {
            "token required"
        } else {
            "open"
        };
        f.debug_tuple("AdminAuth").field(&state).finish()
    }
}

impl AdminAuth {
    /// Admin calls are open (loopback only, see [`check_exposure`]).
    pub fn open() -> Self {
        Self::default()
    }

    /// Admin calls need `token` (as returned by [`read_token`]).
    pub fn with_token(token: &str) -> Self {
        Self {
            token_sha256: Some(Sha256::digest(token.as_bytes()).into()),
        }
    }

    /// From [`read_token`]'s answer.
    pub fn from_token(token: Option<&str>) -> Self {
        token.map_or_else(Self::open, Self::with_token)
    }

    /// Whether admin calls need the token.
    pub fn is_required(&self) -> bool {
        self.token_sha256.is_some()
    }

    /// Checks the value of an `authorization` header (or gRPC metadata).
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), Denied> {
        let Some(expected) = &self.token_sha256 else {
            return Ok(());
        };
        let value = authorization.ok_or(Denied::Missing)?;
        let value = std::str::from_utf8(value).map_err(|_| Denied::NotBearer)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(Denied::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Denied::NotBearer);
        }
        let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        if constant_time_eq(&presented, expected) {
            Ok(())
        } else {
            Err(Denied::Wrong)
        }
    }
}

/// Equal without an early exit: the time does not depend on where the
/// hashes differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

impl tonic::service::Interceptor for AdminAuth {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        match self.check(authorization) {
            Ok(()) => Ok(request),
            Err(denied) => {
                tracing::warn!(reason = %denied, protocol = "grpc", "admin call refused");
                Err(denied.to_status())
            }
        }
    }
}

/// A listen address beyond loopback without an admin token.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to listen on {addr} ({flag}) without an admin token: beyond loopback the admin API requires one (--admin-token-file or {TOKEN_ENV})"
)]
pub struct ExposureError {
    pub addr: SocketAddr,
    /// The flag that set the address, e.g. `--http`.
    pub flag: &'static str,
}

/// Refuses listen addresses that are not loopback when admin calls are open.
pub fn check_exposure(
    auth: &AdminAuth,
    addrs: &[(&'static str, SocketAddr)],
) -> Result<(), ExposureError> {
    if auth.is_required() {
        return Ok(());
    }
    match addrs.iter().find(|(_, addr)| !addr.ip().is_loopback()) {
        Some(&(flag, addr)) => Err(ExposureError { addr, flag }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-token";

    #[test]
    fn an_open_node_accepts_anything() {
        let auth = AdminAuth::open();
        assert_eq!(auth.check(None), Ok(()));
        assert_eq!(auth.check(Some(b"Bearer whatever")), Ok(()));
    }

    #[test]
    fn a_token_is_required_and_compared() {
        let auth = AdminAuth::with_token(TOKEN);
        assert_eq!(auth.check(None), Err(Denied::Missing));
        assert_eq!(auth.check(Some(b"Basic abc")), Err(Denied::NotBearer));
        assert_eq!(auth.check(Some(b"Bearer")), Err(Denied::NotBearer));
        assert_eq!(auth.check(Some(&[0xff, 0xfe])), Err(Denied::NotBearer));
        assert_eq!(
            auth.check(Some(b"Bearer wrong-token-xxxxxxxx")),
            Err(Denied::Wrong)
        );
        assert_eq!(
            auth.check(Some(format!("Bearer {TOKEN}x").as_bytes())),
            Err(Denied::Wrong)
        );
        assert_eq!(
            auth.check(Some(format!("Bearer {TOKEN}").as_bytes())),
            Ok(())
        );
        assert_eq!(
            auth.check(Some(format!("bearer  {TOKEN}").as_bytes())),
            Ok(())
        );
    }

    #[test]
    fn the_token_file_wins_and_is_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, format!("  {TOKEN}\n")).expect("write");
        let env = Some(OsString::from("an-env-token-0123456789"));
        assert_eq!(
            read_token(Some(&file), env.clone())
                .expect("token")
                .as_deref(),
            Some(TOKEN)
        );
        assert_eq!(
            read_token(None, env).expect("token").as_deref(),
            Some("an-env-token-0123456789")
        );
        assert_eq!(read_token(None, None).expect("none"), None);
    }

    #[test]
    fn empty_short_unreadable_tokens_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, " \n").expect("write");
        let err = read_token(Some(&file), None).expect_err("empty");
        assert!(matches!(err, TokenError::Empty { .. }), "{err}");
        let err = read_token(None, Some("short".into())).expect_err("short");
        assert_eq!(
            err.to_string(),
            "the admin token from STEAD_ADMIN_TOKEN is 5 bytes long; it must be at least 16"
        );
        let err = read_token(None, Some("with a space inside it".into())).expect_err("space");
        assert!(matches!(err, TokenError::NotAscii { .. }), "{err}");
        let missing = dir.path().join("missing");
        let err = read_token(Some(&missing), None).expect_err("missing");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn beyond_loopback_needs_a_token() {
        let local = ("--grpc", "127.0.0.1:7400".parse().expect("addr"));
        let local6 = ("--grpc", "[::1]:7400".parse().expect("addr"));
        let all = ("--http", "0.0.0.0:7480".parse().expect("addr"));
        assert!(check_exposure(&AdminAuth::open(), &[local, local6]).is_ok());
        let err = check_exposure(&AdminAuth::open(), &[local, all]).expect_err("refused");
        assert!(
            err.to_string()
                .starts_with("refusing to listen on 0.0.0.0:7480 (--http) without an admin token"),
            "{err}"
        );
        assert!(check_exposure(&AdminAuth::with_token(TOKEN), &[local, all]).is_ok());
    }
}
