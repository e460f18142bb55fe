//! Pod volumes on the host, service-account tokens and the per-pod kubeconfig.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
/// How often the contents of secret, configMap, projected and downwardAPI volumes are
/// re-read while the pod runs (the real kubelet takes up to about a minute).
pub const CONTENTS_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

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

/// An item path, checked not to escape the volume directory.
fn safe_rel(rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty()
        || p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(anyhow!("bad item path {rel:?}"));
    }
    Ok(p.to_path_buf())
}

/// What a pass over a pod's volumes writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Everything, new service-account tokens included: when the pod starts, then every
    /// [`TOKEN_REFRESH`].
    Full,
    /// Secret, ConfigMap and downward API contents only (every [`CONTENTS_REFRESH`]); the
    /// token files stay as they are.
    Contents,
}

/// The files of a volume the kubelet writes (secret, configMap, projected, downwardAPI).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Relative path → content.
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    /// Relative paths left as they are (token files in a [`Pass::Contents`]).
    pub keep: BTreeSet<PathBuf>,
}

impl Payload {
    fn add(&mut self, rel: &str, data: Vec<u8>) -> Result<()> {
        self.files.insert(safe_rel(rel)?, data);
        Ok(())
    }

    /// The keys of a Secret or ConfigMap, or only the listed `items` (under their paths).
    fn add_items(
        &mut self,
        data: &BTreeMap<String, Vec<u8>>,
        items: Option<&Vec<KeyToPath>>,
    ) -> Result<()> {
        match items {
            Some(items) if !items.is_empty() => {
                for it in items {
                    let v = data
                        .get(&it.key)
                        .ok_or_else(|| anyhow!("key {} not found", it.key))?;
                    self.add(&it.path, v.clone())?;
                }
            }
            _ => {
                for (k, v) in data {
                    self.add(k, v.clone())?;
                }
            }
        }
        Ok(())
    }
}

/// Relative paths of everything but directories under `dir` (symbolic links not followed).
fn list_files(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir.join(rel))? {
        let e = e?;
        let r = rel.join(e.file_name());
        if e.file_type()?.is_dir() {
            list_files(dir, &r, out)?;
        } else {
            out.push(r);
        }
    }
    Ok(())
}

/// Make `dir` hold exactly `payload`: files that are not in it (nor kept) are removed, with
/// the directories they leave empty; each changed file is written to a temporary file in the
/// same directory and renamed over the old one, so a reader sees the old or the new content,
/// never a mix; unchanged files are not touched. Returns the number of files written or removed.
///
/// The volume directory itself is bind-mounted into the containers, so what happens inside it
/// is visible to them at once (a file bind-mounted through `subPath` keeps its old content, as
/// with the real kubelet).
pub fn sync_dir(dir: &Path, payload: &Payload) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut changes = 0;
    let mut present = Vec::new();
    list_files(dir, Path::new(""), &mut present)?;
    // Stale files first: a key that became a directory of another path needs the room.
    for rel in present {
        if payload.files.contains_key(&rel) || payload.keep.contains(&rel) {
            continue;
        }
        std::fs::remove_file(dir.join(&rel))?;
        changes += 1;
        for parent in rel.ancestors().skip(1) {
            if parent.as_os_str().is_empty() || std::fs::remove_dir(dir.join(parent)).is_err() {
                break;
            }
        }
    }
    for (rel, data) in &payload.files {
        let path = dir.join(rel);
        if std::fs::read(&path).is_ok_and(|cur| cur == *data) {
            continue;
        }
        write_atomic(&path, data)?;
        changes += 1;
    }
    Ok(changes)
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

/// The files of a projected volume.
async fn projected_payload(
    ctx: &Ctx,
    pod: &Pod,
    facts: &PodFacts,
    ns: &str,
    p: &ProjectedVolumeSource,
    pass: Pass,
) -> Result<Payload> {
    let mut out = Payload::default();
    for src in p.sources.iter().flatten() {
        add_projection(ctx, pod, facts, ns, &mut out, src, pass).await?;
    }
    Ok(out)
}

