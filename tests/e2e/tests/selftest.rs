//! `deposito selftest`, the chart's `helm test` hook, against a local system of 3 replicas, run
//! the way the hook runs it: one invocation of the real `deposito` binary with the global flags
//! (`--server`, `--token-file`, `--namespace`). A good token: exit 0, one line per step, then
//! `selftest ok`, and nothing left behind (not in the catalog, not on any replica's disk). A
//! wrong token, or a level the system can't reach: a non-zero exit, one line on stderr naming
//! the failed step, and nothing left behind either.
//!
//! Needs the workspace binaries: `cargo build --release --bins`, then
//! `cargo test --release -p deposito-e2e --test selftest`.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use deposito_e2e::files::{files_under, random_seed};
use deposito_e2e::proc::{self, Output};
use deposito_e2e::{wait_sync, Cluster};

const PREFIX: &str = "deposito-selftest-";

/// `deposito --server URL --token-file F --namespace default selftest ARGS`, with no token in
/// the environment (the file is the only credential).
fn selftest(c: &Cluster, token: &str, args: &[&str]) -> Output {
    let token_file = c.scratch(&format!("token-{}", random_seed()));
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut cmd = c.client_cmd();
    cmd.env_remove("DEPOSITO_TOKEN")
        .env_remove("DEPOSITO_SERVER")
        .arg("--server")
        .arg(c.url())
        .arg("--token-file")
        .arg(&token_file)
        .args(["--namespace", "default", "selftest"])
        .args(args);
    proc::run(cmd, Duration::from_secs(300))
}

/// The test file's name in a line such as `deposited NAME: ...`, checked for its form.
fn test_file_name(line: &str) -> String {
    let start = line
        .find(PREFIX)
        .unwrap_or_else(|| panic!("no {PREFIX} in {line:?}"));
    let rest = &line[start..];
    let name = &rest[..rest.find(':').unwrap_or(rest.len())];
    let hex = name
        .strip_prefix(PREFIX)
        .and_then(|s| s.strip_suffix(".bin"))
        .unwrap_or_else(|| panic!("bad test file name {name:?}"));
    assert!(
        hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "bad test file name {name:?}"
    );
    name.to_string()
}

/// Nothing in the namespace, and (within a bounded wait) no file of a selftest under any
/// replica's `objects/`.
async fn nothing_left(c: &Cluster) {
    let list = c.list().await.unwrap();
    assert!(list.items.is_empty(), "files left: {:?}", list.items);
    let ls = c.client_ok(&["ls"]);
    assert!(ls.stdout.trim().is_empty(), "ls lists files:\n{ls}");
    wait_sync(
        "no selftest copy under objects/",
        Duration::from_secs(60),
        || {
            let left: Vec<_> = c
                .data_dirs()
                .iter()
                .flat_map(|d| files_under(&d.join("objects")))
                .filter(|p| p.to_string_lossy().contains(PREFIX))
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
}

/// Exit 1, nothing on stdout, one line on stderr that starts with `want`.
fn one_line_failure(out: &Output, want: &str) {
    assert_eq!(out.code, 1, "{out}");
    assert!(!out.stdout.contains("selftest ok"), "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr is not one line: {out}");
    assert!(lines[0].starts_with(want), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selftest_passes_and_leaves_nothing_and_fails_on_one_line() {
    let c = Cluster::builder().replicas(3).start().await;

    let out = selftest(&c, &c.token, &["--replicas", "2"]);
    assert!(out.ok(), "selftest failed: {out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let name = test_file_name(lines[0]);
    assert!(
        lines[0].starts_with(&format!("deposited {name}: 65536 bytes, sha256 "))
            && lines[0].ends_with("(2 copies ready)"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!("retrieved {name}: 65536 bytes, sha256 "))
            && lines[1].ends_with("identical"),
        "{out}"
    );
    assert_eq!(lines[2], format!("deleted {name}"), "{out}");
    assert_eq!(lines[3], "selftest ok", "{out}");
    assert!(out.stderr.is_empty(), "{out}");
    nothing_left(&c).await;

    // Another size and level: a fresh name each run.
    let out = selftest(&c, &c.token, &["--replicas", "3", "--size", "100001"]);
    assert!(out.ok(), "selftest failed: {out}");
    assert!(out.stdout.contains("(3 copies ready)"), "{out}");
    assert_ne!(test_file_name(&out.stdout), name, "{out}");
    nothing_left(&c).await;

    // A wrong token: refused at the first step, nothing stored.
    let out = selftest(&c, "not-the-token", &[]);
    one_line_failure(&out, "deposito: selftest failed at deposit: 401 ");
    nothing_left(&c).await;

    // More copies than replicas: the deposit fails (refused, or not Ready in time) and the
    // file, if it was stored, is deleted.
    let out = selftest(&c, &c.token, &["--replicas", "4", "--timeout", "5"]);
    one_line_failure(&out, "deposito: selftest failed at deposit: ");
    nothing_left(&c).await;
}
