//! `deposito-bench kube`: kube mode at scale on the real test control plane. Installs the
//! chart (3 replicas) and creates N inline StoredFiles at N=2 through the Kubernetes API
//! (16 requests in flight, as a GitOps tool or a script would), then measures:
//! - the time until every one is Ready (counted through the gateway's paged list);
//! - the Kubernetes API requests the operator made per file (its own counter, by verb);
//! - the operator's peak RSS;
//! - with 1,000 files present and again with N present (when N is larger): a gateway GET of a
//!   file's status (sequential, p50 and p99) and a 4 KiB deposit through the gateway at 2
//!   copies, acknowledged once both are stored (sequential, median), so the two sizes compare
//!   in the same run.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use futures::StreamExt;
use serde_json::json;

use deposito_api::gateway::FileList;
use deposito_e2e::kube_cluster::KubeCluster;

const NS: &str = "bench";
const RELEASE: &str = "bench";
/// StoredFiles created at once through the API.
const CREATE_IN_FLIGHT: usize = 8;
/// Attempts per create (a timed-out or refused request is tried again; the API server is
/// busy with the operator's own requests meanwhile).
const CREATE_ATTEMPTS: usize = 5;
/// Status GETs and deposits per sample.
const STATUS_GETS: usize = 400;
const DEPOSITS: usize = 30;
const DEPOSIT_SIZE: usize = 4096;

