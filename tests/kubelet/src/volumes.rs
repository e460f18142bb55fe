//! Pod volumes on the host, service-account tokens and the per-pod kubeconfig.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, KeyToPath, Pod, ProjectedVolumeSource, Secret, ServiceAccount, Volume,
    VolumeProjection,
};
use kube::api::{Api, PostParams};

use crate::env::{field_ref, PodFacts};
use crate::Ctx;

/// Where Kubernetes puts the service-account credentials inside a container.
pub const SA_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Name of the volume added when the API server did not inject one.
pub const SA_VOLUME: &str = "kube-api-access-kubelet";
/// Lifetime asked for tokens; they are refreshed every `TOKEN_REFRESH`.
pub const TOKEN_SECONDS: i64 = 3600;
pub const TOKEN_REFRESH: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Pod-scoped directory (deleted with the pod).
pub fn pod_dir(ctx: &Ctx, uid: &str) -> PathBuf {
    ctx.state_dir.join("pods").join(uid)
}

/// Persistent directory of a claim.
pub fn pvc_dir(ctx: &Ctx, ns: &str, claim: &str) -> PathBuf {
    ctx.state_dir.join("pvc").join(ns).join(claim)
}

/// Write a file atomically (temp + rename), creating parent directories.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// Reject item paths that would escape the volume directory.
fn safe_join(dir: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(anyhow!("bad item path {rel:?}"));
    }
    Ok(dir.join(p))
}

fn write_items(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                let v = data
                    .get(&it.key)
                    .ok_or_else(|| anyhow!("key {} not found", it.key))?;
                write_atomic(&safe_join(dir, &it.path)?, v)?;
            }
        }
        _ => {
            for (k, v) in data {
                write_atomic(&safe_join(dir, k)?, v)?;
            }
        }
    }
    Ok(())
}

/// Data of a Secret, or None if it does not exist.
pub async fn secret_data(
    ctx: &Ctx,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    Ok(api.get_opt(name).await?.map(|s| {
        let mut d: BTreeMap<String, Vec<u8>> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        for (k, v) in s.string_data.unwrap_or_default() {
            d.insert(k, v.into_bytes());
        }
        d
    }))
}

/// Data of a ConfigMap, or None if it does not exist.
pub async fn config_map_data(
    ctx: &Ctx,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let cm = api.get_opt(name).await?;
    if cm.is_none() && name == "kube-root-ca.crt" {
        // Not published yet: use the CA of the admin kubeconfig.
        return Ok(ctx
            .cluster
            .ca_pem
            .clone()
            .map(|ca| [("ca.crt".to_string(), ca)].into()));
    }
    Ok(cm.map(|c| {
        let mut d: BTreeMap<String, Vec<u8>> = c
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        for (k, v) in c.binary_data.unwrap_or_default() {
            d.insert(k, v.0);
        }
        d
    }))
}

/// A token for the pod's service account, bound to the pod.
pub async fn request_token(
    ctx: &Ctx,
    pod: &Pod,
    audiences: Vec<String>,
    seconds: i64,
) -> Result<String> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let sa = service_account(pod);
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &ns);
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: (!audiences.is_empty()).then_some(audiences),
            expiration_seconds: Some(seconds.max(600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        }),
        ..Default::default()
    };
    let tr = api
        .create_token_request(&sa, &PostParams::default(), &req)
        .await
        .with_context(|| format!("token request for serviceaccount {ns}/{sa}"))?;
    tr.status
        .and_then(|s| s.token)
        .ok_or_else(|| anyhow!("token request returned no token"))
}

pub fn service_account(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// Write (or refresh) the kubeconfig the pod's processes use; returns its path.
pub async fn write_kubeconfig(ctx: &Ctx, pod: &Pod, uid: &str) -> Result<PathBuf> {
    let token = request_token(ctx, pod, vec![], TOKEN_SECONDS).await?;
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let path = pod_dir(ctx, uid).join("kubeconfig");
    write_atomic(&path, ctx.cluster.token_kubeconfig(&token, &ns).as_bytes())?;
    Ok(path)
}

/// The projected volume the ServiceAccount admission plugin normally injects.
pub fn default_sa_volume() -> Volume {
    let v: serde_json::Value = serde_json::json!({
        "name": SA_VOLUME,
        "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_SECONDS}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
        ]}
    });
    serde_json::from_value(v).expect("static volume")
}

async fn write_projected(
    ctx: &Ctx,
    pod: &Pod,
    facts: &PodFacts,
    dir: &Path,
    p: &ProjectedVolumeSource,
) -> Result<()> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    std::fs::create_dir_all(dir)?;
    for src in p.sources.iter().flatten() {
        write_projection(ctx, pod, facts, &ns, dir, src).await?;
    }
    Ok(())
}

