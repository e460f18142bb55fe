//! A typed async client for the gateway API (`docs/api.md`, "Gateway").

use std::time::Duration;

use deposito_api::gateway::{
    FileList, FileStatus, NamespaceLifecycle, PatchFile, PatchReplica, ReplicaList, WaitFor,
};
use deposito_api::{
    ErrorBody, HEADER_CONTENT_LENGTH, HEADER_LIFECYCLE, HEADER_RETAIN_UNTIL, HEADER_SHA256,
};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, TRAILER};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::error::from_reqwest;
pub use crate::error::Error;
use crate::upload_body::TrailedBody;
pub use crate::upload_body::UploadBody;

/// Upper bound of a long poll the gateway honors (`timeout` at most 60 s).
pub const MAX_LONG_POLL_SECS: u64 = 60;

/// A connection to one gateway with one token.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    base: Url,
    server: String,
    token: String,
}

impl GatewayClient {
    /// `server` is a base URL such as `http://127.0.0.1:7800` (see `config::normalize_server`);
    /// `ca_cert`, a PEM file of certificates to trust for `https://` besides the system's.
    pub fn new(
        server: &str,
        token: &str,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Self, Error> {
        let base = Url::parse(server)
            .map_err(|e| Error::Config(format!("invalid server URL '{server}': {e}")))?;
        if base.cannot_be_a_base() {
            return Err(Error::Config(format!("invalid server URL '{server}'")));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("deposito/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                Error::Config(format!("cannot read --ca-cert {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "--ca-cert {}: no PEM certificate in it",
                        path.display()
                    ))
                })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            server: server.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    /// The server base URL, as given.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The base URL with `segments` appended, each percent-encoded as one path segment.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("checked in new: base URL can be a base");
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    fn file_url(&self, ns: &str, name: &str, tail: &[&str]) -> Url {
        let mut segs = vec!["v1", "files", ns, name];
        segs.extend_from_slice(tail);
        self.url(&segs)
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http.request(method, url).bearer_auth(&self.token)
    }

    /// Sends a request; maps transport errors and non-2xx answers.
    async fn send(&self, req: RequestBuilder, what: &str) -> Result<Response, Error> {
        let resp = req
            .send()
            .await
            .map_err(|e| from_reqwest(e, &self.server, what))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(error_from_response(resp).await)
        }
    }

    async fn send_json<T: DeserializeOwned>(
        &self,
        req: RequestBuilder,
        what: &str,
    ) -> Result<T, Error> {
        let resp = self.send(req, what).await?;
        read_json(resp, &self.server, what).await
    }

    /// `PUT /v1/files/{ns}/{name}?replicas=N&ack=A` with the body streamed from `upload.body`
    /// (a local file, or bytes in memory): exactly `upload.size` bytes. With `upload.sha256`,
    /// the digest goes in `x-deposito-sha256` and the body has a `Content-Length`; without,
    /// the body is hashed as it is sent and its digest follows it as a trailer (chunked, the
    /// size in `x-deposito-content-length`). `on_chunk` is called with the length of every
    /// chunk as it is read. Returns the status and the sha256 of what was sent.
    pub async fn put_file(
        &self,
        ns: &str,
        name: &str,
        replicas: u32,
        upload: &Upload<'_>,
        on_chunk: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<(FileStatus, String), Error> {
        let Upload {
            body,
            size,
            sha256,
            ack,
            lifecycle,
            retain_until,
        } = *upload;
        let (body, sent) = TrailedBody::open(body, size, sha256.is_none(), on_chunk).await?;
        let mut url = self.file_url(ns, name, &[]);
        url.query_pairs_mut()
            .append_pair("replicas", &replicas.to_string())
            .append_pair("ack", ack.as_str());
        let mut req = self
            .request(Method::PUT, url)
            .header(CONTENT_TYPE, "application/octet-stream");
        req = match sha256 {
            Some(sha) => req.header(HEADER_SHA256, sha).header(CONTENT_LENGTH, size),
            None => req
                .header(TRAILER, HEADER_SHA256)
                .header(HEADER_CONTENT_LENGTH, size),
        };
        if let Some(spec) = lifecycle {
            req = req.header(HEADER_LIFECYCLE, spec);
        }
        if let Some(until) = retain_until {
            req = req.header(HEADER_RETAIN_UNTIL, until);
        }
        let status: FileStatus = self
            .send_json(
                req.body(reqwest::Body::wrap(body)),
                &format!("upload of {name}"),
            )
            .await?;
        let digest = match sha256 {
            Some(sha) => sha.to_string(),
            None => sent.get().ok_or_else(|| {
                Error::Protocol(format!(
                    "the gateway acknowledged {name} before the whole file was sent"
                ))
            })?,
        };
        Ok((status, digest))
    }

    /// `HEAD /v1/files/{ns}/{name}`: `Ok(true)` if it exists, `Ok(false)` on 404. Used as a
    /// cheap check of reachability and credentials before a long upload.
    pub async fn head_file(&self, ns: &str, name: &str) -> Result<bool, Error> {
        let req = self.request(Method::HEAD, self.file_url(ns, name, &[]));
        let resp = req
            .send()
            .await
            .map_err(|e| from_reqwest(e, &self.server, "HEAD"))?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            // HEAD answers carry no body: name the status ourselves.
            StatusCode::UNAUTHORIZED => Err(Error::Api {
                status: 401,
                code: "unauthorized".into(),
                message: "the gateway refused the token".into(),
            }),
            s => Err(Error::Api {
                status: s.as_u16(),
                code: status_code_name(s),
                message: format!("HEAD of {name} failed"),
            }),
        }
    }

