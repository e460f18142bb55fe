//! The kube end-to-end harness: a real control plane from `tests/cluster/up` (etcd,
//! kube-apiserver, kube-controller-manager and the process kubelet), the chart installed with
//! helm, and helpers to run kubectl, read StoredFiles, and count copies in the replicas'
//! volumes (the process kubelet keeps each claim's data in `DIR/kubelet/pvc/<ns>/<claim>`).
//!
//! [`KubeCluster::start_real_node`] runs `up --node real` instead: the real kubelet,
//! containerd and kube-proxy, where each claim's data is the `local` volume
//! `DIR/node/volumes/pvc-<claim uid>` of the test provisioner. `DEPOSITO_KUBE_NODE=real`
//! makes [`KubeCluster::start`] do that too, for running the other kube suites on it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::files::{copies_of_name, copy_path};
use crate::proc::{self, Output, Proc};
use crate::wait::wait_sync;

/// The repository root (this crate lives in `tests/e2e`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Which node runs the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// `tests/kubelet`: each pod a local process, pod IPs on 127.0.100.x.
    Process,
    /// The real kubelet over containerd and runc, pod IPs on the bridge 10.244.0.0/24.
    Real,
}

/// A running control plane.
pub struct KubeCluster {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub node: NodeKind,
    up: Option<Proc>,
    _temp: Option<tempfile::TempDir>,
}

impl KubeCluster {
    /// Starts `tests/cluster/up` in a temporary folder and waits (bounded: the first run
    /// builds the Go binaries) until the API server answers.
    pub fn start() -> KubeCluster {
        Self::start_with_kubelet_args("")
    }

    /// Starts `tests/cluster/up --node real` (needs root; one at a time on a machine: the
    /// node's bridge, ports and address are fixed).
    pub fn start_real_node() -> KubeCluster {
        Self::start_node(NodeKind::Real, "")
    }

    /// [`Self::start`] with `DEPOSITO_KUBELET_ARGS` set to `kubelet_args`, e.g. `--node
    /// a1,topology.kubernetes.io/zone=zone-a --node b1,...` for several labelled nodes.
    pub fn start_with_kubelet_args(kubelet_args: &str) -> KubeCluster {
        let real = std::env::var("DEPOSITO_KUBE_NODE").is_ok_and(|v| v == "real");
        if real && kubelet_args.is_empty() {
            return Self::start_node(NodeKind::Real, "");
        }
        Self::start_node(NodeKind::Process, kubelet_args)
    }

    fn start_node(node: NodeKind, kubelet_args: &str) -> KubeCluster {
        let temp = tempfile::Builder::new()
            .prefix("deposito-kube-")
            .tempdir_in(crate::cluster::base_tmp())
            .expect("temp dir");
        let dir = temp.path().to_path_buf();
        let mut cmd = Command::new(repo_root().join("tests/cluster/up"));
        if node == NodeKind::Real {
            cmd.args(["--node", "real"]);
        }
        cmd.arg(dir.join("c"));
        if !kubelet_args.is_empty() {
            cmd.env("DEPOSITO_KUBELET_ARGS", kubelet_args);
        }
        let up = Proc::spawn("cluster-up", cmd, &dir.join("up.log"));
        let mut cluster = KubeCluster {
            kubeconfig: dir.join("c/kubeconfig"),
            dir: dir.clone(),
            node,
            up: Some(up),
            _temp: (std::env::var_os("DEPOSITO_E2E_KEEP").is_none()).then_some(temp),
        };
        wait_sync("the control plane", Duration::from_secs(3600), || {
            if !cluster.up.as_mut().expect("up").is_running() {
                return Ok(Err(proc::tail(&dir.join("up.log"), 30)));
            }
            if cluster.kubeconfig.is_file() && cluster.kubectl(&["get", "--raw", "/readyz"]).ok() {
                return Ok(Ok(()));
            }
            Err("not up yet".into())
        })
        .unwrap_or_else(|log| panic!("tests/cluster/up exited:\n{log}"));
        cluster
    }

    fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.dir.join("c/bin").join(name));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// An address of this machine that the pods reach, for a server a test runs for them:
    /// loopback for the process kubelet's pods, the node address on the real node.
    pub fn host_address(&self) -> std::net::Ipv4Addr {
        match self.node {
            NodeKind::Process => std::net::Ipv4Addr::LOCALHOST,
            NodeKind::Real => std::net::Ipv4Addr::new(10, 244, 0, 1),
        }
    }

    /// Every address a pod of this cluster may get (for a certificate that names them all):
    /// 127.0.100.1–254 from the process kubelet, 10.244.0.1–254 on the real node's bridge.
    pub fn pod_addresses(&self) -> Vec<std::net::Ipv4Addr> {
        let [a, b, c, _] = match self.node {
            NodeKind::Process => [127, 0, 100, 0],
            NodeKind::Real => [10, 244, 0, 0],
        };
        (1..=254)
            .map(|d| std::net::Ipv4Addr::new(a, b, c, d))
            .collect()
    }

    /// Runs kubectl.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        let mut cmd = self.tool("kubectl");
        cmd.args(args);
        proc::run(cmd, Duration::from_secs(120))
    }

    /// Runs kubectl and returns its stdout; panics with the output when it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.ok(), "kubectl {args:?}: {out}");
        out.stdout
    }

    /// `kubectl apply -n NS -f -` with `yaml` on stdin.
    pub fn apply(&self, namespace: &str, yaml: &str) -> Output {
        let file = self
            .dir
            .join(format!("manifest-{}.yaml", rand::random::<u32>()));
        std::fs::write(&file, yaml).expect("write manifest");
        self.kubectl(&[
            "apply",
            "-n",
            namespace,
            "-f",
            file.to_str().expect("utf-8 path"),
        ])
    }

    /// Runs helm.
    pub fn helm(&self, args: &[&str]) -> Output {
        let mut cmd = self.tool("helm");
        cmd.args(args).current_dir(repo_root());
        proc::run(cmd, Duration::from_secs(600))
    }

    /// `helm install RELEASE charts/deposito` into `namespace` (created), waiting up to 5
    /// minutes for every pod, with each of `values` passed as `--set`. The chart's defaults
    /// listen on every address; the process kubelet turns that into each pod's own IP.
    pub fn helm_install(&self, release: &str, namespace: &str, values: &[&str]) -> Output {
        self.helm_install_chart("charts/deposito", release, namespace, values)
    }

    /// [`Self::helm_install`] of the chart in folder `chart` (e.g. an older one).
    pub fn helm_install_chart(
        &self,
        chart: &str,
        release: &str,
        namespace: &str,
        values: &[&str],
    ) -> Output {
        let mut args = vec![
            "install",
            release,
            chart,
            "-n",
            namespace,
            "--create-namespace",
            "--wait",
            "--timeout",
            "5m",
        ];
        for value in values {
            args.extend(["--set", value]);
        }
        self.helm(&args)
    }

    /// `kubectl apply` of an inline StoredFile.
    pub fn apply_inline(&self, namespace: &str, name: &str, replicas: u32, content: &str) {
        let yaml = format!(
            "apiVersion: deposito.io/v1alpha1\nkind: StoredFile\nmetadata: {{name: {name}}}\n\
             spec:\n  replicas: {replicas}\n  source:\n    inline: {}\n",
            serde_json::to_string(content).expect("a string serializes")
        );
        let out = self.apply(namespace, &yaml);
        assert!(out.ok(), "apply {namespace}/{name}: {out}");
    }

    /// Waits (up to `timeout`) until `namespace/name` is Ready at `n` copies for its current
    /// generation and exactly `n` claims hold `content` (and no other content); returns them.
    pub fn wait_copies(
        &self,
        namespace: &str,
        name: &str,
        content: &[u8],
        n: usize,
        timeout: Duration,
    ) -> Vec<String> {
        self.wait_copies_of(namespace, namespace, name, content, n, timeout)
    }

    /// [`Self::wait_copies`] of a file of namespace `file_namespace` held by the replica
    /// claims of `release_namespace` (an operator that watches every namespace).
    pub fn wait_copies_of(
        &self,
        release_namespace: &str,
        namespace: &str,
        name: &str,
        content: &[u8],
        n: usize,
        timeout: Duration,
    ) -> Vec<String> {
        let sha = deposito_api::sha256_hex(content);
        wait_sync(
            &format!("{namespace}/{name} at {n} copies"),
            timeout,
            || {
                let sf = self.get_json(namespace, "sf", name).unwrap_or_default();
                let st = &sf["status"];
                let holders = self.holders_of(release_namespace, namespace, name, &sha, content);
                let converged = st["phase"] == "Ready"
                    && st["readyReplicas"] == n as u64
                    && st["observedGeneration"] == sf["metadata"]["generation"]
                    && holders.len() == n
                    && self.any_copies_of(release_namespace, namespace, name).len() == n;
                if converged {
                    Ok(holders)
                } else {
                    Err(format!("status {st}, holders on disk {holders:?}"))
                }
            },
        )
    }

    /// Deletes the running operator pod of `namespace` at once and waits (up to `timeout`)
    /// for the one its Deployment starts.
    pub fn kill_operator_pod(&self, namespace: &str, timeout: Duration) {
        let (operator, _) = self.operator_pod(namespace);
        self.kubectl_ok(&[
            "delete",
            "pod",
            &operator,
            "-n",
            namespace,
            "--grace-period=0",
            "--force",
        ]);
        wait_sync("a new operator pod", timeout, || {
            let (now, _) = self.operator_pod(namespace);
            (now != operator).then_some(()).ok_or(now)
        });
    }

    /// The Events about object `name` of `namespace`, as (reason, note).
    pub fn events(&self, namespace: &str, name: &str) -> Vec<(String, String)> {
        let out = self.kubectl_ok(&[
            "get",
            "events.events.k8s.io",
            "-n",
            namespace,
            "-o",
            "json",
            "--field-selector",
            &format!("regarding.name={name}"),
        ]);
        let list: Value = serde_json::from_str(&out).expect("kubectl JSON");
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let text = |field: &str| e[field].as_str().unwrap_or("").to_string();
                (text("reason"), text("note"))
            })
            .collect()
    }

    /// A resource as JSON (`None` when it does not exist).
    pub fn get_json(&self, namespace: &str, kind: &str, name: &str) -> Option<Value> {
        let out = self.kubectl(&["get", kind, name, "-n", namespace, "-o", "json"]);
        out.ok()
            .then(|| serde_json::from_str(&out.stdout).expect("kubectl JSON"))
    }

    /// The data folders of every replica claim of `namespace`, by claim name.
    pub fn claim_dirs(&self, namespace: &str) -> Vec<(String, PathBuf)> {
        if self.node == NodeKind::Real {
            return self.local_volume_dirs(namespace);
        }
        let root = self.dir.join("c/kubelet/pvc").join(namespace);
        let mut dirs: Vec<(String, PathBuf)> = std::fs::read_dir(&root)
            .map(|rd| {
                rd.flatten()
                    .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        dirs
    }

    /// The real node's claim folders: `DIR/node/volumes/pvc-<uid>` of each bound claim.
    fn local_volume_dirs(&self, namespace: &str) -> Vec<(String, PathBuf)> {
        let out = self.kubectl(&["get", "pvc", "-n", namespace, "-o", "json"]);
        let claims: Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        let volumes = self.dir.join("c/node/volumes");
        let mut dirs: Vec<(String, PathBuf)> = claims["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["status"]["phase"] == "Bound")
            .filter_map(|c| {
                let name = c["metadata"]["name"].as_str()?.to_string();
                let dir = volumes.join(format!("pvc-{}", c["metadata"]["uid"].as_str()?));
                dir.is_dir().then_some((name, dir))
            })
            .collect();
        dirs.sort();
        dirs
    }

    /// Claims holding a copy of `(namespace, name, sha256)` whose bytes are exactly `content`.
    pub fn holders(
        &self,
        namespace: &str,
        name: &str,
        sha256: &str,
        content: &[u8],
    ) -> Vec<String> {
        self.holders_of(namespace, namespace, name, sha256, content)
    }

    /// [`Self::holders`] of a file of namespace `file_namespace` held by the replica claims
    /// of `release_namespace` (an operator that watches every namespace).
    pub fn holders_of(
        &self,
        release_namespace: &str,
        file_namespace: &str,
        name: &str,
        sha256: &str,
        content: &[u8],
    ) -> Vec<String> {
        self.claim_dirs(release_namespace)
            .into_iter()
            .filter(|(_, dir)| {
                let path = copy_path(dir, "objects", file_namespace, name, sha256);
                std::fs::read(path).is_ok_and(|bytes| bytes == content)
            })
            .map(|(claim, _)| claim)
            .collect()
    }

    /// Every copy of `(namespace, name)` of any content, as (claim, sha256).
    pub fn any_copies(&self, namespace: &str, name: &str) -> Vec<(String, String)> {
        self.any_copies_of(namespace, namespace, name)
    }

    /// [`Self::any_copies`] of a file of namespace `namespace` held by the replica claims of
    /// `release_namespace`.
    pub fn any_copies_of(
        &self,
        release_namespace: &str,
        namespace: &str,
        name: &str,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (claim, dir) in self.claim_dirs(release_namespace) {
            for (sha, _) in copies_of_name(&dir, "objects", namespace, name) {
                out.push((claim.clone(), sha));
            }
        }
        out
    }

    /// The replica pods of the release in `namespace`, as JSON objects.
    pub fn replica_pods(&self, namespace: &str) -> Vec<Value> {
        let out = self.kubectl_ok(&[
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/component=replica",
            "-o",
            "json",
        ]);
        let mut pods: Value = serde_json::from_str(&out).expect("kubectl JSON");
        match pods["items"].take() {
            Value::Array(items) => items,
            _ => Vec::new(),
        }
    }

    /// A running operator pod of `namespace` (not being deleted), as (name, pod IP); waits
    /// up to two minutes for one.
    pub fn operator_pod(&self, namespace: &str) -> (String, String) {
        wait_sync("a running operator pod", Duration::from_secs(120), || {
            let out = self.kubectl(&[
                "get",
                "pods",
                "-n",
                namespace,
                "-l",
                "app.kubernetes.io/component=operator",
                "-o",
                "json",
            ]);
            let pods: Value = serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
            pods["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .filter(|p| p["status"]["phase"] == "Running")
                .find_map(|p| {
                    Some((
                        p["metadata"]["name"].as_str()?.to_string(),
                        p["status"]["podIP"].as_str()?.to_string(),
                    ))
                })
                .ok_or_else(|| out.stdout.chars().take(300).collect::<String>())
        })
    }

    /// The S3 endpoint of release `release` in `namespace` (its `<release>-deposito-s3`
    /// Service, port 7900) and the release's client token (the secret key of its S3 key pair).
    pub fn release_s3(&self, namespace: &str, release: &str) -> (String, String) {
        let ip = self.kubectl_ok(&[
            "get",
            "svc",
            "-n",
            namespace,
            &format!("{release}-deposito-s3"),
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        let token = self.secret_value(
            namespace,
            &format!("{release}-deposito-tokens"),
            "client-token",
        );
        (format!("http://{}:7900", ip.trim()), token)
    }

    /// The decoded value of `key` in Secret `secret`.
    pub fn secret_value(&self, namespace: &str, secret: &str, key: &str) -> String {
        let jsonpath = format!("jsonpath={{.data.{}}}", key.replace('.', "\\."));
        let b64 = self.kubectl_ok(&["get", "secret", "-n", namespace, secret, "-o", &jsonpath]);
        // Base64 text is only [A-Za-z0-9+/=]: safe inside single quotes.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("printf %s '{}' | base64 -d", b64.trim()));
        let out = proc::run(cmd, Duration::from_secs(10));
        assert!(out.ok(), "base64 -d: {out}");
        out.stdout.trim().to_string()
    }

    /// The pid of the process whose command line contains every word of `words`.
    pub fn pid_of(&self, words: &[&str]) -> Option<u32> {
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                let cmdline = proc::cmdline(*pid).join(" ");
                words.iter().all(|w| cmdline.contains(w))
            })
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        if let Some(mut up) = self.up.take() {
            // SIGTERM: `up` stops every component and pod it started.
            up.terminate(Duration::from_secs(15));
        }
    }
}
