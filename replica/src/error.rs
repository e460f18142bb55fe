//! The replica's one error type, mapped once to an HTTP status and a JSON [`ErrorBody`].

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use deposito_api::{ErrorBody, ErrorCode, NameError};

/// Everything a replica operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("{0}")]
    InvalidName(#[from] NameError),
    #[error("'{0}' is not a sha256 digest (64 lowercase hex characters)")]
    InvalidDigest(String),
    #[error("digest mismatch: expected {expected}, content has {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("body cut short: {0}")]
    IncompleteBody(String),
    #[error("insufficient storage: {0}")]
    InsufficientStorage(String),
    #[error("object not found")]
    NotFound,
    #[error("the copy failed verification and is quarantined; it is never served")]
    Corrupt,
    #[error("range not satisfiable (object size {size})")]
    RangeNotSatisfiable { size: u64 },
    #[error("pull failed: {0}")]
    PullFailed(String),
    /// A `url` fetch that failed, with a reason from a fixed vocabulary (never the
    /// connection error's text).
    #[error("fetch failed: {0}")]
    FetchFailed(crate::fetch::reason::Reason),
    /// A `url` fetch refused before connecting: the address is not allowed.
    #[error("fetch refused: {0}")]
    FetchRefused(crate::fetch::reason::Reason),
    #[error("change cursor expired: {0}; list the inventory again")]
    CursorExpired(String),
    #[error("{0}")]
    BadRequest(String),
    /// A request this replica will not carry out, such as fetching from a loopback address.
    #[error("{0}")]
    Forbidden(String),
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Shorthand for results of replica operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// True when an I/O error means the disk (or quota) is full.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        || e.kind() == std::io::ErrorKind::StorageFull
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        if is_no_space(&e) {
            Error::InsufficientStorage(e.to_string())
        } else {
            Error::Io(e)
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("background task failed: {e}"))
    }
}

impl Error {
    /// An error opening a copy's file: a missing file is `404 not_found` (deleted
    /// meanwhile), any other is an I/O error.
    pub fn missing_is_not_found(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound
        } else {
            e.into()
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::InvalidName(_)
            | Error::InvalidDigest(_)
            | Error::DigestMismatch { .. }
            | Error::IncompleteBody(_)
            | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::Forbidden(_) | Error::FetchRefused(_) => StatusCode::FORBIDDEN,
            Error::NotFound | Error::Corrupt => StatusCode::NOT_FOUND,
            Error::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::PullFailed(_) | Error::FetchFailed(_) => StatusCode::BAD_GATEWAY,
            Error::CursorExpired(_) => StatusCode::GONE,
            Error::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Io(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code of the JSON body.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Unauthorized => ErrorCode::Unauthorized,
            Error::InvalidName(_) => ErrorCode::InvalidName,
            Error::InvalidDigest(_) => ErrorCode::InvalidDigest,
            Error::DigestMismatch { .. } => ErrorCode::DigestMismatch,
            Error::IncompleteBody(_) => ErrorCode::IncompleteBody,
            Error::InsufficientStorage(_) => ErrorCode::InsufficientStorage,
            Error::NotFound => ErrorCode::NotFound,
            Error::Corrupt => ErrorCode::Corrupt,
            Error::RangeNotSatisfiable { .. } => ErrorCode::RangeNotSatisfiable,
            Error::PullFailed(_) => ErrorCode::PullFailed,
            Error::FetchFailed(_) => ErrorCode::FetchFailed,
            Error::FetchRefused(_) => ErrorCode::FetchRefused,
            Error::CursorExpired(_) => ErrorCode::CursorExpired,
            Error::BadRequest(_) => ErrorCode::BadRequest,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::NotReady(_) => ErrorCode::NotReady,
            Error::Io(_) | Error::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.to_string())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = %self.code(), error = %self, "request failed");
        } else {
            tracing::debug!(code = %self.code(), error = %self, "request refused");
        }
        let mut resp = (status, Json(self.body())).into_response();
        if let Error::RangeNotSatisfiable { size } = self {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_maps_to_507() {
        let e: Error = std::io::Error::from_raw_os_error(libc::ENOSPC).into();
        assert_eq!(e.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(e.code(), ErrorCode::InsufficientStorage);
        let e: Error = std::io::Error::from_raw_os_error(libc::EIO).into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
