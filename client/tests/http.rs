//! HTTP-layer tests against a tiny in-test axum server that follows `docs/api.md`.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, put};
use axum::{Json, Router};
use deposito_api::gateway::{Condition, FileStatus, Phase};
use deposito_api::sha256_hex;
use deposito_client::commands::deposit::{deposit, Plan};
use deposito_client::commands::files::{rm, set_replicas};
use deposito_client::commands::retrieve::{retrieve, Dest};
use deposito_client::commands::Ctx;
use deposito_client::Error;

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}

fn ctx(base: &str) -> Ctx {
    Ctx::new(base, "tok", "default", None).unwrap()
}

fn fstatus(name: &str, replicas: u32, ready: u32, holders: u32, phase: Phase) -> FileStatus {
    FileStatus {
        namespace: "default".into(),
        name: name.into(),
        replicas,
        ready_replicas: ready,
        phase,
        sha256: String::new(),
        size: 0,
        holders: (0..holders).map(|i| format!("r{i}")).collect(),
        generation: 1,
        observed_generation: 1,
        conditions: vec![],
        lifecycle: None,
        retain_until: None,
    }
}

fn err(status: StatusCode, code: &str, msg: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"code": code, "error": msg})),
    )
        .into_response()
}

#[derive(Default)]
struct Recorded {
    put_headers: Option<HeaderMap>,
    put_query: HashMap<String, String>,
    put_body: Vec<u8>,
    trailer_sha: Option<String>,
    status_queries: Vec<String>,
    patch_body: Option<serde_json::Value>,
}

type Shared = Arc<Mutex<Recorded>>;

fn test_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn plan(path: &std::path::Path, name: &str, replicas: u32, timeout: u64) -> Plan {
    Plan {
        path: path.to_path_buf(),
        name: name.into(),
        replicas,
        ack: deposito_api::gateway::Ack::All,
        wait: true,
        timeout: Duration::from_secs(timeout),
        lifecycle: None,
        retain_until: None,
    }
}

#[tokio::test]
async fn deposit_sends_exact_bytes_then_their_digest_as_a_trailer_then_waits() {
    let rec: Shared = Arc::default();
    let polls = Arc::new(AtomicUsize::new(0));
    let router = Router::new()
        .route(
            "/v1/files/{ns}/{name}",
            put(
                |State((rec, _)): State<(Shared, Arc<AtomicUsize>)>,
                 Path((_ns, name)): Path<(String, String)>,
                 Query(q): Query<HashMap<String, String>>,
                 headers: HeaderMap,
                 body: axum::body::Body| async move {
                    use http_body_util::BodyExt;
                    let collected = body.collect().await.unwrap();
                    let trailers = collected.trailers().cloned().expect("a trailer");
                    let sha = trailers["x-deposito-sha256"].to_str().unwrap().to_string();
                    let body = collected.to_bytes();
                    let mut r = rec.lock().unwrap();
                    r.put_headers = Some(headers);
                    r.put_query = q;
                    r.put_body = body.to_vec();
                    r.trailer_sha = Some(sha.clone());
                    let mut st = fstatus(&name, 2, 0, 0, Phase::Pending);
                    st.sha256 = sha;
                    st.size = body.len() as u64;
                    (StatusCode::CREATED, Json(st))
                },
            )
            .head(|| async { StatusCode::NOT_FOUND }),
        )
        .route(
            "/v1/files/{ns}/{name}/status",
            get(
                |State((rec, polls)): State<(Shared, Arc<AtomicUsize>)>,
                 Path((_ns, name)): Path<(String, String)>,
                 RawQuery(q): RawQuery| async move {
                    let mut r = rec.lock().unwrap();
                    r.status_queries.push(q.unwrap_or_default());
                    let n = polls.fetch_add(1, Ordering::SeqCst);
                    let mut st = if n < 2 {
                        fstatus(&name, 2, 1, 1, Phase::Replicating)
                    } else {
                        fstatus(&name, 2, 2, 2, Phase::Ready)
                    };
                    st.sha256 = sha256_hex(&r.put_body);
                    st.size = r.put_body.len() as u64;
                    Json(st)
                },
            ),
        )
        .layer(DefaultBodyLimit::disable())
        .with_state((rec.clone(), polls.clone()));
    let base = serve(router).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.bin");
    let data = test_bytes(3 * 1024 * 1024 + 17);
    std::fs::write(&path, &data).unwrap();
    let sha = sha256_hex(&data);

    let line = deposit(&ctx(&base), &plan(&path, "data.bin", 2, 60))
        .await
        .unwrap();
    assert_eq!(
        line,
        format!(
            "deposited data.bin: 2/2 copies, {} bytes, sha256 {sha}",
            data.len()
        )
    );

    let r = rec.lock().unwrap();
    assert!(r.put_body == data, "uploaded bytes differ");
    let h = r.put_headers.as_ref().unwrap();
    // One pass over the file: the digest follows the bytes as a trailer, the length is
    // declared in its own header (a chunked body has no Content-Length).
    assert_eq!(r.trailer_sha.as_deref(), Some(sha.as_str()));
    assert!(h.get("x-deposito-sha256").is_none());
    assert_eq!(h["trailer"], "x-deposito-sha256");
    assert_eq!(h["authorization"], "Bearer tok");
    assert_eq!(
        h["x-deposito-content-length"],
        data.len().to_string().as_str()
    );
    assert!(h.get("content-length").is_none());
    assert_eq!(r.put_query.get("replicas").map(String::as_str), Some("2"));
    assert_eq!(r.put_query.get("ack").map(String::as_str), Some("all"));
    // Stopped on the first converged answer: two Replicating polls, then Ready.
    assert_eq!(polls.load(Ordering::SeqCst), 3);
    for q in &r.status_queries {
        assert!(q.contains("wait=converged"), "{q}");
        assert!(q.contains("timeout="), "{q}");
    }
}

