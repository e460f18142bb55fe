//! The gateway HTTP API that clients use, the probes and the metrics. Served by the operator
//! process in every mode. It talks to the engine's seams (the catalog, membership and the
//! replica views), never to one mode: each mode builds a [`Gateway`] from its own
//! implementations and may add routes of its own (local mode's replica registration).

pub mod access;
pub mod auth;
pub mod deposit;
pub mod error;
mod files;
mod namespaces;
mod replicas;
pub mod s3;
pub mod serve;
pub mod store;
mod trailer;
mod transfer;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use deposito_replica::http::limits::RouteClass;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::engine::{Catalog, InventoryIndex, Membership, ReplicaSet};
use crate::locks::KeyLocks;
use crate::metrics::Metrics;
use crate::replica_client::ReplicaClient;
use auth::ClientContract;
use store::FileStore;

/// The gateway's handles.
pub struct Gateway {
    /// The catalog's reads and writes for clients.
    pub files: Arc<dyn FileStore>,
    /// The engine's seam of the same catalog: change notifications (long polls) and whether
    /// its view is complete (readiness).
    pub catalog: Arc<dyn Catalog>,
    pub membership: Arc<dyn Membership>,
    /// The replicas as the engine classifies them (health with the grace period).
    pub replicas: Arc<ReplicaSet>,
    /// What each replica holds, for choosing where to read from.
    pub index: Arc<InventoryIndex>,
    pub client: ReplicaClient,
    /// Local mode's upload fence: held from before the first byte until the catalog commit.
    pub fence: Option<KeyLocks>,
    pub metrics: Arc<Metrics>,
    /// The client tokens and what each may reach.
    pub tokens: Arc<access::Tokens>,
    /// The OpenAPI description of the routes the mode adds, merged into `/openapi.json`.
    pub extra_doc: Option<utoipa::openapi::OpenApi>,
}

/// Shared handle on the [`Gateway`].
pub type GatewayState = Arc<Gateway>;

/// The OpenAPI document served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Deposito gateway", description = "Store files with a per-file replication level."),
    paths(
        files::put_file,
        files::get_file,
        files::head_file,
        files::patch_file,
        files::delete_file,
        files::list_files,
        files::file_status,
        namespaces::get_lifecycle,
        namespaces::put_lifecycle,
        replicas::list_replicas,
        replicas::patch_replica,
    ),
    components(schemas(
        deposito_api::ErrorBody,
        deposito_api::gateway::FileStatus,
        deposito_api::gateway::LifecycleStatus,
        deposito_api::gateway::FileList,
        deposito_api::gateway::Phase,
        deposito_api::gateway::Condition,
        deposito_api::gateway::PatchFile,
        deposito_api::gateway::NamespaceLifecycle,
        deposito_api::gateway::WaitFor,
        deposito_api::gateway::ReplicaStatus,
        deposito_api::gateway::ReplicaList,
        deposito_api::gateway::PatchReplica,
    )),
    modifiers(&ClientContract),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The class of a gateway request ([`RouteClass`]): a file's upload (`PUT`) and download
/// (`GET`) stream; the status long poll outlasts the deadline (it has its own, at most
/// 60 s); everything else is bounded.
pub fn classify(method: &axum::http::Method, path: &str) -> RouteClass {
    use axum::http::Method;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::PUT | &Method::GET, ["v1", "files", _, _]) => RouteClass::Stream,
        (&Method::GET, ["v1", "files", _, _, "status"]) => RouteClass::Long,
        _ => RouteClass::Bounded,
    }
}

/// Builds the whole router: the client API, the probes, `/metrics` (unless it is served on
/// its own address, [`metrics_router`]), and `extra` (routes a mode adds, with their own
/// state and authentication).
pub fn router(gateway: GatewayState, extra: Router, with_metrics: bool) -> Router {
    let client_api = Router::new()
        .route(
            "/v1/files/{namespace}/{name}",
            get(files::get_file)
                .head(files::head_file)
                .put(files::put_file)
                .patch(files::patch_file)
                .delete(files::delete_file),
        )
        .route("/v1/files/{namespace}", get(files::list_files))
        .route(
            "/v1/files/{namespace}/{name}/status",
            get(files::file_status),
        )
        .route(
            "/v1/namespaces/{namespace}/lifecycle",
            get(namespaces::get_lifecycle).put(namespaces::put_lifecycle),
        )
        .route("/v1/replicas", get(replicas::list_replicas))
        .route(
            "/v1/replicas/{id}",
            axum::routing::patch(replicas::patch_replica),
        )
        .layer(DefaultBodyLimit::disable())
        .route_layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            auth::require_client_token,
        ));
    Router::new()
        .merge(client_api)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .with_state(gateway.clone())
        .merge(extra)
        .merge(if with_metrics {
            metrics_router(gateway)
        } else {
            Router::new()
        })
        .layer(TraceLayer::new_for_http())
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

/// Ready when the catalog answers and the replica set is observed. The answer also says
/// whether orphan collection runs (`orphanCollection`: `active`, or `paused: why` while the
/// catalog's view is incomplete: nothing unclaimed is collected then).
async fn readyz(State(gw): State<GatewayState>) -> impl IntoResponse {
    let checked = match gw.files.ready().await {
        Ok(_) => match &gw.replicas.current().error {
            None => Ok(()),
            Some(err) => Err(err.to_string()),
        },
        Err(err) => Err(err.to_string()),
    };
    let orphans = match gw.catalog.completeness() {
        Ok(()) => "active".to_string(),
        Err(why) => format!("paused: {why}"),
    };
    match checked {
        Ok(()) => (
            StatusCode::OK,
            Json(serde_json::json!({"status": "ok", "orphanCollection": orphans})),
        ),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "code": "not_ready",
                "error": error,
                "orphanCollection": orphans,
            })),
        ),
    }
}

/// `/metrics` alone, for a metrics address of its own (kube mode's `--metrics-listen`: not
/// behind the gateway's NodePort).
pub fn metrics_router(gateway: GatewayState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(gateway)
}

async fn metrics(State(gw): State<GatewayState>) -> impl IntoResponse {
    gw.metrics
        .orphan_collection_paused
        .set(i64::from(gw.catalog.completeness().is_err()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gw.metrics.render(),
    )
}

async fn openapi(State(gw): State<GatewayState>) -> impl IntoResponse {
    let mut doc = ApiDoc::openapi();
    if let Some(extra) = &gw.extra_doc {
        doc.merge(extra.clone());
    }
    Json(doc)
}

async fn not_found() -> crate::gateway::error::GatewayError {
    crate::gateway::error::GatewayError::NotFound("route".into())
}
