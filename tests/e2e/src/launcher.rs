//! The one-command local system: `deposito-operator local --replicas K`, which starts and
//! supervises its own replica children.

use crate::bins::bin;
use crate::cluster::{base_tmp, clean_env, free_port, read_token, START_TIMEOUT};
use crate::http;
use crate::proc::{self, Output, Proc};
use crate::wait::{wait_for, wait_sync};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One replica child as seen from /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub pid: u32,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

/// A running `deposito-operator local --replicas K`.
pub struct Launcher {
    root: Option<tempfile::TempDir>,
    pub data_dir: PathBuf,
    pub addr: SocketAddr,
    /// The S3 API's address (always given: the default port 7900 would be shared by every
    /// test's system).
    pub s3_addr: SocketAddr,
    pub replica_port: u16,
    pub replicas: usize,
    op: Option<Proc>,
    /// The operator's command line, for [`Launcher::restart`].
    args: Vec<std::ffi::OsString>,
    pub token: String,
    pub replica_token: String,
    pub http: reqwest::Client,
    /// The gateway's TLS files when it serves HTTPS.
    pub tls: Option<crate::tls::TlsFiles>,
}

impl Launcher {
    /// Starts the launcher with `k` children and waits until the gateway lists them all Live.
    pub async fn start(k: usize, grace_period_secs: u64) -> Launcher {
        Self::start_with(k, grace_period_secs, None, &[]).await
    }

    /// Like [`Launcher::start`], with more flags for `deposito-operator local`.
    pub async fn start_args(k: usize, grace_period_secs: u64, extra: &[&str]) -> Launcher {
        Self::start_with(k, grace_period_secs, None, extra).await
    }

    /// Like [`Launcher::start`], with the gateway on HTTPS: a CA and a certificate for the
    /// gateway's address are made with openssl; the clients trust the CA.
    pub async fn start_tls(k: usize, grace_period_secs: u64) -> Launcher {
        let dir = tempfile::Builder::new()
            .prefix("deposito-tls-")
            .tempdir_in(base_tmp())
            .expect("temp dir")
            .keep();
        let tls = crate::tls::TlsFiles::generate(&dir, Ipv4Addr::LOCALHOST);
        Self::start_with(k, grace_period_secs, Some(tls), &[]).await
    }

