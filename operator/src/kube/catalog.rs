//! Kube mode's catalog: the StoredFile resources. Reads come from a reflector cache (no API
//! request per reconcile); the engine's status goes back by server-side apply; the gateway's
//! deposits create or merge-patch StoredFiles with `source.upload`.
//!
//! The cache is only a complete view once its watch has listed every StoredFile since the
//! operator started, and again after every re-list, and while the watch works: until then
//! (RBAC refusing the list, a slow first list, the API server down) no copy is collected as
//! an orphan, and `/readyz` and the metrics say so. Even with a complete view, a copy is
//! declared unclaimed only after a direct read of its StoredFile answers 404, and never in
//! a namespace this operator does not manage.

use async_trait::async_trait;
use deposito_api::lifecycle::Lifecycle;
use deposito_api::names::resource_name;
use deposito_api::FileKey;
use kube::api::ListParams;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use super::cached::CachedFile;
use super::crd::StoredFile;
use super::file_index::{FileIndex, ResourceRef, WalkCursor};
use super::record::status_of;
use crate::engine::{
    AgingChange, Catalog, CatalogError, Changes, Claim, Deposit, FileRecord, ObservedStatus,
};
use crate::gateway::store::FileStore;

/// The field manager of the operator's status writes.
pub const STATUS_MANAGER: &str = "deposito-operator";

/// Maps a Kubernetes API error to the catalog's categories.
pub fn catalog_error(err: kube::Error) -> CatalogError {
    match &err {
        kube::Error::Api(status) => match status.code {
            403 => CatalogError::Forbidden(status.message.clone()),
            409 => CatalogError::Conflict(status.message.clone()),
            400 | 422 => CatalogError::Invalid(status.message.clone()),
            _ => CatalogError::Unavailable(err.to_string()),
        },
        _ => CatalogError::Unavailable(err.to_string()),
    }
}

/// Whether `err` is the API server's answer with status `code`.
pub(super) fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

/// Longest wait for the cache to show the gateway's own write.
const CATCH_UP_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// How complete the cache's view of the StoredFiles is.
#[derive(Debug, Default)]
struct ListState {
    /// A full list has arrived since the operator started.
    listed: bool,
    /// A re-list is under way (the watch lost its place): not complete until it ends.
    relisting: bool,
    /// The last failure of the watch, until it works again.
    error: Option<String>,
}

/// The StoredFiles of the watched namespace (or of every namespace).
pub struct KubeCatalog {
    client: Client,
    store: Store<CachedFile>,
    changes: Changes,
    /// The one namespace watched; `None` when every namespace is.
    namespace: Option<String>,
    list: std::sync::Mutex<ListState>,
    /// File names to resources, for the gateway's lookups and lists.
    names: FileIndex,
    /// The namespaces' settings ConfigMaps ([`super::namespace_defaults`]), once watched.
    settings: std::sync::OnceLock<Store<k8s_openapi::api::core::v1::ConfigMap>>,
}

impl KubeCatalog {
    pub fn new(client: Client, store: Store<CachedFile>, namespace: Option<String>) -> Self {
        Self {
            client,
            store,
            changes: Changes::default(),
            namespace,
            list: std::sync::Mutex::default(),
            names: FileIndex::default(),
            settings: std::sync::OnceLock::new(),
        }
    }

    /// Reads the namespaces' settings from `store` from now on.
    pub fn read_settings_from(&self, store: Store<k8s_openapi::api::core::v1::ConfigMap>) {
        let _ = self.settings.set(store);
    }

    /// The namespaces' settings, once watched.
    pub(super) fn settings(&self) -> Option<&Store<k8s_openapi::api::core::v1::ConfigMap>> {
        self.settings.get()
    }

