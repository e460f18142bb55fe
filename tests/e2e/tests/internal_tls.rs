//! Internal TLS in local mode (`deposito-operator local --internal-tls`): the launcher makes
//! a CA and the replicas' certificate; every replica serves HTTPS only (a plain HTTP request,
//! with or without the replica token, gets no answer), its certificate verifies against the
//! CA for the internal name only, and a file raised from 1 to 3 copies, which makes the
//! replicas pull from each other, ends with 3 identical copies on disk.
//!
//! Needs the workspace binaries: `cargo build --release --bins`.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use deposito_e2e::files::{random_seed, same_bytes, write_random_file};
use deposito_e2e::launcher::copies_in;
use deposito_e2e::wait::wait_for;
use deposito_e2e::{Launcher, MIB};

const NAME: &str = "replica.deposito.internal";

/// `curl` over HTTPS to `addr` as `name`, trusting only `ca`: the HTTP status, or the
/// failure.
fn curl_https(addr: SocketAddr, name: &str, ca: &std::path::Path) -> Result<String, String> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{name}:{}:{}", addr.port(), addr.ip()))
        .arg(format!("https://{name}:{}/healthz", addr.port()))
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_speak_https_only_and_copies_still_verify() {
    let l = Launcher::start_args(3, 300, &["--internal-tls"]).await;
    let ca = l.data_dir.join("internal-tls/ca.pem");
    assert!(ca.is_file(), "no CA at {}", ca.display());
    let list: deposito_api::gateway::ReplicaList = l
        .get_json(&format!("{}/v1/replicas", l.url()), &l.token)
        .await
        .unwrap();
    assert_eq!(list.items.len(), 3);
    let plain = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for replica in &list.items {
        let addr: SocketAddr = replica
            .url
            .strip_prefix("https://")
            .unwrap_or_else(|| panic!("{} is not https", replica.url))
            .parse()
            .unwrap();
        // Plain HTTP, even with the replica token, gets no HTTP answer.
        for path in ["/healthz", "/v1/objects"] {
            let answer = plain
                .get(format!("http://{addr}{path}"))
                .bearer_auth(&l.replica_token)
                .send()
                .await;
            assert!(
                answer.is_err(),
                "plain HTTP answered on {addr}{path}: {answer:?}"
            );
        }
        // HTTPS: the certificate verifies against the CA for the internal name, and for no
        // other name.
        assert_eq!(curl_https(addr, NAME, &ca).as_deref(), Ok("200"));
        let wrong = curl_https(addr, "other.deposito.internal", &ca);
        assert!(wrong.is_err(), "a certificate for another name: {wrong:?}");
    }

    // 1 copy, then 3: the replicas pull from each other over HTTPS; every copy identical.
    let original = l.scratch("tls-internal.bin");
    write_random_file(&original, 3 * MIB, random_seed());
    let out = l.client(&["deposit", original.to_str().unwrap(), "--replicas", "1"]);
    assert_eq!(out.code, 0, "deposit: {out:?}\n{}", l.log_tail());
    let out = l.client(&["set-replicas", "tls-internal.bin", "3"]);
    assert_eq!(out.code, 0, "set-replicas: {out:?}");
    let dirs = l.child_data_dirs();
    wait_for("3 identical copies", Duration::from_secs(60), || async {
        match copies_in(&dirs, &original) {
            3 => Ok(()),
            n => Err(format!("{n} copies")),
        }
    })
    .await;
    let back = l.scratch("back.bin");
    let out = l.client(&["retrieve", "tls-internal.bin", "-o", back.to_str().unwrap()]);
    assert_eq!(out.code, 0, "retrieve: {out:?}");
    assert!(same_bytes(&original, &back), "retrieved bytes differ");
}
