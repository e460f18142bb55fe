//! Scoped client tokens (local mode's tokens file): a token gets 403 outside its scope on
//! every route the gateway documents in `/openapi.json`, changes nothing there, and edits of
//! the file take effect without a restart (a broken file leaves the previous tokens in force).
//!
//! Needs the workspace binaries: `cargo build --release --bins`, then
//! `cargo test --release --workspace --test scopes`.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use deposito_e2e::Cluster;
use reqwest::{Method, StatusCode};
use serde_json::Value;

const RO_A: &str = "ro-team-a-0123456789abcdef0123456789";
const RW_A: &str = "rw-team-a-0123456789abcdef0123456789";

async fn send(c: &Cluster, method: Method, path: &str, token: &str) -> (StatusCode, String) {
    let mut req = c
        .http
        .request(method.clone(), format!("{}{path}", c.url()))
        .bearer_auth(token);
    if method == Method::PUT {
        req = req.body("scoped bytes");
    } else if method == Method::PATCH {
        let body = if path.starts_with("/v1/replicas/") {
            r#"{"draining":false}"#
        } else {
            r#"{"replicas":1}"#
        };
        req = req.header("content-type", "application/json").body(body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

/// Waits until `token` gets `want` on the team-a listing (the file is re-read every 2 s).
async fn wait_for(c: &Cluster, token: &str, want: StatusCode) {
    for _ in 0..50 {
        if send(c, Method::GET, "/v1/files/team-a", token).await.0 == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("token {token} never got {want} on GET /v1/files/team-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_get_403_outside_their_scope_on_every_route() {
    let c = Cluster::builder().replicas(2).start().await;
    let tokens_file = c.op_dir.join("tokens");
    std::fs::write(
        &tokens_file,
        format!("# scoped tokens\n{RO_A} team-a read-only\n{RW_A} team-a read-write\n"),
    )
    .unwrap();
    wait_for(&c, RW_A, StatusCode::OK).await;
    for ns in ["team-a", "team-b"] {
        let (status, body) = send(
            &c,
            Method::PUT,
            &format!("/v1/files/{ns}/seed.txt"),
            &c.token,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    let doc: Value = c
        .http
        .get(format!("{}/openapi.json", c.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let replica = c.replica(1).id.clone();
    let mut walked = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        // Replica registration takes the replica token, not a client token.
        if template.ends_with("/register") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let Ok(method) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            if !matches!(
                method,
                Method::GET
                    | Method::HEAD
                    | Method::PUT
                    | Method::PATCH
                    | Method::DELETE
                    | Method::POST
            ) {
                continue;
            }
            let secured = !matches!(
                template.as_str(),
                "/healthz" | "/readyz" | "/metrics" | "/openapi.json"
            );
            if !secured {
                continue;
            }
            let write = !matches!(method, Method::GET | Method::HEAD);
            let has_ns = template.contains("{namespace}");
            let path = |ns: &str| {
                template
                    .replace("{namespace}", ns)
                    .replace("{name}", "walk.txt")
                    .replace("{id}", &replica)
            };
            // (token, namespace, allowed)
            let mut cases = vec![(RO_A, "team-b", false), (RW_A, "team-b", false)];
            if has_ns {
                cases.push((RO_A, "team-a", !write));
                cases.push((RW_A, "team-a", true));
            } else {
                cases.push((RO_A, "-", false));
                cases.push((RW_A, "-", false));
            }
            for (token, ns, allowed) in cases {
                let p = path(ns);
                let (status, body) = send(&c, method.clone(), &p, token).await;
                if allowed {
                    assert!(
                        status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                        "{method} {p} with a token scoped to team-a: {status} {body}"
                    );
                } else {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{method} {p}: {body}");
                    if method != Method::HEAD {
                        let err: Value = serde_json::from_str(&body).expect("JSON error body");
                        assert_eq!(err["code"], "forbidden", "{method} {p}: {body}");
                    }
                }
            }
            let declared = &item[method.as_str().to_lowercase()]["responses"];
            for code in ["401", "403"] {
                assert!(
                    declared.get(code).is_some(),
                    "{method} {template} does not declare {code} in /openapi.json"
                );
            }
            walked.push(format!("{method} {template}"));
        }
    }
    for route in [
        "PUT /v1/files/{namespace}/{name}",
        "GET /v1/files/{namespace}/{name}",
        "HEAD /v1/files/{namespace}/{name}",
        "PATCH /v1/files/{namespace}/{name}",
        "DELETE /v1/files/{namespace}/{name}",
        "GET /v1/files/{namespace}",
        "GET /v1/files/{namespace}/{name}/status",
        "GET /v1/replicas",
        "PATCH /v1/replicas/{id}",
    ] {
        assert!(
            walked.iter().any(|w| w == route),
            "{route} not walked: {walked:?}"
        );
    }

    // Nothing outside the scope changed: team-b holds its seed and nothing else, and the
    // replica is not draining.
    let (status, listing) = send(&c, Method::GET, "/v1/files/team-b", &c.token).await;
    assert_eq!(status, StatusCode::OK);
    let listing: Value = serde_json::from_str(&listing).unwrap();
    let names: Vec<&str> = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["seed.txt"], "{listing}");
    let (status, body) = send(&c, Method::GET, "/v1/files/team-b/seed.txt", &c.token).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "scoped bytes"));

    // A broken file leaves the tokens in force; a revocation takes effect without a restart.
    std::fs::write(&tokens_file, "not a valid line\n").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        send(&c, Method::GET, "/v1/files/team-a", RO_A).await.0,
        StatusCode::OK
    );
    std::fs::write(&tokens_file, format!("{RW_A} team-a,team-b read-write\n")).unwrap();
    wait_for(&c, RO_A, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        send(&c, Method::GET, "/v1/files/team-b", RW_A).await.0,
        StatusCode::OK
    );
    // The generated token keeps full access throughout.
    assert_eq!(
        send(&c, Method::GET, "/v1/replicas", &c.token).await.0,
        StatusCode::OK
    );
}
