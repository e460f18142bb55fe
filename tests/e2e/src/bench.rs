//! `deposito-bench`: deposit (N=1, N=3) and retrieve throughput, re-replication time, small
//! file operations per second and peak RSS of a local cluster, each printed beside baselines
//! measured in the same run (in-process sha256, `cp` + `sync`, plain loopback HTTP).

use crate::bench_base::{cp_sync, sha256_rate, sha256_small_ops, PlainServer};
use crate::cluster::Cluster;
use crate::files::{random_seed, sha256_file, write_random_file, Prng};
use crate::http::Reply;
use crate::MIB;
use anyhow::{bail, ensure, Context};
use deposito_api::gateway::Ack;
use futures::StreamExt;
use std::path::Path;
use std::time::{Duration, Instant};

const CONVERGE: Duration = Duration::from_secs(1800);
const SMALL: usize = 4096;
const CONCURRENCY: usize = 16;

struct Options {
    sizes: Vec<u64>,
    small_files: usize,
    rerep_size: u64,
}

/// A measured figure with its ratios to the baselines.
struct Row {
    op: String,
    size: String,
    time: Duration,
    rate: f64,
    unit: &'static str,
    /// (sha256, cp+sync, plain HTTP) baselines in the same unit, if any.
    base: Option<[f64; 3]>,
}

/// Baselines for one file size, in bytes per second.
struct Base {
    cp: f64,
    http: f64,
}

fn usage() -> &'static str {
    "usage: deposito-bench [--quick] [--small N] [--small-only]\n\
     \x20      deposito-bench scale [--files N] [--batch N] [--idle-secs S] [--compare DIR]\n\
     \x20      deposito-bench kube [--files N]\n\
     Starts a local Deposito cluster (3 replicas) from the binaries beside this one and prints\n\
     throughput and peak RSS beside same-run baselines.\n\
     --quick   1 MiB and 64 MiB only, 200 small files (CI smoke)\n\
     --small N N small files (default 2000, 200 with --quick)\n\
     --small-only  the small-file figures alone\n\
     scale     the engine's cost as the catalog grows: N small files (default 100000) in\n\
     \x20         batches (default 10000), time to Ready, peak RSS, idle CPU over S seconds\n\
     \x20         (default 30); --compare DIR measures the binaries in DIR first, same run\n\
     kube      [--files N] N inline StoredFiles (default 1000) on the test control plane:\n\
     \x20         time to Ready, API requests per file, operator peak RSS"
}

fn parse_scale(args: &[String]) -> anyhow::Result<crate::scale::ScaleOptions> {
    let mut o = crate::scale::ScaleOptions {
        files: 100_000,
        batch: 10_000,
        idle: Duration::from_secs(30),
        compare: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{}", usage()))
        };
        match flag.as_str() {
            "--files" => o.files = value()?.parse()?,
            "--batch" => o.batch = value()?.parse()?,
            "--idle-secs" => o.idle = Duration::from_secs(value()?.parse()?),
            "--compare" => o.compare = Some(value()?.into()),
            other => bail!("unknown argument {other:?}\n{}", usage()),
        }
    }
    ensure!(
        o.files > 0 && o.batch > 0,
        "--files and --batch must be positive"
    );
    Ok(o)
}