    /// `GET /v1/files/{ns}/{name}`: the streaming response, already checked for success.
    pub async fn get_file(&self, ns: &str, name: &str) -> Result<Download, Error> {
        let req = self.request(Method::GET, self.file_url(ns, name, &[]));
        let resp = self.send(req, &format!("download of {name}")).await?;
        let headers = resp.headers();
        let from_header = headers
            .get(HEADER_SHA256)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_ascii_lowercase());
        let from_etag = headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|s| {
                s.trim()
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .to_ascii_lowercase()
            })
            .filter(|s| deposito_api::is_sha256_hex(s));
        let sha256 = from_header.or(from_etag);
        let size = resp.content_length();
        Ok(Download {
            sha256,
            size,
            response: resp,
        })
    }

    /// `GET /v1/files/{ns}/{name}/status`, optionally as a long poll.
    pub async fn status(
        &self,
        ns: &str,
        name: &str,
        wait: Option<(WaitFor, u64)>,
    ) -> Result<FileStatus, Error> {
        let mut url = self.file_url(ns, name, &["status"]);
        let mut req_timeout = Duration::from_secs(30);
        if let Some((what, secs)) = wait {
            let secs = secs.clamp(1, MAX_LONG_POLL_SECS);
            let what = match what {
                WaitFor::Converged => "converged",
                WaitFor::Deleted => "deleted",
            };
            url.query_pairs_mut()
                .append_pair("wait", what)
                .append_pair("timeout", &secs.to_string());
            req_timeout += Duration::from_secs(secs);
        }
        let req = self.request(Method::GET, url).timeout(req_timeout);
        self.send_json(req, &format!("status of {name}")).await
    }

    /// `GET /v1/files/{ns}`, following every page.
    pub async fn list(&self, ns: &str) -> Result<FileList, Error> {
        let mut all = FileList {
            items: Vec::new(),
            next: None,
        };
        let mut after: Option<String> = None;
        loop {
            let mut url = self.url(&["v1", "files", ns]);
            url.query_pairs_mut().append_pair("limit", "1000");
            if let Some(after) = &after {
                url.query_pairs_mut().append_pair("after", after);
            }
            let req = self.request(Method::GET, url);
            let page: FileList = self.send_json(req, "listing").await?;
            all.items.extend(page.items);
            match page.next {
                // A server that ignores paging sends no `next`.
                Some(next) if after.as_ref() != Some(&next) => after = Some(next),
                _ => return Ok(all),
            }
        }
    }

    /// `PATCH /v1/files/{ns}/{name}` with `{"replicas": N}`.
    pub async fn set_replicas(
        &self,
        ns: &str,
        name: &str,
        replicas: u32,
    ) -> Result<FileStatus, Error> {
        let patch = PatchFile {
            replicas: Some(replicas),
            lifecycle: None,
            retain_until: None,
        };
        self.patch_file(ns, name, &patch).await
    }

    /// `PATCH /v1/files/{ns}/{name}`.
    pub async fn patch_file(
        &self,
        ns: &str,
        name: &str,
        patch: &PatchFile,
    ) -> Result<FileStatus, Error> {
        let req = self
            .request(Method::PATCH, self.file_url(ns, name, &[]))
            .json(patch);
        self.send_json(req, &format!("update of {name}")).await
    }

    /// `DELETE /v1/files/{ns}/{name}`.
    pub async fn delete(&self, ns: &str, name: &str) -> Result<FileStatus, Error> {
        let req = self.request(Method::DELETE, self.file_url(ns, name, &[]));
        self.send_json(req, &format!("deletion of {name}")).await
    }

    /// `GET /v1/namespaces/{ns}/lifecycle`, or with `set`, `PUT` of it.
    pub async fn namespace_lifecycle(
        &self,
        ns: &str,
        set: Option<&str>,
    ) -> Result<NamespaceLifecycle, Error> {
        let url = self.url(&["v1", "namespaces", ns, "lifecycle"]);
        let req = match set {
            None => self.request(Method::GET, url),
            Some(spec) => self.request(Method::PUT, url).json(&NamespaceLifecycle {
                lifecycle: Some(spec.to_string()),
            }),
        };
        self.send_json(req, &format!("lifecycle of namespace {ns}"))
            .await
    }

    /// `GET /v1/replicas`.
    pub async fn replicas(&self) -> Result<ReplicaList, Error> {
        let req = self.request(Method::GET, self.url(&["v1", "replicas"]));
        self.send_json(req, "replica listing").await
    }

    /// `PATCH /v1/replicas/{id}` with `{"draining": bool}`.
    pub async fn set_draining(&self, id: &str, draining: bool) -> Result<(), Error> {
        let req = self
            .request(Method::PATCH, self.url(&["v1", "replicas", id]))
            .json(&PatchReplica { draining });
        self.send(req, &format!("update of replica {id}")).await?;
        Ok(())
    }
}

