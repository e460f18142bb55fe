//! The workload's view of the gateway: a cloneable client holding only the gateway's address
//! and token (both survive operator restarts), so that client tasks keep running while the
//! fault runner owns the [`deposito_e2e::Cluster`]. Also runs the `deposito` CLI.

use crate::ledger::Outcome;
use deposito_e2e::bins::bin;
use deposito_e2e::cluster::clean_env;
use deposito_e2e::http::{encode_segment, file_body};
use deposito_e2e::proc;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Longest any one client request may take (a paused replica holds requests until it
/// resumes, well within this).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A failed answer with HTTP `status`: transient for 5xx other than 501 and 507 (the CLI's
/// rule).
fn failure(status: u16, reason: String) -> Outcome {
    if status >= 500 && status != 501 && status != 507 {
        Outcome::transient(reason)
    } else {
        Outcome::failed(reason)
    }
}

/// A gateway client for namespace `default`.
#[derive(Clone)]
pub struct Gateway {
    base: String,
    token: String,
    http: reqwest::Client,
    /// HOME for the CLI (inside the cluster's folder).
    home: PathBuf,
}

impl Gateway {
    pub fn new(base: String, token: String, home: PathBuf) -> Self {
        // No pooled connections: after an operator restart a kept-alive connection is dead.
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("reqwest client");
        Gateway {
            base,
            token,
            http,
            home,
        }
    }

    fn file_url(&self, name: &str) -> String {
        format!(
            "{}/v1/files/default/{}",
            self.base,
            encode_segment(name.as_bytes())
        )
    }

    /// Sends `req` and turns the answer into an [`Outcome`].
    async fn outcome(&self, what: &str, req: reqwest::RequestBuilder) -> Outcome {
        match req.bearer_auth(&self.token).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.text().await;
                match (status, body) {
                    (200..=202, Ok(_)) => Outcome::Acked,
                    (404, _) => Outcome::NotFound,
                    (_, Ok(body)) => failure(status, format!("{what}: {status} {body}")),
                    (_, Err(e)) => failure(status, format!("{what}: {status}, body: {e}")),
                }
            }
            Err(e) => Outcome::transient(format!("{what}: {e}")),
        }
    }

    /// `PUT` of bytes in memory.
    pub async fn put_bytes(&self, name: &str, bytes: Vec<u8>, replicas: u32) -> Outcome {
        let url = format!("{}?replicas={replicas}", self.file_url(name));
        self.outcome("PUT", self.http.put(url).body(bytes)).await
    }

    /// `PUT` streamed from a file; at about `rate` bytes/s when given, so that it stays in
    /// flight a while.
    pub async fn put_file(
        &self,
        name: &str,
        path: &Path,
        replicas: u32,
        rate: Option<u64>,
    ) -> Outcome {
        const CHUNK: usize = 128 * 1024;
        let url = format!("{}?replicas={replicas}", self.file_url(name));
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let body = match rate {
            None => file_body(path).await,
            Some(rate) => {
                let file = match tokio::fs::File::open(path).await {
                    Ok(f) => f,
                    Err(e) => return Outcome::failed(format!("open {}: {e}", path.display())),
                };
                let pause = Duration::from_secs_f64(CHUNK as f64 / rate.max(1) as f64);
                let stream = tokio_util::io::ReaderStream::with_capacity(file, CHUNK).then(
                    move |chunk| async move {
                        tokio::time::sleep(pause).await;
                        chunk
                    },
                );
                reqwest::Body::wrap_stream(stream)
            }
        };
        let req = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body);
        self.outcome("PUT", req).await
    }

    /// `PATCH` of the replication level.
    pub async fn set_replicas(&self, name: &str, n: u32) -> Outcome {
        let req = self
            .http
            .patch(self.file_url(name))
            .json(&serde_json::json!({ "replicas": n }));
        self.outcome("PATCH", req).await
    }

    /// `DELETE`.
    pub async fn delete(&self, name: &str) -> Outcome {
        self.outcome("DELETE", self.http.delete(self.file_url(name)))
            .await
    }

    /// `GET` of the whole file: the sha256 of the bytes received (all of them, with a clean
    /// end) and the ETag announced; otherwise the outcome.
    pub async fn read_sha256(&self, name: &str) -> Result<(String, String), Outcome> {
        let resp = self
            .http
            .get(self.file_url(name))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| Outcome::transient(format!("GET: {e}")))?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Err(Outcome::NotFound);
        }
        if status != 200 {
            let body = resp.text().await.unwrap_or_default();
            return Err(failure(status, format!("GET: {status} {body}")));
        }
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim_matches('"')
            .to_string();
        let mut hasher = Sha256::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Outcome::transient(format!("GET body: {e}")))?;
            hasher.update(&chunk);
        }
        Ok((hex::encode(hasher.finalize()), etag))
    }

    /// `GET /healthz` answers 200.
    pub async fn healthy(&self) -> bool {
        matches!(
            self.http.get(format!("{}/healthz", self.base)).send().await,
            Ok(r) if r.status().is_success()
        )
    }

    /// `deposito deposit PATH --replicas N --name NAME --no-wait` (blocking; run it off the
    /// async threads).
    pub fn cli_deposit(&self, path: &Path, name: &str, replicas: u32) -> Outcome {
        let mut cmd = Command::new(bin("deposito"));
        clean_env(&mut cmd, &self.home);
        cmd.env("DEPOSITO_SERVER", &self.base)
            .env("DEPOSITO_TOKEN", &self.token)
            .arg("deposit")
            .arg(path)
            .args(["--replicas", &replicas.to_string(), "--name", name])
            .arg("--no-wait");
        let out = proc::run(cmd, REQUEST_TIMEOUT);
        if out.ok() {
            Outcome::Acked
        } else {
            Outcome::failed(format!(
                "deposito deposit: exit {}{}: {}",
                out.code,
                if out.timed_out { " (timed out)" } else { "" },
                out.stderr.trim()
            ))
        }
    }
}
