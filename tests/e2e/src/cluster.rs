//! A local Deposito cluster of real processes: one `deposito-operator local` (catalog,
//! controller, gateway) and K `deposito-replica` processes, each on its own loopback address,
//! all under one temporary folder. Everything is killed when the `Cluster` is dropped.

use crate::bins::bin;
use crate::files;
use crate::http;
use crate::proc::{self, Output, Proc};
use crate::wait::{wait_for, wait_sync};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod control;

/// How long to wait for processes to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    replicas: usize,
    grace_period_secs: u64,
    /// `None`: leave the operator's own default.
    resync_interval_secs: Option<u64>,
    /// Where the operator and replica binaries come from (default: [`crate::bins::bin_dir`]).
    bin_dir: Option<PathBuf>,
    orphan_grace_secs: u64,
    scrub_interval_secs: u64,
    tmpfs: Vec<(usize, String)>,
    zones: Vec<(usize, String)>,
    operator_args: Vec<String>,
    replica_args: Vec<(usize, String)>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            replicas: 3,
            grace_period_secs: 300,
            // The slow resync stays slow: suites prove that changes are acted on at once.
            resync_interval_secs: Some(600),
            bin_dir: None,
            orphan_grace_secs: 5,
            scrub_interval_secs: 3600,
            tmpfs: Vec::new(),
            zones: Vec::new(),
            operator_args: Vec::new(),
            replica_args: Vec::new(),
        }
    }
}

impl ClusterBuilder {
    pub fn replicas(mut self, k: usize) -> Self {
        self.replicas = k;
        self
    }
    pub fn grace_period_secs(mut self, s: u64) -> Self {
        self.grace_period_secs = s;
        self
    }
    /// Another build's binaries (the benchmark compares engines in one run).
    pub fn bin_dir(mut self, dir: PathBuf) -> Self {
        self.bin_dir = Some(dir);
        self
    }

    /// `None` keeps the operator's default (an older operator may not know the flag).
    pub fn resync_interval_secs(mut self, s: Option<u64>) -> Self {
        self.resync_interval_secs = s;
        self
    }
    pub fn orphan_grace_secs(mut self, s: u64) -> Self {
        self.orphan_grace_secs = s;
        self
    }
    pub fn scrub_interval_secs(mut self, s: u64) -> Self {
        self.scrub_interval_secs = s;
        self
    }
    /// Mounts a tmpfs of `size` (e.g. `"4m"`) as replica `k`'s data dir (1-based; needs root).
    pub fn tmpfs_replica(mut self, k: usize, size: &str) -> Self {
        self.tmpfs.push((k, size.to_string()));
        self
    }

    /// Starts replica `k` (1-based) with `--zone zone`.
    pub fn zone(mut self, k: usize, zone: &str) -> Self {
        self.zones.push((k, zone.to_string()));
        self
    }

    /// Passes `arg` to the operator too (e.g. `--rebalance-bytes-per-sec=1048576`).
    pub fn operator_arg(mut self, arg: &str) -> Self {
        self.operator_args.push(arg.to_string());
        self
    }

    /// Passes `arg` to replica `k` (1-based) too (e.g. `--min-free-bytes=1000`).
    pub fn replica_arg(mut self, k: usize, arg: &str) -> Self {
        self.replica_args.push((k, arg.to_string()));
        self
    }

    /// Starts the operator and the replicas, and waits until every replica is registered and
    /// live.
    pub async fn start(self) -> Cluster {
        let root = tempfile::Builder::new()
            .prefix("deposito-e2e-")
            .tempdir_in(base_tmp())
            .expect("temp dir");
        let rootp = root.path().to_path_buf();
        let op_dir = rootp.join("operator");
        std::fs::create_dir_all(rootp.join("logs")).expect("logs dir");
        let op_addr = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            free_port(Ipv4Addr::LOCALHOST),
        );
        let block = random_block();
        let mut c = Cluster {
            root: Some(root),
            root_path: rootp.clone(),
            op_dir,
            op_addr,
            op: None,
            opts: self.clone(),
            replicas: Vec::new(),
            token: String::new(),
            replica_token: String::new(),
            http: http::client(),
            mounts: Vec::new(),
        };
        c.spawn_operator();
        c.token = read_token(&c.op_dir.join("token"), c.op.as_mut().expect("operator"));
        c.replica_token = read_token(
            &c.op_dir.join("replica-token"),
            c.op.as_mut().expect("operator"),
        );
        for k in 1..=self.replicas {
            let ip = Ipv4Addr::new(127, block.0, block.1, k as u8);
            let dir = rootp.join(format!("r{k}"));
            std::fs::create_dir_all(&dir).expect("replica dir");
            if let Some((_, size)) = self.tmpfs.iter().find(|(i, _)| *i == k) {
                mount_tmpfs(&dir, size);
                c.mounts.push(dir.clone());
            }
            c.push_replica(ip, dir);
        }
        c.wait_healthy().await;
        c
    }
}