async fn write_projection(
    ctx: &Ctx,
    pod: &Pod,
    facts: &PodFacts,
    ns: &str,
    dir: &Path,
    src: &VolumeProjection,
) -> Result<()> {
    if let Some(t) = &src.service_account_token {
        let aud = t
            .audience
            .clone()
            .filter(|a| !a.is_empty())
            .map(|a| vec![a])
            .unwrap_or_default();
        let token =
            request_token(ctx, pod, aud, t.expiration_seconds.unwrap_or(TOKEN_SECONDS)).await?;
        write_atomic(&safe_join(dir, &t.path)?, token.as_bytes())?;
    }
    if let Some(c) = &src.config_map {
        match config_map_data(ctx, ns, &c.name).await? {
            Some(d) => write_items(dir, &d, c.items.as_ref())?,
            None if c.optional.unwrap_or(false) => {}
            None => return Err(anyhow!("configmap {} not found", c.name)),
        }
    }
    if let Some(s) = &src.secret {
        match secret_data(ctx, ns, &s.name).await? {
            Some(d) => write_items(dir, &d, s.items.as_ref())?,
            None if s.optional.unwrap_or(false) => {}
            None => return Err(anyhow!("secret {} not found", s.name)),
        }
    }
    if let Some(d) = &src.downward_api {
        for it in d.items.iter().flatten() {
            if let Some(f) = &it.field_ref {
                let v = field_ref(pod, &f.field_path, facts).map_err(|e| anyhow!(e))?;
                write_atomic(&safe_join(dir, &it.path)?, v.as_bytes())?;
            }
        }
    }
    Ok(())
}

/// The volumes of a pod, including the service-account volume added when needed.
pub fn pod_volumes(pod: &Pod) -> Vec<Volume> {
    let mut vols = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    if needs_sa_volume(pod) {
        vols.push(default_sa_volume());
    }
    vols
}

/// True when automount is not disabled and no container mounts something at `SA_MOUNT`.
pub fn needs_sa_volume(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    if spec.automount_service_account_token == Some(false) {
        return false;
    }
    !spec.containers.iter().any(|c| {
        c.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path.trim_end_matches('/') == SA_MOUNT)
    })
}

/// Prepare every volume of the pod on the host (idempotent, also used to refresh tokens and
/// secret contents). Returns volume name → host directory.
pub async fn prepare(
    ctx: &Ctx,
    pod: &Pod,
    uid: &str,
    facts: &PodFacts,
) -> Result<HashMap<String, PathBuf>> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let base = pod_dir(ctx, uid);
    let mut out = HashMap::new();
    for v in pod_volumes(pod) {
        let dir = if let Some(c) = &v.persistent_volume_claim {
            pvc_dir(ctx, &ns, &c.claim_name)
        } else if let Some(h) = &v.host_path {
            PathBuf::from(&h.path)
        } else if let Some(s) = &v.secret {
            let dir = base.join("secret").join(&v.name);
            let name = s.secret_name.clone().unwrap_or_default();
            match secret_data(ctx, &ns, &name).await? {
                Some(d) => write_items(&dir, &d, s.items.as_ref())?,
                None if s.optional.unwrap_or(false) => std::fs::create_dir_all(&dir)?,
                None => return Err(anyhow!("secret {name} not found")),
            }
            dir
        } else if let Some(c) = &v.config_map {
            let dir = base.join("configmap").join(&v.name);
            match config_map_data(ctx, &ns, &c.name).await? {
                Some(d) => write_items(&dir, &d, c.items.as_ref())?,
                None if c.optional.unwrap_or(false) => std::fs::create_dir_all(&dir)?,
                None => return Err(anyhow!("configmap {} not found", c.name)),
            }
            dir
        } else if let Some(p) = &v.projected {
            let dir = base.join("projected").join(&v.name);
            write_projected(ctx, pod, facts, &dir, p).await?;
            dir
        } else if let Some(d) = &v.downward_api {
            let dir = base.join("downward").join(&v.name);
            let p = ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    downward_api: Some(k8s_openapi::api::core::v1::DownwardAPIProjection {
                        items: d.items.clone(),
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            };
            write_projected(ctx, pod, facts, &dir, &p).await?;
            dir
        } else {
            if v.empty_dir.is_none() {
                tracing::warn!(volume = %v.name, "unsupported volume type; using an empty directory");
            }
            base.join("empty").join(&v.name)
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        out.insert(v.name.clone(), dir);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, VolumeMount};

    #[test]
    fn sa_volume_rules() {
        let mut pod = Pod {
            spec: Some(PodSpec {
                containers: vec![Container::default()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(needs_sa_volume(&pod));
        assert_eq!(pod_volumes(&pod).len(), 1);
        assert!(pod_volumes(&pod)[0].projected.is_some());
        pod.spec.as_mut().unwrap().containers[0].volume_mounts = Some(vec![VolumeMount {
            name: "x".into(),
            mount_path: SA_MOUNT.into(),
            ..Default::default()
        }]);
        assert!(!needs_sa_volume(&pod));
        pod.spec.as_mut().unwrap().containers[0].volume_mounts = None;
        pod.spec.as_mut().unwrap().automount_service_account_token = Some(false);
        assert!(!needs_sa_volume(&pod));
    }

    #[test]
    fn items_written() {
        let dir = std::env::temp_dir().join(format!("kubelet-vol-{}", std::process::id()));
        let data: BTreeMap<String, Vec<u8>> = [
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]
        .into();
        write_items(&dir, &data, None).unwrap();
        assert_eq!(std::fs::read(dir.join("b")).unwrap(), b"2");
        let items = vec![KeyToPath {
            key: "a".into(),
            path: "sub/x".into(),
            mode: None,
        }];
        write_items(&dir, &data, Some(&items)).unwrap();
        assert_eq!(std::fs::read(dir.join("sub/x")).unwrap(), b"1");
        let bad = vec![KeyToPath {
            key: "a".into(),
            path: "../x".into(),
            mode: None,
        }];
        assert!(write_items(&dir, &data, Some(&bad)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
