//! Local end to end: real `deposito-operator local`, `deposito-replica` and `deposito`
//! processes on loopback addresses, real files on disk, faults injected by killing processes
//! and corrupting bytes.
//!
//! Needs the workspace binaries: `cargo build --release --bins`, then
//! `cargo test --release -p deposito-e2e --test local`.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use deposito_e2e::files::{
    copy_path, files_under, flip_middle_byte, identical_copies, random_seed, same_bytes,
    write_random_file,
};
use deposito_e2e::{wait_sync, Cluster, MIB};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(120);

/// Waits for exactly `n` byte-identical copies on `n` distinct replicas and a converged status.
async fn expect_copies(c: &Cluster, name: &str, original: &Path, n: usize) {
    let st = c.wait_converged(name, CONVERGE).await;
    assert_eq!(st.replicas as usize, n, "status: {st:?}");
    c.wait_copies(original, n, CONVERGE);
    let holders: BTreeSet<usize> = c.holders_on_disk(original).into_iter().collect();
    assert_eq!(
        holders.len(),
        n,
        "copies must be on {n} distinct replicas: {holders:?}"
    );
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_replicas_n3_gives_3_copies_then_5_then_1_retrieve_identical_rm_leaves_0() {
    let c = Cluster::builder().replicas(5).start().await;
    let input = c.scratch("f.bin");
    let sha = write_random_file(&input, 5 * MIB, random_seed());

    c.deposit_ok(&input, 3, "f.bin");
    expect_copies(&c, "f.bin", &input, 3).await;
    let st = c.status("f.bin").await.unwrap().expect("f.bin in catalog");
    assert_eq!(st.sha256, sha);
    assert_eq!(st.size, 5 * MIB);
    assert_eq!(st.holders.len(), 3);

    c.client_ok(&["set-replicas", "f.bin", "5"]);
    expect_copies(&c, "f.bin", &input, 5).await;

    c.client_ok(&["set-replicas", "f.bin", "1"]);
    expect_copies(&c, "f.bin", &input, 1).await;

    let out = c.scratch("f.out");
    c.client_ok(&["retrieve", "f.bin", "-o", path_str(&out)]);
    assert!(
        same_bytes(&input, &out),
        "retrieved bytes differ from the deposit"
    );

    let ls = c.client_ok(&["ls"]);
    assert!(ls.stdout.contains("f.bin"), "ls does not list f.bin:\n{ls}");

    c.client_ok(&["rm", "f.bin"]);
    c.wait_deleted("f.bin", CONVERGE).await;
    c.wait_copies(&input, 0, CONVERGE);
    let ls = c.client_ok(&["ls"]);
    assert!(
        !ls.stdout.contains("f.bin"),
        "ls still lists f.bin after rm:\n{ls}"
    );
    assert!(c.list().await.unwrap().items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_holder_is_replaced_after_grace_and_its_extra_copy_trimmed_on_return() {
    let mut c = Cluster::builder()
        .replicas(4)
        .grace_period_secs(4)
        .start()
        .await;
    let input = c.scratch("k.bin");
    write_random_file(&input, 3 * MIB, random_seed());
    c.deposit_ok(&input, 2, "k.bin");
    expect_copies(&c, "k.bin", &input, 2).await;

    let victim = c.holders_on_disk(&input)[0];
    c.kill_replica(victim);
    // After the grace period the copy is re-made on a live replica.
    wait_sync("2 copies on live replicas", CONVERGE, || {
        let n = c.count_live_copies(&input);
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} live copies"))
        }
    });
    let st = c
        .wait_converged_without("k.bin", &c.replica(victim).id, CONVERGE)
        .await;
    assert_eq!(st.holders.len(), 2, "{st:?}");
    assert_eq!(
        c.count_copies(&input),
        3,
        "the dead replica's copy is still on its disk"
    );

    // The dead replica returns with its copy: the extra copy is trimmed.
    c.restart_replica(victim).await;
    c.wait_copies(&input, 2, CONVERGE);
    expect_copies(&c, "k.bin", &input, 2).await;

    let out = c.scratch("k.out");
    c.client_ok(&["retrieve", "k.bin", "-o", path_str(&out)]);
    assert!(same_bytes(&input, &out));
}

/// Corrupts one stored copy, lets the scrubber find it, and checks it is replaced.
async fn corrupt_copy_is_found_and_replaced(trigger_by_post: bool) {
    let scrub_every = if trigger_by_post { 3600 } else { 2 };
    let c = Cluster::builder()
        .replicas(3)
        .scrub_interval_secs(scrub_every)
        .start()
        .await;
    let input = c.scratch("s.bin");
    let sha = write_random_file(&input, 2 * MIB, random_seed());
    c.deposit_ok(&input, 2, "s.bin");
    expect_copies(&c, "s.bin", &input, 2).await;

    let victim = c.holders_on_disk(&input)[0];
    let copy = copy_path(&c.replica(victim).dir, "objects", "default", "s.bin", &sha);
    assert_eq!(
        copy,
        c.replica(victim)
            .dir
            .join(format!("objects/default/s.bin@{sha}"))
    );
    assert!(
        copy.is_file(),
        "layout objects/{{ns}}/{{name}}@{{sha256}} not found: {}",
        copy.display()
    );
    flip_middle_byte(&copy);
    let corrupt = c.scratch("s.corrupt");
    std::fs::copy(&copy, &corrupt).expect("keep corrupt bytes");
    assert_eq!(c.count_copies(&input), 1);

    if trigger_by_post {
        let r = c.scrub_now(victim).await;
        assert!((200..300).contains(&r.status), "POST /v1/scrub: {r:?}");
    }
    // The corrupt copy leaves objects/ (quarantined) and a good copy takes its place.
    wait_sync(
        "corrupt copy gone from objects/ and 2 good copies",
        CONVERGE,
        || {
            let bad = identical_copies(&c.data_dirs(), &corrupt);
            let good = c.count_copies(&input);
            if bad.is_empty() && good == 2 {
                Ok(())
            } else {
                Err(format!("corrupt in objects/: {bad:?}, good copies: {good}"))
            }
        },
    );
    expect_copies(&c, "s.bin", &input, 2).await;
    let url = format!("{}/v1/scrub", c.replica(victim).url());
    let scrub: deposito_api::replica::ScrubStatus = c
        .http
        .get(&url)
        .bearer_auth(&c.replica_token)
        .send()
        .await
        .expect("GET /v1/scrub")
        .json()
        .await
        .expect("ScrubStatus");
    assert!(
        scrub.corrupt_found >= 1,
        "scrub status does not count the corruption: {scrub:?}"
    );

    let out = c.scratch("s.out");
    c.client_ok(&["retrieve", "s.bin", "-o", path_str(&out)]);
    assert!(
        same_bytes(&input, &out),
        "retrieve after corruption gave other bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_found_by_requested_scrub_is_quarantined_and_replaced() {
    corrupt_copy_is_found_and_replaced(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_found_by_scheduled_scrub_is_quarantined_and_replaced() {
    corrupt_copy_is_found_and_replaced(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restart_keeps_catalog_and_converges() {
    let mut c = Cluster::builder().replicas(3).start().await;
    let a = c.scratch("a.bin");
    let b = c.scratch("b.bin");
    write_random_file(&a, MIB, random_seed());
    write_random_file(&b, 300 * 1024, random_seed());
    c.deposit_ok(&a, 2, "a.bin");
    c.deposit_ok(&b, 1, "b.bin");
    expect_copies(&c, "a.bin", &a, 2).await;
    expect_copies(&c, "b.bin", &b, 1).await;

    let summary = |l: deposito_api::gateway::FileList| -> BTreeSet<(String, String, u32, u64)> {
        l.items
            .into_iter()
            .map(|s| (s.name, s.sha256, s.replicas, s.size))
            .collect()
    };
    let before = summary(c.list().await.unwrap());
    assert_eq!(before.len(), 2);

    c.restart_operator().await;
    let after = summary(c.list().await.unwrap());
    assert_eq!(before, after, "catalog changed across an operator restart");
    let ls = c.client_ok(&["ls"]);
    assert!(
        ls.stdout.contains("a.bin") && ls.stdout.contains("b.bin"),
        "ls after restart:\n{ls}"
    );

    c.client_ok(&["set-replicas", "a.bin", "3"]);
    expect_copies(&c, "a.bin", &a, 3).await;
    expect_copies(&c, "b.bin", &b, 1).await;
    let out = c.scratch("b.out");
    c.client_ok(&["retrieve", "b.bin", "-o", path_str(&out)]);
    assert!(same_bytes(&b, &out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposit_again_under_same_name_leaves_n_new_copies_and_no_old() {
    let c = Cluster::builder().replicas(3).start().await;
    let old = c.scratch("old.bin");
    let new = c.scratch("new.bin");
    write_random_file(&old, 2 * MIB, random_seed());
    let new_sha = write_random_file(&new, 2 * MIB + 17, random_seed());

    c.deposit_ok(&old, 2, "r.bin");
    expect_copies(&c, "r.bin", &old, 2).await;

    c.deposit_ok(&new, 2, "r.bin");
    // Right after the acknowledgement, a read gives the whole new content.
    let out = c.scratch("r.out");
    c.client_ok(&["retrieve", "r.bin", "-o", path_str(&out)]);
    assert!(
        same_bytes(&new, &out),
        "retrieve after re-deposit is not the new content"
    );

    let st = c.wait_converged("r.bin", CONVERGE).await;
    assert_eq!(st.sha256, new_sha);
    c.wait_copies(&new, 2, CONVERGE);
    c.wait_copies(&old, 0, CONVERGE);
    expect_copies(&c, "r.bin", &new, 2).await;
    // No leftover files of the old content (sidecars included) under objects/.
    let old_sha = deposito_e2e::files::sha256_file(&old).unwrap();
    wait_sync(
        "no file of the old content under objects/",
        CONVERGE,
        || {
            let left: Vec<_> = c
                .data_dirs()
                .iter()
                .flat_map(|d| files_under(&d.join("objects")))
                .filter(|p| p.to_string_lossy().contains(&old_sha))
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
}
