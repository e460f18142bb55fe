//! Kube mode on a real node (`tests/cluster/up --node real`: the real kubelet, containerd,
//! runc, a bridge network, kube-proxy, kube-scheduler, CoreDNS), running the chart's image:
//!
//! 1. **The README's kind walk-through**, every command of its console block in order, read
//!    from README.md at run time, with only `kind create cluster` (the cluster is up; the node
//!    address stands in for kind's port mapping), the image build (from this tree's binaries),
//!    `kind load` (an import into containerd) and the CLI's `cargo build` (cargo holds its
//!    build lock while tests run; the binary cargo just built is used) replaced; the outputs the README shows are
//!    checked, then the port-forward route that `helm install` printed (NOTES.txt).
//! 2. **The chart under the real rules**: a second release in a namespace that enforces the
//!    `restricted` Pod Security level (a privileged pod is refused there). Its pods are
//!    Running and Ready (readiness from the kubelet's own probes); read back from the host, each
//!    container process runs as 65532 with no capabilities, no new privileges and seccomp
//!    filtering, on a read-only root (a write to `/` inside fails, one to `/data` works), under
//!    cgroup limits equal to the chart's resources.
//! 3. **Services**: a file at N=2 → 3 → 1 with exactly N byte-identical copies in the volumes;
//!    a deposit through the NodePort read back through the ClusterIP; `kubectl port-forward
//!    svc/…-gateway`, `kubectl logs`, `kubectl exec` and `helm test`.
//! 4. **NetworkPolicy**, enforced by the node's kube-router firewall: a stray pod of the
//!    namespace is refused at a replica's port while it reaches the gateway, and the operator
//!    and the replicas keep working (the copies of step 3 are made with the policy in force).
//!
//! Needs root and the real node's packages (`up` installs them); ignored by a plain `cargo
//! test`; `tests/run-all` runs it with `--ignored`.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use deposito_e2e::cluster::free_port;
use deposito_e2e::kube_cluster::{repo_root, KubeCluster};
use deposito_e2e::proc::{self, Output};
use deposito_e2e::real_node::{
    check_container_on_host, stray_pod, through_port_forward, tool_path,
};
use serde_json::Value;

const NODE: &str = "deposito-node";
const NODE_IP: &str = "10.244.0.1";
/// Files the walk-through creates in the repository root (it must not find them there; they
/// are removed at the end).
const WALKTHROUGH_FILES: [&str; 3] = ["token", "report.pdf", "copy.pdf"];

#[test]
#[ignore = "needs root and builds a real node (tests/run-all runs it)"]
fn the_chart_on_a_real_node() {
    let k = KubeCluster::start_real_node();
    readme_walkthrough(&k);
    restricted_release(&k);
}

/// Removes the walk-through's files from the repository root, also when the test fails.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for file in WALKTHROUGH_FILES {
            let _ = std::fs::remove_file(self.0.join(file));
        }
    }
}

/// One command of the README's console block and the output lines shown under it.
struct Step {
    command: String,
    expected: Vec<String>,
}

fn readme_steps() -> Vec<Step> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = &readme[readme
        .find("## Kubernetes: kind and Helm")
        .expect("the kind section")..];
    let block = &section[section.find("```console\n").expect("a console block") + 11..];
    let block = &block[..block.find("```").unwrap()];
    let mut steps: Vec<Step> = Vec::new();
    for line in block.lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: command.to_string(),
                expected: Vec::new(),
            });
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(line.to_string());
        }
    }
    assert!(steps.len() >= 10, "the kind section has its commands");
    steps
}

/// The command as run here: kind's steps replaced by their equivalents on this cluster.
fn here(command: &str, containerd_sock: &Path) -> Option<String> {
    let command = command.split("   #").next().unwrap().trim_end();
    if let Some(rest) = command.strip_prefix("cargo build --release --bins && ") {
        // This test runs under `cargo test`, which holds the build lock while tests run:
        // the CLI it just built is the one the README's command builds.
        return Some(format!("test -x target/release/deposito && {rest}"));
    }
    if command.starts_with("kind create cluster") {
        return None; // the cluster is up; its NodePort is on the node address
    }
    if command == "docker build -t deposito:0.1.0 ." {
        // No Rust image can be pulled here: the same image from this tree's binaries.
        return Some(
            "docker/rootfs.sh docker/rootfs target/release >/dev/null && \
             docker build -q -f docker/Dockerfile.prebuilt -t deposito:0.1.0 ."
                .into(),
        );
    }
    if command.starts_with("kind load docker-image deposito:0.1.0") {
        return Some(format!(
            "docker save deposito:0.1.0 | ctr --address {} -n k8s.io images import -",
            containerd_sock.display()
        ));
    }
    Some(command.replace("localhost:7800", &format!("{NODE_IP}:30780")))
}

