//! Rebalancing when replicas join (local mode, real processes): 3 replicas hold 300 files at
//! N=2, then 2 empty replicas join. Within the stated time, bytes per replica come within the
//! documented bound (the fullest at most 1.25× the emptiest, plus one file); sampled all the
//! while, no file has fewer than 2 copies on disk or in its status (a move adds before it
//! trims, so a file may briefly have 3); the bytes moved stay under the rate limit. Prints the
//! figures: time, bytes moved, ratio before and after.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use deposito_e2e::files::{random_seed, Prng};
use deposito_e2e::{metrics, wait_for, Cluster, MIB};

const FILES: usize = 300;
const N: usize = 2;
/// The rebalancing rate limit given to the operator.
const RATE: u64 = 4 * MIB;
const RATIO: f64 = 1.25;
/// Time allowed for the two new replicas to fill up.
const BOUND: Duration = Duration::from_secs(120);

/// Bytes held under `objects/` of a replica's data dir (metadata files not counted).
fn stored_bytes(dir: &Path) -> u64 {
    deposito_e2e::files::files_under(&dir.join("objects"))
        .iter()
        .filter(|p| p.extension().is_none_or(|e| e != "json"))
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Copies of each file on disk (by path: `objects/default/NAME@SHA`), over every replica.
fn copies_on_disk(c: &Cluster, files: &[(String, String, u64)]) -> Vec<usize> {
    files
        .iter()
        .map(|(name, sha, _)| {
            c.data_dirs()
                .iter()
                .filter(|d| {
                    deposito_e2e::files::copy_path(d, "objects", "default", name, sha).is_file()
                })
                .count()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_join_and_copies_move_onto_them_within_the_bound() {
    let mut c = Cluster::builder()
        .replicas(3)
        .operator_arg(&format!("--rebalance-bytes-per-sec={RATE}"))
        // Below the default 8 MiB gap: this test proves the ratio bound at a small scale.
        .operator_arg("--rebalance-min-gap-bytes=65536")
        .start()
        .await;

    // 300 files of 16 KiB to 512 KiB at N=2, 8 uploads at a time.
    let mut rng = Prng::new(random_seed());
    let mut files = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..FILES {
        let mut size_bytes = [0u8; 4];
        rng.fill(&mut size_bytes);
        let size = 16 * 1024 + (u32::from_le_bytes(size_bytes) as u64 % (496 * 1024));
        let mut body = vec![0u8; size as usize];
        rng.fill(&mut body);
        let name = format!("f{i:03}.bin");
        files.push((name.clone(), deposito_api::sha256_hex(&body), size));
        bodies.push((name, body));
    }
    let largest = files.iter().map(|f| f.2).max().unwrap();
    for chunk in bodies.chunks(8) {
        let puts = chunk
            .iter()
            .map(|(name, body)| c.put_bytes_owned(name.clone(), body.clone(), N as u32));
        for reply in futures::future::join_all(puts).await {
            assert_eq!(reply.status, 201, "{reply:?}");
        }
    }
    wait_for(
        "300 files at 2 copies",
        Duration::from_secs(120),
        || async {
            let on_disk = copies_on_disk(&c, &files);
            let short = on_disk.iter().filter(|n| **n != N).count();
            (short == 0)
                .then_some(())
                .ok_or(format!("{short} files not at {N} copies"))
        },
    )
    .await;
    let before: Vec<u64> = c.data_dirs().iter().map(|d| stored_bytes(d)).collect();
    let ratio_before =
        *before.iter().max().unwrap() as f64 / *before.iter().min().unwrap().max(&1) as f64;
    let moved_before = metrics::sum(
        &c.operator_metrics().await,
        "deposito_operator_rebalance_bytes_total",
        &[],
    );

    // Two empty replicas join (the clock starts as they start: moves may begin as soon as
    // the operator sees them live).
    let joined = Instant::now();
    c.add_replica();
    c.add_replica();
    c.wait_healthy().await;

    let mut samples = 0;
    let mut most_copies = 0;
    let balanced_after = loop {
        let on_disk = copies_on_disk(&c, &files);
        if let Some(i) = on_disk.iter().position(|n| *n < N) {
            panic!("{} had {} copies on disk", files[i].0, on_disk[i]);
        }
        most_copies = most_copies.max(*on_disk.iter().max().unwrap());
        let list = c.list().await.unwrap();
        let status: HashMap<&str, u32> = list
            .items
            .iter()
            .map(|f| (f.name.as_str(), f.ready_replicas))
            .collect();
        for (name, _, _) in &files {
            let ready = status.get(name.as_str()).copied().unwrap_or(0);
            assert!(ready >= N as u32, "{name} reported {ready} ready copies");
        }
        samples += 1;
        let bytes: Vec<u64> = c.data_dirs().iter().map(|d| stored_bytes(d)).collect();
        let (high, low) = (*bytes.iter().max().unwrap(), *bytes.iter().min().unwrap());
        let settled = on_disk.iter().all(|n| *n == N);
        if settled && high as f64 <= RATIO * low as f64 + largest as f64 {
            break joined.elapsed();
        }
        assert!(
            joined.elapsed() < BOUND,
            "not balanced after {BOUND:?}: bytes per replica {bytes:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let after: Vec<u64> = c.data_dirs().iter().map(|d| stored_bytes(d)).collect();
    let ratio_after =
        *after.iter().max().unwrap() as f64 / *after.iter().min().unwrap().max(&1) as f64;
    let moved = metrics::sum(
        &c.operator_metrics().await,
        "deposito_operator_rebalance_bytes_total",
        &[],
    ) - moved_before;
    let rate = moved / balanced_after.as_secs_f64();
    let mib = |b: u64| b as f64 / MIB as f64;
    println!(
        "\n### Rebalance: 3 replicas with {FILES} files at N={N}, then 2 empty replicas join\n"
    );
    println!("| figure | value |\n| --- | ---: |");
    println!(
        "| bytes per replica before the join (MiB) | {:?} |",
        before.iter().map(|b| mib(*b).round()).collect::<Vec<_>>()
    );
    println!("| fullest ÷ emptiest before the join (3 replicas) | {ratio_before:.2} |");
    println!("| fullest ÷ emptiest right after the join (5 replicas) | ∞ (two hold 0 bytes) |");
    println!(
        "| bytes per replica after (MiB) | {:?} |",
        after.iter().map(|b| mib(*b).round()).collect::<Vec<_>>()
    );
    println!("| fullest ÷ emptiest after | {ratio_after:.2} |");
    println!(
        "| time from the join to balanced | {:.1} s |",
        balanced_after.as_secs_f64()
    );
    println!("| bytes moved | {:.1} MiB |", moved / MIB as f64);
    println!(
        "| move rate | {:.2} MiB/s (limit {:.0} MiB/s) |",
        rate / MIB as f64,
        mib(RATE)
    );
    println!("| samples, most copies of one file seen | {samples}, {most_copies} |\n");

    assert!(moved > 0.0, "nothing moved");
    // The pace: the limit over the whole run, plus the one tick (0.2 s) the pacer may run
    // ahead and the moves that may start at once.
    assert!(
        moved <= RATE as f64 * (balanced_after.as_secs_f64() + 0.2) + 4.0 * largest as f64,
        "moved {moved} bytes in {balanced_after:?}, limit {RATE}/s"
    );
    assert!(
        most_copies <= N + 1,
        "a file had {most_copies} copies at once"
    );
    // Moves were needed: the new replicas hold copies now, and each copy is intact.
    for k in [4, 5] {
        assert!(after[k - 1] > 0, "replica {k} got nothing: {after:?}");
    }
    let total_before: u64 = before.iter().sum();
    let total_after: u64 = after.iter().sum();
    assert_eq!(total_before, total_after, "copies gained or lost bytes");
}
