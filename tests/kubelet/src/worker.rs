//! One pod: its containers, its status, its deletion.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;
use tokio::sync::{watch, Notify};

use crate::env::PodFacts;
use crate::status::{build_status, ContainerSnap, PodView};
use crate::volumes::Pass;
use crate::{container, hosts, volumes, Ctx};

/// Longest grace period honoured on deletion.
pub const MAX_GRACE: Duration = Duration::from_secs(10);

/// State shared by the tasks of one pod.
pub struct PodCtx {
    pub ctx: Arc<Ctx>,
    pub uid: String,
    pub ns: String,
    pub name: String,
    pub facts: PodFacts,
    pod: Mutex<Pod>,
    snaps: Mutex<Vec<ContainerSnap>>,
    pub changed: Notify,
    volumes: tokio::sync::Mutex<Option<HashMap<String, PathBuf>>>,
    kubeconfig: tokio::sync::Mutex<Option<Option<PathBuf>>>,
    /// Held while the hosts file is written (container starts and the refresher both do).
    hosts_lock: Mutex<()>,
    /// The last refresh error logged, so a lasting one is logged once.
    refresh_error: Mutex<Option<String>>,
    /// Some(grace) once the pod is stopping.
    pub stop: watch::Receiver<Option<Duration>>,
}

impl PodCtx {
    pub fn pod(&self) -> Pod {
        self.pod.lock().expect("pod worker state lock").clone()
    }

    pub fn snap(&self, idx: usize) -> Option<ContainerSnap> {
        self.snaps
            .lock()
            .expect("pod worker state lock")
            .get(idx)
            .cloned()
    }

    fn snaps(&self) -> Vec<ContainerSnap> {
        self.snaps.lock().expect("pod worker state lock").clone()
    }

    /// Change a container's snapshot and wake the status writer.
    pub fn update(&self, idx: usize, f: impl FnOnce(&mut ContainerSnap)) {
        if let Some(s) = self
            .snaps
            .lock()
            .expect("pod worker state lock")
            .get_mut(idx)
        {
            f(s);
        }
        self.changed.notify_one();
    }

    /// Volumes, prepared once (refreshed by the worker).
    pub async fn ensure_volumes(&self) -> Result<HashMap<String, PathBuf>> {
        let mut g = self.volumes.lock().await;
        if let Some(v) = &*g {
            return Ok(v.clone());
        }
        let v = volumes::prepare(&self.ctx, &self.pod(), &self.uid, &self.facts).await?;
        *g = Some(v.clone());
        Ok(v)
    }

    /// The kubeconfig for the pod's processes, unless automount is disabled.
    pub async fn ensure_kubeconfig(&self) -> Result<Option<PathBuf>> {
        let mut g = self.kubeconfig.lock().await;
        if let Some(k) = &*g {
            return Ok(k.clone());
        }
        let pod = self.pod();
        let disabled = pod
            .spec
            .as_ref()
            .and_then(|s| s.automount_service_account_token)
            == Some(false);
        let k = if disabled {
            None
        } else {
            Some(volumes::write_kubeconfig(&self.ctx, &pod, &self.uid).await?)
        };
        *g = Some(k.clone());
        Ok(k)
    }

    /// Whether every container is done (the pod is Succeeded or Failed).
    fn finished(&self) -> bool {
        let snaps = self.snaps.lock().expect("pod worker state lock");
        !snaps.is_empty() && snaps.iter().all(|s| s.done)
    }

    /// The pod's hosts file on the host (bind-mounted over each container's `/etc/hosts`).
    pub fn hosts_path(&self) -> PathBuf {
        volumes::pod_dir(&self.ctx, &self.uid).join("etc-hosts")
    }

    /// Render the hosts file from the cluster's Services, Pods and EndpointSlices and write it
    /// if it changed (in place: running containers have it bind-mounted). Returns its path.
    pub async fn write_hosts(&self) -> Result<PathBuf> {
        // Right after a kubelet start, give the first lists a moment to arrive.
        let _ =
            tokio::time::timeout(Duration::from_secs(5), self.ctx.hosts.wait_until_ready()).await;
        let facts = hosts::PodHosts::of(&self.pod(), &self.facts.pod_ip);
        let text = hosts::render(&facts, &self.ctx.hosts.services());
        let path = self.hosts_path();
        let _g = self.hosts_lock.lock().expect("hosts file lock");
        if hosts::write_in_place(&path, text.as_bytes())? {
            tracing::debug!(pod = %self.name, "hosts file written");
        }
        Ok(path)
    }