async fn add_projection(
    ctx: &Ctx,
    pod: &Pod,
    facts: &PodFacts,
    ns: &str,
    out: &mut Payload,
    src: &VolumeProjection,
    pass: Pass,
) -> Result<()> {
    if let Some(t) = &src.service_account_token {
        if pass == Pass::Full {
            let aud = t
                .audience
                .clone()
                .filter(|a| !a.is_empty())
                .map(|a| vec![a])
                .unwrap_or_default();
            let token =
                request_token(ctx, pod, aud, t.expiration_seconds.unwrap_or(TOKEN_SECONDS)).await?;
            out.add(&t.path, token.into_bytes())?;
        } else {
            out.keep.insert(safe_rel(&t.path)?);
        }
    }
    if let Some(c) = &src.config_map {
        match config_map_data(ctx, ns, &c.name).await? {
            Some(d) => out.add_items(&d, c.items.as_ref())?,
            None if c.optional.unwrap_or(false) => {}
            None => return Err(anyhow!("configmap {} not found", c.name)),
        }
    }
    if let Some(s) = &src.secret {
        match secret_data(ctx, ns, &s.name).await? {
            Some(d) => out.add_items(&d, s.items.as_ref())?,
            None if s.optional.unwrap_or(false) => {}
            None => return Err(anyhow!("secret {} not found", s.name)),
        }
    }
    if let Some(d) = &src.downward_api {
        for it in d.items.iter().flatten() {
            if let Some(f) = &it.field_ref {
                let v = field_ref(pod, &f.field_path, facts).map_err(|e| anyhow!(e))?;
                out.add(&it.path, v.into_bytes())?;
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

/// Prepare every volume of the pod on the host (a full pass, service-account tokens
/// included; also used to refresh them). Returns volume name → host directory.
pub async fn prepare(
    ctx: &Ctx,
    pod: &Pod,
    uid: &str,
    facts: &PodFacts,
) -> Result<HashMap<String, PathBuf>> {
    let mut out = HashMap::new();
    for v in pod_volumes(pod) {
        let dir = prepare_volume(ctx, pod, uid, facts, &v, Pass::Full)
            .await
            .with_context(|| format!("volume {}", v.name))?;
        out.insert(v.name.clone(), dir);
    }
    Ok(out)
}

/// Re-write the volumes the kubelet writes (secret, configMap, projected, downwardAPI) of a
/// prepared pod, as the real kubelet does while a pod runs: a Secret or ConfigMap change
/// (keys added, changed or removed) reaches the files within one refresh. A volume whose
/// refresh fails (its Secret was deleted, say) keeps its files; the error is returned, the
/// other volumes are still refreshed.
pub async fn refresh(ctx: &Ctx, pod: &Pod, uid: &str, facts: &PodFacts, pass: Pass) -> Result<()> {
    let mut errors = Vec::new();
    for v in pod_volumes(pod) {
        let written = v.secret.is_some()
            || v.config_map.is_some()
            || v.projected.is_some()
            || v.downward_api.is_some();
        if written {
            if let Err(e) = prepare_volume(ctx, pod, uid, facts, &v, pass).await {
                errors.push(format!("volume {}: {e:#}", v.name));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(errors.join("; ")))
    }
}

/// Prepare one volume on the host; returns its directory.
async fn prepare_volume(
    ctx: &Ctx,
    pod: &Pod,
    uid: &str,
    facts: &PodFacts,
    v: &Volume,
    pass: Pass,
) -> Result<PathBuf> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let base = pod_dir(ctx, uid);
    let written = if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let mut p = Payload::default();
        match secret_data(ctx, &ns, &name).await? {
            Some(d) => p.add_items(&d, s.items.as_ref())?,
            // An optional Secret that does not exist (any more): an empty volume.
            None if s.optional.unwrap_or(false) => {}
            None => return Err(anyhow!("secret {name} not found")),
        }
        Some(("secret", p))
    } else if let Some(c) = &v.config_map {
        let mut p = Payload::default();
        match config_map_data(ctx, &ns, &c.name).await? {
            Some(d) => p.add_items(&d, c.items.as_ref())?,
            None if c.optional.unwrap_or(false) => {}
            None => return Err(anyhow!("configmap {} not found", c.name)),
        }
        Some(("configmap", p))
    } else if let Some(p) = &v.projected {
        Some((
            "projected",
            projected_payload(ctx, pod, facts, &ns, p, pass).await?,
        ))
    } else if let Some(d) = &v.downward_api {
        let p = ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                downward_api: Some(k8s_openapi::api::core::v1::DownwardAPIProjection {
                    items: d.items.clone(),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        Some((
            "downward",
            projected_payload(ctx, pod, facts, &ns, &p, pass).await?,
        ))
    } else {
        None
    };
    let dir = if let Some((kind, payload)) = written {
        let dir = base.join(kind).join(&v.name);
        let changes =
            sync_dir(&dir, &payload).with_context(|| format!("writing {}", dir.display()))?;
        if changes > 0 && pass == Pass::Contents {
            tracing::info!(
                volume = %v.name,
                pod = %format!("{ns}/{}", pod.metadata.name.as_deref().unwrap_or_default()),
                changes,
                "volume contents updated"
            );
        }
        dir
    } else if let Some(c) = &v.persistent_volume_claim {
        pvc_dir(ctx, &ns, &c.claim_name)
    } else if let Some(h) = &v.host_path {
        PathBuf::from(&h.path)
    } else {
        if v.empty_dir.is_none() {
            tracing::warn!(volume = %v.name, "unsupported volume type; using an empty directory");
        }
        base.join("empty").join(&v.name)
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
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

    fn tmp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kubelet-vol-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn data(kv: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn items_written() {
        let dir = tmp_dir("items");
        let data = data(&[("a", "1"), ("b", "2")]);
        let mut p = Payload::default();
        p.add_items(&data, None).unwrap();
        sync_dir(&dir, &p).unwrap();
        assert_eq!(std::fs::read(dir.join("b")).unwrap(), b"2");
        let items = vec![KeyToPath {
            key: "a".into(),
            path: "sub/x".into(),
            mode: None,
        }];
        let mut p = Payload::default();
        p.add_items(&data, Some(&items)).unwrap();
        sync_dir(&dir, &p).unwrap();
        assert_eq!(std::fs::read(dir.join("sub/x")).unwrap(), b"1");
        // Only the listed item is left.
        assert!(!dir.join("a").exists() && !dir.join("b").exists());
        for bad in ["../x", "/etc/x", ""] {
            let items = vec![KeyToPath {
                key: "a".into(),
                path: bad.into(),
                mode: None,
            }];
            assert!(Payload::default().add_items(&data, Some(&items)).is_err());
        }
        let missing = vec![KeyToPath {
            key: "nope".into(),
            path: "x".into(),
            mode: None,
        }];
        assert!(Payload::default().add_items(&data, Some(&missing)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sync_updates_changed_removes_stale_keeps_unchanged() {
        use std::os::unix::fs::MetadataExt;
        let dir = tmp_dir("sync");
        let mut p = Payload::default();
        p.add_items(
            &data(&[("same", "s"), ("changed", "old"), ("gone", "g")]),
            None,
        )
        .unwrap();
        p.add("deep/er/file", b"d".to_vec()).unwrap();
        assert_eq!(sync_dir(&dir, &p).unwrap(), 4);
        let same_ino = std::fs::metadata(dir.join("same")).unwrap().ino();
        // Nothing changed: nothing written.
        assert_eq!(sync_dir(&dir, &p).unwrap(), 0);

        let mut p2 = Payload::default();
        p2.add_items(
            &data(&[("same", "s"), ("changed", "new"), ("added", "a")]),
            None,
        )
        .unwrap();
        p2.keep.insert(PathBuf::from("token"));
        std::fs::write(dir.join("token"), "t").unwrap();
        // changed, added written; gone, deep/er/file removed.
        assert_eq!(sync_dir(&dir, &p2).unwrap(), 4);
        assert_eq!(std::fs::read(dir.join("changed")).unwrap(), b"new");
        assert_eq!(std::fs::read(dir.join("added")).unwrap(), b"a");
        assert_eq!(std::fs::read(dir.join("token")).unwrap(), b"t");
        assert!(!dir.join("gone").exists());
        // The directories the removed file left empty go too.
        assert!(!dir.join("deep").exists());
        assert_eq!(std::fs::metadata(dir.join("same")).unwrap().ino(), same_ino);
        // No temporary file left behind.
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["added", "changed", "same", "token"]);

        // A file that turns into a directory.
        let mut p3 = Payload::default();
        p3.add("same/inner", b"i".to_vec()).unwrap();
        sync_dir(&dir, &p3).unwrap();
        assert_eq!(std::fs::read(dir.join("same/inner")).unwrap(), b"i");
        // An empty payload (optional Secret deleted) empties the volume.
        sync_dir(&dir, &Payload::default()).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
