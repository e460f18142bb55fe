//! `deposito-bench`: throughput and memory of a local Deposito cluster, beside baselines
//! measured in the same run. See BENCHMARKS.md.
//!
//! - [`bench`]: the arguments and the data-path run (large files, re-replication, peak RSS).
//! - [`bench_base`]: the same-run baselines (sha256, `cp` + `sync`, plain HTTP, nginx).
//! - [`bench_small`]: small-file operations per second, in interleaved rounds.
//! - [`scale`]: `deposito-bench scale`, the reconcile engine's cost as the catalog grows.
//! - [`kube_bench`]: `deposito-bench kube`, kube mode at scale on the test control plane.
//! - [`kube_data`]: `deposito-bench kube-data`, kube mode's data path beside local mode's.
//! - [`lifecycle_bench`]: `deposito-bench lifecycle`, many lifecycle steps falling due at once.
//! - [`round2`]: `deposito-bench round2`, the figures of performance round 2 beside targets.
//!
//! The clusters, files, processes and HTTP helpers come from the e2e test support
//! (`deposito-e2e`).

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

mod bench;
mod bench_base;
mod bench_small;
mod kube_bench;
mod kube_data;
mod lifecycle_bench;
mod round2;
mod scale;

use std::process::ExitCode;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> ExitCode {
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        eprintln!("deposito-bench: cannot install a SIGTERM handler");
        return ExitCode::FAILURE;
    };
    let bench = bench::run(std::env::args().skip(1).collect());
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
