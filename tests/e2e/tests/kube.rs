//! Kube mode end to end, on a real control plane (`tests/cluster/up`): the chart installed
//! with helm, the operator running under the chart's ServiceAccount and RBAC, replicas as
//! StatefulSet pods, StoredFiles applied with kubectl. One cluster, steps in order; each step
//! asserts exact copy counts and bytes in the replicas' volumes.
//!
//! Ignored by a plain `cargo test` (it needs the Go-built control plane); `tests/run-all` runs
//! it with `--ignored` after the control-plane smoke test has built and cached the binaries.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use deposito_api::sha256_hex;
use deposito_e2e::bins::bin;
use deposito_e2e::files::copy_path;
use deposito_e2e::kube_cluster::KubeCluster;
use deposito_e2e::proc::{self, Proc};
use deposito_e2e::wait::wait_sync;
use serde_json::Value;

const NS: &str = "dep";
const RELEASE: &str = "dep";
const GRACE_SECS: u64 = 8;
const WAIT: Duration = Duration::from_secs(120);

struct Env {
    k: KubeCluster,
}

impl Env {
    fn sf(&self, name: &str) -> Value {
        self.k
            .get_json(NS, "sf", name)
            .unwrap_or_else(|| panic!("StoredFile {name} missing"))
    }

    /// Waits until the StoredFile is Ready at `n` copies for its current generation, and `n`
    /// claims hold exactly `content`. Returns the holder claims.
    fn wait_copies(&self, name: &str, content: &[u8], n: usize) -> Vec<String> {
        let sha = sha256_hex(content);
        wait_sync(&format!("{name} at {n} copies"), WAIT, || {
            let sf = self.sf(name);
            let st = &sf["status"];
            let holders = self.k.holders(NS, name, &sha, content);
            let converged = st["phase"] == "Ready"
                && st["readyReplicas"] == n as u64
                && st["observedGeneration"] == sf["metadata"]["generation"]
                && holders.len() == n
                && self.k.any_copies(NS, name).len() == n;
            if converged {
                Ok(holders)
            } else {
                Err(format!("status {st}, holders on disk {holders:?}"))
            }
        })
    }

    fn operator_pod(&self) -> (String, String) {
        self.k.operator_pod(NS)
    }

