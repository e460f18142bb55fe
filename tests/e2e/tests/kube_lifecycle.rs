//! Lifecycles and retention locks in kube mode, through the chart on a real control plane:
//!
//! - the API server refuses invalid schedules in a StoredFile (CEL): decreasing ages, 0
//!   copies, an expiry before a step, an empty lifecycle;
//! - `aged` (`spec.replicas: 3`, a step to 1 copy at 20 s, expiry at 40 s): exactly 3
//!   copies, then exactly 1 after ~20 s, then the StoredFile and every copy gone after ~40 s,
//!   with the operator pod killed in the middle; the status shows the level in force, the
//!   step, the next transition (the NEXT column) and the expiry; Events at each transition;
//! - the same schedule deposited through the gateway (`deposito deposit --lifecycle`) lands
//!   in `spec.lifecycle`;
//! - `renewed`: content replaced 10 s into its life restarts its age: at the first content's
//!   step time it still has 2 copies, and steps to 1 only 20 s after the new content;
//! - `kept` (`spec.retainUntil` 50 s ahead): the API server refuses lowering it, changing
//!   its content and shortening the lock; the gateway refuses `DELETE` with 403 `retained`
//!   and the date; `kubectl delete` leaves it Terminating with its copies (Event
//!   DeletionHeld) until the lock ends, then it goes.
//!
//! Ignored by a plain `cargo test` (it needs the Go-built control plane); `tests/run-all`
//! runs it with `--ignored` on the real node.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deposito_api::lifecycle::{format_time, parse_time};
use deposito_api::sha256_hex;
use deposito_e2e::bins::bin;
use deposito_e2e::kube_cluster::KubeCluster;
use deposito_e2e::proc;
use deposito_e2e::wait::wait_sync;
use serde_json::Value;

const NS: &str = "life";
const RELEASE: &str = "life";
const WAIT: Duration = Duration::from_secs(120);

