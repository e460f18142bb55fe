//! Bearer-token checks: clients use client tokens, each with its grant (see [`super::access`]);
//! replicas use the replica token.

use axum::extract::{RawPathParams, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use deposito_util::token::tokens_equal;

use super::GatewayState;
use crate::gateway::error::GatewayError;

/// The bearer token of a request, if it has one.
fn presented(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn check(request: &Request, token: &str) -> Result<(), GatewayError> {
    let presented = presented(request).ok_or(GatewayError::Unauthorized)?;
    if tokens_equal(presented.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(GatewayError::Unauthorized)
    }
}

async fn authorize(request: Request, token: &str, next: Next) -> Result<Response, GatewayError> {
    if let Err(err) = check(&request, token) {
        // Read the body first: a client still sending would get a reset, not the 401.
        super::transfer::drain(request.into_body().into_data_stream()).await;
        return Err(err);
    }
    Ok(next.run(request).await)
}

/// Middleware for the client API: a known client token (else 401) whose grant reaches the
/// route's namespace, for writing unless the method is GET or HEAD (else 403).
pub async fn require_client_token(
    State(gw): State<GatewayState>,
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Result<Response, GatewayError> {
    let grant = presented(&request).and_then(|token| gw.tokens.grant(token));
    let refusal = match grant {
        None => Some(GatewayError::Unauthorized),
        Some(grant) => {
            let namespace = params
                .iter()
                .find(|(key, _)| *key == "namespace")
                .map(|(_, value)| value);
            let write = !matches!(*request.method(), Method::GET | Method::HEAD);
            (!grant.allows(namespace, write))
                .then(|| GatewayError::Forbidden(grant.refusal(namespace, write)))
        }
    };
    match refusal {
        None => Ok(next.run(request).await),
        Some(err) => {
            // Read the body first: a client still sending would get a reset, not the answer.
            super::transfer::drain(request.into_body().into_data_stream()).await;
            Err(err)
        }
    }
}

/// Middleware for routes that take another token (local mode's replica registration).
pub async fn require_token(
    State(token): State<std::sync::Arc<str>>,
    request: Request,
    next: Next,
) -> Result<Response, GatewayError> {
    authorize(request, &token, next).await
}

/// Completes the OpenAPI document with what every client route shares: the bearer scheme, the
/// path parameters with the name rules as schema constraints, and the answers every route
/// can give: 400 for a name that breaks the rules, 401 without a known token, 403 outside the
/// token's scope, 503 while the catalog cannot answer.
pub struct ClientContract;

impl utoipa::Modify for ClientContract {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use deposito_api::openapi as contract;
        contract::complete(openapi);
        contract::for_each_operation(openapi, |_, operation| {
            contract::add_error(
                operation,
                "403",
                "the token's scope does not reach this namespace or route, or it is read-only \
                 (`forbidden`)",
            );
            contract::add_error(
                operation,
                "503",
                "the catalog cannot answer now (`catalog_error`, `not_ready`), or no replica \
                 can take a deposit (`no_replica`); retry",
            );
        });
    }
}
