//! The `url` fetch guard of a real `deposito-replica` process, end to end, inside a network
//! namespace that has nothing but loopback (`unshare -n`), so that an address the guard
//! misses can never leave the machine:
//!
//! - a replica with the default policy answers `403 fetch_refused` ("fetch refused: address
//!   not allowed") for loopback, private, link-local, shared, benchmarking, multicast and
//!   unique-local addresses, in every literal encoding (decimal, octal, hex, short forms,
//!   IPv4-mapped) and for a name (`localhost`) that resolves to one; a global address is let
//!   through and fails with the fixed reason "host unreachable", a name without DNS with
//!   "host does not resolve";
//! - a replica allowed `127.0.0.0/8` by `--fetch-allow-cidr` (not `--fetch-allow-private`)
//!   fetches from a local server; does not follow a redirect ("HTTP 302"); cuts an endless
//!   body at `--fetch-max-bytes` ("too large") and at the request's `size`, with no copy and
//!   no temp file left and the bytes on disk back to what they were; gives up a dripping body
//!   at `--fetch-deadline-secs` ("timed out") or under `--fetch-min-bytes-per-sec`
//!   ("too slow"); and the local server sees each connection closed.
//!
//! Needs root (or unprivileged user namespaces) for `unshare`, and the workspace binaries:
//! `cargo build --release --bins`, then `cargo test --release --workspace --test fetch_guard`.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deposito_e2e::cluster::{base_tmp, clean_env};
use deposito_e2e::files::{copies_of_name, files_under};
use deposito_e2e::proc::{self, Proc};
use deposito_e2e::wait::wait_for;

/// Set in the re-executed test, inside the namespace.
const INSIDE: &str = "DEPOSITO_FETCH_GUARD_NETNS";
const TOKEN: &str = "fetch-guard-replica-token-0123456789abcdef";
const TEST: &str = "fetch_guard_in_a_loopback_only_network_namespace";

#[test]
fn fetch_guard_in_a_loopback_only_network_namespace() {
    if std::env::var_os(INSIDE).is_some() {
        inside_namespace();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    // Root can create the namespace directly; otherwise an unprivileged user namespace.
    let mut last = String::new();
    for flags in ["-n", "-rn"] {
        let mut cmd = Command::new("unshare");
        cmd.args([
            flags,
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(&exe)
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1");
        let out = proc::run(cmd, Duration::from_secs(300));
        if out.ok() {
            println!("{}", out.stdout);
            return;
        }
        // `unshare` itself failing (no permission) says so before the test starts.
        let started = out.stdout.contains("running 1 test");
        assert!(
            !started,
            "the test failed inside the namespace ({flags}):\n{out}"
        );
        last = out.to_string();
    }
    panic!("cannot create a network namespace with unshare -n or -rn:\n{last}");
}

fn inside_namespace() {
    // /proc/self/net/dev lists this namespace's interfaces (/sys/class/net would show the
    // host's: sysfs was mounted outside).
    let interfaces: Vec<String> = std::fs::read_to_string("/proc/self/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|name| name.trim().to_string())
        .collect();
    assert_eq!(
        interfaces,
        vec!["lo".to_string()],
        "only loopback in the namespace"
    );
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(scenario());
}

/// What the local source server has seen: connections whose client went away.
#[derive(Default)]
struct Seen {
    closed: AtomicUsize,
}

/// A tiny HTTP/1.1 server on 127.0.0.1 with a few fixed paths.
fn source_server(seen: Arc<Seen>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || serve_one(stream, addr, &seen));
        }
    });
    addr
}

