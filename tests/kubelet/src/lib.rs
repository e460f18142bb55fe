//! deposito-kubelet: a kubelet stand-in that runs the Pods of a real control plane as local
//! processes on loopback addresses, for end-to-end tests.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

pub mod cli;
pub mod cluster;
pub mod container;
pub mod env;
pub mod hosts;
pub mod ipam;
pub mod local_path;
pub mod mount_targets;
pub mod node;
pub mod pods;
pub mod probes;
pub mod process;
pub mod scheduler;
pub mod status;
pub mod volumes;
pub mod worker;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub use cli::{Cli, NodeSpec};

/// Shared by every task of the kubelet.
pub struct Ctx {
    pub client: Client,
    pub cli: Cli,
    pub cluster: cluster::ClusterInfo,
    pub state_dir: PathBuf,
    pub ipam: Mutex<ipam::Ipam>,
    /// The nodes this kubelet registers and serves (at least one).
    pub nodes: Vec<NodeSpec>,
    /// Services, Pods and EndpointSlices of the cluster (one reflector each, for all pods),
    /// for the hosts files.
    pub hosts: hosts::Sources,
}

impl Ctx {
    /// Whether `node` is one of the nodes this kubelet serves.
    pub fn serves(&self, node: &str) -> bool {
        self.nodes.iter().any(|n| n.name == node)
    }
}

async fn wait_for_file(path: &std::path::Path) {
    for i in 0.. {
        if path.exists() {
            return;
        }
        if i % 10 == 0 {
            tracing::info!(path = %path.display(), "waiting for kubeconfig");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Run until SIGTERM or SIGINT, then kill every container process.
pub async fn run(cli: Cli) -> Result<()> {
    let nodes = cli.nodes().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&cli.state_dir)
        .with_context(|| format!("creating {}", cli.state_dir.display()))?;
    let state_dir = std::fs::canonicalize(&cli.state_dir)?;
    for d in ["pods", "pvc", "logs"] {
        std::fs::create_dir_all(state_dir.join(d))?;
    }
    wait_for_file(&cli.kubeconfig).await;
    let kc = Kubeconfig::read_from(&cli.kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;
    let cluster = cluster::ClusterInfo::from_kubeconfig(&cli.kubeconfig)?;
    let ipam = ipam::Ipam::new(&cli.ip_prefix, Some(state_dir.join("pod-ips.json")))?;
    let (hosts_sources, hosts_tasks) = hosts::Sources::start(&client);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cli: cli.clone(),
        cluster,
        state_dir,
        ipam: Mutex::new(ipam),
        nodes: nodes.clone(),
        hosts: hosts_sources,
    });
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    tracing::info!(nodes = %names.join(","), server = %ctx.cluster.server, state = %ctx.state_dir.display(), "process kubelet starting");

    let node_tasks: Vec<_> = nodes
        .iter()
        .map(|n| tokio::spawn(node::run(client.clone(), n.clone())))
        .collect();
    let sched = tokio::spawn(scheduler::run(client.clone(), nodes.clone()));
    let pods = tokio::spawn(pods::run(ctx.clone()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
    process::kill_all();
    for t in &node_tasks {
        t.abort();
    }
    sched.abort();
    pods.abort();
    for t in &hosts_tasks {
        t.abort();
    }
    Ok(())
}
