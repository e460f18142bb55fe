//! Names that would mislead a reader are refused everywhere a name is taken, after
//! percent-decoding: Unicode format characters (a bidirectional override makes
//! `report\u{202E}fdp.exe` list as `reportexe.pdf`; a zero-width space hides in plain sight)
//! and the reserved prefix `.deposito` in any letter case. Every gateway route, every replica
//! object route and every client command that takes a name answers with the exact status and
//! JSON error body (or a one-line error and exit 1), and nothing is created.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use deposito_api::{ErrorBody, ErrorCode};
use deposito_e2e::files::{object_files, random_seed, tmp_files, write_random_file};
use deposito_e2e::http::{encode_segment, raw_request};
use deposito_e2e::Cluster;
use std::time::Duration;

/// A refused name and the exact error message the servers give for it.
const BAD_NAMES: [(&str, &str); 4] = [
    (
        "report\u{202E}fdp.exe",
        "name contains U+202E (a Unicode format character)",
    ),
    (
        "zero\u{200B}width.txt",
        "name contains U+200B (a Unicode format character)",
    ),
    (
        ".DEPOSITO-x",
        "name must not start with '.deposito' (in any letter case)",
    ),
    (
        ".Deposito",
        "name must not start with '.deposito' (in any letter case)",
    ),
];

/// The names in the catalog and the files under every replica's `objects/` and `tmp/`.
async fn snapshot(c: &Cluster) -> (Vec<String>, Vec<std::path::PathBuf>) {
    let mut names: Vec<String> = c
        .list()
        .await
        .expect("list files")
        .items
        .into_iter()
        .map(|f| f.name)
        .collect();
    names.sort();
    let dirs = c.data_dirs();
    let mut files = object_files(&dirs);
    files.extend(tmp_files(&dirs));
    files.sort();
    (names, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_characters_and_the_reserved_prefix_are_refused_on_every_route() {
    let c = Cluster::builder().replicas(2).start().await;
    let input = c.scratch("in.bin");
    write_random_file(&input, 4096, random_seed());
    let body = std::fs::read(&input).unwrap();
    let sha = deposito_api::sha256_hex(&body);
    let inp = input.to_str().unwrap();

    // One good file, so that "nothing created" is checked against a non-empty catalog.
    c.deposit_ok(&input, 1, "good.bin");
    c.wait_copies(&input, 1, Duration::from_secs(30));
    let before = snapshot(&c).await;
    assert_eq!(before.0, ["good.bin"]);

    let rep = c.replica(1).addr;
    let pull = format!(r#"{{"source":"{}"}}"#, c.replica(2).url());
    let fetch = r#"{"url":"http://example.invalid/x"}"#.to_string();
    for (name, message) in BAD_NAMES {
        let enc = encode_segment(name.as_bytes());
        let want = ErrorBody::new(ErrorCode::InvalidName, message.to_string());
        let gateway_routes = [
            (
                "PUT",
                format!("/v1/files/default/{enc}?replicas=1"),
                body.clone(),
            ),
            ("GET", format!("/v1/files/default/{enc}"), Vec::new()),
            ("HEAD", format!("/v1/files/default/{enc}"), Vec::new()),
            ("DELETE", format!("/v1/files/default/{enc}"), Vec::new()),
            (
                "PATCH",
                format!("/v1/files/default/{enc}"),
                br#"{"replicas":2}"#.to_vec(),
            ),
            ("GET", format!("/v1/files/default/{enc}/status"), Vec::new()),
        ];
        let replica_routes = [
            ("PUT", format!("/v1/objects/default/{enc}"), body.clone()),
            (
                "GET",
                format!("/v1/objects/default/{enc}/{sha}"),
                Vec::new(),
            ),
            (
                "HEAD",
                format!("/v1/objects/default/{enc}/{sha}"),
                Vec::new(),
            ),
            (
                "DELETE",
                format!("/v1/objects/default/{enc}/{sha}"),
                Vec::new(),
            ),
            (
                "POST",
                format!("/v1/objects/default/{enc}/{sha}/pull"),
                pull.clone().into_bytes(),
            ),
            (
                "POST",
                format!("/v1/objects/default/{enc}/{sha}/trash"),
                Vec::new(),
            ),
            (
                "POST",
                format!("/v1/objects/default/{enc}/{sha}/restore"),
                Vec::new(),
            ),
            (
                "POST",
                format!("/v1/objects/default/{enc}/fetch"),
                fetch.clone().into_bytes(),
            ),
        ];
        let routes = gateway_routes
            .into_iter()
            .map(|(m, p, b)| (c.op_addr, c.token.as_str(), m, p, b))
            .chain(
                replica_routes
                    .into_iter()
                    .map(|(m, p, b)| (rep, c.replica_token.as_str(), m, p, b)),
            );
        for (addr, token, method, path, request_body) in routes {
            let what = format!("{method} {path} ({name:?})");
            let r = raw_request(
                addr,
                method,
                &path,
                Some(token),
                &[("content-type", "application/json")],
                &request_body,
            );
            assert_eq!(r.status, 400, "{what}: {r:?}");
            if method != "HEAD" {
                assert_eq!(r.error_body(), want, "{what}: {r:?}");
            }
        }

        // The client refuses before sending anything: one line naming the reason, exit 1.
        let out_path = c.scratch("out.bin");
        let out = out_path.to_str().unwrap();
        for args in [
            vec!["deposit", inp, "--replicas", "1", "--name", name],
            vec!["retrieve", name, "-o", out],
            vec!["set-replicas", name, "2"],
            vec!["status", name],
            vec!["rm", name],
        ] {
            let o = c.client(&args);
            let what = format!("deposito {args:?}");
            assert_eq!(o.code, 1, "{what}: {o}");
            let err = o.stderr.trim();
            assert_eq!(err.lines().count(), 1, "{what}: {o}");
            assert!(err.contains(message), "{what}: {o}");
            // The name is shown escaped, never raw (a raw U+202E would reorder the line).
            assert!(
                !err.contains('\u{202E}') && !err.contains('\u{200B}'),
                "{what}: {o}"
            );
        }
        assert!(!out_path.exists(), "retrieve wrote {out}");
    }

    // A local file whose own name has a format character: its default stored name is refused.
    let sneaky = c.scratch("invoice\u{202E}fdp.exe");
    write_random_file(&sneaky, 1024, random_seed());
    let o = c.client(&["deposit", sneaky.to_str().unwrap(), "--replicas", "1"]);
    assert_eq!(o.code, 1, "{o}");
    assert!(
        o.stderr
            .contains("name contains U+202E (a Unicode format character)"),
        "{o}"
    );

    // Nothing was created anywhere: same catalog, same files on the replicas, no temp files.
    assert_eq!(snapshot(&c).await, before);
}
