//! HTTP client for the replica API, used by the reconcile loop and the gateway.

use std::time::Duration;

use deposito_api::replica::{InventoryPage, ObjectInfo, PullRequest};
use deposito_api::{ErrorBody, FileKey, HEADER_SHA256};
use reqwest::StatusCode;

/// Failure talking to a replica.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReplicaClientError {
    #[error("replica answered {status}: {} ({})", body.error, body.code)]
    Status { status: StatusCode, body: ErrorBody },
    #[error("replica unreachable: {0}")]
    Unreachable(String),
    #[error("transfer with replica failed: {0}")]
    Transport(String),
}

impl From<reqwest::Error> for ReplicaClientError {
    fn from(err: reqwest::Error) -> Self {
        use std::error::Error;
        let mut msg = err.to_string();
        let mut source = err.source();
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        if err.is_connect() {
            Self::Unreachable(msg)
        } else {
            Self::Transport(msg)
        }
    }
}

/// A client for every replica, authenticated with the replica token.
#[derive(Clone)]
pub struct ReplicaClient {
    http: reqwest::Client,
    token: String,
}

/// Percent-encodes one path segment (file names may hold spaces, `%`, `?`, `#`...).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `{base}/v1/objects/{ns}/{name}`.
pub fn object_url(base: &str, key: &FileKey) -> String {
    format!(
        "{}/v1/objects/{}/{}",
        base.trim_end_matches('/'),
        encode_segment(&key.namespace),
        encode_segment(&key.name)
    )
}

/// `{base}/v1/objects/{ns}/{name}/{sha256}`.
pub fn version_url(base: &str, key: &FileKey, sha256: &str) -> String {
    format!("{}/{sha256}", object_url(base, key))
}

impl ReplicaClient {
    /// Builds a client. Control requests time out; data requests only time out when idle.
    pub fn new(token: String) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .read_timeout(Duration::from_secs(120))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client");
        Self { http, token }
    }

    /// The raw HTTP client, for streaming requests built by the gateway.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The bearer token replicas expect.
    pub fn token(&self) -> &str {
        &self.token
    }

    async fn check(response: reqwest::Response) -> Result<reqwest::Response, ReplicaClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str::<ErrorBody>(&text).unwrap_or(ErrorBody {
            code: "unknown".into(),
            error: text.chars().take(200).collect(),
        });
        Err(ReplicaClientError::Status { status, body })
    }

    /// Lists every object a replica holds, following pages.
    #[tracing::instrument(skip(self), level = "debug")]
    pub async fn inventory(&self, base: &str) -> Result<Vec<ObjectInfo>, ReplicaClientError> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut request = self
                .http
                .get(format!("{}/v1/inventory", base.trim_end_matches('/')))
                .bearer_auth(&self.token)
                .timeout(Duration::from_secs(10))
                .query(&[("limit", "5000")]);
            if let Some(cursor) = &after {
                request = request.query(&[("after", cursor)]);
            }
            let page: InventoryPage = Self::check(request.send().await?).await?.json().await?;
            items.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(items),
            }
        }
    }

    /// Asks `target` to fetch a verified copy from `source`.
    #[tracing::instrument(skip(self))]
    pub async fn pull(
        &self,
        target: &str,
        source: &str,
        key: &FileKey,
        sha256: &str,
    ) -> Result<ObjectInfo, ReplicaClientError> {
        let request = self
            .http
            .post(format!("{}/pull", version_url(target, key, sha256)))
            .bearer_auth(&self.token)
            .json(&PullRequest {
                source: source.to_string(),
            });
        Ok(Self::check(request.send().await?).await?.json().await?)
    }

    /// Deletes one copy. A copy that is already gone counts as deleted.
    #[tracing::instrument(skip(self))]
    pub async fn delete(
        &self,
        base: &str,
        key: &FileKey,
        sha256: &str,
    ) -> Result<(), ReplicaClientError> {
        let response = self
            .http
            .delete(version_url(base, key, sha256))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30))
            .send()
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Self::check(response).await.map(|_| ())
    }

    /// Streams `body` into a new copy on `base`, verified against `expected_sha256` if given.
    #[tracing::instrument(skip(self, body))]
    pub async fn put(
        &self,
        base: &str,
        key: &FileKey,
        expected_sha256: Option<&str>,
        content_length: Option<u64>,
        body: reqwest::Body,
    ) -> Result<ObjectInfo, ReplicaClientError> {
        let mut request = self
            .http
            .put(object_url(base, key))
            .bearer_auth(&self.token)
            .body(body);
        if let Some(sha) = expected_sha256 {
            request = request.header(HEADER_SHA256, sha);
        }
        if let Some(len) = content_length {
            request = request.header(reqwest::header::CONTENT_LENGTH, len);
        }
        Ok(Self::check(request.send().await?).await?.json().await?)
    }

    /// Opens a read of one copy, forwarding an optional `Range` header.
    #[tracing::instrument(skip(self))]
    pub async fn get(
        &self,
        base: &str,
        key: &FileKey,
        sha256: &str,
        range: Option<&str>,
    ) -> Result<reqwest::Response, ReplicaClientError> {
        let mut request = self
            .http
            .get(version_url(base, key, sha256))
            .bearer_auth(&self.token);
        if let Some(range) = range {
            request = request.header(reqwest::header::RANGE, range);
        }
        let response = request.send().await?;
        if response.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            return Ok(response);
        }
        Self::check(response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_awkward_names() {
        let key = FileKey::new("default", "a b%?#ü.txt").unwrap();
        assert_eq!(
            version_url("http://r:1/", &key, "ab"),
            "http://r:1/v1/objects/default/a%20b%25%3F%23%C3%BC.txt/ab"
        );
    }
}