fn serve_one(mut stream: TcpStream, addr: SocketAddr, seen: &Seen) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let fixed = |status: &str, extra: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        )
    };
    let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let result = match path.as_str() {
        "/small" => stream.write_all(fixed("200 OK", "", "hello").as_bytes()),
        "/missing" => stream.write_all(fixed("404 Not Found", "", "no").as_bytes()),
        "/redirect" => stream.write_all(
            fixed(
                "302 Found",
                &format!("Location: http://{addr}/small\r\n"),
                "",
            )
            .as_bytes(),
        ),
        "/declared-big" => stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2097152\r\n\r\n")
            .and_then(|()| endless(&mut stream, false)),
        "/endless" => stream
            .write_all(chunked.as_bytes())
            .and_then(|()| endless(&mut stream, true)),
        "/drip" => stream.write_all(chunked.as_bytes()).and_then(|()| loop {
            stream.write_all(b"1\r\nx\r\n")?;
            std::thread::sleep(Duration::from_millis(200));
        }),
        _ => stream.write_all(fixed("404 Not Found", "", "").as_bytes()),
    };
    if result.is_err() {
        seen.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// Writes 64 KiB pieces until the client goes away (the only way out is an error).
fn endless(stream: &mut TcpStream, chunked: bool) -> std::io::Result<()> {
    let piece = vec![b'z'; 64 * 1024];
    loop {
        if chunked {
            stream.write_all(format!("{:x}\r\n", piece.len()).as_bytes())?;
        }
        stream.write_all(&piece)?;
        if chunked {
            stream.write_all(b"\r\n")?;
        }
    }
}

/// One replica process on `ip:7070` with `flags`.
struct Replica {
    _proc: Proc,
    base: String,
    data: PathBuf,
}

async fn start_replica(dir: &Path, ip: &str, flags: &[&str]) -> Replica {
    let data = dir.join(format!("data-{ip}"));
    let mut cmd = Command::new(deposito_e2e::bins::bin("deposito-replica"));
    clean_env(&mut cmd, dir);
    cmd.env("DEPOSITO_REPLICA_TOKEN", TOKEN)
        // A proxy would be a way around the guard: the replica must ignore it.
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("http_proxy", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .args(["--listen", &format!("{ip}:7070"), "--data-dir"])
        .arg(&data)
        .args(flags);
    let proc = Proc::spawn("replica", cmd, &dir.join(format!("replica-{ip}.log")));
    let base = format!("http://{ip}:7070");
    let http = client();
    let url = format!("{base}/v1/inventory?limit=1");
    wait_for("the replica serves", Duration::from_secs(30), || async {
        match http.get(&url).bearer_auth(TOKEN).send().await {
            Ok(r) if r.status() == 200 => Ok(()),
            Ok(r) => Err(r.status().to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    Replica {
        _proc: proc,
        base,
        data,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Asks `replica` to fetch `url` into `default/name`: status and JSON body.
async fn fetch(
    replica: &Replica,
    name: &str,
    url: &str,
    size: Option<u64>,
) -> (u16, serde_json::Value) {
    let mut req = serde_json::json!({ "url": url });
    if let Some(size) = size {
        req["size"] = size.into();
    }
    let resp = client()
        .post(format!("{}/v1/objects/default/{name}/fetch", replica.base))
        .bearer_auth(TOKEN)
        .json(&req)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {status} {text}"));
    (status, body)
}

/// Asserts the exact error answer of a fetch.
async fn expect_error(replica: &Replica, url: &str, status: u16, code: &str, error: &str) {
    let (got, body) = fetch(replica, "refused.bin", url, None).await;
    assert_eq!(
        (got, body.clone()),
        (status, serde_json::json!({ "code": code, "error": error })),
        "{url}"
    );
}

/// The files under objects/ and tmp/, and the bytes they occupy on disk.
fn on_disk(data: &Path) -> (Vec<PathBuf>, u64) {
    let files: Vec<PathBuf> = [data.join("objects"), data.join("tmp")]
        .iter()
        .flat_map(|d| files_under(d))
        .collect();
    let bytes = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.blocks() * 512)
        .sum();
    (files, bytes)
}

async fn wait_closed(seen: &Seen, count: usize) {
    wait_for(
        "the source server sees the connection closed",
        Duration::from_secs(10),
        || async {
            let n = seen.closed.load(Ordering::SeqCst);
            if n >= count {
                Ok(())
            } else {
                Err(format!("{n} closed"))
            }
        },
    )
    .await;
}

async fn scenario() {
    let dir = tempfile::tempdir_in(base_tmp()).unwrap();
    let seen = Arc::new(Seen::default());
    let src = source_server(seen.clone());
    let port = src.port();

    // 1. The default policy: every non-global address refused, in every spelling.
    let strict = start_replica(dir.path(), "127.0.0.2", &[]).await;
    let refused = [
        format!("http://127.0.0.1:{port}/small"),
        format!("http://2130706433:{port}/small"),
        format!("http://0177.0.0.1:{port}/small"),
        format!("http://0x7f.0.0.1:{port}/small"),
        format!("http://0x7f000001:{port}/small"),
        format!("http://127.1:{port}/small"),
        format!("http://LocalHost:{port}/small"),
        format!("http://localhost:{port}/small"),
        format!("http://[::1]:{port}/small"),
        format!("http://[::ffff:127.0.0.1]:{port}/small"),
        format!("http://[::ffff:7f00:1]:{port}/small"),
        "http://0/".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://2852039166/latest/meta-data/".to_string(),
        "http://[64:ff9b::a9fe:a9fe]/".to_string(),
        "http://[2002:a9fe:a9fe::1]/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://172.16.0.1/".to_string(),
        "http://192.168.1.1/".to_string(),
        "http://100.64.0.1/".to_string(),
        "http://198.18.0.1/".to_string(),
        "http://192.0.2.1/".to_string(),
        "http://224.0.0.1/".to_string(),
        "http://255.255.255.255/".to_string(),
        "http://[fd00::1]/".to_string(),
        "http://[fe80::1]/".to_string(),
        "http://[2001:db8::1]/".to_string(),
    ];
    for url in &refused {
        expect_error(
            &strict,
            url,
            403,
            "fetch_refused",
            "fetch refused: address not allowed",
        )
        .await;
    }
    // A global address passes the guard; in this namespace it cannot be reached, and the
    // answer says so in fixed words, not with the connection error.
    expect_error(
        &strict,
        "http://93.184.216.34:8080/x",
        502,
        "fetch_failed",
        "fetch failed: host unreachable",
    )
    .await;
    expect_error(
        &strict,
        "http://no-such-host.invalid/x",
        502,
        "fetch_failed",
        "fetch failed: host does not resolve",
    )
    .await;
    assert_eq!(seen.closed.load(Ordering::SeqCst), 0);
    let (files, _) = on_disk(&strict.data);
    assert!(files.is_empty(), "nothing stored: {files:?}");

    // 2. Loopback allowed by CIDR (not --fetch-allow-private), 1 MiB cap, 3 s deadline.
    let open = start_replica(
        dir.path(),
        "127.0.0.3",
        &[
            "--fetch-allow-cidr",
            "127.0.0.0/8",
            "--fetch-max-bytes",
            "1048576",
            "--fetch-deadline-secs",
            "3",
            "--fetch-min-bytes-per-sec",
            "0",
        ],
    )
    .await;
    let (status, info) = fetch(
        &open,
        "small.txt",
        &format!("http://127.0.0.1:{port}/small"),
        None,
    )
    .await;
    assert_eq!(status, 201, "{info}");
    assert_eq!(info["size"], 5);
    assert_eq!(
        info["sha256"],
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    let stored: Vec<_> = copies_of_name(&open.data, "objects", "default", "small.txt")
        .into_iter()
        .map(|(_, path)| path)
        .collect();
    assert!(
        stored.iter().any(|f| std::fs::read(f).unwrap() == b"hello"),
        "the copy holds exactly the 5 bytes: {stored:?}"
    );
    let before = on_disk(&open.data);

    expect_error(
        &open,
        &format!("http://127.0.0.1:{port}/redirect"),
        502,
        "fetch_failed",
        "fetch failed: HTTP 302",
    )
    .await;
    expect_error(
        &open,
        &format!("http://127.0.0.1:{port}/missing"),
        502,
        "fetch_failed",
        "fetch failed: HTTP 404",
    )
    .await;
    // The cap of the request's size: Content-Length 5 over size 3.
    let (status, body) = fetch(
        &open,
        "sized.txt",
        &format!("http://127.0.0.1:{port}/small"),
        Some(3),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (502, Some("fetch failed: too large"))
    );
    // Still allowed-list only: a private address outside 127/8 is refused.
    expect_error(
        &open,
        "http://10.0.0.1/",
        403,
        "fetch_refused",
        "fetch refused: address not allowed",
    )
    .await;

    // An announced length over the cap is refused before reading the body.
    expect_error(
        &open,
        &format!("http://127.0.0.1:{port}/declared-big"),
        502,
        "fetch_failed",
        "fetch failed: too large",
    )
    .await;
    wait_closed(&seen, 1).await;
    // An endless body stops at the cap: no copy, no temp file, the disk as it was.
    let t0 = Instant::now();
    expect_error(
        &open,
        &format!("http://127.0.0.1:{port}/endless"),
        502,
        "fetch_failed",
        "fetch failed: too large",
    )
    .await;
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "stopped at the cap, not the deadline"
    );
    wait_closed(&seen, 2).await;
    assert_eq!(
        on_disk(&open.data),
        before,
        "objects/ and tmp/ as before the endless body"
    );
    assert!(files_under(&open.data.join("tmp")).is_empty());
    assert!(copies_of_name(&open.data, "objects", "default", "refused.bin").is_empty());

    // A dripping body (5 bytes a second) meets the 3 s deadline.
    let t0 = Instant::now();
    expect_error(
        &open,
        &format!("http://127.0.0.1:{port}/drip"),
        502,
        "fetch_failed",
        "fetch failed: timed out",
    )
    .await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(8),
        "deadline of 3 s, took {took:?}"
    );
    wait_closed(&seen, 3).await;
    assert_eq!(
        on_disk(&open.data),
        before,
        "nothing kept of the dripping body"
    );

    // 3. The minimum rate: 1000 bytes/s over 1 s windows; the drip gives 5.
    let slow = start_replica(
        dir.path(),
        "127.0.0.4",
        &[
            "--fetch-allow-cidr",
            "127.0.0.1/32",
            "--fetch-idle-secs",
            "1",
            "--fetch-min-bytes-per-sec",
            "1000",
        ],
    )
    .await;
    let t0 = Instant::now();
    expect_error(
        &slow,
        &format!("http://127.0.0.1:{port}/drip"),
        502,
        "fetch_failed",
        "fetch failed: too slow",
    )
    .await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "too slow after about 1 s: {:?}",
        t0.elapsed()
    );
    wait_closed(&seen, 4).await;
    let (files, bytes) = on_disk(&slow.data);
    assert!(files.is_empty(), "{files:?}");
    assert_eq!(bytes, 0);
}
