//! Helpers of the real-node suite (`tests/kube_real_node.rs`, `tests/cluster/up --node real`):
//! reading a running container back from the host (its process and its cgroups), a pod of the
//! `restricted` level that tries one request, and requests through `kubectl port-forward`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::kube_cluster::KubeCluster;
use crate::proc::Proc;
use crate::wait::wait_sync;

/// `PATH` with the cluster's kubectl and helm first.
pub fn tool_path(k: &KubeCluster) -> String {
    format!(
        "{}:{}",
        k.dir.join("c/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs `command` (a `kubectl port-forward` to local `port`), then `f` with the forwarded
/// server until it succeeds (bounded), and stops the port-forward.
pub fn through_port_forward<T>(
    k: &KubeCluster,
    command: &str,
    port: u16,
    mut f: impl FnMut(&str) -> Result<T, String>,
) -> T {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("exec {command}"));
    cmd.env("KUBECONFIG", &k.kubeconfig)
        .env("PATH", tool_path(k));
    let mut forward = Proc::spawn(
        "port-forward",
        cmd,
        &k.dir.join(format!("port-forward-{port}.log")),
    );
    let server = format!("http://127.0.0.1:{port}");
    let result = wait_sync(
        "a request through the port-forward",
        Duration::from_secs(60),
        || f(&server),
    );
    forward.terminate(Duration::from_secs(5));
    result
}

/// Runs a pod of the restricted level that lists the files of `server` with a wrong token,
/// once; returns its log.
pub fn stray_pod(k: &KubeCluster, ns: &str, name: &str, server: &str) -> String {
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  \
         securityContext: {{runAsNonRoot: true, runAsUser: 65532, seccompProfile: {{type: RuntimeDefault}}}}\n  \
         containers:\n  - name: client\n    image: deposito:0.1.0\n    imagePullPolicy: IfNotPresent\n    \
         command: [deposito, --server, '{server}', --token, not-the-token-of-this-release, ls]\n    \
         securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}, readOnlyRootFilesystem: true}}\n"
    );
    let created = k.apply(ns, &pod);
    assert!(created.ok(), "{name}: {created}");
    wait_sync(
        &format!("pod {name} to finish"),
        Duration::from_secs(90),
        || {
            let phase = k.kubectl_ok(&[
                "get",
                "pod",
                "-n",
                ns,
                name,
                "-o",
                "jsonpath={.status.phase}",
            ]);
            matches!(phase.trim(), "Succeeded" | "Failed")
                .then_some(())
                .ok_or(phase)
        },
    );
    k.kubectl_ok(&["logs", "-n", ns, name])
}

/// Reads a running container back from the host: its process (user, capabilities, no new
/// privileges, seccomp, read-only root) and its cgroup limits against the pod's resources.
pub fn check_container_on_host(pod: &Value) {
    let name = pod["metadata"]["name"].as_str().unwrap();
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let qos = pod["status"]["qosClass"].as_str().unwrap().to_lowercase();
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap();
    let id = id.strip_prefix("containerd://").unwrap();
    let cgroup = |controller: &str| {
        let class = if qos == "guaranteed" {
            String::new()
        } else {
            format!("{qos}/")
        };
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(format!("kubepods/{class}pod{uid}/{id}"))
    };
    let read = |path: &Path| {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let resources = &pod["spec"]["containers"][0]["resources"];
    let limit = quantity_bytes(resources["limits"]["memory"].as_str().unwrap());
    let memory = read(&cgroup("memory").join("memory.limit_in_bytes"));
    assert_eq!(
        memory.trim().parse::<u64>().unwrap(),
        limit,
        "{name}: memory limit"
    );
    let cpu_request = resources["requests"]["cpu"].as_str().unwrap();
    let millis: u64 = cpu_request.strip_suffix('m').unwrap().parse().unwrap();
    let shares = read(&cgroup("cpu").join("cpu.shares"));
    assert_eq!(
        shares.trim().parse::<u64>().unwrap(),
        (millis * 1024 / 1000).max(2),
        "{name}: cpu.shares (the kubelet's MilliCPUToShares)"
    );

    let pid = read(&cgroup("memory").join("cgroup.procs"))
        .lines()
        .next()
        .unwrap()
        .to_string();
    let status = read(&Path::new("/proc").join(&pid).join("status"));
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(field("Uid"), ["65532"; 4], "{name}: runs as 65532");
    assert_eq!(
        field("CapEff"),
        ["0000000000000000"],
        "{name}: no capabilities"
    );
    assert_eq!(field("NoNewPrivs"), ["1"], "{name}: no new privileges");
    assert_eq!(
        field("Seccomp"),
        ["2"],
        "{name}: seccomp filter (RuntimeDefault)"
    );
    let mountinfo = read(&Path::new("/proc").join(&pid).join("mountinfo"));
    let root_options = mountinfo
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f[4] == "/")
        .map(|f| f[5].to_string())
        .unwrap();
    assert!(
        root_options.split(',').any(|o| o == "ro"),
        "{name}: root mounted {root_options}"
    );
    eprintln!(
        "{name}: pid {pid} Uid {:?} CapEff {:?} NoNewPrivs {:?} Seccomp {:?}, root {root_options}, \
         memory.limit_in_bytes {}, cpu.shares {}; securityContext pod {} container {}",
        field("Uid"),
        field("CapEff"),
        field("NoNewPrivs"),
        field("Seccomp"),
        memory.trim(),
        shares.trim(),
        pod["spec"]["securityContext"],
        pod["spec"]["containers"][0]["securityContext"],
    );
}

/// `256Mi`, `1Gi`, `500M` in bytes.
pub fn quantity_bytes(q: &str) -> u64 {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let factor: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        other => panic!("unit {other}"),
    };
    n.parse::<u64>().unwrap() * factor
}

#[cfg(test)]
mod tests {
    use super::quantity_bytes;

    #[test]
    fn quantities_in_bytes() {
        assert_eq!(quantity_bytes("256Mi"), 256 << 20);
        assert_eq!(quantity_bytes("1Gi"), 1 << 30);
        assert_eq!(quantity_bytes("500M"), 500_000_000);
        assert_eq!(quantity_bytes("64"), 64);
    }
}
