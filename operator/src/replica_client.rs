//! HTTP client for the replica API, used by the reconcile loop and the gateway.

use std::sync::Arc;
use std::time::Duration;

use deposito_api::replica::{
    ChangePage, FetchRequest, InventoryPage, ObjectInfo, PullRequest, RegisterRequest,
};
use deposito_api::{ErrorBody, ErrorCode, FileKey, HEADER_SHA256};
use deposito_util::token::LiveToken;
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

impl ReplicaClientError {
    /// The replica's error code, when it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Status { body, .. } => Some(body.code),
            _ => None,
        }
    }

    /// True when the replica refused the content itself (wrong digest, a url it may not
    /// fetch, a url body over the cap): trying again with the same input gives the same
    /// answer.
    pub fn is_content_error(&self) -> bool {
        match self {
            Self::Status { body, .. } if body.code == ErrorCode::FetchFailed => {
                body.error.ends_with(deposito_api::replica::FETCH_TOO_LARGE)
            }
            _ => matches!(
                self.code(),
                Some(
                    ErrorCode::DigestMismatch
                        | ErrorCode::InvalidDigest
                        | ErrorCode::InvalidName
                        | ErrorCode::BadRequest
                        | ErrorCode::Forbidden
                        | ErrorCode::FetchRefused
                )
            ),
        }
    }
}

