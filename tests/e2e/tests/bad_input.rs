//! Bad input gets a clear error, leaves no partial copy anywhere, and adds nothing to the
//! catalog: names with `/`, `..`, NUL or over 255 bytes, replicas 0, a wrong digest, and a
//! client that disconnects mid-upload. Also: no token or a wrong token gets 401 everywhere.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use deposito_e2e::files::{object_files, random_seed, tmp_files, write_random_file};
use deposito_e2e::http::{raw_request, upload_then_disconnect, Reply};
use deposito_e2e::{wait_sync, Cluster, MIB};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);

/// Waits (bounded) until no replica has any file under `objects/` or `tmp/` and the catalog is
/// empty; panics with what remains.
async fn assert_pristine(c: &Cluster, what: &str) {
    wait_sync(&format!("no files left after {what}"), SETTLE, || {
        let dirs = c.data_dirs();
        let left: Vec<_> = object_files(&dirs)
            .into_iter()
            .chain(tmp_files(&dirs))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
    let list = c.list().await.expect("list files");
    assert!(
        list.items.is_empty(),
        "{what} added to the catalog: {:?}",
        list.items
    );
}

fn assert_one_line_error(out: &deposito_e2e::proc::Output, what: &str) {
    assert_eq!(out.code, 1, "{what}: client should exit 1: {out}");
    let err = out.stderr.trim();
    assert!(!err.is_empty(), "{what}: no error message: {out}");
    assert_eq!(
        err.lines().count(),
        1,
        "{what}: error message should be one line: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_error_leaves_no_copy_and_no_catalog_entry() {
    let c = Cluster::builder().replicas(2).start().await;
    let input = c.scratch("in.bin");
    write_random_file(&input, 64 * 1024, random_seed());
    let inp = input.to_str().unwrap();
    let long = "a".repeat(300);

    // The client.
    for (what, name, replicas) in [
        ("name with /", "a/b", "1"),
        ("name ..", "..", "1"),
        ("name ../evil", "../evil", "1"),
        ("name x..y", "x..y", "1"),
        ("300-byte name", long.as_str(), "1"),
        ("--replicas 0", "ok.bin", "0"),
    ] {
        let out = c.client(&["deposit", inp, "--replicas", replicas, "--name", name]);
        assert_one_line_error(&out, &format!("client {what}"));
        assert_pristine(&c, &format!("client {what}")).await;
    }

    // The gateway, through reqwest (percent-encoded names).
    let body = std::fs::read(&input).unwrap();
    // Requests refused for their name or level carry a small body: a server may answer before
    // reading the body and close, and unread bytes would make the kernel reset the connection
    // (losing the answer). The digest check below sends the whole 64 KiB.
    let small = body[..1024].to_vec();
    for (what, name, code) in [
        ("name with %2F", "a/b", "invalid_name"),
        ("name x..y", "x..y", "invalid_name"),
        ("name with %00", "a\0b", "invalid_name"),
        ("300-byte name", long.as_str(), "invalid_name"),
    ] {
        let r = c.put_bytes(name, small.clone(), 1, None).await;
        let e = r.expect_client_error(&format!("HTTP {what}"));
        assert_eq!(e.code, code, "HTTP {what}: {r:?}");
        assert_pristine(&c, &format!("HTTP {what}")).await;
    }
    let r = c.put_bytes("ok.bin", small.clone(), 0, None).await;
    assert_eq!(
        r.expect_client_error("?replicas=0").code,
        "invalid_replicas",
        "{r:?}"
    );
    assert_pristine(&c, "?replicas=0").await;
    let r = c.put_bytes("ok.bin", small.clone(), 513, None).await;
    assert_eq!(
        r.expect_client_error("?replicas=513 (the limit is 512)")
            .code,
        "invalid_replicas",
        "{r:?}"
    );
    assert_pristine(&c, "?replicas=513").await;

    let other = deposito_api::sha256_hex(b"other content");
    let r = c
        .put_bytes("digest.bin", body.clone(), 1, Some(&other))
        .await;
    assert_eq!(
        r.expect_client_error("wrong digest").code,
        "digest_mismatch",
        "{r:?}"
    );
    assert_pristine(&c, "wrong digest").await;

    // Paths that reqwest would normalize: raw requests.
    for (what, path) in [
        ("raw name ..", "/v1/files/default/..?replicas=1"),
        ("raw name %2E%2E", "/v1/files/default/%2E%2E?replicas=1"),
        (
            "raw name with %2F..%2F",
            "/v1/files/default/..%2F..%2Fetc?replicas=1",
        ),
    ] {
        let r = raw_request(c.op_addr, "PUT", path, Some(&c.token), &[], &small);
        r.expect_client_error(what);
        assert_pristine(&c, what).await;
    }

    // A client that disconnects mid-upload, to the gateway and to a replica.
    upload_then_disconnect(
        c.op_addr,
        "/v1/files/default/cut.bin?replicas=1",
        &c.token,
        10 * MIB,
        MIB as usize,
    );
    assert_pristine(&c, "upload cut short at the gateway").await;
    assert!(c.status("cut.bin").await.unwrap().is_none());
    let rep = c.replica(1).addr;
    upload_then_disconnect(
        rep,
        "/v1/objects/default/cut.bin",
        &c.replica_token,
        10 * MIB,
        MIB as usize,
    );
    assert_pristine(&c, "upload cut short at a replica").await;

    // The replica refuses bad names and digests too.
    let r = raw_request(
        rep,
        "PUT",
        "/v1/objects/default/..",
        Some(&c.replica_token),
        &[],
        &small,
    );
    r.expect_client_error("replica name ..");
    let r = raw_request(
        rep,
        "PUT",
        "/v1/objects/default/d.bin",
        Some(&c.replica_token),
        &[(deposito_api::HEADER_SHA256, &other)],
        &body,
    );
    assert_eq!(
        r.expect_client_error("replica wrong digest").code,
        "digest_mismatch"
    );
    assert_pristine(&c, "replica bad input").await;

    // The cluster still works: a good deposit is stored.
    let r = c.put_bytes("good.bin", body.clone(), 1, None).await;
    assert_eq!(r.status, 201, "{r:?}");
    c.wait_copies(&input, 1, SETTLE);

    // Parameters out of their documented ranges are refused, not clamped.
    for (what, method, path, body) in [
        (
            "status timeout 61",
            "GET",
            "/v1/files/default/good.bin/status?wait=converged&timeout=61",
            &b""[..],
        ),
        ("list limit 0", "GET", "/v1/files/default?limit=0", &b""[..]),
        (
            "patch replicas 513",
            "PATCH",
            "/v1/files/default/good.bin",
            &br#"{"replicas":513}"#[..],
        ),
        (
            "patch replicas 1.5",
            "PATCH",
            "/v1/files/default/good.bin",
            &br#"{"replicas":1.5}"#[..],
        ),
    ] {
        let r = raw_request(
            c.op_addr,
            method,
            path,
            Some(&c.token),
            &[("content-type", "application/json")],
            body,
        );
        assert_eq!(r.status, 400, "{what}: {r:?}");
    }
    let r = raw_request(
        rep,
        "GET",
        "/v1/inventory/changes?epoch=x&since=0&wait=61",
        Some(&c.replica_token),
        &[],
        b"",
    );
    assert_eq!(r.status, 400, "changes wait 61: {r:?}");
    assert_eq!(c.status("good.bin").await.unwrap().unwrap().replicas, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_wrong_token_gets_401_from_gateway_and_replica() {
    let c = Cluster::builder().replicas(1).start().await;
    let sha = deposito_api::sha256_hex(b"x");
    let gw = c.url();
    let rep = c.replica(1).url();
    let gateway_routes: Vec<(&str, String)> = vec![
        ("GET", format!("{gw}/v1/files/default")),
        ("PUT", format!("{gw}/v1/files/default/x.bin?replicas=1")),
        ("GET", format!("{gw}/v1/files/default/x.bin")),
        ("HEAD", format!("{gw}/v1/files/default/x.bin")),
        ("PATCH", format!("{gw}/v1/files/default/x.bin")),
        ("DELETE", format!("{gw}/v1/files/default/x.bin")),
        ("GET", format!("{gw}/v1/files/default/x.bin/status")),
        ("GET", format!("{gw}/v1/replicas")),
        ("POST", format!("{gw}/v1/replicas/register")),
    ];
    let replica_routes: Vec<(&str, String)> = vec![
        ("PUT", format!("{rep}/v1/objects/default/x.bin")),
        ("GET", format!("{rep}/v1/objects/default/x.bin/{sha}")),
        ("HEAD", format!("{rep}/v1/objects/default/x.bin/{sha}")),
        ("DELETE", format!("{rep}/v1/objects/default/x.bin/{sha}")),
        ("POST", format!("{rep}/v1/objects/default/x.bin/{sha}/pull")),
        ("GET", format!("{rep}/v1/inventory")),
        ("GET", format!("{rep}/v1/scrub")),
        ("POST", format!("{rep}/v1/scrub")),
        ("GET", format!("{rep}/v1/info")),
    ];
    // (label, Authorization header value)
    let wrong = |right: &str| format!("Bearer {right}x");
    let mut cases: Vec<(String, String, String, Option<String>)> = Vec::new();
    for (m, u) in &gateway_routes {
        cases.push(("gateway, no token".into(), m.to_string(), u.clone(), None));
        cases.push((
            "gateway, wrong token".into(),
            m.to_string(),
            u.clone(),
            Some(wrong(&c.token)),
        ));
        cases.push((
            "gateway, not bearer".into(),
            m.to_string(),
            u.clone(),
            Some(format!("Basic {}", c.token)),
        ));
    }
    for (m, u) in &replica_routes {
        cases.push(("replica, no token".into(), m.to_string(), u.clone(), None));
        cases.push((
            "replica, wrong token".into(),
            m.to_string(),
            u.clone(),
            Some(wrong(&c.replica_token)),
        ));
        cases.push((
            "replica, client token".into(),
            m.to_string(),
            u.clone(),
            Some(format!("Bearer {}", c.token)),
        ));
    }
    for (label, method, url, auth) in cases {
        let mut req = c
            .http
            .request(method.parse().unwrap(), &url)
            .header("content-type", "application/json")
            .body("{}");
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let r = Reply::read(
            req.send()
                .await
                .unwrap_or_else(|e| panic!("{method} {url}: {e}")),
        )
        .await;
        assert_eq!(
            r.status, 401,
            "{label}: {method} {url} answered {} {:?}",
            r.status, r.body
        );
        if method != "HEAD" {
            assert_eq!(
                r.error_body().code,
                "unauthorized",
                "{label}: {method} {url}"
            );
        }
    }
    // Probes need no token.
    for u in [format!("{gw}/healthz"), format!("{rep}/healthz")] {
        let s = c.http.get(&u).send().await.unwrap().status();
        assert_eq!(s.as_u16(), 200, "{u}");
    }
    // The client with a wrong token: exit 1, one-line message.
    let mut cmd = c.client_cmd();
    cmd.env("DEPOSITO_TOKEN", "wrong").arg("ls");
    let out = deposito_e2e::proc::run(cmd, Duration::from_secs(60));
    assert_one_line_error(&out, "client with a wrong token");
    // Nothing got in.
    assert_pristine(&c, "unauthenticated requests").await;
}

/// A deposit whose sha256 follows the bytes as a trailer (`deposito deposit` sends one): the
/// right trailer stores the content; a wrong, malformed or missing trailer, or a body longer
/// or shorter than its `x-deposito-content-length`, is refused with its code, and the file
/// keeps its previous content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailed_deposit_is_checked_against_its_trailer() {
    use deposito_api::{ErrorCode, HEADER_CONTENT_LENGTH, HEADER_SHA256};
    use deposito_e2e::http::raw_chunked_request;
    let c = Cluster::builder().replicas(2).start().await;
    let path = "/v1/files/default/t.bin?replicas=2";
    let first = c.scratch("first.bin");
    write_random_file(&first, 300 * 1024, random_seed());
    let bytes = std::fs::read(&first).unwrap();
    let sha = deposito_api::sha256_hex(&bytes);
    let (a, b) = bytes.split_at(100_000);
    let len = bytes.len().to_string();
    let framing = [
        ("trailer", HEADER_SHA256),
        (HEADER_CONTENT_LENGTH, len.as_str()),
    ];
    let r = raw_chunked_request(
        c.op_addr,
        path,
        &c.token,
        &framing,
        &[a, b],
        &[(HEADER_SHA256, &sha)],
    );
    assert_eq!(r.status, 201, "right trailer: {r:?}");
    c.wait_copies(&first, 2, SETTLE);

    let other = deposito_api::sha256_hex(b"other");
    let half = &bytes[..150_000];
    let half_len = half.len().to_string();
    for (what, headers, chunks, trailers, code) in [
        (
            "wrong trailer",
            vec![
                ("trailer", HEADER_SHA256),
                (HEADER_CONTENT_LENGTH, half_len.as_str()),
            ],
            vec![half],
            vec![(HEADER_SHA256, other.as_str())],
            ErrorCode::DigestMismatch,
        ),
        (
            "malformed trailer",
            vec![("trailer", HEADER_SHA256)],
            vec![half],
            vec![(HEADER_SHA256, "xyz")],
            ErrorCode::InvalidDigest,
        ),
        (
            "announced trailer missing",
            vec![("trailer", HEADER_SHA256)],
            vec![half],
            vec![],
            ErrorCode::IncompleteBody,
        ),
        (
            "body shorter than declared",
            vec![
                ("trailer", HEADER_SHA256),
                (HEADER_CONTENT_LENGTH, len.as_str()),
            ],
            vec![half],
            vec![(HEADER_SHA256, sha.as_str())],
            ErrorCode::IncompleteBody,
        ),
        (
            "body longer than declared",
            vec![(HEADER_CONTENT_LENGTH, "10")],
            vec![half],
            vec![],
            ErrorCode::IncompleteBody,
        ),
        (
            "declared length not a number",
            vec![(HEADER_CONTENT_LENGTH, "ten")],
            vec![half],
            vec![],
            ErrorCode::BadRequest,
        ),
    ] {
        let r = raw_chunked_request(c.op_addr, path, &c.token, &headers, &chunks, &trailers);
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert_eq!(r.error_body().code, code, "{what}: {r:?}");
        let st = c.status("t.bin").await.unwrap().expect("t.bin still there");
        assert_eq!(st.sha256, sha, "{what} changed the file's content");
    }
    let copy = c.scratch("copy.bin");
    c.client_ok(&["retrieve", "t.bin", "-o", copy.to_str().unwrap()]);
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);
}