/// One replica process of a [`Cluster`].
pub struct Replica {
    pub id: String,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    proc: Option<Proc>,
}

impl Replica {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(Proc::pid)
    }
    pub fn is_up(&self) -> bool {
        self.proc.is_some()
    }
}

/// A running local cluster. See the module documentation.
pub struct Cluster {
    root: Option<tempfile::TempDir>,
    pub root_path: PathBuf,
    pub op_dir: PathBuf,
    pub op_addr: SocketAddr,
    op: Option<Proc>,
    opts: ClusterBuilder,
    pub replicas: Vec<Replica>,
    /// Client token (gateway).
    pub token: String,
    /// Replica token (cluster-internal).
    pub replica_token: String,
    pub http: reqwest::Client,
    mounts: Vec<PathBuf>,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// Base URL of the gateway.
    pub fn url(&self) -> String {
        format!("http://{}", self.op_addr)
    }

    /// The replica with 1-based index `k`.
    pub fn replica(&self, k: usize) -> &Replica {
        &self.replicas[k - 1]
    }

    /// 1-based index of the replica with id `id`.
    pub fn index_of(&self, id: &str) -> usize {
        1 + self
            .replicas
            .iter()
            .position(|r| r.id == id)
            .unwrap_or_else(|| panic!("no replica {id}"))
    }

