//! The gateway HTTP API that clients use, plus the registration endpoint for replicas, the
//! probes and the metrics. Served by the operator process.

mod auth;
mod files;
mod replicas;
mod transfer;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::state::Context;
use auth::BearerScheme;

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
        replicas::list_replicas,
        replicas::patch_replica,
        replicas::register,
    ),
    components(schemas(
        deposito_api::ErrorBody,
        deposito_api::gateway::FileStatus,
        deposito_api::gateway::FileList,
        deposito_api::gateway::Phase,
        deposito_api::gateway::Condition,
        deposito_api::gateway::PatchFile,
        deposito_api::gateway::WaitFor,
        deposito_api::gateway::ReplicaStatus,
        deposito_api::gateway::ReplicaList,
        deposito_api::gateway::PatchReplica,
        deposito_api::replica::RegisterRequest,
        deposito_api::replica::RegisterResponse,
    )),
    modifiers(&BearerScheme),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Builds the whole router.
pub fn router(ctx: Arc<Context>) -> Router {
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
        .route("/v1/replicas", get(replicas::list_replicas))
        .route(
            "/v1/replicas/{id}",
            axum::routing::patch(replicas::patch_replica),
        )
        .layer(DefaultBodyLimit::disable())
        .route_layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            auth::require_client_token,
        ));
    let replica_api = Router::new()
        .route("/v1/replicas/register", post(replicas::register))
        .route_layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            auth::require_replica_token,
        ));
    Router::new()
        .merge(client_api)
        .merge(replica_api)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(TraceLayer::new_for_http())
        .with_state(ctx)
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    match ctx.catalog.run(|c| c.list(Some("\u{0}")).map(|_| ())).await {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"code": "not_ready", "error": err.to_string()})),
        ),
    }
}

async fn metrics(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.metrics.render(),
    )
}

async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

async fn not_found() -> crate::error::GatewayError {
    crate::error::GatewayError::NotFound("route".into())
}