/// Entry point of the `deposito-bench` binary.
pub async fn run(args: Vec<String>) -> anyhow::Result<()> {
    if args.first().is_some_and(|a| a == "scale") {
        return crate::scale::run(parse_scale(&args[1..])?).await;
    }
    if args.first().is_some_and(|a| a == "kube") {
        let files = match args.get(1).map(String::as_str) {
            None => 1000,
            Some("--files") => args.get(2).context("--files needs a value")?.parse()?,
            Some(other) => bail!("unknown argument {other:?}\n{}", usage()),
        };
        return crate::kube_bench::run(files).await;
    }
    let mut quick = false;
    let mut small = None;
    let mut small_only = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--small-only" => small_only = true,
            "--small" => {
                let n = it.next().context("--small needs a number of files")?;
                small = Some(n.parse().context("--small needs a number of files")?);
            }
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{}", usage()),
        }
    }
    let mut opts = if quick {
        Options {
            sizes: vec![MIB, 64 * MIB],
            small_files: 200,
            rerep_size: 64 * MIB,
        }
    } else {
        Options {
            sizes: vec![MIB, 64 * MIB, 1024 * MIB],
            small_files: 2000,
            rerep_size: 1024 * MIB,
        }
    };
    if let Some(n) = small {
        opts.small_files = n;
    }
    if small_only {
        opts.sizes.clear();
    }
    let c = Cluster::builder().replicas(3).start().await;
    eprintln!(
        "cluster up: gateway {}, data under {}",
        c.url(),
        c.root_path.display()
    );
    let plain = PlainServer::start(&c.scratch("plain-http"));
    let mut rows = Vec::new();
    let mut client_rss = 0u64;

    let sha_total = if quick { 256 * MIB } else { 1024 * MIB };
    let sha = sha256_rate(sha_total);
    rows.push(Row {
        op: "baseline: sha256 in-process".into(),
        size: human(sha_total),
        time: secs(sha_total as f64 / sha),
        rate: sha,
        unit: "MiB/s",
        base: None,
    });

    let mut rerep_base = None;
    for &size in &opts.sizes {
        let input = c.scratch(&format!("in-{size}"));
        let digest = write_random_file(&input, size, random_seed());
        let t_cp = cp_sync(&input, &c.scratch("cp-copy"));
        let t_http = plain.put_file(&c.http, &input).await;
        let b = Base {
            cp: size as f64 / t_cp.as_secs_f64(),
            http: size as f64 / t_http.as_secs_f64(),
        };
        rows.push(Row {
            op: "baseline: cp + sync".into(),
            size: human(size),
            time: t_cp,
            rate: b.cp,
            unit: "MiB/s",
            base: None,
        });
        rows.push(Row {
            op: "baseline: plain loopback HTTP PUT".into(),
            size: human(size),
            time: t_http,
            rate: b.http,
            unit: "MiB/s",
            base: None,
        });
        let base = Some([sha, b.cp, b.http]);

        for (n, ack) in [(1u32, "all"), (3, "one"), (3, "all")] {
            let name = format!("bench-{size}-n{n}-{ack}");
            let out = c.client(&[
                "deposit",
                path(&input),
                "--replicas",
                &n.to_string(),
                "--name",
                &name,
                "--ack",
                ack,
            ]);
            ensure!(out.ok(), "deposit {name}: {out}");
            client_rss = client_rss.max(out.max_rss);
            let t = out.elapsed;
            c.wait_converged(&name, CONVERGE).await;
            let what = match (n, ack) {
                (1, _) => "deposit N=1".to_string(),
                _ => format!("deposit N=3 ack={ack} (until 3 copies)"),
            };
            rows.push(Row {
                op: what,
                size: human(size),
                time: t,
                rate: size as f64 / t.as_secs_f64(),
                unit: "MiB/s",
                base,
            });
        }
        let got = c.scratch("retrieved");
        let name = format!("bench-{size}-n1-all");
        let out = c.client(&["retrieve", &name, "-o", path(&got)]);
        ensure!(out.ok(), "retrieve {name}: {out}");
        client_rss = client_rss.max(out.max_rss);
        ensure!(
            sha256_file(&got)? == digest,
            "retrieved bytes of {name} differ"
        );
        rows.push(Row {
            op: "retrieve".into(),
            size: human(size),
            time: out.elapsed,
            rate: size as f64 / out.elapsed.as_secs_f64(),
            unit: "MiB/s",
            base,
        });
        std::fs::remove_file(&got)?;
        for suffix in ["n1-all", "n3-one", "n3-all"] {
            delete(&c, &format!("bench-{size}-{suffix}")).await?;
        }
        if size == opts.rerep_size {
            rerep_base = Some((input, base));
        } else {
            std::fs::remove_file(&input)?;
        }
    }

    // Re-replication from 1 to 3 copies.
    if let Some((input, base)) = rerep_base {
        let size = opts.rerep_size;
        let out = c.client(&[
            "deposit",
            path(&input),
            "--replicas",
            "1",
            "--name",
            "bench-rerep",
        ]);
        ensure!(out.ok(), "deposit bench-rerep: {out}");
        c.wait_converged("bench-rerep", CONVERGE).await;
        let start = Instant::now();
        let r = c.set_replicas("bench-rerep", 3).await;
        ensure!(r.status == 200, "PATCH bench-rerep: {r:?}");
        c.wait_converged("bench-rerep", CONVERGE).await;
        let t = start.elapsed();
        ensure!(
            c.count_copies(&input) == 3,
            "re-replication did not leave 3 identical copies"
        );
        rows.push(Row {
            op: "re-replication 1 → 3 copies".into(),
            size: human(size),
            time: t,
            rate: size as f64 / t.as_secs_f64(),
            unit: "MiB/s",
            base,
        });
        delete(&c, "bench-rerep").await?;
        std::fs::remove_file(&input)?;
    }

    // Small files at N=2.
    rows.extend(small_files(&c, &plain, opts.small_files).await?);

    print_table(&rows);
    let mut rss = c.peak_rss();
    rss.push(("client (largest run)".into(), client_rss));
    println!("\n| process | peak RSS |\n| --- | ---: |");
    for (n, b) in rss {
        println!("| {n} | {:.1} MiB |", b as f64 / MIB as f64);
    }
    Ok(())
}

