//! `POST /v1/replicas/register`: registration and heartbeats of replicas (local and compose
//! modes), under the replica token.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use deposito_api::replica::{RegisterRequest, RegisterResponse};
use utoipa::OpenApi;

use super::membership::HeartbeatMembership;
use crate::gateway::error::GatewayError;

/// What the route needs.
#[derive(Clone)]
struct Registry {
    membership: Arc<HeartbeatMembership>,
    heartbeat: Duration,
}

/// The OpenAPI description of the registration route.
#[derive(OpenApi)]
#[openapi(
    paths(register),
    components(schemas(
        deposito_api::replica::RegisterRequest,
        deposito_api::replica::RegisterResponse
    ))
)]
pub struct RegisterDoc;

/// Registration and heartbeat of a replica (replica token).
#[utoipa::path(post, path = "/v1/replicas/register", request_body = RegisterRequest,
    responses((status = 200, description = "registered; beat again after `heartbeat_secs`", body = RegisterResponse),
        (status = 400, description = "not a `RegisterRequest` in JSON (`bad_request`)", body = deposito_api::ErrorBody),
        (status = 401, description = "no bearer token, or not the replica token (`unauthorized`)", body = deposito_api::ErrorBody),
        (status = 503, description = "the catalog cannot answer now (`catalog_error`)", body = deposito_api::ErrorBody)),
    security(("bearer" = [])))]
async fn register(
    State(registry): State<Registry>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<Json<RegisterResponse>, GatewayError> {
    let Json(beat) = body.map_err(|e| GatewayError::BadRequest(e.body_text()))?;
    let http = beat.url.starts_with("http://") || beat.url.starts_with("https://");
    if beat.id.is_empty() || beat.id.chars().count() > 253 || !http {
        return Err(GatewayError::BadRequest(
            "a replica needs an id and an http(s) url".into(),
        ));
    }
    let membership = registry.membership.clone();
    let heartbeat = beat.clone();
    let new = tokio::task::spawn_blocking(move || membership.heartbeat(&heartbeat))
        .await
        .map_err(|e| {
            GatewayError::Catalog(crate::engine::CatalogError::Unavailable(e.to_string()))
        })?
        .map_err(|e| GatewayError::Catalog(e.into()))?;
    if new {
        tracing::info!(replica = %beat.id, url = %beat.url, zone = ?beat.zone, "replica registered");
    }
    Ok(Json(RegisterResponse {
        heartbeat_secs: registry.heartbeat.as_secs().max(1),
    }))
}

/// The registration route, with its own token check.
pub fn router(
    membership: Arc<HeartbeatMembership>,
    heartbeat: Duration,
    replica_token: &str,
) -> Router {
    let token: Arc<str> = Arc::from(replica_token);
    Router::new()
        .route("/v1/replicas/register", post(register))
        .route_layer(axum::middleware::from_fn_with_state(
            token,
            crate::gateway::auth::require_token,
        ))
        .with_state(Registry {
            membership,
            heartbeat,
        })
}
