//! A full disk: a replica whose data dir is a small tmpfs gets a deposit bigger than its
//! space. The client gets an error or the gateway places the file elsewhere; no partial file is
//! left anywhere; nothing acknowledged is lost. Needs root (mount).

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use deposito_e2e::files::{
    copies_of_name, copy_path, random_seed, same_bytes, tmp_files, write_random_file,
};
use deposito_e2e::{wait_sync, Cluster, MIB};
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

/// No file of `name` under objects/ of `dir`, and its tmp/ empty (eventually).
fn no_partial(dir: &Path, name: &str) {
    wait_sync(
        &format!("no partial {name} in {}", dir.display()),
        Duration::from_secs(30),
        || {
            let objs = copies_of_name(dir, "objects", "default", name);
            let tmp = tmp_files(&[dir.to_path_buf()]);
            if objs.is_empty() && tmp.is_empty() {
                Ok(())
            } else {
                Err(format!("objects: {objs:?}, tmp: {tmp:?}"))
            }
        },
    );
}

/// A cluster of `replicas` replicas, replica 1 on a 4 MiB tmpfs, holding an acknowledged
/// `small.bin` (100 KiB) at N = `replicas`; also returns a local 6 MiB `big.bin` to deposit.
async fn full_disk_cluster(replicas: usize) -> (Cluster, PathBuf, PathBuf) {
    let c = Cluster::builder()
        .replicas(replicas)
        .tmpfs_replica(1, "4m")
        .start()
        .await;
    let small = c.scratch("small.bin");
    let big = c.scratch("big.bin");
    write_random_file(&small, 100 * 1024, random_seed());
    write_random_file(&big, 6 * MIB, random_seed());
    c.client_ok(&[
        "deposit",
        small.to_str().unwrap(),
        "--replicas",
        &replicas.to_string(),
        "--name",
        "small.bin",
    ]);
    c.wait_converged("small.bin", T).await;
    (c, small, big)
}

/// `deposito retrieve name` gives back the bytes of `original`.
fn assert_retrieves(c: &Cluster, name: &str, original: &Path) {
    let got = c.scratch(&format!("{name}.out"));
    c.client_ok(&["retrieve", name, "-o", got.to_str().unwrap()]);
    assert!(same_bytes(original, &got), "{name} retrieved differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_only_replica_refuses_cleanly_and_keeps_acknowledged_data() {
    let (c, small, big) = full_disk_cluster(1).await;

    let out = c.client(&[
        "deposit",
        big.to_str().unwrap(),
        "--replicas",
        "1",
        "--name",
        "big.bin",
    ]);
    assert_eq!(out.code, 1, "deposit onto a full disk should fail: {out}");
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "one-line error expected: {out}"
    );
    assert!(
        out.stderr.contains("insufficient_storage"),
        "the client reports the gateway's 507: {out}"
    );
    // Through the HTTP API: a 507 JSON error. The gateway reads the rest of a refused body
    // before answering, so the client always gets the answer.
    let r = c
        .try_put_file("big.bin", &big, 1)
        .await
        .expect("the gateway's answer to a refused upload");
    assert_eq!(r.status, 507, "HTTP deposit onto a full disk: {r:?}");
    assert_eq!(r.error_body().code, "insufficient_storage", "{r:?}");
    no_partial(&c.replica(1).dir, "big.bin");
    assert!(
        c.status("big.bin").await.unwrap().is_none(),
        "failed deposit in the catalog"
    );

    c.wait_copies(&small, 1, T);
    assert_retrieves(&c, "small.bin", &small);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_replica_next_to_a_roomy_one_leaves_no_partial_and_loses_nothing() {
    let (c, small, big) = full_disk_cluster(2).await;
    c.wait_copies(&small, 2, T);

    // Through the HTTP API: the acknowledgement (201) comes once one copy is durable; the
    // client binary would go on waiting for two copies that can't exist.
    let r = c.put_file("big.bin", &big, 2).await;
    eprintln!(
        "deposit of 6 MiB at N=2 with one full replica: {} {}",
        r.status, r.body
    );
    if r.status == 201 {
        // Placed elsewhere: one good copy on the roomy replica, none (not even partial) on the
        // full one, and the status does not claim two.
        c.wait_copies(&big, 1, T);
        assert!(same_bytes(
            &big,
            &copy_path(
                &c.replica(2).dir,
                "objects",
                "default",
                "big.bin",
                &deposito_e2e::files::sha256_file(&big).unwrap()
            )
        ));
        let st = c
            .status("big.bin")
            .await
            .unwrap()
            .expect("acknowledged file in catalog");
        assert!(st.ready_replicas <= 1 && !st.is_converged(), "{st:?}");
        assert_retrieves(&c, "big.bin", &big);
    } else {
        let e = r.error_body();
        assert!(r.status >= 400, "{r:?}: {e:?}");
        assert!(
            c.status("big.bin").await.unwrap().is_none(),
            "failed deposit in the catalog"
        );
        no_partial(&c.replica(2).dir, "big.bin");
    }
    no_partial(&c.replica(1).dir, "big.bin");

    // The acknowledged small file is intact on both replicas.
    c.wait_copies(&small, 2, T);
    assert_retrieves(&c, "small.bin", &small);
}