/// The change-feed position a whole inventory, read page by page, is valid at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingPosition {
    pub epoch: String,
    /// Changes after this sequence number may be missing from the listing: follow the
    /// change feed from here.
    pub seq: u64,
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
    /// For the calls a replica answers only when its work is done (a pull from a peer, a
    /// `url` fetch, bounded by the replica's own limits): no read timeout, TCP keepalive to
    /// notice a replica that went away.
    long: reqwest::Client,
    token: Arc<LiveToken>,
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
    /// Builds a client presenting `token`, which never changes.
    pub fn new(token: String) -> Self {
        Self::following(LiveToken::new(token, Duration::ZERO))
    }

    /// Builds a client presenting whatever `token` holds at each request (a token file
    /// followed by [`deposito_util::token::TokenFileReload`]). Control requests time out;
    /// data requests only time out when idle.
    pub fn following(token: Arc<LiveToken>) -> Self {
        Self::build(token, None)
    }

    /// Like [`ReplicaClient::following`], over internal TLS: HTTPS only (a replica URL with
    /// `http://` fails before anything is sent, so the token never goes out in clear), the
    /// replicas' certificates checked by `tls` (see
    /// [`deposito_util::tls::pinned_name_client`]).
    pub fn internal_tls(token: Arc<LiveToken>, tls: rustls::ClientConfig) -> Self {
        Self::build(token, Some(tls))
    }

    fn build(token: Arc<LiveToken>, tls: Option<rustls::ClientConfig>) -> Self {
        let client = |read_timeout: Option<Duration>| {
            let builder = reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(3))
                .tcp_keepalive(Duration::from_secs(30))
                // Below the replicas' idle limit (--header-read-timeout-secs, 10 s by
                // default): a pooled connection is dropped here before the replica closes it
                // under a request.
                .pool_idle_timeout(Duration::from_secs(5));
            let builder = match read_timeout {
                Some(timeout) => builder.read_timeout(timeout),
                None => builder,
            };
            let builder = match &tls {
                Some(tls) => builder.use_preconfigured_tls(tls.clone()).https_only(true),
                None => builder,
            };
            builder.build().expect("reqwest client")
        };
        Self {
            http: client(Some(Duration::from_secs(120))),
            long: client(None),
            token,
        }
    }

    /// The raw HTTP client, for streaming requests built by the gateway.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn check(response: reqwest::Response) -> Result<reqwest::Response, ReplicaClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str::<ErrorBody>(&text).unwrap_or(ErrorBody {
            code: ErrorCode::Unknown,
            error: text.chars().take(200).collect(),
        });
        Err(ReplicaClientError::Status { status, body })
    }

    /// Lists every object a replica holds, following pages, each page given to `on_page`
    /// as it arrives (no page is kept). The position's `seq` is the first page's: replaying
    /// the change feed from there repairs anything that changed while the later pages were
    /// read.
    #[tracing::instrument(skip(self, on_page), level = "debug")]
    pub async fn inventory(
        &self,
        base: &str,
        mut on_page: impl FnMut(Vec<ObjectInfo>) + Send,
    ) -> Result<ListingPosition, ReplicaClientError> {
        let mut after: Option<String> = None;
        let mut position: Option<(String, u64)> = None;
        loop {
            let mut request = self
                .http
                .get(format!("{}/v1/inventory", base.trim_end_matches('/')))
                .bearer_auth(self.token.presented())
                .timeout(Duration::from_secs(30))
                .query(&[("limit", "10000")]);
            if let Some(cursor) = &after {
                request = request.query(&[("after", cursor)]);
            }
            let page: InventoryPage = Self::check(request.send().await?).await?.json().await?;
            let (epoch, _) = position.get_or_insert_with(|| (page.epoch.clone(), page.seq));
            if *epoch != page.epoch {
                // The replica restarted between two pages: the listing is not one snapshot.
                return Err(ReplicaClientError::Transport(
                    "replica restarted while its inventory was listed".into(),
                ));
            }
            on_page(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => {
                    let (epoch, seq) = position.expect("set on the first page");
                    return Ok(ListingPosition { epoch, seq });
                }
            }
        }
    }

    /// The inventory changes after `since` in `epoch`; waits up to `wait` for a first one.
    /// A `410 cursor_expired` answer means: list again.
    pub async fn changes(
        &self,
        base: &str,
        epoch: &str,
        since: u64,
        wait: Duration,
    ) -> Result<ChangePage, ReplicaClientError> {
        let request = self
            .http
            .get(format!(
                "{}/v1/inventory/changes",
                base.trim_end_matches('/')
            ))
            .bearer_auth(self.token.presented())
            .timeout(wait + Duration::from_secs(15))
            .query(&[
                ("epoch", epoch.to_string()),
                ("since", since.to_string()),
                ("limit", "10000".to_string()),
                ("wait", wait.as_secs().to_string()),
            ]);
        Ok(Self::check(request.send().await?).await?.json().await?)
    }

    /// What the replica says of itself: free space, load, readiness.
    pub async fn info(&self, base: &str) -> Result<RegisterRequest, ReplicaClientError> {
        let request = self
            .http
            .get(format!("{}/v1/info", base.trim_end_matches('/')))
            .bearer_auth(self.token.presented())
            .timeout(Duration::from_secs(10));
        Ok(Self::check(request.send().await?).await?.json().await?)
    }

    /// True when the replica holds a verified (ready) copy right now.
    pub async fn holds(
        &self,
        base: &str,
        key: &FileKey,
        sha256: &str,
    ) -> Result<bool, ReplicaClientError> {
        let response = self
            .http
            .head(version_url(base, key, sha256))
            .bearer_auth(self.token.presented())
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status => Err(ReplicaClientError::Status {
                status,
                body: ErrorBody::new(ErrorCode::Unknown, format!("HEAD answered {status}")),
            }),
        }
    }

    /// Asks `base` to fetch `url` into a verified copy of `key`.
    pub async fn fetch(
        &self,
        base: &str,
        key: &FileKey,
        url: &str,
        sha256: Option<&str>,
    ) -> Result<ObjectInfo, ReplicaClientError> {
        let request = self
            .long
            .post(format!("{}/fetch", object_url(base, key)))
            .bearer_auth(self.token.presented())
            .json(&FetchRequest {
                url: url.to_string(),
                sha256: sha256.map(str::to_string),
                size: None,
            });
        Ok(Self::check(request.send().await?).await?.json().await?)
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
            .long
            .post(format!("{}/pull", version_url(target, key, sha256)))
            .bearer_auth(self.token.presented())
            .json(&PullRequest {
                source: source.to_string(),
            });
        Ok(Self::check(request.send().await?).await?.json().await?)
    }

    /// Moves one ready copy to the replica's trash (an orphan collected). A copy already gone
    /// counts as collected (`None`).
    #[tracing::instrument(skip(self))]
    pub async fn trash(
        &self,
        base: &str,
        key: &FileKey,
        sha256: &str,
    ) -> Result<Option<ObjectInfo>, ReplicaClientError> {
        let response = self
            .http
            .post(format!("{}/trash", version_url(base, key, sha256)))
            .bearer_auth(self.token.presented())
            .timeout(Duration::from_secs(30))
            .send()
            .await?;
        match Self::check(response).await {
            Ok(response) => Ok(Some(response.json().await?)),
            Err(err) if err.code() == Some(ErrorCode::NotFound) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Restores one copy from the replica's trash (hashed again there; renamed, not copied).
    #[tracing::instrument(skip(self))]
    pub async fn restore(
        &self,
        base: &str,
        key: &FileKey,
        sha256: &str,
    ) -> Result<ObjectInfo, ReplicaClientError> {
        let request = self
            .http
            .post(format!("{}/restore", version_url(base, key, sha256)))
            .bearer_auth(self.token.presented());
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
            .bearer_auth(self.token.presented())
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
            .bearer_auth(self.token.presented())
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
            .bearer_auth(self.token.presented());
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
    #[test]
    fn refused_and_too_large_fetches_are_content_errors_other_failures_are_not() {
        let answer = |status: u16, code, error: &str| ReplicaClientError::Status {
            status: StatusCode::from_u16(status).unwrap(),
            body: ErrorBody::new(code, error),
        };
        for (err, content) in [
            (
                answer(
                    403,
                    ErrorCode::FetchRefused,
                    "fetch refused: address not allowed",
                ),
                true,
            ),
            (
                answer(502, ErrorCode::FetchFailed, "fetch failed: too large"),
                true,
            ),
            (
                answer(502, ErrorCode::FetchFailed, "fetch failed: timed out"),
                false,
            ),
            (
                answer(502, ErrorCode::FetchFailed, "fetch failed: HTTP 404"),
                false,
            ),
            (
                answer(400, ErrorCode::DigestMismatch, "digest mismatch"),
                true,
            ),
            (ReplicaClientError::Unreachable("x".into()), false),
        ] {
            assert_eq!(err.is_content_error(), content, "{err}");
        }
    }
}
