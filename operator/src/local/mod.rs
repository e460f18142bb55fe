//! Local mode: the embedded SQLite catalog, registration-based membership, and the launcher
//! that runs a whole system with one command. It implements the engine's two seams
//! ([`catalog::SqliteCatalog`], [`membership::HeartbeatMembership`]), runs the engine's work-queue
//! driver, and serves the gateway plus the replicas' registration route.

mod aging;
mod buckets;
pub mod catalog;
pub mod db;
mod deposits;
pub mod internal_tls;
pub mod membership;
mod namespace_defaults;
mod private;
mod register;
mod s3_credentials;
pub mod supervisor;
mod tokens;
mod uploads;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use deposito_util::shutdown::shutdown_signal;
use deposito_util::token::{LiveToken, TokenFileReload};
use deposito_util::worker::Workers;
use tokio_util::sync::CancellationToken;

use crate::config::LocalArgs;
use crate::engine::{self, driver::DriverSettings, StaleGuard};
use crate::gateway::access::TokensReload;
use crate::gateway::Gateway;
use crate::locks::KeyLocks;
use crate::metrics::Metrics;
use crate::replica_client::ReplicaClient;
use utoipa::OpenApi as _;

/// Port of the S3 API unless `--s3-listen` says otherwise (on the gateway's address).
pub const DEFAULT_S3_PORT: u16 = 7900;

/// The namespace holding the parts of S3 multipart uploads in progress.
pub const PARTS_NAMESPACE: &str = "deposito-uploads";

/// The environment variable that may carry the client token of the operator (compose).
pub const CLIENT_TOKEN_ENV: &str = "DEPOSITO_CLIENT_TOKEN";

