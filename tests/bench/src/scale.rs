//! `deposito-bench scale`: the reconcile engine's cost as the catalog grows. Local mode with
//! 3 replicas; small files (4 KiB) deposited at N=2 through the HTTP API, 16 in flight, in
//! batches. Prints the acknowledged PUT rate of each batch, the time until every file is Ready
//! after the last PUT, the operator's peak RSS, and its CPU while idle once converged. With
//! `--compare DIR`, runs the same workload against the binaries in DIR first (an older build)
//! so both engines are measured in one run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures::StreamExt;

use deposito_e2e::cluster::Cluster;
use deposito_e2e::files::{random_seed, Prng};
use deposito_e2e::http::Reply;
use deposito_e2e::proc::cpu_seconds;

const SMALL: usize = 4096;
const CONCURRENCY: usize = 16;
/// Longest wait for convergence after the last PUT.
const CONVERGE: Duration = Duration::from_secs(1800);

/// What to run.
pub struct ScaleOptions {
    pub files: usize,
    pub batch: usize,
    pub idle: Duration,
    /// Binaries of an older build to measure first, in the same run.
    pub compare: Option<PathBuf>,
}

/// The figures of one engine.
#[derive(Debug, Clone)]
pub struct ScaleFigures {
    pub label: String,
    /// Acknowledged PUTs per second, per batch.
    pub batch_rates: Vec<f64>,
    pub ready_after_last_put: Duration,
    /// From the first PUT until every file is Ready.
    pub total: Duration,
    pub peak_rss_bytes: u64,
    /// Share of one core used by the operator while idle.
    pub idle_cpu: f64,
}

impl ScaleFigures {
    fn last_over_first(&self) -> f64 {
        match (self.batch_rates.first(), self.batch_rates.last()) {
            (Some(first), Some(last)) if *first > 0.0 => last / first,
            _ => 0.0,
        }
    }
}

async fn put(http: &reqwest::Client, c: &Cluster, i: usize, body: Vec<u8>) -> Reply {
    let url = format!("{}/v1/files/default/scale-{i:06}?replicas=2", c.url());
    match http.put(&url).bearer_auth(&c.token).body(body).send().await {
        Ok(r) => Reply::read(r).await,
        Err(e) => Reply {
            status: 0,
            body: format!("PUT {url}: {e}"),
        },
    }
}

/// Random 4 KiB bodies, numbered by `range`.
pub fn small_bodies(rng: &mut Prng, range: std::ops::Range<usize>) -> Vec<(usize, Vec<u8>)> {
    range
        .map(|i| {
            let mut b = vec![0u8; SMALL];
            rng.fill(&mut b);
            (i, b)
        })
        .collect()
}