/// Content to upload, already hashed.
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    pub body: UploadBody<'a>,
    /// Bytes to send.
    pub size: u64,
    /// Lowercase hex sha256 of those bytes, when known beforehand; None: computed as they
    /// are sent, and sent after them as a trailer.
    pub sha256: Option<&'a str>,
    /// When the gateway acknowledges.
    pub ack: deposito_api::gateway::Ack,
    /// The file's lifecycle (`x-deposito-lifecycle`).
    pub lifecycle: Option<&'a str>,
    /// The file's retention lock (`x-deposito-retain-until`).
    pub retain_until: Option<&'a str>,
}

/// A download in progress.
#[derive(Debug)]
pub struct Download {
    /// The digest the gateway announced (`x-deposito-sha256`, else the `ETag`).
    pub sha256: Option<String>,
    /// `Content-Length`, when sent.
    pub size: Option<u64>,
    pub response: Response,
}

async fn read_json<T: DeserializeOwned>(
    resp: Response,
    server: &str,
    what: &str,
) -> Result<T, Error> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| from_reqwest(e, server, what))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::Protocol(format!(
            "{what}: cannot decode answer ({e}): {}",
            snippet(&bytes)
        ))
    })
}

/// The canonical reason of a status as a snake_case code (`bad_gateway`).
fn status_code_name(s: StatusCode) -> String {
    s.canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace([' ', '-'], "_")
}

/// At most 200 characters of a body, on one line.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut s = crate::error::one_line(&text);
    if s.chars().count() > 200 {
        s = s.chars().take(200).collect::<String>() + "...";
    }
    s
}

/// Turns a non-2xx answer into `Error::Api`, using the JSON `ErrorBody` when there is one.
pub async fn error_from_response(resp: Response) -> Error {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => Error::Api {
            status: status.as_u16(),
            code: body.code.to_string(),
            message: crate::error::one_line(&body.error),
        },
        Err(_) => {
            let text = snippet(&bytes);
            Error::Api {
                status: status.as_u16(),
                code: status_code_name(status),
                message: if text.is_empty() {
                    "no details".into()
                } else {
                    text
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_each_segment() {
        let c = GatewayClient::new("http://h:1/prefix/", "t", None).unwrap();
        assert_eq!(
            c.file_url("default", "a b#?.txt", &["status"]).as_str(),
            "http://h:1/prefix/v1/files/default/a%20b%23%3F.txt/status"
        );
        let c = GatewayClient::new("http://h:1", "t", None).unwrap();
        assert_eq!(
            c.url(&["v1", "replicas", "r-0"]).as_str(),
            "http://h:1/v1/replicas/r-0"
        );
    }

    #[test]
    fn status_names() {
        assert_eq!(status_code_name(StatusCode::BAD_GATEWAY), "bad_gateway");
        assert_eq!(snippet(b"a\nb"), "a b");
    }
}
