//! The whole S3 client suite against kube mode, on a real node (`tests/cluster/up --node
//! real`): the same scripts as the local system's `s3.rs` (tests/s3/boto3_suite.py and
//! tests/s3/cli_suite), through the chart's S3 Service, with `S3_MODE=kube`.
//!
//! The chart is installed with `s3.enabled`, `operator.watchAllNamespaces` (buckets are the
//! namespaces the operator manages, and CreateBucket never creates a namespace: the suites'
//! buckets are made as namespaces first, as an administrator would), `s3.domain` (the
//! virtual-hosted checks) and `auth.scopedTokensSecret` holding a token read-only in
//! namespace `suite` (the access checks). A level set through S3 is checked on the replicas'
//! volumes: exactly 3 identical copies of `levels/three.bin` and `cli/level.bin` after
//! `replicas=3` metadata, exactly 1 after the self-copy that lowers each.
//!
//! Needs root and the real node's packages; ignored by a plain `cargo test`; `tests/run-all`
//! runs it with `--ignored`.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use deposito_e2e::files::{random_seed, write_random_file};
use deposito_e2e::kube_cluster::KubeCluster;
use deposito_e2e::s3_clients::{access_key_id, clients, suite_dir, write_credentials};

/// The release's namespace (the operator's own; it holds the open uploads' ConfigMaps).
const NS: &str = "deposito-s3";
/// The buckets the suites use: namespaces made before the suites run.
const BUCKETS: [&str; 8] = [
    "suite",
    "suite2",
    "levels",
    "tagged",
    "cli",
    "cli-sync",
    "cli-rclone",
    "cli-s3cmd",
];
/// The base domain of virtual-hosted-style addressing (resolved by the suite itself).
const S3_DOMAIN: &str = "s3.deposito.test";

/// Runs a suite command; panics with its output and the operator's log when it fails.
fn run(k: &KubeCluster, what: &str, mut cmd: Command) {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let (pod, _) = k.operator_pod(NS);
        let log = k.kubectl(&["logs", "-n", NS, &pod, "--tail", "60"]);
        panic!(
            "{what} failed:\n{stdout}\n{stderr}\noperator log:\n{}",
            log.stdout
        );
    }
    print!("{stdout}");
}

#[test]
#[ignore = "needs root and builds a real node (tests/run-all runs it)"]
fn the_s3_client_suites_against_kube_mode() {
    let venv = clients();
    let k = KubeCluster::start_real_node();
    for bucket in BUCKETS.iter().chain([&NS]) {
        k.kubectl_ok(&["create", "namespace", bucket]);
    }
    // A read-only token for bucket `suite`, from the scoped tokens' Secret.
    let ro_token = "r".repeat(40);
    let work = k.dir.join("s3-suites");
    std::fs::create_dir_all(&work).unwrap();
    let tokens = work.join("tokens");
    std::fs::write(&tokens, format!("{ro_token} suite read-only\n")).unwrap();
    k.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "scoped-tokens",
        "-n",
        NS,
        &format!("--from-file=tokens={}", tokens.display()),
    ]);
    let install = k.helm_install(
        "suites",
        NS,
        &[
            "s3.enabled=true",
            "s3.defaultReplicas=1",
            &format!("s3.domain={S3_DOMAIN}"),
            "operator.watchAllNamespaces=true",
            "auth.scopedTokensSecret=scoped-tokens",
            "replica.storage.size=2Gi",
        ],
    );
    assert!(install.ok(), "helm install with s3.enabled: {install}");
    let (endpoint, token) = k.release_s3(NS, "suites");
    // The suites start once the gateway counts every replica live (pods Ready come first; a
    // busy node may take a few heartbeats more).
    let (_, operator_ip) = k.operator_pod(NS);
    deposito_e2e::wait::wait_sync(
        "3 live replicas in the gateway's view",
        Duration::from_secs(120),
        || {
            let out = Command::new("curl")
                .args(["-s", "-H", &format!("Authorization: Bearer {token}")])
                .arg(format!("http://{operator_ip}:7800/v1/replicas"))
                .output()
                .unwrap();
            let body = String::from_utf8_lossy(&out.stdout).to_string();
            let live = body.matches("\"health\":\"Live\"").count();
            (live >= 3).then_some(()).ok_or(body)
        },
    );
    let credentials = work.join("credentials");
    write_credentials(&credentials, &token);

    let three = work.join("three.bin");
    write_random_file(&three, 3 << 20, random_seed());
    let three_bytes = std::fs::read(&three).unwrap();
    let boto3 = |phase: &str| {
        let mut cmd = Command::new(venv.join("bin/python"));
        cmd.arg(suite_dir().join("boto3_suite.py"))
            .arg(phase)
            .env("S3_MODE", "kube")
            .env("S3_ENDPOINT", &endpoint)
            .env("S3_KEY", access_key_id(&token))
            .env("S3_SECRET", &token)
            .env("S3_RO_KEY", access_key_id(&ro_token))
            .env("S3_RO_SECRET", &ro_token)
            .env("THREE_FILE", &three)
            .env("S3_DOMAIN", S3_DOMAIN)
            .env_remove("AWS_CA_BUNDLE");
        cmd
    };
    let timeout = Duration::from_secs(180);
    run(&k, "boto3 suite", boto3("main"));
    k.wait_copies_of(NS, "levels", "three.bin", &three_bytes, 3, timeout);
    run(&k, "boto3 lower", boto3("lower"));
    k.wait_copies_of(NS, "levels", "three.bin", &three_bytes, 1, timeout);

    let cli_work = work.join("cli");
    std::fs::create_dir_all(&cli_work).unwrap();
    let level = work.join("level.bin");
    write_random_file(&level, 2 << 20, random_seed());
    let level_bytes = std::fs::read(&level).unwrap();
    let cli = |phase: &str| {
        let mut cmd = Command::new(suite_dir().join("cli_suite"));
        cmd.arg(phase)
            .env("S3_MODE", "kube")
            .env("S3_ENDPOINT", &endpoint)
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env("VENV", &venv)
            .env("WORK", &cli_work)
            .env("LEVEL_FILE", &level)
            .env("HOME", &cli_work)
            .env_remove("AWS_CA_BUNDLE");
        cmd
    };
    run(&k, "cli suite", cli("main"));
    k.wait_copies_of(NS, "cli", "level.bin", &level_bytes, 3, timeout);
    run(&k, "cli lower", cli("lower"));
    k.wait_copies_of(NS, "cli", "level.bin", &level_bytes, 1, timeout);
    println!("kube S3: the boto3 suite and the aws CLI, rclone and s3cmd suite passed");
}
