//! Per-request limits, the same on every Deposito server (the gateway and the replicas), applied
//! by [`super::serve`] around whatever router it serves:
//!
//! - every route but the streaming ones ([`RouteClass::Stream`]) reads at most
//!   `--max-json-body-bytes` of body: more (by `Content-Length` or as it arrives) is
//!   `413 payload_too_large`, answered after the rest is discarded (bounded), so memory stays
//!   flat whatever the client sends;
//! - [`RouteClass::Bounded`] routes run under the request deadline: `408 request_timeout`;
//! - the streaming routes (file bytes in or out) have no size limit and no deadline, but a
//!   minimum transfer rate ([`MinRate`]): while the server waits on the client, it must move
//!   at least N bytes per window, or the upload is cut off ([`MinRateBody`]) or the
//!   connection closed ([`SlowWriteGuard`], a client that does not read its download).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use bytes::{Bytes, BytesMut};
use deposito_api::{ErrorBody, ErrorCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How much of a refused body is read and discarded before the answer (a client still sending
/// would otherwise see a reset instead of the error).
const DRAIN_LIMIT: u64 = 64 << 20;
/// How long a refused body is drained at most.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// How a route is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// A small body (JSON or none), and the whole exchange under the request deadline.
    Bounded,
    /// A small body read under the deadline, then work that may outlast it and is bounded
    /// otherwise: a replica pulling a copy from a peer, a long poll with its own timeout.
    Long,
    /// File bytes streamed in or out: no size limit and no deadline, a minimum rate instead.
    Stream,
}

/// Tells the class of a request from its method and path.
pub type Classify = fn(&Method, &str) -> RouteClass;

/// The minimum transfer rate of the streaming routes: while the server waits on the client
/// (for upload bytes, or for room to write download bytes), at least `bytes` must move per
/// `window` of such waiting. `bytes == 0` turns the rule off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    pub bytes: u64,
    pub window: Duration,
}

impl MinRate {
    fn off(&self) -> bool {
        self.bytes == 0 || self.window.is_zero()
    }
}

/// The request limits of one server.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest body of a non-streaming route.
    pub max_body_bytes: usize,
    /// Deadline of a [`RouteClass::Bounded`] request (and of reading any small body).
    pub deadline: Duration,
    pub min_rate: MinRate,
}

#[derive(Clone, Copy)]
struct Enforce {
    limits: RequestLimits,
    classify: Classify,
}

/// `router` with `limits` applied to every request, by the class `classify` gives it.
pub fn apply(router: Router, limits: RequestLimits, classify: Classify) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        Enforce { limits, classify },
        enforce,
    ))
}

/// The JSON error body with `status`; `close` asks the client to open a new connection (the
/// request may not have been read to its end).
pub fn error_response(
    status: StatusCode,
    code: ErrorCode,
    message: String,
    close: bool,
) -> Response {
    let mut resp = (status, Json(ErrorBody::new(code, message))).into_response();
    if close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

fn timed_out(deadline: Duration) -> Response {
    error_response(
        StatusCode::REQUEST_TIMEOUT,
        ErrorCode::RequestTimeout,
        format!(
            "the request did not complete within {} s",
            deadline.as_secs_f64()
        ),
        true,
    )
}

async fn enforce(State(e): State<Enforce>, req: Request, next: Next) -> Response {
    let limits = e.limits;
    match (e.classify)(req.method(), req.uri().path()) {
        RouteClass::Stream => {
            let req = req.map(|body| Body::new(MinRateBody::new(body, limits.min_rate)));
            next.run(req).await
        }
        RouteClass::Bounded => {
            let run = async {
                let req = match read_small(req, limits.max_body_bytes).await {
                    Ok(req) => req,
                    Err(refused) => return refused,
                };
                next.run(req).await
            };
            tokio::time::timeout(limits.deadline, run)
                .await
                .unwrap_or_else(|_| timed_out(limits.deadline))
        }
        RouteClass::Long => {
            match tokio::time::timeout(limits.deadline, read_small(req, limits.max_body_bytes))
                .await
            {
                Ok(Ok(req)) => next.run(req).await,
                Ok(Err(refused)) => refused,
                Err(_) => timed_out(limits.deadline),
            }
        }
    }
}

/// The request with its body read into memory, at most `max` bytes; a larger body is drained
/// (bounded) and answered with 413.
async fn read_small(req: Request, max: usize) -> Result<Request, Response> {
    let (parts, mut body) = req.into_parts();
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("the request body is over the limit of {max} bytes for this route"),
            true,
        )
    };
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        drain(body).await;
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| {
            error_response(
                StatusCode::BAD_REQUEST,
                ErrorCode::IncompleteBody,
                format!("cannot read the request body: {err}"),
                true,
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                drain(body).await;
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Request::from_parts(parts, Body::from(buf.freeze())))
}