    /// A fresh scratch path inside the cluster's temporary folder (not a replica's).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let d = self.root_path.join("scratch");
        std::fs::create_dir_all(&d).expect("scratch dir");
        d.join(name)
    }

    /// The log file of the process `name` (`operator`, or a replica's id).
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.root_path.join("logs").join(format!("{name}.log"))
    }

    fn binary(&self, name: &str) -> PathBuf {
        match &self.opts.bin_dir {
            Some(dir) => dir.join(name),
            None => bin(name),
        }
    }

    fn spawn_operator(&mut self) {
        let o = &self.opts;
        let mut cmd = Command::new(self.binary("deposito-operator"));
        cmd.arg("local")
            .arg("--listen")
            .arg(self.op_addr.to_string())
            .arg("--data-dir")
            .arg(&self.op_dir)
            .arg("--grace-period-secs")
            .arg(o.grace_period_secs.to_string())
            .arg("--orphan-grace-secs")
            .arg(o.orphan_grace_secs.to_string());
        if let Some(resync) = o.resync_interval_secs {
            cmd.arg("--resync-interval-secs").arg(resync.to_string());
        }
        cmd.args(&o.operator_args);
        clean_env(&mut cmd, &self.root_path);
        self.op = Some(Proc::spawn("operator", cmd, &self.log_path("operator")));
    }

    /// Adds the next replica (`replica-K`, listening on `ip`, data in `dir`) and starts it.
    fn push_replica(&mut self, ip: Ipv4Addr, dir: PathBuf) -> usize {
        let k = self.replicas.len() + 1;
        self.replicas.push(Replica {
            id: format!("replica-{k}"),
            addr: SocketAddr::new(IpAddr::V4(ip), free_port(ip)),
            dir,
            proc: None,
        });
        self.spawn_replica(k);
        k
    }

    fn spawn_replica(&mut self, k: usize) {
        let r = &self.replicas[k - 1];
        let mut cmd = Command::new(self.binary("deposito-replica"));
        cmd.arg("--listen")
            .arg(r.addr.to_string())
            .arg("--data-dir")
            .arg(&r.dir)
            .arg("--register")
            .arg(self.url())
            .arg("--id")
            .arg(&r.id)
            .arg("--heartbeat-secs")
            .arg("1")
            .arg("--scrub-interval-secs")
            .arg(self.opts.scrub_interval_secs.to_string());
        if let Some((_, zone)) = self.opts.zones.iter().find(|(i, _)| *i == k) {
            cmd.arg("--zone").arg(zone);
        }
        let extra = self.opts.replica_args.iter().filter(|(i, _)| *i == k);
        cmd.args(extra.map(|(_, arg)| arg));
        clean_env(&mut cmd, &self.root_path);
        cmd.env("DEPOSITO_REPLICA_TOKEN", &self.replica_token);
        if self.opts.bin_dir.is_some() {
            // Builds older than the separate replica token variables read this one.
            cmd.env("DEPOSITO_TOKEN", &self.replica_token);
        }
        let p = Proc::spawn(&r.id, cmd, &self.log_path(&r.id));
        self.replicas[k - 1].proc = Some(p);
    }

    /// Waits until the gateway answers, every running replica answers `/healthz`, and the
    /// gateway lists every running replica as `Live`.
    pub async fn wait_healthy(&self) {
        let c = &self;
        wait_for("gateway /healthz", START_TIMEOUT, || async move {
            c.check_alive()?;
            c.get_status(&format!("{}/healthz", c.url())).await
        })
        .await;
        for r in self.replicas.iter().filter(|r| r.is_up()) {
            wait_for(
                &format!("{} /healthz", r.id),
                START_TIMEOUT,
                || async move {
                    c.check_alive()?;
                    c.get_status(&format!("{}/healthz", r.url())).await
                },
            )
            .await;
        }
        wait_for("every running replica Live", START_TIMEOUT, || async move {
            let list = c.replica_list().await?;
            let live: Vec<&str> = list
                .items
                .iter()
                .filter(|s| s.health == "Live")
                .map(|s| s.id.as_str())
                .collect();
            let missing: Vec<&str> = c
                .replicas
                .iter()
                .filter(|r| r.is_up() && !live.contains(&r.id.as_str()))
                .map(|r| r.id.as_str())
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not live: {missing:?}; list: {:?}", list.items))
            }
        })
        .await;
    }

    async fn get_status(&self, url: &str) -> Result<(), String> {
        match self.http.get(url).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("{url}: {}", r.status())),
            Err(e) => Err(format!("{url}: {e}")),
        }
    }

    /// Err when a process we started has exited unexpectedly (with its log tail).
    pub fn check_alive(&self) -> Result<(), String> {
        if let Some(op) = &self.op {
            if let Some(pid) = op.pid() {
                if !proc::alive(pid) {
                    return Err(format!("operator exited; log:\n{}", op.log_tail(30)));
                }
            }
        }
        Ok(())
    }

    // ----- fault injection -----

    /// kill -9 replica `k` (1-based).
    pub fn kill_replica(&mut self, k: usize) {
        if let Some(mut p) = self.replicas[k - 1].proc.take() {
            p.kill9();
        }
    }

    /// Starts replica `k` again, same address, same data dir, and waits until it is live.
    pub async fn restart_replica(&mut self, k: usize) {
        self.kill_replica(k);
        self.spawn_replica(k);
        self.wait_healthy().await;
    }

    /// kill -9 the operator, start it again with the same data dir and address, and wait until
    /// every running replica is registered again.
    pub async fn restart_operator(&mut self) {
        if let Some(mut p) = self.op.take() {
            p.kill9();
        }
        self.spawn_operator();
        self.wait_healthy().await;
    }

    /// The operator's process id.
    pub fn operator_pid(&self) -> Option<u32> {
        self.op.as_ref().and_then(Proc::pid)
    }

    /// Process ids of the operator and every running replica.
    pub fn server_pids(&self) -> Vec<u32> {
        let replicas = self.replicas.iter().filter_map(|r| r.proc.as_ref());
        self.op
            .iter()
            .chain(replicas)
            .filter_map(Proc::pid)
            .collect()
    }

    /// CPU seconds (user + system) used so far by the operator and the running replicas.
    pub fn server_cpu_seconds(&self) -> f64 {
        self.server_pids()
            .into_iter()
            .filter_map(|pid| crate::proc::cpu_seconds(pid).ok())
            .sum()
    }

    /// Peak RSS (VmHWM) of every running process: ("operator" | replica id, bytes).
    pub fn peak_rss(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        if let Some(v) = self.op.as_ref().and_then(Proc::peak_rss) {
            out.push(("operator".to_string(), v));
        }
        for r in &self.replicas {
            if let Some(v) = r.proc.as_ref().and_then(Proc::peak_rss) {
                out.push((r.id.clone(), v));
            }
        }
        out
    }

    // ----- disk -----

    /// Data dirs of all replicas (running or not).
    pub fn data_dirs(&self) -> Vec<PathBuf> {
        self.replicas.iter().map(|r| r.dir.clone()).collect()
    }

    /// 1-based indices of the replicas whose `objects/` hold a byte-identical copy of
    /// `original`.
    pub fn holders_on_disk(&self, original: &Path) -> Vec<usize> {
        files::identical_copies(&self.data_dirs(), original)
            .iter()
            .map(|p| {
                1 + self
                    .replicas
                    .iter()
                    .position(|r| p.starts_with(&r.dir))
                    .expect("copy outside replica dirs")
            })
            .collect()
    }

    /// Data dirs of running replicas.
    pub fn live_data_dirs(&self) -> Vec<PathBuf> {
        self.replicas
            .iter()
            .filter(|r| r.is_up())
            .map(|r| r.dir.clone())
            .collect()
    }

    /// Byte-identical copies of `original` under every replica's `objects/`.
    pub fn count_copies(&self, original: &Path) -> usize {
        files::count_copies(&self.data_dirs(), original)
    }

    /// Byte-identical copies of `original` under running replicas' `objects/`.
    pub fn count_live_copies(&self, original: &Path) -> usize {
        files::count_copies(&self.live_data_dirs(), original)
    }

    /// Waits until exactly `n` byte-identical copies of `original` are on disk.
    pub fn wait_copies(&self, original: &Path, n: usize, timeout: Duration) {
        wait_sync(
            &format!("{n} copies of {}", original.display()),
            timeout,
            || {
                self.check_alive()?;
                let c = files::identical_copies(&self.data_dirs(), original);
                if c.len() == n {
                    Ok(())
                } else {
                    Err(format!("{} copies: {c:?}", c.len()))
                }
            },
        );
    }

    // ----- client binary -----

    /// A `deposito` command pointed at the gateway with the client token.
    pub fn client_cmd(&self) -> Command {
        let mut cmd = Command::new(bin("deposito"));
        clean_env(&mut cmd, &self.root_path);
        cmd.env("DEPOSITO_SERVER", self.url())
            .env("DEPOSITO_TOKEN", &self.token);
        cmd
    }

    /// Runs the client with `args` (10 minute limit).
    pub fn client(&self, args: &[&str]) -> Output {
        let mut cmd = self.client_cmd();
        cmd.args(args);
        proc::run(cmd, Duration::from_secs(600))
    }

    /// Runs the client and panics with its output unless it exits 0.
    pub fn client_ok(&self, args: &[&str]) -> Output {
        let out = self.client(args);
        assert!(out.ok(), "deposito {args:?} failed: {out}");
        out
    }

    /// `deposito deposit PATH --replicas N --name NAME`, which must succeed (it waits until
    /// exactly N verified copies exist).
    pub fn deposit_ok(&self, path: &Path, replicas: usize, name: &str) -> Output {
        let path = path.to_str().expect("utf-8 path");
        let n = replicas.to_string();
        self.client_ok(&["deposit", path, "--replicas", &n, "--name", name])
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for r in &mut self.replicas {
            if let Some(mut p) = r.proc.take() {
                if panicking {
                    eprintln!("===== {} log (tail) =====\n{}", p.name, p.log_tail(40));
                }
                p.kill9();
            }
        }
        if let Some(mut p) = self.op.take() {
            if panicking {
                eprintln!("===== operator log (tail) =====\n{}", p.log_tail(60));
            }
            p.kill9();
        }
        for m in self.mounts.drain(..) {
            umount(&m);
        }
        if let Some(root) = self.root.take() {
            if std::env::var_os("DEPOSITO_E2E_KEEP").is_some() {
                eprintln!("keeping {}", root.keep().display());
            }
        }
    }
}

