//! Kube mode: the StoredFile custom resource reconciled against the pods of the replica
//! StatefulSet. It implements the engine's seams ([`catalog::KubeCatalog`] over StoredFiles,
//! [`membership::KubeMembership`] over replica pods), drives the engine from a kube-rs
//! `Controller` (with a finalizer, Events through a `Recorder`, status by server-side apply),
//! and serves the same gateway as local mode. With leader election, several operator
//! replicas may run: all serve the gateway, the leader reconciles.

mod aging;
pub mod cached;
pub mod catalog;
pub mod content_attrs;
pub mod controller;
pub mod crd;
pub mod crd_lifecycle;
mod deposit;
pub mod file_index;
pub mod lifecycle;
pub mod membership;
pub mod namespace_defaults;
pub mod record;
pub mod s3_store;
pub mod scale_down;
pub mod workers;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use deposito_util::shutdown::shutdown_signal;
use deposito_util::token::{read_token_file, LiveToken, TokenFileReload};
use deposito_util::worker::Workers;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::KubeArgs;
use crate::engine::{self, queue::WorkQueue, StaleGuard};
use crate::gateway::access::TokensReload;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::replica_client::ReplicaClient;
use cached::CachedFile;
use workers::{ListRecheck, OrphanCollector, OrphanSweep, Resync, TriggerRouter, Watch};

/// A Kubernetes client that counts its requests by verb (the scale benchmark reports API
/// requests per file).
async fn counting_client(metrics: Arc<Metrics>) -> anyhow::Result<Client> {
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration (in-cluster or kubeconfig)")?;
    let count =
        tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
            metrics
                .kube_requests
                .get_or_create(&crate::metrics::VerbLabels {
                    verb: request.method().as_str().to_string(),
                })
                .inc();
            request
        });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build())
}

fn read_token(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    read_token_file(path).with_context(|| format!("the {what}"))
}

/// The StoredFile reflector (shared by the catalog and the controller), the replica pods'
/// and, with `--node-zones`, the Nodes' metadata: each watch a worker of `workers`.
struct Watches {
    catalog: Arc<catalog::KubeCatalog>,
    membership: Arc<membership::KubeMembership>,
    sf_reader: reflector::Store<CachedFile>,
    sf_subscriber: reflector::ReflectHandle<CachedFile>,
}

