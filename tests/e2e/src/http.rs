//! HTTP helpers: reqwest calls with a bearer token, JSON error bodies, and raw TCP requests for
//! what reqwest won't send (unnormalized paths, bodies cut short).

use deposito_api::ErrorBody;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// A reqwest client for tests: no proxy (loopback), bounded timeouts, and a new connection
/// per request. Tests send requests that servers refuse before reading the body; a server may
/// then close the connection without saying so (no `Connection: close`), and a pooled
/// keep-alive connection would make the *next* request fail at random.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(600))
        .build()
        .expect("reqwest client")
}

/// A reqwest client with keep-alive pooling, as a real client would use (for the benchmark).
pub fn pooled_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(600))
        .build()
        .expect("reqwest client")
}

/// A status and body read back from a response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub async fn read(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        Reply { status, body }
    }

    /// The body as the contract's `ErrorBody`, panicking with the reply when it is not one.
    pub fn error_body(&self) -> ErrorBody {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "expected a JSON error body {{code, error}}, got {} {:?}: {e}",
                self.status, self.body
            )
        })
    }

    /// Asserts a 4xx answer with a JSON error body; returns it.
    pub fn expect_client_error(&self, what: &str) -> ErrorBody {
        assert!(
            (400..500).contains(&self.status),
            "{what}: expected a 4xx, got {} {:?}",
            self.status,
            self.body
        );
        let body = self.error_body();
        assert!(
            body.code != deposito_api::ErrorCode::Unknown && !body.error.is_empty(),
            "{what}: empty code or error in {:?}",
            self.body
        );
        body
    }
}

/// A streaming request body read from a file (bounded memory, whatever the size).
pub async fn file_body(path: &Path) -> reqwest::Body {
    let f = tokio::fs::File::open(path)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024))
}

/// Streams a response body into a file; returns the number of bytes written.
pub async fn download_to(resp: reqwest::Response, path: &Path) -> Result<u64, String> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::File::create(path)
        .await
        .map_err(|e| format!("create {}: {e}", path.display()))?;
    let mut stream = resp.bytes_stream();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("body: {e}"))?;
        f.write_all(&chunk)
            .await
            .map_err(|e| format!("write: {e}"))?;
        n += chunk.len() as u64;
    }
    f.flush().await.map_err(|e| format!("flush: {e}"))?;
    Ok(n)
}

/// Percent-encodes every byte outside the unreserved set, for a path segment.
pub fn encode_segment(s: &[u8]) -> String {
    let mut out = String::new();
    for &b in s {
        if b.is_ascii_alphanumeric() || b"-_~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A raw HTTP/1.1 request: status line and body of the answer (the connection is closed by
/// the request's `Connection: close`).
pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in extra_headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send request head");
    // The server may answer early (e.g. 400 before reading the body): ignore write errors.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

/// A raw HTTP/1.1 request with a chunked body: `chunks`, then `trailers` (none: the body
/// ends with the last chunk and no trailer field). The answer's status line and body.
pub fn raw_chunked_request(
    addr: SocketAddr,
    path: &str,
    token: &str,
    extra_headers: &[(&str, &str)],
    chunks: &[&[u8]],
    trailers: &[(&str, &str)],
) -> Reply {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut req = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Transfer-Encoding: chunked\r\nAuthorization: Bearer {token}\r\n"
    )
    .into_bytes();
    for (k, v) in extra_headers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    for chunk in chunks {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n");
    for (k, v) in trailers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    // The server may answer early: ignore write errors.
    let _ = s.write_all(&req);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

/// Parses a raw HTTP/1.1 response (chunked bodies are de-chunked).
pub fn parse_response(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply { status, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Starts an upload announcing `content_length` bytes, sends `send` bytes of it, then closes
/// the connection abruptly (the client "disconnects mid-upload").
pub fn upload_then_disconnect(
    addr: SocketAddr,
    path: &str,
    token: &str,
    content_length: u64,
    send: usize,
) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {content_length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).expect("send head");
    let mut rng = crate::files::Prng::new(crate::files::random_seed());
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while sent < send {
        let n = (send - sent).min(buf.len());
        rng.fill(&mut buf[..n]);
        if s.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let _ = s.flush();
    // Let the bytes reach the server before the connection goes away.
    std::thread::sleep(Duration::from_millis(200));
    let _ = s.shutdown(std::net::Shutdown::Both);
}
