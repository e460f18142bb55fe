//! Serving a router, the one connection loop of every Deposito server (a replica, the
//! gateway, kube mode's metrics address): HTTP/1.1 (HTTP/2 too when TLS negotiates it by
//! ALPN) on hyper's connection builders, with
//!
//! - TCP_NODELAY on every accepted socket;
//! - a header-read timeout (`--header-read-timeout-secs`): a client that has not sent a whole
//!   request head within it is disconnected. It also bounds the idle wait for the next
//!   request on a kept-alive connection (hyper starts the clock when it starts waiting), and
//!   the TLS handshake;
//! - a cap on concurrent connections (`--max-connections`, lowered to fit the open-file
//!   limit, [`connection_cap`]): a connection beyond it is answered `503 overloaded` and
//!   closed (at most [`REFUSING`] such answers at a time; beyond that the socket is closed);
//! - the request limits of [`super::limits`] (body size, deadline, minimum rate);
//! - graceful shutdown: once `shutdown` completes, no new connection is accepted, idle ones
//!   are closed and requests in flight may finish within [`DRAIN_TIME`].

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use clap::Args;
use deposito_api::ErrorCode;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::rustls::ServerConfig;

use super::limits::{self, Classify, MinRate, RequestLimits, SlowWriteGuard};

/// How long requests in flight may run on after the shutdown signal.
pub const DRAIN_TIME: Duration = Duration::from_secs(10);
/// Connections over the cap answered `503` at the same time, at most.
pub const REFUSING: usize = 64;
/// File descriptors kept for everything but client connections (store files, connections to
/// peers and replicas, the catalog).
const FD_RESERVE: u64 = 256;

/// The serving limits of a server (the same flags on the operator and the replica).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ServeArgs {
    /// Concurrent client connections at most; more are answered 503 `overloaded` and closed.
    /// Lowered at start-up to fit the open-file limit (half of it, less a reserve).
    #[arg(long, env = "DEPOSITO_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a client has to send a whole request head (and the TLS handshake), and that a
    /// kept-alive connection may wait idle for its next request; then it is closed.
    #[arg(long, env = "DEPOSITO_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,
    /// Deadline in seconds of every request but the file transfers (and a replica's pulls
    /// and the long polls, bounded otherwise): 408 `request_timeout` past it.
    #[arg(long, env = "DEPOSITO_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    pub request_timeout_secs: u64,
    /// Largest request body of every route but the file uploads (JSON bodies): 413
    /// `payload_too_large` over it.
    #[arg(long, env = "DEPOSITO_MAX_JSON_BODY_BYTES", default_value_t = 65_536)]
    pub max_json_body_bytes: usize,
    /// Minimum transfer rate of file uploads and downloads: bytes the client must move per
    /// --min-transfer-window-secs of waiting on it, else the transfer is cut off (0: off).
    #[arg(long, env = "DEPOSITO_MIN_TRANSFER_BYTES", default_value_t = 16_384)]
    pub min_transfer_bytes: u64,
    /// The window of --min-transfer-bytes, in seconds.
    #[arg(long, env = "DEPOSITO_MIN_TRANSFER_WINDOW_SECS", default_value_t = 30)]
    pub min_transfer_window_secs: u64,
}

impl Default for ServeArgs {
    fn default() -> Self {
        ServeArgs {
            max_connections: 1024,
            header_read_timeout_secs: 10,
            request_timeout_secs: 60,
            max_json_body_bytes: 65_536,
            min_transfer_bytes: 16_384,
            min_transfer_window_secs: 30,
        }
    }
}

impl ServeArgs {
    /// How long a request head may take, and a kept-alive connection may stay idle.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs.max(1))
    }

    /// The minimum transfer rate of the streaming routes (and of a pull from a peer).
    pub fn min_rate(&self) -> MinRate {
        MinRate {
            bytes: self.min_transfer_bytes,
            window: Duration::from_secs(self.min_transfer_window_secs),
        }
    }

    /// The per-request limits.
    pub fn request_limits(&self) -> RequestLimits {
        RequestLimits {
            max_body_bytes: self.max_json_body_bytes,
            deadline: Duration::from_secs(self.request_timeout_secs.max(1)),
            min_rate: self.min_rate(),
        }
    }
}

