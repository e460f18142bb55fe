//! The gateway's error type, mapped once to HTTP responses with a JSON [`ErrorBody`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use deposito_api::{ErrorBody, ErrorCode, NameError};

use crate::engine::{CatalogError, MembershipError};
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
    #[error("{0}")]
    Forbidden(String),
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
    #[error("{0}")]
    InvalidLifecycle(String),
    #[error("{0}")]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    Membership(#[from] MembershipError),
}

impl GatewayError {
    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::InvalidName(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidName),
            Self::InvalidReplicas(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidReplicas),
            Self::InvalidDigest(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidDigest),
            Self::DigestMismatch(_) => (StatusCode::BAD_REQUEST, ErrorCode::DigestMismatch),
            Self::IncompleteBody(_) => (StatusCode::BAD_REQUEST, ErrorCode::IncompleteBody),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            Self::NoReplica(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NoReplica),
            Self::InsufficientStorage(_) => (
                StatusCode::INSUFFICIENT_STORAGE,
                ErrorCode::InsufficientStorage,
            ),
            Self::Replica(_) => (StatusCode::BAD_GATEWAY, ErrorCode::ReplicaError),
            Self::Catalog(CatalogError::Forbidden(_))
            | Self::Membership(MembershipError::Forbidden(_)) => {
                (StatusCode::FORBIDDEN, ErrorCode::Forbidden)
            }
            Self::InvalidLifecycle(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidLifecycle),
            Self::Catalog(CatalogError::Retained(_)) => {
                (StatusCode::FORBIDDEN, ErrorCode::Retained)
            }
            Self::Catalog(CatalogError::Conflict(_)) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            Self::Catalog(CatalogError::Invalid(_)) => {
                (StatusCode::BAD_REQUEST, ErrorCode::BadRequest)
            }
            Self::Catalog(CatalogError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::CatalogError)
            }
            Self::Membership(MembershipError::Unsupported(_)) => {
                (StatusCode::NOT_IMPLEMENTED, ErrorCode::Unsupported)
            }
            Self::Membership(MembershipError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotReady)
            }
        }
    }

    /// Maps an error of an upload to the client-facing error. `client_body_failed` tells
    /// whether the client's own body broke off (then the upload is the client's fault).
    pub fn from_upload(err: ReplicaClientError, client_body_failed: bool) -> Self {
        if client_body_failed {
            return Self::IncompleteBody(format!("upload did not complete: {err}"));
        }
        match err {
            ReplicaClientError::Status { status, body } => match body.code {
                ErrorCode::DigestMismatch => Self::DigestMismatch(body.error),
                ErrorCode::IncompleteBody => Self::IncompleteBody(body.error),
                ErrorCode::InvalidName => Self::BadRequest(body.error),
                ErrorCode::InsufficientStorage => Self::InsufficientStorage(body.error),
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
            tracing::warn!(%status, %code, error = %self, "request failed");
        }
        let body = ErrorBody::new(code, self.to_string());
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

    fn refused(code: ErrorCode, status: u16) -> ReplicaClientError {
        ReplicaClientError::Status {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            body: ErrorBody::new(code, "why"),
        }
    }

    #[test]
    fn upload_failures_map_to_client_facing_codes() {
        let cases = [
            (
                refused(ErrorCode::DigestMismatch, 400),
                false,
                StatusCode::BAD_REQUEST,
                ErrorCode::DigestMismatch,
            ),
            (
                refused(ErrorCode::InsufficientStorage, 507),
                false,
                StatusCode::INSUFFICIENT_STORAGE,
                ErrorCode::InsufficientStorage,
            ),
            (
                refused(ErrorCode::Internal, 500),
                false,
                StatusCode::BAD_GATEWAY,
                ErrorCode::ReplicaError,
            ),
            (
                ReplicaClientError::Unreachable("refused".into()),
                false,
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::NoReplica,
            ),
            (
                ReplicaClientError::Transport("reset".into()),
                false,
                StatusCode::BAD_GATEWAY,
                ErrorCode::ReplicaError,
            ),
            // The client's own body broke off: whatever the replica said, it's a 400.
            (
                ReplicaClientError::Transport("reset".into()),
                true,
                StatusCode::BAD_REQUEST,
                ErrorCode::IncompleteBody,
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