pub(crate) fn operator_metrics(k: &KubeCluster) -> anyhow::Result<String> {
    let (_, ip) = k.operator_pod(NS);
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
pub(crate) fn requests(metrics: &str) -> Vec<(String, f64)> {
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

/// The value of an unlabelled gauge; 0 when absent.
fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

pub(crate) fn total(requests: &[(String, f64)]) -> f64 {
    requests.iter().map(|(_, n)| n).sum()
}

/// The API server as the admin, straight over HTTPS (kubectl creates about 65 objects a
/// second; this, with several requests in flight, several hundred).
struct ApiServer {
    http: reqwest::Client,
    url: String,
}

impl ApiServer {
    fn connect(k: &KubeCluster) -> anyhow::Result<ApiServer> {
        let pki = k.dir.join("c/pki");
        let read = |f: &str| std::fs::read(pki.join(f)).with_context(|| format!("pki/{f}"));
        let mut identity = read("admin.crt")?;
        identity.extend(read("admin.key")?);
        // HTTP/1.1, one connection per request in flight: the API server's HTTP/2 closes a
        // connection whose client cancels many streams (each timed-out request resets one).
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&read("ca.crt")?)?)
            .identity(reqwest::Identity::from_pem(&identity)?)
            .http1_only()
            .timeout(Duration::from_secs(120))
            .build()?;
        let kubeconfig = std::fs::read_to_string(&k.kubeconfig)?;
        let url = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .context("no server in the kubeconfig")?
            .trim()
            .to_string();
        Ok(ApiServer { http, url })
    }

    /// Creates StoredFiles `f-<i>` for every i in `range`.
    async fn create_files(&self, range: std::ops::Range<usize>) -> anyhow::Result<()> {
        let url = format!(
            "{}/apis/deposito.io/v1alpha1/namespaces/{NS}/storedfiles",
            self.url
        );
        let results = futures::stream::iter(range)
            .map(|i| {
                let body = json!({
                    "apiVersion": "deposito.io/v1alpha1",
                    "kind": "StoredFile",
                    "metadata": {"name": format!("f-{i:06}")},
                    "spec": {"replicas": 2, "source": {"inline": format!("file {i} of the kube scale benchmark")}},
                });
                let (http, url) = (&self.http, &url);
                async move {
                    let mut last = String::new();
                    for attempt in 0..CREATE_ATTEMPTS {
                        if attempt > 0 {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                        match http.post(url).json(&body).send().await {
                            Ok(r) if r.status() == 201 => return Ok(()),
                            // Created by an attempt whose answer was lost.
                            Ok(r) if r.status() == 409 && attempt > 0 => return Ok(()),
                            Ok(r) if r.status() == 429 || r.status().is_server_error() => {
                                last = r.status().to_string();
                            }
                            Ok(r) => anyhow::bail!("create f-{i:06}: {}", r.status()),
                            Err(e) => last = format!("{e:#}"),
                        }
                    }
                    anyhow::bail!("create f-{i:06}: {CREATE_ATTEMPTS} attempts, last: {last}")
                }
            })
            .buffer_unordered(CREATE_IN_FLIGHT)
            .collect::<Vec<anyhow::Result<()>>>()
            .await;
        results.into_iter().collect()
    }
}

/// The gateway, reached at the operator pod's address with the client token.
struct Gateway {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Gateway {
    fn connect(k: &KubeCluster) -> anyhow::Result<Gateway> {
        let token = k.secret_value(NS, &format!("{RELEASE}-deposito-tokens"), "client-token");
        Ok(Gateway {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            url: format!("http://{}:7800/v1/files/{NS}", k.operator_pod(NS).1),
            token,
        })
    }

    /// StoredFiles `f-*` that are Ready at 2 copies for their current generation, counted
    /// through the gateway's paged list.
    async fn ready_files(&self) -> anyhow::Result<usize> {
        let mut ready = 0;
        let mut after: Option<String> = None;
        loop {
            let mut req = self
                .http
                .get(&self.url)
                .bearer_auth(&self.token)
                .query(&[("limit", "10000")]);
            if let Some(a) = &after {
                req = req.query(&[("after", a)]);
            }
            let r = req.send().await?;
            ensure!(r.status() == 200, "list: {}", r.status());
            let page: FileList = r.json().await?;
            ready += page
                .items
                .iter()
                .filter(|f| f.name.starts_with("f-") && f.is_converged())
                .count();
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(ready),
            }
        }
    }

    async fn wait_ready(
        &self,
        files: usize,
        deadline: Instant,
        operator: Option<u32>,
    ) -> anyhow::Result<()> {
        let mut last_report = Instant::now();
        loop {
            let ready = self.ready_files().await?;
            if ready == files {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "only {ready}/{files} Ready");
            if last_report.elapsed() > Duration::from_secs(60) {
                let rss = operator
                    .and_then(deposito_e2e::proc::peak_rss_of)
                    .unwrap_or(0);
                eprintln!(
                    "  {ready}/{files} Ready; operator peak RSS so far {} MiB",
                    rss / deposito_e2e::MIB
                );
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Sequential status GETs of `present` files spread over the names, then sequential
    /// deposits named `d-<label>-<i>`.
    async fn sample(&self, present: usize, label: &str) -> anyhow::Result<Sample> {
        let mut gets = Vec::with_capacity(STATUS_GETS);
        for j in 0..STATUS_GETS {
            let i = (j * 7919) % present; // a stride prime to any count: spread, repeatable
            let sent = Instant::now();
            let r = self
                .http
                .get(format!("{}/f-{i:06}/status", self.url))
                .bearer_auth(&self.token)
                .send()
                .await?;
            ensure!(r.status() == 200, "status of f-{i:06}: {}", r.status());
            r.bytes().await?;
            gets.push(sent.elapsed().as_secs_f64());
        }
        let mut deposits = Vec::with_capacity(DEPOSITS);
        for j in 0..DEPOSITS {
            let body: Vec<u8> = (0..DEPOSIT_SIZE).map(|b| (b * 31 + j) as u8).collect();
            let sent = Instant::now();
            let r = self
                .http
                .put(format!("{}/d-{label}-{j:02}", self.url))
                .query(&[("replicas", "2")])
                .bearer_auth(&self.token)
                .body(body)
                .send()
                .await?;
            ensure!(
                r.status() == 201,
                "deposit d-{label}-{j:02}: {}",
                r.status()
            );
            r.bytes().await?;
            deposits.push(sent.elapsed().as_secs_f64());
        }
        gets.sort_by(f64::total_cmp);
        Ok(Sample {
            present,
            get_p50: percentile(&gets, 0.50),
            get_p99: percentile(&gets, 0.99),
            deposit_p50: percentile(
                &{
                    let mut d = deposits;
                    d.sort_by(f64::total_cmp);
                    d
                },
                0.50,
            ),
        })
    }
}

/// The value at fraction `q` of sorted `v`.
fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Gateway timings with `present` files.
struct Sample {
    present: usize,
    get_p50: f64,
    get_p99: f64,
    deposit_p50: f64,
}

/// Runs the benchmark with `files` StoredFiles.
pub async fn run(files: usize) -> anyhow::Result<()> {
    let k = KubeCluster::start();
    eprintln!("control plane up in {}", k.dir.display());
    let install = k.helm_install(RELEASE, NS, &["replica.storage.size=1Gi"]);
    ensure!(install.ok(), "helm install: {install}");
    let api = ApiServer::connect(&k)?;
    let gateway = Gateway::connect(&k)?;
    let before = requests(&operator_metrics(&k)?);
    // Requests made for the gateway samples' deposits, not for the files counted.
    let mut sampled = 0.0;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(900) + Duration::from_millis(40 * files as u64);
    let first = files.min(1000);
    api.create_files(0..first).await?;
    let operator = k.pid_of(&["deposito-operator", "kube"]);
    gateway.wait_ready(first, deadline, operator).await?;
    let first_ready = start.elapsed();
    let mut samples = Vec::new();
    let mut created = Duration::ZERO;
    let mut all_ready = first_ready;
    let mut rest_ready = Duration::ZERO;
    if files > first {
        let m = total(&requests(&operator_metrics(&k)?));
        samples.push(gateway.sample(first, "small").await?);
        sampled += total(&requests(&operator_metrics(&k)?)) - m;
        eprintln!("{first} Ready; creating the other {}", files - first);
        let rest = Instant::now();
        api.create_files(first..files).await?;
        created = rest.elapsed();
        eprintln!(
            "created in {:.0} s; waiting for Ready",
            created.as_secs_f64()
        );
        gateway.wait_ready(files, deadline, operator).await?;
        rest_ready = rest.elapsed();
        all_ready = start.elapsed();
    }
    let metrics_after = operator_metrics(&k)?;
    let after = requests(&metrics_after);
    let heap = |name: &str| gauge(&metrics_after, name) / deposito_e2e::MIB as f64;
    let (heap_allocated, heap_resident) = (
        heap("deposito_operator_heap_allocated_bytes"),
        heap("deposito_operator_heap_resident_bytes"),
    );
    samples.push(gateway.sample(files, "large").await?);
    let pid = k
        .pid_of(&["deposito-operator", "kube"])
        .context("operator process")?;
    let rss = deposito_e2e::proc::peak_rss_of(pid).unwrap_or(0);
    let per_file = (total(&after) - total(&before) - sampled) / files as f64;

    println!("\n### Kube scale: {files} inline StoredFiles at replicas 2, 3 replica pods\n");
    println!("| figure | value |");
    println!("| --- | ---: |");
    println!(
        "| first {first} created and all Ready | {:.1} s |",
        first_ready.as_secs_f64()
    );
    if files > first {
        println!(
            "| the other {} created through the API | {:.1} s ({:.0}/s) |",
            files - first,
            created.as_secs_f64(),
            (files - first) as f64 / created.as_secs_f64()
        );
        println!(
            "| the other {} all Ready | {:.1} s ({:.0} files/s) |",
            files - first,
            rest_ready.as_secs_f64(),
            (files - first) as f64 / rest_ready.as_secs_f64()
        );
    }
    println!(
        "| files Ready per second, overall | {:.0} |",
        files as f64 / all_ready.as_secs_f64()
    );
    println!("| operator API requests per file | {per_file:.2} |");
    for (verb, n) in &after {
        let was = before
            .iter()
            .find(|(v, _)| v == verb)
            .map_or(0.0, |(_, n)| *n);
        println!(
            "| &nbsp;&nbsp;{verb} per file (gateway samples included) | {:.2} |",
            (n - was) / files as f64
        );
    }
    println!(
        "| operator peak RSS | {:.0} MiB |",
        rss as f64 / deposito_e2e::MIB as f64
    );
    println!(
        "| operator heap with {files} present: allocated / resident | {heap_allocated:.0} MiB / {heap_resident:.0} MiB |"
    );
    for s in &samples {
        println!(
            "| with {} files: gateway status GET p50 / p99 | {:.2} ms / {:.2} ms |",
            s.present,
            s.get_p50 * 1e3,
            s.get_p99 * 1e3
        );
        println!(
            "| with {} files: 4 KiB deposit at 2 copies, median | {:.1} ms |",
            s.present,
            s.deposit_p50 * 1e3
        );
    }
    if let [small, large] = &samples[..] {
        println!(
            "| deposit median, {} files ÷ {} files | {:.2}× |",
            large.present,
            small.present,
            large.deposit_p50 / small.deposit_p50
        );
    }
    Ok(())
}
