//! `deposito-local-path`: the real node's local-path provisioner
//! ([`deposito_kubelet::local_path`]), started by `tests/cluster/up --node real`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Binds volume claims of the StorageClass `deposito-local` to `local` volumes in one folder.
#[derive(Debug, Parser)]
#[command(name = "deposito-local-path", version)]
struct Cli {
    /// Kubeconfig of an identity that may manage PersistentVolumes and StorageClasses.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Folder of the volumes (one sub-folder per volume).
    #[arg(long)]
    root: PathBuf,
    /// The node the volumes are on (the claims' selected node).
    #[arg(long)]
    node: String,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info,kube=warn"))
        .with_ansi(false)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&cli.kubeconfig)
            .with_context(|| format!("reading {}", cli.kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        let client = kube::Client::try_from(config)?;
        deposito_kubelet::local_path::run(client, cli.root, cli.node).await
    })
}
