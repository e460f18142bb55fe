//! Local mode keeps its data to its user: after a deposit at N=2, no folder or file under the
//! data folder (catalog, tokens, the replicas' folders, every copy and its metadata) grants
//! anything to group or others; a data folder others can write to is refused at start, with
//! the command that fixes it, and nothing is written into it.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use deposito_api::gateway::FileStatus;
use deposito_e2e::bins::bin;
use deposito_e2e::cluster::{base_tmp, clean_env, free_port};
use deposito_e2e::files::{random_seed, write_random_file};
use deposito_e2e::{proc, wait_for, Launcher, MIB};

/// Every folder and file under `root` (root included), with its permission bits.
fn modes(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push((path.clone(), meta.permissions().mode() & 0o7777));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_folder_and_everything_in_it_are_private_to_the_user() {
    let l = Launcher::start(2, 300).await;
    let input = l.scratch("p.bin");
    write_random_file(&input, 2 * MIB, random_seed());
    let out = l.client(&[
        "deposit",
        input.to_str().unwrap(),
        "--replicas",
        "2",
        "--name",
        "p.bin",
    ]);
    assert!(out.ok(), "deposit: {out}");
    let url = format!("{}/v1/files/default/p.bin/status", l.url());
    wait_for("p.bin at 2 copies", Duration::from_secs(120), || async {
        let s: FileStatus = l.get_json(&url, &l.token).await?;
        s.is_converged().then_some(()).ok_or(format!("{s:?}"))
    })
    .await;

    let all = modes(&l.data_dir);
    let exposed: Vec<_> = all.iter().filter(|(_, mode)| mode & 0o077 != 0).collect();
    assert!(exposed.is_empty(), "open to group or others: {exposed:?}");
    let names: Vec<String> = all
        .iter()
        .map(|(p, _)| p.strip_prefix(&l.data_dir).unwrap().display().to_string())
        .collect();
    for expected in [
        "token",
        "replica-token",
        "catalog.sqlite3",
        "replicas/replica-0",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not found in {names:?}"
        );
    }
    let copies = names
        .iter()
        .filter(|n| n.contains("/objects/default/p.bin@") && !n.ends_with(".json"))
        .count();
    assert!(
        copies >= 2,
        "the 2 copies are among the checked files: {names:?}"
    );
    assert_eq!(all[0], (l.data_dir.clone(), 0o700));
}

#[test]
fn a_data_folder_others_can_write_to_is_refused_and_left_alone() {
    let root = tempfile::Builder::new()
        .prefix("deposito-perm-")
        .tempdir_in(base_tmp())
        .unwrap();
    let data_dir = root.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = free_port(std::net::Ipv4Addr::LOCALHOST);
    let mut cmd = Command::new(bin("deposito-operator"));
    cmd.arg("local")
        .args(["--replicas", "1", "--data-dir"])
        .arg(&data_dir)
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    clean_env(&mut cmd, root.path());
    let out = proc::run(cmd, Duration::from_secs(30));
    assert!(!out.ok(), "started on a world-writable data dir: {out}");
    let fix = format!("chmod go-w {}", data_dir.display());
    assert!(
        out.stderr.contains(&fix),
        "the error names the fix `{fix}`: {out}"
    );
    assert_eq!(
        std::fs::read_dir(&data_dir).unwrap().count(),
        0,
        "nothing written"
    );
    let mode = std::fs::metadata(&data_dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o777, "its mode is left as it was");
}
