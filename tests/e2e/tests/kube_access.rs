//! Kube mode access end to end, on a real control plane (`tests/cluster/up`): the chart
//! installed with `gateway.tls.secretName` (the gateway serves HTTPS only, its probes use
//! HTTPS) and `auth.scopedTokensSecret` (scoped client tokens read from a Secret). A read-only
//! token of the release's namespace reads but cannot change anything (403); a token of another
//! namespace gets 403 here; the Secret's full-access token still deposits; a client that does
//! not trust the CA, or speaks plain HTTP, gets nothing. With `internalTLS` (a Secret with
//! the replicas' certificate and its CA): every replica pod serves HTTPS only (plain HTTP to
//! its port gets no answer, while HTTPS from the same place verifies against the CA for the
//! internal name), and the copies the operator and the replicas made over it are identical.
//!
//! Ignored by a plain `cargo test` (it needs the Go-built control plane); `tests/run-all` runs
//! it with `--ignored` after the control-plane smoke test has built and cached the binaries.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use deposito_api::sha256_hex;
use deposito_e2e::bins::bin;
use deposito_e2e::kube_cluster::KubeCluster;
use deposito_e2e::proc::{self, Output};
use deposito_e2e::tls::TlsFiles;
use deposito_e2e::wait::wait_sync;
use reqwest::StatusCode;

const NS: &str = "acc";
const RELEASE: &str = "acc";
const READ_ONLY: &str = "3f6a0c9e51b84d27a6e1c0d9b7f24e58";
const OTHER_NAMESPACE: &str = "8b1d4e7f20c94a6b95e3d0a7c6f18b22";
const INTERNAL_NAME: &str = "replica.acc.internal";

/// `curl` to a replica pod's `/healthz`: over HTTPS as `INTERNAL_NAME` trusting `ca`, or in
/// plain HTTP without `ca`. The HTTP status, or curl's failure.
fn replica_healthz(ip: &str, ca: Option<&std::path::Path>) -> Result<String, String> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ]);
    match ca {
        Some(ca) => cmd
            .arg("--cacert")
            .arg(ca)
            .arg("--resolve")
            .arg(format!("{INTERNAL_NAME}:7070:{ip}"))
            .arg(format!("https://{INTERNAL_NAME}:7070/healthz")),
        None => cmd.arg(format!("http://{ip}:7070/healthz")),
    };
    let out = cmd.output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

fn step(name: &str, started: Instant) {
    println!("--- [{:>5.1}s] {name}", started.elapsed().as_secs_f64());
}

/// The `deposito` client in namespace `acc` against `server`, with `token`, trusting `ca`.
fn client(server: &str, token: &str, ca: Option<&TlsFiles>, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("deposito"));
    cmd.args(["--server", server, "--token", token, "-n", NS]);
    if let Some(ca) = ca {
        cmd.arg("--ca-cert").arg(&ca.ca);
    }
    cmd.args(args).env_remove("DEPOSITO_CA_CERT");
    proc::run(cmd, Duration::from_secs(120))
}

