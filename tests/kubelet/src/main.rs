//! `deposito-kubelet`: the binary of the process kubelet ([`deposito_kubelet`]): parses the
//! command line, sets up logging, runs the kubelet and kills its processes on the way out.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use clap::{CommandFactory, Parser};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    let cli = deposito_kubelet::Cli::parse();
    if let Err(e) = cli.nodes() {
        deposito_kubelet::Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, e)
            .exit();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let res = rt.block_on(deposito_kubelet::run(cli));
    deposito_kubelet::process::kill_all();
    if let Err(e) = &res {
        tracing::error!(error = %format!("{e:#}"), "kubelet failed");
    }
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    res
}