/// Where test folders are created: `$DEPOSITO_E2E_TMP`, else the system temp dir.
pub fn base_tmp() -> PathBuf {
    std::env::var_os("DEPOSITO_E2E_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// A random 127.A.B.0/24 block (A ≥ 1, so never 127.0.0.x) for one test's replicas.
pub fn random_block() -> (u8, u8) {
    (rand::random::<u8>().max(1), rand::random::<u8>())
}

/// A port that is free on `ip` right now (bind to port 0 and release).
pub fn free_port(ip: Ipv4Addr) -> u16 {
    let l = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
    l.local_addr().expect("local addr").port()
}

/// Removes inherited `DEPOSITO_*` variables and points HOME inside the test folder.
pub fn clean_env(cmd: &mut Command, home: &Path) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("DEPOSITO_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
}

/// Waits until `path` holds a non-empty token; panics if `owner` exits first.
pub fn read_token(path: &Path, owner: &mut Proc) -> String {
    wait_sync(
        &format!("token file {}", path.display()),
        START_TIMEOUT,
        || {
            if !owner.is_running() {
                panic!(
                    "{} exited before writing {}; log:\n{}",
                    owner.name,
                    path.display(),
                    owner.log_tail(40)
                );
            }
            match std::fs::read_to_string(path) {
                Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                Ok(_) => Err("empty".into()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
}

/// `mount -t tmpfs -o size=SIZE tmpfs DIR`.
pub fn mount_tmpfs(dir: &Path, size: &str) {
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .expect("run mount");
    assert!(
        st.success(),
        "mount tmpfs on {} failed (needs root)",
        dir.display()
    );
}

/// Unmounts `dir` (lazily if busy).
pub fn umount(dir: &Path) {
    let ok = Command::new("umount")
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        let _ = Command::new("umount").arg("-l").arg(dir).status();
    }
}
