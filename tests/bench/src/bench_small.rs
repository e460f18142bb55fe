//! Small files (4 KiB) in rounds: each round measures every figure once, interleaved with its
//! baselines, so that a drifting disk or CPU moves both; the table gives medians over the
//! rounds, each figure as a ratio to its baseline's median, and each baseline's drift.
//!
//! Figures: deposits at N=2 with `ack=one` and `ack=all` (until acknowledged, and until both
//! copies exist), reads through the gateway, and the operator's and replicas' CPU time per
//! operation. Baselines: a plain HTTP PUT of the same bodies to a minimal server, GETs of the
//! same files from nginx (sendfile) and from that server, and, with `--compare DIR`, the same
//! deposits on a cluster of an older build running beside this one.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use futures::StreamExt;

use crate::bench_base::{drift, get_all, median, Nginx, PlainServer};
use deposito_e2e::cluster::Cluster;
use deposito_e2e::files::{random_seed, Prng};
use deposito_e2e::http::Reply;

pub(crate) const SMALL: usize = 4096;
pub(crate) const CONCURRENCY: usize = 16;
const CONVERGE: Duration = Duration::from_secs(1800);

/// What to run against.
pub struct Small<'a> {
    pub cluster: &'a Cluster,
    /// An older build's cluster, for the `--compare` baseline.
    pub old: Option<&'a Cluster>,
    pub plain: &'a PlainServer,
    pub nginx: Option<&'a Nginx>,
    pub files: usize,
    pub rounds: usize,
}

/// One figure's samples over the rounds.
#[derive(Default)]
struct Figure {
    name: String,
    rates: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    /// CPU milliseconds of the servers per operation.
    cpu_ms: Vec<f64>,
    /// The name of the baseline this figure is a ratio to.
    base: Option<&'static str>,
}

impl Figure {
    fn add(&mut self, rate: f64, latencies: Option<&[Duration]>, cpu_ms: Option<f64>) {
        self.rates.push(rate);
        if let Some(l) = latencies {
            let (p50, p99) = percentiles(l);
            self.p50.push(p50);
            self.p99.push(p99);
        }
        self.cpu_ms.extend(cpu_ms);
    }
}

struct Table(Vec<Figure>);

impl Table {
    fn get(&mut self, name: &str, base: Option<&'static str>) -> &mut Figure {
        if let Some(i) = self.0.iter().position(|f| f.name == name) {
            return &mut self.0[i];
        }
        self.0.push(Figure {
            name: name.to_string(),
            base,
            ..Figure::default()
        });
        self.0.last_mut().expect("just pushed")
    }

    fn median_of(&self, name: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|f| f.name == name)
            .map(|f| median(&f.rates))
    }

    fn print(&self, files: usize, rounds: usize) {
        println!(
            "\n### Small files: {files} × 4 KiB at N=2, {CONCURRENCY} in flight, medians of {rounds} interleaved rounds\n"
        );
        println!(
            "| figure | ops/s | p50 | p99 | server CPU per op | ratio | to | drift (max÷min) |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |");
        let ms = |v: &[f64]| {
            if v.is_empty() {
                String::new()
            } else {
                format!("{:.2} ms", median(v))
            }
        };
        for f in &self.0 {
            let rate = median(&f.rates);
            let (ratio, to) = match f.base.and_then(|b| self.median_of(b).map(|m| (b, m))) {
                Some((b, m)) => (format!("{:.2}", rate / m), b.to_string()),
                None => (String::new(), String::new()),
            };
            let drift = format!("{:.2}", drift(&f.rates));
            println!(
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} |",
                f.name,
                rate,
                ms(&f.p50),
                ms(&f.p99),
                ms(&f.cpu_ms),
                ratio,
                to,
                drift
            );
        }
    }
}

const PLAIN_PUT: &str = "baseline: plain HTTP PUT";
const OLD_PUT: &str = "baseline: older build, deposit until 2 copies";
const NGINX_GET: &str = "baseline: nginx GET (sendfile)";
const PLAIN_GET: &str = "baseline: plain HTTP GET";

