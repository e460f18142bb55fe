//! `deposito-bench round2`: the figures of "performance, round 2" in one run, each beside the
//! baseline of its target, measured in interleaved rounds (medians):
//! - 4 KiB deposits at N=2 until both copies exist (16 in flight), beside an older build's
//!   cluster running alongside (`--compare DIR`; each goes first in every other round, after a
//!   `sync`), fresh and again after churn (C files written and C/2 deleted, `--churn C`);
//! - 4 KiB GETs through the gateway (16 in flight) beside nginx serving the same bytes;
//! - a large GET through the gateway beside nginx, and a large deposit at N=3 until the three
//!   copies are durable beside `cp` to three places and one `sync`;
//! - the peak RSS of every server.
//!
//! It prints one table: figure, target, measured, met. `--quick` (CI) uses 400 small files,
//! 256 MiB and 20,000 churn files; the full run 2,000, 1 GiB and 200,000.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use futures::StreamExt;

use crate::bench_base::{cp3_sync, get_all, median, Nginx, PlainServer};
use crate::bench_small::{deposits, percentiles, CONCURRENCY, SMALL};
use deposito_e2e::cluster::Cluster;
use deposito_e2e::files::{random_seed, write_random_file, Prng};

const MIB: u64 = 1 << 20;
const CONVERGE: Duration = Duration::from_secs(1800);

/// What `deposito-bench round2` was asked for.
pub struct Args {
    pub quick: bool,
    pub rounds: usize,
    pub compare: Option<PathBuf>,
    pub churn: Option<usize>,
}

const USAGE: &str =
    "usage: deposito-bench round2 [--quick] [--rounds R] [--compare DIR] [--churn C]";

