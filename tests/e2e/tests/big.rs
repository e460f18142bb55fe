//! A 2 GiB deposit and retrieve at N=1, with every process's peak RSS under 100 MiB and the
//! retrieved bytes identical (streaming sha256). Run alone with
//! `cargo test --release -p deposito-e2e --test big`.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use deposito_e2e::files::{random_seed, sha256_file, write_random_file};
use deposito_e2e::{Cluster, MIB};
use std::time::Duration;

const SIZE: u64 = 2048 * MIB;
const RSS_LIMIT: u64 = 100 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gib_deposit_and_retrieve_with_every_peak_rss_under_100_mib() {
    let c = Cluster::builder().replicas(2).start().await;
    let input = c.scratch("big.bin");
    let sha = write_random_file(&input, SIZE, random_seed());

    let dep = c.deposit_ok(&input, 1, "big.bin");
    let st = c.wait_converged("big.bin", Duration::from_secs(600)).await;
    assert_eq!((st.sha256.as_str(), st.size), (sha.as_str(), SIZE));
    assert_eq!(
        c.count_copies(&input),
        1,
        "expected exactly one byte-identical copy"
    );

    let out = c.scratch("big.out");
    let ret = c.client_ok(&["retrieve", "big.bin", "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), SIZE);
    assert_eq!(sha256_file(&out).unwrap(), sha, "retrieved bytes differ");

    let mut rss = c.peak_rss();
    rss.push(("client deposit".into(), dep.max_rss));
    rss.push(("client retrieve".into(), ret.max_rss));
    eprintln!(
        "peak RSS: {:?}",
        rss.iter()
            .map(|(n, b)| format!("{n} {:.1} MiB", *b as f64 / MIB as f64))
            .collect::<Vec<_>>()
    );
    assert_eq!(rss.len(), 5, "missing a process: {rss:?}");
    for (name, bytes) in rss {
        assert!(
            bytes < RSS_LIMIT,
            "{name} peak RSS {:.1} MiB ≥ 100 MiB",
            bytes as f64 / MIB as f64
        );
    }
}