/// Runs the workload against one build.
async fn measure(
    label: &str,
    bin_dir: Option<PathBuf>,
    o: &ScaleOptions,
) -> anyhow::Result<ScaleFigures> {
    let mut builder = Cluster::builder().replicas(3).resync_interval_secs(None);
    if let Some(dir) = bin_dir {
        builder = builder.bin_dir(dir);
    }
    let c = builder.start().await;
    let pid = c.operator_pid().context("operator pid")?;
    eprintln!(
        "[{label}] cluster up at {}; {} files in batches of {}",
        c.url(),
        o.files,
        o.batch
    );
    let http = deposito_e2e::http::pooled_client();
    let mut rng = Prng::new(random_seed());
    let mut batch_rates = Vec::new();
    let mut done = 0usize;
    let first_put = Instant::now();
    while done < o.files {
        let n = o.batch.min(o.files - done);
        let bodies = small_bodies(&mut rng, done..done + n);
        let start = Instant::now();
        let replies: Vec<Reply> = futures::stream::iter(bodies)
            .map(|(i, b)| put(&http, &c, i, b))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let took = start.elapsed();
        if let Some(bad) = replies.iter().find(|r| r.status != 201) {
            bail!("[{label}] PUT failed: {bad:?}");
        }
        let rate = n as f64 / took.as_secs_f64();
        eprintln!(
            "[{label}] batch {}: {n} PUTs in {:.1} s, {rate:.0}/s",
            batch_rates.len() + 1,
            took.as_secs_f64()
        );
        batch_rates.push(rate);
        done += n;
    }
    let last_put = Instant::now();
    let deadline = last_put + CONVERGE;
    loop {
        let (_, ready) = c.count_converged().await.map_err(anyhow::Error::msg)?;
        if ready == o.files {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "[{label}] not converged: {ready}/{}",
            o.files
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ready_after_last_put = last_put.elapsed();
    let total = first_put.elapsed();
    eprintln!(
        "[{label}] all Ready {:.1} s after the last PUT",
        ready_after_last_put.as_secs_f64()
    );
    // Idle: nothing is asked of the system; only the operator's own work remains.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = cpu_seconds(pid)?;
    tokio::time::sleep(o.idle).await;
    let idle_cpu = (cpu_seconds(pid)? - before) / o.idle.as_secs_f64();
    let peak_rss_bytes = deposito_e2e::proc::peak_rss_of(pid).unwrap_or(0);
    eprintln!(
        "[{label}] idle CPU {:.1}% of a core, peak RSS {:.0} MiB",
        idle_cpu * 100.0,
        peak_rss_bytes as f64 / deposito_e2e::MIB as f64
    );
    Ok(ScaleFigures {
        label: label.to_string(),
        batch_rates,
        ready_after_last_put,
        total,
        peak_rss_bytes,
        idle_cpu,
    })
}

/// Prints the table of figures, one column per engine.
fn print(figures: &[ScaleFigures], o: &ScaleOptions) {
    println!(
        "\n### Scale: {} files of 4 KiB at N=2, {CONCURRENCY} in flight, batches of {}\n",
        o.files, o.batch
    );
    let head: Vec<String> = figures.iter().map(|f| f.label.clone()).collect();
    println!("| figure | {} |", head.join(" | "));
    println!("| --- |{}", " ---: |".repeat(figures.len()));
    let batches = figures
        .iter()
        .map(|f| f.batch_rates.len())
        .max()
        .unwrap_or(0);
    for b in 0..batches {
        let cells: Vec<String> = figures
            .iter()
            .map(|f| {
                f.batch_rates
                    .get(b)
                    .map_or("-".into(), |r| format!("{r:.0}"))
            })
            .collect();
        println!(
            "| acknowledged PUTs/s, batch {} | {} |",
            b + 1,
            cells.join(" | ")
        );
    }
    let row = |name: &str, f: &dyn Fn(&ScaleFigures) -> String| {
        let cells: Vec<String> = figures.iter().map(f).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    row("last batch ÷ first batch (target ≥ 0.8)", &|f| {
        format!("{:.2}", f.last_over_first())
    });
    row("all Ready after the last PUT (target ≤ 60 s)", &|f| {
        format!("{:.1} s", f.ready_after_last_put.as_secs_f64())
    });
    row(
        "files at 2 copies per second, first PUT to all Ready",
        &|f| format!("{:.0}", o.files as f64 / f.total.as_secs_f64()),
    );
    row("operator peak RSS (target < 200 MiB)", &|f| {
        format!(
            "{:.0} MiB",
            f.peak_rss_bytes as f64 / deposito_e2e::MIB as f64
        )
    });
    row(
        &format!(
            "operator CPU idle over {} s (target < 2%)",
            o.idle.as_secs()
        ),
        &|f| format!("{:.2}%", f.idle_cpu * 100.0),
    );
}

/// Entry point of `deposito-bench scale`.
pub async fn run(o: ScaleOptions) -> anyhow::Result<()> {
    let mut figures = Vec::new();
    if let Some(dir) = &o.compare {
        figures.push(measure("baseline build", Some(dir.clone()), &o).await?);
    }
    figures.push(measure("this build", None, &o).await?);
    print(&figures, &o);
    Ok(())
}