    async fn start_with(
        k: usize,
        grace_period_secs: u64,
        tls: Option<crate::tls::TlsFiles>,
        extra: &[&str],
    ) -> Launcher {
        let root = tempfile::Builder::new()
            .prefix("deposito-launcher-")
            .tempdir_in(base_tmp())
            .expect("temp dir");
        let data_dir = root.path().join("data");
        let addr: SocketAddr = (Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)).into();
        let replica_port = free_port_on_children(k);
        let s3_addr: SocketAddr = (Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)).into();
        let mut cmd = Command::new(bin("deposito-operator"));
        cmd.arg("local")
            .arg("--replicas")
            .arg(k.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--replica-port")
            .arg(replica_port.to_string())
            .arg("--grace-period-secs")
            .arg(grace_period_secs.to_string())
            .arg("--reconcile-interval-secs")
            .arg("1")
            .arg("--s3-listen")
            .arg(s3_addr.to_string())
            .args(extra);
        if let Some(tls) = &tls {
            cmd.arg("--tls-cert")
                .arg(&tls.chain)
                .arg("--tls-key")
                .arg(&tls.key);
        }
        clean_env(&mut cmd, root.path());
        let args: Vec<std::ffi::OsString> = cmd.get_args().map(ToOwned::to_owned).collect();
        let mut op = Proc::spawn("operator", cmd, &root.path().join("operator.log"));
        let token = read_token(&data_dir.join("token"), &mut op);
        let replica_token = read_token(&data_dir.join("replica-token"), &mut op);
        let l = Launcher {
            root: Some(root),
            data_dir,
            addr,
            s3_addr,
            replica_port,
            replicas: k,
            op: Some(op),
            args,
            token,
            replica_token,
            http: match &tls {
                Some(tls) => tls.client(),
                None => http::client(),
            },
            tls,
        };
        l.wait_live(k).await;
        l
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn operator_pid(&self) -> Option<u32> {
        self.op.as_ref().and_then(Proc::pid)
    }

    /// Log tail of the launcher (operator and, usually, its children's output).
    pub fn log_tail(&self) -> String {
        self.op.as_ref().map(|p| p.log_tail(40)).unwrap_or_default()
    }

    /// Waits until the gateway lists `k` replicas, all Live.
    pub async fn wait_live(&self, k: usize) {
        let l = &self;
        wait_for(
            &format!("{k} live replicas"),
            START_TIMEOUT,
            || async move {
                let list: deposito_api::gateway::ReplicaList = l
                    .get_json(&format!("{}/v1/replicas", l.url()), &l.token)
                    .await?;
                let live = list.items.iter().filter(|s| s.health == "Live").count();
                if live == k {
                    Ok(())
                } else {
                    Err(format!("{live} live: {:?}", list.items))
                }
            },
        )
        .await;
    }

    /// GETs `url` with the bearer `token` and decodes a 2xx JSON answer; any other answer is
    /// an error carrying the status and body.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        token: &str,
    ) -> Result<T, String> {
        let r = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let reply = http::Reply::read(r).await;
        if !(200..300).contains(&reply.status) {
            return Err(format!("GET {url}: {} {}", reply.status, reply.body));
        }
        serde_json::from_str(&reply.body).map_err(|e| format!("GET {url}: {e}: {}", reply.body))
    }

    /// The replica children's data dirs (`DIR/replicas/*`).
    pub fn child_data_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.data_dir.join("replicas"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Replica processes among the operator's descendants, with their listen address and data
    /// dir (from their flags or env, else from their data dir's `listen` file).
    pub fn children(&self) -> Vec<Child> {
        let Some(op) = self.operator_pid() else {
            return Vec::new();
        };
        proc::descendants(op)
            .into_iter()
            .filter(|p| proc::alive(*p))
            .filter(|p| {
                proc::cmdline(*p)
                    .first()
                    .is_some_and(|a| a.ends_with("deposito-replica"))
            })
            .map(|pid| {
                let data_dir = proc::flag_or_env(pid, "--data-dir", "DEPOSITO_DATA_DIR")
                    .map(PathBuf::from)
                    .or_else(|| std::fs::read_link(format!("/proc/{pid}/cwd")).ok());
                let listen = proc::flag_or_env(pid, "--listen", "DEPOSITO_LISTEN").or_else(|| {
                    data_dir
                        .as_ref()
                        .and_then(|d| std::fs::read_to_string(d.join("listen")).ok())
                        .map(|s| s.trim().to_string())
                });
                Child {
                    pid,
                    listen,
                    data_dir,
                }
            })
            .collect()
    }

    /// Waits until `k` replica children run.
    pub fn wait_children(&self, k: usize) -> Vec<Child> {
        wait_sync(&format!("{k} replica children"), START_TIMEOUT, || {
            let c = self.children();
            if c.len() == k {
                Ok(c)
            } else {
                Err(format!("{c:?}"))
            }
        })
    }

    /// Runs the client against this launcher.
    pub fn client(&self, args: &[&str]) -> Output {
        let root = self.root.as_ref().expect("root").path().to_path_buf();
        let mut cmd = Command::new(bin("deposito"));
        clean_env(&mut cmd, &root);
        cmd.env("DEPOSITO_SERVER", self.url())
            .env("DEPOSITO_TOKEN", &self.token)
            .args(args);
        if let Some(tls) = &self.tls {
            cmd.env("DEPOSITO_CA_CERT", &tls.ca);
        }
        proc::run(cmd, Duration::from_secs(300))
    }

    /// A scratch path outside the data dir.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let d = self.root.as_ref().expect("root").path().join("scratch");
        std::fs::create_dir_all(&d).expect("scratch");
        d.join(name)
    }

    /// Stops the operator (SIGTERM, which stops its replicas too) and starts it again on the
    /// same data folder and flags; waits until its replicas are all Live again.
    pub async fn restart(&mut self) {
        let code = self.terminate(Duration::from_secs(30));
        assert_eq!(
            code,
            Some(0),
            "the operator stopped cleanly:\n{}",
            self.log_tail()
        );
        let root = self.root.as_ref().expect("root").path().to_path_buf();
        let mut cmd = Command::new(bin("deposito-operator"));
        cmd.args(&self.args);
        clean_env(&mut cmd, &root);
        self.op = Some(Proc::spawn("operator", cmd, &root.join("operator.log")));
        self.wait_live(self.replicas).await;
    }

    /// SIGTERM the operator; returns its exit code if it exited within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        self.op.as_mut().and_then(|p| p.terminate(timeout))
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if let Some(mut p) = self.op.take() {
            if std::thread::panicking() {
                eprintln!("===== launcher log (tail) =====\n{}", p.log_tail(60));
            }
            p.kill9();
        }
        if let Some(root) = self.root.take() {
            if std::env::var_os("DEPOSITO_E2E_KEEP").is_some() {
                eprintln!("keeping {}", root.keep().display());
            }
        }
    }
}

/// A port free on 127.0.0.10 .. 127.0.0.(10+k) (children listen on `127.0.0.(10+i):P`).
fn free_port_on_children(k: usize) -> u16 {
    for _ in 0..100 {
        let p = free_port(Ipv4Addr::new(127, 0, 0, 10));
        if (0..=k as u8).all(|i| TcpListener::bind((Ipv4Addr::new(127, 0, 0, 10 + i), p)).is_ok()) {
            return p;
        }
    }
    panic!("no port free on 127.0.0.10..{}", 10 + k);
}

/// The pid of the process listening on `addr` (per `ss -ltnp`).
pub fn listener_pid(addr: &str) -> Option<u32> {
    let out = Command::new("ss").args(["-ltnpH"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(3) == Some(addr))?;
    let pid_part = line.split("pid=").nth(1)?;
    pid_part
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Files under the `objects/` of each data dir equal to `original`.
pub fn copies_in(dirs: &[PathBuf], original: &Path) -> usize {
    crate::files::count_copies(dirs, original)
}
