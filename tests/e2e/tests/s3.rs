//! The S3 API of a local system (path style by address, and virtual-hosted style under
//! `--s3-domain`), driven by the clients people use, installed from PyPI and
//! Debian (tests/s3/clients): boto3 over every implemented operation (tests/s3/boto3_suite.py)
//! and the aws CLI, rclone and s3cmd (tests/s3/cli_suite). The credentials are the ones local
//! mode writes to `DATA_DIR/s3-credentials`. A level set through S3 is checked on disk:
//! exactly 3 identical copies after `x-amz-meta-replicas: 3`, exactly 1 after a self-copy
//! that lowers it. After the client token changes, `s3-credentials` follows it without a
//! restart: the new key pair works and the old one gets `InvalidAccessKeyId`. With
//! `--tls-cert` the S3 port speaks HTTPS with the gateway's certificate.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use deposito_e2e::files::{count_copies, random_seed, write_random_file};
use deposito_e2e::s3_clients::{access_key_id, clients, suite_dir};
use deposito_e2e::{wait_sync, Launcher};

/// The base domain of virtual-hosted-style addressing (resolved by the suite itself).
const S3_DOMAIN: &str = "s3.deposito.test";

/// Runs a suite command; panics with its output (and the operator's log) when it fails.
fn run(l: &Launcher, what: &str, mut cmd: Command) {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{stderr}\noperator log:\n{}",
        l.log_tail()
    );
    print!("{stdout}");
}

/// Waits until exactly `n` copies identical to `original` are on the replicas' disks.
fn wait_copies(l: &Launcher, original: &Path, n: usize) {
    let dirs = l.child_data_dirs();
    wait_sync(
        &format!("exactly {n} copies of {}", original.display()),
        Duration::from_secs(120),
        || {
            let found = count_copies(&dirs, original);
            (found == n).then_some(()).ok_or(format!("{found} copies"))
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_clients_against_a_local_system() {
    let venv = clients();
    let l = Launcher::start_args(3, 300, &["--s3-domain", S3_DOMAIN]).await;
    let credentials = l.data_dir.join("s3-credentials");
    let text = std::fs::read_to_string(&credentials).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} = ")))
            .unwrap()
            .to_string()
    };
    let (key, secret) = (field("aws_access_key_id"), field("aws_secret_access_key"));
    assert_eq!(secret, l.token, "the secret key is the client token");
    // A read-only token for bucket `suite`, with its derived key.
    let ro_token = "r".repeat(40);
    std::fs::write(
        l.data_dir.join("tokens"),
        format!("{ro_token} suite read-only\n"),
    )
    .unwrap();
    let ro_key = access_key_id(&ro_token);
    assert_eq!(key, access_key_id(&l.token));
    let endpoint = format!("http://{}", l.s3_addr);

    let three = l.scratch("three.bin");
    write_random_file(&three, 3 << 20, random_seed());
    let boto3 = |phase: &str| {
        let mut cmd = Command::new(venv.join("bin/python"));
        cmd.arg(suite_dir().join("boto3_suite.py"))
            .arg(phase)
            .env("S3_ENDPOINT", &endpoint)
            .env("S3_KEY", &key)
            .env("S3_SECRET", &secret)
            .env("S3_RO_KEY", &ro_key)
            .env("S3_RO_SECRET", &ro_token)
            .env("THREE_FILE", &three)
            .env("S3_DOMAIN", S3_DOMAIN);
        cmd
    };
    // The tokens file is reread within 2 s.
    std::thread::sleep(Duration::from_secs(3));
    run(&l, "boto3 suite", boto3("main"));
    wait_copies(&l, &three, 3);
    run(&l, "boto3 lower", boto3("lower"));
    wait_copies(&l, &three, 1);

    let work = l.scratch("cli");
    std::fs::create_dir_all(&work).unwrap();
    let level = l.scratch("level.bin");
    write_random_file(&level, 2 << 20, random_seed());
    let cli = |phase: &str| {
        let mut cmd = Command::new(suite_dir().join("cli_suite"));
        cmd.arg(phase)
            .env("S3_ENDPOINT", &endpoint)
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env("VENV", &venv)
            .env("WORK", &work)
            .env("LEVEL_FILE", &level)
            .env("HOME", &work);
        cmd
    };
    run(&l, "cli suite", cli("main"));
    wait_copies(&l, &level, 3);
    run(&l, "cli lower", cli("lower"));
    wait_copies(&l, &level, 1);

    // A new client token: s3-credentials follows it without a restart, the new key pair
    // works, and the old one is refused.
    let old_credentials = l.scratch("old-credentials");
    std::fs::copy(&credentials, &old_credentials).unwrap();
    let new_token = "n".repeat(48);
    let token_file = l.data_dir.join("token");
    let staged = token_file.with_extension("new");
    std::fs::write(&staged, format!("{new_token}\n")).unwrap();
    std::fs::rename(&staged, &token_file).unwrap();
    let new_key = access_key_id(&new_token);
    wait_sync(
        "s3-credentials follows the new token",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&credentials).unwrap_or_default();
            let line = format!("aws_access_key_id = {new_key}\n");
            text.contains(&line).then_some(()).ok_or(text)
        },
    );
    let ls = |file: &Path| {
        Command::new(venv.join("bin/aws"))
            .args([
                "--profile",
                "deposito",
                "--endpoint-url",
                &endpoint,
                "s3",
                "ls",
            ])
            .env("AWS_SHARED_CREDENTIALS_FILE", file)
            .env("HOME", &work)
            .output()
            .unwrap()
    };
    let fresh = ls(&credentials);
    assert!(
        fresh.status.success(),
        "s3 ls with the rewritten file: {}",
        String::from_utf8_lossy(&fresh.stderr)
    );
    let stale = ls(&old_credentials);
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert!(!stale.status.success(), "the old key pair still works");
    assert!(stderr.contains("InvalidAccessKeyId"), "{stderr}");
}