#[tokio::test]
async fn wait_timeout_reports_degraded_status() {
    fn degraded(name: &str) -> FileStatus {
        let mut st = fstatus(name, 5, 3, 3, Phase::Degraded);
        st.sha256 = sha256_hex(b"x");
        st.size = 1;
        st.conditions.push(Condition {
            type_: "Degraded".into(),
            status: "True".into(),
            reason: "NotEnoughReplicas".into(),
            message: "wants 5 copies, only 3 replicas available".into(),
        });
        st
    }
    let router = Router::new()
        .route(
            "/v1/files/{ns}/{name}",
            // The body is read before the answer, as the gateway does: a 201 while the client
            // is still sending is refused as a protocol error (and would make this test race).
            put(
                |Path((_ns, name)): Path<(String, String)>, _body: Bytes| async move {
                    (StatusCode::CREATED, Json(degraded(&name)))
                },
            )
            .head(|| async { StatusCode::NOT_FOUND }),
        )
        .route(
            "/v1/files/{ns}/{name}/status",
            get(|Path((_ns, name)): Path<(String, String)>| async move { Json(degraded(&name)) }),
        );
    let base = serve(router).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x");
    std::fs::write(&path, b"x").unwrap();
    let e = deposit(&ctx(&base), &plan(&path, "x", 5, 1))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e:?}");
    assert_eq!(
        e.one_line(),
        "timed out after 1s waiting for x to converge to 5 copies: phase Degraded, 3/5 copies ready; wants 5 copies, only 3 replicas available"
    );
}

#[tokio::test]
async fn gateway_json_errors_become_one_line_messages() {
    let router = Router::new()
        .route(
            "/v1/files/{ns}/{name}",
            patch(|| async {
                err(
                    StatusCode::BAD_REQUEST,
                    "invalid_replicas",
                    "replicas must be\nat least 1",
                )
            }),
        )
        .route(
            "/v1/files/{ns}/{name}/status",
            get(|| async { (StatusCode::BAD_GATEWAY, "upstream\nfailed").into_response() }),
        )
        .route(
            "/v1/files/{ns}",
            get(|| async { err(StatusCode::UNAUTHORIZED, "unauthorized", "bad token") }),
        );
    let base = serve(router).await;
    let c = ctx(&base);
    let e = set_replicas(&c, "f", 3, None).await.unwrap_err();
    assert_eq!(
        e.one_line(),
        "400 invalid_replicas: replicas must be at least 1"
    );
    let e = c.client.status("default", "f", None).await.unwrap_err();
    assert_eq!(e.one_line(), "502 bad_gateway: upstream failed");
    let e = c.client.list("default").await.unwrap_err();
    assert_eq!(e.one_line(), "401 unauthorized: bad token");
    // Local validation happens before anything is sent.
    let e = set_replicas(&c, "a/b", 3, None).await.unwrap_err();
    assert_eq!(e.one_line(), "invalid name 'a/b': name contains '/'");
}

