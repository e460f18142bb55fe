//! Lifecycles and retention locks on a local system (real processes, real disks), with ages
//! in seconds:
//!
//! - `deposit --lifecycle 3,1@20s,expire@40s`: exactly 3 identical copies on disk, exactly 1
//!   from 20 s of age (not before), then no copy and no file from 40 s (not before), across
//!   a restart of the operator in between;
//! - a file deposited with `x-deposito-lifecycle: 3,1@20s` and replaced 10 s later keeps 3
//!   copies past the first content's 20 s, and drops to 1 only 20 s after the replacement;
//! - a retained file refuses `rm`, a replacement and a lower level with 403 `retained` and
//!   the date, and its lock can't be shortened (400); it can be extended and raised;
//! - invalid schedules (decreasing ages, N 0, an expiry before a step, an expiry before the
//!   lock) are refused on every route: the deposit header, PATCH, and the CLI (one line,
//!   non-zero exit), changing nothing;
//! - a namespace default (`deposito namespace-lifecycle 1@15s,expire@30s`) governs the
//!   namespace's files without a lifecycle of their own, set after they were deposited: one
//!   drops to 1 copy at 15 s and is gone at 30 s; a retained one keeps its 2 copies and
//!   stays; an invalid default is refused (CLI and `PUT`, 400 `invalid_lifecycle`).

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use deposito_api::gateway::FileStatus;
use deposito_api::ErrorCode;
use deposito_e2e::files::{count_copies, random_seed, write_random_file};
use deposito_e2e::http::Reply;
use deposito_e2e::{wait_for, wait_sync, Launcher};

/// Waits until exactly `n` copies identical to `original` are on the replicas' disks;
/// returns when that was seen.
fn wait_copies(l: &Launcher, original: &Path, n: usize, timeout: Duration) -> Instant {
    let dirs = l.child_data_dirs();
    wait_sync(
        &format!("exactly {n} copies of {}", original.display()),
        timeout,
        || {
            let found = count_copies(&dirs, original);
            (found == n).then_some(()).ok_or(format!("{found} copies"))
        },
    );
    Instant::now()
}

