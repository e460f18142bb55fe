//! `deposito-bench kube-data`: the data path in kube mode beside local mode on the same
//! machine, in the same run. A local cluster (3 replicas) and the chart on the test control
//! plane (3 replica pods) run side by side; each round measures both, one after the other:
//! - 4 KiB deposits at N=2 (`ack=all`: until both copies are durable), 16 in flight;
//! - 4 KiB GETs of those files, 16 in flight (p50 too);
//! - a large deposit at N=3 with the client binary, until the acknowledgement that the three
//!   copies are durable (`--no-wait`), then the time until the published status converges;
//! - a GET of that file, read and discarded.
//!
//! The kube gateway is reached at the operator pod's address, as an in-cluster client would
//! reach it through its Service (the process kubelet runs no kube-proxy). The table gives each
//! figure in both modes and kube ÷ local (target ≥ 0.8).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::ensure;
use futures::StreamExt;

use crate::bench_base::{get_all, median};
use crate::bench_small::{percentiles, CONCURRENCY, SMALL};
use crate::kube_bench::{operator_metrics, requests, total};
use deposito_e2e::cluster::Cluster;
use deposito_e2e::files::{random_seed, write_random_file, Prng};
use deposito_e2e::http::Reply;
use deposito_e2e::kube_cluster::KubeCluster;

const NS: &str = "bench";
const RELEASE: &str = "bench";
const MIB: u64 = 1 << 20;

/// A gateway to measure: its base URL, token and namespace.
struct Target {
    label: &'static str,
    url: String,
    token: String,
    namespace: String,
}

impl Target {
    fn file_url(&self, name: &str) -> String {
        format!("{}/v1/files/{}/{name}", self.url, self.namespace)
    }