#[tokio::test]
async fn deposit_stops_before_sending_when_token_is_refused() {
    let rec: Shared = Arc::default();
    let router = Router::new()
        .route(
            "/v1/files/{ns}/{name}",
            put(|State(rec): State<Shared>| async move {
                rec.lock().unwrap().put_body = b"called".to_vec();
                err(StatusCode::UNAUTHORIZED, "unauthorized", "bad token")
            })
            .head(|| async { StatusCode::UNAUTHORIZED }),
        )
        .with_state(rec.clone());
    let base = serve(router).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x");
    std::fs::write(&path, b"x").unwrap();
    let e = deposit(&ctx(&base), &plan(&path, "x", 1, 5))
        .await
        .unwrap_err();
    assert!(e.one_line().starts_with("401 unauthorized"), "{e}");
    assert!(rec.lock().unwrap().put_body.is_empty());
}

fn file_router(body: Vec<u8>, sha_header: Option<String>, etag: Option<String>) -> Router {
    Router::new().route(
        "/v1/files/{ns}/{name}",
        get(move || {
            let body = body.clone();
            let sha_header = sha_header.clone();
            let etag = etag.clone();
            async move {
                let mut h = HeaderMap::new();
                if let Some(s) = sha_header {
                    h.insert("x-deposito-sha256", s.parse().unwrap());
                }
                if let Some(e) = etag {
                    h.insert("etag", format!("\"{e}\"").parse().unwrap());
                }
                (h, body)
            }
        }),
    )
}

