//! Runs the local system's replica processes and keeps them running, as a kubelet would: a
//! replica that dies is restarted with the same address and data folder, with backoff. Each
//! child is a worker of the launcher's runner.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use deposito_util::worker::{Next, StepError, Worker, Workers};
use tokio::process::{Child, Command};
use tracing::{info, warn};

use crate::config::LocalArgs;

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child that ran this long is considered healthy again: backoff resets.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// One supervised replica.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub id: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
}

/// The address replica `index` listens on: kept in its folder's `listen` file, else
/// `127.0.0.(10+index):port`, or a free port on that address if the port is taken.
pub fn child_address(dir: &Path, index: u32, port: u16) -> anyhow::Result<SocketAddr> {
    let file = dir.join("listen");
    if let Ok(text) = std::fs::read_to_string(&file) {
        if let Ok(addr) = text.trim().parse() {
            return Ok(addr);
        }
    }
    anyhow::ensure!(index < 240, "at most 240 supervised replicas");
    let ip = Ipv4Addr::new(127, 0, 0, 10 + index as u8);
    let addr = match TcpListener::bind((ip, port)) {
        Ok(listener) => listener.local_addr()?,
        Err(_) => TcpListener::bind((ip, 0))?.local_addr()?,
    };
    std::fs::write(&file, addr.to_string())?;
    Ok(addr)
}

/// The replica program and its leading arguments: the flag, else `deposito-replica` next to
/// this executable, else this executable's own `replica` subcommand (so that
/// `cargo run --bin deposito-operator` works without building the replica binary).
fn replica_program(args: &LocalArgs) -> (PathBuf, Vec<String>) {
    if let Some(path) = &args.replica_binary {
        return (path.clone(), vec![]);
    }
    let exe = std::env::current_exe().ok();
    let sibling = exe
        .as_ref()
        .and_then(|exe| exe.parent().map(|dir| dir.join("deposito-replica")))
        .filter(|path| path.exists());
    match (sibling, exe) {
        (Some(path), _) => (path, vec![]),
        (None, Some(exe)) => (exe, vec!["replica".to_string()]),
        (None, None) => (PathBuf::from("deposito-replica"), vec![]),
    }
}

/// Starts `args.replicas` children (none when it is 0), each kept running by a
/// `replica-N` worker of `workers`; shutting the runner down stops them (SIGTERM, then
/// SIGKILL after 5 s).
pub fn start(
    args: &LocalArgs,
    data_dir: &Path,
    gateway_url: &str,
    replica_token: &str,
    internal_tls: Option<&super::internal_tls::InternalTlsFiles>,
    workers: &Workers,
) -> anyhow::Result<()> {
    {
        let (binary, mut leading_args) = replica_program(args);
        if let Some(files) = internal_tls {
            leading_args.extend(files.replica_args());
        }
        let scheme = if internal_tls.is_some() {
            "https"
        } else {
            "http"
        };
        if let Some(cert) = &args.tls.tls_cert {
            // The gateway serves HTTPS: children trust its certificate chain to register.
            let cert = std::path::absolute(cert).unwrap_or_else(|_| cert.clone());
            leading_args.push("--register-ca-cert".into());
            leading_args.push(cert.display().to_string());
        }
        for index in 0..args.replicas {
            let dir = data_dir.join("replicas").join(format!("replica-{index}"));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let spec = ChildSpec {
                id: format!("replica-{index}"),
                listen: child_address(&dir, index, args.replica_port)?,
                data_dir: dir,
            };
            println!(
                "deposito: {} on {scheme}://{} (data in {})",
                spec.id,
                spec.listen,
                spec.data_dir.display()
            );
            let command = ChildCommand {
                binary: binary.clone(),
                leading_args: leading_args.clone(),
                spec,
                gateway_url: gateway_url.to_string(),
                token: replica_token.to_string(),
                scrub_interval_secs: args.scrub_interval_secs,
                heartbeat_secs: args.heartbeat_secs,
            };
            workers.spawn(ReplicaProcess {
                command,
                child: None,
                started: Instant::now(),
                backoff: Duration::from_secs(1),
                restarts: 0,
            });
        }
    }
    Ok(())
}

struct ChildCommand {
    binary: PathBuf,
    leading_args: Vec<String>,
    spec: ChildSpec,
    gateway_url: String,
    token: String,
    scrub_interval_secs: u64,
    heartbeat_secs: u64,
}

impl ChildCommand {
    fn build(&self) -> anyhow::Result<Command> {
        let log_path = self.spec.data_dir.join("replica.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut command = Command::new(&self.binary);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("DEPOSITO_") {
                command.env_remove(name);
            }
        }
        command
            .args(&self.leading_args)
            .arg("--listen")
            .arg(self.spec.listen.to_string())
            .arg("--data-dir")
            .arg(&self.spec.data_dir)
            .arg("--register")
            .arg(&self.gateway_url)
            .arg("--id")
            .arg(&self.spec.id)
            .arg("--scrub-interval-secs")
            .arg(self.scrub_interval_secs.to_string())
            .arg("--heartbeat-secs")
            .arg(self.heartbeat_secs.to_string())
            .env("DEPOSITO_REPLICA_TOKEN", &self.token)
            .env_remove("DEPOSITO_TOKEN")
            .env_remove("DEPOSITO_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child when
        // the operator dies, so that no replica outlives a crashed operator.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        Ok(command)
    }
}

/// `replica-N`: one replica child, restarted with backoff when it exits. A step starts the
/// child if none runs and waits for it to exit; the child lives in the worker, so that
/// stopping ends it gracefully ([`Worker::on_stop`]).
struct ReplicaProcess {
    command: ChildCommand,
    child: Option<Child>,
    started: Instant,
    backoff: Duration,
    restarts: u64,
}

#[async_trait]
impl Worker for ReplicaProcess {
    fn name(&self) -> String {
        self.command.spec.id.clone()
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        let id = &self.command.spec.id;
        if self.child.is_none() {
            self.started = Instant::now();
            match self
                .command
                .build()
                .and_then(|mut c| c.spawn().map_err(Into::into))
            {
                Ok(child) => {
                    info!(replica = %id, pid = child.id(), restarts = self.restarts, "replica started");
                    self.child = Some(child);
                }
                Err(err) => warn!(replica = %id, %err, "cannot start replica"),
            }
        }
        if let Some(child) = self.child.as_mut() {
            let status = child.wait().await;
            warn!(replica = %id, ?status, "replica exited");
            self.child = None;
        }
        if self.started.elapsed() > HEALTHY_RUN {
            self.backoff = Duration::from_secs(1);
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.restarts += 1;
        Ok(Next::After(wait))
    }

    async fn on_stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child).await;
        }
    }
}

async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_addresses_are_distinct_and_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let first = child_address(&a, 0, 0).unwrap();
        let second = child_address(&b, 1, 0).unwrap();
        assert_ne!(first.ip(), second.ip());
        assert_eq!(first.ip(), Ipv4Addr::new(127, 0, 0, 10));
        assert_eq!(
            child_address(&a, 0, 0).unwrap(),
            first,
            "kept across restarts"
        );
    }
}
