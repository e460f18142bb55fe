//! `deposito-bench lifecycle`: many files whose lifecycle step falls due together. Local mode
//! with 3 replicas; N small files (4 KiB) deposited in one batch at `2,1@60s` (2 copies,
//! then 1 from 60 s of age), 16 in flight. Measures the operator's CPU while it waits for the
//! step (the work queue holds each file until its moment: no scanning), the transition
//! itself (from the first file's due time until every file has exactly 1 verified copy),
//! and the CPU once all are done; samples every file's status during the transition and
//! counts any with fewer verified copies than the level in force. Fails when a sample falls
//! below, when the copies on disk are not exactly one per file, or when either idle figure
//! reaches 2% of a core.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures::StreamExt;

use deposito_e2e::cluster::Cluster;
use deposito_e2e::files::{object_files, random_seed, Prng};
use deposito_e2e::http::Reply;
use deposito_e2e::proc::cpu_seconds;

const CONCURRENCY: usize = 16;
/// The age of the step: room for the batch and its convergence before it falls due.
const STEP_AGE: Duration = Duration::from_secs(60);
const LIFECYCLE: &str = "2,1@60s";
/// The idle windows' length.
const IDLE: Duration = Duration::from_secs(10);
/// Longest the transition may take after the last file's due time.
const TRANSITION_LIMIT: Duration = Duration::from_secs(300);

async fn put(http: &reqwest::Client, c: &Cluster, i: usize, body: Vec<u8>) -> Reply {
    let url = format!("{}/v1/files/default/aging-{i:06}", c.url());
    let req = http
        .put(&url)
        .bearer_auth(&c.token)
        .header(deposito_api::HEADER_LIFECYCLE, LIFECYCLE)
        .body(body);
    match req.send().await {
        Ok(r) => Reply::read(r).await,
        Err(e) => Reply {
            status: 0,
            body: format!("PUT {url}: {e}"),
        },
    }
}

/// The operator's share of one core over `window`, starting now.
async fn cpu_over(pid: u32, window: Duration) -> anyhow::Result<f64> {
    let before = cpu_seconds(pid)?;
    tokio::time::sleep(window).await;
    Ok((cpu_seconds(pid)? - before) / window.as_secs_f64())
}

/// One sample of every file: (files at exactly 1 converged copy, files with fewer verified
/// copies than the level in force).
async fn sample(c: &Cluster) -> anyhow::Result<(usize, usize)> {
    let list = c.list().await.map_err(anyhow::Error::msg)?;
    let done = list
        .items
        .iter()
        .filter(|s| s.replicas == 1 && s.is_converged())
        .count();
    let below = list
        .items
        .iter()
        .filter(|s| s.ready_replicas < s.replicas)
        .count();
    Ok((done, below))
}

/// Entry point of `deposito-bench lifecycle`.
pub async fn run(files: usize) -> anyhow::Result<()> {
    let c = Cluster::builder()
        .replicas(3)
        .resync_interval_secs(None)
        .start()
        .await;
    let pid = c.operator_pid().context("operator pid")?;
    let http = deposito_e2e::http::pooled_client();
    let mut rng = Prng::new(random_seed());
    let bodies = crate::scale::small_bodies(&mut rng, 0..files);
    let first_put = Instant::now();
    let replies: Vec<Reply> = futures::stream::iter(bodies)
        .map(|(i, b)| put(&http, &c, i, b))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let last_put = Instant::now();
    if let Some(bad) = replies.iter().find(|r| r.status != 201) {
        bail!("PUT failed: {bad:?}");
    }
    eprintln!(
        "{files} deposits at '{LIFECYCLE}' in {:.1} s",
        (last_put - first_put).as_secs_f64()
    );
    let (first_due, last_due) = (first_put + STEP_AGE, last_put + STEP_AGE);
    loop {
        let (_, ready) = c.count_converged().await.map_err(anyhow::Error::msg)?;
        if ready == files {
            break;
        }
        ensure!(
            Instant::now() + IDLE + Duration::from_secs(2) < first_due,
            "the batch was not at 2 copies long enough before its step ({ready}/{files})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Waiting for the step: nothing to do until it falls due. Measured over the last
    // seconds before it, once the batch's own aftermath (statuses, change feeds) is over.
    let window_start = first_due - IDLE - Duration::from_secs(1);
    tokio::time::sleep(window_start.saturating_duration_since(Instant::now())).await;
    let idle_before = cpu_over(pid, IDLE).await?;
    let now = Instant::now();
    tokio::time::sleep(first_due.saturating_duration_since(now)).await;
    let cpu_at_due = cpu_seconds(pid)?;
    let (mut samples, mut below_seen) = (0usize, 0usize);
    let done_at = loop {
        let (done, below) = sample(&c).await?;
        samples += 1;
        below_seen += below;
        if done == files {
            break Instant::now();
        }
        ensure!(
            Instant::now() < last_due + TRANSITION_LIMIT,
            "not every file at 1 copy: {done}/{files}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let transition = done_at - first_due;
    let transition_cpu = (cpu_seconds(pid)? - cpu_at_due) / transition.as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_after = cpu_over(pid, IDLE).await?;
    // Each file has one copy and its sidecar left on the replicas' disks.
    let on_disk = object_files(&c.data_dirs())
        .iter()
        .filter(|p| p.extension().is_none_or(|e| e != "json"))
        .count();

    println!("\n### Lifecycle: {files} files of 4 KiB at '{LIFECYCLE}', deposited in one batch\n");
    println!("| figure | value |\n| --- | ---: |");
    println!(
        "| deposits (one batch) | {:.1} s |",
        (last_put - first_put).as_secs_f64()
    );
    println!(
        "| operator CPU over the last {} s before the step (target < 2%) | {:.2}% |",
        IDLE.as_secs(),
        idle_before * 100.0
    );
    println!(
        "| transition: first file due → every file at exactly 1 copy | {:.1} s ({:.0} files/s) |",
        transition.as_secs_f64(),
        files as f64 / transition.as_secs_f64()
    );
    println!(
        "| of which after the last file fell due | {:.1} s |",
        done_at.saturating_duration_since(last_due).as_secs_f64()
    );
    println!(
        "| operator CPU during the transition | {:.0}% |",
        transition_cpu * 100.0
    );
    println!(
        "| operator CPU after, {} s (target < 2%) | {:.2}% |",
        IDLE.as_secs(),
        idle_after * 100.0
    );
    println!("| status samples of every file during the transition | {samples} |");
    println!("| files seen below the level in force (target 0) | {below_seen} |");
    println!("| copies on disk after (target {files}) | {on_disk} |");
    ensure!(
        below_seen == 0,
        "{below_seen} samples below the level in force"
    );
    ensure!(on_disk == files, "{on_disk} copies on disk, not {files}");
    ensure!(
        idle_before < 0.02 && idle_after < 0.02,
        "idle CPU {:.2}% before, {:.2}% after",
        idle_before * 100.0,
        idle_after * 100.0
    );
    Ok(())
}