    /// Merge-patches StoredFile `key` and waits, bounded, for the cache to have the result
    /// (read your writes); `None` when it does not exist. A precondition the patch names
    /// (its resourceVersion) that no longer holds is a conflict.
    pub(super) async fn merge_patch(
        &self,
        key: &FileKey,
        patch: &serde_json::Value,
    ) -> Result<Option<FileRecord>, CatalogError> {
        match self
            .api(&key.namespace)
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(sf) => {
                let sf = CachedFile::from(sf);
                self.catch_up(&sf).await;
                Self::record(&sf).map(Some)
            }
            Err(err) if is_status(&err, 404) => Ok(None),
            Err(err) if is_status(&err, 409) => Err(CatalogError::Conflict(format!(
                "StoredFile {} changed meanwhile; try again",
                key.name
            ))),
            Err(err) => Err(catalog_error(err)),
        }
    }

    /// The Kubernetes client.
    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    /// The one namespace watched; `None` when every namespace is.
    pub(super) fn watched(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The file-name index (for the S3 listings).
    pub(super) fn names(&self) -> &FileIndex {
        &self.names
    }

    /// Whether this operator manages the StoredFiles of `namespace`.
    pub fn manages(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
    }

    fn list_state(&self) -> std::sync::MutexGuard<'_, ListState> {
        self.list.lock().expect("list state lock")
    }

    /// Follows the StoredFile watch (called for every item of its stream): a complete list
    /// makes the view complete; a re-list or a failure makes it incomplete until the next
    /// complete list (or until the watch delivers again, or [`KubeCatalog::recheck`] finds
    /// the list allowed again).
    pub fn watch_event(&self, item: &Result<watcher::Event<CachedFile>, watcher::Error>) {
        let mut state = self.list_state();
        let before = completeness_of(&state);
        match item {
            Ok(watcher::Event::Init) => {
                state.relisting = true;
                self.names.relist_started();
            }
            Ok(watcher::Event::InitApply(sf)) => {
                if let Some(ns) = sf.namespace() {
                    self.names.relisted(&ns, &sf.name_any(), &sf.file_name());
                }
                self.observed(sf);
            }
            Ok(watcher::Event::InitDone) => {
                state.listed = true;
                state.relisting = false;
                state.error = None;
                self.names.relist_done();
            }
            Ok(watcher::Event::Apply(sf)) => {
                state.error = None;
                if let Some(ns) = sf.namespace() {
                    self.names.upsert(&ns, &sf.name_any(), &sf.file_name());
                }
                self.observed(sf);
            }
            Ok(watcher::Event::Delete(sf)) => {
                state.error = None;
                if let Some(ns) = sf.namespace() {
                    self.names.remove(&ns, &sf.name_any());
                }
                self.observed(sf);
            }
            Err(err) => state.error = Some(err.to_string()),
        }
        let after = completeness_of(&state);
        drop(state);
        log_change(&before, &after);
    }

    /// While the watch reports a failure: lists one StoredFile to see whether access came
    /// back (a watch that resumes without a change delivers nothing that would say so).
    pub async fn recheck(&self) {
        if self.list_state().error.is_none() {
            return;
        }
        let api: Api<StoredFile> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        if api
            .list_metadata(&ListParams::default().limit(1))
            .await
            .is_ok()
        {
            let mut state = self.list_state();
            let before = completeness_of(&state);
            state.error = None;
            let after = completeness_of(&state);
            drop(state);
            log_change(&before, &after);
        }
    }

    /// The cached StoredFile named `name` in `namespace`.
    pub fn cached(&self, namespace: &str, name: &str) -> Option<std::sync::Arc<CachedFile>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }

    pub(super) fn api(&self, namespace: &str) -> Api<StoredFile> {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub(super) fn check_namespace(&self, namespace: &str) -> Result<(), CatalogError> {
        match &self.namespace {
            Some(watched) if watched != namespace => Err(CatalogError::Invalid(format!(
                "namespace '{namespace}' is not managed by this operator (it manages '{watched}')"
            ))),
            _ => Ok(()),
        }
    }

    /// The StoredFile whose file name is `file_name`: by the documented mapping first, then
    /// (for resources created by hand with another name) the first by resource name.
    pub(super) fn find(
        &self,
        namespace: &str,
        file_name: &str,
    ) -> Option<std::sync::Arc<CachedFile>> {
        let mapped = resource_name(file_name);
        let mut resources = self.names.resources(namespace, file_name);
        // Stable: the mapped name first, the others in name order.
        resources.sort_by_key(|r| *r != mapped);
        resources
            .iter()
            .filter_map(|name| self.cached(namespace, name))
            .find(|sf| sf.file_name() == file_name)
    }

    /// A batch of a walk over every StoredFile ([`FileIndex::walk`]).
    pub fn walk(
        &self,
        after: Option<&WalkCursor>,
        limit: usize,
    ) -> (Vec<ResourceRef>, Option<WalkCursor>) {
        self.names.walk(after, limit)
    }

    /// How many StoredFiles are cached.
    pub fn file_count(&self) -> usize {
        self.names.len()
    }

    /// Every cached StoredFile of `namespace`.
    pub fn cached_in(&self, namespace: &str) -> Vec<std::sync::Arc<CachedFile>> {
        self.store
            .state()
            .into_iter()
            .filter(|sf| sf.namespace().as_deref() == Some(namespace))
            .collect()
    }

    pub(super) fn record(sf: &CachedFile) -> Result<FileRecord, CatalogError> {
        sf.record()
            .map_err(|e| CatalogError::Invalid(e.to_string()))
    }

    /// Tells long polls that `sf` changed (called for every event of the reflector).
    pub fn observed(&self, sf: &CachedFile) {
        if let (Some(ns), name) = (sf.namespace(), sf.name_any()) {
            if let Ok(key) = FileKey::new(&ns, &name) {
                self.changes.status_changed(&key);
            }
        }
    }
}