async fn put(l: &Launcher, name: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Reply {
    let mut req = l
        .http
        .put(format!("{}/v1/files/default/{name}", l.url()))
        .bearer_auth(&l.token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Reply::read(req.body(body).send().await.unwrap()).await
}

async fn patch(l: &Launcher, name: &str, body: serde_json::Value) -> Reply {
    let req = l
        .http
        .patch(format!("{}/v1/files/default/{name}", l.url()))
        .bearer_auth(&l.token)
        .json(&body);
    Reply::read(req.send().await.unwrap()).await
}

async fn status(l: &Launcher, name: &str) -> Option<FileStatus> {
    let resp = l
        .http
        .get(format!("{}/v1/files/default/{name}/status", l.url()))
        .bearer_auth(&l.token)
        .send()
        .await
        .unwrap();
    match resp.status().as_u16() {
        404 => None,
        200 => Some(resp.json().await.unwrap()),
        other => panic!("status of {name}: {other}"),
    }
}

/// Asserts a refusal with `status` and `code`; returns the message.
fn refused(reply: &Reply, status: u16, code: ErrorCode, what: &str) -> String {
    let body = reply.expect_client_error(what);
    assert_eq!(
        (reply.status, body.code),
        (status, code),
        "{what}: {body:?}"
    );
    body.error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycles_and_retention_locks_on_a_local_system() {
    let mut l = Launcher::start(3, 300).await;
    let t0 = Instant::now();
    // A file that ages through two levels to its expiry.
    let aging = l.scratch("aging.bin");
    write_random_file(&aging, 64 << 10, random_seed());
    let out = l.client(&[
        "deposit",
        aging.to_str().unwrap(),
        "--lifecycle",
        "3,1@20s,expire@40s",
    ]);
    assert!(out.ok(), "deposit --lifecycle: {out}");
    assert_eq!(count_copies(&l.child_data_dirs(), &aging), 3);
    let st = status(&l, "aging.bin").await.unwrap();
    let lifecycle = st.lifecycle.clone().unwrap();
    assert_eq!(
        (st.replicas, lifecycle.spec.as_str(), lifecycle.step),
        (3, "3,1@20s,expire@40s", 0)
    );
    assert!(lifecycle.next_transition.is_some() && lifecycle.expires.is_some());

    // A file replaced 10 s after its first deposit.
    let replaced = l.scratch("replaced.bin");
    write_random_file(&replaced, 64 << 10, random_seed());
    let lc = [("x-deposito-lifecycle", "3,1@20s")];
    let first = put(&l, "replaced.bin", std::fs::read(&aging).unwrap(), &lc).await;
    assert_eq!(first.status, 201, "{}", first.body);

    // Two files of namespace `nsdefault` without a lifecycle, one of them retained, then
    // the namespace's default.
    let plain = l.scratch("plain.bin");
    write_random_file(&plain, 16 << 10, random_seed());
    let plain_kept = l.scratch("plain-kept.bin");
    write_random_file(&plain_kept, 16 << 10, random_seed());
    let ns = ["-n", "nsdefault"];
    let out = l.client(&[&ns[..], &["deposit", plain.to_str().unwrap(), "-r", "2"]].concat());
    assert!(out.ok(), "deposit: {out}");
    let out = l.client(
        &[
            &ns[..],
            &[
                "deposit",
                plain_kept.to_str().unwrap(),
                "-r",
                "2",
                "--retain-until",
                "2999-01-01",
            ],
        ]
        .concat(),
    );
    assert!(out.ok(), "deposit: {out}");
    let t_plain = Instant::now();
    let bad = l.client(&[&ns[..], &["namespace-lifecycle", "1@20s,2@10s"]].concat());
    assert!(!bad.ok() && bad.stderr.trim().lines().count() == 1, "{bad}");
    let bad_put = l
        .http
        .put(format!("{}/v1/namespaces/nsdefault/lifecycle", l.url()))
        .bearer_auth(&l.token)
        .json(&serde_json::json!({"lifecycle": "0"}))
        .send()
        .await
        .unwrap();
    refused(
        &Reply::read(bad_put).await,
        400,
        ErrorCode::InvalidLifecycle,
        "PUT 0",
    );
    let set = l.client(&[&ns[..], &["namespace-lifecycle", "1@15s,expire@30s"]].concat());
    assert!(set.ok() && set.stdout.contains("1@15s,expire@30s"), "{set}");
    let shown = l.client(&[&ns[..], &["namespace-lifecycle"]].concat());
    assert!(
        shown.ok() && shown.stdout.contains("1@15s,expire@30s"),
        "{shown}"
    );

    // A retained file.
    let locked = l.scratch("locked.bin");
    write_random_file(&locked, 32 << 10, random_seed());
    let out = l.client(&[
        "deposit",
        locked.to_str().unwrap(),
        "-r",
        "2",
        "--retain-until",
        "2999-01-01",
    ]);
    assert!(out.ok(), "deposit --retain-until: {out}");
    let rm = l.client(&["rm", "locked.bin"]);
    assert!(
        !rm.ok() && rm.stderr.contains("2999-01-01T00:00:00Z"),
        "rm: {rm}"
    );
    let del = l
        .http
        .delete(format!("{}/v1/files/default/locked.bin", l.url()))
        .bearer_auth(&l.token)
        .send()
        .await
        .unwrap();
    let why = refused(&Reply::read(del).await, 403, ErrorCode::Retained, "DELETE");
    assert!(why.contains("2999-01-01T00:00:00Z"), "{why}");
    let replace = put(&l, "locked.bin", b"new".to_vec(), &[]).await;
    refused(
        &replace,
        403,
        ErrorCode::Retained,
        "replacing a retained file",
    );
    let lower = patch(&l, "locked.bin", serde_json::json!({"replicas": 1})).await;
    refused(&lower, 403, ErrorCode::Retained, "lowering a retained file");
    let lowering_lifecycle =
        patch(&l, "locked.bin", serde_json::json!({"lifecycle": "2,1@1s"})).await;
    refused(
        &lowering_lifecycle,
        403,
        ErrorCode::Retained,
        "a lifecycle that lowers it",
    );
    let shorten = patch(
        &l,
        "locked.bin",
        serde_json::json!({"retainUntil": "2998-01-01"}),
    )
    .await;
    let why = refused(
        &shorten,
        400,
        ErrorCode::InvalidLifecycle,
        "shortening the lock",
    );
    assert!(why.contains("not shortened"), "{why}");
    let extend = l.client(&["retain", "locked.bin", "3000-01-01"]);
    assert!(
        extend.ok() && extend.stdout.contains("3000-01-01"),
        "extend: {extend}"
    );
    let raise = l.client(&["set-replicas", "locked.bin", "3"]);
    assert!(raise.ok(), "raising a retained file: {raise}");
    wait_copies(&l, &locked, 3, Duration::from_secs(60));

    // Invalid schedules, on every route; nothing changes.
    for bad in ["3,1@20s,2@10s", "0", "3,expire@10s,1@20s", "1@0s", "3,1@5x"] {
        let reply = put(
            &l,
            "bad.bin",
            b"x".to_vec(),
            &[("x-deposito-lifecycle", bad)],
        )
        .await;
        refused(&reply, 400, ErrorCode::InvalidLifecycle, bad);
        let reply = patch(&l, "aging.bin", serde_json::json!({"lifecycle": bad})).await;
        refused(&reply, 400, ErrorCode::InvalidLifecycle, bad);
        let out = l.client(&[
            "deposit",
            aging.to_str().unwrap(),
            "--name",
            "bad.bin",
            "--lifecycle",
            bad,
        ]);
        assert!(
            !out.ok() && out.stderr.trim().lines().count() == 1,
            "CLI {bad}: {out}"
        );
        let out = l.client(&["set-lifecycle", "aging.bin", bad]);
        assert!(
            !out.ok() && out.stderr.trim().lines().count() == 1,
            "CLI {bad}: {out}"
        );
    }
    let early = put(
        &l,
        "bad.bin",
        b"x".to_vec(),
        &[
            ("x-deposito-lifecycle", "expire@1d"),
            ("x-deposito-retain-until", "2999-01-01"),
        ],
    )
    .await;
    refused(
        &early,
        400,
        ErrorCode::InvalidLifecycle,
        "an expiry before the lock",
    );
    let early = patch(
        &l,
        "locked.bin",
        serde_json::json!({"lifecycle": "3,expire@1d"}),
    )
    .await;
    refused(
        &early,
        400,
        ErrorCode::InvalidLifecycle,
        "an expiry before the lock (PATCH)",
    );
    assert!(
        status(&l, "bad.bin").await.is_none(),
        "a refused deposit left a file"
    );
    assert_eq!(
        status(&l, "aging.bin")
            .await
            .unwrap()
            .lifecycle
            .unwrap()
            .spec,
        "3,1@20s,expire@40s"
    );

    // 10 s in: the replacement restarts its age.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(t0.elapsed())).await;
    let t_replaced = Instant::now();
    let second = put(&l, "replaced.bin", std::fs::read(&replaced).unwrap(), &lc).await;
    assert_eq!(second.status, 201, "{}", second.body);
    wait_copies(&l, &replaced, 3, Duration::from_secs(30));

    // 20 s in: the aging file drops to exactly 1 copy, the replaced one keeps 3.
    let lowered = wait_copies(&l, &aging, 1, Duration::from_secs(40));
    assert!(
        lowered - t0 >= Duration::from_secs(20),
        "lowered at {:?}",
        lowered - t0
    );
    assert_eq!(count_copies(&l.child_data_dirs(), &replaced), 3);
    let st = status(&l, "aging.bin").await.unwrap();
    assert_eq!((st.replicas, st.lifecycle.unwrap().step), (1, 1));

    // The namespace default took plain.bin to 1 copy at 15 s, not the retained one.
    let lowered = wait_copies(&l, &plain, 1, Duration::from_secs(30));
    assert!(
        lowered - t_plain >= Duration::from_secs(14),
        "{:?}",
        lowered - t_plain
    );
    assert_eq!(count_copies(&l.child_data_dirs(), &plain_kept), 2);

    // The operator restarts between the steps: the schedule is kept.
    l.restart().await;
    let lowered = wait_copies(&l, &replaced, 1, Duration::from_secs(40));
    assert!(
        lowered - t_replaced >= Duration::from_secs(20),
        "the replacement dropped at {:?} of its age",
        lowered - t_replaced
    );
    let dirs = l.child_data_dirs();
    wait_for("aging.bin expired", Duration::from_secs(40), || async {
        let left = count_copies(&dirs, &aging);
        let listed = status(&l, "aging.bin").await;
        (left == 0 && listed.is_none())
            .then_some(())
            .ok_or(format!("{left} copies, status {listed:?}"))
    })
    .await;
    assert!(
        t0.elapsed() >= Duration::from_secs(40),
        "expired at {:?}",
        t0.elapsed()
    );
    assert!(
        status(&l, "locked.bin").await.is_some(),
        "the retained file is kept"
    );
    // The namespace default expired plain.bin at 30 s; the retained one stays, at 2 copies.
    let gone = wait_copies(&l, &plain, 0, Duration::from_secs(30));
    assert!(
        gone - t_plain >= Duration::from_secs(29),
        "{:?}",
        gone - t_plain
    );
    let st = l.client(&[&ns[..], &["status", "plain.bin"]].concat());
    assert!(!st.ok(), "plain.bin is still listed: {st}");
    let st = l.client(&[&ns[..], &["status", "plain-kept.bin"]].concat());
    assert!(st.ok() && st.stdout.contains("2 ready"), "{st}");
    assert_eq!(count_copies(&l.child_data_dirs(), &plain_kept), 2);
}