/// Reads and discards what is left of `body`, up to [`DRAIN_LIMIT`] bytes or [`DRAIN_TIME`].
async fn drain(mut body: Body) {
    let mut left = DRAIN_LIMIT;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                left = left.saturating_sub(data.len() as u64);
            }
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

/// The error of a transfer below the minimum rate.
#[derive(Debug, thiserror::Error)]
#[error("the client moved fewer than {bytes} bytes in {window:?} of waiting on it (minimum rate)")]
pub struct TooSlow {
    bytes: u64,
    window: Duration,
}

/// Measures the time spent waiting on the client and the bytes it moved meanwhile; the time
/// the server itself is busy (not polling) is not counted.
struct RateClock {
    rate: MinRate,
    /// Waiting time of the current window before `since`.
    waited: Duration,
    /// Since when the client is being waited on, if it is.
    since: Option<Instant>,
    /// Bytes moved in the current window.
    bytes: u64,
    timer: Option<Pin<Box<Sleep>>>,
}

impl RateClock {
    fn new(rate: MinRate) -> Self {
        RateClock {
            rate,
            waited: Duration::ZERO,
            since: None,
            bytes: 0,
            timer: None,
        }
    }

    fn too_slow(&self) -> TooSlow {
        TooSlow {
            bytes: self.rate.bytes,
            window: self.rate.window,
        }
    }

    /// The client moved `n` bytes.
    fn progress(&mut self, n: u64) -> Result<(), TooSlow> {
        if self.rate.off() {
            return Ok(());
        }
        if let Some(since) = self.since.take() {
            self.waited += since.elapsed();
        }
        self.bytes = self.bytes.saturating_add(n);
        if self.waited >= self.rate.window {
            let enough = self.bytes >= self.rate.bytes;
            self.waited = Duration::ZERO;
            self.bytes = 0;
            if !enough {
                return Err(self.too_slow());
            }
        }
        Ok(())
    }

    /// The server waits on the client: arms the timer (waking `cx` when the window of
    /// waiting runs out); an error when it ran out short of the minimum.
    fn pending(&mut self, cx: &mut Context<'_>) -> Result<(), TooSlow> {
        if self.rate.off() {
            return Ok(());
        }
        loop {
            let since = *self.since.get_or_insert_with(Instant::now);
            let due = since + self.rate.window.saturating_sub(self.waited);
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            if self.bytes < self.rate.bytes {
                return Err(self.too_slow());
            }
            self.waited = Duration::ZERO;
            self.bytes = 0;
            self.since = Some(Instant::now());
        }
    }
}

/// A request body that fails with [`TooSlow`] when the client sends below the minimum rate.
pub struct MinRateBody {
    inner: Body,
    clock: RateClock,
}

impl MinRateBody {
    pub fn new(inner: Body, rate: MinRate) -> Self {
        MinRateBody {
            inner,
            clock: RateClock::new(rate),
        }
    }
}

impl http_body::Body for MinRateBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                match this.clock.progress(n) {
                    Ok(()) => Poll::Ready(Some(Ok(frame))),
                    Err(slow) => Poll::Ready(Some(Err(axum::Error::new(slow)))),
                }
            }
            Poll::Pending => match this.clock.pending(cx) {
                Ok(()) => Poll::Pending,
                Err(slow) => {
                    tracing::info!(%slow, "upload cut off");
                    Poll::Ready(Some(Err(axum::Error::new(slow))))
                }
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection whose writes fail with `TimedOut` when the client reads below the minimum
/// rate (while writes wait for room in the socket, the client must take `bytes` per window).
/// Reads pass through.
pub struct SlowWriteGuard<IO> {
    io: IO,
    clock: RateClock,
}

impl<IO> SlowWriteGuard<IO> {
    pub fn new(io: IO, rate: MinRate) -> Self {
        SlowWriteGuard {
            io,
            clock: RateClock::new(rate),
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

fn slow_reader(slow: TooSlow) -> std::io::Error {
    tracing::info!(%slow, "download cut off: the client does not read");
    std::io::Error::new(std::io::ErrorKind::TimedOut, slow)
}

impl<IO: AsyncRead + Unpin> AsyncRead for SlowWriteGuard<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SlowWriteGuard<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.account(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.account(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO> SlowWriteGuard<IO> {
    fn account(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => match self.clock.progress(n as u64) {
                Ok(()) => Poll::Ready(Ok(n)),
                Err(slow) => Poll::Ready(Err(slow_reader(slow))),
            },
            Poll::Pending => match self.clock.pending(cx) {
                Ok(()) => Poll::Pending,
                Err(slow) => Poll::Ready(Err(slow_reader(slow))),
            },
            other => other,
        }
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
