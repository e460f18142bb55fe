//! `deposito-bench`: deposit (N=1, N=3) and retrieve throughput, re-replication time, small
//! file operations per second and peak RSS of a local cluster, each printed beside baselines
//! measured in the same run (in-process sha256, `cp` + `sync`, plain loopback HTTP).

use crate::bench_base::{cp3_sync, cp_sync, drift, median, sha256_rate, Nginx, PlainServer};
use anyhow::{bail, ensure, Context};
use deposito_api::units::human_bytes;
use deposito_e2e::cluster::Cluster;
use deposito_e2e::files::{random_seed, sha256_file, write_random_file};
use deposito_e2e::MIB;
use std::path::Path;
use std::time::{Duration, Instant};

const CONVERGE: Duration = Duration::from_secs(1800);
const GIB: f64 = (1u64 << 30) as f64;

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

fn usage() -> &'static str {
    "usage: deposito-bench [--quick] [--small N] [--small-only] [--rounds R] [--compare DIR]\n\
     \x20      deposito-bench scale [--files N] [--batch N] [--idle-secs S] [--compare DIR]\n\
     \x20      deposito-bench kube [--files N]\n\
     \x20      deposito-bench lifecycle [--files N]\n\
     \x20      deposito-bench kube-data [--quick]\n\
     \x20      deposito-bench round2 [--quick] [--rounds R] [--compare DIR] [--churn C]\n\
     Starts a local Deposito cluster (3 replicas) from the binaries beside this one and prints\n\
     throughput and peak RSS beside same-run baselines.\n\
     --quick   1 MiB and 64 MiB only, 200 small files (CI smoke)\n\
     --small N N small files (default 2000, 200 with --quick)\n\
     --small-only  the small-file figures alone\n\
     --rounds R  rounds of the small-file figures, interleaved with their baselines (default 3)\n\
     --compare DIR  also deposit the small files on a cluster of the binaries in DIR (an\n\
     \x20         older build), in the same rounds\n\
     scale     the engine's cost as the catalog grows: N small files (default 100000) in\n\
     \x20         batches (default 10000), time to Ready, peak RSS, idle CPU over S seconds\n\
     \x20         (default 30); --compare DIR measures the binaries in DIR first, same run\n\
     kube      [--files N] N inline StoredFiles (default 1000) on the test control plane:\n\
     \x20         time to Ready, API requests per file, operator peak RSS\n\
     lifecycle [--files N] N small files (default 10000) at '2,1@60s' in one batch: CPU\n\
     \x20         while the step waits and after, the transition's time, samples below N\n\
     kube-data the data path in kube mode beside local mode, same run (small and large\n\
     \x20         PUTs and GETs through each gateway)\n\
     round2    the figures of performance round 2 beside their targets (BENCHMARKS.md):\n\
     \x20         small PUTs (beside the build in DIR), small and large GETs (beside nginx),\n\
     \x20         large PUTs at N=3 (beside cp + sync), small PUTs after C files of churn"
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

/// The only argument of `lifecycle` and `kube`: `[--files N]`.
fn files_arg(args: &[String], default: usize) -> anyhow::Result<usize> {
    match args.first().map(String::as_str) {
        None => Ok(default),
        Some("--files") => Ok(args.get(1).context("--files needs a value")?.parse()?),
        Some(other) => bail!("unknown argument {other:?}\n{}", usage()),
    }
}

