//! Watches the pods bound to the served nodes and runs one worker per pod.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::{mpsc, watch};

use crate::{worker, Ctx};

fn uid_of(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn node_of(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// The field selector of the pod watch: the one node's pods, or every bound pod (filtered by
/// node name afterwards) when there are several.
pub fn pod_field_selector(nodes: &[crate::NodeSpec]) -> String {
    match nodes {
        [one] => format!("spec.nodeName={}", one.name),
        _ => "spec.nodeName!=".into(),
    }
}

fn is_terminal(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|ph| ph == "Succeeded" || ph == "Failed")
}

struct Manager {
    ctx: Arc<Ctx>,
    workers: HashMap<String, watch::Sender<Option<Pod>>>,
    finished: HashSet<String>,
    done_tx: mpsc::UnboundedSender<String>,
}

impl Manager {
    fn handle(&mut self, p: Pod) {
        let uid = uid_of(&p);
        if uid.is_empty() {
            return;
        }
        if let Some(tx) = self.workers.get(&uid) {
            let _ = tx.send(Some(p));
            return;
        }
        if p.metadata.deletion_timestamp.is_some() {
            // Nothing runs for it (finished, or from before a restart): just let it go.
            self.finished.insert(uid.clone());
            let ctx = self.ctx.clone();
            let ns = p
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let name = p.metadata.name.clone().unwrap_or_default();
            tokio::spawn(async move {
                worker::cleanup(&ctx, &uid);
                worker::force_delete(&ctx, &ns, &name, &uid).await;
            });
            return;
        }
        if self.finished.contains(&uid) || is_terminal(&p) {
            self.finished.insert(uid);
            return;
        }
        let (tx, rx) = watch::channel(Some(p.clone()));
        self.workers.insert(uid.clone(), tx);
        let ctx = self.ctx.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            worker::run(ctx, p, rx).await;
            let _ = done.send(uid);
        });
    }

    fn vanished(&mut self, uid: &str) {
        if let Some(tx) = self.workers.get(uid) {
            let _ = tx.send(None);
        }
    }
}

/// Run the pods bound to the served nodes, forever.
pub async fn run(ctx: Arc<Ctx>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&pod_field_selector(&ctx.nodes));
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut m = Manager {
        ctx: ctx.clone(),
        workers: HashMap::new(),
        finished: HashSet::new(),
        done_tx,
    };
    let mut listing: Option<HashSet<String>> = None;
    let mut first_list = true;
    loop {
        tokio::select! {
            Some(uid) = done_rx.recv() => {
                m.workers.remove(&uid);
                m.finished.insert(uid);
            }
            ev = stream.try_next() => match ev {
                // Bound to a node of someone else (only seen when serving several nodes).
                Ok(Some(Event::Apply(p) | Event::InitApply(p) | Event::Delete(p)))
                    if !ctx.serves(node_of(&p)) => {}
                Ok(Some(Event::Apply(p))) => m.handle(p),
                Ok(Some(Event::InitApply(p))) => {
                    if let Some(l) = listing.as_mut() {
                        l.insert(uid_of(&p));
                    }
                    m.handle(p);
                }
                Ok(Some(Event::Delete(p))) => m.vanished(&uid_of(&p)),
                Ok(Some(Event::Init)) => listing = Some(HashSet::new()),
                Ok(Some(Event::InitDone)) => {
                    let seen = listing.take().unwrap_or_default();
                    let gone: Vec<String> = m.workers.keys().filter(|u| !seen.contains(*u)).cloned().collect();
                    for uid in gone {
                        m.vanished(&uid);
                    }
                    if first_list {
                        first_list = false;
                        let mut keep = seen.clone();
                        keep.extend(m.workers.keys().cloned());
                        ctx.ipam.lock().expect("ipam lock").retain(&keep);
                        remove_stale_pod_dirs(&ctx, &keep);
                    }
                }
                Ok(None) => return,
                Err(e) => tracing::warn!(error = %e, "pod watch"),
            }
        }
    }
}

/// Pod directories left by a previous kubelet run for pods that no longer exist.
fn remove_stale_pod_dirs(ctx: &Ctx, live: &HashSet<String>) {
    let Ok(rd) = std::fs::read_dir(ctx.state_dir.join("pods")) else {
        return;
    };
    for e in rd.flatten() {
        let uid = e.file_name().to_string_lossy().into_owned();
        if !live.contains(&uid) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_node_spec;

    #[test]
    fn field_selector() {
        let one = [parse_node_spec("deposito-node").unwrap()];
        assert_eq!(pod_field_selector(&one), "spec.nodeName=deposito-node");
        let two = [
            parse_node_spec("a1,topology.kubernetes.io/zone=zone-a").unwrap(),
            parse_node_spec("b1,topology.kubernetes.io/zone=zone-b").unwrap(),
        ];
        assert_eq!(pod_field_selector(&two), "spec.nodeName!=");
    }
}
