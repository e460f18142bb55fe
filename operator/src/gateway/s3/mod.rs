//! The S3 API of the gateway, on its own port: buckets are namespaces, objects are files,
//! and each object carries its own replication level (`x-amz-meta-replicas`, the storage
//! class, or the bucket's `replicas` tag). The `s3s` crate parses requests, checks AWS
//! Signature V4 (headers and presigned URLs) and writes XML; this module maps each operation
//! onto the gateway's seams ([`FileStore`](super::store::FileStore),
//! [`BucketStore`](super::store::BucketStore)) and its data path, so an object is deposited,
//! verified and served exactly like a file of the native API.
//!
//! Access keys are derived from the client tokens ([`s3_access_key_id`]); the secret key is
//! the token itself, so a scoped token's key reaches the same namespaces with the same
//! read-only or read-write rule (403 `AccessDenied` elsewhere).

mod aging;
mod buckets;
pub(in crate::gateway) mod checksums;
mod errors;
mod level;
mod listing;
mod multipart;
mod objects;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use clap::Args;
use deposito_replica::http::limits::RouteClass;
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

pub use super::access::s3_access_key_id;
use super::access::{Grant, Tokens};
use super::store::{BucketStore, UploadStore};
use super::GatewayState;

/// `--s3-*`: the S3 API's listener and defaults.
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// Address of the S3 API [local mode default: the gateway's address with port 7900;
    /// `off` turns it off].
    #[arg(long, env = "DEPOSITO_S3_LISTEN", value_name = "ADDR|off")]
    pub s3_listen: Option<String>,
    /// Base domain of virtual-hosted-style addressing (`BUCKET.DOMAIN`); path-style
    /// addressing always works.
    #[arg(long, env = "DEPOSITO_S3_DOMAIN")]
    pub s3_domain: Option<String>,
    /// Replication level of an object whose request names none and whose bucket has no
    /// `replicas` tag (the storage class STANDARD).
    #[arg(long, env = "DEPOSITO_S3_DEFAULT_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(deposito_api::openapi::MAX_REPLICAS)))]
    pub s3_default_replicas: u32,
}

impl S3Args {
    /// Where to serve the S3 API: `--s3-listen`, else `default`; `None` when turned off.
    pub fn listen(&self, default: Option<SocketAddr>) -> anyhow::Result<Option<SocketAddr>> {
        match self.s3_listen.as_deref() {
            Some("off") => Ok(None),
            Some(addr) => deposito_util::net::parse_listen(addr)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("--s3-listen: {e}")),
            None => Ok(default),
        }
    }
}

/// What the S3 API needs of a mode's catalog.
pub struct S3Seams {
    pub buckets: Arc<dyn BucketStore>,
    pub uploads: Arc<dyn UploadStore>,
    /// The namespace holding multipart upload parts.
    pub parts_namespace: String,
    /// Whether that namespace is also a bucket (kube mode, where it is the operator's own
    /// namespace): the parts of open uploads are then hidden from its listings. When it is
    /// not (local mode's `deposito-uploads`), it is no bucket at all.
    pub parts_namespace_is_bucket: bool,
}

/// The S3 operations over a gateway (cheap to clone: handles).
#[derive(Clone)]
pub struct DepositoS3 {
    gw: GatewayState,
    buckets: Arc<dyn BucketStore>,
    uploads: Arc<dyn UploadStore>,
    parts_namespace: String,
    parts_namespace_is_bucket: bool,
    default_replicas: u32,
    /// Multipart uploads being completed now (one completion per upload at a time).
    completing: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// Checks signatures with the secret key of an access key: the client token it was derived
/// from.
struct TokenKeys(Arc<Tokens>);

#[async_trait]
impl S3Auth for TokenKeys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.by_access_key(access_key) {
            Some((token, _)) => Ok(SecretKey::from(token.to_string())),
            None => Err(s3s::s3_error!(InvalidAccessKeyId)),
        }
    }
}