fn step(name: &str, started: Instant) {
    println!("--- [{:>5.1}s] {name}", started.elapsed().as_secs_f64());
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A StoredFile manifest with inline `content` and the extra spec lines `extra` (YAML,
/// indented by two spaces).
fn manifest(name: &str, replicas: u32, content: &str, extra: &str) -> String {
    format!(
        "apiVersion: deposito.io/v1alpha1\nkind: StoredFile\nmetadata: {{name: {name}}}\n\
         spec:\n  replicas: {replicas}\n  source:\n    inline: {}\n{extra}",
        serde_json::to_string(content).unwrap()
    )
}

struct Env {
    k: KubeCluster,
}

impl Env {
    fn sf(&self, name: &str) -> Option<Value> {
        self.k.get_json(NS, "sf", name)
    }

    fn apply(&self, yaml: &str) -> proc::Output {
        self.k.apply(NS, yaml)
    }

    /// Waits until `name` holds exactly `n` copies of `content`; returns its status.
    fn wait_copies(&self, name: &str, content: &str, n: usize) -> Value {
        self.k.wait_copies(NS, name, content.as_bytes(), n, WAIT);
        self.sf(name).unwrap()["status"].clone()
    }

    /// Waits until `name`'s current content is `content` with exactly `n` copies of it on
    /// disk (copies of its earlier content may still be kept a while: the stale guard);
    /// returns its status.
    fn wait_content_copies(&self, name: &str, content: &str, n: usize) -> Value {
        let sha = sha256_hex(content.as_bytes());
        wait_sync(
            &format!("{name} at {n} copies of its content"),
            WAIT,
            || {
                let st = self.sf(name).unwrap()["status"].clone();
                let held = self.k.holders(NS, name, &sha, content.as_bytes()).len();
                (st["sha256"] == sha.as_str() && held == n)
                    .then_some(st.clone())
                    .ok_or(format!("{held} copies, status {st}"))
            },
        )
    }

    /// A status time field in milliseconds since the Unix epoch.
    fn time_ms(status: &Value, field: &str) -> u64 {
        let text = status[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {status}"));
        parse_time(text).unwrap()
    }

    fn gateway(&self) -> String {
        format!("http://{}:7800", self.k.operator_pod(NS).1)
    }

    fn token(&self) -> String {
        self.k
            .secret_value(NS, &format!("{RELEASE}-deposito-tokens"), "client-token")
    }

    fn client(&self, args: &[&str]) -> proc::Output {
        let mut cmd = Command::new(bin("deposito"));
        cmd.args(["--server", &self.gateway(), "-n", NS])
            .env("DEPOSITO_TOKEN", self.token())
            .args(args);
        proc::run(cmd, Duration::from_secs(120))
    }

    /// `curl -X method` of a gateway path: (status code, body).
    fn curl(&self, method: &str, path: &str) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-X", method, "-w", "\n%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {}", self.token()))
            .arg(format!("{}{path}", self.gateway()));
        let out = proc::run(cmd, Duration::from_secs(30));
        let (body, code) = out.stdout.trim_end().rsplit_once('\n').unwrap_or(("", ""));
        (code.parse().unwrap_or(0), body.to_string())
    }

    /// The reasons of the Events about `name`.
    fn event_reasons(&self, name: &str) -> Vec<String> {
        self.k
            .events(NS, name)
            .into_iter()
            .map(|(reason, _)| reason)
            .collect()
    }

    /// Waits until `name` and every copy of it are gone; returns when.
    fn wait_gone(&self, name: &str, timeout: Duration) -> u64 {
        wait_sync(&format!("{name} gone"), timeout, || {
            let copies = self.k.any_copies(NS, name);
            match (self.sf(name), copies.is_empty()) {
                (None, true) => Ok(now_ms()),
                (sf, _) => Err(format!(
                    "{:?}, copies {copies:?}",
                    sf.map(|s| s["status"].clone())
                )),
            }
        })
    }
}

#[test]
#[ignore = "needs the Go-built control plane: tests/run-all runs it"]
fn lifecycles_and_retention_locks_in_kube_mode() {
    let t = Instant::now();
    let env = Env {
        k: KubeCluster::start(),
    };
    let install = env.k.helm_install(RELEASE, NS, &["replica.replicas=3"]);
    assert!(install.ok(), "helm install: {install}");
    step("cluster up, chart installed", t);

    // Invalid schedules: the API server refuses them, naming the rule.
    for (extra, says) in [
        (
            "  lifecycle: {steps: [{after: 20s, replicas: 2}, {after: 10s, replicas: 1}]}\n",
            "must increase",
        ),
        (
            "  lifecycle: {steps: [{after: 1d, replicas: 2}, {after: 24h, replicas: 1}]}\n",
            "must increase",
        ),
        (
            "  lifecycle: {steps: [{after: 20s, replicas: 0}]}\n",
            "replicas",
        ),
        (
            "  lifecycle: {steps: [{after: 20s, replicas: 1}], expireAfter: 10s}\n",
            "expireAfter must come after the last step",
        ),
        ("  lifecycle: {}\n", "needs steps or expireAfter"),
        ("  lifecycle: {expireAfter: 5x}\n", "expireAfter"),
    ] {
        let out = env.apply(&manifest("bad", 2, "bad", extra));
        assert!(!out.ok(), "{extra} was accepted");
        assert!(out.stderr.contains(says), "{extra}: {}", out.stderr);
    }
    assert!(env.sf("bad").is_none());
    step("invalid schedules refused by the API server", t);

    // Three files whose lives run side by side.
    let aged = "aged content\n";
    let lifecycle = "  lifecycle:\n    steps: [{after: 20s, replicas: 1}]\n    expireAfter: 40s\n";
    assert!(env.apply(&manifest("aged", 3, aged, lifecycle)).ok());
    let renewed = "renewed, first content\n";
    let to_one = "  lifecycle:\n    steps: [{after: 20s, replicas: 1}]\n";
    assert!(env.apply(&manifest("renewed", 2, renewed, to_one)).ok());
    let kept = "kept content\n";
    let until = format_time(now_ms() + 50_000);
    let lock = format!("  retainUntil: \"{until}\"\n");
    assert!(env.apply(&manifest("kept", 2, kept, &lock)).ok());

    env.wait_copies("aged", aged, 3);
    let st = wait_sync("aged's next transition in its status", WAIT, || {
        let st = env.sf("aged").unwrap()["status"].clone();
        st["nextTransition"]
            .is_string()
            .then_some(st.clone())
            .ok_or(st.to_string())
    });
    let since = Env::time_ms(&st, "contentSince");
    assert_eq!(st["replicasInForce"], 3, "{st}");
    assert_eq!(st["lifecycleStep"], 0, "{st}");
    assert_eq!(
        Env::time_ms(&st, "nextTransition"),
        since / 1000 * 1000 + 20_000
    );
    assert_eq!(Env::time_ms(&st, "expires"), since / 1000 * 1000 + 40_000);
    let wide = env
        .k
        .kubectl_ok(&["get", "sf", "aged", "-n", NS, "-o", "wide"]);
    assert!(wide.contains("NEXT") && wide.contains("IN FORCE"), "{wide}");
    assert!(
        wide.contains(st["nextTransition"].as_str().unwrap()),
        "{wide}"
    );
    step(
        "aged: 3 copies, next transition and expiry in the status",
        t,
    );

    // The same schedule through the gateway lands in spec.lifecycle.
    let file = env.k.dir.join("deposited.txt");
    std::fs::write(&file, "deposited through the gateway\n").unwrap();
    let out = env.client(&[
        "deposit",
        file.to_str().unwrap(),
        "--lifecycle",
        "3,1@20s,expire@40s",
    ]);
    assert!(out.ok(), "deposit --lifecycle: {out}");
    let spec = &env.sf("deposited.txt").unwrap()["spec"];
    assert_eq!(spec["replicas"], 3, "{spec}");
    assert_eq!(spec["lifecycle"]["steps"][0]["after"], "20s", "{spec}");
    assert_eq!(spec["lifecycle"]["expireAfter"], "40s", "{spec}");
    let out = env.client(&["status", "deposited.txt"]);
    // (In kube mode the starting level is spec.replicas: the lifecycle keeps the steps.)
    assert!(
        out.ok() && out.stdout.contains("1@20s,expire@40s (step 0 in force)"),
        "{out}"
    );
    assert!(out.stdout.contains("3 wanted"), "{out}");
    step("deposit --lifecycle: spec.lifecycle set", t);

    // The operator restarts in the middle of the schedules.
    env.k.kill_operator_pod(NS, WAIT);
    step("operator pod killed and replaced", t);

    // Content replaced 10 s into its life.
    let st = env.wait_copies("renewed", renewed, 2);
    let first_since = Env::time_ms(&st, "contentSince");
    std::thread::sleep(Duration::from_millis(
        (first_since + 10_000).saturating_sub(now_ms()),
    ));
    let renewed2 = "renewed, second content\n";
    assert!(env.apply(&manifest("renewed", 2, renewed2, to_one)).ok());
    let st = env.wait_content_copies("renewed", renewed2, 2);
    let second_since = Env::time_ms(&st, "contentSince");
    assert!(second_since >= first_since + 9_000, "{st}");
    step("renewed: content replaced, its age restarted", t);

    // The lock: what the API server and the gateway refuse.
    let st = wait_sync("kept locked in the status", WAIT, || {
        let st = env.sf("kept").unwrap()["status"].clone();
        st["retainedUntil"]
            .is_string()
            .then_some(st.clone())
            .ok_or(st.to_string())
    });
    assert_eq!(st["retainedUntil"].as_str(), Some(until.as_str()));
    for (patch, what) in [
        (r#"{"spec":{"replicas":1}}"#, "lower"),
        (r#"{"spec":{"source":{"inline":"other"}}}"#, "new content"),
        (
            r#"{"spec":{"retainUntil":"2001-01-01T00:00:00Z"}}"#,
            "shorter lock",
        ),
        (r#"{"spec":{"retainUntil":null}}"#, "no lock"),
    ] {
        let out = env.k.kubectl(&[
            "patch", "sf", "kept", "-n", NS, "--type", "merge", "-p", patch,
        ]);
        assert!(!out.ok(), "{what} was accepted");
        assert!(
            out.stderr.contains("retention lock"),
            "{what}: {}",
            out.stderr
        );
    }
    let (code, body) = env.curl("DELETE", &format!("/v1/files/{NS}/kept"));
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("\"retained\"") && body.contains(&until),
        "{body}"
    );
    env.k
        .kubectl_ok(&["delete", "sf", "kept", "-n", NS, "--wait=false"]);
    std::thread::sleep(Duration::from_secs(3));
    let sf = env.sf("kept").expect("kept is held by its finalizer");
    assert!(sf["metadata"]["deletionTimestamp"].is_string(), "{sf}");
    let sha = sha256_hex(kept.as_bytes());
    assert_eq!(env.k.holders(NS, "kept", &sha, kept.as_bytes()).len(), 2);
    assert!(env
        .event_reasons("kept")
        .contains(&"DeletionHeld".to_string()));
    step(
        "kept: lowering, new content, a shorter lock and DELETE refused; deletion held",
        t,
    );

    // aged steps to 1 copy at ~20 s.
    let st = env.wait_copies("aged", aged, 1);
    let stepped = now_ms();
    assert!(
        stepped >= since + 19_000,
        "stepped after {} ms",
        stepped - since
    );
    assert_eq!(
        (st["replicasInForce"].as_i64(), st["lifecycleStep"].as_i64()),
        (Some(1), Some(1))
    );
    assert!(env
        .event_reasons("aged")
        .contains(&"LifecycleStep".to_string()));
    step("aged: exactly 1 copy after 20 s", t);

    // renewed: at its first content's step time it keeps 2 copies.
    std::thread::sleep(Duration::from_millis(
        (first_since + 22_000).saturating_sub(now_ms()),
    ));
    if now_ms() < second_since + 19_000 {
        let st = env.sf("renewed").unwrap()["status"].clone();
        assert_eq!(st["replicasInForce"], 2, "{st}");
        let sha2 = sha256_hex(renewed2.as_bytes());
        assert_eq!(
            env.k
                .holders(NS, "renewed", &sha2, renewed2.as_bytes())
                .len(),
            2
        );
    }
    env.wait_content_copies("renewed", renewed2, 1);
    assert!(now_ms() >= second_since + 19_000);
    step("renewed: 1 copy 20 s after its new content, not before", t);

    // aged expires at ~40 s: the StoredFile and its copies go.
    let gone = env.wait_gone("aged", WAIT);
    assert!(gone >= since + 39_000, "gone after {} ms", gone - since);
    step("aged: gone after 40 s", t);

    // kept goes once its lock ends.
    let gone = env.wait_gone("kept", WAIT);
    assert!(
        gone >= parse_time(&until).unwrap(),
        "kept went before its lock ended"
    );
    step("kept: gone once its lock ended", t);
}
