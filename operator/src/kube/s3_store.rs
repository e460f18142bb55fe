//! Kube mode's side of the S3 API: [`BucketStore`] and [`UploadStore`] for [`KubeCatalog`].
//!
//! - **Buckets are the namespaces this operator manages.** A bucket is declared by the
//!   ConfigMap [`BUCKET_CONFIGMAP`] in its namespace (created by CreateBucket, holding the
//!   bucket's tags and creation time); a managed namespace holding StoredFiles is a bucket
//!   too. CreateBucket never creates a namespace: one that does not exist is refused with
//!   what to do, and so is one this operator does not manage.
//! - **Objects are StoredFiles**, their S3 attributes in the `deposito.io/content`
//!   annotation ([`super::content_attrs`]); listings come from the watch cache's file-name
//!   index, in byte order.
//! - **Multipart uploads** are ConfigMaps `deposito-upload-{id}` in the operator's own
//!   namespace (labelled with their bucket); their parts are StoredFiles of that namespace
//!   named `{id}.{part:05}`, hidden from ListObjects while the upload is open.

use std::collections::BTreeMap;
use std::ops::Bound;

use async_trait::async_trait;
use deposito_api::FileKey;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use super::catalog::{catalog_error, is_status, KubeCatalog};
use super::content_attrs::{annotation_value, CONTENT_ANNOTATION};
use crate::engine::{now_ms, Catalog, CatalogError, ContentAttrs};
use crate::gateway::store::{
    Bucket, BucketDeletion, BucketStore, ObjectEntry, Upload, UploadStore,
};

/// The ConfigMap that declares a bucket in its namespace.
pub const BUCKET_CONFIGMAP: &str = "deposito-bucket";
/// The label on the bucket and upload ConfigMaps.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "deposito-operator");
/// The label of an upload's ConfigMap naming its bucket.
const UPLOAD_BUCKET_LABEL: &str = "deposito.io/upload-bucket";
/// Keys of a bucket ConfigMap.
const TAGS_KEY: &str = "tags";
const CREATED_KEY: &str = "createdMs";
/// The key of an upload ConfigMap holding the upload.
const UPLOAD_KEY: &str = "upload";
/// Files read per index page while listing.
const SCAN_BATCH: usize = 500;

pub(super) fn configmaps(store: &KubeCatalog, namespace: &str) -> Api<ConfigMap> {
    Api::namespaced(store.client().clone(), namespace)
}

/// The bucket a declaring ConfigMap describes.
fn bucket_of(namespace: &str, cm: &ConfigMap) -> Bucket {
    let data = cm.data.clone().unwrap_or_default();
    Bucket {
        name: namespace.to_string(),
        created_ms: data
            .get(CREATED_KEY)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        tags: data
            .get(TAGS_KEY)
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default(),
    }
}

pub(super) fn bucket_configmap(
    namespace: &str,
    created_ms: u64,
    tags: &BTreeMap<String, String>,
) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(BUCKET_CONFIGMAP.to_string());
    cm.metadata.namespace = Some(namespace.to_string());
    cm.metadata.labels = Some([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into());
    cm.data = Some(
        [
            (CREATED_KEY.to_string(), created_ms.to_string()),
            (
                TAGS_KEY.to_string(),
                serde_json::to_string(tags).unwrap_or_default(),
            ),
        ]
        .into(),
    );
    cm
}

impl KubeCatalog {
    /// The declaring ConfigMap of bucket `namespace`, if any.
    async fn declared(&self, namespace: &str) -> Result<Option<Bucket>, CatalogError> {
        match configmaps(self, namespace).get_opt(BUCKET_CONFIGMAP).await {
            Ok(cm) => Ok(cm.map(|cm| bucket_of(namespace, &cm))),
            Err(err) if is_status(&err, 404) => Ok(None),
            Err(err) => Err(catalog_error(err)),
        }
    }

    /// Whether `namespace` holds a StoredFile that is not being deleted.
    fn holds_files(&self, namespace: &str) -> bool {
        let mut cursor: Option<String> = None;
        loop {
            let (page, more) = self.names().page(namespace, cursor.as_deref(), SCAN_BATCH);
            if page.iter().any(|(file_name, _)| {
                self.find(namespace, file_name)
                    .is_some_and(|sf| sf.metadata.deletion_timestamp.is_none())
            }) {
                return true;
            }
            match page.last() {
                Some((last, _)) if more => cursor = Some(last.clone()),
                _ => return false,
            }
        }
    }

    fn managed_or_refused(&self, name: &str) -> Result<(), CatalogError> {
        if self.manages(name) {
            return Ok(());
        }
        Err(CatalogError::Invalid(format!(
            "bucket '{name}': buckets are the namespaces this operator manages, and it manages \
             '{}' only (operator.watchAllNamespaces lets it manage others)",
            self.watched().unwrap_or_default()
        )))
    }
}

