//! Faults over real HTTP: cut uploads, pulls between replicas, rot found by the scrubber and
//! by reads, a full disk.

#![allow(clippy::unwrap_used)] // the helpers outside #[test] fns unwrap too

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use deposito_api::replica::{ObjectInfo, ObjectState, ScrubStatus};
use deposito_api::{sha256_hex, ErrorBody, ErrorCode};
use deposito_replica::testing::files_under;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread")]
async fn body_cut_short_leaves_no_file() {
    let r = start("127.0.0.1").await;
    let addr = r.running.addr;
    let t = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "PUT /v1/objects/default/cut.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n0123456789"
        )
        .unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(s);
    });
    // While the upload hangs, its temp file exists...
    let tmp = r.dir.join("tmp");
    assert!(
        eventually(5, || async { !files_under(&tmp).is_empty() }).await,
        "the upload never reached tmp/"
    );
    t.join().unwrap();
    // ...and once the client is gone, nothing remains.
    assert!(
        eventually(5, || async { files_under(&tmp).is_empty() }).await,
        "temp file left behind: {:?}",
        files_under(&tmp)
    );
    assert!(files_under(&r.dir.join("objects")).is_empty());
    assert!(r.inventory(&client()).await.items.is_empty());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_between_replicas_gives_identical_bytes() {
    let a = start("127.0.0.2").await;
    let b = start("127.0.0.3").await;
    let c = client();
    let data = payload(2 * 1024 * 1024 + 3, 7);
    let sha = sha256_hex(&data);
    a.put_created(&c, "team-a", "report final.pdf", data.clone())
        .await;
    let pull_url = format!("{}/{sha}/pull", b.obj("team-a", "report%20final.pdf"));
    let resp = pull(&c, &pull_url, &a.url()).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let info: ObjectInfo = resp.json().await.unwrap();
    assert_eq!(info.sha256, sha);
    let got = get_bytes(
        &c,
        format!("{}/{sha}", b.obj("team-a", "report%20final.pdf")),
    )
    .await;
    assert_eq!(got.as_ref(), &data[..]);
    // Already held: 200.
    let resp = pull(&c, &pull_url, &a.url()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // The peer lacks it: 502 pull_failed with the peer's message; nothing written.
    let other = sha256_hex(b"absent");
    let absent_pull = format!("{}/{other}/pull", b.obj("team-a", "absent"));
    let resp = pull(&c, &absent_pull, &a.url()).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let e: ErrorBody = resp.json().await.unwrap();
    assert_eq!(e.code, "pull_failed");
    assert!(e.error.contains("not_found"), "{}", e.error);
    // An unreachable peer: 502 too.
    let resp = pull(&c, &absent_pull, "http://127.0.0.1:9").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(files_under(&b.dir.join("tmp")).is_empty());
    let absent = deposito_replica::storage::layout::copies_of_name(
        &b.dir.join("objects"),
        "team-a",
        "absent",
    );
    assert!(absent.is_empty());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scrub_quarantines_a_flipped_byte_and_pull_repairs_it() {
    let healthy = start("127.0.0.4").await;
    let r = start("127.0.0.5").await;
    let c = client();
    let data = payload(300_000, 3);
    let sha = sha256_hex(&data);
    for rep in [&healthy, &r] {
        rep.put_created(&c, "default", "rot.bin", data.clone())
            .await;
    }
    r.put_created(&c, "default", "fine.bin", "fine").await;
    let stored = copy_at(&r.dir, "objects", "rot.bin", &sha);
    flip_byte(&stored, 12_345);

    let scrub = format!("{}/v1/scrub", r.url());
    let resp = c.post(&scrub).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let done = eventually(10, || async {
        get_json::<ScrubStatus>(&c, &scrub).await.passes >= 1
    })
    .await;
    assert!(done, "scrub pass did not finish");
    let s: ScrubStatus = get_json(&c, &scrub).await;
    assert_eq!(s.objects_checked, 2);
    assert_eq!(s.corrupt_found, 1);

    assert!(!stored.exists());
    assert!(copy_at(&r.dir, "quarantine", "rot.bin", &sha).exists());
    let url = format!("{}/{sha}", r.obj("default", "rot.bin"));
    let resp = get(&c, &url).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.json::<ErrorBody>().await.unwrap().code, "corrupt");
    let page = r.inventory(&c).await;
    let states: Vec<_> = page
        .items
        .iter()
        .map(|i| (i.name.as_str(), i.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("fine.bin", ObjectState::Ready),
            ("rot.bin", ObjectState::Corrupt)
        ]
    );
    let m = r.metrics(&c).await;
    assert!(m.contains("deposito_replica_corrupt_objects 1"), "{m}");
    assert!(
        m.contains("deposito_replica_scrubbed_objects_total 2"),
        "{m}"
    );

    // A pull from a healthy holder replaces the quarantined copy.
    let resp = pull(&c, format!("{url}/pull"), &healthy.url()).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(!copy_at(&r.dir, "quarantine", "rot.bin", &sha).exists());
    let got = get_bytes(&c, &url).await;
    assert_eq!(got.as_ref(), &data[..]);
    healthy.stop().await;
    r.stop().await;
}

/// Reads a response body until it ends or fails: the bytes delivered, and whether it ended
/// with an error.
async fn read_until_cut(mut resp: reqwest::Response) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(part)) => got.extend_from_slice(&part),
            Ok(None) => return (got, false),
            Err(_) => return (got, true),
        }
    }
}

/// The error code of a JSON error answer.
async fn error_code(resp: reqwest::Response) -> ErrorCode {
    resp.json::<ErrorBody>().await.unwrap().code
}

