//! Runs the built `deposito` binary: exit codes and one-line errors.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn deposito(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deposito"));
    for k in [
        "DEPOSITO_SERVER",
        "DEPOSITO_TOKEN",
        "DEPOSITO_TOKEN_FILE",
        "DEPOSITO_NAMESPACE",
        "DEPOSITO_DATA_DIR",
    ] {
        cmd.env_remove(k);
    }
    cmd.args(args).envs(env.iter().copied());
    cmd.output().unwrap()
}

/// The token, the way to give it without the warning about `--token` on the command line.
const TOKEN: &[(&str, &str)] = &[("DEPOSITO_TOKEN", "t")];

fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn stderr_line(out: &Output) -> String {
    let s = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(s.lines().count(), 1, "stderr is not one line: {s:?}");
    s.trim_end().to_string()
}

#[test]
fn usage_error_exits_2() {
    let out = deposito(&["deposit"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = deposito(&["set-replicas", "f", "many"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unreachable_server_exits_1_with_one_line() {
    let url = closed_port_url();
    let out = deposito(&["--server", &url, "ls"], TOKEN);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_line(&out),
        format!("deposito: cannot reach server {url}: connection refused")
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn env_twins_are_read() {
    let url = closed_port_url();
    let out = deposito(
        &["status", "f"],
        &[("DEPOSITO_SERVER", &url), ("DEPOSITO_TOKEN", "t")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_line(&out),
        format!("deposito: cannot reach server {url}: connection refused")
    );
}

#[test]
fn missing_token_names_the_default_path() {
    let home = tempfile::tempdir().unwrap();
    let out = deposito(&["ls"], &[("HOME", home.path().to_str().unwrap())]);
    assert_eq!(out.status.code(), Some(1));
    let line = stderr_line(&out);
    let want = home.path().join(".local/share/deposito/token");
    assert!(line.starts_with("deposito: no token"), "{line}");
    assert!(line.contains(&want.display().to_string()), "{line}");

    let data = tempfile::tempdir().unwrap();
    let out = deposito(
        &["ls"],
        &[("DEPOSITO_DATA_DIR", data.path().to_str().unwrap())],
    );
    let line = stderr_line(&out);
    assert!(
        line.contains(&data.path().join("token").display().to_string()),
        "{line}"
    );
}

#[test]
fn invalid_name_and_replicas_are_refused_locally() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f.txt");
    std::fs::write(&f, b"x").unwrap();
    let f = f.to_str().unwrap();
    let url = closed_port_url();
    let out = deposito(&["--server", &url, "deposit", f, "--name", "a/b"], TOKEN);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_line(&out),
        "deposito: invalid name 'a/b': name contains '/'"
    );
    let out = deposito(&["--server", &url, "deposit", f, "-r", "0"], TOKEN);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_line(&out),
        "deposito: invalid replicas 0: the replication level must be at least 1"
    );
    let out = deposito(&["-n", "Bad_NS", "ls"], TOKEN);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_line(&out).contains("namespace 'Bad_NS'"));
}

#[test]
fn completions_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = deposito(&["completions", shell], &[]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("deposito"));
    }
}

#[test]
fn a_token_on_the_command_line_is_warned_about() {
    let url = closed_port_url();
    let out = deposito(&["--server", &url, "--token", "t", "ls"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("deposito: warning: --token on the command line is visible"),
        "{stderr}"
    );
    assert_eq!(
        lines[1],
        format!("deposito: cannot reach server {url}: connection refused")
    );
}
