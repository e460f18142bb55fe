//! The design's rules, end to end on real processes: racing deposits (rule 3), draining
//! (rule 9), zone spreading (rule 7), an operator killed mid-replication (rule 4) and replica
//! authentication (rule 11).
//!
//! Needs the workspace binaries: `cargo build --release --bins`, then
//! `cargo test --release -p deposito-e2e --test rules`.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use deposito_api::gateway::{Phase, ReplicaList};
use deposito_api::replica::PullRequest;
use deposito_e2e::files::{
    copies_of_name, files_under, identical_copies, random_seed, same_bytes, sha256_file, tmp_files,
    write_random_file,
};
use deposito_e2e::http::Reply;
use deposito_e2e::wait::POLL;
use deposito_e2e::{wait_sync, Cluster, MIB};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

const CONVERGE: Duration = Duration::from_secs(120);

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Byte-identical copies of `original` under replica `k`'s `objects/`.
fn copies_on(c: &Cluster, k: usize, original: &Path) -> usize {
    identical_copies(&[c.replica(k).dir.clone()], original).len()
}

/// `deposito replicas --json`, parsed.
fn replicas_json(c: &Cluster) -> ReplicaList {
    let out = c.client_ok(&["replicas", "--json"]);
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("`deposito replicas --json` is not a ReplicaList: {e}\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_deposits_to_one_name_leave_exactly_one_content_on_every_copy() {
    let c = Cluster::builder().replicas(4).start().await;
    let a = c.scratch("a.bin");
    let b = c.scratch("b.bin");
    let sha_a = write_random_file(&a, 8 * MIB, random_seed());
    let sha_b = write_random_file(&b, 8 * MIB, random_seed());
    assert_ne!(sha_a, sha_b);

    let barrier = Barrier::new(2);
    let run = |p: &Path| {
        barrier.wait();
        c.client(&[
            "deposit",
            path_str(p),
            "--replicas",
            "3",
            "--name",
            "race.bin",
            "--timeout",
            "180",
        ])
    };
    let (out_a, out_b) = std::thread::scope(|s| {
        let ta = s.spawn(|| run(&a));
        let tb = s.spawn(|| run(&b));
        (ta.join().expect("client a"), tb.join().expect("client b"))
    });
    eprintln!("deposit a: {out_a}\ndeposit b: {out_b}");
    assert!(
        out_a.ok() || out_b.ok(),
        "neither racing deposit succeeded:\n{out_a}\n{out_b}"
    );
    assert!(!out_a.timed_out && !out_b.timed_out);

    let st = c.wait_converged("race.bin", CONVERGE).await;
    assert_eq!(st.replicas, 3, "status: {st:?}");
    let (winner, loser, winner_out) = if st.sha256 == sha_a {
        (&a, &b, &out_a)
    } else if st.sha256 == sha_b {
        (&b, &a, &out_b)
    } else {
        panic!("catalog sha256 {} is neither deposit's: {st:?}", st.sha256);
    };
    assert!(
        winner_out.ok(),
        "the winning deposit's client failed:\n{winner_out}"
    );

    // Exactly 3 copies of the winner on 3 distinct replicas, none of the loser.
    wait_sync("3 winner copies and 0 loser copies", CONVERGE, || {
        c.check_alive()?;
        let w = c.holders_on_disk(winner);
        let l = c.holders_on_disk(loser);
        if w.len() == 3 && l.is_empty() {
            Ok(())
        } else {
            Err(format!("winner copies on {w:?}, loser copies on {l:?}"))
        }
    });
    let holders: BTreeSet<usize> = c.holders_on_disk(winner).into_iter().collect();
    assert_eq!(
        holders.len(),
        3,
        "winner copies not on 3 replicas: {holders:?}"
    );
    let st = c.wait_converged("race.bin", CONVERGE).await;
    let expected: BTreeSet<String> = holders.iter().map(|k| c.replica(*k).id.clone()).collect();
    let listed: BTreeSet<String> = st.holders.iter().cloned().collect();
    assert_eq!(listed, expected, "status holders vs disk: {st:?}");

    let out = c.scratch("race.out");
    c.client_ok(&["retrieve", "race.bin", "-o", path_str(&out)]);
    assert!(
        same_bytes(winner, &out),
        "retrieve did not return the winner's bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_a_holder_moves_its_copy_then_removes_it() {
    let c = Cluster::builder().replicas(4).start().await;
    let input = c.scratch("d.bin");
    write_random_file(&input, 4 * MIB, random_seed());
    c.deposit_ok(&input, 2, "d.bin");
    c.wait_converged("d.bin", CONVERGE).await;
    c.wait_copies(&input, 2, CONVERGE);
    let h = c.holders_on_disk(&input)[0];
    let hid = c.replica(h).id.clone();

    c.client_ok(&["drain", &hid]);
    let listed = replicas_json(&c);
    let me = listed
        .items
        .iter()
        .find(|r| r.id == hid)
        .unwrap_or_else(|| panic!("{hid} not listed: {listed:?}"));
    assert!(me.draining, "{hid} not listed as draining: {me:?}");

    // The copy is added elsewhere first (never fewer than 2 copies), then removed from h.
    wait_sync(
        &format!("{hid} holds 0 copies, 2 good copies elsewhere"),
        CONVERGE,
        || {
            c.check_alive()?;
            let all = c.holders_on_disk(&input);
            assert!(
                all.len() >= 2,
                "fewer than 2 copies during the drain (trim before add): {all:?}"
            );
            let on_h = all.iter().filter(|k| **k == h).count();
            let elsewhere: BTreeSet<usize> = all.iter().copied().filter(|k| *k != h).collect();
            if on_h == 0 && elsewhere.len() == 2 && all.len() == 2 {
                Ok(())
            } else {
                Err(format!("copies on {all:?}"))
            }
        },
    );
    let st = c.wait_converged_without("d.bin", &hid, CONVERGE).await;
    assert_eq!(st.holders.len(), 2, "{st:?}");
    assert_eq!(copies_on(&c, h, &input), 0);

    // A new deposit at N=3 (every non-draining replica) never lands on the draining one.
    let fresh = c.scratch("n.bin");
    write_random_file(&fresh, 4 * MIB, random_seed());
    let watched = &c.replica(h).dir;
    let out = std::thread::scope(|s| {
        let t = s.spawn(|| {
            c.client(&[
                "deposit",
                path_str(&fresh),
                "--replicas",
                "3",
                "--name",
                "n.bin",
                "--timeout",
                "120",
            ])
        });
        while !t.is_finished() {
            let seen = copies_of_name(watched, "objects", "default", "n.bin");
            assert!(
                seen.is_empty(),
                "new deposit landed on draining {hid}: {seen:?}"
            );
            std::thread::sleep(POLL);
        }
        t.join().expect("deposit thread")
    });
    assert!(out.ok(), "deposit n.bin failed: {out}");
    let st = c.wait_converged("n.bin", CONVERGE).await;
    assert!(
        !st.holders.contains(&hid),
        "n.bin placed on draining: {st:?}"
    );
    c.wait_copies(&fresh, 3, CONVERGE);
    let on_disk: BTreeSet<usize> = c.holders_on_disk(&fresh).into_iter().collect();
    assert_eq!(on_disk.len(), 3);
    assert!(!on_disk.contains(&h), "n.bin on draining disk: {on_disk:?}");
    assert!(copies_of_name(watched, "objects", "default", "n.bin").is_empty());

    c.client_ok(&["undrain", &hid]);
    let listed = replicas_json(&c);
    let me = listed
        .items
        .iter()
        .find(|r| r.id == hid)
        .unwrap_or_else(|| panic!("{hid} not listed: {listed:?}"));
    assert!(!me.draining, "{hid} still draining after undrain: {me:?}");
    assert_eq!(me.health, "Live", "{me:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_spread_across_zones() {
    let zones = ["a", "a", "b", "b", "c"];
    let mut b = Cluster::builder().replicas(zones.len());
    for (i, z) in zones.iter().enumerate() {
        b = b.zone(i + 1, z);
    }
    let c = b.start().await;
    let listed = c.replica_list().await.expect("replica list");
    for r in &listed.items {
        let want = zones[c.index_of(&r.id) - 1];
        assert_eq!(r.zone.as_deref(), Some(want), "zone not registered: {r:?}");
    }
    let zone_of = |id: &String| zones[c.index_of(id) - 1];

    let input = c.scratch("z.bin");
    write_random_file(&input, 2 * MIB, random_seed());
    c.deposit_ok(&input, 3, "z.bin");
    // (copies wanted, distinct zones expected): 3 copies in 3 zones; 4 copies still span the 3
    // zones; down to 2, the crowded zone's extra copy goes first, so 2 distinct zones remain.
    for (step, (n, want_zones)) in [(3usize, 3usize), (4, 3), (2, 2)].into_iter().enumerate() {
        if step > 0 {
            c.client_ok(&["set-replicas", "z.bin", &n.to_string()]);
        }
        let st = c.wait_converged("z.bin", CONVERGE).await;
        c.wait_copies(&input, n, CONVERGE);
        assert_eq!(st.holders.len(), n, "{st:?}");
        let zs: BTreeMap<&str, usize> = st.holders.iter().fold(BTreeMap::new(), |mut m, id| {
            *m.entry(zone_of(id)).or_default() += 1;
            m
        });
        assert_eq!(
            zs.len(),
            want_zones,
            "{n} copies not in {want_zones} zones: {:?} {zs:?}",
            st.holders
        );
    }
    let disk: BTreeSet<&str> = c
        .holders_on_disk(&input)
        .iter()
        .map(|k| zones[k - 1])
        .collect();
    assert_eq!(disk.len(), 2, "copies on disk not in 2 zones: {disk:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_mid_replication_converges_after_restart() {
    let mut c = Cluster::builder().replicas(3).start().await;
    let input = c.scratch("big.bin");
    let sha = write_random_file(&input, 256 * MIB, random_seed());
    c.deposit_ok(&input, 1, "big.bin");
    c.wait_copies(&input, 1, CONVERGE);

    c.client_ok(&["set-replicas", "big.bin", "3", "--no-wait"]);
    // Kill as soon as a pull is seen in flight (a file in a replica's tmp/), or after 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut in_flight = tmp_files(&c.data_dirs());
    while in_flight.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        in_flight = tmp_files(&c.data_dirs());
    }
    c.restart_operator().await;
    eprintln!(
        "killed the operator with pulls in flight: {in_flight:?}; after restart: {} copies",
        c.count_copies(&input)
    );

    c.wait_copies(&input, 3, Duration::from_secs(300));
    let st = c.wait_converged("big.bin", Duration::from_secs(300)).await;
    assert_eq!(st.phase, Phase::Ready, "{st:?}");
    assert_eq!(
        st.replicas, 3,
        "the acknowledged set-replicas was lost: {st:?}"
    );
    assert_eq!(st.ready_replicas, 3, "{st:?}");
    assert_eq!(st.sha256, sha);
    let holders: BTreeSet<usize> = c.holders_on_disk(&input).into_iter().collect();
    assert_eq!(holders.len(), 3, "{holders:?}");
    wait_sync("no file in any tmp/", Duration::from_secs(30), || {
        let t = tmp_files(&c.data_dirs());
        if t.is_empty() {
            Ok(())
        } else {
            Err(format!("{t:?}"))
        }
    });
    assert_eq!(c.count_copies(&input), 3);
}

/// (path, size, sha256) of every file under each replica's objects/, tmp/ and quarantine/.
fn disk_state(c: &Cluster) -> BTreeMap<PathBuf, (u64, String)> {
    let mut m = BTreeMap::new();
    for d in c.data_dirs() {
        for sub in ["objects", "tmp", "quarantine"] {
            for p in files_under(&d.join(sub)) {
                let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                let sha = sha256_file(&p).unwrap_or_default();
                m.insert(p, (len, sha));
            }
        }
    }
    m
}

fn expect_401(what: &str, r: &Reply) {
    assert_eq!(r.status, 401, "{what}: expected 401, got {r:?}");
    assert_eq!(r.error_body().code, "unauthorized", "{what}: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_replica_writes_are_refused() {
    let c = Cluster::builder().replicas(3).start().await;
    let input = c.scratch("u.bin");
    let sha = write_random_file(&input, MIB, random_seed());
    c.deposit_ok(&input, 1, "u.bin");
    c.wait_converged("u.bin", CONVERGE).await;
    c.wait_copies(&input, 1, CONVERGE);
    let h = c.holders_on_disk(&input)[0];
    let other = (1..=3).find(|k| *k != h).expect("a non-holder");
    let holder = c.replica(h).url();
    let target = c.replica(other).url();
    let obj = format!("{holder}/v1/objects/default/u.bin/{sha}");
    let before = disk_state(&c);
    assert!(!c.token.is_empty() && c.token != c.replica_token);

    // The URL is right: the replica token may read the object.
    let r = c
        .http
        .get(&obj)
        .bearer_auth(&c.replica_token)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200, "GET with the replica token");

    // A 4 MiB body: the replica reads (and discards) a refused body before answering, so the
    // client always gets the 401 rather than a broken pipe.
    let small = c.scratch("intruder.bin");
    let small_sha = write_random_file(&small, 4 << 20, random_seed());
    let bytes = std::fs::read(&small).expect("read intruder");
    for (who, token) in [("client token", Some(c.token.as_str())), ("no token", None)] {
        let auth = |rb: reqwest::RequestBuilder| match token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        };
        for base in [&holder, &target] {
            let url = format!("{base}/v1/objects/default/intruder.bin");
            let r = auth(c.http.put(&url))
                .header(deposito_api::HEADER_SHA256, &small_sha)
                .body(bytes.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("PUT {url}: {e:?}"));
            expect_401(
                &format!("PUT new object ({who}) {url}"),
                &Reply::read(r).await,
            );
            let url = format!("{base}/v1/objects/default/u.bin");
            let r = auth(c.http.put(&url))
                .body(b"overwritten".to_vec())
                .send()
                .await
                .unwrap_or_else(|e| panic!("PUT {url}: {e:?}"));
            expect_401(
                &format!("PUT over u.bin ({who}) {url}"),
                &Reply::read(r).await,
            );
        }
        let r = auth(c.http.delete(&obj))
            .send()
            .await
            .unwrap_or_else(|e| panic!("DELETE {obj}: {e}"));
        expect_401(&format!("DELETE ({who})"), &Reply::read(r).await);
        let pull = format!("{target}/v1/objects/default/u.bin/{sha}/pull");
        let r = auth(c.http.post(&pull))
            .json(&PullRequest {
                source: holder.clone(),
            })
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {pull}: {e}"));
        expect_401(&format!("pull ({who})"), &Reply::read(r).await);
    }

    // Nothing changed on any disk.
    assert_eq!(disk_state(&c), before, "a refused request changed a disk");
    assert_eq!(c.count_copies(&input), 1);
    let st = c.status("u.bin").await.unwrap().expect("u.bin");
    assert!(
        st.is_converged() && st.holders == vec![c.replica(h).id.clone()],
        "{st:?}"
    );

    // Control: the same pull with the replica token is accepted.
    let pull = format!("{target}/v1/objects/default/u.bin/{sha}/pull");
    let r = c
        .http
        .post(&pull)
        .bearer_auth(&c.replica_token)
        .json(&PullRequest { source: holder })
        .send()
        .await
        .expect("pull");
    let r = Reply::read(r).await;
    assert!(
        r.status == 201 || r.status == 200,
        "pull with the replica token: {r:?}"
    );
}