/// The S3 API as a router for the gateway's serving loop.
pub fn router(gw: GatewayState, seams: S3Seams, args: &S3Args) -> anyhow::Result<Router> {
    let tokens = gw.tokens.clone();
    let s3 = DepositoS3 {
        gw,
        buckets: seams.buckets,
        uploads: seams.uploads,
        parts_namespace: seams.parts_namespace,
        parts_namespace_is_bucket: seams.parts_namespace_is_bucket,
        default_replicas: args.s3_default_replicas,
        completing: Arc::default(),
    };
    let mut builder = s3s::service::S3ServiceBuilder::new(s3);
    builder.set_auth(TokenKeys(tokens));
    if let Some(domain) = &args.s3_domain {
        builder.set_host(VirtualHosts::new(domain)?);
    }
    let mut config = s3s::config::S3Config::default();
    config.xml_max_body_size = XML_MAX_BODY_BYTES;
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
        config,
    ))));
    let service = builder.build();
    Ok(Router::new()
        .fallback_service(axum::error_handling::HandleError::new(
            service,
            |err: s3s::HttpError| async move {
                tracing::warn!(error = ?err, "S3 request failed outside an operation");
                axum::http::StatusCode::INTERNAL_SERVER_ERROR
            },
        ))
        .layer(axum::middleware::from_fn(log_failures)))
}

/// Logs S3 requests that failed on the server's side (5xx) as warnings, and refused ones
/// (4xx) at debug level.
async fn log_failures(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let response = next.run(request).await;
    let status = response.status();
    if status.is_server_error() {
        tracing::warn!(%method, %path, %status, "S3 request failed");
    } else if status.is_client_error() {
        tracing::debug!(%method, %path, %status, "S3 request refused");
    }
    response
}

/// Virtual-hosted-style addressing under one base domain: `BUCKET.DOMAIN[:port]` names the
/// bucket; any other host (the domain itself, an IP address, another name) is path style.
/// (`s3s`'s own `SingleDomain` compares the port too, and takes any other host name for a
/// bucket, which breaks path style by IP address.)
struct VirtualHosts {
    domain: String,
}

impl VirtualHosts {
    fn new(domain: &str) -> anyhow::Result<Self> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let valid = !domain.is_empty()
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        anyhow::ensure!(valid, "--s3-domain {domain}: not a DNS name");
        Ok(Self { domain })
    }

    /// The bucket a Host header names, if any.
    fn bucket<'a>(&self, host: &'a str) -> Option<&'a str> {
        let name = host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        });
        let bucket = name.strip_suffix(self.domain.as_str())?.strip_suffix('.')?;
        (!bucket.is_empty()).then_some(bucket)
    }
}

impl s3s::host::S3Host for VirtualHosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<s3s::host::VirtualHost<'a>> {
        let virtual_host = s3s::host::VirtualHost::new(self.domain.as_str());
        Ok(match self.bucket(host) {
            Some(bucket) => virtual_host.with_bucket(bucket.to_ascii_lowercase()),
            None => virtual_host,
        })
    }
}

/// Largest XML body read (DeleteObjects with 1,000 keys, CompleteMultipartUpload).
const XML_MAX_BODY_BYTES: usize = 2 << 20;

/// The serving loop's class of an S3 request: object bytes in or out, and the XML bodies
/// (bounded by `s3s`), get the minimum-rate rule instead of a deadline; the rest is bounded.
pub fn classify(method: &axum::http::Method, _path: &str) -> RouteClass {
    use axum::http::Method;
    match *method {
        Method::GET | Method::PUT | Method::POST => RouteClass::Stream,
        _ => RouteClass::Bounded,
    }
}

impl DepositoS3 {
    /// The grant of a signed request's access key.
    fn grant_of<T>(&self, req: &S3Request<T>) -> S3Result<Grant> {
        let access_key = req
            .credentials
            .as_ref()
            .map(|c| c.access_key.as_str())
            .ok_or_else(|| s3s::s3_error!(AccessDenied, "a signed request is required"))?;
        let (_, grant) = self
            .gw
            .tokens
            .by_access_key(access_key)
            .ok_or_else(|| s3s::s3_error!(InvalidAccessKeyId))?;
        Ok(grant)
    }

    /// The grant of the request's access key, checked against `bucket` (`None`: a request
    /// outside buckets) for reading or writing.
    fn authorize<T>(
        &self,
        req: &S3Request<T>,
        bucket: Option<&str>,
        write: bool,
    ) -> S3Result<Grant> {
        let grant = self.grant_of(req)?;
        if !grant.allows(bucket, write) {
            return Err(s3s::S3Error::with_message(
                s3s::S3ErrorCode::AccessDenied,
                grant.refusal(bucket, write),
            ));
        }
        Ok(grant)
    }
}