/// The connection cap for `wanted` connections with an open-file limit of `soft` (after
/// trying to raise it to `hard`): each connection may need a second descriptor (the gateway
/// streams to replicas), and [`FD_RESERVE`] stay for the rest. At least 1.
pub fn cap_for_fd_limit(wanted: usize, soft: u64) -> usize {
    let room = soft.saturating_sub(FD_RESERVE + REFUSING as u64) / 2;
    wanted
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// `wanted`, lowered to fit the open-file limit, which is first raised (up to the hard
/// limit) to make room for it.
pub fn connection_cap(wanted: usize) -> usize {
    let needed = (wanted as u64)
        .saturating_mul(2)
        .saturating_add(FD_RESERVE + REFUSING as u64);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return wanted;
        }
        if lim.rlim_cur < needed && lim.rlim_max > lim.rlim_cur {
            let raised = libc::rlimit {
                rlim_cur: needed.min(lim.rlim_max),
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = raised.rlim_cur;
            }
        }
        lim.rlim_cur
    };
    let cap = cap_for_fd_limit(wanted, soft);
    if cap < wanted {
        tracing::warn!(
            wanted,
            cap,
            open_file_limit = soft,
            "--max-connections lowered to fit the open-file limit (ulimit -n)"
        );
    }
    cap
}

/// Serves `app` on `listener` until `shutdown` completes, HTTPS with `tls`, with the limits
/// of `args` (routes classed by `classify`). Returns once the connections have drained (or
/// after [`DRAIN_TIME`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    classify: Classify,
    args: ServeArgs,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = limits::apply(app, args.request_limits(), classify);
    let cap = connection_cap(args.max_connections);
    let slots = Arc::new(Semaphore::new(cap));
    let refusing = Arc::new(Semaphore::new(REFUSING));
    let conn = Arc::new(ConnSettings {
        header_timeout: args.header_timeout(),
        min_rate: args.min_rate(),
        tls: tls.map(tokio_rustls::TlsAcceptor::from),
    });
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(err) => {
                accept_failed(err).await;
                continue;
            }
        };
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::warn!(%err, "cannot set TCP_NODELAY");
        }
        let conn = conn.clone();
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            let svc = TowerToHyperService::new(app.clone());
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                conn.serve(tcp, svc, Some(watcher), true).await;
                drop(slot);
            });
        } else if let Ok(refusal) = refusing.clone().try_acquire_owned() {
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|_req| async { Ok::<_, Infallible>(overloaded()) });
                let _ =
                    tokio::time::timeout(conn.header_timeout, conn.serve(tcp, svc, None, false))
                        .await;
                drop(refusal);
            });
        } else {
            drop(tcp);
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIME) => {
            tracing::warn!("requests in flight did not finish within the drain time");
        }
    }
    Ok(())
}

/// The answer to a connection over the cap.
fn overloaded() -> axum::response::Response {
    limits::error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Overloaded,
        "the server is at its connection limit; retry later".into(),
        true,
    )
}

/// After a failed accept: connection errors are the peer's; anything else (EMFILE: out of
/// file descriptors) gets a pause, so the loop does not spin.
async fn accept_failed(err: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%err, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

struct ConnSettings {
    header_timeout: Duration,
    min_rate: MinRate,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl ConnSettings {
    /// Serves one connection: the TLS handshake (within the header timeout), then HTTP/1.1,
    /// or HTTP/2 when ALPN chose it.
    async fn serve<S, B>(&self, tcp: TcpStream, svc: S, watcher: Option<Watcher>, keep_alive: bool)
    where
        S: hyper::service::Service<
                axum::http::Request<hyper::body::Incoming>,
                Response = axum::http::Response<B>,
            > + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let io = SlowWriteGuard::new(tcp, self.min_rate);
        let Some(acceptor) = &self.tls else {
            return self.http(io, false, svc, watcher, keep_alive).await;
        };
        let tls = match tokio::time::timeout(self.header_timeout, acceptor.accept(io)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(err)) => {
                tracing::debug!(%err, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        self.http(tls, h2, svc, watcher, keep_alive).await;
    }

    async fn http<I, S, B>(
        &self,
        io: I,
        h2: bool,
        svc: S,
        watcher: Option<Watcher>,
        keep_alive: bool,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<
                axum::http::Request<hyper::body::Incoming>,
                Response = axum::http::Response<B>,
            > + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let io = TokioIo::new(io);
        let result = if h2 {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(self.header_timeout))
                .keep_alive_timeout(self.header_timeout);
            if !keep_alive {
                builder.max_concurrent_streams(1);
            }
            let conn = builder.serve_connection(io, svc);
            match watcher {
                Some(w) => w.watch(conn).await,
                None => conn.await,
            }
        } else {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(self.header_timeout)
                .keep_alive(keep_alive);
            let conn = builder.serve_connection(io, svc);
            match watcher {
                Some(w) => w.watch(conn).await,
                None => conn.await,
            }
        };
        if let Err(err) = result {
            tracing::debug!(%err, "connection ended with an error");
        }
    }
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
