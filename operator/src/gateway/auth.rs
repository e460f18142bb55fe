//! Bearer-token checks: clients use the client token, replicas the replica token.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use deposito_api::constant_time_eq;

use super::GatewayState;
use crate::error::GatewayError;

fn check(request: &Request, token: &str) -> Result<(), GatewayError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(GatewayError::Unauthorized)?;
    if constant_time_eq(presented.trim().as_bytes(), token.as_bytes()) {
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

/// Middleware for the client API.
pub async fn require_client_token(
    State(gw): State<GatewayState>,
    request: Request,
    next: Next,
) -> Result<Response, GatewayError> {
    authorize(request, &gw.client_token, next).await
}

/// Middleware for routes that take another token (local mode's replica registration).
pub async fn require_token(
    State(token): State<std::sync::Arc<str>>,
    request: Request,
    next: Next,
) -> Result<Response, GatewayError> {
    authorize(request, &token, next).await
}

/// Declares the bearer scheme in the OpenAPI document.
pub struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