#[async_trait]
impl s3s::S3 for DepositoS3 {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        // A scoped key lists the buckets it may read.
        buckets::list(self, &self.grant_of(&req)?).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.authorize(&req, Some(&req.input.bucket), true)?;
        buckets::create(self, &req.input.bucket).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.authorize(&req, Some(&req.input.bucket), true)?;
        buckets::delete(self, &req.input.bucket).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.authorize(&req, Some(&req.input.bucket), false)?;
        buckets::existing(self, &req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.authorize(&req, Some(&req.input.bucket), false)?;
        buckets::existing(self, &req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        self.authorize(&req, Some(&req.input.bucket), false)?;
        buckets::tags(self, &req.input.bucket).await
    }

    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        self.authorize(&req, Some(&req.input.bucket), true)?;
        buckets::set_tags(self, req.input.bucket, req.input.tagging.tag_set).await
    }

    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        self.authorize(&req, Some(&req.input.bucket), true)?;
        buckets::set_tags(self, req.input.bucket, Vec::new()).await?;
        Ok(S3Response::new(DeleteBucketTaggingOutput::default()))
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        self.authorize(&req, Some(&req.input.bucket), true)?;
        let input = req.input;
        aging::put_configuration(self, &input.bucket, input.lifecycle_configuration).await
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        self.authorize(&req, Some(&req.input.bucket), false)?;
        aging::get_configuration(self, &req.input.bucket).await
    }

    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        self.authorize(&req, Some(&req.input.bucket), true)?;
        aging::put_configuration(self, &req.input.bucket, None).await?;
        Ok(S3Response::new(DeleteBucketLifecycleOutput::default()))
    }

    async fn put_object_retention(
        &self,
        req: S3Request<PutObjectRetentionInput>,
    ) -> S3Result<S3Response<PutObjectRetentionOutput>> {
        self.authorize(&req, Some(&req.input.bucket), true)?;
        aging::put_retention(self, req.input).await
    }

    async fn get_object_retention(
        &self,
        req: S3Request<GetObjectRetentionInput>,
    ) -> S3Result<S3Response<GetObjectRetentionOutput>> {
        self.authorize(&req, Some(&req.input.bucket), false)?;
        aging::get_retention(self, req.input).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.authorize(&req, Some(&req.input.bucket), true)?;
        objects::put(self, req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.authorize(&req, Some(&req.input.bucket), false)?;
        objects::get(self, req.input).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.authorize(&req, Some(&req.input.bucket), false)?;
        objects::head(self, req.input).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.authorize(&req, Some(&req.input.bucket), true)?;
        objects::delete(self, &req.input.bucket, &req.input.key).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.authorize(&req, Some(&req.input.bucket), true)?;
        objects::delete_many(self, req.input).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.authorize(&req, Some(&req.input.bucket), true)?;
        if let CopySource::Bucket { bucket, .. } = &req.input.copy_source {
            self.authorize(&req, Some(bucket), false)?;
        }
        objects::copy(self, req.input).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.authorize(&req, Some(&req.input.bucket), false)?;
        listing::list_v2(self, req.input).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.authorize(&req, Some(&req.input.bucket), false)?;
        listing::list_v1(self, req.input).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.authorize(&req, Some(&req.input.bucket), true)?;
        multipart::create(self, req.input).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.authorize(&req, Some(&req.input.bucket), true)?;
        multipart::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.authorize(&req, Some(&req.input.bucket), true)?;
        if let CopySource::Bucket { bucket, .. } = &req.input.copy_source {
            self.authorize(&req, Some(bucket), false)?;
        }
        multipart::upload_part_copy(self, req.input).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.authorize(&req, Some(&req.input.bucket), true)?;
        multipart::complete(self, req.input).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.authorize(&req, Some(&req.input.bucket), true)?;
        multipart::abort(self, req.input).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.authorize(&req, Some(&req.input.bucket), false)?;
        multipart::list_parts(self, req.input).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.authorize(&req, Some(&req.input.bucket), false)?;
        multipart::list_uploads(self, req.input).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosts_name_the_bucket_and_leave_other_hosts_path_style() {
        let hosts = VirtualHosts::new("s3.example").unwrap();
        assert_eq!(hosts.bucket("photos.s3.example"), Some("photos"));
        assert_eq!(hosts.bucket("photos.s3.example:7900"), Some("photos"));
        assert_eq!(hosts.bucket("s3.example:7900"), None);
        assert_eq!(hosts.bucket("127.0.0.1:7900"), None);
        assert_eq!(hosts.bucket("[::1]:7900"), None);
        assert_eq!(hosts.bucket("photos.s3.other"), None);
        assert!(VirtualHosts::new("bad domain").is_err());
        assert!(VirtualHosts::new("").is_err());
    }
}
