//! Wire types shared by every Deposito crate.
//!
//! This crate stays light on purpose (no kube, no axum): the client, the replica and the
//! operator all depend on it, and it only describes what crosses the wire, plus the few pure
//! helpers every side shares ([`sha256_hex`], [`units::human_bytes`]).

pub mod error;
pub mod gateway;
pub mod integers;
pub mod lifecycle;
pub mod names;
pub mod openapi;
pub mod replica;
pub mod units;

pub use error::{ErrorBody, ErrorCode};
pub use names::{FileKey, NameError};

/// Header carrying a lowercase hex sha256: the expected digest on uploads, the actual digest
/// on responses.
pub const HEADER_SHA256: &str = "x-deposito-sha256";
/// Header of a deposit sent without `Content-Length` (chunked, to carry the trailer
/// `x-deposito-sha256`): its exact length, checked like a `Content-Length`.
pub const HEADER_CONTENT_LENGTH: &str = "x-deposito-content-length";
/// Header carrying the replication level on `HEAD` responses.
pub const HEADER_REPLICAS: &str = "x-deposito-replicas";
/// Header carrying the number of verified copies on `HEAD` responses.
pub const HEADER_READY_REPLICAS: &str = "x-deposito-ready-replicas";
/// Header carrying the file's phase on `HEAD` responses.
pub const HEADER_PHASE: &str = "x-deposito-phase";
/// Header of a deposit carrying the file's lifecycle (`3,1@7d,expire@90d`, see
/// [`lifecycle`]).
pub const HEADER_LIFECYCLE: &str = "x-deposito-lifecycle";
/// Header of a deposit carrying the file's retention lock (RFC 3339 or a date): until then it
/// can't be deleted, replaced or lowered.
pub const HEADER_RETAIN_UNTIL: &str = "x-deposito-retain-until";

/// Returns true when `s` is a lowercase hex sha256 digest (64 characters).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The sha256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_accepts_only_lowercase_64_hex() {
        let digest = sha256_hex(b"abc");
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_sha256_hex(&digest));
        assert!(!is_sha256_hex(&digest.to_uppercase()));
        assert!(!is_sha256_hex(&digest[1..]));
        assert!(!is_sha256_hex(&format!("{}g", &digest[1..])));
    }
}
