//! The gateway's and the catalog's errors as S3 error codes, and the checks of bucket and
//! object names that answer with them.

use deposito_api::FileKey;
use s3s::{S3Error, S3ErrorCode};

use crate::engine::CatalogError;
use crate::gateway::error::GatewayError;

/// An S3 error with a message.
pub fn err(code: S3ErrorCode, message: impl Into<String>) -> S3Error {
    S3Error::with_message(code, message.into())
}

/// `InvalidObjectName` (400): a key Deposito refuses as a file name.
pub fn invalid_object_name(message: impl Into<String>) -> S3Error {
    let mut e = err(S3ErrorCode::Custom("InvalidObjectName".into()), message);
    e.set_status_code(http::StatusCode::BAD_REQUEST);
    e
}

/// A gateway error as the S3 error a client expects.
pub fn from_gateway(error: GatewayError) -> S3Error {
    let message = error.to_string();
    let code = match &error {
        GatewayError::InvalidName(_) => return invalid_object_name(message),
        GatewayError::InvalidReplicas(_) => S3ErrorCode::InvalidArgument,
        GatewayError::InvalidDigest(_) | GatewayError::DigestMismatch(_) => S3ErrorCode::BadDigest,
        GatewayError::IncompleteBody(_) => S3ErrorCode::IncompleteBody,
        GatewayError::Unauthorized => S3ErrorCode::AccessDenied,
        GatewayError::Forbidden(_) => S3ErrorCode::AccessDenied,
        GatewayError::NotFound(_) => S3ErrorCode::NoSuchKey,
        GatewayError::InsufficientStorage(_) => {
            let mut e = err(S3ErrorCode::Custom("InsufficientStorage".into()), message);
            e.set_status_code(http::StatusCode::INSUFFICIENT_STORAGE);
            return e;
        }
        GatewayError::BadRequest(_) => S3ErrorCode::InvalidRequest,
        GatewayError::InvalidLifecycle(_) => S3ErrorCode::InvalidArgument,
        GatewayError::NoReplica(_) | GatewayError::Membership(_) => S3ErrorCode::ServiceUnavailable,
        GatewayError::Catalog(e) => return from_catalog(e),
        GatewayError::Replica(_) => S3ErrorCode::InternalError,
    };
    err(code, message)
}

/// A catalog error as an S3 error: unavailable is 503 (clients retry), a conflict 409.
pub fn from_catalog(error: &CatalogError) -> S3Error {
    let code = match error {
        CatalogError::Unavailable(_) => S3ErrorCode::ServiceUnavailable,
        // S3's Object Lock answers AccessDenied too.
        CatalogError::Forbidden(_) | CatalogError::Retained(_) => S3ErrorCode::AccessDenied,
        CatalogError::Conflict(_) => S3ErrorCode::OperationAborted,
        CatalogError::Invalid(_) => S3ErrorCode::InvalidRequest,
    };
    err(code, error.to_string())
}

impl From<CatalogError> for S3Error {
    fn from(err: CatalogError) -> Self {
        from_catalog(&err)
    }
}

/// A bucket name Deposito accepts: a namespace (a DNS label). Names S3 would accept but a
/// namespace cannot be (dots, more than 63 bytes) are `InvalidBucketName`.
pub fn check_bucket(bucket: &str) -> Result<(), S3Error> {
    deposito_api::names::validate_namespace(bucket)
        .map_err(|e| err(S3ErrorCode::InvalidBucketName, e.to_string()))
}

/// The file an object key names; a key Deposito refuses as a file name (`/`, `..`, control
/// or format characters, more than 255 bytes, the reserved prefix) is `InvalidObjectName`.
pub fn object_key(bucket: &str, key: &str) -> Result<FileKey, S3Error> {
    check_bucket(bucket)?;
    FileKey::new(bucket, key)
        .map_err(|e| invalid_object_name(format!("object key '{}': {e}", key.escape_debug())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_deposito_refuses_are_s3_errors() {
        for bad in ["a/b", "report\u{202E}fdp.exe", ".DEPOSITO-x"] {
            let e = object_key("photos", bad).unwrap_err();
            assert_eq!(e.code().as_str(), "InvalidObjectName", "{bad}");
            assert_eq!(e.status_code(), Some(http::StatusCode::BAD_REQUEST));
        }
        assert_eq!(
            object_key("my.bucket", "a").unwrap_err().code(),
            &S3ErrorCode::InvalidBucketName
        );
        assert_eq!(object_key("photos", "a.jpg").unwrap().name, "a.jpg");
        let e = from_gateway(GatewayError::InsufficientStorage("full".into()));
        assert_eq!(
            e.status_code(),
            Some(http::StatusCode::INSUFFICIENT_STORAGE)
        );
        let e = from_gateway(GatewayError::InvalidReplicas("0".into()));
        assert_eq!(e.code(), &S3ErrorCode::InvalidArgument);
    }
}
