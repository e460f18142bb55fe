//! HTTPS on the gateway (`--tls-cert`, `--tls-key`, rustls): the local system serves HTTPS,
//! its replicas register over it (trusting the chain the launcher hands them), the client
//! deposits and retrieves identical bytes with `--ca-cert`; without the CA it refuses the
//! server with a one-line error; plain HTTP gets no answer; bad TLS files stop the start-up.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use deposito_e2e::files::{random_seed, same_bytes, write_random_file};
use deposito_e2e::{bins::bin, proc, Launcher, MIB};
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_https_and_the_client_trusts_only_the_given_ca() {
    // start_tls waits until both replicas registered over HTTPS and are Live.
    let l = Launcher::start_tls(2, 300).await;
    assert!(l.url().starts_with("https://"), "{}", l.url());
    let tls = l.tls.clone().expect("tls files");

    let original = l.scratch("secret.bin");
    write_random_file(&original, 3 * MIB, random_seed());
    let out = l.client(&["deposit", original.to_str().unwrap(), "--replicas", "2"]);
    assert_eq!(out.code, 0, "deposit over https: {out:?}\n{}", l.log_tail());
    let back = l.scratch("back.bin");
    let out = l.client(&["retrieve", "secret.bin", "-o", back.to_str().unwrap()]);
    assert_eq!(out.code, 0, "retrieve over https: {out:?}");
    assert!(same_bytes(&original, &back), "retrieved bytes differ");

    // Without the CA: refused, one line, non-zero exit, nothing sent.
    let mut cmd = Command::new(bin("deposito"));
    cmd.env_clear()
        .env("DEPOSITO_SERVER", l.url())
        .env("DEPOSITO_TOKEN", &l.token)
        .args(["ls"]);
    let out = proc::run(cmd, Duration::from_secs(60));
    let stderr = out.stderr.clone();
    assert!(out.code != 0, "an untrusted server was accepted: {out:?}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", l.addr))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");

    // The HTTPS client that trusts the CA reads the probes and the API.
    let health = tls
        .client()
        .get(format!("{}/healthz", l.url()))
        .send()
        .await
        .expect("https healthz");
    assert_eq!(health.status(), 200);
}

#[test]
fn unusable_tls_files_stop_the_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    for (cert, key, want) in [
        (
            dir.path().join("missing.pem"),
            empty.clone(),
            "cannot read --tls-cert",
        ),
        (empty.clone(), empty.clone(), "no certificate"),
    ] {
        let mut cmd = Command::new(bin("deposito-operator"));
        cmd.env_clear()
            .args(["local", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key);
        let out = proc::run(cmd, Duration::from_secs(30));
        let stderr = out.stderr.clone();
        assert!(out.code != 0, "started with {cert:?}: {out:?}");
        assert!(stderr.contains(want), "want {want:?} in: {stderr}");
    }
    // One without the other is a usage error.
    let mut cmd = Command::new(bin("deposito-operator"));
    cmd.env_clear()
        .args(["local", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&empty);
    let out = proc::run(cmd, Duration::from_secs(30));
    assert_eq!(out.code, 2, "{out:?}");
}