#[async_trait]
impl BucketStore for KubeCatalog {
    async fn buckets(&self) -> Result<Vec<Bucket>, CatalogError> {
        let mut all: BTreeMap<String, Bucket> = BTreeMap::new();
        let declared = match self.watched() {
            Some(ns) => self.declared(ns).await?.into_iter().collect::<Vec<_>>(),
            None => {
                let api: Api<ConfigMap> = Api::all(self.client().clone());
                let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
                api.list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(catalog_error)?
                    .items
                    .iter()
                    .filter(|cm| cm.name_any() == BUCKET_CONFIGMAP)
                    .filter_map(|cm| Some(bucket_of(&cm.namespace()?, cm)))
                    .collect()
            }
        };
        for bucket in declared {
            all.insert(bucket.name.clone(), bucket);
        }
        for ns in self.names().namespaces() {
            if self.manages(&ns) && !all.contains_key(&ns) && self.holds_files(&ns) {
                all.insert(
                    ns.clone(),
                    Bucket {
                        name: ns,
                        created_ms: 0,
                        tags: BTreeMap::new(),
                    },
                );
            }
        }
        Ok(all.into_values().collect())
    }

    async fn bucket(&self, name: &str) -> Result<Option<Bucket>, CatalogError> {
        if !self.manages(name) {
            return Ok(None);
        }
        if let Some(declared) = self.declared(name).await? {
            return Ok(Some(declared));
        }
        Ok(self.holds_files(name).then(|| Bucket {
            name: name.to_string(),
            created_ms: 0,
            tags: BTreeMap::new(),
        }))
    }

    async fn create_bucket(&self, name: &str) -> Result<bool, CatalogError> {
        self.managed_or_refused(name)?;
        if self.bucket(name).await?.is_some() {
            return Ok(false);
        }
        let cm = bucket_configmap(name, now_ms(), &BTreeMap::new());
        match configmaps(self, name)
            .create(&PostParams::default(), &cm)
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if is_status(&err, 409) => Ok(false),
            Err(err) if is_status(&err, 404) => Err(CatalogError::Invalid(format!(
                "bucket '{name}': buckets are namespaces, and namespace '{name}' does not \
                 exist; create it first (kubectl create namespace {name})"
            ))),
            Err(err) => Err(catalog_error(err)),
        }
    }

    async fn delete_bucket(&self, name: &str) -> Result<BucketDeletion, CatalogError> {
        if !self.manages(name) {
            return Ok(BucketDeletion::Missing);
        }
        // "Empty" is only known from a complete view of the StoredFiles: until the watch has
        // listed them all, the bucket (and its tags) is kept.
        if let Err(why) = Catalog::completeness(self) {
            return Err(CatalogError::Unavailable(format!(
                "bucket '{name}' is kept until its StoredFiles are listed: {why}"
            )));
        }
        if self.holds_files(name) {
            return Ok(BucketDeletion::NotEmpty);
        }
        match configmaps(self, name)
            .delete(BUCKET_CONFIGMAP, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(BucketDeletion::Deleted),
            Err(err) if is_status(&err, 404) => Ok(BucketDeletion::Missing),
            Err(err) => Err(catalog_error(err)),
        }
    }

    async fn set_bucket_tags(
        &self,
        name: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<bool, CatalogError> {
        let Some(bucket) = self.bucket(name).await? else {
            return Ok(false);
        };
        let created = if bucket.created_ms == 0 {
            now_ms()
        } else {
            bucket.created_ms
        };
        let cm = bucket_configmap(name, created, &tags);
        let params = PatchParams::apply(super::catalog::STATUS_MANAGER).force();
        configmaps(self, name)
            .patch(BUCKET_CONFIGMAP, &params, &Patch::Apply(&cm))
            .await
            .map_err(catalog_error)?;
        Ok(true)
    }

    async fn set_attrs(
        &self,
        key: &FileKey,
        sha256: &str,
        attrs: ContentAttrs,
    ) -> Result<bool, CatalogError> {
        self.check_namespace(&key.namespace)?;
        let Some(current) = self.cached(&key.namespace, &key.name) else {
            return Ok(false);
        };
        let record = KubeCatalog::record(&current)?;
        if record.sha256 != sha256 || record.deleting {
            return Ok(false);
        }
        // Only if the StoredFile is still the one read (its content may change meanwhile).
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": current.resource_version(),
                "annotations": {
                    CONTENT_ANNOTATION: annotation_value(sha256, record.size, &attrs)
                },
            }
        });
        match self
            .api(&key.namespace)
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if is_status(&err, 409) || is_status(&err, 404) => Ok(false),
            Err(err) => Err(catalog_error(err)),
        }
    }

    async fn object(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ObjectEntry>, CatalogError> {
        self.check_namespace(namespace)?;
        let Some(sf) = self.find(namespace, name) else {
            return Ok(None);
        };
        let record = KubeCatalog::record(&sf)?;
        if record.deleting {
            return Ok(None);
        }
        Ok(Some((
            record,
            sf.content_attrs().cloned().unwrap_or_default(),
        )))
    }

    async fn objects(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ObjectEntry>, bool), CatalogError> {
        self.check_namespace(namespace)?;
        // From the later of `after` (exclusive) and `prefix` (inclusive).
        let mut cursor: Option<String> = None;
        let mut out = Vec::new();
        loop {
            let from = match (&cursor, after) {
                (Some(c), _) => Bound::Excluded(c.as_str()),
                (None, Some(a)) if a >= prefix => Bound::Excluded(a),
                _ => Bound::Included(prefix),
            };
            let (page, more) = self.names().page_from(namespace, from, SCAN_BATCH);
            for (file_name, _) in &page {
                if !file_name.starts_with(prefix) {
                    return Ok((out, false));
                }
                let Some(sf) = self.find(namespace, file_name) else {
                    continue;
                };
                let record = KubeCatalog::record(&sf)?;
                if record.deleting {
                    continue;
                }
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push((record, sf.content_attrs().cloned().unwrap_or_default()));
            }
            match page.last() {
                Some((last, _)) if more => cursor = Some(last.clone()),
                _ => return Ok((out, false)),
            }
        }
    }
}