/// Runs the rounds and prints the table.
pub async fn run(s: Small<'_>) -> anyhow::Result<()> {
    let mut rng = Prng::new(random_seed());
    let bodies: Vec<Vec<u8>> = (0..s.files)
        .map(|_| {
            let mut b = vec![0u8; SMALL];
            rng.fill(&mut b);
            b
        })
        .collect();
    let http = deposito_e2e::http::pooled_client();
    let mut t = Table(Vec::new());
    for round in 0..s.rounds {
        eprintln!("small files: round {} of {}", round + 1, s.rounds);
        let plain_put = s.plain.put_small(&http, &bodies, CONCURRENCY).await;
        t.get(PLAIN_PUT, None).add(plain_put, None, None);
        if let Some(old) = s.old {
            let (_, until, _, cpu) = deposits(old, &http, &bodies, None, round).await?;
            t.get(OLD_PUT, None).add(until, None, Some(cpu));
        }
        for mode in ["one", "all"] {
            let (acked, until, lat, cpu) =
                deposits(s.cluster, &http, &bodies, Some(mode), round).await?;
            t.get(
                &format!("deposit ack={mode}, until acknowledged"),
                Some(PLAIN_PUT),
            )
            .add(acked, Some(&lat), None);
            let base = if s.old.is_some() { OLD_PUT } else { PLAIN_PUT };
            t.get(
                &format!("deposit ack={mode}, until 2 copies each"),
                Some(base),
            )
            .add(until, None, Some(cpu));
        }
        // Reads of the same bytes: nginx and the plain server read the plain server's folder.
        if let Some(nginx) = s.nginx {
            let urls: Vec<String> = (0..s.files).map(|i| nginx.url(&format!("s{i}"))).collect();
            let (rate, lat) = get_all(&http, &urls, &bodies, CONCURRENCY, None).await?;
            t.get(NGINX_GET, None).add(rate, Some(&lat), None);
        }
        let urls: Vec<String> = (0..s.files)
            .map(|i| format!("http://{}/s{i}", s.plain.addr))
            .collect();
        let (rate, lat) = get_all(&http, &urls, &bodies, CONCURRENCY, None).await?;
        t.get(PLAIN_GET, None).add(rate, Some(&lat), None);
        let c = s.cluster;
        let urls: Vec<String> = (0..s.files)
            .map(|i| format!("{}/v1/files/default/{}", c.url(), name("all", round, i)))
            .collect();
        let cpu0 = c.server_cpu_seconds();
        let op0 = operator_cpu(c);
        let (rate, lat) = get_all(&http, &urls, &bodies, CONCURRENCY, Some(&c.token)).await?;
        let cpu = (c.server_cpu_seconds() - cpu0) * 1000.0 / s.files as f64;
        let op = (operator_cpu(c) - op0) * 1000.0 / s.files as f64;
        eprintln!("small GETs: server CPU {cpu:.3} ms per op, of which the gateway {op:.3} ms");
        let base = if s.nginx.is_some() {
            NGINX_GET
        } else {
            PLAIN_GET
        };
        t.get("retrieve through the gateway", Some(base))
            .add(rate, Some(&lat), Some(cpu));
    }
    t.print(s.files, s.rounds);
    Ok(())
}

/// CPU seconds used so far by the operator (gateway) alone.
pub(crate) fn operator_cpu(c: &Cluster) -> f64 {
    c.operator_pid()
        .and_then(|pid| deposito_e2e::proc::cpu_seconds(pid).ok())
        .unwrap_or(0.0)
}

pub(crate) fn name(mode: &str, round: usize, i: usize) -> String {
    format!("small-{mode}-r{round}-{i}")
}

/// Deposits every body at N=2 (with `ack`, or the build's default when None): (acknowledged
/// ops/s, until-2-copies ops/s, latencies, server CPU ms per op until 2 copies). When every
/// acknowledgement already names 2 durable copies, that is the moment both exist; otherwise the
/// gateway's list is polled until each file has them.
pub(crate) async fn deposits(
    c: &Cluster,
    http: &reqwest::Client,
    bodies: &[Vec<u8>],
    ack: Option<&str>,
    round: usize,
) -> anyhow::Result<(f64, f64, Vec<Duration>, f64)> {
    let mode = ack.unwrap_or("default");
    let cpu0 = c.server_cpu_seconds();
    let start = Instant::now();
    let results: Vec<(Reply, Duration)> = futures::stream::iter(bodies.iter().enumerate())
        .map(|(i, b)| {
            let mut url = format!(
                "{}/v1/files/default/{}?replicas=2",
                c.url(),
                name(mode, round, i)
            );
            if let Some(a) = ack {
                url.push_str(&format!("&ack={a}"));
            }
            let req = http.put(url).bearer_auth(&c.token).body(b.clone());
            async move {
                let sent = Instant::now();
                let reply = match req.send().await {
                    Ok(r) => Reply::read(r).await,
                    Err(e) => Reply {
                        status: 0,
                        body: e.to_string(),
                    },
                };
                (reply, sent.elapsed())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let acked = bodies.len() as f64 / start.elapsed().as_secs_f64();
    if let Some((bad, _)) = results.iter().find(|(r, _)| r.status != 201) {
        bail!("small deposit (ack={mode}) failed: {bad:?}");
    }
    let all_durable = results.iter().all(|(r, _)| {
        serde_json::from_str::<deposito_api::gateway::FileStatus>(&r.body)
            .is_ok_and(|st| st.ready_replicas >= 2)
    });
    if !all_durable {
        wait_converged(c, &format!("small-{mode}-r{round}-"), bodies.len(), mode).await?;
    }
    let until = bodies.len() as f64 / start.elapsed().as_secs_f64();
    let cpu = (c.server_cpu_seconds() - cpu0) * 1000.0 / bodies.len() as f64;
    Ok((
        acked,
        until,
        results.into_iter().map(|(_, d)| d).collect(),
        cpu,
    ))
}

/// Polls the gateway's list until the `n` files named `prefix*` are converged.
async fn wait_converged(c: &Cluster, prefix: &str, n: usize, mode: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let list = c.list().await.map_err(anyhow::Error::msg)?;
        let done = list
            .items
            .iter()
            .filter(|s| s.name.starts_with(prefix) && s.is_converged())
            .count();
        if done == n {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "small files (ack={mode}) not converged: {done}/{n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (p50, p99) in milliseconds.
pub(crate) fn percentiles(latencies: &[Duration]) -> (f64, f64) {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let at = |q: f64| {
        let i = ((sorted.len().max(1) - 1) as f64 * q).round() as usize;
        sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    (at(0.50), at(0.99))
}
