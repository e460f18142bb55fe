//! Object API over real HTTP: round trips, ranges, auth, digests, names, paging, metrics.

#![allow(clippy::unwrap_used)] // the helpers outside #[test] fns unwrap too

mod common;

use common::*;
use deposito_api::replica::{InventoryPage, ObjectInfo, ObjectState};
use deposito_api::{sha256_hex, ErrorBody, HEADER_SHA256};
use deposito_replica::testing::files_under;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread")]
async fn put_then_get_returns_identical_bytes_etag_and_ranges() {
    let r = start("127.0.0.1").await;
    let c = client();
    let data = payload(3 * 1024 * 1024 + 17, 1);
    let sha = sha256_hex(&data);
    let resp = c
        .put(r.obj("default", "big file.bin"))
        .bearer_auth(TOKEN)
        .header(HEADER_SHA256, &sha)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let info: ObjectInfo = resp.json().await.unwrap();
    assert_eq!(info.sha256, sha);
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(info.state, ObjectState::Ready);
    // On disk exactly where the contract says, with no temp left.
    let on_disk = copy_at(&r.dir, "objects", "big file.bin", &sha);
    assert_eq!(std::fs::read(&on_disk).unwrap(), data);
    assert!(files_under(&r.dir.join("tmp")).is_empty());

    // The same object again: 200, idempotent.
    let resp = r.put(&c, "default", "big file.bin", data.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK);

    // A pull of a copy already here answers 200 at once, but only for a source that is a URL.
    let pull = format!("{}/{sha}/pull", r.obj("default", "big%20file.bin"));
    for (source, want) in [
        ("http://127.0.0.1:9", StatusCode::OK),
        ("", StatusCode::BAD_REQUEST),
        ("ftp://127.0.0.1:9", StatusCode::BAD_REQUEST),
    ] {
        let resp = c
            .post(&pull)
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "source": source }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "pull from {source:?}");
    }

    let url = format!("{}/{sha}", r.obj("default", "big%20file.bin"));
    let resp = get(&c, &url).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(resp.headers()[HEADER_SHA256], sha.as_str());
    assert_eq!(resp.headers()["accept-ranges"], "bytes");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[..]);

    let resp = get_range(&c, &url, "bytes=100-199").await;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes 100-199/{}", data.len()).as_str()
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[100..200]);

    let resp = get_range(&c, &url, "bytes=-10").await;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        &data[data.len() - 10..]
    );

    let resp = get_range(&c, &url, &format!("bytes={}-", data.len())).await;
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes */{}", data.len()).as_str()
    );

    let resp = c.head(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-length"],
        data.len().to_string().as_str()
    );

    let missing = format!("{}/{}", r.obj("default", "nope"), "a".repeat(64));
    let resp = get(&c, &missing).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.json::<ErrorBody>().await.unwrap().code, "not_found");

    // Delete: 204, then 404, and the file is gone.
    let resp = c.delete(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(!on_disk.exists());
    let resp = c.delete(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_small_copy_s_file_is_kept_empty_and_holds_the_next_copy() {
    use std::os::unix::fs::MetadataExt;
    let r = start("127.0.0.1").await;
    let c = client();
    let first = payload(4096, 2);
    let sha = sha256_hex(&first);
    r.put_created(&c, "default", "a", first.clone()).await;
    let a_path = copy_at(&r.dir, "objects", "a", &sha);
    let ino = std::fs::metadata(&a_path).unwrap().ino();
    let url = format!("{}/{sha}", r.obj("default", "a"));
    let resp = c.delete(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(!a_path.exists());
    let kept = files_under(&r.dir.join("free"));
    assert_eq!(kept.len(), 1, "{kept:?}");
    let meta = std::fs::metadata(&kept[0]).unwrap();
    assert_eq!(
        (meta.ino(), meta.len()),
        (ino, 0),
        "not the copy's inode, emptied"
    );
    assert!(r
        .metrics(&c)
        .await
        .contains("deposito_replica_freed_inodes_kept 1\n"));

    let second = payload(3000, 3);
    let sha2 = sha256_hex(&second);
    r.put_created(&c, "default", "b", second.clone()).await;
    let b_path = copy_at(&r.dir, "objects", "b", &sha2);
    assert_eq!(
        std::fs::metadata(&b_path).unwrap().ino(),
        ino,
        "a new inode"
    );
    assert!(files_under(&r.dir.join("free")).is_empty());
    let resp = get(&c, format!("{}/{sha2}", r.obj("default", "b"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &second[..]);
    assert_eq!(get(&c, &url).await.status(), StatusCode::NOT_FOUND);
    assert!(r
        .metrics(&c)
        .await
        .contains("deposito_replica_freed_inodes_kept 0\n"));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_routes_require_the_token_and_probes_do_not() {
    let r = start("127.0.0.1").await;
    let c = client();
    let sha = sha256_hex(b"x");
    let get_url = format!("{}/{sha}", r.obj("default", "x"));
    let inv = format!("{}/v1/inventory", r.url());
    for auth in [
        None,
        Some("wrong-token"),
        Some("test-replica-token-0123456789abcdef-but-longer"),
    ] {
        let reqs = [
            c.put(r.obj("default", "x")).body("x"),
            c.get(&get_url),
            c.get(&inv),
            c.post(format!("{}/v1/scrub", r.url())),
        ];
        for req in reqs {
            let req = match auth {
                Some(t) => req.bearer_auth(t),
                None => req,
            };
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "auth {auth:?}");
            assert_eq!(resp.json::<ErrorBody>().await.unwrap().code, "unauthorized");
        }
    }
    // Nothing was written by the refused PUTs.
    assert!(files_under(&r.dir.join("objects")).is_empty());
    let resp = get(&c, &inv).await;
    assert_eq!(resp.status(), StatusCode::OK);
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let resp = c.get(format!("{}{open}", r.url())).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{open}");
    }
    let doc: serde_json::Value = c
        .get(format!("{}/openapi.json", r.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/objects/{ns}/{name}/{sha256}/pull"].is_object());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_digest_and_bad_names_are_refused_and_leave_nothing() {
    let r = start("127.0.0.1").await;
    let c = client();
    let resp = c
        .put(r.obj("default", "d.txt"))
        .bearer_auth(TOKEN)
        .header(HEADER_SHA256, sha256_hex(b"other content"))
        .body("actual content")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json::<ErrorBody>().await.unwrap().code,
        "digest_mismatch"
    );
    let resp = c
        .put(r.obj("default", "d.txt"))
        .bearer_auth(TOKEN)
        .header(HEADER_SHA256, "not-a-digest")
        .body("actual content")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    for (ns, name) in [("default", "a..b"), ("Bad_NS", "ok"), ("default", "%2Fetc")] {
        let resp = r.put(&c, ns, name, "x").await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{ns}/{name}");
        assert_eq!(resp.json::<ErrorBody>().await.unwrap().code, "invalid_name");
    }
    assert!(files_under(&r.dir.join("objects")).is_empty());
    assert!(files_under(&r.dir.join("tmp")).is_empty());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn inventory_pages_in_stable_order() {
    let r = start("127.0.0.1").await;
    let c = client();
    let mut expected = Vec::new();
    for (ns, name) in [
        ("b", "z"),
        ("a", "y"),
        ("a", "x"),
        ("b", "a"),
        ("a", "x2"),
        ("c", "q q"),
        ("a", "é"),
    ] {
        let body = format!("{ns}/{name}");
        r.put_created(&c, ns, name, body.clone()).await;
        expected.push((
            ns.to_string(),
            name.to_string(),
            sha256_hex(body.as_bytes()),
        ));
    }
    expected.sort();
    let mut got = Vec::new();
    let mut pages = 0;
    let mut after: Option<String> = None;
    loop {
        let mut req = c
            .get(format!("{}/v1/inventory", r.url()))
            .bearer_auth(TOKEN)
            .query(&[("limit", "3")]);
        if let Some(a) = &after {
            req = req.query(&[("after", a)]);
        }
        let page: InventoryPage = req.send().await.unwrap().json().await.unwrap();
        assert!(page.items.len() <= 3);
        pages += 1;
        got.extend(
            page.items
                .into_iter()
                .map(|i| (i.namespace, i.name, i.sha256)),
        );
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(got, expected);
    for bad in ["0", "10001", "x"] {
        let resp = get(&c, format!("{}/v1/inventory?limit={bad}", r.url())).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "limit {bad}");
    }
    // Metrics reflect the traffic.
    let m = r.metrics(&c).await;
    assert!(m.contains("deposito_replica_objects 7"), "{m}");
    assert!(m.contains("deposito_replica_bytes_received_total"), "{m}");
    assert!(
        m.contains("deposito_replica_http_requests_total{method=\"PUT\",status=\"201\"} 7"),
        "{m}"
    );
    r.stop().await;
}

/// The background loops run as named workers of one runner, in the metrics; stopping the
/// replica stops them.
#[tokio::test(flavor = "multi_thread")]
async fn background_workers_are_in_the_metrics_and_stop_with_the_replica() {
    let r = start("127.0.0.1").await;
    let c = client();
    let m = r.metrics(&c).await;
    for worker in ["scrubber", "trash-retention"] {
        assert!(
            m.contains(&format!(
                "deposito_replica_worker_running{{worker=\"{worker}\"}} 1"
            )),
            "{m}"
        );
    }
    // The retention looks at the trash at start-up.
    assert!(
        eventually(5, || async {
            r.metrics(&c)
                .await
                .contains("deposito_replica_worker_steps_total{worker=\"trash-retention\"} 1")
        })
        .await
    );
    let app = r.running.app.clone();
    r.stop().await;
    let m = app.metrics.encode();
    for worker in ["scrubber", "trash-retention"] {
        assert!(
            m.contains(&format!(
                "deposito_replica_worker_running{{worker=\"{worker}\"}} 0"
            )),
            "{m}"
        );
    }
}