/// An upload as its ConfigMap keeps it.
#[derive(Serialize, Deserialize)]
struct UploadWire {
    id: String,
    bucket: String,
    key: String,
    replicas: u32,
    attrs: ContentAttrs,
    created_ms: u64,
}

impl From<&Upload> for UploadWire {
    fn from(u: &Upload) -> Self {
        Self {
            id: u.id.clone(),
            bucket: u.bucket.clone(),
            key: u.key.clone(),
            replicas: u.replicas,
            attrs: u.attrs.clone(),
            created_ms: u.created_ms,
        }
    }
}

impl From<UploadWire> for Upload {
    fn from(u: UploadWire) -> Self {
        Self {
            id: u.id,
            bucket: u.bucket,
            key: u.key,
            replicas: u.replicas,
            attrs: u.attrs,
            created_ms: u.created_ms,
        }
    }
}

fn upload_configmap_name(id: &str) -> String {
    format!("deposito-upload-{id}")
}

fn upload_of(cm: &ConfigMap) -> Option<Upload> {
    let text = cm.data.as_ref()?.get(UPLOAD_KEY)?;
    serde_json::from_str::<UploadWire>(text)
        .ok()
        .map(Upload::from)
}

/// The uploads of kube mode, as ConfigMaps in `namespace` (the operator's own).
pub struct KubeUploads {
    api: Api<ConfigMap>,
}

impl KubeUploads {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
        }
    }
}

#[async_trait]
impl UploadStore for KubeUploads {
    async fn create_upload(&self, upload: Upload) -> Result<(), CatalogError> {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(upload_configmap_name(&upload.id));
        cm.metadata.labels = Some(
            [
                (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                (UPLOAD_BUCKET_LABEL.to_string(), upload.bucket.clone()),
            ]
            .into(),
        );
        let wire = serde_json::to_string(&UploadWire::from(&upload))
            .map_err(|e| CatalogError::Invalid(e.to_string()))?;
        cm.data = Some([(UPLOAD_KEY.to_string(), wire)].into());
        self.api
            .create(&PostParams::default(), &cm)
            .await
            .map_err(catalog_error)?;
        Ok(())
    }

    async fn upload(&self, id: &str) -> Result<Option<Upload>, CatalogError> {
        match self.api.get_opt(&upload_configmap_name(id)).await {
            Ok(cm) => Ok(cm.as_ref().and_then(upload_of)),
            Err(err) if is_status(&err, 404) => Ok(None),
            Err(err) => Err(catalog_error(err)),
        }
    }

    async fn uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<Upload>, CatalogError> {
        let selector = format!("{UPLOAD_BUCKET_LABEL}={bucket}");
        let mut found: Vec<Upload> = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(catalog_error)?
            .items
            .iter()
            .filter_map(upload_of)
            .filter(|u| u.bucket == bucket && u.key.starts_with(prefix))
            .collect();
        found.sort_by(|a, b| (&a.key, &a.id).cmp(&(&b.key, &b.id)));
        Ok(found)
    }

    async fn remove_upload(&self, id: &str) -> Result<bool, CatalogError> {
        match self
            .api
            .delete(&upload_configmap_name(id), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if is_status(&err, 404) => Ok(false),
            Err(err) => Err(catalog_error(err)),
        }
    }
}
