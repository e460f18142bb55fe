//! The HTTP API: routes, bearer-token authentication, request metrics, OpenAPI.

mod admin;
mod body;
pub mod limits;
mod objects;
pub mod serve;
mod verified;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use tower_http::trace::TraceLayer;
use utoipa::{Modify, OpenApi};

use crate::app::AppState;
use crate::error::Error;

pub use admin::{DEFAULT_PAGE, MAX_PAGE};

/// A listener whose accepted connections have TCP_NODELAY set. Without it, a small response
/// on a kept-alive connection waits for the peer's delayed ACK (about 40 ms on Linux), which
/// caps small requests at a few dozen per second per connection. The servers' own
/// connection loop ([`serve`]) sets it on every accepted socket the same way.
pub fn nodelay(listener: tokio::net::TcpListener) -> NodelayListener {
    use axum::serve::ListenerExt;
    listener.tap_io(set_nodelay)
}

/// The listener [`nodelay`] returns.
pub type NodelayListener =
    axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)>;

fn set_nodelay(tcp: &mut tokio::net::TcpStream) {
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::warn!(%err, "cannot set TCP_NODELAY");
    }
}

/// The OpenAPI description of the replica API.
#[derive(OpenApi)]
#[openapi(
    info(title = "deposito-replica", description = "Deposito storage replica API"),
    paths(
        objects::put_object,
        objects::get_object,
        objects::head_object,
        objects::delete_object,
        objects::pull_object,
        objects::trash_object,
        objects::restore_object,
        objects::fetch_object,
        admin::inventory,
        admin::inventory_changes,
        admin::scrub_status,
        admin::scrub_now,
        admin::info,
        admin::healthz,
        admin::readyz,
        admin::metrics,
    ),
    components(schemas(
        deposito_api::replica::ObjectInfo,
        deposito_api::replica::ObjectState,
        deposito_api::replica::InventoryPage,
        deposito_api::replica::ChangePage,
        deposito_api::replica::ObjectChange,
        deposito_api::replica::PullRequest,
        deposito_api::replica::FetchRequest,
        deposito_api::replica::ScrubStatus,
        deposito_api::replica::RegisterRequest,
        deposito_api::ErrorBody,
    )),
    modifiers(&ReplicaContract)
)]
pub struct ApiDoc;

/// The bearer scheme, the path parameters with the name rules as schema constraints, and the
/// `400` and `401` answers the routes share ([`deposito_api::openapi::complete`]).
struct ReplicaContract;

impl Modify for ReplicaContract {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        deposito_api::openapi::complete(openapi);
    }
}

/// Requires the replica token on every `/v1/*` route.
async fn auth(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/v1/") || req.uri().path() == "/v1" {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| app.token.accepts(t.trim().as_bytes()));
        if !ok {
            // Read the body first: a client still sending would get a reset, not the 401.
            objects::drain(&mut req.into_body().into_data_stream()).await;
            return Error::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// Counts answered requests by method and status.
async fn count_requests(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let resp = next.run(req).await;
    app.metrics.observe_request(&method, resp.status().as_u16());
    resp
}

async fn not_found() -> Error {
    Error::NotFound
}

/// The class of a replica request ([`limits::RouteClass`]): object uploads and downloads
/// stream; pulls and fetches (a copy from a peer or a URL) and the inventory long poll outlast
/// the deadline; everything else is bounded.
pub fn classify(method: &axum::http::Method, path: &str) -> limits::RouteClass {
    use axum::http::Method;
    use limits::RouteClass;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::PUT, ["v1", "objects", _, _]) | (&Method::GET, ["v1", "objects", _, _, _]) => {
            RouteClass::Stream
        }
        (&Method::POST, ["v1", "objects", _, _, _, "pull"] | ["v1", "objects", _, _, "fetch"])
        | (&Method::GET, ["v1", "inventory", "changes"]) => RouteClass::Long,
        _ => RouteClass::Bounded,
    }
}

