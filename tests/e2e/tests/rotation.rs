//! Secrets change without a restart, and weak ones are refused (hardening, tokens):
//!
//! - the gateway's certificate: a renewed pair (same CA, new key) replacing `--tls-cert` and
//!   `--tls-key` is served within seconds by the same operator process, the replicas stay
//!   Live over HTTPS and a deposit still returns identical bytes; a key that does not match
//!   leaves the certificate in force;
//! - local mode's client token file (`DIR/token`): a new token is in force within seconds
//!   and the old one gets 401; a short token written there is ignored (the token in force
//!   stays);
//! - start-up refusals: a client token under 32 bytes, a client token equal to the replica
//!   token, a replica given only the client's variable, each with a one-line reason and a
//!   non-zero exit; the CLI warns about `--token` on its command line.
//!
//! Needs the workspace binaries: `cargo build --release --bins`.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use deposito_e2e::files::{random_seed, same_bytes, write_random_file};
use deposito_e2e::wait::wait_for;
use deposito_e2e::{bins::bin, proc, Launcher, MIB};

const WAIT: Duration = Duration::from_secs(30);

/// The serial number of the certificate `addr` presents, as `openssl x509 -serial` prints it.
fn served_serial(addr: SocketAddr) -> Option<String> {
    let script = format!(
        "openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -serial"
    );
    let out = Command::new("sh").args(["-c", &script]).output().ok()?;
    let serial = String::from_utf8_lossy(&out.stdout).trim().to_string();
    serial.starts_with("serial=").then_some(serial)
}

fn file_serial(pem: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl x509 {}", pem.display());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Puts `from` in place of `to` in one rename, the way a Secret volume swaps its files.
fn replace_file(from: &Path, to: &Path) {
    let tmp = to.with_extension("swap");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let l = Launcher::start_tls(2, 300).await;
    let tls = l.tls.clone().unwrap();
    let pid = l.operator_pid().unwrap();
    let first = served_serial(l.addr).expect("a served certificate");
    assert_eq!(first, file_serial(&tls.chain), "the configured certificate");

    // A key that is not the certificate's: the pair in force stays.
    let (_, stray_key) = tls.renew(&[Ipv4Addr::LOCALHOST], 1);
    replace_file(&stray_key, &tls.key);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        served_serial(l.addr).as_deref(),
        Some(first.as_str()),
        "a mismatched pair replaced the certificate"
    );

    // The renewed pair (its key first, then its chain) is served by the same process.
    let (chain, key) = tls.renew(&[Ipv4Addr::LOCALHOST], 2);
    replace_file(&key, &tls.key);
    replace_file(&chain, &tls.chain);
    let renewed = file_serial(&chain);
    assert_ne!(renewed, first);
    wait_for("the renewed certificate served", WAIT, || async {
        match served_serial(l.addr) {
            Some(s) if s == renewed => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        l.operator_pid(),
        Some(pid),
        "the operator was not restarted"
    );
    assert!(proc::alive(pid));

    // The replicas keep heartbeating over HTTPS; a deposit returns identical bytes.
    l.wait_live(2).await;
    let original = l.scratch("after-renewal.bin");
    write_random_file(&original, MIB, random_seed());
    let out = l.client(&["deposit", original.to_str().unwrap(), "--replicas", "2"]);
    assert_eq!(out.code, 0, "deposit after the renewal: {out:?}");
    let back = l.scratch("back.bin");
    let out = l.client(&[
        "retrieve",
        "after-renewal.bin",
        "-o",
        back.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "retrieve after the renewal: {out:?}");
    assert!(same_bytes(&original, &back), "retrieved bytes differ");
}

async fn status_with(l: &Launcher, token: &str) -> u16 {
    l.http
        .get(format!("{}/v1/replicas", l.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_token_file_is_followed_and_a_short_token_ignored() {
    let l = Launcher::start(1, 300).await;
    let pid = l.operator_pid().unwrap();
    let old = l.token.clone();
    assert_eq!(status_with(&l, &old).await, 200);
    let new = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    std::fs::write(l.data_dir.join("token"), format!("{new}\n")).unwrap();
    wait_for("the new client token in force", WAIT, || async {
        match (status_with(&l, new).await, status_with(&l, &old).await) {
            (200, 401) => Ok(()),
            other => Err(format!("new, old: {other:?}")),
        }
    })
    .await;
    // A token too short to be in force: ignored, the new one stays.
    std::fs::write(l.data_dir.join("token"), "short-token\n").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(status_with(&l, new).await, 200, "the token in force stays");
    assert_eq!(status_with(&l, "short-token").await, 401);
    assert_eq!(l.operator_pid(), Some(pid), "no restart");
}

/// `cmd` without any token variable of the environment the tests run in.
fn without_tokens(cmd: &mut Command) -> &mut Command {
    for var in [
        "DEPOSITO_TOKEN",
        "DEPOSITO_TOKEN_FILE",
        "DEPOSITO_REPLICA_TOKEN",
        "DEPOSITO_REPLICA_TOKEN_FILE",
        "DEPOSITO_CLIENT_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn weak_or_shared_tokens_stop_the_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let long = |c: char| c.to_string().repeat(40);
    for (client, replica, want) in [
        ("short-client".to_string(), long('r'), "the minimum is 32"),
        (long('c'), "short-replica".to_string(), "the minimum is 32"),
        (
            long('s'),
            long('s'),
            "the client token and the replica token are the same",
        ),
    ] {
        let mut cmd = Command::new(bin("deposito-operator"));
        without_tokens(&mut cmd)
            .args(["local", "--listen", "127.0.0.1:0", "--replicas", "0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("DEPOSITO_CLIENT_TOKEN", &client)
            .env("DEPOSITO_REPLICA_TOKEN", &replica);
        let out = proc::run(cmd, Duration::from_secs(30));
        assert_ne!(out.code, 0, "{client} / {replica}: started");
        assert!(out.stderr.contains(want), "want {want:?}: {}", out.stderr);
    }

    // A replica without a token, then with only the client's variable: each says what it
    // needs, in one line.
    let replica = || {
        let mut cmd = Command::new(bin("deposito-replica"));
        without_tokens(&mut cmd)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("replica"));
        cmd
    };
    let out = proc::run(replica(), Duration::from_secs(30));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no replica token"), "{}", out.stderr);
    let mut cmd = replica();
    cmd.env("DEPOSITO_TOKEN", long('c'));
    let out = proc::run(cmd, Duration::from_secs(30));
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "one line: {}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("DEPOSITO_TOKEN is set, but that is the client's variable"),
        "{}",
        out.stderr
    );

    // The CLI warns about a token on its command line (and still runs the command).
    let mut cmd = Command::new(bin("deposito"));
    without_tokens(&mut cmd).args([
        "--server",
        "http://127.0.0.1:9",
        "--token",
        &long('t'),
        "ls",
    ]);
    let out = proc::run(cmd, Duration::from_secs(30));
    assert_ne!(out.code, 0, "nothing listens on port 9");
    assert!(
        out.stderr
            .starts_with("deposito: warning: --token on the command line is visible"),
        "{}",
        out.stderr
    );
    let mut cmd = Command::new(bin("deposito"));
    without_tokens(&mut cmd)
        .env("DEPOSITO_TOKEN", long('t'))
        .args(["--server", "http://127.0.0.1:9", "ls"]);
    let out = proc::run(cmd, Duration::from_secs(30));
    assert_ne!(out.code, 0);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
}
