//! Kube mode keeps what it cannot see, and spreads copies over zones, on a real control plane
//! (`tests/cluster/up` with one kubelet serving two nodes, `a1` in `zone-a` and `b1` in
//! `zone-b`):
//!
//! 1. The chart spreads the 4 replica pods 2 and 2 over the zones, and every file at N=2 has
//!    its copies in both zones (the operator reads the Nodes' zone labels).
//! 2. An operator installed with `watchAllNamespaces=true` holds files of two namespaces;
//!    `helm upgrade --reuse-values --set operator.watchAllNamespaces=false` narrows its watch
//!    to its own namespace. The other namespace's copies are still there, byte for byte, after
//!    three times the orphan grace, while the operator keeps working in its own namespace.
//!    Widened again, it takes the other namespace's files back without a pull from outside:
//!    raised to N=3, a third copy appears.
//!
//! Ignored by a plain `cargo test` (it needs the Go-built control plane); `tests/run-all` runs
//! it with `--ignored` after the control-plane smoke test has built and cached the binaries.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use deposito_api::sha256_hex;
use deposito_e2e::kube_cluster::KubeCluster;
use deposito_e2e::wait::wait_sync;

const NS: &str = "dep";
const OTHER: &str = "other";
const RELEASE: &str = "dep";
const ORPHAN_GRACE_SECS: u64 = 5;
const WAIT: Duration = Duration::from_secs(120);
const ZONE: &str = "topology.kubernetes.io/zone";

fn step(name: &str, started: Instant) {
    println!("--- [{:>5.1}s] {name}", started.elapsed().as_secs_f64());
}

/// The inline content of test file `name`.
fn content(name: &str) -> String {
    format!("the content of {name}, kept whatever the operator sees\n")
}

fn apply_file(k: &KubeCluster, namespace: &str, name: &str, replicas: u32) {
    let yaml = format!(
        "apiVersion: deposito.io/v1alpha1\nkind: StoredFile\nmetadata: {{name: {name}}}\n\
         spec: {{replicas: {replicas}, source: {{inline: {:?}}}}}\n",
        content(name)
    );
    let out = k.apply(namespace, &yaml);
    assert!(out.ok(), "apply {namespace}/{name}: {out}");
}

/// Waits until `namespace/name` is Ready with exactly `n` copies of its content on disk (and
/// no copy of other content); returns the claims holding it.
fn wait_copies(k: &KubeCluster, namespace: &str, name: &str, n: usize) -> Vec<String> {
    let body = content(name);
    let sha = sha256_hex(body.as_bytes());
    wait_sync(&format!("{namespace}/{name} at {n} copies"), WAIT, || {
        let sf = k.get_json(namespace, "sf", name).unwrap_or_default();
        let st = &sf["status"];
        let holders = k.holders_of(NS, namespace, name, &sha, body.as_bytes());
        let converged = st["phase"] == "Ready"
            && st["readyReplicas"] == n as u64
            && st["observedGeneration"] == sf["metadata"]["generation"]
            && holders.len() == n
            && copies_on_disk(k, namespace, name) == n;
        if converged {
            Ok(holders)
        } else {
            Err(format!("status {st}, holders on disk {holders:?}"))
        }
    })
}

/// Copies of `namespace/name` of any content in the release's replica volumes.
fn copies_on_disk(k: &KubeCluster, namespace: &str, name: &str) -> usize {
    k.claim_dirs(NS)
        .iter()
        .map(|(_, dir)| deposito_e2e::files::copies_of_name(dir, "objects", namespace, name).len())
        .sum()
}

/// The zone of each replica claim (`data-<pod>` → the pod's node → the node's zone label).
fn zones_of_claims(k: &KubeCluster) -> BTreeMap<String, String> {
    let nodes = k.kubectl_ok(&["get", "nodes", "-o", "json"]);
    let nodes: serde_json::Value = serde_json::from_str(&nodes).unwrap();
    let zone_of_node: BTreeMap<String, String> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap().to_string(),
                n["metadata"]["labels"][ZONE]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    k.replica_pods(NS)
        .iter()
        .map(|p| {
            let pod = p["metadata"]["name"].as_str().unwrap();
            let node = p["spec"]["nodeName"].as_str().unwrap_or("");
            (
                format!("data-{pod}"),
                zone_of_node.get(node).cloned().unwrap_or_default(),
            )
        })
        .collect()
}

