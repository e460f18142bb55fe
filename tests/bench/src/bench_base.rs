//! Baselines for the benchmark, measured in the same run on the same machine: in-process
//! sha256, `cp` + `sync`, and plain loopback HTTP transfers to a minimal in-process server.

use deposito_e2e::files::Prng;
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

/// Time of `cp SRC` to three places under `scratch` followed by one `sync` (the disk's own
/// cost of three copies); the copies are removed afterwards.
pub fn cp3_sync(src: &Path, scratch: &Path) -> Duration {
    std::fs::create_dir_all(scratch).expect("cp3 dir");
    let _ = Command::new("sync").status();
    let start = Instant::now();
    for k in 0..3 {
        let ok = Command::new("cp")
            .arg("--reflink=never")
            .arg(src)
            .arg(scratch.join(format!("copy{k}")))
            .status()
            .map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "cp {} failed", src.display());
    }
    let ok = Command::new("sync").status().map(|s| s.success());
    assert!(matches!(ok, Ok(true)), "sync failed");
    let t = start.elapsed();
    let _ = std::fs::remove_dir_all(scratch);
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
            .body(deposito_e2e::http::file_body(file).await)
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

/// nginx serving a folder on loopback with `sendfile on` (the machine's limit for reads), run
/// from its own configuration in a scratch folder. `nginx-light` is installed from apt when
/// missing (as root); without it the nginx baselines are left out, and said so.
pub struct Nginx {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl Nginx {
    /// Serves `root` (read-only) on a free loopback port; `scratch` holds its config and logs.
    pub fn start(root: &Path, scratch: &Path) -> anyhow::Result<Option<Nginx>> {
        if !ensure_nginx() {
            eprintln!("nginx not found and not installable: the nginx baselines are left out");
            return Ok(None);
        }
        std::fs::create_dir_all(scratch)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;"
        } else {
            ""
        };
        let s = scratch.display();
        let conf = format!(
            "{user}\ndaemon off;\nworker_processes 2;\npid {s}/nginx.pid;\nerror_log {s}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n\
               keepalive_requests 1000000;\n  client_body_temp_path {s}/body;\n\
               default_type application/octet-stream;\n\
               server {{ listen {addr}; root {}; location / {{ }} }}\n}}\n",
            root.display()
        );
        let conf_path = scratch.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(scratch)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(scratch.join("error.log"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let nginx = Nginx { child, addr };
        for _ in 0..100 {
            if TcpStream::connect(addr).is_ok() {
                return Ok(Some(nginx));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(scratch.join("error.log")).unwrap_or_default();
        anyhow::bail!("nginx did not start on {addr}: {log}")
    }

    /// The URL of `name` under the served folder.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: graceful stop of the master and its workers.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGQUIT);
        }
        let _ = self.child.wait();
    }
}

/// True when `nginx` is on the PATH, installing `nginx-light` first when it is not (root only).
fn ensure_nginx() -> bool {
    let found = || {
        Command::new("nginx")
            .arg("-v")
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok()
    };
    if found() {
        return true;
    }
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    eprintln!("installing nginx-light from apt for the baseline");
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-qq", "nginx-light"])
        .stdout(std::process::Stdio::null())
        .status();
    found()
}

/// GETs of `urls` with `conc` in flight on `http`, each checked against `bodies[i]`: operations
/// per second and each latency.
pub async fn get_all(
    http: &reqwest::Client,
    urls: &[String],
    bodies: &[Vec<u8>],
    conc: usize,
    token: Option<&str>,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let start = Instant::now();
    let latencies = futures::stream::iter(urls.iter().zip(bodies))
        .map(|(url, body)| async move {
            let mut req = http.get(url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let sent = Instant::now();
            let r = req.send().await?;
            anyhow::ensure!(r.status() == 200, "GET {url}: {}", r.status());
            let got = r.bytes().await?;
            let elapsed = sent.elapsed();
            anyhow::ensure!(got.as_ref() == &body[..], "GET {url}: other bytes");
            Ok(elapsed)
        })
        .buffer_unordered(conc)
        .collect::<Vec<anyhow::Result<Duration>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((urls.len() as f64 / start.elapsed().as_secs_f64(), latencies))
}

/// The median of `v` (0 when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// max ÷ min of a baseline's samples.
pub fn drift(v: &[f64]) -> f64 {
    let hi = v.iter().copied().fold(f64::MIN, f64::max);
    let lo = v.iter().copied().fold(f64::MAX, f64::min);
    if lo > 0.0 {
        hi / lo
    } else {
        0.0
    }
}