/// The completeness a list state gives.
fn completeness_of(state: &ListState) -> Result<(), String> {
    if let Some(err) = &state.error {
        return Err(format!("StoredFiles cannot be listed or watched: {err}"));
    }
    if !state.listed {
        return Err("StoredFiles not listed yet since the operator started".into());
    }
    if state.relisting {
        return Err("StoredFiles being listed again".into());
    }
    Ok(())
}

fn log_change(before: &Result<(), String>, after: &Result<(), String>) {
    match (before, after) {
        (Ok(()), Err(why)) => {
            warn!(reason = %why, "orphan collection paused: no copy is collected until every StoredFile is listed again");
        }
        (Err(_), Ok(())) => info!("every StoredFile listed: orphan collection active"),
        _ => {}
    }
}

#[async_trait]
impl Catalog for KubeCatalog {
    fn default_lifecycle(&self, namespace: &str) -> Option<Lifecycle> {
        self.namespace_default(namespace)
    }

    async fn get(&self, key: &FileKey) -> Result<Option<FileRecord>, CatalogError> {
        self.cached(&key.namespace, &key.name)
            .map(|sf| Self::record(&sf))
            .transpose()
    }

    async fn keys(&self) -> Result<Vec<FileKey>, CatalogError> {
        Ok(self
            .store
            .state()
            .iter()
            .filter_map(|sf| FileKey::new(&sf.namespace()?, &sf.name_any()).ok())
            .collect())
    }