fn readme_walkthrough(k: &KubeCluster) {
    let root = repo_root();
    // Never overwrite a file of the checkout: stop if one the commands create is there.
    for file in WALKTHROUGH_FILES {
        assert!(
            !root.join(file).exists(),
            "{file} exists in the repository root: move it away"
        );
    }
    let _created = RemoveOnDrop(root.clone());
    let out_dir = k.dir.join("walkthrough");
    std::fs::create_dir_all(&out_dir).unwrap();
    let sock = k.dir.join("c/node/containerd/containerd.sock");
    let steps = readme_steps();
    // One shell, so that `export` carries on; each command's output to its own files.
    let mut script = String::from("set -euo pipefail\n");
    for (i, step) in steps.iter().enumerate() {
        let Some(command) = here(&step.command, &sock) else {
            continue;
        };
        script.push_str(&format!(
            "echo \"step {i}: {}\" >&2\n{{ {command} ; }} >{out}/{i}.out 2>{out}/{i}.err\n",
            command.replace('"', "'"),
            out = out_dir.display()
        ));
    }
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(&script).current_dir(&root);
    cmd.env("KUBECONFIG", &k.kubeconfig)
        .env("PATH", tool_path(k));
    let run = proc::run(cmd, Duration::from_secs(900));
    let failed_step = run.stderr.lines().last().unwrap_or_default().to_string();
    assert!(
        run.ok(),
        "the walk-through stopped at {failed_step}: {}",
        step_output(&out_dir, &run)
    );
    for (i, step) in steps.iter().enumerate() {
        let Ok(out) = std::fs::read_to_string(out_dir.join(format!("{i}.out"))) else {
            continue;
        };
        check_shown_output(&step.command, &step.expected, &out);
    }

    // What the commands did: hello.txt at 3 copies, report.pdf at 2, byte for byte.
    let hello = "Hello from Deposito: this text is kept at two verified copies.\n";
    k.wait_copies(
        "deposito",
        "hello.txt",
        hello.as_bytes(),
        3,
        Duration::from_secs(120),
    );
    let report = std::fs::read(root.join("report.pdf")).unwrap();
    assert_eq!(report.len(), 1 << 20);
    k.wait_copies(
        "deposito",
        "report.pdf",
        &report,
        2,
        Duration::from_secs(120),
    );

    // The port-forward route of NOTES.txt, on a free local port.
    let notes = k.helm(&["get", "notes", "deposito", "-n", "deposito"]);
    assert!(notes.ok(), "helm get notes: {notes}");
    let forward = notes
        .stdout
        .lines()
        .find(|l| l.contains("port-forward svc/deposito-gateway"))
        .unwrap_or_else(|| panic!("NOTES.txt has no port-forward route:\n{}", notes.stdout))
        .trim()
        .to_string();
    assert_eq!(
        forward,
        "kubectl -n deposito port-forward svc/deposito-gateway 7800:7800"
    );
    let port = free_port(Ipv4Addr::LOCALHOST);
    let copy = through_port_forward(
        k,
        &forward.replace("7800:", &format!("{port}:")),
        port,
        |server| {
            let copy = out_dir.join("forwarded.pdf");
            let out = client(&[
                "--server",
                server,
                "--token-file",
                root.join("token").to_str().unwrap(),
                "-n",
                "deposito",
                "retrieve",
                "report.pdf",
                "-o",
                copy.to_str().unwrap(),
            ]);
            out.ok()
                .then(|| std::fs::read(&copy).unwrap())
                .ok_or_else(|| out.to_string())
        },
    );
    assert!(
        copy == report,
        "report.pdf through the port-forward differs"
    );
}

fn step_output(out_dir: &Path, run: &Output) -> String {
    let last = std::fs::read_dir(out_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".err")?
                .parse::<usize>()
                .ok()
        })
        .max();
    let read = |ext: &str| {
        last.and_then(|i| std::fs::read_to_string(out_dir.join(format!("{i}.{ext}"))).ok())
            .unwrap_or_default()
    };
    format!(
        "{}\nstdout: {}\nstderr: {}",
        run.stderr,
        read("out"),
        read("err")
    )
}

