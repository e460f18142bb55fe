//! The real node's local-path provisioner (`deposito-local-path`, started by
//! `tests/cluster/up --node real`): volume claims of the StorageClass [`CLASS`] are bound to
//! `local` PersistentVolumes, one folder per claim under a root folder of the node.
//!
//! The class binds `WaitForFirstConsumer`, so the scheduler picks the node first and writes it
//! into the claim (`volume.kubernetes.io/selected-node`); the provisioner then makes the folder
//! and a PersistentVolume pre-bound to the claim (claimRef with its uid), with node affinity to
//! that node. The kubelet mounts `local` volumes with `fsGroup` ownership applied, which a
//! `hostPath` volume would not get. A volume released by its claim (reclaim policy `Delete`) is
//! deleted with its folder. It polls the API server once a second: this is a test fixture for
//! one node, not a general provisioner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{
    LocalVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

/// Name of the StorageClass (the cluster's default class).
pub const CLASS: &str = "deposito-local";
/// The provisioner name in the class and in the volumes' `pv.kubernetes.io/provisioned-by`.
pub const PROVISIONER: &str = "deposito.test/local-path";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// The default StorageClass of the real node.
pub fn storage_class() -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(CLASS.into()),
            annotations: Some(BTreeMap::from([(
                "storageclass.kubernetes.io/is-default-class".to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..Default::default()
    }
}

/// The volume for `claim` on `node`, in `root`: `None` while the claim is not ours, is bound,
/// or has no node chosen yet.
pub fn volume_for(
    claim: &PersistentVolumeClaim,
    node: &str,
    root: &Path,
) -> Option<PersistentVolume> {
    let spec = claim.spec.as_ref()?;
    if spec.volume_name.as_deref().is_some_and(|v| !v.is_empty()) {
        return None;
    }
    if spec.storage_class_name.as_deref() != Some(CLASS) {
        return None;
    }
    let annotations = claim.metadata.annotations.as_ref()?;
    if annotations.get(SELECTED_NODE).map(String::as_str) != Some(node) {
        return None;
    }
    let uid = claim.metadata.uid.as_deref()?;
    let name = format!("pvc-{uid}");
    let storage = spec
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?
        .clone();
    Some(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.to_string(),
                PROVISIONER.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_string(), storage)])),
            access_modes: spec.access_modes.clone(),
            storage_class_name: Some(CLASS.into()),
            persistent_volume_reclaim_policy: Some("Delete".into()),
            volume_mode: spec.volume_mode.clone(),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.metadata.namespace.clone(),
                name: claim.metadata.name.clone(),
                uid: Some(uid.into()),
                ..Default::default()
            }),
            local: Some(LocalVolumeSource {
                path: root.join(&name).to_string_lossy().into_owned(),
                fs_type: None,
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![node.into()]),
                        }]),
                        ..Default::default()
                    }],
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The folder of one of our volumes that its claim released, to be deleted with the volume.
pub fn released_folder(pv: &PersistentVolume, root: &Path) -> Option<PathBuf> {
    let ours = pv
        .metadata
        .annotations
        .as_ref()?
        .get(PROVISIONED_BY)
        .map(String::as_str)
        == Some(PROVISIONER);
    let released = pv.status.as_ref()?.phase.as_deref() == Some("Released");
    let path = PathBuf::from(&pv.spec.as_ref()?.local.as_ref()?.path);
    // Only a folder directly in the root, named after the volume.
    let inside =
        path.parent() == Some(root) && path.file_name()?.to_str() == pv.metadata.name.as_deref();
    (ours && released && inside).then_some(path)
}