fn dir_entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn retrieve_detects_digest_mismatch_and_leaves_no_file() {
    let base = serve(file_router(
        b"hello world".to_vec(),
        None,
        Some(sha256_hex(b"something else")),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let e = retrieve(&ctx(&base), "f.txt", &Dest::File(out.clone()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e:?}");
    assert!(e.one_line().starts_with("digest mismatch for f.txt"), "{e}");
    assert!(
        dir_entries(dir.path()).is_empty(),
        "{:?}",
        dir_entries(dir.path())
    );
}

#[tokio::test]
async fn retrieve_writes_verified_file_and_nothing_else() {
    let data = test_bytes(5 * 1024 * 1024 + 3);
    let sha = sha256_hex(&data);
    let base = serve(file_router(
        data.clone(),
        Some(sha.clone()),
        Some(sha.clone()),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.bin");
    std::fs::write(&out, b"old content").unwrap();
    let (n, got) = retrieve(&ctx(&base), "f.bin", &Dest::File(out.clone()))
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(got, sha);
    assert!(std::fs::read(&out).unwrap() == data);
    assert_eq!(dir_entries(dir.path()), vec!["copy.bin".to_string()]);
}

#[tokio::test]
async fn retrieve_404_creates_nothing() {
    let router = Router::new().route(
        "/v1/files/{ns}/{name}",
        get(|| async { err(StatusCode::NOT_FOUND, "not_found", "no file default/f") }),
    );
    let base = serve(router).await;
    let dir = tempfile::tempdir().unwrap();
    let e = retrieve(&ctx(&base), "f", &Dest::File(dir.path().join("f")))
        .await
        .unwrap_err();
    assert_eq!(e.one_line(), "404 not_found: no file default/f");
    assert!(dir_entries(dir.path()).is_empty());
}

#[tokio::test]
async fn rm_waits_until_the_file_is_gone() {
    let polls = Arc::new(AtomicUsize::new(0));
    let router = Router::new()
        .route(
            "/v1/files/{ns}/{name}",
            axum::routing::delete(|Path((_ns, name)): Path<(String, String)>| async move {
                (
                    StatusCode::ACCEPTED,
                    Json(fstatus(&name, 1, 1, 1, Phase::Deleting)),
                )
            }),
        )
        .route(
            "/v1/files/{ns}/{name}/status",
            get(
                |State(polls): State<Arc<AtomicUsize>>,
                 Path((_ns, name)): Path<(String, String)>,
                 Query(q): Query<HashMap<String, String>>| async move {
                    assert_eq!(q.get("wait").map(String::as_str), Some("deleted"));
                    if polls.fetch_add(1, Ordering::SeqCst) == 0 {
                        Json(fstatus(&name, 1, 0, 1, Phase::Deleting)).into_response()
                    } else {
                        err(StatusCode::NOT_FOUND, "not_found", "gone")
                    }
                },
            ),
        )
        .with_state(polls.clone());
    let base = serve(router).await;
    let line = rm(&ctx(&base), "f", Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(line, "deleted f");
    assert_eq!(polls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn set_replicas_patches_and_waits_until_extras_are_trimmed() {
    let rec: Shared = Arc::default();
    let polls = Arc::new(AtomicUsize::new(0));
    let router = Router::new()
        .route(
            "/v1/files/{ns}/{name}",
            patch(
                |State((rec, _)): State<(Shared, Arc<AtomicUsize>)>,
                 Path((_ns, name)): Path<(String, String)>,
                 Json(body): Json<serde_json::Value>| async move {
                    rec.lock().unwrap().patch_body = Some(body);
                    Json(fstatus(&name, 1, 3, 3, Phase::Trimming))
                },
            ),
        )
        .route(
            "/v1/files/{ns}/{name}/status",
            get(
                |State((_, polls)): State<(Shared, Arc<AtomicUsize>)>,
                 Path((_ns, name)): Path<(String, String)>| async move {
                    // Ready with a leftover holder is not converged yet.
                    if polls.fetch_add(1, Ordering::SeqCst) == 0 {
                        Json(fstatus(&name, 1, 1, 2, Phase::Ready))
                    } else {
                        Json(fstatus(&name, 1, 1, 1, Phase::Ready))
                    }
                },
            ),
        )
        .with_state((rec.clone(), polls.clone()));
    let base = serve(router).await;
    let line = set_replicas(&ctx(&base), "f", 1, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(line.starts_with("f: 1/1 copies"), "{line}");
    assert_eq!(polls.load(Ordering::SeqCst), 2);
    assert_eq!(
        rec.lock().unwrap().patch_body,
        Some(serde_json::json!({"replicas": 1}))
    );
}

#[tokio::test]
async fn unreachable_server_is_one_line() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let base = format!("http://{addr}");
    let e = ctx(&base).client.list("default").await.unwrap_err();
    assert_eq!(
        e.one_line(),
        format!("cannot reach server {base}: connection refused")
    );
}

#[tokio::test]
async fn uploads_failing_on_the_server_side_are_retried_with_the_whole_file() {
    // PUT 1 answers 503, PUT 2 answers 502, PUT 3 stores; every PUT must carry the whole file.
    let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let puts = bodies.clone();
    let router = Router::new()
        .route(
            "/v1/files/{ns}/{name}",
            put(move |body: Bytes| {
                let puts = puts.clone();
                async move {
                    let n = {
                        let mut puts = puts.lock().unwrap();
                        puts.push(body.to_vec());
                        puts.len()
                    };
                    match n {
                        1 => err(StatusCode::SERVICE_UNAVAILABLE, "no_replica", "retry"),
                        2 => err(StatusCode::BAD_GATEWAY, "replica_error", "reset"),
                        _ => {
                            let mut st = fstatus("r.bin", 1, 0, 0, Phase::Pending);
                            st.sha256 = sha256_hex(&body);
                            (StatusCode::CREATED, Json(st)).into_response()
                        }
                    }
                }
            })
            .head(|| async { StatusCode::NOT_FOUND }),
        )
        .layer(DefaultBodyLimit::disable());
    let base = serve(router).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.bin");
    let data = test_bytes(300_000);
    std::fs::write(&path, &data).unwrap();
    let mut p = plan(&path, "r.bin", 1, 5);
    p.wait = false;
    let line = deposit(&ctx(&base), &p).await.unwrap();
    assert!(line.starts_with("deposited r.bin"), "{line}");
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 3);
    assert!(
        bodies.iter().all(|b| *b == data),
        "every attempt sent the whole file"
    );
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let router = Router::new().route(
        "/v1/files/{ns}/{name}",
        put(move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                err(StatusCode::BAD_REQUEST, "digest_mismatch", "no")
            }
        })
        .head(|| async { StatusCode::NOT_FOUND }),
    );
    let base = serve(router).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.bin");
    std::fs::write(&path, b"x").unwrap();
    let e = deposit(&ctx(&base), &plan(&path, "x.bin", 1, 5))
        .await
        .unwrap_err();
    assert!(
        e.one_line().starts_with("400 digest_mismatch"),
        "{}",
        e.one_line()
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
}