/// `helm upgrade --reuse-values` with `value`, then waits until the only operator pod is a new
/// one that answers `/readyz`.
fn upgrade(k: &KubeCluster, value: &str) {
    let (old, _) = k.operator_pod(NS);
    let out = k.helm(&[
        "upgrade",
        RELEASE,
        "charts/deposito",
        "-n",
        NS,
        "--reuse-values",
        "--set",
        value,
        "--wait",
        "--timeout",
        "5m",
    ]);
    assert!(out.ok(), "helm upgrade --set {value}: {out}");
    wait_sync("the old operator pod gone", WAIT, || {
        match k.get_json(NS, "pod", &old) {
            Some(_) => Err(format!("{old} still there")),
            None => Ok(()),
        }
    });
    let (_, ip) = k.operator_pod(NS);
    wait_sync("the new operator ready", WAIT, || {
        let code = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .arg(format!("http://{ip}:7800/readyz"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        (code == "200").then_some(()).ok_or(code)
    });
}

#[test]
#[ignore = "needs the Go-built control plane: tests/run-all runs it"]
fn narrowed_watch_keeps_copies_and_copies_spread_over_zones() {
    let t = Instant::now();
    let k = KubeCluster::start_with_kubelet_args(&format!(
        "--node a1,{ZONE}=zone-a --node b1,{ZONE}=zone-b"
    ));
    step("cluster up: nodes a1 (zone-a) and b1 (zone-b)", t);

    let grace = format!("operator.orphanGraceSeconds={ORPHAN_GRACE_SECS}");
    let install = k.helm_install(
        RELEASE,
        NS,
        &[
            "replica.replicas=4",
            "operator.watchAllNamespaces=true",
            &grace,
            "replica.storage.size=1Gi",
        ],
    );
    assert!(install.ok(), "helm install: {install}");
    let zones = zones_of_claims(&k);
    let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
    for zone in zones.values() {
        *per_zone.entry(zone.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_zone,
        BTreeMap::from([("zone-a", 2), ("zone-b", 2)]),
        "replica pods by zone: {zones:?}"
    );
    step("helm install: 4 replica pods, 2 in each zone", t);

    // 1. Files of both namespaces at N=2, each with one copy in each zone.
    k.kubectl_ok(&["create", "namespace", OTHER]);
    let ours: Vec<String> = (0..6).map(|i| format!("ours-{i}.txt")).collect();
    let theirs: Vec<String> = (0..4).map(|i| format!("theirs-{i}.txt")).collect();
    for name in &ours {
        apply_file(&k, NS, name, 2);
    }
    for name in &theirs {
        apply_file(&k, OTHER, name, 2);
    }
    let mut held_before = BTreeMap::new();
    for (namespace, name) in ours
        .iter()
        .map(|n| (NS, n))
        .chain(theirs.iter().map(|n| (OTHER, n)))
    {
        let holders = wait_copies(&k, namespace, name, 2);
        let in_zones: BTreeSet<&str> = holders.iter().map(|c| zones[c].as_str()).collect();
        assert_eq!(
            in_zones,
            BTreeSet::from(["zone-a", "zone-b"]),
            "{namespace}/{name} on {holders:?} ({zones:?})"
        );
        held_before.insert(format!("{namespace}/{name}"), holders);
    }
    step(
        "10 files in 2 namespaces at N=2: each with one copy per zone",
        t,
    );

    // 2. Narrow the watch to the release's namespace: the other namespace's copies stay.
    upgrade(&k, "operator.watchAllNamespaces=false");
    step(
        "helm upgrade: watchAllNamespaces=false, new operator ready",
        t,
    );
    std::thread::sleep(Duration::from_secs(3 * ORPHAN_GRACE_SECS + 5));
    for name in &theirs {
        let body = content(name);
        let holders = k.holders_of(
            NS,
            OTHER,
            name,
            &sha256_hex(body.as_bytes()),
            body.as_bytes(),
        );
        assert_eq!(
            holders,
            held_before[&format!("{OTHER}/{name}")],
            "{OTHER}/{name}: the same two copies, byte for byte, while unwatched"
        );
        assert_eq!(copies_on_disk(&k, OTHER, name), 2, "{OTHER}/{name}");
    }
    // The narrowed operator still works in its own namespace.
    apply_file(&k, NS, &ours[0], 3);
    wait_copies(&k, NS, &ours[0], 3);
    step(
        "after 3x the orphan grace: every unwatched copy kept; own namespace still served",
        t,
    );

    // 3. Widened again: the other namespace's files are served from the kept copies.
    upgrade(&k, "operator.watchAllNamespaces=true");
    apply_file(&k, OTHER, &theirs[0], 3);
    let holders = wait_copies(&k, OTHER, &theirs[0], 3);
    for before in &held_before[&format!("{OTHER}/{}", theirs[0])] {
        assert!(
            holders.contains(before),
            "{before} kept its copy: {holders:?}"
        );
    }
    for name in &theirs[1..] {
        wait_copies(&k, OTHER, name, 2);
    }
    step(
        "watchAllNamespaces=true again: the kept copies serve, raised to N=3",
        t,
    );
}
