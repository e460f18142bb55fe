//! Inventory, scrub, info, probes, metrics and the OpenAPI document.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use deposito_api::replica::{ChangePage, InventoryPage, RegisterRequest, ScrubStatus};
use deposito_api::ErrorBody;
use serde::Deserialize;
use tracing::instrument;
use utoipa::OpenApi;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::storage::ObjKey;

/// Default and largest inventory page sizes.
pub const DEFAULT_PAGE: usize = 1000;
pub const MAX_PAGE: usize = 10_000;

/// Query of `GET /v1/inventory`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InventoryQuery {
    /// Cursor from the previous page's `next` (hex).
    #[param(pattern = r"^(?:[0-9a-fA-F]{2})*(?![\s\S])")]
    pub after: Option<String>,
    /// Page size (default 1000, at most 10000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
}

/// One page of the copies held, sorted by (namespace, name, sha256), corrupt ones included.
#[utoipa::path(
    get,
    path = "/v1/inventory",
    params(InventoryQuery),
    responses(
        (status = 200, description = "one page", body = InventoryPage),
        (status = 400, description = "`limit` out of range or `after` not hex (`bad_request`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[instrument(skip(app))]
pub async fn inventory(
    State(app): State<AppState>,
    q: Result<Query<InventoryQuery>, QueryRejection>,
) -> Result<Json<InventoryPage>> {
    let Query(q) = q.map_err(|e| Error::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(Error::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let after = q
        .after
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(ObjKey::from_cursor)
        .transpose()?;
    let page = app.store.page(after.as_ref(), limit);
    Ok(Json(InventoryPage {
        items: page.items,
        next: page.next.map(|k| k.cursor()),
        epoch: page.epoch,
        seq: page.seq,
    }))
}

/// Longest long poll of the change feed.
pub const MAX_CHANGES_WAIT_SECS: u64 = 60;

/// Query of `GET /v1/inventory/changes`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    /// The epoch of the listing or of the previous change page.
    pub epoch: String,
    /// The cursor: the `seq` of the listing's first page or of the previous change page.
    #[param(minimum = 0, maximum = 9007199254740991_u64)]
    pub since: u64,
    /// Most changes returned (default 1000, at most 10000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
    /// Seconds to wait for a first change (a long poll; default 0, at most 60).
    #[param(minimum = 0, maximum = 60)]
    pub wait: Option<u64>,
}

/// The inventory changes after a cursor, oldest first; a long poll with `wait`.
#[utoipa::path(
    get,
    path = "/v1/inventory/changes",
    params(ChangesQuery),
    responses(
        (status = 200, description = "the changes, oldest first (none when `wait` ran out)", body = ChangePage),
        (status = 400, description = "a missing `epoch` or `since`, or `limit` or `wait` out of range (`bad_request`)", body = ErrorBody),
        (status = 410, description = "cursor_expired: the replica restarted or the cursor is too old; list the inventory again", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[instrument(skip(app))]
pub async fn inventory_changes(
    State(app): State<AppState>,
    q: Result<Query<ChangesQuery>, QueryRejection>,
) -> Result<Json<ChangePage>> {
    let Query(q) = q.map_err(|e| Error::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(Error::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    if q.since > deposito_api::integers::MAX_EXACT {
        return Err(Error::BadRequest(format!(
            "since must be at most {}",
            deposito_api::integers::MAX_EXACT
        )));
    }
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_CHANGES_WAIT_SECS {
        return Err(Error::BadRequest(format!(
            "wait must be at most {MAX_CHANGES_WAIT_SECS} seconds"
        )));
    }
    let wait = std::time::Duration::from_secs(wait);
    Ok(Json(
        app.store.changes(&q.epoch, q.since, limit, wait).await?,
    ))
}

/// Progress of the scrubber.
#[utoipa::path(get, path = "/v1/scrub", responses((status = 200, body = ScrubStatus)), security(("bearer" = [])))]
pub async fn scrub_status(State(app): State<AppState>) -> Json<ScrubStatus> {
    Json(app.scrubber.status(&app.store))
}

/// Start a scrub pass now.
#[utoipa::path(post, path = "/v1/scrub", responses((status = 202, body = ScrubStatus)), security(("bearer" = [])))]
#[instrument(skip(app))]
pub async fn scrub_now(State(app): State<AppState>) -> (StatusCode, Json<ScrubStatus>) {
    app.scrubber.trigger();
    (StatusCode::ACCEPTED, Json(app.scrubber.status(&app.store)))
}

/// The replica as it describes itself to the operator.
#[utoipa::path(get, path = "/v1/info", responses((status = 200, body = RegisterRequest)), security(("bearer" = [])))]
pub async fn info(State(app): State<AppState>) -> Json<RegisterRequest> {
    Json(app.describe().await)
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "{\"status\":\"ok\"}")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the data dir is usable. A full disk (free space below `--min-free-bytes` even
/// counting the trash as reclaimable) is still ready: the replica refuses new copies (507)
/// but serves the ones it holds, so it must not look dead to Kubernetes or the operator.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "{\"status\":\"ready\",\"full\":false}; `full` is true when new copies are refused for lack of space"),
    (status = 503, body = ErrorBody),
))]
pub async fn readyz(State(app): State<AppState>) -> Result<Json<serde_json::Value>> {
    let readiness = app.store.readiness().await?;
    Ok(Json(
        serde_json::json!({"status": "ready", "full": readiness.full}),
    ))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "OpenMetrics text",
    content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub async fn metrics(State(app): State<AppState>) -> Response {
    let full = app.store.readiness().await.is_ok_and(|r| r.full);
    app.metrics
        .refresh(&app.store, app.active_transfers(), full);
    app.metrics.refresh_scrub(&app.scrubber.status(&app.store));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

/// The OpenAPI document of this API.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(super::ApiDoc::openapi())
}
