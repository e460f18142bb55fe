//! `deposito-bench`: throughput and memory of a local Deposito cluster, beside baselines
//! measured in the same run. See BENCHMARKS.md.

use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let bench = deposito_e2e::bench::run(std::env::args().skip(1).collect());
    // On Ctrl-C or SIGTERM the benchmark is dropped, which stops the cluster it started.
    tokio::select! {
        r = bench => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = term.recv() => anyhow::bail!("terminated"),
    }
}
