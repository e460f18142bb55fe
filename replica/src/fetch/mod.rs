//! Fetching a `url` source into a verified copy (`POST /v1/objects/{ns}/{name}/fetch`).
//!
//! The replica, not the operator, downloads the bytes (rule 6: the controller stays off the
//! data path). Since a manifest chooses the URL, the fetch is fenced in:
//!
//! - **Addresses** ([`guard`]): the host is resolved once and every address checked; only
//!   globally reachable unicast addresses pass, unless allowed by `--fetch-allow-cidr`,
//!   `--fetch-allow-host` or (tests) `--fetch-allow-private`. Literal hosts in any encoding
//!   (`2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`) are normalised by the URL parser first
//!   and checked as the address they are. The connection is pinned to the checked addresses
//!   (any other name goes through a resolver that checks again), the peer address of the
//!   connection is checked once more, redirects are not followed and proxies
//!   (`HTTP(S)_PROXY`) are ignored.
//! - **Size**: at most `--fetch-max-bytes` (and the request's `size` when given); a longer
//!   body is cut off and nothing is kept.
//! - **Time**: an overall `--fetch-deadline-secs`, a read-idle timeout `--fetch-idle-secs`,
//!   and a minimum rate `--fetch-min-bytes-per-sec` over each idle-length window, so that a
//!   dripping body cannot hold a worker.
//! - **Errors** say `403 fetch_refused` or `502 fetch_failed` with a short reason from a
//!   fixed vocabulary ([`Reason`]), never the connection error's text: the answers must not
//!   make the replica a port scanner for whoever writes manifests. The details go to the
//!   replica's log.

pub mod args;
pub mod guard;
pub mod reason;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deposito_api::replica::FetchRequest;
use deposito_api::{is_sha256_hex, FileKey};
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tracing::instrument;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::storage::Written;
pub use args::FetchArgs;
use guard::Policy;
pub use reason::Reason;

/// A checked fetch target: the URL and the addresses it may connect to.
#[derive(Debug)]
struct Target {
    url: reqwest::Url,
    /// The host, without brackets.
    host: String,
    /// True for an IP literal (no name to pin).
    literal: bool,
    addrs: Vec<SocketAddr>,
}

/// Checks a fetch URL and resolves its host to the addresses it may connect to.
async fn resolve(url: &str, policy: &Policy) -> Result<Target> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Error::BadRequest(format!("invalid url '{url}': {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::BadRequest(format!(
            "url '{url}' is not http or https"
        )));
    }
    // The parser has normalised literal hosts: `2130706433`, `0177.0.0.1`, `0x7f.1` and
    // `127.1` are all `127.0.0.1` here.
    let host = parsed
        .host_str()
        .ok_or_else(|| Error::BadRequest(format!("url '{url}' has no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let (literal, addrs) = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => (true, vec![SocketAddr::new(ip, port)]),
        Err(_) => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| {
                    tracing::info!(%host, error = %e, "fetch: host does not resolve");
                    Error::FetchFailed(Reason::DoesNotResolve)
                })?
                .collect();
            (false, addrs)
        }
    };
    if addrs.is_empty() {
        return Err(Error::FetchFailed(Reason::DoesNotResolve));
    }
    if let Some(bad) = addrs.iter().find(|a| !policy.allows(&host, a.ip())) {
        tracing::info!(%host, address = %bad.ip(), "fetch refused: address not allowed");
        return Err(Error::FetchRefused(Reason::AddressNotAllowed));
    }
    Ok(Target {
        url: parsed,
        host,
        literal,
        addrs,
    })
}

/// The resolver of the fetch client, for any name that is not pinned to checked addresses
/// (none should reach it): it resolves and refuses what the policy refuses.
struct GuardResolver(Policy);

impl reqwest::dns::Resolve for GuardResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.iter().any(|a| !policy.allows(&host, a.ip())) {
                return Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "address not allowed",
                ))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The fixed reason for a failed request or body read; the full error goes to the log.
fn classify(err: &reqwest::Error, before_response: bool) -> Reason {
    tracing::info!(error = ?err, "fetch failed");
    if err.is_timeout() {
        return Reason::TimedOut;
    }
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Reason::ConnectionRefused,
                std::io::ErrorKind::TimedOut => return Reason::TimedOut,
                std::io::ErrorKind::PermissionDenied if err.is_connect() => {
                    return Reason::AddressNotAllowed
                }
                _ => {}
            }
            if matches!(
                io.raw_os_error(),
                Some(libc::ENETUNREACH | libc::EHOSTUNREACH)
            ) {
                return Reason::Unreachable;
            }
        }
        source = s.source();
    }
    if err.is_connect() {
        Reason::CannotConnect
    } else if before_response {
        Reason::NoResponse
    } else {
        Reason::CutShort
    }
}

