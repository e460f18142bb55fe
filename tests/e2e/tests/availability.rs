//! Writes stay available while a minority of replicas is down (design rule 12): the gateway
//! moves an upload on to the next replica when the chosen one can't be reached before any
//! byte is sent, and the client retries what failed on the server's side.
//!
//! Needs the workspace binaries: `cargo build --release --bins`, then
//! `cargo test --release -p deposito-e2e --test availability`.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use deposito_e2e::files::{random_seed, same_bytes, write_random_file};
use deposito_e2e::{Cluster, MIB};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_half_the_replicas_killed_every_deposit_succeeds_and_reads_back_identical() {
    let mut c = Cluster::builder().replicas(5).start().await;
    // Two of five (half, rounded down) die without warning; deposits start at once, while the
    // operator still counts them live (their heartbeats are not overdue yet).
    c.kill_replica(1);
    c.kill_replica(2);
    let mut deposited = Vec::new();
    for i in 0..12 {
        let name = format!("avail-{i}.bin");
        let input = c.scratch(&name);
        write_random_file(
            &input,
            if i % 3 == 0 { 4 * MIB } else { 64 * 1024 },
            random_seed(),
        );
        let out = c.client(&[
            "deposit",
            input.to_str().unwrap(),
            "--replicas",
            "2",
            "--name",
            &name,
            "--no-wait",
        ]);
        assert!(
            out.ok(),
            "deposit {i} failed with 2 of 5 replicas down: {out}"
        );
        deposited.push((name, input));
    }
    for (name, input) in &deposited {
        let copy = c.scratch(&format!("{name}.out"));
        c.client_ok(&["retrieve", name, "-o", copy.to_str().unwrap()]);
        assert!(same_bytes(input, &copy), "{name} read back different bytes");
    }
}