/// The S3 port of a system started with `--tls-cert`: HTTPS with the gateway's certificate.
/// The aws CLI, trusting only the test CA, writes an object at 2 copies and reads back the
/// same bytes; a plain-HTTP request to the port gets no S3 answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_port_serves_https_with_the_gateways_certificate() {
    let venv = clients();
    let l = Launcher::start_tls(2, 300).await;
    let tls = l.tls.as_ref().unwrap();
    let endpoint = format!("https://{}", l.s3_addr);
    let work = l.scratch("cli-tls");
    std::fs::create_dir_all(&work).unwrap();
    let original = l.scratch("tls.bin");
    write_random_file(&original, 1 << 20, random_seed());
    let back = l.scratch("tls-back.bin");
    let aws = |args: &[&str]| {
        let mut cmd = Command::new(venv.join("bin/aws"));
        cmd.args(["--profile", "deposito", "--endpoint-url", &endpoint])
            .arg("--ca-bundle")
            .arg(&tls.ca)
            .args(args)
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                l.data_dir.join("s3-credentials"),
            )
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_CA_BUNDLE")
            .env("HOME", &work);
        cmd
    };
    run(&l, "mb over HTTPS", aws(&["s3", "mb", "s3://secure"]));
    let mut put = aws(&["s3", "cp"]);
    put.arg(&original)
        .args(["s3://secure/tls.bin", "--metadata", "replicas=2"]);
    run(&l, "cp up over HTTPS", put);
    wait_copies(&l, &original, 2);
    let mut get = aws(&["s3", "cp", "s3://secure/tls.bin"]);
    get.arg(&back);
    run(&l, "cp down over HTTPS", get);
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&original).unwrap(),
        "the bytes read back over HTTPS"
    );
    // Plain HTTP to the TLS port: no S3 answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/", l.s3_addr))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "plain HTTP answered {:?}",
        plain.map(|r| r.status())
    );
}