    /// Deposits every body at N=2 with `ack=all`: operations per second until every
    /// acknowledgement named 2 durable copies.
    async fn small_puts(
        &self,
        http: &reqwest::Client,
        bodies: &[Vec<u8>],
        round: usize,
    ) -> anyhow::Result<f64> {
        let start = Instant::now();
        let replies: Vec<Reply> = futures::stream::iter(bodies.iter().enumerate())
            .map(|(i, b)| {
                let req = http
                    .put(format!(
                        "{}?replicas=2&ack=all",
                        self.file_url(&name(round, i))
                    ))
                    .bearer_auth(&self.token)
                    .body(b.clone());
                async move {
                    match req.send().await {
                        Ok(r) => Reply::read(r).await,
                        Err(e) => Reply {
                            status: 0,
                            body: e.to_string(),
                        },
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let rate = bodies.len() as f64 / start.elapsed().as_secs_f64();
        for r in &replies {
            ensure!(
                r.status == 201,
                "{}: small deposit failed: {r:?}",
                self.label
            );
            let st: deposito_api::gateway::FileStatus = serde_json::from_str(&r.body)?;
            ensure!(
                st.ready_replicas == 2,
                "{}: acknowledged with {} copies",
                self.label,
                st.ready_replicas
            );
        }
        Ok(rate)
    }

    /// GETs of the files of `round`: (operations per second, p50 in ms).
    async fn small_gets(
        &self,
        http: &reqwest::Client,
        bodies: &[Vec<u8>],
        round: usize,
    ) -> anyhow::Result<(f64, f64)> {
        let urls: Vec<String> = (0..bodies.len())
            .map(|i| self.file_url(&name(round, i)))
            .collect();
        let (rate, lat) = get_all(http, &urls, bodies, CONCURRENCY, Some(&self.token)).await?;
        Ok((rate, percentiles(&lat).0))
    }

    /// Seconds of `deposito deposit FILE --replicas 3 --no-wait`: until the acknowledgement,
    /// which comes once the 3 copies are verified and fsync'd (`ack=all`).
    fn large_put(&self, input: &Path, name: &str) -> anyhow::Result<f64> {
        let mut cmd = std::process::Command::new(deposito_e2e::bins::bin("deposito"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DEPOSITO_SERVER", &self.url)
            .env("DEPOSITO_TOKEN", &self.token)
            .env("DEPOSITO_NAMESPACE", &self.namespace)
            .args(["deposit", input.to_str().expect("utf-8 path")])
            .args(["--replicas", "3", "--name", name, "--no-wait"]);
        let out = deposito_e2e::proc::run(cmd, Duration::from_secs(600));
        ensure!(out.ok(), "{}: deposit {name}: {out}", self.label);
        Ok(out.elapsed.as_secs_f64())
    }

    /// Seconds until the file's published status is converged (`wait=converged` long polls).
    async fn converged(&self, http: &reqwest::Client, name: &str) -> anyhow::Result<f64> {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(600);
        loop {
            let r = http
                .get(format!("{}/status", self.file_url(name)))
                .query(&[("wait", "converged"), ("timeout", "20")])
                .bearer_auth(&self.token)
                .send()
                .await?;
            ensure!(
                r.status() == 200,
                "{}: status of {name}: {}",
                self.label,
                r.status()
            );
            let st: deposito_api::gateway::FileStatus = r.json().await?;
            if st.is_converged() {
                return Ok(start.elapsed().as_secs_f64());
            }
            ensure!(
                Instant::now() < deadline,
                "{}: {name} not converged",
                self.label
            );
        }
    }

    /// Seconds to GET `name` whole, discarding the bytes.
    async fn large_get(
        &self,
        http: &reqwest::Client,
        name: &str,
        size: u64,
    ) -> anyhow::Result<f64> {
        crate::bench::get_discard(http, &self.file_url(name), Some(&self.token), size).await
    }
}

fn name(round: usize, i: usize) -> String {
    format!("kd-r{round}-{i}")
}

/// Samples of one mode.
#[derive(Default)]
struct Samples {
    puts: Vec<f64>,
    gets: Vec<f64>,
    get_p50: Vec<f64>,
    large_put: Vec<f64>,
    /// Seconds from the large deposit's acknowledgement to its converged status.
    converged: Vec<f64>,
    large_get: Vec<f64>,
}

/// Runs the comparison: `quick` takes 400 small files, 64 MiB and 2 rounds; else 2,000 small
/// files, 1 GiB and 3 rounds.
pub async fn run(quick: bool) -> anyhow::Result<()> {
    let (files, large, rounds) = if quick {
        (400, 64 * MIB, 2)
    } else {
        (2000, 1024 * MIB, 3)
    };
    let local = Cluster::builder().replicas(3).start().await;
    let k = KubeCluster::start();
    eprintln!("control plane up in {}", k.dir.display());
    let install = k.helm_install(RELEASE, NS, &["replica.storage.size=8Gi"]);
    ensure!(install.ok(), "helm install: {install}");
    let kube = Target {
        label: "kube",
        url: format!("http://{}:7800", k.operator_pod(NS).1),
        token: k.secret_value(NS, &format!("{RELEASE}-deposito-tokens"), "client-token"),
        namespace: NS.into(),
    };
    let loc = Target {
        label: "local",
        url: local.url(),
        token: local.token.clone(),
        namespace: "default".into(),
    };
    let http = deposito_e2e::http::pooled_client();
    wait_replicas(&http, &kube, 3).await?;
    let mut rng = Prng::new(random_seed());
    let bodies: Vec<Vec<u8>> = (0..files)
        .map(|_| {
            let mut b = vec![0u8; SMALL];
            rng.fill(&mut b);
            b
        })
        .collect();
    let input = local.scratch("large.bin");
    write_random_file(&input, large, random_seed());
    let (mut l, mut kb) = (Samples::default(), Samples::default());
    // The operator's Kubernetes API requests for the kube rounds' small deposits.
    let mut api_requests = 0.0;
    for round in 0..rounds {
        eprintln!("kube-data: round {} of {rounds}", round + 1);
        for (t, s) in [(&loc, &mut l), (&kube, &mut kb)] {
            let before = (t.label == "kube")
                .then(|| operator_metrics(&k))
                .transpose()?;
            s.puts.push(t.small_puts(&http, &bodies, round).await?);
            if let Some(before) = before {
                // The status each file gets after its acknowledgement counts too.
                tokio::time::sleep(Duration::from_secs(2)).await;
                api_requests +=
                    total(&requests(&operator_metrics(&k)?)) - total(&requests(&before));
            }
            let (rate, p50) = t.small_gets(&http, &bodies, round).await?;
            s.gets.push(rate);
            s.get_p50.push(p50);
            let big = format!("kd-large-r{round}");
            s.large_put.push(large as f64 / t.large_put(&input, &big)?);
            s.converged.push(t.converged(&http, &big).await?);
            s.large_get
                .push(large as f64 / t.large_get(&http, &big, large).await?);
            let r = http
                .delete(t.file_url(&big))
                .bearer_auth(&t.token)
                .send()
                .await?;
            ensure!(
                r.status().is_success(),
                "{}: DELETE {big}: {}",
                t.label,
                r.status()
            );
        }
    }
    std::fs::remove_file(&input)?;
    println!(
        "\n### Kube mode beside local mode: {files} × 4 KiB at N=2, {} MiB at N=3, medians of {rounds} rounds\n",
        large / MIB
    );
    println!(
        "| figure | local | kube | kube ÷ local (target ≥ 0.8) |\n| --- | ---: | ---: | ---: |"
    );
    let row = |figure: &str, unit: &str, scale: f64, a: &[f64], b: &[f64]| {
        let (a, b) = (median(a), median(b));
        println!(
            "| {figure} | {:.0} {unit} | {:.0} {unit} | {:.2} |",
            a / scale,
            b / scale,
            b / a
        );
    };
    row(
        "4 KiB PUT at N=2, until 2 copies",
        "ops/s",
        1.0,
        &l.puts,
        &kb.puts,
    );
    row("4 KiB GET, 16 in flight", "ops/s", 1.0, &l.gets, &kb.gets);
    println!(
        "| 4 KiB GET p50 | {:.2} ms | {:.2} ms | |",
        median(&l.get_p50),
        median(&kb.get_p50)
    );
    println!(
        "| operator API requests per 4 KiB deposit | | {:.2} | |",
        api_requests / (files * rounds) as f64
    );
    let mib = MIB as f64;
    row(
        &format!("{} MiB PUT at N=3, until 3 copies", large / MIB),
        "MiB/s",
        mib,
        &l.large_put,
        &kb.large_put,
    );
    println!(
        "| its status converged after the acknowledgement | {:.0} ms | {:.0} ms | |",
        median(&l.converged) * 1e3,
        median(&kb.converged) * 1e3
    );
    row(
        &format!("{} MiB GET", large / MIB),
        "MiB/s",
        mib,
        &l.large_get,
        &kb.large_get,
    );
    Ok(())
}

/// Waits (bounded) until the gateway counts `n` live replicas.
async fn wait_replicas(http: &reqwest::Client, t: &Target, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let live = match http
            .get(format!("{}/v1/replicas", t.url))
            .bearer_auth(&t.token)
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => r
                .json::<deposito_api::gateway::ReplicaList>()
                .await
                .map(|l| l.items.iter().filter(|r| r.health == "Live").count())
                .unwrap_or(0),
            _ => 0,
        };
        if live >= n {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{}: {live} of {n} replicas live",
            t.label
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