#[test]
#[ignore = "needs the Go-built control plane: tests/run-all runs it"]
fn https_gateway_and_scoped_tokens_from_secrets() {
    let t = Instant::now();
    let k = KubeCluster::start();
    step("cluster up", t);

    // The Secrets exist before the release: a TLS Secret whose certificate names every pod
    // address the node hands out (127.0.100.0/24 or the real node's 10.244.0.0/24), and the
    // scoped tokens.
    k.kubectl_ok(&["create", "namespace", NS]);
    let certs = k.dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let pod_ips = k.pod_addresses();
    let tls = TlsFiles::generate_for(&certs, &pod_ips);
    k.kubectl_ok(&[
        "create",
        "secret",
        "tls",
        "gateway-tls",
        "-n",
        NS,
        "--cert",
        tls.chain.to_str().unwrap(),
        "--key",
        tls.key.to_str().unwrap(),
    ]);
    let tokens = certs.join("tokens");
    std::fs::write(
        &tokens,
        format!(
            "# scoped tokens\n{READ_ONLY} {NS} read-only\n{OTHER_NAMESPACE} elsewhere read-write\n"
        ),
    )
    .unwrap();
    k.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "scoped-tokens",
        "-n",
        NS,
        &format!("--from-file=tokens={}", tokens.display()),
    ]);
    // The replicas' internal TLS: one certificate for the internal name, with its CA.
    let internal = certs.join("internal");
    std::fs::create_dir_all(&internal).unwrap();
    let internal_tls = TlsFiles::generate_named(&internal, INTERNAL_NAME);
    k.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "internal-tls",
        "-n",
        NS,
        "--type=kubernetes.io/tls",
        &format!("--from-file=tls.crt={}", internal_tls.chain.display()),
        &format!("--from-file=tls.key={}", internal_tls.key.display()),
        &format!("--from-file=ca.crt={}", internal_tls.ca.display()),
    ]);
    let install = k.helm_install(
        RELEASE,
        NS,
        &[
            "replica.replicas=2",
            "replica.storage.size=1Gi",
            "gateway.tls.secretName=gateway-tls",
            "auth.scopedTokensSecret=scoped-tokens",
            "internalTLS.enabled=true",
            "internalTLS.secretName=internal-tls",
            &format!("internalTLS.serverName={INTERNAL_NAME}"),
        ],
    );
    assert!(install.ok(), "helm install: {install}");
    let (operator, ip) = k.operator_pod(NS);
    let pod = k.get_json(NS, "pod", &operator).unwrap();
    let ready = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(
        ready,
        "operator pod not Ready (HTTPS probes): {}",
        pod["status"]
    );
    let service = k
        .get_json(NS, "service", &format!("{RELEASE}-deposito-gateway"))
        .unwrap();
    assert_eq!(service["spec"]["ports"][0]["name"], "https");
    step(
        "helm install with TLS and scoped tokens: operator Ready through HTTPS probes",
        t,
    );

    // The full-access token deposits over HTTPS; both copies land.
    let https = format!("https://{ip}:7800");
    let full = k.secret_value(NS, &format!("{RELEASE}-deposito-tokens"), "client-token");
    let data = k.dir.join("files");
    std::fs::create_dir_all(&data).unwrap();
    let file = data.join("notes.bin");
    let sha = deposito_e2e::write_random_file(&file, 1 << 20, 11);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(sha256_hex(&bytes), sha);
    let out = client(
        &https,
        &full,
        Some(&tls),
        &["deposit", file.to_str().unwrap(), "--replicas", "2"],
    );
    assert!(out.ok(), "deposit over HTTPS: {out}");
    wait_sync("notes.bin at 2 copies", Duration::from_secs(120), || {
        let holders = k.holders(NS, "notes.bin", &sha, &bytes);
        (holders.len() == 2)
            .then_some(())
            .ok_or(format!("{holders:?}"))
    });
    step(
        "full-access token: deposit over HTTPS, 2 identical copies",
        t,
    );

    // Internal TLS: each replica pod answers HTTPS (its certificate verified against the
    // internal CA for the internal name) and gives plain HTTP no answer.
    let replicas = k.replica_pods(NS);
    assert_eq!(replicas.len(), 2);
    for pod in &replicas {
        let ip = pod["status"]["podIP"].as_str().expect("a pod IP");
        assert_eq!(
            replica_healthz(ip, Some(&internal_tls.ca)).as_deref(),
            Ok("200"),
            "HTTPS to replica {ip}"
        );
        let plain = replica_healthz(ip, None);
        assert!(
            plain.is_err(),
            "plain HTTP answered by replica {ip}: {plain:?}"
        );
        let args = pod["spec"]["containers"][0]["args"].to_string();
        assert!(args.contains("--advertise-url=https://"), "{args}");
    }
    step(
        "internal TLS: replicas answer HTTPS for the internal name only, plain HTTP gets nothing",
        t,
    );

    // Without the CA, or in plain HTTP, nothing is served.
    let out = client(&https, &full, None, &["ls"]);
    assert!(!out.ok(), "a client that does not trust the CA got: {out}");
    assert!(out.stderr.to_lowercase().contains("certificate"), "{out}");
    let out = client(&format!("http://{ip}:7800"), &full, None, &["ls"]);
    assert!(!out.ok(), "plain HTTP was answered: {out}");
    step("no CA: certificate refused; plain HTTP: no answer", t);

    // The read-only token reads, and gets 403 for every change; nothing changes.
    let copy = data.join("copy.bin");
    let out = client(
        &https,
        READ_ONLY,
        Some(&tls),
        &["retrieve", "notes.bin", "-o", copy.to_str().unwrap()],
    );
    assert!(out.ok(), "read-only retrieve: {out}");
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);
    for args in [
        vec![
            "deposit",
            file.to_str().unwrap(),
            "--name",
            "more.bin",
            "--replicas",
            "1",
        ],
        vec!["set-replicas", "notes.bin", "1"],
        vec!["rm", "notes.bin"],
    ] {
        let out = client(&https, READ_ONLY, Some(&tls), &args);
        assert!(!out.ok(), "read-only {args:?} succeeded: {out}");
        assert!(
            out.stderr.contains("forbidden"),
            "read-only {args:?}: {out}"
        );
    }
    step(
        "read-only token: retrieve identical; deposit, set-replicas, rm refused",
        t,
    );

    // The exact status codes, over HTTPS with the CA.
    let http = tls.client();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = |method: reqwest::Method, path: &str, token: &str| {
        runtime.block_on(async {
            http.request(method, format!("{https}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .expect("request")
                .status()
        })
    };
    use reqwest::Method;
    assert_eq!(
        status(Method::GET, "/v1/files/acc/notes.bin/status", READ_ONLY),
        StatusCode::OK
    );
    assert_eq!(
        status(Method::DELETE, "/v1/files/acc/notes.bin", READ_ONLY),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(Method::GET, "/v1/files/acc", OTHER_NAMESPACE),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(Method::GET, "/v1/files/acc/notes.bin", OTHER_NAMESPACE),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(Method::GET, "/v1/replicas", READ_ONLY),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(Method::GET, "/v1/files/acc", "not-a-token-at-all"),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(Method::GET, "/v1/files/acc", &full), StatusCode::OK);
    step(
        "status codes: 200 in scope, 403 outside it or for writes, 401 unknown",
        t,
    );

    // Nothing the refused requests asked for happened.
    let sf = k
        .get_json(NS, "sf", "notes.bin")
        .expect("notes.bin still stored");
    assert_eq!(sf["spec"]["replicas"], 2);
    assert!(k.get_json(NS, "sf", "more.bin").is_none());
    assert_eq!(k.holders(NS, "notes.bin", &sha, &bytes).len(), 2);
    step(
        "after the refusals: notes.bin still at 2 copies, more.bin absent",
        t,
    );
}
