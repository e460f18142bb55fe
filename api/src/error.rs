//! The JSON error body every component answers with, and its stable machine-readable codes.
//!
//! One definition for every crate: servers build [`ErrorBody`] from an [`ErrorCode`], clients
//! match on the enum instead of on strings.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A stable machine-readable error code. Serialized in snake_case (`invalid_name`); a code
/// this version does not know deserializes as [`ErrorCode::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No valid bearer token (401).
    Unauthorized,
    /// The token is valid but does not reach this resource (403).
    Forbidden,
    /// A namespace or file name breaks the naming rules (400).
    InvalidName,
    /// A malformed sha256 (400).
    InvalidDigest,
    /// The content does not hash to the expected sha256 (400).
    DigestMismatch,
    /// The body ended before its announced length (400).
    IncompleteBody,
    /// A replication level that is not an integer of at least 1 (400).
    InvalidReplicas,
    /// Any other malformed request (400).
    BadRequest,
    /// No such file, copy or route (404).
    NotFound,
    /// The copy failed verification and is quarantined (404 from a replica).
    Corrupt,
    /// The request conflicts with the current state (409).
    Conflict,
    /// An inventory change cursor that the replica no longer serves (410): re-list.
    CursorExpired,
    /// A Range that does not overlap the content (416).
    RangeNotSatisfiable,
    /// A disk is full (507).
    InsufficientStorage,
    /// A replica could not fetch a copy from a peer (502).
    PullFailed,
    /// A replica could not fetch a `url` source (502); the message is a short fixed reason.
    FetchFailed,
    /// A replica refused to fetch a `url` source: its address is not allowed (403).
    FetchRefused,
    /// A replica failed while serving the gateway (502).
    ReplicaError,
    /// No replica could take or serve the file right now (503).
    NoReplica,
    /// The server is not ready (503).
    NotReady,
    /// The catalog (SQLite or the Kubernetes API) failed (500 or 503).
    CatalogError,
    /// The operation does not exist in this mode (501).
    Unsupported,
    /// An unexpected server-side failure (500).
    Internal,
    /// A request body over the server's limit for the route (413).
    PayloadTooLarge,
    /// The request did not complete within the server's deadline (408).
    RequestTimeout,
    /// The server is at its connection limit (503): retry later.
    Overloaded,
    /// A lifecycle or retention date that breaks the rules (400).
    InvalidLifecycle,
    /// The file's retention lock forbids the change until its date (403).
    Retained,
    /// A code this version does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The wire spelling, as in the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::InvalidName => "invalid_name",
            Self::InvalidDigest => "invalid_digest",
            Self::DigestMismatch => "digest_mismatch",
            Self::IncompleteBody => "incomplete_body",
            Self::InvalidReplicas => "invalid_replicas",
            Self::BadRequest => "bad_request",
            Self::NotFound => "not_found",
            Self::Corrupt => "corrupt",
            Self::Conflict => "conflict",
            Self::CursorExpired => "cursor_expired",
            Self::RangeNotSatisfiable => "range_not_satisfiable",
            Self::InsufficientStorage => "insufficient_storage",
            Self::PullFailed => "pull_failed",
            Self::FetchFailed => "fetch_failed",
            Self::FetchRefused => "fetch_refused",
            Self::ReplicaError => "replica_error",
            Self::NoReplica => "no_replica",
            Self::NotReady => "not_ready",
            Self::CatalogError => "catalog_error",
            Self::Unsupported => "unsupported",
            Self::Internal => "internal",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::Overloaded => "overloaded",
            Self::InvalidLifecycle => "invalid_lifecycle",
            Self::Retained => "retained",
            Self::Unknown => "unknown",
        }
    }
}

/// Lets a code be compared with its wire spelling (`code == "not_found"`).
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error response, from the gateway and the replica alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code, such as `invalid_name` or `digest_mismatch`.
    pub code: ErrorCode,
    /// A one-line human-readable explanation.
    pub error: String,
}

impl ErrorBody {
    /// A body with `code` and message `error`.
    pub fn new(code: ErrorCode, error: impl Into<String>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_in_snake_case_and_unknown_codes_are_kept_apart() {
        let all = [
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::InvalidName,
            ErrorCode::InvalidDigest,
            ErrorCode::DigestMismatch,
            ErrorCode::IncompleteBody,
            ErrorCode::InvalidReplicas,
            ErrorCode::BadRequest,
            ErrorCode::NotFound,
            ErrorCode::Corrupt,
            ErrorCode::Conflict,
            ErrorCode::CursorExpired,
            ErrorCode::RangeNotSatisfiable,
            ErrorCode::InsufficientStorage,
            ErrorCode::PullFailed,
            ErrorCode::FetchFailed,
            ErrorCode::FetchRefused,
            ErrorCode::ReplicaError,
            ErrorCode::NoReplica,
            ErrorCode::NotReady,
            ErrorCode::CatalogError,
            ErrorCode::Unsupported,
            ErrorCode::Internal,
            ErrorCode::PayloadTooLarge,
            ErrorCode::RequestTimeout,
            ErrorCode::Overloaded,
            ErrorCode::InvalidLifecycle,
            ErrorCode::Retained,
        ];
        for code in all {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        let body: ErrorBody =
            serde_json::from_str(r#"{"code":"from_the_future","error":"x"}"#).unwrap();
        assert_eq!(body.code, ErrorCode::Unknown);
    }
}
