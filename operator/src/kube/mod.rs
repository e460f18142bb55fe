//! Kube mode: the StoredFile custom resource reconciled against the pods of the replica
//! StatefulSet. It implements the engine's seams ([`catalog::KubeCatalog`] over StoredFiles,
//! [`membership::KubeMembership`] over replica pods), drives the engine from a kube-rs
//! `Controller` (with a finalizer, Events through a `Recorder`, status by server-side apply),
//! and serves the same gateway as local mode. With leader election, several operator
//! replicas may run: all serve the gateway, the leader reconciles.

pub mod catalog;
pub mod controller;
pub mod crd;
pub mod membership;
pub mod record;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::KubeArgs;
use crate::engine::{self, queue::Done, queue::Priority, queue::WorkQueue, StaleGuard};
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::replica_client::ReplicaClient;
use crd::StoredFile;

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
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} from {}", path.display()))?;
    let token = token.trim().to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "the {what} in {} is empty",
        path.display()
    );
    Ok(token)
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
    let client_token = read_token(&args.token_file, "client token")?;
    let client_tokens = Arc::new(crate::gateway::access::Tokens::single(client_token));
    if let Some(path) = &args.tokens_file {
        anyhow::ensure!(
            path.is_file(),
            "the scoped tokens file {} does not exist",
            path.display()
        );
        client_tokens.load(path)?;
    }
    let replica_token = read_token(&args.replica_token_file, "replica token")?;
    let grace = args.engine.grace_period();
    let cancel = CancellationToken::new();

    // StoredFiles: one shared reflector for the catalog (gateway, engine) and the controller.
    let sf_api: Api<StoredFile> = match &watched {
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
        watched.clone(),
    ));
    {
        let catalog = catalog.clone();
        let stream = watcher(sf_api.clone(), watcher::Config::default().any_semantic())
            .default_backoff()
            .reflect_shared(sf_writer);
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                if let Err(err) = &item {
                    warn!(%err, "watching StoredFiles");
                }
                catalog.watch_event(&item);
            }
        });
    }
    {
        // A watch that resumes after a failure may deliver nothing: look whether StoredFiles
        // can be listed again, so that orphan collection does not stay paused for nothing.
        let catalog = catalog.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(15)).await;
                catalog.recheck().await;
            }
        });
    }

    // Replica pods: membership.
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &replica_namespace);
    let (pod_reader, pod_writer) = reflector::store();
    let mut membership = membership::KubeMembership::new(pod_reader, args.replica_port, grace);
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
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            let mut warned = false;
            while let Some(item) = stream.next().await {
                match item {
                    Err(err) if !warned => {
                        warned = true;
                        warn!(%err, "cannot read Nodes: zones come from the replica pods' labels or node names");
                    }
                    Ok(_) => warned = false,
                    Err(_) => {}
                }
            }
        });
    }
    let membership = Arc::new(membership);
    {
        let membership = membership.clone();
        let config = watcher::Config::default().labels(&args.replica_selector);
        let stream = reflector::reflector(pod_writer, watcher(pod_api, config).default_backoff());
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                membership.observed(&item);
            }
        });
    }

    let reporter = Reporter {
        controller: "deposito-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let replicas_client = ReplicaClient::new(replica_token);
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
    tokio::spawn(built.tracker.run(cancel.child_token()));
    if let Some(path) = args.tokens_file.clone() {
        // A Secret volume is updated in place (a new target behind the same path).
        tokio::spawn(crate::gateway::access::reload_on_change(
            client_tokens.clone(),
            path,
            cancel.child_token(),
        ));
    }

    // The gateway runs on every operator replica, leader or not.
    let gateway = Arc::new(Gateway {
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
    let tls = args.tls.server_config()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    info!(listen = %args.listen, namespace = ?watched, replicas = %args.replica_selector, "deposito-operator kube");
    let serve = crate::gateway::serve::serve(
        listener,
        crate::gateway::router(gateway, axum::Router::new()),
        tls,
        crate::local::shutdown_signal(),
    );
    let server = tokio::spawn(serve);

    let lead = async {
        if args.leader_election {
            wait_for_leadership(&client, &own_namespace, &args.lease_name).await
        } else {
            Ok(None)
        }
    };
    let leading = tokio::select! {
        leading = lead => leading?,
        done = server => {
            done.context("gateway task")?.context("gateway failed")?;
            return Ok(());
        }
    };

    // Reconcile only once the replicas' inventories are observed (bounded wait), unless the
    // pods can't be read at all: reconciling then reports that on every StoredFile.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
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
    tokio::spawn(built.rebalancer.run(cancel.child_token()));

    // Engine triggers: files whose copies or replicas changed. StoredFiles go to the
    // controller; keys without one in a namespace this operator manages may be orphans,
    // looked at by a small queue of their own (which collects nothing without a complete
    // view of the StoredFiles). Copies in other namespaces are never touched.
    let (to_controller, from_engine) = tokio::sync::mpsc::unbounded_channel();
    let orphans = Arc::new(WorkQueue::default());
    {
        let (catalog, orphans) = (catalog.clone(), orphans.clone());
        let mut triggers = built.triggers;
        tokio::spawn(async move {
            while let Some(key) = triggers.recv().await {
                if catalog.cached(&key.namespace, &key.name).is_some() {
                    let _ = to_controller
                        .send(ObjectRef::<StoredFile>::new(&key.name).within(&key.namespace));
                } else if catalog.manages(&key.namespace) {
                    orphans.add(key, Priority::Normal);
                }
            }
        });
    }
    for _ in 0..2 {
        let (engine, orphans) = (built.engine.clone(), orphans.clone());
        tokio::spawn(async move {
            loop {
                let key = orphans.next().await;
                let done = match engine.collect_orphans(&key).await {
                    Ok(outcome) => Done::Ok {
                        requeue_after: outcome.requeue_after,
                    },
                    Err(err) => Done::Failed(err.category()),
                };
                orphans.done(&key, done);
            }
        });
    }
    // The slow sweep for orphans (copies no StoredFile claims).
    {
        let (index, catalog, orphans) = (built.index.clone(), catalog.clone(), orphans.clone());
        let every = args.engine.resync_interval();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                for key in index.keys() {
                    if catalog.cached(&key.namespace, &key.name).is_none()
                        && catalog.manages(&key.namespace)
                    {
                        orphans.add(key, Priority::Normal);
                    }
                }
            }
        });
    }

    let context = Arc::new(controller::Context::new(
        built.engine.clone(),
        client.clone(),
        recorder,
        catalog.clone(),
        metrics.clone(),
        args.engine.resync_interval(),
    ));
    let controller = Controller::for_shared_stream(sf_subscriber, sf_reader)
        .reconcile_on(tokio_stream::wrappers::UnboundedReceiverStream::new(
            from_engine,
        ))
        .with_config(
            kube::runtime::controller::Config::default()
                .debounce(Duration::from_millis(250))
                .concurrency(args.engine.workers.clamp(1, u16::MAX as usize) as u16),
        )
        .graceful_shutdown_on(crate::local::shutdown_signal())
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
    cancel.cancel();
    Ok(())
}

/// Waits until this process holds the lease; returns the channel that reports losing it.
async fn wait_for_leadership(
    client: &Client,
    namespace: &str,
    lease: &str,
) -> anyhow::Result<Option<tokio::sync::watch::Receiver<bool>>> {
    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("deposito-operator-{}", std::process::id()));
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), lease)
        .with_namespace(namespace)
        .with_identity(identity.clone())
        .with_duration(15)
        .with_grace(5)
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
