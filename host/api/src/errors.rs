//! The one place where node errors become protocol statuses.
//!
//! | error | code | HTTP | gRPC |
//! |---|---|---|---|
//! | unknown entity type | `unknown_type` | 404 | NOT_FOUND |
//! | invalid entity id | `invalid_id` | 400 | INVALID_ARGUMENT |
//! | invalid command | `invalid_command` | 400 | INVALID_ARGUMENT |
//! | rejected by the entity | `rejected` | 409 | FAILED_PRECONDITION |
//! | guest fault | `guest_fault` | 500 | INTERNAL |
//! | overloaded | `overloaded` | 503 + `Retry-After` | RESOURCE_EXHAUSTED |
//! | request deadline exceeded | `deadline_exceeded` | 504 | DEADLINE_EXCEEDED |
//! | write conflict | `conflict` | 409 | ABORTED |
//! | deploy refused | `deploy_refused` | 400 | INVALID_ARGUMENT |
//! | storage full | `storage_full` | 507 | RESOURCE_EXHAUSTED |
//! | journal unreachable (the database down; names it) | `journal_unavailable` | 503 + `Retry-After` | UNAVAILABLE |
//! | storage failure | `storage` | 503 + `Retry-After` | UNAVAILABLE |
//! | shard not owned or moving between nodes, its lease not renewed in time, shutting down | `unavailable` | 503 + `Retry-After` | UNAVAILABLE |
//! | anything else | `internal` | 500 | INTERNAL |
//! | admin token missing or wrong ([`super::auth`]) | `unauthenticated` | 401 + `WWW-Authenticate` | UNAUTHENTICATED |

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use stead_journal::JournalError;
use stead_node::NodeError;

/// How an error is reported on every protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorClass {
    /// Stable machine-readable code, e.g. `rejected`.
    pub code: &'static str,
    pub http: StatusCode,
    pub grpc: tonic::Code,
}

/// Classifies a node error.
pub fn classify(error: &NodeError) -> ErrorClass {
    use tonic::Code;
    let (code, http, grpc) = match error {
        NodeError::UnknownType(_) => ("unknown_type", StatusCode::NOT_FOUND, Code::NotFound),
        NodeError::InvalidId(_) => ("invalid_id", StatusCode::BAD_REQUEST, Code::InvalidArgument),
        NodeError::InvalidCommand(_) => (
            "invalid_command",
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
        ),
        NodeError::Rejected(_) => ("rejected", StatusCode::CONFLICT, Code::FailedPrecondition),
        NodeError::GuestFault { .. } => (
            "guest_fault",
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
        ),
        NodeError::Overloaded(_) => (
            "overloaded",
            StatusCode::SERVICE_UNAVAILABLE,
            Code::ResourceExhausted,
        ),
        NodeError::DeadlineExceeded(_) => (
            "deadline_exceeded",
            StatusCode::GATEWAY_TIMEOUT,
            Code::DeadlineExceeded,
        ),
        NodeError::Conflict(_) => ("conflict", StatusCode::CONFLICT, Code::Aborted),
        // The key's first use decided; this request cannot succeed as sent
        // (FAILED_PRECONDITION: it depends on what the key was used for).
        NodeError::IdempotencyKeyReused(_) => (
            "idempotency_key_reused",
            StatusCode::UNPROCESSABLE_ENTITY,
            Code::FailedPrecondition,
        ),
        NodeError::Deploy(_) => (
            "deploy_refused",
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
        ),
        NodeError::Storage(JournalError::Full(_)) => (
            "storage_full",
            StatusCode::INSUFFICIENT_STORAGE,
            Code::ResourceExhausted,
        ),
        NodeError::Storage(JournalError::Unavailable(_)) => (
            "journal_unavailable",
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
        ),
        NodeError::Storage(_) => (
            "storage",
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
        ),
        NodeError::NotOwner(_)
        | NodeError::LeaseLapsed(_)
        | NodeError::ShardMoving { .. }
        | NodeError::ShuttingDown => (
            "unavailable",
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
        ),
        NodeError::Config(_) | NodeError::Internal(_) => (
            "internal",
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
        ),
    };
    ErrorClass { code, http, grpc }
}

/// The gRPC status of a node error; the code is also in the `stead-error`
/// metadata key so clients can tell, e.g., `rejected` from `invalid_id`.
pub fn to_status(error: &NodeError) -> tonic::Status {
    let class = classify(error);
    let mut status = tonic::Status::new(class.grpc, error.to_string());
    if let Ok(value) = class.code.parse() {
        status.metadata_mut().insert("stead-error", value);
    }
    status
}

/// The outcome label of a command for metrics: `ok` or the error code.
pub fn outcome_label(result: &Result<impl Sized, NodeError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => classify(e).code,
    }
}

/// An error as the HTTP routes answer it: the JSON body and status of
/// [`classify`], `Retry-After: 1` on 503.
pub(crate) struct ApiError(pub(crate) NodeError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let class = classify(&self.0);
        let body = json!({"error": {"code": class.code, "message": self.0.to_string()}});
        let mut response = (class.http, axum::Json(body)).into_response();
        if class.http == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stead_runtime::GuestFault;

    #[test]
    fn each_error_maps_to_its_documented_statuses() {
        let cases = [
            (
                NodeError::UnknownType("x".into()),
                404,
                tonic::Code::NotFound,
            ),
            (
                NodeError::InvalidId("x".into()),
                400,
                tonic::Code::InvalidArgument,
            ),
            (
                NodeError::InvalidCommand("x".into()),
                400,
                tonic::Code::InvalidArgument,
            ),
            (
                NodeError::Rejected("x".into()),
                409,
                tonic::Code::FailedPrecondition,
            ),
            (
                NodeError::GuestFault {
                    entity_type: "t".into(),
                    fault: GuestFault::Trap("x".into()),
                },
                500,
                tonic::Code::Internal,
            ),
            (
                NodeError::Overloaded("x".into()),
                503,
                tonic::Code::ResourceExhausted,
            ),
            (
                NodeError::DeadlineExceeded("x".into()),
                504,
                tonic::Code::DeadlineExceeded,
            ),
            (
                NodeError::Storage(JournalError::Full("x".into())),
                507,
                tonic::Code::ResourceExhausted,
            ),
            (
                NodeError::IdempotencyKeyReused("x".into()),
                422,
                tonic::Code::FailedPrecondition,
            ),
        ];
        for (error, http, grpc) in cases {
            let class = classify(&error);
            assert_eq!((class.http.as_u16(), class.grpc), (http, grpc), "{error}");
            let status = to_status(&error);
            assert_eq!(status.code(), grpc);
            assert_eq!(
                status
                    .metadata()
                    .get("stead-error")
                    .map(|v| v.to_str().ok()),
                Some(Some(class.code))
            );
        }
    }
}