    /// Sets the verbs of the first rule of Role `role` (a JSON array, e.g. `["get","watch"]`).
    fn set_role_verbs(&self, role: &str, verbs: &str) {
        let patch = format!(r#"[{{"op":"replace","path":"/rules/0/verbs","value":{verbs}}}]"#);
        self.k.kubectl_ok(&[
            "patch", "role", role, "-n", NS, "--type", "json", "-p", &patch,
        ]);
    }

    /// Deletes the running operator pod at once and waits for the one its Deployment starts.
    fn kill_operator_pod(&self) {
        self.k.kill_operator_pod(NS, WAIT);
    }

    fn gateway(&self) -> String {
        format!("http://{}:7800", self.operator_pod().1)
    }

    fn client_token(&self) -> String {
        self.k
            .secret_value(NS, &format!("{RELEASE}-deposito-tokens"), "client-token")
    }

    /// The `deposito` client against the gateway, in namespace `dep`.
    fn client(&self, args: &[&str]) -> proc::Output {
        let mut cmd = Command::new(bin("deposito"));
        cmd.args([
            "--server",
            &self.gateway(),
            "--token",
            &self.client_token(),
            "-n",
            NS,
        ])
        .args(args);
        proc::run(cmd, Duration::from_secs(300))
    }

    fn inline(&self, name: &str, replicas: u32, content: &str) {
        let yaml = format!(
            "apiVersion: deposito.io/v1alpha1\nkind: StoredFile\nmetadata: {{name: {name}}}\n\
             spec:\n  replicas: {replicas}\n  source:\n    inline: {}\n",
            serde_json::to_string(content).unwrap()
        );
        let out = self.k.apply(NS, &yaml);
        assert!(out.ok(), "apply {name}: {out}");
    }

    fn patch_replicas(&self, name: &str, n: u32) {
        self.k.kubectl_ok(&[
            "patch",
            "sf",
            name,
            "-n",
            NS,
            "--type",
            "merge",
            "-p",
            &format!("{{\"spec\":{{\"replicas\":{n}}}}}"),
        ]);
    }

    /// Events about one StoredFile, as (reason, note).
    fn events(&self, name: &str) -> Vec<(String, String)> {
        self.k.events(NS, name)
    }

    fn replica_pods(&self) -> Vec<String> {
        self.k
            .replica_pods(NS)
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    }
}

fn claim_of(pod: &str) -> String {
    format!("data-{pod}")
}

fn pod_of(claim: &str) -> String {
    claim.trim_start_matches("data-").to_string()
}

fn ordinal(pod: &str) -> usize {
    pod.rsplit('-').next().unwrap().parse().unwrap()
}

fn step(name: &str, started: Instant) {
    println!("--- [{:>5.1}s] {name}", started.elapsed().as_secs_f64());
}

#[test]
#[ignore = "needs the Go-built control plane: tests/run-all runs it"]
fn operator_end_to_end_on_a_real_control_plane() {
    let t = Instant::now();
    let env = Env {
        k: KubeCluster::start(),
    };
    let k = &env.k;
    step("cluster up", t);

    // 1. helm install; the operator runs under the chart's ServiceAccount.
    assert!(k.helm(&["lint", "charts/deposito"]).ok(), "helm lint");
    let grace = format!("operator.gracePeriodSeconds={GRACE_SECS}");
    let install = k.helm_install(
        RELEASE,
        NS,
        &[
            "replica.replicas=4",
            "replica.fetchAllowPrivate=true",
            &grace,
            "operator.orphanGraceSeconds=5",
            "replica.storage.size=1Gi",
        ],
    );
    assert!(install.ok(), "helm install: {install}");
    let (operator, _) = env.operator_pod();
    let pod = k.get_json(NS, "pod", &operator).unwrap();
    assert_eq!(
        pod["spec"]["serviceAccountName"],
        format!("{RELEASE}-deposito-operator")
    );
    assert_eq!(env.replica_pods().len(), 4);
    step(
        "helm install: operator under its ServiceAccount, 4 replica pods",
        t,
    );

    // 1b. The API server enforces the CRD's rules.
    let invalid = [
        (
            "replicas 0",
            "spec: {replicas: 0, source: {inline: x}}",
            "spec.replicas",
        ),
        (
            "two sources",
            "spec: {replicas: 1, source: {inline: x, url: 'http://example.com/x'}}",
            "exactly one of source.inline, source.url and source.upload",
        ),
        (
            "no source",
            "spec: {replicas: 1, source: {}}",
            "exactly one of source.inline",
        ),
        (
            "a ftp url",
            "spec: {replicas: 1, source: {url: 'ftp://example.com/x'}}",
            "spec.source.url",
        ),
        (
            "a '/' in fileName",
            "spec: {replicas: 1, fileName: a/b, source: {inline: x}}",
            "fileName must not contain",
        ),
        (
            "a right-to-left override in fileName",
            "spec: {replicas: 1, fileName: \"report\\u202Efdp.exe\", source: {inline: x}}",
            "Unicode format characters",
        ),
        (
            "a zero-width space in fileName",
            "spec: {replicas: 1, fileName: \"a\\u200Bb.txt\", source: {inline: x}}",
            "Unicode format characters",
        ),
        (
            "the reserved prefix in capitals",
            "spec: {replicas: 1, fileName: .DEPOSITO-x, source: {inline: x}}",
            "in any letter case",
        ),
    ];
    for (what, spec, message) in invalid {
        let yaml = format!("apiVersion: deposito.io/v1alpha1\nkind: StoredFile\nmetadata: {{name: invalid}}\n{spec}\n");
        let out = k.apply(NS, &yaml);
        assert!(!out.ok(), "{what} was accepted");
        assert!(out.stderr.contains(message), "{what}: {}", out.stderr);
        assert!(
            k.get_json(NS, "sf", "invalid").is_none(),
            "{what}: nothing created"
        );
    }
    step(
        "the API server rejects replicas 0, two sources, no source, a ftp url, a '/' name, \
         format characters and the reserved prefix in any case",
        t,
    );

    // 2. An inline StoredFile at 2 copies.
    let hello = "hello from a StoredFile\n";
    env.inline("hello.txt", 2, hello);
    env.wait_copies("hello.txt", hello.as_bytes(), 2);
    step("inline at 2: exactly 2 byte-identical copies", t);

    // 3. 3, then 1: copies follow, observedGeneration matches.
    env.patch_replicas("hello.txt", 3);
    env.wait_copies("hello.txt", hello.as_bytes(), 3);
    env.patch_replicas("hello.txt", 1);
    env.wait_copies("hello.txt", hello.as_bytes(), 1);
    step("patched to 3, then 1", t);

    // 4. A deposit through the gateway becomes a StoredFile with every column filled.
    let data_dir = k.dir.join("files");
    std::fs::create_dir_all(&data_dir).unwrap();
    let report = data_dir.join("Report 2026.bin");
    let report_sha = deposito_e2e::write_random_file(&report, 3 << 20, 7);
    let out = env.client(&["deposit", report.to_str().unwrap(), "--replicas", "2"]);
    assert!(out.ok(), "deposit: {out}");
    let resource = deposito_api::names::resource_name("Report 2026.bin");
    let report_bytes = std::fs::read(&report).unwrap();
    env.wait_copies(&resource, &report_bytes, 2);
    let table = k.kubectl_ok(&["get", "sf", "-n", NS]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "REPLICAS", "READY", "SIZE", "PHASE", "AGE"]
    );
    let row = table
        .lines()
        .find(|l| l.starts_with(&resource))
        .expect("row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1..5], ["2", "2", "3.0", "MiB"][..], "row {row}");
    assert_eq!(cells[5], "Ready", "row {row}");
    let copy = data_dir.join("copy.bin");
    let out = env.client(&["retrieve", "Report 2026.bin", "-o", copy.to_str().unwrap()]);
    assert!(out.ok(), "retrieve: {out}");
    assert_eq!(deposito_e2e::files::sha256_file(&copy).unwrap(), report_sha);
    // The content's attributes go with it: the acknowledgement time, naming its digest.
    let content = k.kubectl_ok(&[
        "get",
        "sf",
        "-n",
        NS,
        &resource,
        "-o",
        "jsonpath={.metadata.annotations.deposito\\.io/content}",
    ]);
    let content: serde_json::Value = serde_json::from_str(content.trim()).unwrap();
    assert_eq!(content["sha256"], report_sha.as_str(), "{content}");
    assert_eq!(content["s"], 3u64 << 20, "{content}");
    assert!(
        content["t"].as_u64().unwrap_or(0) > 1_700_000_000_000,
        "{content}"
    );
    println!("{table}");
    step(
        "gateway deposit: listed with every column, retrieved identical",
        t,
    );

    // 5. url sources: fetched and pinned; a wrong digest fails with an Event and no copy.
    let served = data_dir.join("served");
    std::fs::create_dir_all(&served).unwrap();
    let page = b"served over http for a url StoredFile\n".repeat(100);
    std::fs::write(served.join("page.txt"), &page).unwrap();
    let host = k.host_address();
    let port = deposito_e2e::cluster::free_port(host);
    let mut http = Command::new("python3");
    http.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        &host.to_string(),
    ])
    .current_dir(&served);
    let _server = Proc::spawn("http.server", http, &k.dir.join("http.log"));
    let url = format!("http://{host}:{port}/page.txt");
    let manifest = |name: &str, sha: Option<&str>| {
        let sha = sha
            .map(|s| format!("  sha256: \"{s}\"\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: deposito.io/v1alpha1\nkind: StoredFile\nmetadata: {{name: {name}}}\n\
             spec:\n  replicas: 2\n{sha}  source:\n    url: {url}\n"
        )
    };
    let out = k.apply(NS, &manifest("page", None));
    assert!(out.ok(), "apply page: {out}");
    env.wait_copies("page", &page, 2);
    assert_eq!(env.sf("page")["status"]["sha256"], sha256_hex(&page));
    let wrong = "0".repeat(64);
    let out = k.apply(NS, &manifest("page-wrong", Some(&wrong)));
    assert!(out.ok(), "apply page-wrong: {out}");
    wait_sync("a Failed condition and a Failed event", WAIT, || {
        let st = env.sf("page-wrong")["status"].clone();
        let failed = st["conditions"].as_array().into_iter().flatten().any(|c| {
            c["type"] == "Failed" && c["status"] == "True" && c["reason"] == "DigestMismatch"
        });
        let event = env.events("page-wrong").iter().any(|(r, _)| r == "Failed");
        (failed && event && st["phase"] == "Failed")
            .then_some(())
            .ok_or_else(|| format!("status {st}"))
    });
    assert!(
        k.any_copies(NS, "page-wrong").is_empty(),
        "no copy of refused content"
    );
    step(
        "url: fetched with the right digest; a wrong digest Failed, evented, no copy",
        t,
    );

    // 6a. A holder gone for longer than the grace period is replaced; back, its extra is trimmed.
    let (grace_name, grace_body, lost) = (0..20)
        .find_map(|i| {
            let name = format!("grace-{i}");
            let body = format!("grace test {i}\n");
            env.inline(&name, 2, &body);
            let holders = env.wait_copies(&name, body.as_bytes(), 2);
            let mut ords: Vec<usize> = holders.iter().map(|c| ordinal(&pod_of(c))).collect();
            ords.sort();
            // The highest holder must leave alone, and two pods must remain.
            (ords[1] >= 2).then(|| (name, body, ords[1]))
        })
        .expect("a file whose higher holder has ordinal 2 or more");
    k.kubectl_ok(&[
        "scale",
        "statefulset",
        &format!("{RELEASE}-deposito-replica"),
        "-n",
        NS,
        &format!("--replicas={lost}"),
    ]);
    let gone_pod = format!("{RELEASE}-deposito-replica-{lost}");
    let scaled_at = Instant::now();
    wait_sync("the lost holder counted as unreachable", WAIT, || {
        let st = env.sf(&grace_name)["status"].clone();
        (st["unreachableHolders"] == serde_json::json!([gone_pod]))
            .then_some(())
            .ok_or_else(|| format!("{st}"))
    });
    let within = scaled_at.elapsed();
    let live_claims: Vec<String> = (0..lost)
        .map(|i| claim_of(&format!("{RELEASE}-deposito-replica-{i}")))
        .collect();
    let live_holders = |name: &str, body: &str| -> Vec<String> {
        k.holders(NS, name, &sha256_hex(body.as_bytes()), body.as_bytes())
            .into_iter()
            .filter(|c| live_claims.contains(c))
            .collect()
    };
    if within < Duration::from_secs(GRACE_SECS - 2) {
        assert_eq!(
            live_holders(&grace_name, &grace_body).len(),
            1,
            "not replaced within the grace period"
        );
    }
    let replaced = wait_sync("the copy replaced after the grace period", WAIT, || {
        let live = live_holders(&grace_name, &grace_body);
        (live.len() == 2)
            .then_some(scaled_at.elapsed())
            .ok_or_else(|| format!("{live:?}"))
    });
    assert!(
        replaced >= Duration::from_secs(GRACE_SECS),
        "replaced after {replaced:?}, before the grace period"
    );
    k.kubectl_ok(&[
        "scale",
        "statefulset",
        &format!("{RELEASE}-deposito-replica"),
        "-n",
        NS,
        "--replicas=4",
    ]);
    env.wait_copies(&grace_name, grace_body.as_bytes(), 2);
    step(
        &format!(
            "holder gone: replaced after {replaced:.1?} (grace {GRACE_SECS}s); back: extra trimmed"
        ),
        t,
    );

    // 6b. Draining a pod moves its copies away.
    let holders = env.wait_copies(&grace_name, grace_body.as_bytes(), 2);
    let drained = pod_of(&holders[0]);
    k.kubectl_ok(&[
        "annotate",
        "pod",
        &drained,
        "-n",
        NS,
        "deposito.io/drain=true",
    ]);
    wait_sync("the drained pod emptied, 2 copies elsewhere", WAIT, || {
        let now = k.holders(
            NS,
            &grace_name,
            &sha256_hex(grace_body.as_bytes()),
            grace_body.as_bytes(),
        );
        (now.len() == 2 && !now.contains(&claim_of(&drained)))
            .then_some(())
            .ok_or_else(|| format!("{now:?}"))
    });
    k.kubectl_ok(&["annotate", "pod", &drained, "-n", NS, "deposito.io/drain-"]);
    step("drain: copy moved off the annotated pod", t);

    // 7. Deleting a StoredFile removes every copy, then the finalizer lets it go.
    let out = k.kubectl(&["delete", "sf", &grace_name, "-n", NS, "--timeout=60s"]);
    assert!(out.ok(), "delete: {out}");
    assert!(k.get_json(NS, "sf", &grace_name).is_none());
    assert!(
        k.any_copies(NS, &grace_name).is_empty(),
        "copies left after delete"
    );
    step("delete: every copy gone, finalizer released", t);

    // 8. Operator restarted mid-replication: it converges.
    let big = data_dir.join("big.bin");
    deposito_e2e::write_random_file(&big, 64 << 20, 11);
    let out = env.client(&["deposit", big.to_str().unwrap(), "--replicas", "1"]);
    assert!(out.ok(), "deposit big: {out}");
    let big_bytes = std::fs::read(&big).unwrap();
    env.wait_copies("big.bin", &big_bytes, 1);
    env.patch_replicas("big.bin", 4);
    let (old_operator, _) = env.operator_pod();
    k.kubectl_ok(&[
        "delete",
        "pod",
        &old_operator,
        "-n",
        NS,
        "--grace-period=0",
        "--force",
    ]);
    env.wait_copies("big.bin", &big_bytes, 4);
    let (new_operator, _) = env.operator_pod();
    assert_ne!(new_operator, old_operator);
    step(
        "operator killed mid-replication: converged to 4 under a new pod",
        t,
    );

    let describe = k.kubectl_ok(&["describe", "sf", "hello.txt", "-n", NS]);
    let wide = k.kubectl_ok(&["get", "sf", "-n", NS, "-o", "wide"]);
    println!("{wide}\n{describe}");
    std::fs::write(k.dir.join("kubectl-get-sf-wide.txt"), &wide).ok();
    std::fs::write(k.dir.join("kubectl-describe-sf.txt"), &describe).ok();

    // 9. RBAC: without `list` on pods the operator reports Forbidden and deletes nothing.
    // The copies are read once the operator that could still list pods is gone, so that a
    // move or repair it finished on its way out is not counted against the blind one.
    let role = format!("{RELEASE}-deposito-operator");
    env.set_role_verbs(&role, r#"["get","watch"]"#);
    env.kill_operator_pod();
    let before = k.any_copies(NS, "hello.txt");
    env.patch_replicas("hello.txt", 2);
    wait_sync("Forbidden in status and in an Event", WAIT, || {
        let st = env.sf("hello.txt")["status"].clone();
        let in_status = st["conditions"].as_array().into_iter().flatten().any(|c| {
            c["reason"] == "Forbidden"
                && c["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("forbidden"))
        });
        let in_events = env
            .events("hello.txt")
            .iter()
            .any(|(r, n)| r == "Failed" && n.contains("forbidden"));
        (in_status && in_events)
            .then_some(())
            .ok_or_else(|| format!("{st}"))
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        k.any_copies(NS, "hello.txt"),
        before,
        "nothing deleted or added while blind"
    );
    env.set_role_verbs(&role, r#"["get","list","watch"]"#);
    // The operator retries with backoff; restarting it only makes the test quicker.
    env.kill_operator_pod();
    env.wait_copies("hello.txt", hello.as_bytes(), 2);
    step(
        "RBAC without pod list: Forbidden reported, nothing deleted; restored: converged",
        t,
    );

    // 10. Without list/watch on StoredFiles, the restarted operator sees none: orphan
    // collection pauses (readyz, metric), and after 3× the orphan grace every copy is there.
    // Every copy file in the replicas' volumes, served or in the trash.
    let census = || {
        let mut all: Vec<_> = k
            .claim_dirs(NS)
            .iter()
            .flat_map(|(_, dir)| {
                let served = deposito_e2e::files::files_under(&dir.join("objects"));
                served
                    .into_iter()
                    .chain(deposito_e2e::files::files_under(&dir.join("trash")))
            })
            .filter(|p| p.extension().is_none_or(|e| e != "json"))
            .collect();
        all.sort();
        all
    };
    let before = census();
    assert!(
        before
            .iter()
            .any(|p| p.to_string_lossy().contains("/objects/dep/hello.txt@")),
        "{before:?}"
    );
    let sf_role = format!("{RELEASE}-deposito-storedfiles");
    env.set_role_verbs(&sf_role, r#"["get","create","patch","update","delete"]"#);
    env.kill_operator_pod();
    wait_sync("orphan collection paused and shown", WAIT, || {
        let (_, ip) = env.operator_pod();
        let ready = curl(&format!("http://{ip}:7800/readyz"));
        let metrics = curl(&format!("http://{ip}:9090/metrics"));
        let paused =
            deposito_e2e::metrics::sum(&metrics, "deposito_operator_orphan_collection_paused", &[]);
        (ready.contains("\"orphanCollection\":\"paused") && paused == 1.0)
            .then_some(())
            .ok_or(format!("readyz {ready}; paused {paused}"))
    });
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(
        census(),
        before,
        "copies collected while StoredFiles were unlistable"
    );
    env.set_role_verbs(
        &sf_role,
        r#"["get","list","watch","create","patch","update","delete"]"#,
    );
    wait_sync("orphan collection active again", WAIT, || {
        let (_, ip) = env.operator_pod();
        let ready = curl(&format!("http://{ip}:7800/readyz"));
        ready
            .contains("\"orphanCollection\":\"active\"")
            .then_some(())
            .ok_or(ready)
    });
    env.wait_copies("hello.txt", hello.as_bytes(), 2);
    assert_eq!(
        census(),
        before,
        "claimed copies changed once StoredFiles listed again"
    );
    step(
        "StoredFiles unlistable: collection paused and shown, after 3× orphan grace every copy kept",
        t,
    );

    // 11. A forced deletion while the operator is stopped: its copies go to the trash; the
    // StoredFile applied again gets them back from the trash, no byte pulled or uploaded.
    forced_deletion_then_restored_from_the_trash(&env, hello);
    step(
        "forced deletion with the operator stopped: copies trashed; re-applied: the same files restored, no pull",
        t,
    );
}

/// Step 11 of the suite (see there), on `hello.txt` at 2 copies holding `hello`.
fn forced_deletion_then_restored_from_the_trash(env: &Env, hello: &str) {
    let k = &env.k;
    let sha = sha256_hex(hello.as_bytes());
    let deploy = format!("{RELEASE}-deposito-operator");
    let operator_pods = || {
        k.kubectl_ok(&[
            "get",
            "pods",
            "-n",
            NS,
            "-l",
            "app.kubernetes.io/component=operator",
            "-o",
            "name",
        ])
    };
    k.kubectl_ok(&["scale", "deployment", &deploy, "-n", NS, "--replicas=0"]);
    wait_sync("no operator pod", WAIT, || {
        let pods = operator_pods();
        pods.trim().is_empty().then_some(()).ok_or(pods)
    });
    k.kubectl_ok(&["delete", "sf", "hello.txt", "-n", NS, "--wait=false"]);
    let no_finalizers = r#"{"metadata":{"finalizers":null}}"#;
    k.kubectl_ok(&[
        "patch",
        "sf",
        "hello.txt",
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        no_finalizers,
    ]);
    wait_sync("hello.txt deleted", WAIT, || {
        k.get_json(NS, "sf", "hello.txt")
            .is_none()
            .then_some(())
            .ok_or(String::new())
    });
    k.kubectl_ok(&["scale", "deployment", &deploy, "-n", NS, "--replicas=1"]);
    let area = |area: &str| -> Vec<String> {
        k.claim_dirs(NS)
            .into_iter()
            .filter(|(_, dir)| copy_path(dir, area, NS, "hello.txt", &sha).is_file())
            .map(|(claim, _)| claim)
            .collect()
    };
    let trashed = wait_sync("hello.txt's 2 copies in the trash", WAIT, || {
        let (trash, served) = (area("trash"), area("objects"));
        (trash.len() == 2 && served.is_empty())
            .then_some(trash.clone())
            .ok_or(format!("trash {trash:?}, objects {served:?}"))
    });
    // The files themselves: a restore is a rename, so the served copies keep these inodes.
    let inodes = |area: &str| -> Vec<u64> {
        use std::os::unix::fs::MetadataExt;
        let mut inodes: Vec<u64> = k
            .claim_dirs(NS)
            .into_iter()
            .filter_map(|(_, dir)| {
                let path = copy_path(&dir, area, NS, "hello.txt", &sha);
                std::fs::metadata(path).ok().map(|m| m.ino())
            })
            .collect();
        inodes.sort();
        inodes
    };
    let in_trash = inodes("trash");
    env.inline("hello.txt", 2, hello);
    let holders = env.wait_copies("hello.txt", hello.as_bytes(), 2);
    let (mut holders, mut trashed) = (holders, trashed);
    holders.sort();
    trashed.sort();
    assert_eq!(holders, trashed, "restored where they were trashed");
    assert!(area("trash").is_empty());
    assert_eq!(
        inodes("objects"),
        in_trash,
        "the trashed files, renamed back"
    );
    let (_, ip) = env.operator_pod();
    let text = curl(&format!("http://{ip}:9090/metrics"));
    let actions = |kind: &str| {
        deposito_e2e::metrics::sum(&text, "deposito_operator_actions_total", &[("kind", kind)])
    };
    assert_eq!(actions("restore"), 2.0, "{text}");
    assert_eq!(actions("pull"), 0.0, "{text}");
}

/// The body of `GET url` (empty when there is no answer), by curl, within 10 s.
fn curl(url: &str) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", url]);
    proc::run(cmd, Duration::from_secs(10)).stdout
}
