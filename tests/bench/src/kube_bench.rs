//! `deposito-bench kube`: kube mode at scale on the real test control plane. Installs the
//! chart (3 replicas), applies N inline StoredFiles at N=2 in one `kubectl apply`, and measures
//! the time until every one is Ready, the Kubernetes API requests the operator made per file
//! (its own counter, by verb), and the operator's peak RSS.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use serde_json::Value;

use deposito_e2e::kube_cluster::KubeCluster;

const NS: &str = "bench";

fn operator_metrics(k: &KubeCluster) -> anyhow::Result<String> {
    let ip = k
        .kubectl_ok(&[
            "get",
            "pods",
            "-n",
            NS,
            "-l",
            "app.kubernetes.io/component=operator",
            "-o",
            "jsonpath={.items[0].status.podIP}",
        ])
        .trim()
        .to_string();
    let out = deposito_e2e::proc::run(
        {
            let mut c = std::process::Command::new("curl");
            c.args(["-sf", &format!("http://{ip}:9090/metrics")]);
            c
        },
        Duration::from_secs(30),
    );
    ensure!(out.ok(), "metrics: {out}");
    Ok(out.stdout)
}

/// Requests by verb, from the operator's `deposito_operator_kube_api_requests_total`.
fn requests(metrics: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| l.starts_with("deposito_operator_kube_api_requests_total{"))
        .filter_map(|l| {
            let verb = l.split("verb=\"").nth(1)?.split('"').next()?.to_string();
            let n = l.rsplit(' ').next()?.parse().ok()?;
            Some((verb, n))
        })
        .collect()
}

/// StoredFiles per `kubectl apply`.
const APPLY_CHUNK: usize = 1000;

/// Runs the benchmark with `files` StoredFiles.
pub async fn run(files: usize) -> anyhow::Result<()> {
    let k = KubeCluster::start();
    eprintln!("control plane up in {}", k.dir.display());
    let install = k.helm_install("bench", NS, &["replica.storage.size=1Gi"]);
    ensure!(install.ok(), "helm install: {install}");
    let before = requests(&operator_metrics(&k)?);
    let manifest = |i: usize| {
        format!(
            "---\napiVersion: deposito.io/v1alpha1\nkind: StoredFile\nmetadata: {{name: f-{i:05}}}\n\
             spec: {{replicas: 2, source: {{inline: \"file {i} of the kube scale benchmark\"}}}}\n"
        )
    };
    let start = Instant::now();
    // One `kubectl apply` per 1,000 objects keeps each call well inside its time limit.
    for first in (0..files).step_by(APPLY_CHUNK) {
        let yaml: String = (first..files.min(first + APPLY_CHUNK))
            .map(manifest)
            .collect();
        let apply = k.apply(NS, &yaml);
        ensure!(apply.ok(), "kubectl apply: {apply}");
    }
    let applied = start.elapsed();
    let deadline = start + Duration::from_secs(1800);
    let ready_after = loop {
        let out = k.kubectl_ok(&["get", "sf", "-n", NS, "-o", "json"]);
        let list: Value = serde_json::from_str(&out).context("kubectl JSON")?;
        let ready = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|sf| {
                sf["status"]["phase"] == "Ready"
                    && sf["status"]["readyReplicas"] == 2
                    && sf["status"]["observedGeneration"] == sf["metadata"]["generation"]
            })
            .count();
        if ready == files {
            break start.elapsed();
        }
        ensure!(Instant::now() < deadline, "only {ready}/{files} Ready");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let after = requests(&operator_metrics(&k)?);
    let pid = k
        .pid_of(&["deposito-operator", "kube"])
        .context("operator process")?;
    let rss = deposito_e2e::proc::peak_rss_of(pid).unwrap_or(0);
    let total: f64 =
        after.iter().map(|(_, n)| n).sum::<f64>() - before.iter().map(|(_, n)| n).sum::<f64>();
    println!("\n### Kube scale: {files} inline StoredFiles at replicas 2, 3 replica pods\n");
    println!("| figure | value |");
    println!("| --- | ---: |");
    println!(
        "| `kubectl apply` of all {files} | {:.1} s |",
        applied.as_secs_f64()
    );
    println!(
        "| all Ready after the apply started | {:.1} s |",
        ready_after.as_secs_f64()
    );
    println!(
        "| files Ready per second | {:.0} |",
        files as f64 / ready_after.as_secs_f64()
    );
    println!(
        "| operator API requests per file | {:.2} |",
        total / files as f64
    );
    for (verb, n) in &after {
        let was = before
            .iter()
            .find(|(v, _)| v == verb)
            .map_or(0.0, |(_, n)| *n);
        println!(
            "| &nbsp;&nbsp;{verb} per file | {:.2} |",
            (n - was) / files as f64
        );
    }
    println!(
        "| operator peak RSS | {:.0} MiB |",
        rss as f64 / deposito_e2e::MIB as f64
    );
    Ok(())
}
