//! `deposito-bench`: throughput and memory of a local Deposito cluster, beside baselines
//! measured in the same run. See BENCHMARKS.md.

use std::process::ExitCode;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> ExitCode {
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        eprintln!("deposito-bench: cannot install a SIGTERM handler");
        return ExitCode::FAILURE;
    };
    let bench = deposito_e2e::bench::run(std::env::args().skip(1).collect());
    // On Ctrl-C or SIGTERM the benchmark future is dropped, which stops the cluster it started.
    let result = tokio::select! {
        r = bench => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = term.recv() => Err(anyhow::anyhow!("terminated")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deposito-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
