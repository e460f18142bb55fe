//! The serving limits of both servers, on real processes over real HTTP: a JSON body over the
//! limit gets `413 payload_too_large` with flat memory, silent connections are closed by the
//! header-read timeout while a real client works, connections over the cap get
//! `503 overloaded`, a request past its deadline gets `408 request_timeout`, and an upload
//! below the minimum rate is cut off without leaving anything behind, and so is a replica's
//! pull from a peer that stops sending or trickles.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use deposito_e2e::files::{object_files, tmp_files};
use deposito_e2e::http::{parse_response, Reply};
use deposito_e2e::{wait_sync, Cluster, MIB};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The resident set of process `pid`, in bytes (`VmRSS` of `/proc/PID/status`).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Asserts `reply` is `status` with the JSON error body of `code`.
fn assert_error(reply: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.body);
    let body = reply.error_body();
    assert_eq!(body.code.as_str(), code, "{what}: {}", reply.body);
    assert!(!body.error.is_empty(), "{what}");
}

async fn send_big(req: reqwest::RequestBuilder, chunked: bool) -> Reply {
    let big = vec![b' '; 10 * MIB as usize];
    let req = if chunked {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
        req.body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
    } else {
        req.body(big)
    };
    let resp = req
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    Reply::read(resp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_json_body_gets_413_on_both_servers_and_memory_stays_flat() {
    let c = Cluster::builder().replicas(2).start().await;
    let pid = c.operator_pid().unwrap();
    let put = c.put_bytes("small.bin", vec![7u8; 1000], 1, None).await;
    assert_eq!(put.status, 201, "{}", put.body);
    let patch = format!("{}/v1/files/default/small.bin", c.url());
    // Warm up (first allocations of the paths taken), then measure.
    let reply = send_big(c.http.patch(&patch).bearer_auth(&c.token), false).await;
    assert_error(&reply, 413, "payload_too_large", "PATCH of 10 MB");
    let before = rss(pid);
    for chunked in [false, true, false, true] {
        let reply = send_big(c.http.patch(&patch).bearer_auth(&c.token), chunked).await;
        assert_error(&reply, 413, "payload_too_large", "PATCH of 10 MB");
    }
    let grown = rss(pid).saturating_sub(before);
    assert!(
        grown < 5 * MIB,
        "the operator grew by {grown} bytes over four 10 MB bodies"
    );
    // Other JSON routes of the gateway, and a replica's pull and fetch.
    let replicas = format!("{}/v1/replicas/replica-1", c.url());
    let reply = send_big(c.http.patch(&replicas).bearer_auth(&c.token), true).await;
    assert_error(&reply, 413, "payload_too_large", "PATCH of a replica");
    let r = c.replica(1).url();
    for url in [
        format!("{r}/v1/objects/default/x/{SHA}/pull"),
        format!("{r}/v1/objects/default/x/fetch"),
    ] {
        for chunked in [false, true] {
            let req = c.http.post(&url).bearer_auth(&c.replica_token);
            let reply = send_big(req, chunked).await;
            assert_error(&reply, 413, "payload_too_large", &url);
        }
    }
    // A body within the limit is served as before.
    let reply = c.set_replicas("small.bin", 2).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let status = c.wait_converged("small.bin", Duration::from_secs(30)).await;
    assert_eq!(status.ready_replicas, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_by_the_header_timeout_while_a_client_works() {
    let c = Cluster::builder()
        .replicas(2)
        .operator_arg("--header-read-timeout-secs=2")
        .start()
        .await;
    let opened = Instant::now();
    let mut silent: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(c.op_addr).unwrap())
        .collect();
    // A normal client deposits and retrieves meanwhile.
    let bytes: Vec<u8> = (0..MIB as usize).map(|i| (i * 31 % 251) as u8).collect();
    let put = c.put_bytes("meanwhile.bin", bytes.clone(), 2, None).await;
    assert_eq!(put.status, 201, "{}", put.body);
    let got = c
        .http
        .get(format!("{}/v1/files/default/meanwhile.bin", c.url()))
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap() == bytes, "retrieved other bytes");
    // Every silent connection is closed by the server, about 2 s after it opened.
    let mut buf = [0u8; 256];
    for (i, s) in silent.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(text.starts_with("HTTP/1.1 408"), "connection {i}: {text}");
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connection {i} not closed by the header timeout: {e}"),
        }
    }
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "closed after {took:?}"
    );
    // The server still answers.
    let reply = c
        .http
        .get(format!("{}/healthz", c.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
}

/// Opens `n` connections to `addr` that never send anything.
fn silent_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect()
}

