//! Fetching a `url` source into a verified copy (`POST /v1/objects/{ns}/{name}/fetch`).
//!
//! The replica, not the operator, downloads the bytes (rule 6: the controller stays off the
//! data path). The host is resolved once and every address checked: loopback, link-local
//! (which holds cloud metadata services such as 169.254.169.254) and unspecified addresses
//! are refused unless the replica runs with `--fetch-allow-private`. The connection is then
//! pinned to the checked addresses and redirects are not followed, so neither DNS rebinding
//! nor a redirect can lead the fetch elsewhere.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use deposito_api::replica::FetchRequest;
use deposito_api::{is_sha256_hex, FileKey};
use futures::TryStreamExt;
use tracing::instrument;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::storage::Written;

/// True for addresses a manifest must not make a replica fetch from by default.
pub fn is_private_target(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_target(IpAddr::V4(v4));
            }
            // fe80::/10 is IPv6 link-local.
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Checks a fetch request and resolves its host to the addresses it may connect to.
async fn resolve(
    req: &FetchRequest,
    allow_private: bool,
) -> Result<(reqwest::Url, Vec<SocketAddr>)> {
    let url = reqwest::Url::parse(&req.url)
        .map_err(|e| Error::BadRequest(format!("invalid url '{}': {e}", req.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::BadRequest(format!(
            "url '{}' is not http or https",
            req.url
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| Error::BadRequest(format!("url '{}' has no host", req.url)))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| Error::FetchFailed(format!("cannot resolve {host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(Error::FetchFailed(format!("{host} resolves to no address")));
    }
    if !allow_private {
        if let Some(bad) = addrs.iter().find(|a| is_private_target(a.ip())) {
            return Err(Error::Forbidden(format!(
                "url host {host} resolves to {}, a loopback or link-local address; \
                 the replica refuses it unless started with --fetch-allow-private",
                bad.ip()
            )));
        }
    }
    Ok((url, addrs))
}

/// Downloads `req.url` into a new copy of `key`, verified against `req.sha256` when given.
#[instrument(skip(app, req), fields(key = %key, url = %req.url))]
pub async fn fetch(app: &AppState, key: &FileKey, req: &FetchRequest) -> Result<Written> {
    let expected = match &req.sha256 {
        Some(sha) if !is_sha256_hex(sha) => return Err(Error::InvalidDigest(sha.clone())),
        other => other.clone(),
    };
    let (url, addrs) = resolve(req, app.config.fetch_allow_private).await?;
    let host = url.host_str().unwrap_or_default().to_string();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .resolve_to_addrs(&host, &addrs)
        .build()
        .map_err(|e| Error::Internal(format!("http client: {e}")))?;
    let _transfer = app.transfer();
    let resp = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| Error::FetchFailed(format!("GET {url}: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(Error::FetchFailed(format!("GET {url}: {status}")));
    }
    let len = resp.content_length();
    let metrics = &app.metrics;
    let body = resp
        .bytes_stream()
        .map_err(|e| Error::FetchFailed(format!("download from {url} cut short: {e}")))
        .inspect_ok(|b| {
            metrics.bytes_received.inc_by(b.len() as u64);
        });
    app.store
        .write(key, expected.as_deref(), len, body)
        .await
        .map_err(|e| match e {
            Error::IncompleteBody(m) => Error::FetchFailed(format!("download cut short: {m}")),
            other => other,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_targets_table() {
        for (ip, private) in [
            ("127.0.0.1", true),
            ("127.0.100.3", true),
            ("169.254.169.254", true),
            ("0.0.0.0", true),
            ("::1", true),
            ("fe80::1", true),
            ("::ffff:127.0.0.1", true),
            ("10.0.0.1", false),
            ("192.168.1.1", false),
            ("93.184.216.34", false),
            ("2001:db8::1", false),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(is_private_target(ip), private, "{ip}");
        }
    }

    #[tokio::test]
    async fn refused_urls_table() {
        let req = |url: &str| FetchRequest {
            url: url.into(),
            sha256: None,
        };
        for bad in ["ftp://example.com/x", "not a url", "file:///etc/passwd"] {
            assert!(
                matches!(resolve(&req(bad), false).await, Err(Error::BadRequest(_))),
                "{bad}"
            );
        }
        for private in [
            "http://127.0.0.1:1/x",
            "http://169.254.169.254/latest/meta-data",
            "http://0/",
            "http://[::1]/",
        ] {
            assert!(
                matches!(
                    resolve(&req(private), false).await,
                    Err(Error::Forbidden(_))
                ),
                "{private}"
            );
        }
        let (_, addrs) = resolve(&req("http://127.0.0.1:1/x"), true).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:1".parse().unwrap()]);
    }
}
