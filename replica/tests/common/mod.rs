//! Helpers shared by the integration tests: start a real replica on loopback.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use deposito_replica::{Config, Running};

pub const TOKEN: &str = "test-replica-token";

pub struct Replica {
    pub running: Running,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Replica {
    pub fn url(&self) -> String {
        self.running.url()
    }

    pub fn obj(&self, ns: &str, name: &str) -> String {
        format!("{}/v1/objects/{ns}/{name}", self.url())
    }

    pub async fn stop(self) {
        self.running.stop().await.unwrap();
    }
}

pub fn config(dir: &Path, ip: &str) -> Config {
    let mut cfg = Config::new(dir, TOKEN);
    cfg.listen = format!("{ip}:0").parse().unwrap();
    cfg
}

/// A replica on `ip` with a fresh data dir.
pub async fn start(ip: &str) -> Replica {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let running = deposito_replica::start(config(&dir, ip)).await.unwrap();
    Replica {
        running,
        dir,
        _tmp: Some(tmp),
    }
}

/// A replica with a given configuration (its data dir is the caller's).
pub async fn start_with(cfg: Config) -> Replica {
    let dir = cfg.data_dir.clone();
    let running = deposito_replica::start(cfg).await.unwrap();
    Replica {
        running,
        dir,
        _tmp: None,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Deterministic pseudo-random bytes.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Polls `check` until it returns true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