fn start_watches(
    args: &KubeArgs,
    client: &Client,
    watched: Option<&String>,
    replica_namespace: &str,
    workers: &Workers,
) -> Watches {
    let sf_api: Api<CachedFile> = match watched {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (sf_reader, sf_writer) = reflector::store_shared(1024);
    let sf_subscriber = sf_writer
        .subscribe()
        .expect("a shared store can be subscribed to");
    let catalog = Arc::new(catalog::KubeCatalog::new(
        client.clone(),
        sf_reader.clone(),
        watched.cloned(),
    ));
    // The cache keeps compact records, decoded as they arrive (no managedFields,
    // last-applied copy or inline content; shared strings).
    let stream = watcher(sf_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect_shared(sf_writer);
    let on_event = {
        let catalog = catalog.clone();
        move |item: Result<_, watcher::Error>| {
            if let Err(err) = &item {
                warn!(%err, "watching StoredFiles");
            }
            catalog.watch_event(&item);
        }
    };
    workers.spawn(Watch::new("storedfile-watch", stream.boxed(), on_event));
    workers.spawn(ListRecheck {
        catalog: catalog.clone(),
        every: Duration::from_secs(args.list_recheck_secs.max(1)),
    });

    let pod_api: Api<Pod> = Api::namespaced(client.clone(), replica_namespace);
    let (pod_reader, pod_writer) = reflector::store();
    let grace = args.engine.grace_period();
    let mut membership = membership::KubeMembership::new(pod_reader, args.replica_port, grace);
    if args.internal_ca_cert.is_some() {
        membership = membership.over_https();
    }
    if args.node_zones {
        // Zones from the Nodes' labels (their metadata only: a Node's status is large).
        // Failing to read them only costs the zones.
        let (node_reader, node_writer) = reflector::store::<PartialObjectMeta<Node>>();
        membership = membership.with_nodes(node_reader);
        let config = watcher::Config::default().any_semantic();
        let stream = reflector::reflector(
            node_writer,
            watcher(Api::<PartialObjectMeta<Node>>::all(client.clone()), config).default_backoff(),
        );
        let mut warned = false;
        let on_item = move |item: Result<_, watcher::Error>| match item {
            Err(err) if !warned => {
                warned = true;
                warn!(%err, "cannot read Nodes: zones come from the replica pods' labels or node names");
            }
            Ok(_) => warned = false,
            Err(_) => {}
        };
        workers.spawn(Watch::new("node-watch", stream.boxed(), on_item));
    }
    let membership = Arc::new(membership);
    let config = watcher::Config::default().labels(&args.replica_selector);
    let stream = reflector::reflector(pod_writer, watcher(pod_api, config).default_backoff());
    let on_item = {
        let membership = membership.clone();
        move |item| membership.observed(&item)
    };
    workers.spawn(Watch::new("pod-watch", stream.boxed(), on_item));
    Watches {
        catalog,
        membership,
        sf_reader,
        sf_subscriber,
    }
}

/// Runs `deposito-operator kube` until SIGINT or SIGTERM (or, with leader election, until
/// leadership is lost: the process then exits and Kubernetes restarts it).
pub async fn run(args: KubeArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let client = counting_client(metrics.clone()).await?;
    let own_namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let watched = (!args.all_namespaces).then(|| own_namespace.clone());
    let replica_namespace = args
        .replica_namespace
        .clone()
        .unwrap_or(own_namespace.clone());
    // Both token files are followed while running: a Secret updated in place takes effect
    // without a restart. A replaced client token is refused at once; the replica token
    // changes in two phases (see `deposito_util::token`), since each pod sees the change at
    // its own moment.
    let client_token = LiveToken::new(
        read_token(&args.token_file, "client token")?,
        Duration::ZERO,
    );
    let client_tokens = Arc::new(crate::gateway::access::Tokens::following(
        client_token.clone(),
    ));
    if let Some(path) = &args.tokens_file {
        anyhow::ensure!(
            path.is_file(),
            "the scoped tokens file {} does not exist",
            path.display()
        );
        client_tokens.load(path)?;
    }
    let replica_token_text = read_token(&args.replica_token_file, "replica token")?;
    deposito_util::token::ensure_distinct(&client_token.current(), &replica_token_text)?;
    let replica_token = LiveToken::new(
        replica_token_text,
        Duration::from_secs(args.previous_token_grace_secs),
    );
    lifecycle::check_crd(&client).await;
    let workers = Workers::new(CancellationToken::new(), metrics.workers.clone());
    let Watches {
        catalog,
        membership,
        sf_reader,
        sf_subscriber,
    } = start_watches(
        &args,
        &client,
        watched.as_ref(),
        &replica_namespace,
        &workers,
    );

    let reporter = Reporter {
        controller: "deposito-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let replicas_client = match &args.internal_ca_cert {
        Some(ca) => ReplicaClient::internal_tls(
            replica_token.clone(),
            deposito_util::tls::pinned_name_client(
                ca,
                "--internal-ca-cert",
                &args.internal_server_name,
                "--internal-server-name",
            )?,
        ),
        None => ReplicaClient::following(replica_token.clone()),
    };
    let built = engine::build(
        engine::Seams {
            catalog: catalog.clone(),
            membership: membership.clone(),
            events: Arc::new(controller::KubeEvents {
                recorder: recorder.clone(),
                catalog: catalog.clone(),
                metrics: metrics.clone(),
            }),
        },
        replicas_client.clone(),
        metrics.clone(),
        // The gateway and the controller may be different processes: keep young copies of
        // other content for one orphan grace.
        args.engine
            .engine_settings(StaleGuard::Age(args.engine.orphan_grace())),
        args.engine.tracker_settings(true),
        args.engine.rebalance_settings(),
    );
    workers.spawn(built.tracker.into_worker(&workers));
    workers.spawn(TokenFileReload::new(
        "client",
        client_token,
        args.token_file.clone(),
    ));
    workers.spawn(TokenFileReload::new(
        "replica",
        replica_token,
        args.replica_token_file.clone(),
    ));
    if let Some(path) = args.tokens_file.clone() {
        // A Secret volume is updated in place (a new target behind the same path).
        workers.spawn(TokensReload::new(client_tokens.clone(), path));
    }

    // The gateway runs on every operator replica, leader or not.
    let gateway = Arc::new(Gateway {
        files: catalog.clone(),
        catalog: catalog.clone(),
        membership: membership.clone(),
        replicas: built.replicas.clone(),
        index: built.index.clone(),
        client: replicas_client,
        fence: None,
        metrics: metrics.clone(),
        tokens: client_tokens,
        extra_doc: None,
    });
    let tls = args.tls.server_config()?.map(|served| {
        workers.spawn(served.reload);
        served.config
    });
    let listener = deposito_util::net::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    if let Some(addr) = args.metrics_listen {
        let metrics_listener = deposito_util::net::bind(addr)
            .with_context(|| format!("cannot listen on {addr} (metrics)"))?;
        let app = crate::gateway::metrics_router(gateway.clone());
        tokio::spawn(crate::gateway::serve::serve(
            metrics_listener,
            app,
            None,
            args.serve.clone(),
            shutdown_signal(),
        ));
    }
    if let Some(addr) = args.s3.listen(None)? {
        let s3_listener = deposito_util::net::bind(addr)
            .with_context(|| format!("cannot listen on {addr} for the S3 API (--s3-listen)"))?;
        let router = crate::gateway::s3::router(
            gateway.clone(),
            crate::gateway::s3::S3Seams {
                buckets: catalog.clone(),
                uploads: Arc::new(s3_store::KubeUploads::new(client.clone(), &own_namespace)),
                parts_namespace: own_namespace.clone(),
                parts_namespace_is_bucket: true,
            },
            &args.s3,
        )?;
        info!(listen = %addr, "S3 API");
        tokio::spawn(crate::gateway::serve::serve_s3(
            s3_listener,
            router,
            tls.clone(),
            args.serve.clone(),
            shutdown_signal(),
        ));
    }
    info!(listen = %args.listen, metrics = ?args.metrics_listen, namespace = ?watched, replicas = %args.replica_selector, "deposito-operator kube");
    let serve = crate::gateway::serve::serve(
        listener,
        crate::gateway::router(gateway, axum::Router::new(), args.metrics_listen.is_none()),
        tls,
        args.serve.clone(),
        shutdown_signal(),
    );
    let server = tokio::spawn(serve);

    let lead = async {
        if args.leader_election {
            wait_for_leadership(&client, &own_namespace, &args).await
        } else {
            Ok(None)
        }
    };
    let leading = tokio::select! {
        leading = lead => leading?,
        done = server => {
            lifecycle::release_if_namespace_deleted(&client, &catalog, &replica_namespace).await;
            workers.shutdown().await;
            done.context("gateway task")?.context("gateway failed")?;
            return Ok(());
        }
    };

    // Reconcile only once the replicas' inventories are observed (bounded wait), unless the
    // pods can't be read at all: reconciling then reports that on every StoredFile.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.settle_timeout_secs);
    let forbidden = || {
        matches!(
            built.replicas.current().error,
            Some(engine::MembershipError::Forbidden(_))
        )
    };
    while !built.replicas.settled() && !forbidden() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    info!(settled = built.replicas.settled(), "reconciling");
    // Only the leader moves copies (its moves go through its controller).
    if let Some(rebalance) = built.rebalancer.into_worker() {
        workers.spawn(rebalance);
    }

    // The engine's triggers go to the controller or, for keys without a StoredFile, to a
    // small orphan queue of their own; the slow sweep finds the orphans no trigger named.
    // The slow resync feeds the controller too, a batch at a time.
    let (to_controller, from_engine) = tokio::sync::mpsc::unbounded_channel();
    let orphans = Arc::new(WorkQueue::default());
    workers.spawn(Resync::new(
        catalog.clone(),
        to_controller.clone(),
        args.engine.resync_interval(),
    ));
    let (settings, settings_watch) = namespace_defaults::watch(
        &client,
        watched.as_deref(),
        to_controller.clone(),
        catalog.clone(),
    );
    catalog.read_settings_from(settings);
    workers.spawn(settings_watch);
    workers.spawn(TriggerRouter {
        triggers: built.triggers,
        catalog: catalog.clone(),
        to_controller,
        orphans: orphans.clone(),
    });
    for n in 0..args.orphan_workers.max(1) {
        workers.spawn(OrphanCollector {
            n,
            engine: built.engine.clone(),
            orphans: orphans.clone(),
        });
    }
    workers.spawn(OrphanSweep {
        index: built.index.clone(),
        catalog: catalog.clone(),
        orphans,
        every: args.engine.resync_interval(),
    });

    let context = Arc::new(controller::Context::new(
        built.engine.clone(),
        client.clone(),
        recorder,
        catalog.clone(),
        metrics.clone(),
    ));
    let controller = Controller::for_shared_stream(sf_subscriber, sf_reader)
        .reconcile_on(tokio_stream::wrappers::UnboundedReceiverStream::new(
            from_engine,
        ))
        .with_config(
            kube::runtime::controller::Config::default()
                // Triggers within 50 ms (a new file's create, the engine's word that its
                // copies exist) make one reconcile; longer would only delay the status a
                // client waits for (`deposito deposit` waits for it).
                .debounce(Duration::from_millis(50))
                .concurrency(args.engine.workers.clamp(1, u16::MAX as usize) as u16),
        )
        .graceful_shutdown_on(shutdown_signal())
        .run(controller::reconcile, controller::error_policy, context)
        .for_each(|_| futures::future::ready(()));

    match leading {
        Some(mut leading) => {
            let lost = async move {
                while leading.changed().await.is_ok() {
                    if !*leading.borrow() {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = controller => {}
                _ = lost => anyhow::bail!("lost the leader lease; exiting so that Kubernetes restarts this operator"),
            }
        }
        None => controller.await,
    }
    lifecycle::release_if_namespace_deleted(&client, &catalog, &replica_namespace).await;
    workers.shutdown().await;
    Ok(())
}

/// Waits until this process holds the lease; returns the channel that reports losing it.
async fn wait_for_leadership(
    client: &Client,
    namespace: &str,
    args: &KubeArgs,
) -> anyhow::Result<Option<tokio::sync::watch::Receiver<bool>>> {
    let lease = args.lease_name.as_str();
    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("deposito-operator-{}", std::process::id()));
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), lease)
        .with_namespace(namespace)
        .with_identity(identity.clone())
        .with_duration(args.lease_duration_secs)
        .with_grace(args.lease_grace_secs)
        .build()
        .await
        .context("leader election: cannot use the lease")?;
    // The manager's task renews the lease for as long as the receiver lives.
    let (mut leading, _renewing) = manager.watch().await;
    info!(%identity, %lease, "waiting for the leader lease");
    while !*leading.borrow_and_update() {
        leading.changed().await.context("leader election stopped")?;
    }
    info!(%identity, "leading");
    Ok(Some(leading))
}
