//! Local mode: the embedded catalog, registration-based membership, and the launcher that
//! runs a whole system with one command.

pub mod catalog;
pub mod membership;
pub mod supervisor;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{watch, Notify};

use crate::config::LocalArgs;
use crate::locks::KeyLocks;
use crate::metrics::Metrics;
use crate::replica_client::ReplicaClient;
use crate::state::{Context, Settings};

/// Runs `deposito-operator local` until SIGINT or SIGTERM.
pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let client_token = tokens::load_or_create(args.token_file.as_deref(), &data_dir.join("token"))?;
    let replica_token = tokens::load_or_create(
        args.replica_token_file.as_deref(),
        &data_dir.join("replica-token"),
    )?;
    let catalog_path = data_dir.join("catalog.sqlite3");
    let catalog = catalog::Catalog::open(&catalog_path)
        .with_context(|| format!("cannot open catalog {}", catalog_path.display()))?;
    let membership = membership::Membership::load(catalog.clone())?;
    let settings = Settings::new(
        Duration::from_secs(args.grace_period_secs),
        Duration::from_secs(args.reconcile_interval_secs.max(1)),
        Duration::from_secs(args.orphan_grace_secs),
        Duration::from_secs(args.heartbeat_secs.max(1)),
    );
    let (changes, _) = watch::channel(0);
    let ctx = Arc::new(Context {
        catalog,
        membership,
        replicas: ReplicaClient::new(replica_token.clone()),
        locks: KeyLocks::default(),
        wake: Notify::new(),
        changes,
        settings,
        metrics: Metrics::default(),
        client_token,
        replica_token: replica_token.clone(),
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let gateway_url = format!("http://{}", reachable(args.listen));
    println!("deposito: gateway listening on {gateway_url}");
    println!(
        "deposito: client token in {}",
        args.token_file
            .clone()
            .unwrap_or_else(|| data_dir.join("token"))
            .display()
    );
    println!("deposito: data in {}", data_dir.display());

    let supervisor = supervisor::Supervisor::start(&args, &data_dir, &gateway_url, &replica_token)?;
    tokio::spawn(crate::reconcile::run(ctx.clone()));
    let app = crate::gateway::router(ctx);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("gateway failed")?;
    tracing::info!("shutting down");
    supervisor.stop().await;
    Ok(())
}

/// The address to give replicas for an operator listening on `listen` (a wildcard address
/// becomes loopback).
fn reachable(listen: std::net::SocketAddr) -> std::net::SocketAddr {
    if listen.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
