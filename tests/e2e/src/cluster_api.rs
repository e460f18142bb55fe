//! The gateway and replica HTTP APIs of a [`Cluster`], with the right tokens.

use crate::cluster::Cluster;
use crate::http::{self, Reply};
use crate::wait::wait_for;
use deposito_api::gateway::{FileList, FileStatus, ReplicaList};
use serde::de::DeserializeOwned;
use std::path::Path;
use std::time::Duration;

impl Cluster {
    /// `GET /v1/files/default/{name}/status`: None on 404.
    pub async fn status(&self, name: &str) -> Result<Option<FileStatus>, String> {
        let url = format!("{}/status", self.file_url(name));
        let reply = self.get(&url).await?;
        if reply.status == 404 {
            return Ok(None);
        }
        json_200(&url, &reply).map(Some)
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

    /// Waits until `name` has converged without `replica` among its holders. The catalog
    /// records a removed copy just after the replica deletes it, so a test that saw the disk
    /// change waits here for the status to follow instead of reading it once.
    pub async fn wait_converged_without(
        &self,
        name: &str,
        replica: &str,
        timeout: Duration,
    ) -> FileStatus {
        let c = &self;
        let what = format!("{name} converged without {replica}");
        wait_for(&what, timeout, || async move {
            c.check_alive()?;
            match c.status(name).await? {
                Some(s) if s.is_converged() && !s.holders.iter().any(|h| h == replica) => Ok(s),
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
        .await;
    }

    /// Walks every page of `GET /v1/files/default`, handing each to `page`.
    async fn each_page(&self, mut page: impl FnMut(FileList)) -> Result<(), String> {
        let mut after = String::new();
        loop {
            let list: FileList = self
                .get_json(&format!(
                    "{}/v1/files/default?limit=5000&after={}",
                    self.url(),
                    crate::http::encode_segment(after.as_bytes())
                ))
                .await?;
            let next = list.next.clone();
            page(list);
            match next {
                Some(next) if next != after => after = next,
                _ => return Ok(()),
            }
        }
    }

    /// `GET /v1/files/default`, every page.
    pub async fn list(&self) -> Result<FileList, String> {
        let mut all = FileList {
            items: Vec::new(),
            next: None,
        };
        self.each_page(|page| all.items.extend(page.items)).await?;
        Ok(all)
    }

    /// Counts (all, converged) files of `default` page by page (bounded memory on both
    /// sides).
    pub async fn count_converged(&self) -> Result<(usize, usize), String> {
        let (mut total, mut converged) = (0, 0);
        self.each_page(|page| {
            total += page.items.len();
            converged += page.items.iter().filter(|s| s.is_converged()).count();
        })
        .await?;
        Ok((total, converged))
    }

    /// `GET /v1/replicas`.
    pub async fn replica_list(&self) -> Result<ReplicaList, String> {
        self.get_json(&format!("{}/v1/replicas", self.url())).await
    }

    /// `GET url` on the gateway with the gateway token.
    async fn get(&self, url: &str) -> Result<Reply, String> {
        let r = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        Ok(Reply::read(r).await)
    }

    /// `GET url` on the gateway, expecting a 200 with a JSON body.
    async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        json_200(url, &self.get(url).await?)
    }

    /// `{gateway}/v1/files/default/{name}`, the name percent-encoded.
    fn file_url(&self, name: &str) -> String {
        format!(
            "{}/v1/files/default/{}",
            self.url(),
            http::encode_segment(name.as_bytes())
        )
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
        let url = format!("{}?replicas={replicas}", self.file_url(name));
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
        let url = format!("{}?replicas={replicas}", self.file_url(name));
        let mut req = self.http.put(&url).bearer_auth(&self.token).body(bytes);
        if let Some(d) = sha256 {
            req = req.header(deposito_api::HEADER_SHA256, d);
        }
        send(req, "PUT", &url).await
    }

    /// [`Cluster::put_bytes`] taking an owned name (for streams of requests).
    pub async fn put_bytes_owned(&self, name: String, bytes: Vec<u8>, replicas: u32) -> Reply {
        self.put_bytes(&name, bytes, replicas, None).await
    }

    /// `PATCH /v1/files/default/{name}` with `{"replicas": n}`.
    pub async fn set_replicas(&self, name: &str, n: u32) -> Reply {
        let url = self.file_url(name);
        let req = self.http.patch(&url).bearer_auth(&self.token);
        send(
            req.json(&serde_json::json!({ "replicas": n })),
            "PATCH",
            &url,
        )
        .await
    }

    /// `DELETE /v1/files/default/{name}`.
    pub async fn delete(&self, name: &str) -> Reply {
        let url = self.file_url(name);
        send(
            self.http.delete(&url).bearer_auth(&self.token),
            "DELETE",
            &url,
        )
        .await
    }

    /// `POST /v1/scrub` on replica `k` with the replica token.
    pub async fn scrub_now(&self, k: usize) -> Reply {
        let url = format!("{}/v1/scrub", self.replica(k).url());
        let req = self.http.post(&url).bearer_auth(&self.replica_token);
        send(req, "POST", &url).await
    }

    /// The operator's `/metrics` text (see [`crate::metrics::sum`]).
    pub async fn operator_metrics(&self) -> String {
        let url = format!("{}/metrics", self.url());
        let reply = send(self.http.get(&url), "GET", &url).await;
        assert_eq!(reply.status, 200, "GET {url}: {}", reply.body);
        reply.body
    }
}

/// Sends `req` (a `method` to `url`, named if it fails) and reads the reply.
async fn send(req: reqwest::RequestBuilder, method: &str, url: &str) -> Reply {
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    Reply::read(r).await
}

/// The JSON body of a 200 reply to `GET url`; any other status is an error.
fn json_200<T: DeserializeOwned>(url: &str, reply: &Reply) -> Result<T, String> {
    if reply.status != 200 {
        return Err(format!("GET {url}: {} {}", reply.status, reply.body));
    }
    serde_json::from_str(&reply.body).map_err(|e| format!("{e}: {}", reply.body))
}