    async fn publish(
        &self,
        record: &FileRecord,
        status: &ObservedStatus,
    ) -> Result<bool, CatalogError> {
        let Some(current) = self.cached(&record.key.namespace, &record.key.name) else {
            return Ok(false);
        };
        // A newer spec is already cached: its own reconcile publishes.
        if current.metadata.generation.unwrap_or(0).max(0) as u64 != record.generation {
            return Ok(false);
        }
        let Some(revision) = current.source_revision() else {
            return Ok(false);
        };
        let desired = status_of(
            record,
            revision,
            status,
            current.status().as_ref(),
            &super::record::now(),
        );
        if current.has_status(&desired) {
            return Ok(false);
        }
        let patch = serde_json::json!({
            "apiVersion": "deposito.io/v1alpha1",
            "kind": "StoredFile",
            "status": desired,
        });
        self.api(&record.key.namespace)
            .patch_status(
                &record.key.name,
                &PatchParams::apply(STATUS_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(catalog_error)?;
        Ok(true)
    }

    /// The finalizer, not the catalog, ends a deletion in kube mode: once the engine reports
    /// every copy gone, the controller's cleanup returns and the finalizer is removed.
    async fn finalize(&self, _record: &FileRecord) -> Result<bool, CatalogError> {
        Ok(true)
    }

    fn changes(&self) -> &Changes {
        &self.changes
    }

    async fn claim(&self, key: &FileKey) -> Claim {
        if !self.manages(&key.namespace) {
            return Claim::Unmanaged;
        }
        if let Err(why) = self.completeness() {
            return Claim::Unknown(why);
        }
        if self.cached(&key.namespace, &key.name).is_some() {
            return Claim::Claimed;
        }
        // The cache says nothing claims it: ask the API server itself before anything goes.
        match self.api(&key.namespace).get_opt(&key.name).await {
            Ok(Some(_)) => Claim::Claimed,
            Ok(None) => Claim::Unclaimed,
            Err(err) => Claim::Unknown(format!("reading StoredFile {}: {err}", key.name)),
        }
    }

    fn completeness(&self) -> Result<(), String> {
        completeness_of(&self.list_state())
    }

    async fn expire(&self, record: &FileRecord) -> Result<bool, CatalogError> {
        self.expire_file(record).await
    }

    /// The cache keeps no inline content ([`CachedFile`]): one read of the
    /// StoredFile itself, only when a copy is to be made from it.
    async fn inline_content(&self, key: &FileKey) -> Result<Vec<u8>, CatalogError> {
        let sf = self
            .api(&key.namespace)
            .get(&key.name)
            .await
            .map_err(catalog_error)?;
        sf.spec
            .source
            .inline
            .map(String::into_bytes)
            .ok_or_else(|| {
                CatalogError::Conflict(format!(
                    "StoredFile {} no longer has an inline source",
                    key.name
                ))
            })
    }
}

/// The gateway's reads and writes: reads from the reflector's cache, writes to the API server.
#[async_trait]
impl FileStore for KubeCatalog {
    async fn namespace_lifecycle(
        &self,
        namespace: &str,
    ) -> Result<Option<Lifecycle>, CatalogError> {
        self.read_namespace_default(namespace).await
    }

    async fn set_namespace_lifecycle(
        &self,
        namespace: &str,
        lifecycle: Option<Lifecycle>,
    ) -> Result<(), CatalogError> {
        self.write_namespace_default(namespace, lifecycle).await
    }

    async fn storage_key(&self, namespace: &str, file_name: &str) -> Result<FileKey, CatalogError> {
        self.check_namespace(namespace)?;
        let name = match self.find(namespace, file_name) {
            Some(sf) => sf.name_any(),
            None => resource_name(file_name),
        };
        FileKey::new(namespace, &name).map_err(|e| CatalogError::Invalid(e.to_string()))
    }

    async fn lookup(
        &self,
        namespace: &str,
        file_name: &str,
    ) -> Result<Option<FileRecord>, CatalogError> {
        self.check_namespace(namespace)?;
        self.find(namespace, file_name)
            .map(|sf| Self::record(&sf))
            .transpose()
    }

    async fn list(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<FileRecord>, bool), CatalogError> {
        self.check_namespace(namespace)?;
        let (page, more) = self.names.page(namespace, after, limit);
        page.iter()
            .filter_map(|(file_name, _)| self.find(namespace, file_name))
            .map(|sf| Self::record(&sf))
            .collect::<Result<Vec<_>, _>>()
            .map(|records| (records, more))
    }

    /// The first holder is not kept in the StoredFile: the reconcile that follows observes
    /// it on the replicas. The size and the content's attributes go into the
    /// [`super::content_attrs::CONTENT_ANNOTATION`], replaced with the content, so that the record has its size
    /// before the status does.
    async fn put(&self, deposit: Deposit) -> Result<FileRecord, CatalogError> {
        self.record_deposit(deposit).await
    }

    async fn set_replicas(
        &self,
        key: &FileKey,
        replicas: u32,
    ) -> Result<Option<FileRecord>, CatalogError> {
        self.check_namespace(&key.namespace)?;
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        self.merge_patch(key, &patch).await
    }

    async fn set_aging(
        &self,
        key: &FileKey,
        change: AgingChange,
    ) -> Result<Option<FileRecord>, CatalogError> {
        self.apply_aging(key, change).await
    }

    async fn mark_deleting(&self, key: &FileKey) -> Result<Option<FileRecord>, CatalogError> {
        self.check_namespace(&key.namespace)?;
        let Some(current) = self.cached(&key.namespace, &key.name) else {
            return Ok(None);
        };
        // The finalizer would hold the deletion anyway; a client is told at once.
        Self::record(&current)?.check_removable(crate::engine::now_ms())?;
        match self
            .api(&key.namespace)
            .delete(&key.name, &DeleteParams::default())
            .await
        {
            Ok(deleted) => {
                // Read-your-writes: a read right after the deletion sees it.
                match deleted.left() {
                    Some(sf) => self.catch_up(&CachedFile::from(sf)).await,
                    None => self.catch_up_gone(key).await,
                }
                let mut record = Self::record(&current)?;
                record.deleting = true;
                Ok(Some(record))
            }
            Err(err) if is_status(&err, 404) => Ok(None),
            Err(err) => Err(catalog_error(err)),
        }
    }

    /// Ready once the first list of StoredFiles has arrived.
    async fn ready(&self) -> Result<(), CatalogError> {
        match tokio::time::timeout(
            std::time::Duration::from_secs(1),
            self.store.wait_until_ready(),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(CatalogError::Unavailable(err.to_string())),
            Err(_) => Err(CatalogError::Unavailable(
                "StoredFiles are not listed yet".into(),
            )),
        }
    }
}

#[path = "catalog_catch_up.rs"]
mod catch_up;