/// Runs `deposito-operator local` until SIGINT or SIGTERM.
pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir();
    private::prepare_data_dir(&data_dir)?;
    let client_token = tokens::from_env_or_file(
        CLIENT_TOKEN_ENV,
        args.token_file.as_deref(),
        &data_dir.join("token"),
    )?;
    // The client token follows its file (`--token-file`, default DATA_DIR/token): a changed
    // token is in force within seconds and the old one refused, without a restart.
    let client_token_in_force = client_token.clone();
    let client_token = LiveToken::new(client_token, Duration::ZERO);
    let client_tokens = Arc::new(crate::gateway::access::Tokens::following(
        client_token.clone(),
    ));
    let tokens_file = args
        .tokens_file
        .clone()
        .unwrap_or_else(|| data_dir.join("tokens"));
    client_tokens.load(&tokens_file)?;
    let replica_token = tokens::from_env_or_file(
        deposito_replica::config::TOKEN_ENV,
        args.replica_token_file.as_deref(),
        &data_dir.join("replica-token"),
    )?;
    deposito_util::token::ensure_distinct(&client_token_in_force, &replica_token)?;
    let catalog_path = data_dir.join("catalog.sqlite3");
    let db = db::Db::open(&catalog_path)
        .with_context(|| format!("cannot open catalog {}", catalog_path.display()))?;
    let heartbeat = Duration::from_secs(args.heartbeat_secs.max(1));
    let liveness = (heartbeat * 3).max(Duration::from_secs(5));
    let membership = Arc::new(membership::HeartbeatMembership::load(db.clone(), liveness)?);
    let catalog =
        Arc::new(catalog::SqliteCatalog::new(db).context("starting the catalog's deposit writer")?);
    let metrics = Arc::new(Metrics::default());
    let internal_tls = args
        .internal_tls
        .then(|| internal_tls::generate(&data_dir))
        .transpose()?;
    let client = match &internal_tls {
        Some(files) => ReplicaClient::internal_tls(
            LiveToken::new(replica_token.clone(), Duration::ZERO),
            deposito_util::tls::pinned_name_client(
                &files.ca,
                "the internal CA",
                &files.server_name,
                "the internal server name",
            )?,
        ),
        None => ReplicaClient::new(replica_token.clone()),
    };
    let fence = KeyLocks::default();
    let built = engine::build(
        engine::Seams {
            catalog: catalog.clone(),
            membership: membership.clone(),
            events: Arc::new(engine::events::LogEvents {
                metrics: metrics.clone(),
            }),
        },
        client.clone(),
        metrics.clone(),
        args.engine
            .engine_settings(StaleGuard::Fenced(fence.clone())),
        args.engine.tracker_settings(false),
        args.engine.rebalance_settings(),
    );

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let tls = args.tls.server_config()?;
    let gateway_url = format!("{}://{}", args.tls.scheme(), reachable(args.listen));
    println!("deposito: gateway listening on {gateway_url}");
    println!(
        "deposito: client token in {}",
        args.token_file
            .clone()
            .unwrap_or_else(|| data_dir.join("token"))
            .display()
    );
    println!("deposito: data in {}", data_dir.display());
    let s3_listener = bind_s3(&args).await?;
    if let Some(listener) = &s3_listener {
        let credentials = s3_credentials::write(&data_dir, &client_token_in_force)?;
        println!(
            "deposito: S3 API on {}://{} (credentials in {}, profile {})",
            args.tls.scheme(),
            reachable(listener.local_addr()?),
            credentials.display(),
            s3_credentials::PROFILE,
        );
    }

    let workers = Workers::new(CancellationToken::new(), metrics.workers.clone());
    supervisor::start(
        &args,
        &data_dir,
        &gateway_url,
        &replica_token,
        internal_tls.as_ref(),
        &workers,
    )?;
    workers.spawn(built.tracker.into_worker(&workers));
    if let Some(rebalance) = built.rebalancer.into_worker() {
        workers.spawn(rebalance);
    }
    workers.spawn(TokensReload::new(client_tokens.clone(), tokens_file));
    let tls = tls.map(|served| {
        workers.spawn(served.reload);
        served.config
    });
    if std::env::var_os(CLIENT_TOKEN_ENV).is_none() {
        let path = args
            .token_file
            .clone()
            .unwrap_or_else(|| data_dir.join("token"));
        let mut reload = TokenFileReload::new("client", client_token, path);
        if s3_listener.is_some() {
            let dir = data_dir.clone();
            reload = reload.on_change(move |token| {
                if let Err(err) = s3_credentials::write(&dir, token) {
                    tracing::error!(error = %err, "cannot rewrite s3-credentials for the new token");
                }
            });
        }
        workers.spawn(reload);
    }
    engine::driver::start(
        built.engine.clone(),
        built.triggers,
        DriverSettings {
            workers: args.engine.workers.max(1),
            resync_every: args.engine.resync_interval(),
            settle_timeout: liveness * 2,
        },
        &workers,
    );
    let catalog_for_s3 = catalog.clone();
    let gateway = Arc::new(Gateway {
        files: catalog.clone(),
        catalog,
        membership: membership.clone(),
        replicas: built.replicas,
        index: built.index,
        client,
        fence: Some(fence),
        metrics,
        tokens: client_tokens,
        extra_doc: Some(register::RegisterDoc::openapi()),
    });
    let s3 = match s3_listener {
        Some(listener) => Some((
            listener,
            crate::gateway::s3::router(
                gateway.clone(),
                crate::gateway::s3::S3Seams {
                    buckets: catalog_for_s3.clone(),
                    uploads: catalog_for_s3,
                    parts_namespace: PARTS_NAMESPACE.to_string(),
                    parts_namespace_is_bucket: false,
                },
                &args.s3,
            )?,
        )),
        None => None,
    };
    let app = crate::gateway::router(
        gateway,
        register::router(membership, heartbeat, &replica_token),
        true,
    );
    let serve_s3 = async {
        match s3 {
            Some((listener, router)) => {
                crate::gateway::serve::serve_s3(
                    listener,
                    router,
                    tls.clone(),
                    args.serve.clone(),
                    shutdown_signal(),
                )
                .await
            }
            None => Ok(()),
        }
    };
    let serve_gateway = crate::gateway::serve::serve(
        listener,
        app,
        tls.clone(),
        args.serve.clone(),
        shutdown_signal(),
    );
    let (gateway_served, s3_served) = tokio::join!(serve_gateway, serve_s3);
    gateway_served.context("gateway failed")?;
    s3_served.context("S3 API failed")?;
    tracing::info!("shutting down");
    workers.shutdown().await;
    Ok(())
}

/// The S3 API's listener: `--s3-listen`, else the gateway's address with port
/// [`DEFAULT_S3_PORT`]; `None` when turned off, or when the default port is taken (another
/// system on this host): the native API then runs alone. An address given with
/// `--s3-listen` that can't be bound is an error.
async fn bind_s3(args: &LocalArgs) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let default = std::net::SocketAddr::new(args.listen.ip(), DEFAULT_S3_PORT);
    let Some(addr) = args.s3.listen(Some(default))? else {
        return Ok(None);
    };
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => Ok(Some(listener)),
        Err(err) if args.s3.s3_listen.is_none() => {
            eprintln!(
                "deposito: S3 API off: cannot listen on {addr} ({err}); choose an address with --s3-listen"
            );
            Ok(None)
        }
        Err(err) => Err(err)
            .with_context(|| format!("cannot listen on {addr} for the S3 API (--s3-listen)")),
    }
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
