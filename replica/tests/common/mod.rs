//! Helpers shared by the integration tests: start a real replica on loopback.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use deposito_api::replica::{InventoryPage, PullRequest};
use deposito_replica::{Config, Running};
use reqwest::{Client, IntoUrl, Response, StatusCode};
use serde::de::DeserializeOwned;

pub const TOKEN: &str = "test-replica-token-0123456789abcdef";

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

    /// `PUT` of `body` as `ns/name`, with the token.
    pub async fn put(
        &self,
        c: &Client,
        ns: &str,
        name: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        c.put(self.obj(ns, name))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// [`Replica::put`] that must store a new copy (201).
    pub async fn put_created(
        &self,
        c: &Client,
        ns: &str,
        name: &str,
        body: impl Into<reqwest::Body>,
    ) {
        let resp = self.put(c, ns, name, body).await;
        assert_eq!(resp.status(), StatusCode::CREATED, "PUT {ns}/{name}");
    }

    /// The first page of `/v1/inventory`.
    pub async fn inventory(&self, c: &Client) -> InventoryPage {
        get_json(c, format!("{}/v1/inventory", self.url())).await
    }

    /// The text of `/metrics` (no token needed).
    pub async fn metrics(&self, c: &Client) -> String {
        c.get(format!("{}/metrics", self.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

pub fn config(dir: &Path, ip: &str) -> Config {
    let mut cfg = Config::new(dir, TOKEN);
    cfg.listen = format!("{ip}:0").parse().unwrap();
    // No scheduled scrub pass unless a test asks for one.
    cfg.scrub_first_delay_secs = 3600;
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

pub fn client() -> Client {
    Client::new()
}

/// `GET url` with the token.
pub async fn get(c: &Client, url: impl IntoUrl) -> Response {
    c.get(url).bearer_auth(TOKEN).send().await.unwrap()
}

/// `GET url` with the token and a `Range` header.
pub async fn get_range(c: &Client, url: impl IntoUrl, range: &str) -> Response {
    c.get(url)
        .bearer_auth(TOKEN)
        .header("range", range)
        .send()
        .await
        .unwrap()
}

/// `GET url` with the token, decoding the JSON answer.
pub async fn get_json<T: DeserializeOwned>(c: &Client, url: impl IntoUrl) -> T {
    get(c, url).await.json().await.unwrap()
}

/// `GET url` with the token, reading the whole body.
pub async fn get_bytes(c: &Client, url: impl IntoUrl) -> bytes::Bytes {
    get(c, url).await.bytes().await.unwrap()
}

/// `POST {copy_url}/pull` from `source`, with the token.
pub async fn pull(c: &Client, pull_url: impl IntoUrl, source: &str) -> Response {
    c.post(pull_url)
        .bearer_auth(TOKEN)
        .json(&PullRequest {
            source: source.to_string(),
        })
        .send()
        .await
        .unwrap()
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

/// Where the copy (`default`, `name`, `sha256`) lives in the area `area` (`objects`, `trash`,
/// `quarantine`) of the data dir `dir`.
pub fn copy_at(dir: &Path, area: &str, name: &str, sha256: &str) -> PathBuf {
    deposito_replica::storage::layout::copy_path(&dir.join(area), "default", name, sha256)
}

/// Flips one bit of the byte at `at` in `path` (and syncs), to simulate rot.
pub fn flip_byte(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x01;
    f.write_all_at(&b, at).unwrap();
    f.sync_all().unwrap();
}
