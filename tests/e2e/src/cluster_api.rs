//! The gateway and replica HTTP APIs of a [`Cluster`], with the right tokens.

use crate::cluster::Cluster;
use crate::http::{self, Reply};
use crate::wait::wait_for;
use deposito_api::gateway::{FileList, FileStatus, ReplicaList};
use std::path::Path;
use std::time::Duration;

impl Cluster {
    /// `GET /v1/files/default/{name}/status`: None on 404.
    pub async fn status(&self, name: &str) -> Result<Option<FileStatus>, String> {
        let url = format!(
            "{}/v1/files/default/{}/status",
            self.url(),
            http::encode_segment(name.as_bytes())
        );
        let r = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if r.status().as_u16() == 404 {
            return Ok(None);
        }
        let reply = Reply::read(r).await;
        if reply.status != 200 {
            return Err(format!("GET {url}: {} {}", reply.status, reply.body));
        }
        serde_json::from_str(&reply.body)
            .map(Some)
            .map_err(|e| format!("{e}: {}", reply.body))
    }

    /// Waits until `name` has converged (exactly its wanted number of verified copies).
    pub async fn wait_converged(&self, name: &str, timeout: Duration) -> FileStatus {
        let c = &self;
        wait_for(&format!("{name} converged"), timeout, || async move {
            c.check_alive()?;
            match c.status(name).await? {
                Some(s) if s.is_converged() => Ok(s),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }

    /// Waits until `name` is gone from the catalog.
    pub async fn wait_deleted(&self, name: &str, timeout: Duration) {
        let c = &self;
        wait_for(&format!("{name} deleted"), timeout, || async move {
            c.check_alive()?;
            match c.status(name).await? {
                None => Ok(()),
                Some(s) => Err(format!("{s:?}")),
            }
        })
        .await
    }

    /// `GET /v1/files/default`.
    pub async fn list(&self) -> Result<FileList, String> {
        let url = format!("{}/v1/files/default", self.url());
        let r = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let reply = Reply::read(r).await;
        if reply.status != 200 {
            return Err(format!("GET {url}: {} {}", reply.status, reply.body));
        }
        serde_json::from_str(&reply.body).map_err(|e| format!("{e}: {}", reply.body))
    }

    /// `GET /v1/replicas`.
    pub async fn replica_list(&self) -> Result<ReplicaList, String> {
        let url = format!("{}/v1/replicas", self.url());
        let r = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let reply = Reply::read(r).await;
        if reply.status != 200 {
            return Err(format!("GET {url}: {} {}", reply.status, reply.body));
        }
        serde_json::from_str(&reply.body).map_err(|e| format!("{e}: {}", reply.body))
    }

    /// Streams the file at `path` to `PUT /v1/files/default/{name}?replicas=N`.
    pub async fn put_file(&self, name: &str, path: &Path, replicas: u32) -> Reply {
        self.try_put_file(name, path, replicas)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Cluster::put_file`], returning transport errors (e.g. the server answered early and
    /// closed the connection while the body was still being sent).
    pub async fn try_put_file(
        &self,
        name: &str,
        path: &Path,
        replicas: u32,
    ) -> Result<Reply, String> {
        let url = format!(
            "{}/v1/files/default/{}?replicas={replicas}",
            self.url(),
            http::encode_segment(name.as_bytes())
        );
        let len = std::fs::metadata(path).expect("stat upload").len();
        let r = self
            .http
            .put(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(http::file_body(path).await)
            .send()
            .await
            .map_err(|e| format!("PUT {url}: {e:?}"))?;
        Ok(Reply::read(r).await)
    }

    /// `PUT` of in-memory bytes with an optional expected digest header.
    pub async fn put_bytes(
        &self,
        name: &str,
        bytes: Vec<u8>,
        replicas: u32,
        sha256: Option<&str>,
    ) -> Reply {
        let url = format!(
            "{}/v1/files/default/{}?replicas={replicas}",
            self.url(),
            http::encode_segment(name.as_bytes())
        );
        let mut req = self.http.put(&url).bearer_auth(&self.token).body(bytes);
        if let Some(d) = sha256 {
            req = req.header(deposito_api::HEADER_SHA256, d);
        }
        Reply::read(
            req.send()
                .await
                .unwrap_or_else(|e| panic!("PUT {url}: {e}")),
        )
        .await
    }

    /// [`Cluster::put_bytes`] taking an owned name (for streams of requests).
    pub async fn put_bytes_owned(&self, name: String, bytes: Vec<u8>, replicas: u32) -> Reply {
        self.put_bytes(&name, bytes, replicas, None).await
    }

    /// `PATCH /v1/files/default/{name}` with `{"replicas": n}`.
    pub async fn set_replicas(&self, name: &str, n: u32) -> Reply {
        let url = format!(
            "{}/v1/files/default/{}",
            self.url(),
            http::encode_segment(name.as_bytes())
        );
        let r = self
            .http
            .patch(&url)
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "replicas": n }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PATCH {url}: {e}"));
        Reply::read(r).await
    }

    /// `DELETE /v1/files/default/{name}`.
    pub async fn delete(&self, name: &str) -> Reply {
        let url = format!(
            "{}/v1/files/default/{}",
            self.url(),
            http::encode_segment(name.as_bytes())
        );
        let r = self
            .http
            .delete(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DELETE {url}: {e}"));
        Reply::read(r).await
    }

    /// `POST /v1/scrub` on replica `k` with the replica token.
    pub async fn scrub_now(&self, k: usize) -> Reply {
        let url = format!("{}/v1/scrub", self.replica(k).url());
        let r = self
            .http
            .post(&url)
            .bearer_auth(&self.replica_token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        Reply::read(r).await
    }
}
