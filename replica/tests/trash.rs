//! The trash over real HTTP: a trashed copy is never served and stays on the same inode; a
//! restore, a pull or a deposit of it brings back those very bytes without copying them; a
//! copy that changed in the trash is quarantined on restore; the retention deletes old
//! entries and keeps damaged ones; a write short of space empties the trash, oldest first;
//! a full replica stays ready.

#![allow(clippy::unwrap_used)] // the helpers outside #[test] fns unwrap too

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::*;
use deposito_api::replica::{ObjectInfo, ObjectState, RegisterRequest};
use deposito_api::{sha256_hex, ErrorBody};
use deposito_replica::storage::layout::json_path;
use reqwest::{Client, StatusCode};

fn copy_url(r: &Replica, name: &str, sha: &str) -> String {
    format!("{}/{sha}", r.obj("default", name))
}

async fn post(c: &Client, url: String) -> reqwest::Response {
    c.post(url).bearer_auth(TOKEN).send().await.unwrap()
}

fn inode(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn trashed_copies_are_not_served_and_come_back_without_a_copy() {
    let r = start("127.0.0.1").await;
    let c = client();
    let data = payload(3 * 1024 * 1024 + 17, 1);
    let sha = sha256_hex(&data);
    r.put_created(&c, "default", "kept.bin", data.clone()).await;
    let ready_path = copy_at(&r.dir, "objects", "kept.bin", &sha);
    let trash_path = copy_at(&r.dir, "trash", "kept.bin", &sha);
    let ino = inode(&ready_path);

    // Trash: gone from objects/, same inode in trash/, listed as trashed, never served.
    let resp = post(&c, format!("{}/trash", copy_url(&r, "kept.bin", &sha))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let info: ObjectInfo = resp.json().await.unwrap();
    assert_eq!(info.state, ObjectState::Trashed);
    assert!(!ready_path.exists());
    assert_eq!(inode(&trash_path), ino, "a rename, not a copy");
    let inventory = r.inventory(&c).await;
    assert_eq!(inventory.items.len(), 1);
    assert_eq!(inventory.items[0].state, ObjectState::Trashed);
    let resp = get(&c, copy_url(&r, "kept.bin", &sha)).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.json::<ErrorBody>().await.unwrap().code, "not_found");
    let described: RegisterRequest = get_json(&c, format!("{}/v1/info", r.url())).await;
    assert_eq!(
        (
            described.objects,
            described.trash_objects,
            described.trash_bytes
        ),
        (0, 1, data.len() as u64)
    );

    // Restore: the same inode back in objects/, byte-identical, served again.
    let resp = post(&c, format!("{}/restore", copy_url(&r, "kept.bin", &sha))).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(inode(&ready_path), ino);
    assert!(!trash_path.exists());
    assert_eq!(
        get_bytes(&c, copy_url(&r, "kept.bin", &sha)).await[..],
        data[..]
    );
    // Restoring what is already ready answers 200; what was never trashed is 404.
    let resp = post(&c, format!("{}/restore", copy_url(&r, "kept.bin", &sha))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = post(&c, format!("{}/restore", copy_url(&r, "nope", &sha))).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // A pull of a trashed copy restores it: nothing is fetched (the source does not exist).
    post(&c, format!("{}/trash", copy_url(&r, "kept.bin", &sha))).await;
    let received = metric(
        &r.metrics(&c).await,
        "deposito_replica_bytes_received_total",
    );
    let resp = pull(
        &c,
        format!("{}/pull", copy_url(&r, "kept.bin", &sha)),
        "http://127.0.0.1:9",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(inode(&ready_path), ino);
    let after = metric(
        &r.metrics(&c).await,
        "deposito_replica_bytes_received_total",
    );
    assert_eq!(after, received, "no byte received by the pull");

    // A deposit of a trashed copy (digest announced) restores it; the body is checked, not
    // stored. A body that is not the announced content is refused.
    post(&c, format!("{}/trash", copy_url(&r, "kept.bin", &sha))).await;
    let put = |body: Vec<u8>| {
        c.put(r.obj("default", "kept.bin"))
            .bearer_auth(TOKEN)
            .header("x-deposito-sha256", &sha)
            .body(body)
            .send()
    };
    let mut wrong = data.clone();
    wrong[5] ^= 1;
    let resp = put(wrong).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json::<ErrorBody>().await.unwrap().code,
        "digest_mismatch"
    );
    post(&c, format!("{}/trash", copy_url(&r, "kept.bin", &sha))).await;
    let resp = put(data.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(inode(&ready_path), ino, "restored, not written again");
    let metrics = r.metrics(&c).await;
    assert_eq!(
        metric(&metrics, "deposito_replica_trash_restored_total"),
        4.0
    );
    assert_eq!(metric(&metrics, "deposito_replica_trash_objects"), 0.0);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_that_changed_in_the_trash_is_quarantined_on_restore() {
    let r = start("127.0.0.1").await;
    let c = client();
    let data = payload(200_000, 2);
    let sha = sha256_hex(&data);
    r.put_created(&c, "default", "rots.bin", data.clone()).await;
    post(&c, format!("{}/trash", copy_url(&r, "rots.bin", &sha))).await;
    flip_byte(&copy_at(&r.dir, "trash", "rots.bin", &sha), 1234);

    let resp = post(&c, format!("{}/restore", copy_url(&r, "rots.bin", &sha))).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.json::<ErrorBody>().await.unwrap().code, "corrupt");
    assert!(copy_at(&r.dir, "quarantine", "rots.bin", &sha).exists());
    assert!(!copy_at(&r.dir, "objects", "rots.bin", &sha).exists());
    let inventory = r.inventory(&c).await;
    assert_eq!(inventory.items[0].state, ObjectState::Corrupt);

    // A deposit of the real bytes then stores them again, over the quarantined copy.
    let resp = c
        .put(r.obj("default", "rots.bin"))
        .bearer_auth(TOKEN)
        .header("x-deposito-sha256", &sha)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        get_bytes(&c, copy_url(&r, "rots.bin", &sha)).await[..],
        data[..]
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_old_trash_and_keeps_damaged_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let c = client();
    let (a, b) = (payload(1000, 3), payload(2000, 4));
    let (sha_a, sha_b) = (sha256_hex(&a), sha256_hex(&b));
    {
        let r = start_with(config(&dir, "127.0.0.1")).await;
        r.put_created(&c, "default", "a", a.clone()).await;
        r.put_created(&c, "default", "b", b.clone()).await;
        post(&c, format!("{}/trash", copy_url(&r, "a", &sha_a))).await;
        post(&c, format!("{}/trash", copy_url(&r, "b", &sha_b))).await;
        r.stop().await;
    }
    // b's metadata is damaged while the replica is down.
    std::fs::write(
        json_path(&copy_at(&dir, "trash", "b", &sha_b)),
        b"{not json",
    )
    .unwrap();
    let mut cfg = config(&dir, "127.0.0.1");
    cfg.trash_retention_secs = 1;
    let r = start_with(cfg).await;
    let gone = eventually(20, || async {
        !copy_at(&dir, "trash", "a", &sha_a).exists()
    })
    .await;
    assert!(gone, "a expired from the trash");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        copy_at(&dir, "trash", "b", &sha_b).exists(),
        "a damaged entry is kept"
    );
    let metrics = r.metrics(&c).await;
    assert_eq!(
        metric(&metrics, "deposito_replica_trash_damaged_objects"),
        1.0
    );
    assert_eq!(
        metric(&metrics, "deposito_replica_trash_expired_total"),
        1.0
    );
    // It can still be restored: the bytes are hashed, not the metadata trusted.
    let resp = post(&c, format!("{}/restore", copy_url(&r, "b", &sha_b))).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(get_bytes(&c, copy_url(&r, "b", &sha_b)).await[..], b[..]);
    let metrics = r.metrics(&c).await;
    assert_eq!(
        metric(&metrics, "deposito_replica_trash_damaged_objects"),
        0.0
    );
    r.stop().await;
}

/// Unmounts on drop.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_short_of_space_empties_the_trash_oldest_first_and_full_stays_ready() {
    let holder = tempfile::tempdir().unwrap();
    let dir = holder.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED trash eviction test: cannot mount a tmpfs (needs root)");
        return;
    }
    let _mount = Mount(dir.clone());
    let mut cfg = config(&dir, "127.0.0.1");
    cfg.min_free_bytes = 1024 * 1024;
    let r = start_with(cfg).await;
    let c = client();
    let old = payload(1024 * 1024, 5);
    let young = payload(1024 * 1024, 6);
    r.put_created(&c, "default", "old", old.clone()).await;
    post(
        &c,
        format!("{}/trash", copy_url(&r, "old", &sha256_hex(&old))),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    r.put_created(&c, "default", "young", young.clone()).await;
    post(
        &c,
        format!("{}/trash", copy_url(&r, "young", &sha256_hex(&young))),
    )
    .await;

    // 4 MiB disk, 1 MiB kept free, 2 MiB in the trash: a 1.5 MiB deposit needs one entry.
    let new = payload(1536 * 1024, 7);
    r.put_created(&c, "default", "new", new.clone()).await;
    assert!(
        !copy_at(&dir, "trash", "old", &sha256_hex(&old)).exists(),
        "the oldest went"
    );
    assert!(
        copy_at(&dir, "trash", "young", &sha256_hex(&young)).exists(),
        "the younger stayed"
    );
    let metrics = r.metrics(&c).await;
    assert_eq!(
        metric(&metrics, "deposito_replica_trash_evicted_total"),
        1.0
    );

    // Fill the rest: refused with 507, yet ready, and every copy still served.
    let resp = r
        .put(&c, "default", "big", payload(3 * 1024 * 1024, 8))
        .await;
    assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
    let filler = dir.join("filler");
    let free = nix_free(&dir);
    // Every byte taken: the disk refuses even the probe's few bytes.
    std::fs::write(&filler, vec![0u8; free as usize]).ok();
    let ready = c.get(format!("{}/readyz", r.url())).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["full"], true);
    let described: RegisterRequest = get_json(&c, format!("{}/v1/info", r.url())).await;
    assert!(described.ready && described.full);
    assert_eq!(
        get_bytes(&c, copy_url(&r, "new", &sha256_hex(&new))).await[..],
        new[..]
    );
    let _ = std::fs::remove_file(&filler);
    r.stop().await;
}

/// Free bytes of the file system holding `dir`.
fn nix_free(dir: &std::path::Path) -> u64 {
    deposito_replica::storage::fsutil::space(dir)
        .unwrap()
        .free_bytes
}
