//! `/v1/replicas...`: listing replicas with their health, and draining.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use deposito_api::gateway::{PatchReplica, ReplicaList, ReplicaStatus};

use super::GatewayState;
use crate::engine::Capacity;
use crate::gateway::error::GatewayError;

/// Every known replica and its health.
#[utoipa::path(get, path = "/v1/replicas",
    responses((status = 200, description = "every known replica", body = ReplicaList)))]
pub async fn list_replicas(
    State(gw): State<GatewayState>,
) -> Result<Json<ReplicaList>, GatewayError> {
    // Membership as it is now (a drain just set shows at once), health as last classified.
    let members = gw.membership.members()?;
    let views = gw.replicas.current();
    let items = members
        .iter()
        .map(|m| {
            let view = views.replicas.iter().find(|v| v.id == m.id);
            let health = match view {
                Some(v) if v.health == crate::plan::Health::Live && v.full => "Full",
                Some(v) => v.health.as_str(),
                None => "Unreachable",
            };
            let capacity = m
                .capacity
                .or_else(|| gw.index.info(&m.id).as_ref().map(Capacity::of))
                .unwrap_or_default();
            ReplicaStatus {
                health: health.to_string(),
                id: m.id.clone(),
                url: m.url.clone(),
                zone: m.zone.clone(),
                draining: m.draining,
                free_bytes: capacity.free_bytes,
                capacity_bytes: capacity.capacity_bytes,
                objects: capacity.objects,
                trash_bytes: capacity.trash_bytes,
                trash_objects: capacity.trash_objects,
                stored_bytes: gw.index.ready_bytes(&m.id),
                last_seen_secs_ago: m.down_for.as_secs(),
            }
        })
        .collect();
    Ok(Json(ReplicaList { items }))
}

/// Marks a replica draining: it gets no new copies and its copies move elsewhere.
#[utoipa::path(patch, path = "/v1/replicas/{id}", request_body = PatchReplica,
    params(("id" = String, Path, description = "replica id, as `GET /v1/replicas` lists it")),
    responses((status = 200, description = "the replica, now draining or not", body = ReplicaList),
        (status = 400, description = "a body that is not a `PatchReplica` in JSON with \
            `Content-Type: application/json` (`bad_request`)", body = deposito_api::ErrorBody),
        (status = 404, description = "no such replica (`not_found`)", body = deposito_api::ErrorBody),
        (status = 501, description = "kube mode: drain a replica pod with its annotation \
            (`unsupported`)", body = deposito_api::ErrorBody)))]
pub async fn patch_replica(
    State(gw): State<GatewayState>,
    Path(id): Path<String>,
    body: Result<Json<PatchReplica>, JsonRejection>,
) -> Result<Json<ReplicaList>, GatewayError> {
    let Json(patch) = body.map_err(|e| GatewayError::BadRequest(e.body_text()))?;
    let found = gw.membership.set_draining(&id, patch.draining).await?;
    if !found {
        return Err(GatewayError::NotFound(format!("replica {id}")));
    }
    let Json(list) = list_replicas(State(gw)).await?;
    Ok(Json(ReplicaList {
        items: list.items.into_iter().filter(|r| r.id == id).collect(),
    }))
}