/// The output a README command shows: a table's columns (all but AGE), or each line (up to a
/// `…`, which stands for what varies).
fn check_shown_output(command: &str, expected: &[String], out: &str) {
    if expected.is_empty() {
        return;
    }
    if expected[0].starts_with("NAME ") {
        let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        let got: Vec<Vec<String>> = out.lines().map(words).collect();
        for line in expected {
            let mut want = words(line);
            want.pop(); // AGE
            assert!(
                got.iter()
                    .any(|g| g.len() == want.len() + 1 && g[..want.len()] == want[..]),
                "`{command}` shows no row {want:?}:\n{out}"
            );
        }
        return;
    }
    for line in expected {
        let want = line.split('…').next().unwrap();
        assert!(
            out.lines().any(|l| l.starts_with(want)),
            "`{command}` did not print {line:?}:\n{out}"
        );
    }
}

/// Runs the `deposito` client of this tree.
fn client(args: &[&str]) -> Output {
    let mut cmd = Command::new(repo_root().join("target/release/deposito"));
    cmd.args(args);
    proc::run(cmd, Duration::from_secs(120))
}

fn restricted_release(k: &KubeCluster) {
    let ns = "restricted";
    k.kubectl_ok(&["create", "namespace", ns]);
    k.kubectl_ok(&[
        "label",
        "namespace",
        ns,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let privileged =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: privileged}\nspec:\n  containers:\n  \
        - {name: c, image: 'deposito.test/pause:1', securityContext: {privileged: true}}\n";
    let refused = k.apply(ns, privileged);
    assert!(
        !refused.ok() && refused.stderr.contains("violates PodSecurity"),
        "{refused}"
    );

    let install = k.helm_install("sec", ns, &["gateway.service.nodePort=30781"]);
    assert!(
        install.ok(),
        "helm install into a restricted namespace: {install}"
    );
    let pods: Value =
        serde_json::from_str(&k.kubectl_ok(&["get", "pods", "-n", ns, "-o", "json"])).unwrap();
    let pods = pods["items"].as_array().unwrap().clone();
    assert_eq!(pods.len(), 4, "the operator and 3 replicas");
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().unwrap();
        assert_eq!(pod["spec"]["nodeName"], NODE, "{name}");
        assert_eq!(pod["status"]["phase"], "Running", "{name}");
        let ready = pod["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "{name} is Ready by the kubelet's probe");
        assert!(
            pod["spec"]["containers"][0]["readinessProbe"].is_object(),
            "{name} has a probe"
        );
        check_container_on_host(pod);
    }

    network_policy(k, ns);

    let token = k.secret_value(ns, "sec-deposito-tokens", "client-token");
    let replica = "sec-deposito-replica-0";
    let in_pod = |out_path: &str| {
        k.kubectl(&[
            "exec",
            "-n",
            ns,
            replica,
            "--",
            "deposito",
            "--server",
            "http://sec-deposito-gateway.restricted.svc:7800",
            "--token",
            &token,
            "-n",
            ns,
            "retrieve",
            "probe.txt",
            "-o",
            out_path,
        ])
    };
    // A write to / fails inside the pod; one to its volume works (and cluster DNS resolves).
    k.apply_inline(ns, "probe.txt", 2, "probe\n");
    k.wait_copies(ns, "probe.txt", b"probe\n", 2, Duration::from_secs(120));
    let root_write = in_pod("/probe");
    assert!(
        !root_write.ok() && root_write.stderr.contains("Read-only file system"),
        "{root_write}"
    );
    let data_write = in_pod("/data/probe");
    assert!(data_write.ok(), "{data_write}");

    // 2 → 3 → 1 copies, counted in the volumes (with the policy enforced: the operator
    // reaches the replicas, and a raised level is a pull from replica to replica).
    let content = "kept on a real node\n";
    k.apply_inline(ns, "levels.txt", 2, content);
    for n in [2, 3, 1] {
        let patch = format!("{{\"spec\":{{\"replicas\":{n}}}}}");
        k.kubectl_ok(&[
            "patch",
            "sf",
            "levels.txt",
            "-n",
            ns,
            "--type",
            "merge",
            "-p",
            &patch,
        ]);
        k.wait_copies(
            ns,
            "levels.txt",
            content.as_bytes(),
            n,
            Duration::from_secs(120),
        );
    }

    // NodePort in, ClusterIP and port-forward out.
    let blob: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = k.dir.join("blob.bin");
    std::fs::write(&file, &blob).unwrap();
    let node_port = format!("http://{NODE_IP}:30781");
    let deposit = client(&[
        "--server",
        &node_port,
        "--token",
        &token,
        "-n",
        ns,
        "deposit",
        file.to_str().unwrap(),
        "--replicas",
        "2",
    ]);
    assert!(deposit.ok(), "deposit through the NodePort: {deposit}");
    k.wait_copies(ns, "blob.bin", &blob, 2, Duration::from_secs(60));
    let cluster_ip = k.kubectl_ok(&[
        "get",
        "svc",
        "-n",
        ns,
        "sec-deposito-gateway",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let back = k.dir.join("blob.back");
    let retrieve = client(&[
        "--server",
        &format!("http://{cluster_ip}:7800"),
        "--token",
        &token,
        "-n",
        ns,
        "retrieve",
        "blob.bin",
        "-o",
        back.to_str().unwrap(),
    ]);
    assert!(retrieve.ok(), "retrieve through the ClusterIP: {retrieve}");
    assert!(
        std::fs::read(&back).unwrap() == blob,
        "blob.bin through the ClusterIP differs"
    );
    let port = free_port(Ipv4Addr::LOCALHOST);
    let listing = through_port_forward(
        k,
        &format!("kubectl -n {ns} port-forward svc/sec-deposito-gateway {port}:7800"),
        port,
        |server| {
            let out = client(&["--server", server, "--token", &token, "-n", ns, "ls"]);
            out.ok()
                .then_some(out.stdout.clone())
                .ok_or_else(|| out.to_string())
        },
    );
    for name in ["blob.bin", "levels.txt", "probe.txt"] {
        assert!(
            listing.contains(name),
            "`ls` through the port-forward lacks {name}:\n{listing}"
        );
    }

    for what in [["pods", "-o", "wide"], ["sf", "-o", "wide"]] {
        let listing = k.kubectl_ok(&[&["get", "-n", ns][..], &what[..]].concat());
        eprintln!("kubectl -n {ns} get {}:\n{listing}", what.join(" "));
    }

    let logs = k.kubectl_ok(&["logs", "-n", ns, replica]);
    assert!(
        logs.contains("copy committed"),
        "kubectl logs of {replica}:\n{logs}"
    );
    let (operator, _) = k.operator_pod(ns);
    let version = k.kubectl_ok(&["exec", "-n", ns, &operator, "--", "deposito", "--version"]);
    assert_eq!(
        version.trim(),
        format!("deposito {}", env!("CARGO_PKG_VERSION"))
    );
    let test = k.helm(&["test", "sec", "-n", ns]);
    assert!(
        test.ok() && test.stdout.contains("Succeeded"),
        "helm test: {test}"
    );
}

/// The chart's NetworkPolicy, enforced by the node's kube-router: a stray pod of the namespace
/// is refused at a replica's port, while it reaches the operator's gateway (401 for its token:
/// its network works).
fn network_policy(k: &KubeCluster, ns: &str) {
    let policies = k.kubectl_ok(&["get", "networkpolicy", "-n", ns, "-o", "name"]);
    assert_eq!(
        policies.trim(),
        "networkpolicy.networking.k8s.io/sec-deposito-replica"
    );
    let replica_ip = k.kubectl_ok(&[
        "get",
        "pod",
        "-n",
        ns,
        "sec-deposito-replica-0",
        "-o",
        "jsonpath={.status.podIP}",
    ]);
    let (_, operator_ip) = k.operator_pod(ns);
    let to_replica = stray_pod(
        k,
        ns,
        "stray-to-replica",
        &format!("http://{replica_ip}:7070"),
    );
    assert!(
        to_replica.contains("cannot reach server") && !to_replica.contains("401"),
        "a stray pod reached a replica: {to_replica}"
    );
    let to_operator = stray_pod(
        k,
        ns,
        "stray-to-gateway",
        &format!("http://{operator_ip}:7800"),
    );
    assert!(
        to_operator.contains("401"),
        "a stray pod did not reach the gateway: {to_operator}"
    );
}
