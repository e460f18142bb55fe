//! Acknowledgement modes of a deposit (local mode, real processes). `ack=all` (the default)
//! writes the N copies at the same time and acknowledges once each is verified and fsync'd:
//! they are on disk when the client returns, and the answer names them. `ack=one`
//! acknowledges the first copy; the reconcile loop adds the others. A replica that dies
//! before the upload costs one copy, not the deposit. An unknown mode is refused, storing
//! nothing.
//!
//! Needs the workspace binaries: `cargo build --release --bins`, then
//! `cargo test --release -p deposito-e2e --test ack`.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use deposito_e2e::files::{random_seed, write_random_file};
use deposito_e2e::http::{client, Reply};
use deposito_e2e::{Cluster, MIB};

fn deposit(c: &Cluster, input: &std::path::Path, name: &str, n: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "deposit",
        input.to_str().unwrap(),
        "--replicas",
        n,
        "--name",
        name,
        "--no-wait",
    ];
    args.extend(extra);
    let out = c.client(&args);
    assert!(out.ok(), "deposit {name} {extra:?}: {out}");
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_all_returns_with_n_durable_copies_ack_one_with_one() {
    let mut c = Cluster::builder().replicas(4).start().await;

    // ack=all (default): the three copies exist when the client returns.
    let input = c.scratch("all.bin");
    write_random_file(&input, 8 * MIB, random_seed());
    let out = deposit(&c, &input, "all.bin", "3", &[]);
    assert!(out.contains("3/3 copies durable"), "{out}");
    assert_eq!(
        c.count_copies(&input),
        3,
        "copies on disk at the acknowledgement"
    );
    let holders = c.holders_on_disk(&input);
    assert_eq!(holders.len(), 3, "on three distinct replicas: {holders:?}");

    // ack=one: one copy named; the others follow.
    let one = c.scratch("one.bin");
    write_random_file(&one, 2 * MIB, random_seed());
    let out = deposit(&c, &one, "one.bin", "3", &["--ack", "one"]);
    assert!(out.contains("1/3 copies durable"), "{out}");
    assert!(c.count_copies(&one) >= 1);
    c.wait_copies(&one, 3, Duration::from_secs(60));

    // A replica killed just before (the operator still counts it live): the deposit at 4
    // succeeds with the three copies that could be written, the answer says so.
    c.kill_replica(3);
    let late = c.scratch("late.bin");
    write_random_file(&late, 4 * MIB, random_seed());
    let out = deposit(&c, &late, "late.bin", "4", &[]);
    assert!(out.contains("3/4 copies durable"), "{out}");
    assert_eq!(c.count_live_copies(&late), 3);

    // An unknown mode: 400, nothing stored.
    let url = format!(
        "{}/v1/files/default/bad-ack.bin?replicas=2&ack=most",
        c.url()
    );
    let resp = client()
        .put(url)
        .bearer_auth(&c.token)
        .body(vec![7u8; 1024])
        .send()
        .await
        .expect("PUT");
    let reply = Reply::read(resp).await;
    let error = reply.expect_client_error("ack=most");
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(error.code, deposito_api::ErrorCode::BadRequest, "{reply:?}");
    assert!(error.error.contains("ack"), "{reply:?}");
    let out = c.client(&["status", "bad-ack.bin"]);
    assert!(!out.ok(), "bad-ack.bin exists: {out}");
}