impl Args {
    pub fn parse(args: &[String]) -> anyhow::Result<Args> {
        let mut a = Args {
            quick: false,
            rounds: 3,
            compare: None,
            churn: None,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || {
                it.next()
                    .with_context(|| format!("{arg} needs a value\n{USAGE}"))
            };
            match arg.as_str() {
                "--quick" => a.quick = true,
                "--rounds" => a.rounds = value()?.parse()?,
                "--compare" => a.compare = Some(value()?.into()),
                "--churn" => a.churn = Some(value()?.parse()?),
                other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        ensure!(a.rounds > 0, "--rounds must be at least 1");
        Ok(a)
    }
}

/// One line of the table.
struct Line {
    figure: String,
    target: String,
    measured: String,
    met: Option<bool>,
}

fn line(figure: &str, target: &str, measured: String, met: Option<bool>) -> Line {
    Line {
        figure: figure.into(),
        target: target.into(),
        measured,
        met,
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let small = if args.quick { 400 } else { 2000 };
    let large = if args.quick { 256 * MIB } else { 1024 * MIB };
    let churn = args
        .churn
        .unwrap_or(if args.quick { 20_000 } else { 200_000 });
    let rounds = args.rounds;
    let c = Cluster::builder().replicas(3).start().await;
    let old = match &args.compare {
        Some(dir) => Some(
            Cluster::builder()
                .replicas(3)
                .bin_dir(dir.clone())
                .start()
                .await,
        ),
        None => None,
    };
    let plain = PlainServer::start(&c.scratch("plain-http"));
    let nginx = Nginx::start(&plain.dir, &c.scratch("nginx"))?;
    let http = deposito_e2e::http::pooled_client();
    let mut rng = Prng::new(random_seed());
    let bodies: Vec<Vec<u8>> = (0..small)
        .map(|_| {
            let mut b = vec![0u8; SMALL];
            rng.fill(&mut b);
            b
        })
        .collect();
    let mut lines = Vec::new();

    // Small deposits and reads, fresh.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut gets, mut get_p50, mut nginx_gets) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        eprintln!("round2: small files, round {} of {rounds}", round + 1);
        // Each build goes first in every other round, and each starts once the disk has
        // written back what came before (`sync`): otherwise the second of a round pays for
        // the first one's writeback, a bias as large as the differences measured.
        let old_first = round % 2 == 0;
        if let Some(o) = old.as_ref().filter(|_| old_first) {
            settle_disk().await;
            theirs.push(deposits(o, &http, &bodies, Some("all"), round).await?.1);
        }
        settle_disk().await;
        ours.push(deposits(&c, &http, &bodies, Some("all"), round).await?.1);
        if let Some(o) = old.as_ref().filter(|_| !old_first) {
            settle_disk().await;
            theirs.push(deposits(o, &http, &bodies, Some("all"), round).await?.1);
        }
        plain.put_small(&http, &bodies, CONCURRENCY).await;
        if let Some(n) = &nginx {
            let urls: Vec<String> = (0..small).map(|i| n.url(&format!("s{i}"))).collect();
            nginx_gets.push(get_all(&http, &urls, &bodies, CONCURRENCY, None).await?.0);
        }
        let urls: Vec<String> = (0..small)
            .map(|i| {
                let name = crate::bench_small::name("all", round, i);
                format!("{}/v1/files/default/{name}", c.url())
            })
            .collect();
        let (rate, lat) = get_all(&http, &urls, &bodies, CONCURRENCY, Some(&c.token)).await?;
        gets.push(rate);
        get_p50.push(percentiles(&lat).0);
    }
    let fresh = median(&ours);
    lines.push(match old.is_some() {
        true => {
            let r = fresh / median(&theirs);
            line(
                "4 KiB PUT at N=2, until 2 copies",
                "≥ 1.7× the older build",
                format!(
                    "{fresh:.0} ops/s, {r:.2}× the older build's {:.0}",
                    median(&theirs)
                ),
                Some(r >= 1.7),
            )
        }
        false => line(
            "4 KiB PUT at N=2, until 2 copies",
            "≥ 1.7× the older build (`--compare DIR`)",
            format!("{fresh:.0} ops/s (no older build given)"),
            None,
        ),
    });
    let (get, p50) = (median(&gets), median(&get_p50));
    lines.push(match nginx.is_some() {
        true => {
            let r = get / median(&nginx_gets);
            line(
                "4 KiB GET, 16 in flight",
                "≥ 0.4× nginx, p50 < 1.5 ms",
                format!(
                    "{get:.0} ops/s, {r:.2}× nginx's {:.0}; p50 {p50:.2} ms",
                    median(&nginx_gets)
                ),
                Some(r >= 0.4 && p50 < 1.5),
            )
        }
        false => line(
            "4 KiB GET, 16 in flight",
            "≥ 0.4× nginx, p50 < 1.5 ms",
            format!("{get:.0} ops/s, p50 {p50:.2} ms (nginx missing)"),
            None,
        ),
    });

    // Large files.
    let input = c.scratch("large.bin");
    write_random_file(&input, large, random_seed());
    let (mut puts, mut cp3) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        eprintln!(
            "round2: {} MiB at N=3, round {} of {rounds}",
            large / MIB,
            round + 1
        );
        cp3.push(cp3_sync(&input, &c.scratch("cp3")).as_secs_f64());
        let name = format!("large-n3-r{round}");
        let out = c.client(&[
            "deposit",
            input.to_str().expect("utf-8 path"),
            "--replicas",
            "3",
            "--name",
            &name,
        ]);
        ensure!(out.ok(), "deposit {name}: {out}");
        puts.push(out.elapsed.as_secs_f64());
        let r = c.delete(&name).await;
        ensure!((200..300).contains(&r.status), "DELETE {name}: {r:?}");
        c.wait_deleted(&name, CONVERGE).await;
    }
    let put_ratio = median(&cp3) / median(&puts);
    lines.push(line(
        &format!("{} MiB PUT at N=3, until 3 copies", large / MIB),
        "≥ 1.0× cp to 3 places + sync",
        format!(
            "{:.0} MiB/s, {put_ratio:.2}× cp to 3 places + sync ({:.0} MiB/s)",
            large as f64 / MIB as f64 / median(&puts),
            large as f64 / MIB as f64 / median(&cp3)
        ),
        Some(put_ratio >= 1.0),
    ));
    let out = c.client(&[
        "deposit",
        input.to_str().expect("utf-8 path"),
        "--replicas",
        "1",
        "--name",
        "large-get",
    ]);
    ensure!(out.ok(), "deposit large-get: {out}");
    let (gateway, nginx_rate) =
        crate::bench::LargeGets::measure(&c, nginx.as_ref(), &plain, &input, "large-get", rounds)
            .await?
            .rates(large);
    lines.push(match nginx_rate {
        Some(n) => line(
            &format!("{} MiB GET through the gateway", large / MIB),
            "≥ 0.8× nginx, every byte verified",
            format!(
                "{:.0} MiB/s, {:.2}× nginx's {:.0}",
                gateway / MIB as f64,
                gateway / n,
                n / MIB as f64
            ),
            Some(gateway / n >= 0.8),
        ),
        None => line(
            &format!("{} MiB GET through the gateway", large / MIB),
            "≥ 0.8× nginx, every byte verified",
            format!("{:.0} MiB/s (nginx missing)", gateway / MIB as f64),
            None,
        ),
    });
    std::fs::remove_file(&input)?;

    // Peak RSS of every server so far: small files, and the large file in and out.
    let rss = c.peak_rss();

    // Churn, then the small deposits again.
    eprintln!(
        "round2: churn, {churn} files written, {} deleted",
        churn / 2
    );
    churn_files(&c, &http, churn).await?;
    let mut after = Vec::new();
    for round in 0..rounds {
        eprintln!(
            "round2: small files after churn, round {} of {rounds}",
            round + 1
        );
        settle_disk().await;
        after.push(
            deposits(&c, &http, &bodies, Some("all"), 1000 + round)
                .await?
                .1,
        );
    }
    let r = median(&after) / fresh;
    lines.push(line(
        &format!(
            "the same after {churn} files written and {} deleted",
            churn / 2
        ),
        "≥ 0.8× the fresh figure",
        format!("{:.0} ops/s, {r:.2}× fresh", median(&after)),
        Some(r >= 0.8),
    ));

    let worst = rss.iter().map(|(_, b)| *b).max().unwrap_or(0);
    lines.push(line(
        &format!("peak RSS per server, moving {} MiB", large / MIB),
        "< 64 MiB",
        rss.iter()
            .map(|(n, b)| format!("{n} {:.1}", *b as f64 / MIB as f64))
            .collect::<Vec<_>>()
            .join(", ")
            + " MiB",
        Some(worst < 64 * MIB),
    ));
    lines.push(line(
        &format!("peak RSS per server with {} files kept", churn / 2),
        "(for information)",
        c.peak_rss()
            .iter()
            .map(|(n, b)| format!("{n} {:.1}", *b as f64 / MIB as f64))
            .collect::<Vec<_>>()
            .join(", ")
            + " MiB",
        None,
    ));
    println!(
        "\n### Round 2: {small} small files, {} MiB, churn {churn}, medians of {rounds} rounds\n",
        large / MIB
    );
    println!("| figure | target | measured | met |\n| --- | --- | --- | --- |");
    for l in lines {
        let met = match l.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "",
        };
        println!("| {} | {} | {} | {met} |", l.figure, l.target, l.measured);
    }
    Ok(())
}

