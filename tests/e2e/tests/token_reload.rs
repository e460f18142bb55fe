//! A replica follows its token file (`--token-file`, a Secret volume in kube mode): after the
//! file changes, the new token is accepted without a restart, the previous one only for
//! `--previous-token-grace-secs`, and a file emptied by mistake leaves the token in force.
//! The operator's side (kube mode, a Secret edited in place) is step 4 of `kube_day2`.
//!
//! Needs the workspace binaries: `cargo build --release --bins`, then
//! `cargo test --release --workspace --test token_reload`.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use deposito_e2e::cluster::{base_tmp, clean_env, free_port, random_block};
use deposito_e2e::proc::Proc;
use deposito_e2e::wait::wait_for;

const OLD: &str = "old-replica-token-0123456789abcdef";
const NEW: &str = "new-replica-token-0123456789abcdef";
const GRACE_SECS: u64 = 6;

/// Writes `token` to `path` the way a Secret volume changes: a new file renamed into place.
fn write_atomically(path: &Path, token: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, token).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn status(http: &reqwest::Client, url: &str, token: &str) -> u16 {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_replica_takes_a_new_token_file_and_drops_the_old_token_after_the_grace() {
    let dir = tempfile::tempdir_in(base_tmp()).unwrap();
    let token_file = dir.path().join("replica-token");
    std::fs::write(&token_file, format!("{OLD}\n")).unwrap();
    let (a, b) = random_block();
    let ip = Ipv4Addr::new(127, a, b, 1);
    let port = free_port(ip);
    let mut cmd = Command::new(deposito_e2e::bins::bin("deposito-replica"));
    clean_env(&mut cmd, dir.path());
    cmd.args([
        "--listen",
        &format!("{ip}:{port}"),
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--token-file",
        token_file.to_str().unwrap(),
        "--previous-token-grace-secs",
        &GRACE_SECS.to_string(),
    ]);
    let mut replica = Proc::spawn("replica", cmd, &dir.path().join("replica.log"));
    let http = reqwest::Client::new();
    let url = format!("http://{ip}:{port}/v1/inventory?limit=1");
    wait_for("the replica serves", Duration::from_secs(30), || async {
        match http.get(&url).bearer_auth(OLD).send().await {
            Ok(r) if r.status() == 200 => Ok(()),
            Ok(r) => Err(r.status().to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    assert_eq!(status(&http, &url, NEW).await, 401, "not yet the new token");

    write_atomically(&token_file, &format!("{NEW}\n"));
    let changed = Instant::now();
    wait_for(
        "the new token accepted",
        Duration::from_secs(15),
        || async {
            match status(&http, &url, NEW).await {
                200 => Ok(()),
                other => Err(other.to_string()),
            }
        },
    )
    .await;
    assert_eq!(
        status(&http, &url, OLD).await,
        200,
        "the previous token within its grace"
    );
    assert_eq!(status(&http, &url, "some-other-token-0123").await, 401);

    wait_for(
        "the previous token refused after the grace",
        Duration::from_secs(30),
        || async {
            match status(&http, &url, OLD).await {
                401 => Ok(()),
                other => Err(other.to_string()),
            }
        },
    )
    .await;
    assert!(
        changed.elapsed() >= Duration::from_secs(GRACE_SECS - 2),
        "refused after {:?}, before the grace could have passed",
        changed.elapsed()
    );
    assert_eq!(status(&http, &url, NEW).await, 200);

    // An emptied file is an error in the log; the token in force stays.
    write_atomically(&token_file, "  \n");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        status(&http, &url, NEW).await,
        200,
        "the token in force stays"
    );
    assert!(
        replica.log_tail(50).contains("token file not reloaded"),
        "{}",
        replica.log_tail(50)
    );
    assert!(replica.is_running(), "{}", replica.log_tail(50));
}
