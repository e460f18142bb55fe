//! Baselines for the benchmark, measured in the same run on the same machine: in-process
//! sha256, `cp` + `sync`, and plain loopback HTTP transfers to a minimal in-process server.

use crate::files::Prng;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// In-process sha256 throughput over `total` bytes (hashing a 16 MiB buffer repeatedly), in
/// bytes per second.
pub fn sha256_rate(total: u64) -> f64 {
    let mut buf = vec![0u8; 16 << 20];
    Prng::new(7).fill(&mut buf);
    let start = Instant::now();
    let mut h = Sha256::new();
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    std::hint::black_box(h.finalize());
    total as f64 / start.elapsed().as_secs_f64()
}

/// sha256 of `n` separate 4 KiB buffers: operations per second.
pub fn sha256_small_ops(n: usize) -> f64 {
    let mut buf = vec![0u8; 4096];
    Prng::new(9).fill(&mut buf);
    let start = Instant::now();
    for i in 0..n {
        buf[0] = i as u8;
        std::hint::black_box(Sha256::digest(&buf));
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Time of `cp -r SRC DST && sync` (DST removed afterwards). A `sync` before the clock starts
/// flushes what was already dirty (such as SRC itself, just written).
pub fn cp_sync(src: &Path, dst: &Path) -> Duration {
    let _ = Command::new("sync").status();
    let start = Instant::now();
    let ok = Command::new("cp")
        .args(["-r", "--reflink=never"])
        .arg(src)
        .arg(dst)
        .status()
        .map(|s| s.success());
    assert!(
        matches!(ok, Ok(true)),
        "cp {} {} failed",
        src.display(),
        dst.display()
    );
    let ok = Command::new("sync").status().map(|s| s.success());
    assert!(matches!(ok, Ok(true)), "sync failed");
    let t = start.elapsed();
    if dst.is_dir() {
        let _ = std::fs::remove_dir_all(dst);
    } else {
        let _ = std::fs::remove_file(dst);
    }
    t
}

/// A minimal HTTP/1.1 server on 127.0.0.1 (a thread per connection, keep-alive): `PUT /NAME`
/// writes the body (Content-Length only) to `DIR/NAME` and answers 201; `GET /NAME` answers
/// the file (404 when missing).
pub struct PlainServer {
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl PlainServer {
    pub fn start(dir: &Path) -> PlainServer {
        std::fs::create_dir_all(dir).expect("plain server dir");
        let l = TcpListener::bind("127.0.0.1:0").expect("bind plain server");
        let addr = l.local_addr().expect("addr");
        let d = dir.to_path_buf();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let d = d.clone();
                std::thread::spawn(move || {
                    let _ = serve(s, &d);
                });
            }
        });
        PlainServer {
            addr,
            dir: dir.to_path_buf(),
        }
    }

    /// Streams `file` to the server with reqwest; returns the elapsed time.
    pub async fn put_file(&self, http: &reqwest::Client, file: &Path) -> Duration {
        let len = std::fs::metadata(file).expect("stat").len();
        let start = Instant::now();
        let r = http
            .put(format!("http://{}/big", self.addr))
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(crate::http::file_body(file).await)
            .send()
            .await
            .expect("plain PUT");
        assert_eq!(r.status().as_u16(), 201);
        let t = start.elapsed();
        let _ = std::fs::remove_file(self.dir.join("big"));
        t
    }

    /// `n` PUTs of 4 KiB with `conc` in flight; returns operations per second.
    pub async fn put_small(&self, http: &reqwest::Client, bodies: &[Vec<u8>], conc: usize) -> f64 {
        let start = Instant::now();
        let addr = self.addr;
        futures::stream::iter(bodies.iter().enumerate())
            .map(|(i, b)| {
                let req = http.put(format!("http://{addr}/s{i}")).body(b.clone());
                async move {
                    let r = req.send().await.expect("plain small PUT");
                    assert_eq!(r.status().as_u16(), 201);
                }
            })
            .buffer_unordered(conc)
            .collect::<Vec<()>>()
            .await;
        bodies.len() as f64 / start.elapsed().as_secs_f64()
    }

    /// GETs back what [`PlainServer::put_small`] wrote, `conc` in flight, checking the bytes;
    /// returns operations per second and each request's latency.
    pub async fn get_small(
        &self,
        http: &reqwest::Client,
        bodies: &[Vec<u8>],
        conc: usize,
    ) -> (f64, Vec<Duration>) {
        let start = Instant::now();
        let addr = self.addr;
        let latencies = futures::stream::iter(bodies.iter().enumerate())
            .map(|(i, b)| {
                let req = http.get(format!("http://{addr}/s{i}"));
                async move {
                    let sent = Instant::now();
                    let r = req.send().await.expect("plain small GET");
                    assert_eq!(r.status().as_u16(), 200);
                    let got = r.bytes().await.expect("plain small GET body");
                    let elapsed = sent.elapsed();
                    assert_eq!(got.as_ref(), &b[..], "plain GET s{i}");
                    elapsed
                }
            })
            .buffer_unordered(conc)
            .collect::<Vec<Duration>>()
            .await;
        (
            bodies.len() as f64 / start.elapsed().as_secs_f64(),
            latencies,
        )
    }
}

fn serve(s: TcpStream, dir: &Path) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::with_capacity(256 * 1024, s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let method = line.split_whitespace().next().unwrap_or("").to_string();
        let path = line.split_whitespace().nth(1).unwrap_or("/x").to_string();
        let mut len = 0u64;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let name = path.trim_start_matches('/').replace('/', "_");
        if method == "GET" {
            match std::fs::read(dir.join(&name)) {
                Ok(bytes) => {
                    let mut answer =
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", bytes.len())
                            .into_bytes();
                    answer.extend_from_slice(&bytes);
                    w.write_all(&answer)?;
                }
                Err(_) => w.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")?,
            }
            continue;
        }
        let mut f =
            std::io::BufWriter::with_capacity(256 * 1024, std::fs::File::create(dir.join(name))?);
        std::io::copy(&mut (&mut r).take(len), &mut f)?;
        f.flush()?;
        w.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")?;
    }
}