async fn small_files(c: &Cluster, plain: &PlainServer, count: usize) -> anyhow::Result<Vec<Row>> {
    let mut rng = Prng::new(random_seed());
    let bodies: Vec<Vec<u8>> = (0..count)
        .map(|_| {
            let mut b = vec![0u8; SMALL];
            rng.fill(&mut b);
            b
        })
        .collect();
    let size = format!("{count} × 4 KiB");
    let mut rows = Vec::new();

    let sha_ops = sha256_small_ops(count.max(10_000));
    let dir = c.scratch("small-src");
    std::fs::create_dir_all(&dir)?;
    for (i, b) in bodies.iter().enumerate() {
        std::fs::write(dir.join(format!("s{i}")), b)?;
    }
    let t_cp = cp_sync(&dir, &c.scratch("small-copy"));
    let cp_ops = count as f64 / t_cp.as_secs_f64();
    let pooled = crate::http::pooled_client();
    let http_ops = plain.put_small(&pooled, &bodies, CONCURRENCY).await;
    let ops = |r: f64| secs(count as f64 / r);
    rows.push(Row {
        op: "baseline: sha256 in-process".into(),
        size: "4 KiB each".into(),
        time: secs(1.0 / sha_ops),
        rate: sha_ops,
        unit: "ops/s",
        base: None,
    });
    rows.push(Row {
        op: "baseline: cp -r + sync".into(),
        size: size.clone(),
        time: t_cp,
        rate: cp_ops,
        unit: "ops/s",
        base: None,
    });
    rows.push(Row {
        op: format!("baseline: plain HTTP PUT, {CONCURRENCY} in flight"),
        size: size.clone(),
        time: ops(http_ops),
        rate: http_ops,
        unit: "ops/s",
        base: None,
    });
    let base = Some([sha_ops, cp_ops, http_ops]);

    for ack in [Ack::One, Ack::All] {
        let start = Instant::now();
        let results: Vec<(Reply, Duration)> = futures::stream::iter(bodies.iter().enumerate())
            .map(|(i, b)| {
                let pooled = &pooled;
                async move {
                    let sent = Instant::now();
                    let reply = put_small(pooled, c, ack, i, b.clone()).await;
                    (reply, sent.elapsed())
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let t_ack = start.elapsed();
        if let Some((bad, _)) = results.iter().find(|(r, _)| r.status != 201) {
            bail!("small deposit failed: {bad:?}");
        }
        let latencies: Vec<Duration> = results.iter().map(|(_, t)| *t).collect();
        let mode = ack.as_str();
        rows.push(Row {
            op: format!(
                "deposit N=2 ack={mode} (acknowledged), {CONCURRENCY} in flight; {}",
                percentiles(&latencies)
            ),
            size: size.clone(),
            time: t_ack,
            rate: count as f64 / t_ack.as_secs_f64(),
            unit: "ops/s",
            base,
        });
        let prefix = format!("small-{mode}-");
        let deadline = Instant::now() + CONVERGE;
        loop {
            let list = c.list().await.map_err(anyhow::Error::msg)?;
            let done = list
                .items
                .iter()
                .filter(|s| s.name.starts_with(&prefix) && s.is_converged())
                .count();
            if done == count {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "small files (ack={mode}) not converged: {done}/{count}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let t_conv = start.elapsed();
        rows.push(Row {
            op: format!("deposit N=2 ack={mode} (2 copies each)"),
            size: size.clone(),
            time: t_conv,
            rate: count as f64 / t_conv.as_secs_f64(),
            unit: "ops/s",
            base,
        });
    }

    // Small reads: every ack=all file once through the gateway, beside the plain server
    // reading the same bytes from its folder, both on keep-alive connections.
    let (plain_get_ops, plain_latencies) = plain.get_small(&pooled, &bodies, CONCURRENCY).await;
    rows.push(Row {
        op: format!(
            "baseline: plain HTTP GET, {CONCURRENCY} in flight; {}",
            percentiles(&plain_latencies)
        ),
        size: size.clone(),
        time: ops(plain_get_ops),
        rate: plain_get_ops,
        unit: "ops/s",
        base: None,
    });
    let start = Instant::now();
    let latencies: Vec<Duration> = futures::stream::iter(bodies.iter().enumerate())
        .map(|(i, b)| get_small(&pooled, c, i, b))
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<anyhow::Result<Duration>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let t_get = start.elapsed();
    rows.push(Row {
        op: format!(
            "retrieve, {CONCURRENCY} in flight; {}",
            percentiles(&latencies)
        ),
        size,
        time: t_get,
        rate: count as f64 / t_get.as_secs_f64(),
        unit: "ops/s",
        base: Some([sha_ops, cp_ops, plain_get_ops]),
    });
    Ok(rows)
}

/// `GET /v1/files/default/small-all-{i}`: checks the bytes; returns the latency.
async fn get_small(
    http: &reqwest::Client,
    c: &Cluster,
    i: usize,
    body: &[u8],
) -> anyhow::Result<Duration> {
    let url = format!("{}/v1/files/default/small-all-{i}", c.url());
    let sent = Instant::now();
    let r = http.get(&url).bearer_auth(&c.token).send().await?;
    ensure!(r.status() == 200, "GET {url}: {}", r.status());
    let got = r.bytes().await?;
    let elapsed = sent.elapsed();
    ensure!(got.as_ref() == body, "GET {url}: other bytes");
    Ok(elapsed)
}

/// "p50 X ms, p99 Y ms" of `latencies`.
fn percentiles(latencies: &[Duration]) -> String {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let at = |q: f64| {
        let i = ((sorted.len().max(1) - 1) as f64 * q).round() as usize;
        sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    format!("p50 {:.1} ms, p99 {:.1} ms", at(0.50), at(0.99))
}

/// `PUT /v1/files/default/small-{ack}-{i}?replicas=2&ack={ack}` on a keep-alive client.
async fn put_small(
    http: &reqwest::Client,
    c: &Cluster,
    ack: Ack,
    i: usize,
    body: Vec<u8>,
) -> Reply {
    let mode = ack.as_str();
    let url = format!(
        "{}/v1/files/default/small-{mode}-{i}?replicas=2&ack={mode}",
        c.url()
    );
    match http.put(&url).bearer_auth(&c.token).body(body).send().await {
        Ok(r) => Reply::read(r).await,
        Err(e) => Reply {
            status: 0,
            body: format!("PUT {url}: {e}"),
        },
    }
}

async fn delete(c: &Cluster, name: &str) -> anyhow::Result<()> {
    let r = c.delete(name).await;
    ensure!((200..300).contains(&r.status), "DELETE {name}: {r:?}");
    c.wait_deleted(name, CONVERGE).await;
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!("| operation | size | time | rate | × sha256 | × cp+sync | × plain HTTP |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        let rate = if r.unit == "MiB/s" {
            r.rate / MIB as f64
        } else {
            r.rate
        };
        let ratios = match r.base {
            Some(b) => b.iter().map(|x| ratio(r.rate / x)).collect::<Vec<_>>(),
            None => vec!["".into(); 3],
        };
        println!(
            "| {} | {} | {:.3} s | {:.1} {} | {} | {} | {} |",
            r.op,
            r.size,
            r.time.as_secs_f64(),
            rate,
            r.unit,
            ratios[0],
            ratios[1],
            ratios[2]
        );
    }
}

fn ratio(x: f64) -> String {
    if x >= 0.01 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}

fn human(bytes: u64) -> String {
    if bytes >= 1024 * MIB {
        format!("{} GiB", bytes / (1024 * MIB))
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
