//! `/v1/replicas...`: registration and heartbeats from replicas, listing and draining.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use deposito_api::gateway::{PatchReplica, ReplicaList, ReplicaStatus};
use deposito_api::replica::{RegisterRequest, RegisterResponse};

use crate::error::GatewayError;
use crate::reconcile::classify;
use crate::state::Context;

/// Registration and heartbeat of a replica (replica token).
#[utoipa::path(post, path = "/v1/replicas/register", request_body = RegisterRequest,
    responses((status = 200, body = RegisterResponse), (status = 401, body = deposito_api::ErrorBody)))]
pub async fn register(
    State(ctx): State<Arc<Context>>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<Json<RegisterResponse>, GatewayError> {
    let Json(beat) = body.map_err(|e| GatewayError::BadRequest(e.body_text()))?;
    if beat.id.is_empty() || beat.id.len() > 253 || !beat.url.starts_with("http") {
        return Err(GatewayError::BadRequest(
            "a replica needs an id and an http(s) url".into(),
        ));
    }
    let catalog_beat = beat.clone();
    let membership_ctx = ctx.clone();
    let new = ctx
        .catalog
        .run(move |_| membership_ctx.membership.heartbeat(&catalog_beat))
        .await?;
    if new {
        tracing::info!(replica = %beat.id, url = %beat.url, zone = ?beat.zone, "replica registered");
        ctx.wake.notify_one();
    }
    Ok(Json(RegisterResponse {
        heartbeat_secs: ctx.settings.heartbeat.as_secs().max(1),
    }))
}

/// Every known replica and its health.
#[utoipa::path(get, path = "/v1/replicas", responses((status = 200, body = ReplicaList)))]
pub async fn list_replicas(State(ctx): State<Arc<Context>>) -> Json<ReplicaList> {
    let items = ctx
        .membership
        .snapshot()
        .into_iter()
        .map(|m| ReplicaStatus {
            health: classify(&m, true, &ctx).as_str().to_string(),
            id: m.id,
            url: m.url,
            zone: m.zone,
            draining: m.draining,
            free_bytes: m.free_bytes,
            capacity_bytes: m.capacity_bytes,
            objects: m.objects,
            last_seen_secs_ago: m.since_seen.as_secs(),
        })
        .collect();
    Json(ReplicaList { items })
}

/// Marks a replica draining: it gets no new copies and its copies move elsewhere.
#[utoipa::path(patch, path = "/v1/replicas/{id}", request_body = PatchReplica,
    responses((status = 200, body = ReplicaList), (status = 404, body = deposito_api::ErrorBody)))]
pub async fn patch_replica(
    State(ctx): State<Arc<Context>>,
    Path(id): Path<String>,
    body: Result<Json<PatchReplica>, JsonRejection>,
) -> Result<Json<ReplicaList>, GatewayError> {
    let Json(patch) = body.map_err(|e| GatewayError::BadRequest(e.body_text()))?;
    let (inner, lookup) = (ctx.clone(), id.clone());
    let found = ctx
        .catalog
        .run(move |_| inner.membership.set_draining(&lookup, patch.draining))
        .await?;
    if !found {
        return Err(GatewayError::NotFound(format!("replica {id}")));
    }
    ctx.wake.notify_one();
    let Json(list) = list_replicas(State(ctx)).await;
    Ok(Json(ReplicaList {
        items: list.items.into_iter().filter(|r| r.id == id).collect(),
    }))
}