const CHUNK: usize = 1 << 20;

/// Rule 2 on reads: a flipped byte is never delivered. A copy of one chunk is refused
/// outright; a longer copy is cut before the first byte of the bad chunk (every byte before
/// it is the committed one); a Range over the bad chunk is refused; and the copy is
/// quarantined, so nothing of it is served afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_is_never_delivered_and_the_copy_is_quarantined() {
    let r = start("127.0.0.1").await;
    let c = client();
    let obj = |name: &str, sha: &str| format!("{}/{sha}", r.obj("default", name));
    let path = |name: &str, sha: &str| copy_at(&r.dir, "objects", name, sha);

    // One chunk: the whole copy is checked before the answer, which is 404 corrupt.
    let small = payload(1_000_000, 9);
    let small_sha = sha256_hex(&small);
    r.put_created(&c, "default", "small.bin", small.clone())
        .await;
    flip_byte(&path("small.bin", &small_sha), 999_000);
    let resp = get(&c, obj("small.bin", &small_sha)).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(resp).await, ErrorCode::Corrupt);

    // Several chunks, the second one rotten: exactly the first chunk arrives, then the cut.
    let big = payload(3 * CHUNK + 100, 10);
    let big_sha = sha256_hex(&big);
    r.put_created(&c, "default", "big.bin", big.clone()).await;
    flip_byte(&path("big.bin", &big_sha), (CHUNK + 500) as u64);
    let resp = get(&c, obj("big.bin", &big_sha)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (got, cut) = read_until_cut(resp).await;
    assert!(cut, "the response was not cut");
    assert!(
        got.len() <= CHUNK,
        "{} bytes delivered: past the bad chunk's start",
        got.len()
    );
    assert_eq!(
        got[..],
        big[..got.len()],
        "a delivered byte differs from the committed one"
    );

    // Ranges: bytes in a good chunk of a third copy are served (verified), a Range over its
    // bad chunk is refused before any byte.
    let other = payload(3 * CHUNK, 11);
    let other_sha = sha256_hex(&other);
    r.put_created(&c, "default", "ranges.bin", other.clone())
        .await;
    flip_byte(&path("ranges.bin", &other_sha), (2 * CHUNK + 7) as u64);
    let resp = get_range(&c, obj("ranges.bin", &other_sha), "bytes=10-19").await;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.bytes().await.unwrap()[..], other[10..20]);
    let resp = get_range(&c, obj("ranges.bin", &other_sha), "bytes=-5").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(resp).await, ErrorCode::Corrupt);

    // All three are quarantined: no read of any part of them is served.
    for (name, sha) in [
        ("small.bin", &small_sha),
        ("big.bin", &big_sha),
        ("ranges.bin", &other_sha),
    ] {
        let gone = eventually(5, || async {
            get(&c, obj(name, sha)).await.status() == StatusCode::NOT_FOUND
                && get_range(&c, obj(name, sha), "bytes=0-9").await.status()
                    == StatusCode::NOT_FOUND
        })
        .await;
        assert!(gone, "{name} still served");
        assert!(copy_at(&r.dir, "quarantine", name, sha).exists(), "{name}");
        assert!(!path(name, sha).exists(), "{name} left in objects/");
    }
    r.stop().await;
}

/// A good copy of several chunks reads back identical, whole and by Ranges across chunk
/// boundaries.
#[tokio::test(flavor = "multi_thread")]
async fn chunked_reads_of_a_good_copy_are_identical() {
    let r = start("127.0.0.1").await;
    let c = client();
    let data = payload(2 * CHUNK + 12_345, 12);
    let sha = sha256_hex(&data);
    r.put_created(&c, "default", "good.bin", data.clone()).await;
    let url = format!("{}/{sha}", r.obj("default", "good.bin"));
    let resp = get(&c, &url).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap()[..], data[..]);
    let n = data.len();
    for (range, want) in [
        (
            format!("bytes={}-{}", CHUNK - 3, CHUNK + 2),
            &data[CHUNK - 3..CHUNK + 3],
        ),
        (format!("bytes={}-", 2 * CHUNK - 1), &data[2 * CHUNK - 1..]),
        ("bytes=-10".to_string(), &data[n - 10..]),
        (format!("bytes=0-{}", n - 1), &data[..]),
    ] {
        let resp = get_range(&c, &url, &range).await;
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(resp.bytes().await.unwrap()[..], want[..], "{range}");
    }
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
async fn full_disk_answers_507_and_leaves_no_partial_file() {
    let holder = tempfile::tempdir().unwrap();
    let dir = holder.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED full_disk test: cannot mount a tmpfs (needs root)");
        return;
    }
    let _mount = Mount(dir.clone());
    let r = start_with(config(&dir, "127.0.0.1")).await;
    let c = client();

    // Streamed without a length, so the write itself runs into ENOSPC.
    let data = payload(3 * 1024 * 1024, 5);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let stream = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let resp = r.put(&c, "default", "too-big", stream).await;
    assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(
        resp.json::<ErrorBody>().await.unwrap().code,
        "insufficient_storage"
    );
    assert!(files_under(&dir.join("objects")).is_empty());
    assert!(files_under(&dir.join("tmp")).is_empty());

    // With a Content-Length that can't fit, refused up front.
    let resp = r.put(&c, "default", "too-big", data.clone()).await;
    assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert!(files_under(&dir.join("tmp")).is_empty());

    // The space was given back: a small file fits.
    r.put_created(&c, "default", "small", payload(100_000, 6))
        .await;
    r.stop().await;
}
