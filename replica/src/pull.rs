//! Pulling a copy from a peer replica: stream, verify against the wanted sha256, commit.

use deposito_api::replica::ObjectState;
use deposito_api::{ErrorBody, FileKey};
use futures::TryStreamExt;
use tracing::instrument;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::limits::MinRateBody;
use crate::storage::{ObjKey, Written};

/// The URL of `key` on the peer at `source`, with each path segment escaped.
pub fn object_url(source: &str, key: &ObjKey) -> Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(source)
        .map_err(|e| Error::BadRequest(format!("invalid pull source '{source}': {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::BadRequest(format!(
            "pull source '{source}' is not an http(s) URL"
        )));
    }
    url.path_segments_mut()
        .map_err(|_| Error::BadRequest(format!("invalid pull source '{source}'")))?
        .pop_if_empty()
        .extend(["v1", "objects", &key.namespace, &key.name, &key.sha256]);
    Ok(url)
}

/// Fetches `key` from the peer at `source` and commits it once verified.
///
/// Already holding a ready copy answers at once; a copy in the trash is restored instead of
/// fetched. A peer error or a transfer cut short is
/// `pull_failed`; content that doesn't match the sha256 is `digest_mismatch`.
#[instrument(skip(app), fields(key = %key))]
pub async fn pull(app: &AppState, key: &ObjKey, source: &str) -> Result<Written> {
    // A source that is not a URL is refused even when the copy is already here.
    let url = object_url(source, key)?;
    match app.store.get(key).map(|i| (i.state, i)) {
        Some((ObjectState::Ready, info)) => {
            return Ok(Written {
                info,
                created: false,
            })
        }
        // In the trash: restored in place, no byte fetched (unless it changed there).
        Some((ObjectState::Trashed, _)) => match app.store.restore(key).await {
            Err(Error::Corrupt) => {}
            restored => return restored,
        },
        _ => {}
    }
    let _transfer = app.transfer();
    let resp = app
        .peers
        .get(url.clone())
        .bearer_auth(app.token.presented())
        .send()
        .await
        .map_err(|e| Error::PullFailed(format!("GET {url}: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| format!("{}: {}", b.code, b.error))
            .unwrap_or(text);
        return Err(Error::PullFailed(format!("GET {url}: {status}: {msg}")));
    }
    let len = resp.content_length();
    let metrics = &app.metrics;
    // The peer is held to the rate an uploading client is held to: a body that trickles
    // below it is cut off, and its temp file removed.
    let paced = MinRateBody::new(
        axum::body::Body::from_stream(resp.bytes_stream()),
        app.config.serve.min_rate(),
    );
    let body = axum::body::Body::new(paced)
        .into_data_stream()
        .map_err(|e| Error::PullFailed(format!("transfer from peer cut short: {e}")))
        .inspect_ok(|b| {
            metrics.bytes_received.inc_by(b.len() as u64);
        });
    let file_key = FileKey::new(&key.namespace, &key.name)?;
    let written = app
        .store
        .write(&file_key, Some(&key.sha256), len, body)
        .await
        .map_err(|e| match e {
            Error::IncompleteBody(m) => {
                Error::PullFailed(format!("transfer from peer cut short: {m}"))
            }
            other => other,
        })?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_urls_escape_names() {
        let key = ObjKey::new("default", "a b#?.txt", &"a".repeat(64)).unwrap();
        let u = object_url("http://127.0.0.3:7070", &key).unwrap();
        assert_eq!(
            u.as_str(),
            format!(
                "http://127.0.0.3:7070/v1/objects/default/a%20b%23%3F.txt/{}",
                "a".repeat(64)
            )
        );
        let u = object_url("http://h:1/base/", &key).unwrap();
        assert!(u.as_str().starts_with("http://h:1/base/v1/objects/"), "{u}");
        assert!(object_url("ftp://x", &key).is_err());
        assert!(object_url("not a url", &key).is_err());
    }
}
