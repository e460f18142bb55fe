//! A namespace's settings through the client API: its default lifecycle, which governs the
//! files of the namespace that have none of their own (`GET` and `PUT
//! /v1/namespaces/{namespace}/lifecycle`, `deposito namespace-lifecycle`). Local mode keeps it
//! in its catalog; kube mode in the namespace's ConfigMap `deposito-bucket`.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::Json;
use deposito_api::gateway::NamespaceLifecycle;
use deposito_api::names::validate_namespace;
use tracing::instrument;

use super::error::GatewayError;
use super::files::{lifecycle_error, parse_lifecycle};
use super::GatewayState;

type NamespacePath = Result<Path<String>, PathRejection>;

fn namespace_of(path: NamespacePath) -> Result<String, GatewayError> {
    let Path(namespace) = path.map_err(|e| GatewayError::BadRequest(e.body_text()))?;
    validate_namespace(&namespace)?;
    Ok(namespace)
}

/// The namespace's default lifecycle.
#[utoipa::path(get, path = "/v1/namespaces/{namespace}/lifecycle",
    responses((status = 200, description = "the namespace's default lifecycle (no `lifecycle` \
        when it has none)", body = NamespaceLifecycle)))]
#[instrument(skip(ctx))]
pub async fn get_lifecycle(
    State(ctx): State<GatewayState>,
    path: NamespacePath,
) -> Result<Json<NamespaceLifecycle>, GatewayError> {
    let namespace = namespace_of(path)?;
    let lifecycle = ctx.files.namespace_lifecycle(&namespace).await?;
    Ok(Json(NamespaceLifecycle {
        lifecycle: lifecycle.map(|l| l.to_string()),
    }))
}

/// Sets (`none`: removes) the namespace's default lifecycle; every file of the namespace
/// without a lifecycle of its own follows it from now on, its age counted from its content's
/// acknowledgement as always. A retention lock still holds: the default never lowers or
/// expires a retained file before the lock's end.
#[utoipa::path(put, path = "/v1/namespaces/{namespace}/lifecycle", request_body = NamespaceLifecycle,
    responses((status = 200, description = "the namespace's default lifecycle now", body = NamespaceLifecycle),
        (status = 400, description = "`invalid_lifecycle`, or a body that is not a \
            `NamespaceLifecycle` naming `lifecycle`, in JSON with `Content-Type: \
            application/json` (`bad_request`)", body = deposito_api::ErrorBody)))]
#[instrument(skip(ctx, body))]
pub async fn put_lifecycle(
    State(ctx): State<GatewayState>,
    path: NamespacePath,
    body: Result<Json<NamespaceLifecycle>, JsonRejection>,
) -> Result<Json<NamespaceLifecycle>, GatewayError> {
    let namespace = namespace_of(path)?;
    let Json(body) = body.map_err(|e| GatewayError::BadRequest(e.body_text()))?;
    let Some(spec) = body.lifecycle else {
        return Err(GatewayError::BadRequest(
            "a NamespaceLifecycle names lifecycle (`none` removes it)".into(),
        ));
    };
    let lifecycle = parse_lifecycle(&spec)?;
    ctx.files
        .set_namespace_lifecycle(&namespace, lifecycle.clone())
        .await
        .map_err(lifecycle_error)?;
    tracing::info!(%namespace, lifecycle = %spec, "namespace lifecycle set");
    Ok(Json(NamespaceLifecycle {
        lifecycle: lifecycle.map(|l| l.to_string()),
    }))
}
