//! What a file's age decides, in kube mode: changes of a StoredFile's level, lifecycle and
//! retention lock through the gateway (PATCH, `deposito set-lifecycle`, `deposito retain`),
//! under the same rules as local mode ([`crate::engine::check_change`]), and the engine's
//! expiry, which deletes the StoredFile as `kubectl delete` would, unless it changed
//! meanwhile.

use deposito_api::lifecycle::Lifecycle;
use deposito_api::FileKey;
use kube::api::{DeleteParams, Preconditions};

use super::catalog::{catalog_error, is_status, KubeCatalog};
use super::crd::LifecycleSpec;
use super::record::time_of;
use crate::engine::{check_change, now_ms, AgingChange, CatalogError, FileRecord};

/// The merge patch of `spec.lifecycle` for `lifecycle` (`None` removes it): every field
/// named, so that a field the new lifecycle lacks is removed, not kept from the old one.
pub(super) fn lifecycle_patch(lifecycle: Option<&Lifecycle>) -> serde_json::Value {
    match lifecycle.filter(|l| !l.steps.is_empty() || l.expire_after_secs.is_some()) {
        None => serde_json::Value::Null,
        Some(l) => {
            let spec = LifecycleSpec::of(l);
            serde_json::json!({ "steps": spec.steps, "expireAfter": spec.expire_after })
        }
    }
}

impl KubeCatalog {
    /// [`crate::gateway::store::FileStore::set_aging`]: checked against the cached
    /// StoredFile, then written with its resourceVersion as a precondition (a change made
    /// meanwhile is a conflict, not overwritten).
    pub(super) async fn apply_aging(
        &self,
        key: &FileKey,
        change: AgingChange,
    ) -> Result<Option<FileRecord>, CatalogError> {
        self.check_namespace(&key.namespace)?;
        let Some(current) = self.cached(&key.namespace, &key.name) else {
            return Ok(None);
        };
        let record = Self::record(&current)?;
        if record.deleting {
            return Ok(None);
        }
        check_change(&record, &change, now_ms())?;
        let mut spec = serde_json::Map::new();
        if let Some(lifecycle) = &change.lifecycle {
            spec.insert("lifecycle".into(), lifecycle_patch(lifecycle.as_ref()));
            if let Some(start) = lifecycle.as_ref().and_then(|l| l.start) {
                spec.insert("replicas".into(), start.into());
            }
        }
        if let Some(n) = change.replicas {
            spec.insert("replicas".into(), n.into());
        }
        if let Some(until) = change.retain_until_ms {
            spec.insert("retainUntil".into(), serde_json::json!(time_of(until)));
        }
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": current.metadata.resource_version },
            "spec": spec,
        });
        self.merge_patch(key, &patch).await
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