    /// Re-write the secret/configMap/projected/downwardAPI volume contents and, in a full
    /// pass, re-request the service-account tokens.
    async fn refresh(&self, pass: Pass) {
        if self.volumes.lock().await.is_none() {
            return;
        }
        let mut res = volumes::refresh(&self.ctx, &self.pod(), &self.uid, &self.facts, pass).await;
        if pass == Pass::Full && matches!(&*self.kubeconfig.lock().await, Some(Some(_))) {
            if let Err(e) = volumes::write_kubeconfig(&self.ctx, &self.pod(), &self.uid).await {
                res = Err(e.context("refreshing kubeconfig token"));
            }
        }
        let msg = res.err().map(|e| format!("{e:#}"));
        let mut last = self.refresh_error.lock().expect("pod worker state lock");
        if msg != *last {
            match &msg {
                Some(m) => tracing::warn!(pod = %self.name, error = %m, "refreshing volumes"),
                None => tracing::info!(pod = %self.name, "refreshing volumes works again"),
            }
            *last = msg;
        }
    }
}

/// While the pod runs: re-render the hosts file every [`hosts::HOSTS_REFRESH`], re-read
/// Secret/ConfigMap volume contents every [`volumes::CONTENTS_REFRESH`] and request new
/// tokens every [`volumes::TOKEN_REFRESH`]. Stops with the pod; idle once it has finished.
async fn refresher(pc: Arc<PodCtx>) {
    use tokio::time::{interval_at, Instant, MissedTickBehavior};
    let mut stop = pc.stop.clone();
    let start = Instant::now();
    let every = |d: Duration| {
        let mut i = interval_at(start + d, d);
        i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        i
    };
    let (mut hosts_tick, mut contents_tick, mut tokens_tick) = (
        every(hosts::HOSTS_REFRESH),
        every(volumes::CONTENTS_REFRESH),
        every(volumes::TOKEN_REFRESH),
    );
    loop {
        if stop.borrow().is_some() {
            return;
        }
        tokio::select! {
            r = stop.changed() => if r.is_err() { return },
            _ = hosts_tick.tick() => {
                // Only once a container start has written it.
                if !pc.finished() && pc.hosts_path().exists() {
                    if let Err(e) = pc.write_hosts().await {
                        tracing::warn!(pod = %pc.name, error = %e, "refreshing hosts file");
                    }
                }
            }
            _ = contents_tick.tick() => if !pc.finished() { pc.refresh(Pass::Contents).await },
            _ = tokens_tick.tick() => if !pc.finished() { pc.refresh(Pass::Full).await },
        }
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Writes pods/status when it changes.
struct StatusWriter {
    api: Api<Pod>,
    last: Option<PodStatus>,
    start_time: Time,
    init_count: usize,
}

impl StatusWriter {
    async fn sync(&mut self, pc: &PodCtx) {
        let view = PodView {
            pod_ip: pc.facts.pod_ip.clone(),
            host_ip: pc.facts.host_ip.clone(),
            start_time: self.start_time.clone(),
            containers: pc.snaps(),
            init_count: self.init_count,
        };
        let prev = self
            .last
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let status = build_status(&view, &prev, &now());
        if self.last.as_ref() == Some(&status) {
            return;
        }
        let patch = json!({ "metadata": { "uid": pc.uid }, "status": status });
        match self
            .api
            .patch_status(&pc.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::debug!(pod = %pc.name, phase = ?status.phase, "status written");
                self.last = Some(status);
            }
            Err(e) => tracing::warn!(pod = %pc.name, error = %e, "writing pod status"),
        }
    }
}

fn grace_of(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
        .max(0) as u64;
    Duration::from_secs(secs).min(MAX_GRACE)
}

/// Remove pod-scoped state (not PVC data) and release the IP.
pub fn cleanup(ctx: &Ctx, uid: &str) {
    let dir = volumes::pod_dir(ctx, uid);
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(uid, error = %e, "removing pod directory");
        }
    }
    ctx.ipam.lock().expect("pod worker state lock").release(uid);
}