/// The replica's router.
pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/v1/objects/{ns}/{name}", put(objects::put_object))
        .route(
            "/v1/objects/{ns}/{name}/{sha256}",
            get(objects::get_object)
                .head(objects::head_object)
                .delete(objects::delete_object),
        )
        .route(
            "/v1/objects/{ns}/{name}/{sha256}/pull",
            post(objects::pull_object),
        )
        .route(
            "/v1/objects/{ns}/{name}/{sha256}/trash",
            post(objects::trash_object),
        )
        .route(
            "/v1/objects/{ns}/{name}/{sha256}/restore",
            post(objects::restore_object),
        )
        .route("/v1/objects/{ns}/{name}/fetch", post(objects::fetch_object))
        .route("/v1/inventory", get(admin::inventory))
        .route("/v1/inventory/changes", get(admin::inventory_changes))
        .route("/v1/scrub", get(admin::scrub_status).post(admin::scrub_now))
        .route("/v1/info", get(admin::info))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(admin::metrics))
        .route("/openapi.json", get(admin::openapi))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), auth))
        .layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .layer(DefaultBodyLimit::disable())
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_tcp_nodelay() {
        use axum::serve::Listener;
        let raw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = raw.local_addr().unwrap();
        let mut listener = nodelay(raw);
        let client = tokio::spawn(tokio::net::TcpStream::connect(addr));
        let (stream, _) = listener.accept().await;
        assert!(stream.nodelay().unwrap(), "TCP_NODELAY on the server side");
        drop(client.await.unwrap().unwrap());
    }

    #[test]
    fn openapi_lists_the_object_routes() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/v1/objects/{ns}/{name}",
            "/v1/objects/{ns}/{name}/{sha256}",
            "/v1/objects/{ns}/{name}/{sha256}/pull",
            "/v1/inventory",
            "/v1/scrub",
        ] {
            assert!(paths.contains_key(p), "{p}");
        }
        assert!(doc["components"]["schemas"]["ObjectInfo"].is_object());
    }

    /// Every path variable is declared with its rule's pattern, and the patterns written as
    /// literals in attributes are the shared constants.
    #[test]
    fn openapi_declares_the_name_rules_on_every_path_parameter() {
        use deposito_api::openapi::{
            FILE_NAME_PATTERN, HTTP_URL_PATTERN, NAMESPACE_PATTERN, SHA256_ANY_CASE_PATTERN,
            SHA256_PATTERN,
        };
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for variable in deposito_api::openapi::path_variables(path) {
                    let param = op["parameters"]
                        .as_array()
                        .and_then(|ps| {
                            ps.iter()
                                .find(|p| p["name"] == variable && p["in"] == "path")
                        })
                        .unwrap_or_else(|| panic!("{method} {path}: {variable} undeclared"));
                    let want = match variable {
                        "ns" => NAMESPACE_PATTERN,
                        "name" => FILE_NAME_PATTERN,
                        _ => SHA256_PATTERN,
                    };
                    assert_eq!(
                        param["schema"]["pattern"], want,
                        "{method} {path} {variable}"
                    );
                    assert_eq!(param["required"], true);
                    checked += 1;
                }
            }
        }
        assert!(checked >= 15, "{checked}");
        let put = &doc["paths"]["/v1/objects/{ns}/{name}"]["put"]["parameters"];
        let header = put
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["in"] == "header")
            .unwrap();
        assert_eq!(header["schema"]["pattern"], SHA256_ANY_CASE_PATTERN);
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["FetchRequest"]["properties"]["url"]["pattern"],
            HTTP_URL_PATTERN
        );
        assert_eq!(
            schemas["PullRequest"]["properties"]["source"]["pattern"],
            HTTP_URL_PATTERN
        );
        assert_eq!(
            schemas["FetchRequest"]["properties"]["sha256"]["pattern"],
            SHA256_PATTERN
        );
    }
}
