//! A deposit through the gateway in kube mode: the StoredFile is created, or its content
//! replaced, by one request (create, or merge patch when the cache has it), with the
//! content's attributes in [`super::content_attrs::CONTENT_ANNOTATION`] and the deposit's
//! lifecycle and lock in its spec.

use kube::api::{Patch, PatchParams, PostParams};

use super::aging::lifecycle_patch;
use super::cached::CachedFile;
use super::catalog::{catalog_error, is_status, KubeCatalog};
use super::content_attrs::{annotation_value, CONTENT_ANNOTATION};
use super::crd::{FileSource, LifecycleSpec, StoredFile, StoredFileSpec, UploadSource, FINALIZER};
use super::record::time_of;
use crate::engine::{CatalogError, Deposit, FileRecord};

impl KubeCatalog {
    /// [`crate::gateway::store::FileStore::put`].
    pub(super) async fn record_deposit(
        &self,
        deposit: Deposit,
    ) -> Result<FileRecord, CatalogError> {
        let Deposit {
            key,
            file_name,
            replicas,
            sha256,
            size,
            attrs,
            lifecycle,
            retain_until_ms,
            ..
        } = deposit;
        // The lifecycle's own starting level is spec.replicas; its steps, spec.lifecycle (a
        // deposit without one removes the file's). A lock is only ever extended.
        let replicas = lifecycle
            .as_ref()
            .map_or(replicas, |l| l.starting(replicas));
        let lifecycle_json = lifecycle_patch(lifecycle.as_ref());
        let lifecycle = lifecycle
            .filter(|l| !l.steps.is_empty() || l.expire_after_secs.is_some())
            .map(|l| LifecycleSpec::of(&l));
        let retain_until = retain_until_ms.map(time_of);
        let content = annotation_value(&sha256, size, &attrs);
        let (key, file_name, sha256) = (&key, file_name.as_str(), sha256.as_str());
        self.check_namespace(&key.namespace)?;
        let api = self.api(&key.namespace);
        let cached = self.cached(&key.namespace, &key.name);
        if let Some(current) = &cached {
            if current.metadata.deletion_timestamp.is_some() {
                return Err(CatalogError::Conflict(format!(
                    "StoredFile {} is being deleted; deposit again once it is gone",
                    key.name
                )));
            }
            if current.file_name() != file_name {
                return Err(CatalogError::Conflict(format!(
                    "StoredFile {} holds the file '{}'",
                    key.name,
                    current.file_name()
                )));
            }
        }
        let patch = serde_json::json!({
            "metadata": { "annotations": { CONTENT_ANNOTATION: content } },
            "spec": {
                "replicas": replicas,
                "fileName": file_name,
                "sha256": sha256,
                "source": { "upload": {}, "inline": null, "url": null },
                "lifecycle": lifecycle_json,
            }
        });
        let mut patch = patch;
        if let Some(until) = &retain_until {
            patch["spec"]["retainUntil"] = serde_json::json!(until);
        }
        let mut new_file = StoredFile::new(
            &key.name,
            StoredFileSpec {
                replicas: replicas as i32,
                file_name: Some(file_name.to_string()),
                source: FileSource {
                    upload: Some(UploadSource {}),
                    ..FileSource::default()
                },
                sha256: Some(sha256.to_string()),
                lifecycle: lifecycle.clone(),
                retain_until,
            },
        );
        new_file.metadata.namespace = Some(key.namespace.clone());
        // Created with the operator's finalizer, which its first reconcile would otherwise
        // add with a PATCH of its own: one API write less per new file.
        new_file.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
        new_file.metadata.annotations = Some([(CONTENT_ANNOTATION.to_string(), content)].into());
        let (params, merge_patch) = (PatchParams::default(), Patch::Merge(&patch));
        let merge = || api.patch(&key.name, &params, &merge_patch);
        let create_or_merge = async {
            match api.create(&PostParams::default(), &new_file).await {
                // Created meanwhile by a concurrent deposit: last write wins, whole.
                Err(err) if is_status(&err, 409) => merge().await,
                other => other,
            }
        };
        // A file the cache does not have is most likely new: one request instead of two.
        let result = if cached.is_some() {
            match merge().await {
                Err(err) if is_status(&err, 404) => create_or_merge.await,
                other => other,
            }
        } else {
            create_or_merge.await
        };
        let sf = CachedFile::from(result.map_err(catalog_error)?);
        self.catch_up(&sf).await;
        Self::record(&sf)
    }
}
