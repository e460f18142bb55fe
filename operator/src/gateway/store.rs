//! The gateway's seam to a mode's catalog: the reads and writes that serve clients (look a
//! file up by name, list a namespace, record a deposit, change a level, ask for deletion).
//! The engine's own seam is [`crate::engine::Catalog`]; each mode's catalog implements both.

use async_trait::async_trait;
use deposito_api::lifecycle::Lifecycle;
use deposito_api::FileKey;

use crate::engine::{AgingChange, CatalogError, Deposit, FileRecord};

/// What the gateway reads and writes in a mode's catalog.
#[async_trait]
pub trait FileStore: Send + Sync + 'static {
    /// The storage key a file name maps to in `namespace` (identity in local mode; the
    /// StoredFile's `metadata.name` in kube mode).
    async fn storage_key(&self, namespace: &str, file_name: &str) -> Result<FileKey, CatalogError>;

    /// One file, by the user's file name.
    async fn lookup(
        &self,
        namespace: &str,
        file_name: &str,
    ) -> Result<Option<FileRecord>, CatalogError>;

    /// Up to `limit` files of a namespace with a file name after `after`, sorted by file
    /// name, and whether more follow.
    async fn list(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<FileRecord>, bool), CatalogError>;

    /// Records new content (creating the file, or replacing its content, which also cancels
    /// a pending deletion).
    async fn put(&self, deposit: Deposit) -> Result<FileRecord, CatalogError>;

    /// Changes the replication level; `None` when there is no such (undeleted) file.
    async fn set_replicas(
        &self,
        key: &FileKey,
        replicas: u32,
    ) -> Result<Option<FileRecord>, CatalogError>;

    /// Changes the level, the lifecycle or the retention lock, under the rules of
    /// [`crate::engine::check_change`]; `None` when there is no such (undeleted) file.
    async fn set_aging(
        &self,
        key: &FileKey,
        change: AgingChange,
    ) -> Result<Option<FileRecord>, CatalogError>;

    /// Requests deletion (refused while a retention lock holds); `None` when there is no
    /// such file.
    async fn mark_deleting(&self, key: &FileKey) -> Result<Option<FileRecord>, CatalogError>;

    /// The lifecycle of the files of `namespace` that have none of their own.
    async fn namespace_lifecycle(&self, namespace: &str)
        -> Result<Option<Lifecycle>, CatalogError>;

    /// Sets (`None`: removes) the lifecycle of the files of `namespace` that have none of
    /// their own; each of them is looked at again.
    async fn set_namespace_lifecycle(
        &self,
        namespace: &str,
        lifecycle: Option<Lifecycle>,
    ) -> Result<(), CatalogError>;

    /// Ok when the catalog can be read now (readiness).
    async fn ready(&self) -> Result<(), CatalogError>;
}

/// A bucket of the S3 API: a namespace, declared with CreateBucket or holding files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub name: String,
    /// When CreateBucket declared it (milliseconds since the Unix epoch); 0 for a namespace
    /// that only holds files.
    pub created_ms: u64,
    /// The bucket's tags (PutBucketTagging). The tag `replicas` is the bucket's default
    /// replication level.
    pub tags: std::collections::BTreeMap<String, String>,
}

/// What DeleteBucket found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketDeletion {
    Deleted,
    NotEmpty,
    Missing,
}

/// A file with the attributes of its current content.
pub type ObjectEntry = (FileRecord, crate::engine::ContentAttrs);

/// What the S3 API reads and writes in a mode's catalog beyond [`FileStore`]: buckets (with
/// their tags) and the attributes kept with each file's content.
#[async_trait]
pub trait BucketStore: Send + Sync + 'static {
    /// Every bucket: the declared ones and every namespace holding an undeleted file, by name.
    async fn buckets(&self) -> Result<Vec<Bucket>, CatalogError>;

    /// One bucket, when declared or holding a file.
    async fn bucket(&self, name: &str) -> Result<Option<Bucket>, CatalogError>;

    /// Declares a bucket; false when it already existed (declared or holding files).
    async fn create_bucket(&self, name: &str) -> Result<bool, CatalogError>;

    /// Removes a declared bucket that holds no file (files being deleted don't count).
    async fn delete_bucket(&self, name: &str) -> Result<BucketDeletion, CatalogError>;

    /// Replaces a bucket's tags; false when there is no such bucket. A bucket that only held
    /// files becomes declared.
    async fn set_bucket_tags(
        &self,
        name: &str,
        tags: std::collections::BTreeMap<String, String>,
    ) -> Result<bool, CatalogError>;

    /// Replaces the attributes of a file's content (a self-copy's new metadata), provided
    /// the content is still `sha256`; false when it changed or the file is gone.
    async fn set_attrs(
        &self,
        key: &FileKey,
        sha256: &str,
        attrs: crate::engine::ContentAttrs,
    ) -> Result<bool, CatalogError>;

    /// One undeleted file by name, with its content's attributes.
    async fn object(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ObjectEntry>, CatalogError>;

    /// Up to `limit` undeleted files of `namespace` whose names start with `prefix` and sort
    /// after `after` (byte order), by name, and whether more follow.
    async fn objects(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ObjectEntry>, bool), CatalogError>;
}

/// A multipart upload in progress: where the object goes, at which level, with which
/// attributes. Its parts are files of the parts namespace named `{id}.{part:05}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub id: String,
    pub bucket: String,
    pub key: String,
    pub replicas: u32,
    pub attrs: crate::engine::ContentAttrs,
    pub created_ms: u64,
}

/// The multipart uploads in progress.
#[async_trait]
pub trait UploadStore: Send + Sync + 'static {
    /// Records a new upload.
    async fn create_upload(&self, upload: Upload) -> Result<(), CatalogError>;

    /// One upload by id.
    async fn upload(&self, id: &str) -> Result<Option<Upload>, CatalogError>;

    /// The uploads of a bucket whose keys start with `prefix`, by key then id.
    async fn uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<Upload>, CatalogError>;

    /// Forgets an upload (completed or aborted); false when there was none.
    async fn remove_upload(&self, id: &str) -> Result<bool, CatalogError>;
}
