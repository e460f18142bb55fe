//! What a file's age decides, in kube mode. A StoredFile has no lifecycle or retention lock
//! yet (`spec.lifecycle` and `spec.retainUntil` are to come): a change that names one is
//! refused with that reason, and a level change is `spec.replicas`. The engine's expiry
//! deletes the StoredFile, as `kubectl delete` would, unless it changed meanwhile.

use deposito_api::FileKey;
use kube::api::{DeleteParams, Preconditions};

use super::catalog::{catalog_error, is_status, KubeCatalog};
use crate::engine::{AgingChange, CatalogError, FileRecord};
use crate::gateway::store::FileStore;

/// Why kube mode refuses a lifecycle or a retention lock.
pub(super) const AGING_UNSUPPORTED: &str =
    "lifecycles and retention locks are not available in kube mode yet; set spec.replicas";

impl KubeCatalog {
    /// [`FileStore::set_aging`]: a level change only, for now.
    pub(super) async fn apply_aging(
        &self,
        key: &FileKey,
        change: AgingChange,
    ) -> Result<Option<FileRecord>, CatalogError> {
        if change.lifecycle.is_some() || change.retain_until_ms.is_some() {
            return Err(CatalogError::Invalid(AGING_UNSUPPORTED.into()));
        }
        match change.replicas {
            Some(n) => self.set_replicas(key, n).await,
            None => self.lookup_key(key),
        }
    }

    fn lookup_key(&self, key: &FileKey) -> Result<Option<FileRecord>, CatalogError> {
        self.cached(&key.namespace, &key.name)
            .map(|sf| Self::record(&sf))
            .transpose()
    }

    /// [`crate::engine::Catalog::expire`]: deletes the StoredFile if the cache still holds
    /// the generation `record` was read at (the API server checks its uid).
    pub(super) async fn expire_file(&self, record: &FileRecord) -> Result<bool, CatalogError> {
        let Some(sf) = self.cached(&record.key.namespace, &record.key.name) else {
            return Ok(false);
        };
        if sf.metadata.generation.unwrap_or(0) as u64 != record.generation
            || sf.metadata.deletion_timestamp.is_some()
        {
            return Ok(false);
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: sf.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self
            .api(&record.key.namespace)
            .delete(&record.key.name, &params)
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if is_status(&err, 404) || is_status(&err, 409) => Ok(false),
            Err(err) => Err(catalog_error(err)),
        }
    }
}