/// Runs the provisioner until the process is killed.
pub async fn run(client: Client, root: PathBuf, node: String) -> Result<()> {
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let classes: Api<StorageClass> = Api::all(client.clone());
    classes
        .patch(
            CLASS,
            &PatchParams::apply("deposito-local-path").force(),
            &Patch::Apply(storage_class()),
        )
        .await
        .context("applying the StorageClass")?;
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client);
    loop {
        if let Err(e) = pass(&claims, &volumes, &root, &node).await {
            tracing::warn!(error = %format!("{e:#}"), "local-path pass failed");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn pass(
    claims: &Api<PersistentVolumeClaim>,
    volumes: &Api<PersistentVolume>,
    root: &Path,
    node: &str,
) -> Result<()> {
    for claim in claims.list(&ListParams::default()).await?.items {
        let Some(pv) = volume_for(&claim, node, root) else {
            continue;
        };
        let name = pv.metadata.name.clone().unwrap_or_default();
        let folder = root.join(&name);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        match volumes.create(&PostParams::default(), &pv).await {
            Ok(_) => tracing::info!(volume = %name, claim = ?claim.metadata.name, "provisioned"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context("creating a PersistentVolume"),
        }
    }
    for pv in volumes.list(&ListParams::default()).await?.items {
        let Some(folder) = released_folder(&pv, root) else {
            continue;
        };
        std::fs::remove_dir_all(&folder)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .with_context(|| format!("removing {}", folder.display()))?;
        let name = pv.metadata.name.clone().unwrap_or_default();
        match volumes.delete(&name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(volume = %name, "deleted a released volume"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e).context("deleting a PersistentVolume"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimSpec, PersistentVolumeStatus, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn claim(class: &str, node: Option<&str>, bound: bool) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data-r-0".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                annotations: node
                    .map(|n| BTreeMap::from([(SELECTED_NODE.to_string(), n.to_string())])),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some(class.into()),
                volume_name: bound.then(|| "pv".to_string()),
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity("1Gi".into()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_claim_of_the_class_on_this_node_gets_a_prebound_local_volume() {
        let pv = volume_for(&claim(CLASS, Some("n1"), false), "n1", Path::new("/v")).unwrap();
        let spec = pv.spec.unwrap();
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-u1"));
        assert_eq!(spec.local.unwrap().path, "/v/pvc-u1");
        assert_eq!(spec.claim_ref.unwrap().uid.as_deref(), Some("u1"));
        assert_eq!(spec.capacity.unwrap()["storage"], Quantity("1Gi".into()));
        let term = &spec
            .node_affinity
            .unwrap()
            .required
            .unwrap()
            .node_selector_terms[0];
        assert_eq!(
            term.match_expressions.as_ref().unwrap()[0].values,
            Some(vec!["n1".to_string()])
        );
    }

    #[test]
    fn other_classes_bound_claims_and_claims_without_this_node_get_nothing() {
        let root = Path::new("/v");
        assert!(volume_for(&claim("other", Some("n1"), false), "n1", root).is_none());
        assert!(volume_for(&claim(CLASS, Some("n1"), true), "n1", root).is_none());
        assert!(volume_for(&claim(CLASS, None, false), "n1", root).is_none());
        assert!(volume_for(&claim(CLASS, Some("n2"), false), "n1", root).is_none());
    }

    #[test]
    fn only_our_released_volumes_folders_in_the_root_are_deleted() {
        let root = Path::new("/v");
        let mut pv = volume_for(&claim(CLASS, Some("n1"), false), "n1", root).unwrap();
        assert_eq!(released_folder(&pv, root), None, "not released yet");
        pv.status = Some(PersistentVolumeStatus {
            phase: Some("Released".into()),
            ..Default::default()
        });
        assert_eq!(released_folder(&pv, root), Some(PathBuf::from("/v/pvc-u1")));
        pv.spec.as_mut().unwrap().local.as_mut().unwrap().path = "/etc".into();
        assert_eq!(released_folder(&pv, root), None, "a path outside the root");
        pv.spec.as_mut().unwrap().local.as_mut().unwrap().path = "/v/pvc-u1".into();
        pv.metadata.annotations = None;
        assert_eq!(released_folder(&pv, root), None, "not provisioned by us");
    }
}
