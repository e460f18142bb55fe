//! The S3 API in kube mode, on a real node (`tests/cluster/up --node real`), through the
//! chart's S3 Service (`s3.enabled=true`), driven by the aws CLI:
//!
//! - the release namespace becomes a bucket with `mb`; another name is refused (the operator
//!   manages its own namespace only);
//! - `cp` with `--metadata replicas=2` and a Content-Type: exactly 2 identical copies in the
//!   replicas' volumes, `kubectl get sf` shows REPLICAS 2 and READY 2, HeadObject returns the
//!   level, the copies ready, the Content-Type and the MD5 ETag;
//! - a 20 MiB `cp` goes in 3 parts (parts are StoredFiles of the namespace while the upload is
//!   open): read back identical, ETag `-3`, and once complete no part, no upload ConfigMap
//!   and nothing but the two objects in `ls`;
//! - a self-copy with `--metadata replicas=1 --metadata-directive REPLACE` lowers the level to
//!   exactly 1 copy, no data copied;
//! - `rm` of both, then `rb`: the bucket's ConfigMap is gone.
//!
//! Needs root and the real node's packages; ignored by a plain `cargo test`; `tests/run-all`
//! runs it with `--ignored`.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use deposito_e2e::files::{random_seed, sha256_file, write_random_file};
use deposito_e2e::kube_cluster::KubeCluster;
use deposito_e2e::s3_clients::{clients, write_credentials};
use deposito_e2e::wait_sync;
use serde_json::Value;

const NS: &str = "objects";

#[test]
#[ignore = "needs root and builds a real node (tests/run-all runs it)"]
fn s3_in_kube_mode_through_the_chart_service() {
    let venv = clients();
    let k = KubeCluster::start_real_node();
    let install = k.helm_install("s3", NS, &["s3.enabled=true", "s3.defaultReplicas=1"]);
    assert!(install.ok(), "helm install with s3.enabled: {install}");
    let (endpoint, token) = k.release_s3(NS, "s3");
    let work = k.dir.join("s3-cli");
    std::fs::create_dir_all(&work).unwrap();
    let credentials = work.join("credentials");
    write_credentials(&credentials, &token);
    let aws = |args: &[&str]| {
        let out = Command::new(venv.join("bin/aws"))
            .args(["--profile", "deposito", "--endpoint-url", &endpoint])
            .args(args)
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_CA_BUNDLE")
            .env("HOME", &work)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let ok = |args: &[&str]| {
        let (ok, stdout, stderr) = aws(args);
        assert!(ok, "aws {args:?}: {stderr}\n{stdout}");
        stdout
    };
    let head_object = |key: &str| -> Value {
        let args = ["s3api", "head-object", "--bucket", NS, "--key", key];
        serde_json::from_str(&ok(&args)).unwrap()
    };

    // Buckets are the namespaces the operator manages: its own.
    ok(&["s3", "mb", &format!("s3://{NS}")]);
    let (made, _, stderr) = aws(&["s3", "mb", "s3://elsewhere"]);
    assert!(!made, "a bucket outside the managed namespace was made");
    assert!(stderr.contains("manages 'objects' only"), "{stderr}");
    assert!(ok(&["s3", "ls"]).contains(NS), "ls shows the bucket");

    // An object at 2 copies.
    let photo = work.join("photo.bin");
    write_random_file(&photo, 1 << 20, random_seed());
    let photo_bytes = std::fs::read(&photo).unwrap();
    ok(&[
        "s3",
        "cp",
        photo.to_str().unwrap(),
        &format!("s3://{NS}/photo.bin"),
        "--metadata",
        "replicas=2",
        "--content-type",
        "image/x-test",
    ]);
    k.wait_copies(NS, "photo.bin", &photo_bytes, 2, Duration::from_secs(120));
    let row = k.kubectl_ok(&["get", "sf", "-n", NS, "photo.bin", "--no-headers"]);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[..3], ["photo.bin", "2", "2"][..], "{row}");
    let head = head_object("photo.bin");
    assert_eq!(head["Metadata"]["replicas"], "2", "{head}");
    assert_eq!(head["Metadata"]["ready-replicas"], "2", "{head}");
    assert_eq!(head["ContentType"], "image/x-test", "{head}");
    let md5 = format!("\"{}\"", md5_hex(&photo_bytes));
    assert_eq!(head["ETag"], md5.as_str(), "{head}");

    // Multipart: 20 MiB in 8 MiB parts.
    let big = work.join("big.bin");
    write_random_file(&big, 20 << 20, random_seed());
    ok(&[
        "s3",
        "cp",
        big.to_str().unwrap(),
        &format!("s3://{NS}/big.bin"),
    ]);
    let back = work.join("big.back");
    ok(&[
        "s3",
        "cp",
        &format!("s3://{NS}/big.bin"),
        back.to_str().unwrap(),
    ]);
    assert_eq!(sha256_file(&back).unwrap(), sha256_file(&big).unwrap());
    let head = head_object("big.bin");
    assert!(
        head["ETag"].as_str().unwrap().ends_with("-3\""),
        "three parts: {head}"
    );
    wait_sync(
        "the parts and the upload's ConfigMap removed",
        Duration::from_secs(120),
        || {
            let parts: Vec<String> = k
                .kubectl_ok(&["get", "sf", "-n", NS, "-o", "name"])
                .lines()
                .filter(|l| !l.ends_with("/photo.bin") && !l.ends_with("/big.bin"))
                .map(str::to_string)
                .collect();
            let uploads = k.kubectl_ok(&[
                "get",
                "configmaps",
                "-n",
                NS,
                "-l",
                "deposito.io/upload-bucket",
                "-o",
                "name",
            ]);
            (parts.is_empty() && uploads.trim().is_empty())
                .then_some(())
                .ok_or(format!("parts {parts:?}, uploads {uploads}"))
        },
    );
    let listing = ok(&["s3", "ls", &format!("s3://{NS}")]);
    let keys: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(keys, ["big.bin", "photo.bin"], "{listing}");

    // Down to one copy by a self-copy, as S3 users change a storage class.
    ok(&[
        "s3",
        "cp",
        &format!("s3://{NS}/photo.bin"),
        &format!("s3://{NS}/photo.bin"),
        "--metadata",
        "replicas=1",
        "--metadata-directive",
        "REPLACE",
    ]);
    k.wait_copies(NS, "photo.bin", &photo_bytes, 1, Duration::from_secs(120));

    // Empty the bucket, then remove it.
    ok(&["s3", "rm", &format!("s3://{NS}/photo.bin")]);
    ok(&["s3", "rm", &format!("s3://{NS}/big.bin")]);
    ok(&["s3", "rb", &format!("s3://{NS}")]);
    let declared = k.kubectl(&["get", "configmap", "-n", NS, "deposito-bucket"]);
    assert!(!declared.ok(), "the bucket's ConfigMap is still there");
    println!("kube S3: mb, cp at 2 copies, multipart in 3 parts, lowered to 1, rm, rb");
}

/// The MD5 of `bytes` in hex (the ETag of a single-part object).
fn md5_hex(bytes: &[u8]) -> String {
    let out = Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(bytes)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..32].to_string()
}