/// `GET /healthz` on a new connection each time: a pooled keep-alive connection, opened
/// before the held ones, would hold a slot of its own and get 200 past the cap.
async fn healthz(_c: &Cluster, base: &str) -> Reply {
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let resp = fresh.get(format!("{base}/healthz")).send().await.unwrap();
    Reply::read(resp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_503_on_both_servers() {
    let c = Cluster::builder()
        .replicas(1)
        .operator_arg("--max-connections=8")
        .replica_arg(1, "--max-connections=4")
        .start()
        .await;
    let replica = c.replica(1).url();
    for (base, addr) in [(c.url(), c.op_addr), (replica, c.replica(1).addr)] {
        assert_eq!(healthz(&c, &base).await.status, 200, "{base}");
        let mut held = silent_connections(addr, 12);
        // Once the server has accepted the held connections (on a loaded machine that may
        // take a moment), a new connection finds every slot taken. Another client may have
        // held a slot when they came (the replica's heartbeat to the gateway) and let it go
        // since: each 200 adds one more silent connection to take it, at most 20 more.
        let mut reply = healthz(&c, &base).await;
        for _ in 0..30 {
            if reply.status != 200 {
                break;
            }
            if held.len() < 32 {
                held.extend(silent_connections(addr, 1));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            reply = healthz(&c, &base).await;
        }
        assert_error(&reply, 503, "overloaded", &base);
        drop(held);
        // The slots come back once the held connections are gone.
        let mut last = Reply {
            status: 0,
            body: String::new(),
        };
        for _ in 0..50 {
            last = healthz(&c, &base).await;
            if last.status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(last.status, 200, "{base}: {}", last.body);
    }
}

/// Sends a request head announcing a body of `length` bytes, and only `partial` of it; reads
/// the answer (at most 30 s).
fn stalled_request(addr: SocketAddr, head: &str, length: usize, partial: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!("{head}\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(partial).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_gets_408_on_both_servers() {
    let c = Cluster::builder()
        .replicas(1)
        .operator_arg("--request-timeout-secs=2")
        .replica_arg(1, "--request-timeout-secs=2")
        .start()
        .await;
    let head = format!(
        "PATCH /v1/files/default/x HTTP/1.1\r\nAuthorization: Bearer {}",
        c.token
    );
    let started = Instant::now();
    let reply = stalled_request(c.op_addr, &head, 20, b"{\"replicas\"");
    assert_error(&reply, 408, "request_timeout", "stalled PATCH");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "answered after {took:?}"
    );
    let head = format!(
        "POST /v1/objects/default/x/{SHA}/pull HTTP/1.1\r\nAuthorization: Bearer {}",
        c.replica_token
    );
    let reply = stalled_request(c.replica(1).addr, &head, 40, b"{\"source\"");
    assert_error(&reply, 408, "request_timeout", "stalled pull");
    // Uploads are not under the deadline: a 3 s upload at a good rate is stored.
    let path = "/v1/files/default/steady.bin?replicas=1";
    let reply = paced_upload(
        c.op_addr,
        &c.token,
        path,
        64 * 1024,
        16,
        Duration::from_millis(200),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
}

/// Uploads `chunks` chunks of `size` bytes to `path`, one every `every`, and reads the answer.
fn paced_upload(
    addr: SocketAddr,
    token: &str,
    path: &str,
    size: usize,
    chunks: usize,
    every: Duration,
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        size * chunks
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'z'; size];
        for _ in 0..chunks {
            std::thread::sleep(every);
            if writer.write_all(&chunk).is_err() {
                return false;
            }
        }
        true
    });
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    drop(s);
    let _ = sender.join();
    parse_response(&raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_below_the_minimum_rate_is_cut_off_and_nothing_is_kept() {
    let c = Cluster::builder()
        .replicas(2)
        .operator_arg("--min-transfer-bytes=65536")
        .operator_arg("--min-transfer-window-secs=2")
        .start()
        .await;
    let started = Instant::now();
    // 1 KiB every 200 ms: 10 KiB per 2 s, under 64 KiB.
    let path = "/v1/files/default/slow.bin?replicas=2";
    let reply = paced_upload(
        c.op_addr,
        &c.token,
        path,
        1024,
        200,
        Duration::from_millis(200),
    );
    let took = started.elapsed();
    assert_error(&reply, 400, "incomplete_body", "slow upload");
    assert!(took < Duration::from_secs(15), "cut off after {took:?}");
    wait_sync(
        "nothing left of the slow upload",
        Duration::from_secs(30),
        || {
            let dirs = c.data_dirs();
            let left: Vec<_> = object_files(&dirs)
                .into_iter()
                .chain(tmp_files(&dirs))
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
    let list = c.list().await.unwrap();
    assert!(list.items.is_empty(), "{:?}", list.items);
    let status = c
        .http
        .get(format!("{}/v1/files/default/slow.bin", c.url()))
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    // At a good rate the same upload is stored.
    let reply = paced_upload(
        c.op_addr,
        &c.token,
        path,
        64 * 1024,
        8,
        Duration::from_millis(100),
    );
    assert_eq!(reply.status, 201, "{}", reply.body);
}

/// A stand-in for a peer replica: answers one `GET` with the head of a 1 MiB copy, then sends
/// `piece` bytes every `every` (none when `piece` is 0) without ever closing, for 60 s.
fn stalling_peer(piece: usize, every: Duration) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut head = [0u8; 4096];
        let _ = s.read(&mut head);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n");
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if piece > 0 && s.write_all(&vec![b'p'; piece]).is_err() {
                return;
            }
            std::thread::sleep(every);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_from_a_peer_that_stops_or_trickles_is_cut_off_and_leaves_no_temp_file() {
    let c = Cluster::builder()
        .replicas(1)
        .replica_arg(1, "--min-transfer-window-secs=2")
        .start()
        .await;
    // A peer that sends the head and then nothing (the idle timeout cuts it), and one that
    // sends 10 bytes every 200 ms (100 bytes per 2 s: the minimum rate cuts it).
    for (what, piece) in [("silent", 0), ("trickling", 10)] {
        let peer = stalling_peer(piece, Duration::from_millis(200));
        let started = Instant::now();
        let reply = c
            .http
            .post(format!(
                "{}/v1/objects/default/pulled.bin/{SHA}/pull",
                c.replica(1).url()
            ))
            .bearer_auth(&c.replica_token)
            .json(&serde_json::json!({ "source": format!("http://{peer}") }))
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        let status = reply.status().as_u16();
        let body = reply.text().await.unwrap();
        assert_eq!(status, 502, "{what} peer: {body}");
        assert!(body.contains("\"pull_failed\""), "{what} peer: {body}");
        assert!(
            took < Duration::from_secs(15),
            "{what} peer cut off after {took:?}"
        );
        let left = tmp_files(&c.data_dirs());
        assert!(left.is_empty(), "{what} peer left {left:?}");
        assert!(object_files(&c.data_dirs()).is_empty(), "{what} peer");
    }
}
