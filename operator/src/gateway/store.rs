//! The gateway's seam to a mode's catalog: the reads and writes that serve clients (look a
//! file up by name, list a namespace, record a deposit, change a level, ask for deletion).
//! The engine's own seam is [`crate::engine::Catalog`]; each mode's catalog implements both.

use async_trait::async_trait;
use deposito_api::FileKey;

use crate::engine::{CatalogError, Deposit, FileRecord};

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

    /// Requests deletion; `None` when there is no such file.
    async fn mark_deleting(&self, key: &FileKey) -> Result<Option<FileRecord>, CatalogError>;

    /// Ok when the catalog can be read now (readiness).
    async fn ready(&self) -> Result<(), CatalogError>;
}
