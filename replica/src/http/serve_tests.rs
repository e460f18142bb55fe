//! Unit tests of the connection loop: the cap answers 503, the header-read timeout closes a
//! silent connection, shutdown lets a request in flight finish.

use super::*;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn args() -> ServeArgs {
    ServeArgs {
        max_connections: 2,
        header_read_timeout_secs: 1,
        ..ServeArgs::default()
    }
}

fn app() -> Router {
    Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            "done"
        }),
    )
}

fn classify(_: &axum::http::Method, _: &str) -> limits::RouteClass {
    limits::RouteClass::Bounded
}

async fn start(
    args: ServeArgs,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve(listener, app(), classify, args, None, async {
            let _ = stopped.await;
        })
        .await
    });
    (addr, stop, task)
}

async fn request(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}

#[test]
fn the_cap_fits_the_open_file_limit() {
    assert_eq!(cap_for_fd_limit(1024, 1_048_576), 1024);
    assert_eq!(cap_for_fd_limit(1024, 1024), (1024 - 256 - 64) / 2);
    assert_eq!(cap_for_fd_limit(1024, 10), 1);
    assert_eq!(connection_cap(4), 4);
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_silent_ones_are_closed() {
    let (addr, _stop, _task) = start(args()).await;
    let mut idle1 = TcpStream::connect(addr).await.unwrap();
    let mut idle2 = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = request(addr, "/slow").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"code\":\"overloaded\""), "{answer}");
    // The header-read timeout (1 s) closes the silent connections, freeing the slots.
    let mut buf = [0u8; 64];
    for idle in [&mut idle1, &mut idle2] {
        let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
            .await
            .expect("closed by the header-read timeout")
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    let answer = request(addr, "/slow").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let (addr, stop, task) = start(ServeArgs::default()).await;
    let in_flight = tokio::spawn(request(addr, "/slow"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let answer = in_flight.await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
        "{answer}"
    );
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returns after the drain")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}
