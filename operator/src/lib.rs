//! Deposito operator: the reconcile core, the modes that feed it, and the gateway API.
//!
//! - [`core`]: the pure plan function, (desired spec, observed inventories) → actions.
//! - [`reconcile`]: the loop that observes, plans and acts.
//! - [`gateway`]: the HTTP API clients use.
//! - [`local`]: the embedded catalog, membership and launcher of local mode.

pub mod config;
pub mod core;
pub mod error;
pub mod gateway;
pub mod local;
pub mod locks;
pub mod metrics;
pub mod reconcile;
pub mod replica_client;
pub mod state;

/// Sets up `tracing` output: `RUST_LOG` or `info`.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
