//! The operator's start and end in a cluster's life: at start, whether the installed
//! StoredFile CRD is the one this operator was built with; at shutdown, whether its namespace
//! is being deleted, in which case it releases the finalizers of the StoredFiles there.
//!
//! Namespace deletion: since Kubernetes 1.34 the namespace controller deletes a namespace's
//! pods first and nothing else until they are gone, so an operator pod stopping because its
//! namespace is deleted still has its ServiceAccount, its RBAC and every StoredFile. The
//! replicas' volumes (PVCs) go with the namespace, so there are no copies to keep: the operator
//! removes its finalizer from every StoredFile of the namespace (without deleting copies), and
//! the namespace's deletion completes instead of waiting forever on StoredFiles nobody will
//! finalize. StoredFiles of other namespaces (an operator that watches every namespace) keep
//! theirs: their copies live on and are removed the normal way.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use super::cached::CachedFile;
use super::catalog::KubeCatalog;
use super::crd::{StoredFile, CRD_REVISION, CRD_REVISION_ANNOTATION, FINALIZER};

/// What the installed CRD's revision says about this operator.
#[derive(Debug, PartialEq, Eq)]
pub enum CrdCheck {
    Current,
    /// Installed before this operator's (or before revisions were recorded: 0).
    Older(u32),
    Newer(u32),
}

/// Compares an installed CRD's revision annotation with [`CRD_REVISION`].
pub fn compare_revision(annotation: Option<&str>) -> CrdCheck {
    let installed = annotation.and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    match installed.cmp(&CRD_REVISION) {
        std::cmp::Ordering::Equal => CrdCheck::Current,
        std::cmp::Ordering::Less => CrdCheck::Older(installed),
        std::cmp::Ordering::Greater => CrdCheck::Newer(installed),
    }
}

/// Logs, at start, whether the installed StoredFile CRD matches this operator.
pub async fn check_crd(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "storedfiles.deposito.io";
    match api.get_opt(name).await {
        Ok(Some(crd)) => {
            match compare_revision(crd.annotations().get(CRD_REVISION_ANNOTATION).map(String::as_str)) {
                CrdCheck::Current => info!(revision = CRD_REVISION, "the installed StoredFile CRD is current"),
                CrdCheck::Older(installed) => warn!(
                    installed, expected = CRD_REVISION,
                    "the installed StoredFile CRD is OLDER than this operator's: `helm upgrade` never updates crds/. \
                     Apply it first: kubectl apply --server-side --force-conflicts -f charts/deposito/crds/ \
                     (docs/operations.md, Upgrading). New fields and rules are missing until then"
                ),
                CrdCheck::Newer(installed) => warn!(
                    installed, expected = CRD_REVISION,
                    "the installed StoredFile CRD is newer than this operator's: an older operator runs against a newer CRD"
                ),
            }
        }
        Ok(None) => warn!("the StoredFile CRD is not installed: kubectl apply --server-side -f charts/deposito/crds/"),
        Err(err) => info!(%err, "cannot read the StoredFile CRD to compare its revision (RBAC: get customresourcedefinitions/{name})"),
    }
}

/// Whether `namespace` is being deleted. Unknown (no access, API down) counts as no.
async fn terminating(client: &Client, namespace: &str) -> bool {
    let api: Api<Namespace> = Api::all(client.clone());
    match api.get_opt(namespace).await {
        Ok(Some(ns)) => ns.metadata.deletion_timestamp.is_some(),
        Ok(None) => true,
        Err(err) => {
            info!(%err, %namespace, "cannot read the namespace at shutdown: StoredFiles keep their finalizers");
            false
        }
    }
}

/// Removes [`FINALIZER`] from `sf` (a JSON patch that tests the entry first, as kube-rs's
/// `finalizer()` does, so another controller's finalizer is never dropped).
async fn release(api: &Api<StoredFile>, sf: &CachedFile) -> Result<(), kube::Error> {
    let Some(index) = sf.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        { "op": "test", "path": path, "value": FINALIZER },
        { "op": "remove", "path": path },
    ]))
    .expect("a well-formed JSON patch");
    api.patch(
        &sf.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await
    .map(|_| ())
}

/// At shutdown: when `namespace` (the replicas' namespace) is being deleted, releases every
/// StoredFile of it that this operator manages, without deleting copies (their volumes go
/// with the namespace). Returns how many were released.
pub async fn release_if_namespace_deleted(
    client: &Client,
    catalog: &KubeCatalog,
    namespace: &str,
) -> usize {
    if !catalog.manages(namespace) || !terminating(client, namespace).await {
        return 0;
    }
    let api: Api<StoredFile> = Api::namespaced(client.clone(), namespace);
    let files = catalog.cached_in(namespace);
    warn!(%namespace, files = files.len(), "namespace being deleted: releasing its StoredFiles' finalizers (the replicas' volumes go with it)");
    let results: Vec<bool> = futures::stream::iter(files)
        .map(|sf| {
            let api = api.clone();
            async move {
                match release(&api, &sf).await {
                    Ok(()) => true,
                    Err(err) => {
                        warn!(file = %sf.name_any(), %err, "could not release the finalizer");
                        false
                    }
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().filter(|ok| *ok).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_compare() {
        assert_eq!(
            compare_revision(Some(&CRD_REVISION.to_string())),
            CrdCheck::Current
        );
        assert_eq!(compare_revision(None), CrdCheck::Older(0));
        assert_eq!(compare_revision(Some("junk")), CrdCheck::Older(0));
        assert_eq!(
            compare_revision(Some(&(CRD_REVISION + 1).to_string())),
            CrdCheck::Newer(CRD_REVISION + 1)
        );
    }
}
