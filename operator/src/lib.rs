//! Deposito operator: the reconcile engine, the modes that feed it, and the gateway API.
//!
//! - [`plan`]: the pure plan function, (desired spec, observed inventories) → actions.
//! - [`engine`]: the mode-neutral machinery around it: observe, plan, act, publish, one file
//!   at a time, from incrementally maintained inventories.
//! - [`gateway`]: the HTTP API clients use.
//! - [`local`]: local mode's seams (SQLite catalog, heartbeat membership) and launcher.
//! - [`kube`]: kube mode's seams (StoredFile resources, replica pods), its controller and CRD.

pub mod config;
pub mod engine;
pub mod gateway;
pub mod kube;
pub mod local;
pub mod locks;
pub mod metrics;
pub mod plan;
pub mod replica_client;
#[cfg(test)]
mod testing;

/// Sets up `tracing` output: `RUST_LOG` or `info`.
/// The log filter unless `RUST_LOG` says otherwise. The `s3s` crate logs every refused S3
/// request (a 404, a bad signature) as an error; the S3 API logs its server errors itself
/// (`gateway::s3`).
pub const DEFAULT_LOG_FILTER: &str = "info,s3s=off";

pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
