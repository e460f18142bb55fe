//! The gateway's error type, mapped once to HTTP responses with a JSON [`ErrorBody`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use deposito_api::{ErrorBody, NameError};

use crate::local::catalog::CatalogError;
use crate::replica_client::ReplicaClientError;

/// Everything a gateway request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    InvalidName(#[from] NameError),
    #[error("{0}")]
    InvalidReplicas(String),
    #[error("{0}")]
    InvalidDigest(String),
    #[error("{0}")]
    DigestMismatch(String),
    #[error("{0}")]
    IncompleteBody(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    NoReplica(String),
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("replica error: {0}")]
    Replica(String),
    #[error("catalog error: {0}")]
    Catalog(#[from] CatalogError),
}

impl GatewayError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            Self::InvalidReplicas(_) => (StatusCode::BAD_REQUEST, "invalid_replicas"),
            Self::InvalidDigest(_) => (StatusCode::BAD_REQUEST, "invalid_digest"),
            Self::DigestMismatch(_) => (StatusCode::BAD_REQUEST, "digest_mismatch"),
            Self::IncompleteBody(_) => (StatusCode::BAD_REQUEST, "incomplete_body"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::NoReplica(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_replica"),
            Self::InsufficientStorage(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            Self::Replica(_) => (StatusCode::BAD_GATEWAY, "replica_error"),
            Self::Catalog(_) => (StatusCode::INTERNAL_SERVER_ERROR, "catalog_error"),
        }
    }

    /// Maps an error of an upload to the client-facing error. `client_body_failed` tells
    /// whether the client's own body broke off (then the upload is the client's fault).
    pub fn from_upload(err: ReplicaClientError, client_body_failed: bool) -> Self {
        if client_body_failed {
            return Self::IncompleteBody(format!("upload did not complete: {err}"));
        }
        match err {
            ReplicaClientError::Status { status, body } => match body.code.as_str() {
                "digest_mismatch" => Self::DigestMismatch(body.error),
                "incomplete_body" => Self::IncompleteBody(body.error),
                "invalid_name" => Self::BadRequest(body.error),
                "insufficient_storage" => Self::InsufficientStorage(body.error),
                _ => Self::Replica(format!("{status}: {}", body.error)),
            },
            ReplicaClientError::Unreachable(msg) => {
                Self::NoReplica(format!("the chosen replica is unreachable, retry: {msg}"))
            }
            ReplicaClientError::Transport(msg) => Self::Replica(msg),
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(%status, code, error = %self, "request failed");
        }
        let body = ErrorBody {
            code: code.to_string(),
            error: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: &str, status: u16) -> ReplicaClientError {
        ReplicaClientError::Status {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            body: ErrorBody {
                code: code.into(),
                error: "why".into(),
            },
        }
    }

    #[test]
    fn upload_failures_map_to_client_facing_codes() {
        let cases = [
            (
                refused("digest_mismatch", 400),
                false,
                StatusCode::BAD_REQUEST,
                "digest_mismatch",
            ),
            (
                refused("insufficient_storage", 507),
                false,
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
            ),
            (
                refused("internal", 500),
                false,
                StatusCode::BAD_GATEWAY,
                "replica_error",
            ),
            (
                ReplicaClientError::Unreachable("refused".into()),
                false,
                StatusCode::SERVICE_UNAVAILABLE,
                "no_replica",
            ),
            (
                ReplicaClientError::Transport("reset".into()),
                false,
                StatusCode::BAD_GATEWAY,
                "replica_error",
            ),
            // The client's own body broke off: whatever the replica said, it's a 400.
            (
                ReplicaClientError::Transport("reset".into()),
                true,
                StatusCode::BAD_REQUEST,
                "incomplete_body",
            ),
        ];
        for (err, client_failed, status, code) in cases {
            let mapped = GatewayError::from_upload(err.clone(), client_failed);
            assert_eq!(
                mapped.status_and_code(),
                (status, code),
                "{err:?} / {client_failed}"
            );
        }
    }
}
