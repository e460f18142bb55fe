//! Namespace defaults in kube mode: the lifecycle a namespace gives its StoredFiles without
//! a `spec.lifecycle` is the key `lifecycle` (the CLI's spec, `1@7d,expire@90d`) of the
//! namespace's ConfigMap `deposito-bucket` (the one that also declares an S3 bucket). An
//! administrator may write it with kubectl; the gateway writes it for `deposito
//! namespace-lifecycle` and S3's PutBucketLifecycleConfiguration.
//!
//! The operator watches those ConfigMaps (by name) into a reflector, so the engine reads a
//! default from memory at every reconcile; a change queues every file of the namespace, so
//! that each one's next transition is computed again at once.

use deposito_api::lifecycle::Lifecycle;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tracing::warn;

use super::cached::CachedFile;
use super::catalog::{catalog_error, is_status, KubeCatalog};
use super::s3_store::{bucket_configmap, configmaps, BUCKET_CONFIGMAP};
use super::workers::Watch;
use crate::engine::{now_ms, CatalogError};

/// The key of the default lifecycle in a namespace's ConfigMap.
pub const LIFECYCLE_KEY: &str = "lifecycle";

/// The default lifecycle a namespace's ConfigMap names; `None` when it names none or one
/// that does not parse (logged where the ConfigMap is watched).
pub fn lifecycle_of(cm: &ConfigMap) -> Option<Lifecycle> {
    Lifecycle::parse(cm.data.as_ref()?.get(LIFECYCLE_KEY)?).ok()
}

/// The reflector of the namespaces' ConfigMaps and its watch, which queues every file of a
/// namespace whose ConfigMap changed or went on `to_controller`.
pub fn watch(
    client: &Client,
    watched: Option<&str>,
    to_controller: mpsc::UnboundedSender<ObjectRef<CachedFile>>,
    catalog: std::sync::Arc<KubeCatalog>,
) -> (Store<ConfigMap>, Watch<Result<ConfigMap, watcher::Error>>) {
    let api: Api<ConfigMap> = match watched {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().fields(&format!("metadata.name={BUCKET_CONFIGMAP}"));
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff())
        .touched_objects()
        .boxed();
    let on_item = move |item: Result<ConfigMap, watcher::Error>| match item {
        Ok(cm) => {
            let namespace = cm.namespace().unwrap_or_default();
            if let Some(spec) = cm.data.as_ref().and_then(|d| d.get(LIFECYCLE_KEY)) {
                if let Err(err) = Lifecycle::parse(spec) {
                    warn!(%namespace, %err, "the namespace's default lifecycle is ignored");
                }
            }
            for sf in catalog.cached_in(&namespace) {
                let _ = to_controller.send(ObjectRef::from_obj(&*sf));
            }
        }
        Err(err) => warn!(%err, "watching the namespaces' ConfigMaps"),
    };
    (
        reader,
        Watch::new("namespace-settings-watch", stream, on_item),
    )
}

impl KubeCatalog {
    /// The default lifecycle of `namespace`, from the watched ConfigMaps.
    pub(super) fn namespace_default(&self, namespace: &str) -> Option<Lifecycle> {
        let settings = self.settings()?;
        let cm = settings.get(&ObjectRef::new(BUCKET_CONFIGMAP).within(namespace))?;
        lifecycle_of(&cm)
    }

    /// The default lifecycle of `namespace` as the API server has it now (read your
    /// writes: the gateway answers with what it just wrote, before the watch sees it).
    pub(super) async fn read_namespace_default(
        &self,
        namespace: &str,
    ) -> Result<Option<Lifecycle>, CatalogError> {
        self.check_namespace(namespace)?;
        let cm = configmaps(self, namespace)
            .get_opt(BUCKET_CONFIGMAP)
            .await
            .map_err(catalog_error)?;
        Ok(cm.as_ref().and_then(lifecycle_of))
    }

    /// Writes (`None`: removes) the default lifecycle of `namespace` in its ConfigMap,
    /// creating the ConfigMap when there is none.
    pub(super) async fn write_namespace_default(
        &self,
        namespace: &str,
        lifecycle: Option<Lifecycle>,
    ) -> Result<(), CatalogError> {
        self.check_namespace(namespace)?;
        let api = configmaps(self, namespace);
        let spec = lifecycle.as_ref().map(ToString::to_string);
        let patch = serde_json::json!({ "data": { LIFECYCLE_KEY: spec } });
        let params = PatchParams::default();
        match api
            .patch(BUCKET_CONFIGMAP, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if is_status(&err, 404) && spec.is_none() => Ok(()),
            Err(err) if is_status(&err, 404) => {
                let mut cm = bucket_configmap(namespace, now_ms(), &Default::default());
                cm.data
                    .get_or_insert_with(Default::default)
                    .insert(LIFECYCLE_KEY.to_string(), spec.unwrap_or_default());
                match api.create(&PostParams::default(), &cm).await {
                    Ok(_) => Ok(()),
                    // Created meanwhile: set the key on it.
                    Err(err) if is_status(&err, 409) => api
                        .patch(BUCKET_CONFIGMAP, &params, &Patch::Merge(&patch))
                        .await
                        .map(|_| ())
                        .map_err(catalog_error),
                    Err(err) => Err(catalog_error(err)),
                }
            }
            Err(err) => Err(catalog_error(err)),
        }
    }
}