/// Writes `n` 4 KiB files at N=2 and deletes every second one, 16 requests in flight; returns
/// once the last deletion is complete.
async fn churn_files(c: &Cluster, http: &reqwest::Client, n: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let url = |i: usize| format!("{}/v1/files/default/churn-{i}", c.url());
    let puts = futures::stream::iter(0..n)
        .map(|i| {
            let mut body = vec![0u8; SMALL];
            Prng::new(i as u64 + 1).fill(&mut body);
            let req = http
                .put(format!("{}?replicas=2", url(i)))
                .bearer_auth(&c.token)
                .body(body);
            async move { req.send().await.map(|r| r.status().as_u16()) }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let failed = puts.iter().filter(|s| !matches!(s, Ok(201))).count();
    ensure!(failed == 0, "churn: {failed} of {n} deposits failed");
    let deletes = futures::stream::iter((0..n).step_by(2))
        .map(|i| {
            let req = http.delete(url(i)).bearer_auth(&c.token);
            async move { req.send().await.map(|r| r.status().as_u16()) }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let failed = deletes
        .iter()
        .filter(|s| !matches!(s, Ok(200..=299)))
        .count();
    ensure!(failed == 0, "churn: {failed} deletions failed");
    // Deletions complete in the background: wait until the number of copies the replicas
    // hold is the same three times 2 s apart (the scrubber keeps the servers from idling), so
    // that the figures after churn measure deposits, not the deletions' tail.
    let deadline = Instant::now() + CONVERGE;
    let mut seen = Vec::new();
    loop {
        let list = c.replica_list().await.map_err(anyhow::Error::msg)?;
        seen.push(list.items.iter().map(|r| r.objects).sum::<u64>());
        if seen.len() >= 3
            && seen[seen.len() - 3..]
                .iter()
                .all(|n| *n == seen[seen.len() - 1])
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "churn: copies still changing: {seen:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    eprintln!(
        "round2: churn done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits until the disk has written back every dirty page (`sync`), so that a measurement does
/// not pay for the writeback of the one before it.
async fn settle_disk() {
    let synced = tokio::task::spawn_blocking(|| std::process::Command::new("sync").status()).await;
    if !matches!(synced, Ok(Ok(s)) if s.success()) {
        eprintln!("round2: sync failed ({synced:?}); measuring anyway");
    }
}