/// Byte count, rate and deadline of one body.
struct Meter<S> {
    body: S,
    cap: u64,
    received: u64,
    deadline: Instant,
    window: Duration,
    min_per_window: u64,
    window_start: Instant,
    window_bytes: u64,
    done: bool,
}

impl<S> Meter<S>
where
    S: Stream<Item = reqwest::Result<Bytes>> + Unpin,
{
    /// The next chunk, or the reason the body is given up.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, Reason>> {
        let chunk = match tokio::time::timeout_at(self.deadline, self.body.next()).await {
            Err(_) => return Some(Err(Reason::TimedOut)),
            Ok(None) => return None,
            Ok(Some(Err(e))) => return Some(Err(classify(&e, false))),
            Ok(Some(Ok(chunk))) => chunk,
        };
        let len = chunk.len() as u64;
        self.received += len;
        if self.received > self.cap {
            return Some(Err(Reason::TooLarge));
        }
        self.window_bytes += len;
        let now = Instant::now();
        if now.duration_since(self.window_start) >= self.window {
            if self.window_bytes < self.min_per_window {
                return Some(Err(Reason::TooSlow));
            }
            self.window_start = now;
            self.window_bytes = 0;
        }
        Some(Ok(chunk))
    }

    /// The body as the store takes it: the first failure ends it.
    fn into_stream(self) -> impl Stream<Item = Result<Bytes>> {
        futures::stream::unfold(self, |mut meter| async move {
            if meter.done {
                return None;
            }
            match meter.next_chunk().await? {
                Ok(chunk) => Some((Ok(chunk), meter)),
                Err(reason) => {
                    meter.done = true;
                    Some((Err(Error::FetchFailed(reason)), meter))
                }
            }
        })
    }
}

/// Downloads `req.url` into a new copy of `key`, verified against `req.sha256` when given.
#[instrument(skip(app, req), fields(key = %key, url = %req.url))]
pub async fn fetch(app: &AppState, key: &FileKey, req: &FetchRequest) -> Result<Written> {
    let expected = match &req.sha256 {
        Some(sha) if !is_sha256_hex(sha) => return Err(Error::InvalidDigest(sha.clone())),
        other => other.clone(),
    };
    let args = &app.config.fetch;
    let policy = args.policy();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.fetch_deadline_secs);
    let cap = req
        .size
        .map_or(args.fetch_max_bytes, |s| s.min(args.fetch_max_bytes));
    let target = resolve(&req.url, &policy).await?;
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10).min(deadline - started))
        .read_timeout(args.idle())
        .dns_resolver(Arc::new(GuardResolver(policy.clone())));
    if !target.literal {
        builder = builder.resolve_to_addrs(&target.host, &target.addrs);
    }
    let client = builder
        .build()
        .map_err(|e| Error::Internal(format!("http client: {e}")))?;
    let _transfer = app.transfer();
    let resp = tokio::time::timeout_at(deadline, client.get(target.url.clone()).send())
        .await
        .map_err(|_| Error::FetchFailed(Reason::TimedOut))?
        .map_err(|e| match classify(&e, true) {
            Reason::AddressNotAllowed => Error::FetchRefused(Reason::AddressNotAllowed),
            reason => Error::FetchFailed(reason),
        })?;
    // The connection's peer, checked once more: it must be one of the checked addresses.
    if let Some(peer) = resp.remote_addr() {
        if !target.addrs.iter().any(|a| a.ip() == peer.ip())
            || !policy.allows(&target.host, peer.ip())
        {
            tracing::warn!(host = %target.host, %peer, "fetch refused: connected to an unchecked address");
            return Err(Error::FetchRefused(Reason::AddressNotAllowed));
        }
    }
    let status = resp.status();
    if !status.is_success() {
        tracing::info!(%status, "fetch failed: HTTP status");
        return Err(Error::FetchFailed(Reason::Http(status.as_u16())));
    }
    let len = resp.content_length();
    if len.is_some_and(|l| l > cap) {
        tracing::info!(
            length = len,
            cap,
            "fetch failed: Content-Length over the cap"
        );
        return Err(Error::FetchFailed(Reason::TooLarge));
    }
    let metrics = &app.metrics;
    let body = Meter {
        body: Box::pin(resp.bytes_stream()),
        cap,
        received: 0,
        deadline,
        window: args.idle(),
        min_per_window: args
            .fetch_min_bytes_per_sec
            .saturating_mul(args.idle().as_secs()),
        window_start: Instant::now(),
        window_bytes: 0,
        done: false,
    }
    .into_stream()
    .inspect(|b| {
        if let Ok(b) = b {
            metrics.bytes_received.inc_by(b.len() as u64);
        }
    });
    app.store
        .write(key, expected.as_deref(), len, body)
        .await
        .map_err(|e| match e {
            Error::IncompleteBody(m) => {
                tracing::info!(detail = %m, "fetch failed: body cut short");
                Error::FetchFailed(Reason::CutShort)
            }
            other => other,
        })
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