/// Entry point of the `deposito-bench` binary.
pub async fn run(args: Vec<String>) -> anyhow::Result<()> {
    if args.first().is_some_and(|a| a == "scale") {
        return crate::scale::run(parse_scale(&args[1..])?).await;
    }
    if args.first().is_some_and(|a| a == "lifecycle") {
        return crate::lifecycle_bench::run(files_arg(&args[1..], 10_000)?).await;
    }
    if args.first().is_some_and(|a| a == "kube-data") {
        return match &args[1..] {
            [] => crate::kube_data::run(false).await,
            [q] if q == "--quick" => crate::kube_data::run(true).await,
            other => bail!("unknown arguments {other:?}\n{}", usage()),
        };
    }
    if args.first().is_some_and(|a| a == "round2") {
        return crate::round2::run(crate::round2::Args::parse(&args[1..])?).await;
    }
    if args.first().is_some_and(|a| a == "kube") {
        return crate::kube_bench::run(files_arg(&args[1..], 1000)?).await;
    }
    let mut quick = false;
    let mut small = None;
    let mut small_only = false;
    let mut rounds = 3usize;
    let mut compare: Option<std::path::PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--small-only" => small_only = true,
            "--rounds" => {
                let n = it.next().context("--rounds needs a number")?;
                rounds = n.parse().context("--rounds needs a number")?;
                ensure!(rounds > 0, "--rounds must be positive");
            }
            "--compare" => {
                compare = Some(it.next().context("--compare needs a folder")?.into());
            }
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
    let nginx = Nginx::start(&plain.dir, &c.scratch("nginx"))?;
    let mut rows = Vec::new();
    let mut client_rss = 0u64;

    let sha_total = if quick { 256 * MIB } else { 1024 * MIB };
    let sha = sha256_rate(sha_total);
    rows.push(Row {
        op: "baseline: sha256 in-process".into(),
        size: human_bytes(sha_total),
        time: secs(sha_total as f64 / sha),
        rate: sha,
        unit: "MiB/s",
        base: None,
    });

    let mut rerep_base = None;
    for &size in &opts.sizes {
        let input = c.scratch(&format!("in-{size}"));
        let digest = write_random_file(&input, size, random_seed());
        let mut m = LargeSamples::default();
        for round in 0..rounds {
            eprintln!("{}: round {} of {rounds}", human_bytes(size), round + 1);
            m.cp.push(cp_sync(&input, &c.scratch("cp-copy")));
            m.http.push(plain.put_file(&c.http, &input).await);
            // The disk's own limit for three copies: `cp` to three places, then one `sync`.
            m.cp3.push(cp3_sync(&input, &c.scratch("cp3")));
            for (k, (n, ack)) in DEPOSITS.iter().enumerate() {
                let name = format!("bench-{size}-n{n}-{ack}-r{round}");
                let cpu0 = c.server_cpu_seconds();
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
                c.wait_converged(&name, CONVERGE).await;
                m.deposits[k].push(out.elapsed);
                m.cpu[k].push((c.server_cpu_seconds() - cpu0) / (size as f64 / GIB));
            }
            let got = c.scratch("retrieved");
            let name = format!("bench-{size}-n1-all-r{round}");
            let out = c.client(&["retrieve", &name, "-o", path(&got)]);
            ensure!(out.ok(), "retrieve {name}: {out}");
            client_rss = client_rss.max(out.max_rss);
            ensure!(
                sha256_file(&got)? == digest,
                "retrieved bytes of {name} differ"
            );
            m.retrieve.push(out.elapsed);
            std::fs::remove_file(&got)?;
            if round + 1 < rounds {
                delete_deposits(&c, size, round).await?;
            }
        }
        let base = m.rows(size, sha, &mut rows);
        let last = format!("bench-{size}-n1-all-r{}", rounds - 1);
        rows.extend(large_gets(&c, nginx.as_ref(), &plain, &input, &last, rounds).await?);
        delete_deposits(&c, size, rounds - 1).await?;
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
            size: human_bytes(size),
            time: t,
            rate: size as f64 / t.as_secs_f64(),
            unit: "MiB/s",
            base,
        });
        delete(&c, "bench-rerep").await?;
        std::fs::remove_file(&input)?;
    }

    print_table(&rows);

    // Small files at N=2, in interleaved rounds (their own table).
    let old = match &compare {
        Some(dir) => Some(
            Cluster::builder()
                .replicas(3)
                .resync_interval_secs(None)
                .bin_dir(dir.clone())
                .start()
                .await,
        ),
        None => None,
    };
    crate::bench_small::run(crate::bench_small::Small {
        cluster: &c,
        old: old.as_ref(),
        plain: &plain,
        nginx: nginx.as_ref(),
        files: opts.small_files,
        rounds,
    })
    .await?;
    let mut rss = c.peak_rss();
    if client_rss > 0 {
        rss.push(("client (largest run)".into(), client_rss));
    }
    println!("\n| process | peak RSS |\n| --- | ---: |");
    for (n, b) in rss {
        println!("| {n} | {:.1} MiB |", b as f64 / MIB as f64);
    }
    Ok(())
}

/// The deposits of each round: (N, acknowledgement).
const DEPOSITS: [(u32, &str); 3] = [(1, "all"), (3, "one"), (3, "all")];

/// One large size's samples over the rounds.
#[derive(Default)]
struct LargeSamples {
    cp: Vec<Duration>,
    http: Vec<Duration>,
    cp3: Vec<Duration>,
    deposits: [Vec<Duration>; 3],
    /// Server CPU seconds per GiB of each deposit.
    cpu: [Vec<f64>; 3],
    retrieve: Vec<Duration>,
}

impl LargeSamples {
    /// Adds the rows of medians (baselines with their drift); returns the ratios' baselines.
    fn rows(&self, size: u64, sha: f64, rows: &mut Vec<Row>) -> Option<[f64; 3]> {
        let n = self.cp.len();
        let rate = |t: &[Duration]| {
            let samples: Vec<f64> = t.iter().map(Duration::as_secs_f64).collect();
            (
                size as f64 / median(&samples),
                drift(&samples),
                secs(median(&samples)),
            )
        };
        let mut push = |op: String, t: &[Duration], base: Option<[f64; 3]>| {
            let (r, d, time) = rate(t);
            let op = if base.is_none() {
                format!("{op}, median of {n}; drift {d:.2}")
            } else {
                format!("{op}, median of {n}")
            };
            rows.push(Row {
                op,
                size: human_bytes(size),
                time,
                rate: r,
                unit: "MiB/s",
                base,
            });
            r
        };
        let cp = push("baseline: cp + sync".into(), &self.cp, None);
        let http = push("baseline: plain loopback HTTP PUT".into(), &self.http, None);
        let cp3 = push(
            "baseline: cp to 3 places + one sync".into(),
            &self.cp3,
            None,
        );
        let base = Some([sha, cp, http]);
        for (k, (n, ack)) in DEPOSITS.iter().enumerate() {
            let cpu = median(&self.cpu[k]);
            let (r, _, _) = rate(&self.deposits[k]);
            let op = match n {
                1 => format!("deposit N=1; server CPU {cpu:.1} s/GiB"),
                _ => format!(
                    "deposit N=3 ack={ack} (until 3 copies); {:.2}× cp to 3 places; server CPU {cpu:.1} s/GiB",
                    r / cp3
                ),
            };
            push(op, &self.deposits[k], base);
        }
        push(
            "retrieve (client binary, to a file)".into(),
            &self.retrieve,
            base,
        );
        base
    }
}