/// Delete the Pod object for good (grace 0, this UID only).
pub async fn force_delete(ctx: &Ctx, ns: &str, name: &str, uid: &str) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "pod deleted"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %name, error = %e, "deleting pod"),
    }
}

/// Run a pod until it is deleted or vanishes. `updates` carries new versions of the Pod
/// object, or None when it is gone.
pub async fn run(ctx: Arc<Ctx>, pod: Pod, mut updates: watch::Receiver<Option<Pod>>) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let allocated = if host_network {
        Ok(std::net::Ipv4Addr::LOCALHOST)
    } else {
        ctx.ipam
            .lock()
            .expect("pod worker state lock")
            .allocate(&uid)
    };
    let ip = match allocated {
        Ok(ip) => ip,
        Err(e) => {
            tracing::error!(pod = %name, error = %e, "no pod IP");
            return;
        }
    };
    tracing::info!(pod = %format!("{ns}/{name}"), %uid, %ip, "starting pod");
    let facts = PodFacts {
        pod_ip: ip.to_string(),
        host_ip: "127.0.0.1".into(),
        // The node the pod is bound to (one of ours); the downward API's spec.nodeName.
        node_name: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| ctx.nodes[0].name.clone()),
        api_host: ctx.cluster.host.clone(),
        api_port: ctx.cluster.port,
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let inits = spec.init_containers.clone().unwrap_or_default();
    let snaps = inits
        .iter()
        .map(|c| ContainerSnap::new(&c.name, c.image.as_deref().unwrap_or("")))
        .chain(spec.containers.iter().map(|c| {
            let mut s = ContainerSnap::new(&c.name, c.image.as_deref().unwrap_or(""));
            if !inits.is_empty() {
                s.state = crate::status::CState::waiting("PodInitializing");
            }
            s
        }))
        .collect();
    let (stop_tx, stop_rx) = watch::channel(None);
    let pc = Arc::new(PodCtx {
        ctx: ctx.clone(),
        uid: uid.clone(),
        ns: ns.clone(),
        name: name.clone(),
        facts,
        pod: Mutex::new(pod.clone()),
        snaps: Mutex::new(snaps),
        changed: Notify::new(),
        volumes: tokio::sync::Mutex::new(None),
        kubeconfig: tokio::sync::Mutex::new(None),
        hosts_lock: Mutex::new(()),
        refresh_error: Mutex::new(None),
        stop: stop_rx,
    });
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or_else(now);
    let mut writer = StatusWriter {
        api: Api::namespaced(ctx.client.clone(), &ns),
        last: None,
        start_time,
        init_count: inits.len(),
    };

    let tasks = vec![
        tokio::spawn(container::run_all(
            pc.clone(),
            inits,
            spec.containers.clone(),
            policy,
        )),
        tokio::spawn(refresher(pc.clone())),
    ];
    let deleted: bool = loop {
        writer.sync(&pc).await;
        tokio::select! {
            _ = pc.changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            r = updates.changed() => {
                let cur = if r.is_err() { None } else { updates.borrow_and_update().clone() };
                match cur {
                    None => {
                        tracing::info!(pod = %name, "pod object vanished; killing its processes");
                        let _ = stop_tx.send(Some(Duration::from_secs(2)));
                        break false;
                    }
                    Some(p) if p.metadata.deletion_timestamp.is_some() => {
                        let grace = grace_of(&p);
                        tracing::info!(pod = %name, grace_s = grace.as_secs(), "pod deleted; stopping");
                        let _ = stop_tx.send(Some(grace));
                        break true;
                    }
                    Some(p) => *pc.pod.lock().expect("pod worker state lock") = p,
                }
            }
        }
    };
    for t in tasks {
        let _ = t.await;
    }
    if deleted {
        writer.sync(&pc).await;
    }
    cleanup(&ctx, &uid);
    if deleted {
        force_delete(&ctx, &ns, &name, &uid).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use kube::api::ObjectMeta;

    #[test]
    fn grace_is_capped() {
        let mut p = Pod {
            spec: Some(PodSpec::default()),
            ..Default::default()
        };
        assert_eq!(grace_of(&p), MAX_GRACE);
        p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(3);
        assert_eq!(grace_of(&p), Duration::from_secs(3));
        p.metadata = ObjectMeta {
            deletion_grace_period_seconds: Some(0),
            ..Default::default()
        };
        assert_eq!(grace_of(&p), Duration::ZERO);
    }
}
