//! Scrubbing that survives restarts: the first pass runs soon after start-up without being
//! asked, a pass cut short resumes where it stopped, and the last completed pass is
//! remembered, so a replica restarted more often than the interval still scrubs everything.

#![allow(clippy::unwrap_used)] // the helpers outside #[test] fns unwrap too

mod common;

use common::*;
use deposito_api::replica::ScrubStatus;
use deposito_replica::storage::layout::json_path;
use serde_json::Value;

const IP: &str = "127.0.0.7";

async fn status(c: &reqwest::Client, r: &Replica) -> ScrubStatus {
    get_json(c, format!("{}/v1/scrub", r.url())).await
}

fn scrub_state(dir: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("scrub-state.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn first_pass_runs_unasked_after_start_and_is_remembered_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let c = client();
    let mut cfg = config(tmp.path(), IP);
    let r = start_with(cfg.clone()).await;
    let data = payload(200_000, 9);
    r.put_created(&c, "default", "rot.bin", data.clone()).await;
    r.put_created(&c, "default", "fine.bin", "fine").await;
    r.stop().await;
    let sha = deposito_api::sha256_hex(&data);
    let stored = copy_at(tmp.path(), "objects", "rot.bin", &sha);
    flip_byte(&stored, 777);

    // Interval an hour, first pass within 2 s of start-up: nobody asks for it.
    cfg.scrub_first_delay_secs = 2;
    let r = start_with(cfg.clone()).await;
    let before: ScrubStatus = status(&c, &r).await;
    assert_eq!(before.passes, 0);
    assert!(before.next_pass_at.is_some(), "{before:?}");
    assert!(
        eventually(15, || async { status(&c, &r).await.passes == 1 }).await,
        "no scheduled pass within 15 s of start-up"
    );
    let after = status(&c, &r).await;
    assert_eq!(
        (after.objects_checked, after.corrupt_found),
        (2, 1),
        "{after:?}"
    );
    assert!(!stored.exists(), "the corrupt copy is still in objects/");
    let finished = after.last_pass_finished.expect("last pass recorded");
    assert!(after.oldest_unverified_secs.unwrap() <= 15, "{after:?}");
    assert_eq!(after.next_pass_at, Some(finished + 3600));
    let metrics = r.metrics(&c).await;
    assert!(
        metrics.contains("deposito_replica_scrub_oldest_unverified_seconds"),
        "{metrics}"
    );
    r.stop().await;

    // Restarted: the completed pass is remembered, and the next one is an interval after it,
    // not an interval after this start.
    let r = start_with(cfg).await;
    let s = status(&c, &r).await;
    assert_eq!(s.passes, 0, "passes count this run");
    assert_eq!(s.last_pass_finished, Some(finished));
    assert_eq!(s.next_pass_at, Some(finished + 3600));
    assert!(s.oldest_unverified_secs.unwrap() <= 30, "{s:?}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pass_cut_short_by_a_restart_resumes_where_it_stopped() {
    const FILES: u64 = 6;
    let tmp = tempfile::tempdir().unwrap();
    let c = client();
    let mut cfg = config(tmp.path(), IP);
    cfg.scrub_rate_mib = 1; // 1 MiB/s: a 1 MiB copy takes a second to hash
    let r = start_with(cfg.clone()).await;
    for i in 0..FILES {
        r.put_created(&c, "default", &format!("f{i}"), payload(1 << 20, i))
            .await;
    }
    let resp = c
        .post(format!("{}/v1/scrub", r.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    assert!(
        eventually(20, || async { status(&c, &r).await.objects_checked >= 2 }).await,
        "the pass did not get going"
    );
    let s = status(&c, &r).await;
    assert!(s.pass_started.is_some() && s.passes == 0, "{s:?}");
    r.stop().await;
    // Stopping recorded the position.
    let mut state = Value::Null;
    assert!(
        eventually(5, || {
            state = scrub_state(tmp.path());
            let has_cursor = !state["current"]["after"].is_null();
            async move { has_cursor }
        })
        .await,
        "no position recorded: {state}"
    );
    let through: u64 = state["current"]["after"]["name"].as_str().unwrap()[1..]
        .parse()
        .unwrap();
    assert!(through + 1 < FILES, "the pass was not cut short: {state}");

    cfg.scrub_first_delay_secs = 0;
    let r = start_with(cfg).await;
    assert!(
        eventually(30, || async { status(&c, &r).await.passes == 1 }).await,
        "the interrupted pass did not complete after the restart"
    );
    let s = status(&c, &r).await;
    assert_eq!(
        s.objects_checked,
        FILES - (through + 1),
        "the resumed pass re-hashed copies it had already verified: {s:?}"
    );
    assert_eq!(s.corrupt_found, 0);
    assert!(scrub_state(tmp.path())["current"].is_null());
    r.stop().await;
}

/// The `chunks` of a copy's metadata file (`None` when it has none).
fn chunks_of(meta: &std::path::Path) -> Option<Value> {
    let v: Value = serde_json::from_slice(&std::fs::read(meta).unwrap()).unwrap();
    v.get("chunks").cloned()
}

/// Removes the chunk digests from a copy's metadata, as a copy committed by a build that did
/// not record them has it.
fn strip_chunks(meta: &std::path::Path) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(meta).unwrap()).unwrap();
    assert!(v.as_object_mut().unwrap().remove("chunks").is_some());
    std::fs::write(meta, serde_json::to_vec(&v).unwrap()).unwrap();
}

/// A copy over one chunk committed without chunk digests gets them from the scrubber, and
/// only after its whole sha256 matched: a rotten one is quarantined without any. From then
/// on a Range read over a rotten chunk of it is refused (before, it was served unverified).
#[tokio::test(flavor = "multi_thread")]
async fn older_copies_get_chunk_digests_once_their_sha256_is_verified() {
    const CHUNK: usize = 1 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let c = client();
    let cfg = config(tmp.path(), IP);
    let r = start_with(cfg.clone()).await;
    let old = payload(3 * CHUNK + 10, 21);
    let rotten = payload(2 * CHUNK + 5, 22);
    r.put_created(&c, "default", "old.bin", old.clone()).await;
    r.put_created(&c, "default", "rotten.bin", rotten.clone())
        .await;
    r.stop().await;
    let (old_sha, rotten_sha) = (
        deposito_api::sha256_hex(&old),
        deposito_api::sha256_hex(&rotten),
    );
    let old_data = copy_at(tmp.path(), "objects", "old.bin", &old_sha);
    let old_meta = json_path(&old_data);
    let rotten_data = copy_at(tmp.path(), "objects", "rotten.bin", &rotten_sha);
    let rotten_meta = json_path(&rotten_data);
    let recorded = chunks_of(&old_meta).expect("digests recorded at commit");
    strip_chunks(&old_meta);
    strip_chunks(&rotten_meta);
    flip_byte(&rotten_data, (CHUNK + 3) as u64);

    let r = start_with(cfg).await;
    let resp = c
        .post(format!("{}/v1/scrub", r.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    assert!(
        eventually(30, || async { status(&c, &r).await.passes == 1 }).await,
        "no pass within 30 s"
    );
    assert_eq!(
        chunks_of(&old_meta),
        Some(recorded),
        "the digests added are exactly the ones a commit records"
    );
    assert!(
        !rotten_data.exists(),
        "the rotten copy is still in objects/"
    );
    let quarantined = json_path(&copy_at(
        tmp.path(),
        "quarantine",
        "rotten.bin",
        &rotten_sha,
    ));
    assert_eq!(chunks_of(&quarantined), None, "a rotten copy got digests");
    let metrics = r.metrics(&c).await;
    assert!(
        metrics.contains("deposito_replica_chunk_digests_added_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("deposito_replica_copies_without_chunk_digests 0\n"),
        "{metrics}"
    );

    // Rot in the last chunk of the now-described copy: a Range over it is refused.
    flip_byte(&old_data, (3 * CHUNK + 2) as u64);
    let url = format!("{}/{old_sha}", r.obj("default", "old.bin"));
    let resp = get_range(&c, &url, "bytes=10-19").await;
    assert_eq!(resp.status().as_u16(), 206, "a good chunk is served");
    assert_eq!(resp.bytes().await.unwrap()[..], old[10..20]);
    let resp = get_range(&c, &url, "bytes=-5").await;
    assert_eq!(resp.status().as_u16(), 404, "a rotten chunk was served");
    r.stop().await;
}