/// Deletes the deposits of one round.
async fn delete_deposits(c: &Cluster, size: u64, round: usize) -> anyhow::Result<()> {
    for (n, ack) in DEPOSITS {
        delete(c, &format!("bench-{size}-n{n}-{ack}-r{round}")).await?;
    }
    Ok(())
}

/// GETs of a large file through the gateway and from nginx (sendfile) of the same bytes,
/// `rounds` times interleaved, read and discarded by the benchmark: medians, the gateway's as a
/// ratio to nginx's, and the servers' CPU per GiB.
async fn large_gets(
    c: &Cluster,
    nginx: Option<&Nginx>,
    plain: &PlainServer,
    input: &Path,
    name: &str,
    rounds: usize,
) -> anyhow::Result<Vec<Row>> {
    let size = std::fs::metadata(input)?.len();
    let gets = LargeGets::measure(c, nginx, plain, input, name, rounds).await?;
    let (ours, theirs, cpu) = (&gets.gateway, &gets.nginx, &gets.cpu);
    let rate = |t: &[f64]| size as f64 / median(t);
    let mut rows = Vec::new();
    let mut vs = String::new();
    if nginx.is_some() {
        rows.push(Row {
            op: format!(
                "baseline: nginx GET (sendfile), median of {rounds}; drift {:.2}",
                drift(theirs)
            ),
            size: human_bytes(size),
            time: secs(median(theirs)),
            rate: rate(theirs),
            unit: "MiB/s",
            base: None,
        });
        vs = format!("; {:.2}× nginx", rate(ours) / rate(theirs));
    }
    rows.push(Row {
        op: format!(
            "GET through the gateway, median of {rounds}{vs}; server CPU {:.1} s/GiB",
            median(cpu)
        ),
        size: human_bytes(size),
        time: secs(median(ours)),
        rate: rate(ours),
        unit: "MiB/s",
        base: None,
    });
    Ok(rows)
}

/// Seconds of each large GET, interleaved: through the gateway, from nginx; server CPU
/// seconds per GiB of the gateway's.
pub(crate) struct LargeGets {
    gateway: Vec<f64>,
    nginx: Vec<f64>,
    cpu: Vec<f64>,
}

impl LargeGets {
    /// Median rates (bytes per second) of a file of `size` bytes: through the gateway, and
    /// from nginx (None without nginx).
    pub(crate) fn rates(&self, size: u64) -> (f64, Option<f64>) {
        let rate = |t: &[f64]| size as f64 / median(t);
        (
            rate(&self.gateway),
            (!self.nginx.is_empty()).then(|| rate(&self.nginx)),
        )
    }

    pub(crate) async fn measure(
        c: &Cluster,
        nginx: Option<&Nginx>,
        plain: &PlainServer,
        input: &Path,
        name: &str,
        rounds: usize,
    ) -> anyhow::Result<LargeGets> {
        let size = std::fs::metadata(input)?.len();
        let served = plain.dir.join("large");
        std::fs::hard_link(input, &served)?;
        let http = deposito_e2e::http::pooled_client();
        let gateway_url = format!("{}/v1/files/default/{name}", c.url());
        let mut gets = LargeGets {
            gateway: Vec::new(),
            nginx: Vec::new(),
            cpu: Vec::new(),
        };
        for _ in 0..rounds {
            if let Some(n) = nginx {
                gets.nginx
                    .push(get_discard(&http, &n.url("large"), None, size).await?);
            }
            let cpu0 = c.server_cpu_seconds();
            gets.gateway
                .push(get_discard(&http, &gateway_url, Some(&c.token), size).await?);
            gets.cpu
                .push((c.server_cpu_seconds() - cpu0) / (size as f64 / GIB));
        }
        std::fs::remove_file(&served)?;
        Ok(gets)
    }
}

/// Seconds to GET `url` and read its `size` bytes, discarding them.
pub(crate) async fn get_discard(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    size: u64,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut req = http.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let mut r = req.send().await?;
    ensure!(r.status() == 200, "GET {url}: {}", r.status());
    let mut got = 0u64;
    while let Some(chunk) = r.chunk().await? {
        got += chunk.len() as u64;
    }
    ensure!(got == size, "GET {url}: {got} of {size} bytes");
    Ok(start.elapsed().as_secs_f64())
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

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
