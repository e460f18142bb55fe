//! The binary (refuses to start without a token, serves, stops on SIGTERM) and registration
//! with a stand-in operator.

#![allow(clippy::unwrap_used)] // the helpers outside #[test] fns unwrap too

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use common::*;
use deposito_api::replica::{RegisterRequest, RegisterResponse};

/// (Authorization header, body) of each registration received.
type Seen = Arc<Mutex<Vec<(Option<String>, RegisterRequest)>>>;

const BIN: &str = env!("CARGO_BIN_EXE_deposito-replica");

#[test]
fn refuses_to_start_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .env_remove("DEPOSITO_TOKEN")
        .env_remove("DEPOSITO_TOKEN_FILE")
        .env_remove("DEPOSITO_REPLICA_TOKEN")
        .env_remove("DEPOSITO_REPLICA_TOKEN_FILE")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("DEPOSITO_REPLICA_TOKEN"), "{err}");
}

/// The client's variable is never the replica's token: alone, it stops the start-up with a
/// one-line error naming the replica's variables; beside the replica's own variable it is
/// ignored, and a short replica variable is warned about.
#[tokio::test(flavor = "multi_thread")]
async fn the_clients_token_variable_is_never_taken() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .env_remove("DEPOSITO_TOKEN_FILE")
        .env_remove("DEPOSITO_REPLICA_TOKEN")
        .env_remove("DEPOSITO_REPLICA_TOKEN_FILE")
        .env("DEPOSITO_TOKEN", "client-secret-0123456789abcdef0123")
        .args(["--listen", "127.0.0.6:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("DEPOSITO_TOKEN is set, but that is the client's variable")
            && err.contains("DEPOSITO_REPLICA_TOKEN"),
        "{err}"
    );

    for (replica_token, warns) in [
        ("replica-secret-0123456789abcdef0123", false),
        ("short-replica", true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(BIN)
            .env_remove("DEPOSITO_TOKEN_FILE")
            .env_remove("DEPOSITO_REPLICA_TOKEN_FILE")
            .env("DEPOSITO_TOKEN", "client-secret-0123456789abcdef0123")
            .env("DEPOSITO_REPLICA_TOKEN", replica_token)
            .env("DEPOSITO_LISTEN", "127.0.0.6:0")
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let listen = dir.path().join("listen");
        assert!(
            eventually(10, || async { listen.exists() }).await,
            "no listen file"
        );
        let addr = std::fs::read_to_string(&listen).unwrap().trim().to_string();
        let c = reqwest::Client::new();
        let url = format!("http://{addr}/v1/inventory");
        for (token, status) in [
            (replica_token, 200),
            ("client-secret-0123456789abcdef0123", 401),
        ] {
            let got = c.get(&url).bearer_auth(token).send().await.unwrap();
            assert_eq!(got.status().as_u16(), status, "token {token}");
        }
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let warned = stderr
            .lines()
            .any(|l| l.contains("warning") && l.contains("the minimum is 32"));
        assert_eq!(warned, warns, "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .env_remove("DEPOSITO_TOKEN")
        .env_remove("DEPOSITO_REPLICA_TOKEN")
        .env("DEPOSITO_REPLICA_TOKEN_FILE", &token_file)
        .env("DEPOSITO_LISTEN", "127.0.0.6:0")
        .env("DEPOSITO_REPLICA_ID", "bin-1")
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let listen = data.join("listen");
    assert!(
        eventually(10, || async { listen.exists() }).await,
        "no listen file"
    );
    let addr = std::fs::read_to_string(&listen).unwrap().trim().to_string();
    let c = client();
    let info: RegisterRequest = get_json(&c, format!("http://{addr}/v1/info")).await;
    assert_eq!(info.id, "bin-1");
    assert_eq!(info.url, format!("http://{addr}"));
    assert!(info.ready);
    let resp = c
        .get(format!("http://{addr}/v1/inventory"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::UNAUTHORIZED);
    // SIGTERM: graceful exit with status 0.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("did not exit on SIGTERM")
    });
    assert!(status.success(), "{status:?}");
    // The generated layout is there.
    for d in ["objects", "quarantine", "tmp"] {
        assert!(data.join(d).is_dir(), "{d}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registers_and_heartbeats_with_the_operator() {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let operator = Router::new().route(
        "/v1/replicas/register",
        post(
            move |headers: axum::http::HeaderMap, Json(req): Json<RegisterRequest>| {
                let s = s.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    s.lock().unwrap().push((auth, req));
                    Json(RegisterResponse { heartbeat_secs: 1 })
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.7:0").await.unwrap();
    let op_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, operator).await.unwrap() });

    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), "127.0.0.8");
    cfg.register = Some(format!("http://{op_addr}"));
    cfg.zone = Some("zone-a".into());
    cfg.heartbeat_secs = 30; // the operator's answer (1 s) wins
    let r = start_with(cfg).await;
    let got_two = eventually(10, || async { seen.lock().unwrap().len() >= 2 }).await;
    assert!(got_two, "expected a registration and a heartbeat");
    let (auth, req) = seen.lock().unwrap()[0].clone();
    assert_eq!(auth.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
    assert_eq!(req.url, r.url());
    assert_eq!(req.zone.as_deref(), Some("zone-a"));
    assert!(req.id.starts_with("r-"), "{}", req.id);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("replica-id"))
            .unwrap()
            .trim(),
        req.id
    );
    assert!(req.capacity_bytes > 0 && req.ready);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_operator_does_not_stop_the_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), "127.0.0.9");
    cfg.register = Some("http://127.0.0.1:9".into());
    cfg.heartbeat_secs = 1;
    let r = start_with(cfg).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let resp = client()
        .get(format!("{}/healthz", r.url()))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    r.stop().await;
}
