//! The checksums S3 clients send with a body: `x-amz-checksum-crc32`, `-crc32c`,
//! `-crc64nvme`, `-sha1` and `-sha256`, as a header or, with aws-chunked bodies, as a trailer
//! (`x-amz-trailer` names it; boto3 and the aws CLI send a CRC this way by default). Each
//! announced one is computed as the bytes pass through the gateway and compared once the body
//! has been read whole; a mismatch refuses the deposit (`BadDigest`) before it is recorded.

use http::HeaderMap;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};
use s3s::TrailingHeaders;

use crate::gateway::error::GatewayError;

/// The algorithms, by the suffix of their header name.
const ALGORITHMS: [&str; 5] = ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];

/// The announced checksums of one body, being computed.
#[derive(Default)]
pub struct ClientChecksums {
    hasher: s3s::checksum::ChecksumHasher,
    /// Values given in headers, by algorithm.
    given: Vec<(&'static str, String)>,
    /// Algorithms whose value comes in the trailer.
    trailed: Vec<&'static str>,
    trailer: Option<TrailingHeaders>,
}

fn header_name(algorithm: &str) -> String {
    format!("x-amz-checksum-{algorithm}")
}

impl ClientChecksums {
    /// The checksums a request announces, in its headers or its trailer.
    pub fn of_request(headers: &HeaderMap, trailer: Option<TrailingHeaders>) -> Self {
        let trailer_names: Vec<String> = headers
            .get_all("x-amz-trailer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .collect();
        let mut out = Self {
            trailer,
            ..Self::default()
        };
        for algorithm in ALGORITHMS {
            let name = header_name(algorithm);
            let given = headers.get(&name).and_then(|v| v.to_str().ok());
            let trailed = trailer_names.contains(&name);
            // A sha256 header is checked by the replicas (`BodyChecks::sha256`).
            if (given.is_none() && !trailed) || (algorithm == "sha256" && given.is_some()) {
                continue;
            }
            match given {
                Some(value) => out.given.push((algorithm, value.trim().to_string())),
                None => out.trailed.push(algorithm),
            }
            let h = &mut out.hasher;
            match algorithm {
                "crc32" => h.crc32 = Some(Crc32::new()),
                "crc32c" => h.crc32c = Some(Crc32c::new()),
                "crc64nvme" => h.crc64nvme = Some(Crc64Nvme::new()),
                "sha1" => h.sha1 = Some(Sha1::new()),
                _ => h.sha256 = Some(Sha256::new()),
            }
        }
        out
    }

    /// Feeds the next bytes of the body.
    pub fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
    }

    /// Compares what was computed with what the client gave (headers, then the trailer,
    /// which is complete once the body has been read).
    pub fn verify(self) -> Result<(), GatewayError> {
        let computed = self.hasher.finalize();
        let value = |algorithm: &str| match algorithm {
            "crc32" => computed.checksum_crc32.clone(),
            "crc32c" => computed.checksum_crc32c.clone(),
            "crc64nvme" => computed.checksum_crc64nvme.clone(),
            "sha1" => computed.checksum_sha1.clone(),
            _ => computed.checksum_sha256.clone(),
        };
        let mut expected = self.given;
        for algorithm in self.trailed {
            let from_trailer = self
                .trailer
                .as_ref()
                .and_then(|t| t.read(|h| h.get(header_name(algorithm)).cloned()))
                .flatten()
                .and_then(|v| v.to_str().ok().map(|s| s.trim().to_string()));
            match from_trailer {
                Some(v) => expected.push((algorithm, v)),
                None => {
                    return Err(GatewayError::IncompleteBody(format!(
                        "the trailer announced {} but did not carry it",
                        header_name(algorithm)
                    )))
                }
            }
        }
        for (algorithm, given) in expected {
            if value(algorithm).as_deref() != Some(given.as_str()) {
                return Err(GatewayError::DigestMismatch(format!(
                    "the content does not match {}",
                    header_name(algorithm)
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header map of `pairs` (names in any case; one entry per pair).
    pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn header_checksums_are_computed_and_compared() {
        // CRC32 of "hello" is 0x3610a686.
        let good = headers(&[("x-amz-checksum-crc32", "NhCmhg==")]);
        let mut c = ClientChecksums::of_request(&good, None);
        c.update(b"hel");
        c.update(b"lo");
        c.verify().unwrap();
        let mut c = ClientChecksums::of_request(&good, None);
        c.update(b"hellO");
        assert!(matches!(c.verify(), Err(GatewayError::DigestMismatch(_))));
        let mut none = ClientChecksums::of_request(&HeaderMap::new(), None);
        none.update(b"anything");
        none.verify().unwrap();
    }

    #[test]
    fn a_trailer_that_never_came_is_an_incomplete_body() {
        let announced = headers(&[("x-amz-trailer", "x-amz-checksum-crc32c")]);
        let mut c = ClientChecksums::of_request(&announced, None);
        c.update(b"hello");
        assert!(matches!(c.verify(), Err(GatewayError::IncompleteBody(_))));
    }
}
