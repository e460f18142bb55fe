//! A scheduler for the served nodes: binds every unscheduled pod meant for the default
//! scheduler to one of them, spreading pods over topology domains (`topologySpreadConstraints`)
//! or, without constraints, over the nodes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::sync::mpsc;

use crate::NodeSpec;

/// Whether this kubelet should bind `pod`.
pub fn wants_binding(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let default_sched = matches!(
        spec.scheduler_name.as_deref(),
        None | Some("" | "default-scheduler")
    );
    let gated = spec
        .scheduling_gates
        .as_ref()
        .is_some_and(|g| !g.is_empty());
    let terminal = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    spec.node_name.as_deref().unwrap_or("").is_empty()
        && default_sched
        && !gated
        && !terminal
        && pod.metadata.deletion_timestamp.is_none()
}

/// A pod bound (or being bound by us) to a node, as far as placement is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub node: String,
}

/// Whether `labels` satisfy `sel` (matchLabels and matchExpressions; an empty selector matches
/// everything) plus the extra `key = value` requirements in `extra`.
pub fn selector_matches(
    sel: &LabelSelector,
    extra: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    let eq = |k: &String, v: &String| labels.get(k) == Some(v);
    sel.match_labels.iter().flatten().all(|(k, v)| eq(k, v))
        && extra.iter().all(|(k, v)| eq(k, v))
        && sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// The selector of a spread constraint and the pod's values of its `matchLabelKeys`; None
/// when it has no labelSelector (Kubernetes then counts no pods: the constraint is skipped).
fn constraint_selector<'a>(
    c: &'a TopologySpreadConstraint,
    pod_labels: &BTreeMap<String, String>,
) -> Option<(&'a LabelSelector, BTreeMap<String, String>)> {
    let sel = c.label_selector.as_ref()?;
    let extra = c
        .match_label_keys
        .iter()
        .flatten()
        .filter_map(|k| pod_labels.get(k).map(|v| (k.clone(), v.clone())))
        .collect();
    Some((sel, extra))
}

/// The node to bind `pod` to. `nodes` are the served nodes with all their labels, `placed`
/// the pods that count (bound or being bound, not terminating, not finished).
///
/// - A `nodeSelector` narrows the nodes to those that match it (when none matches, every node
///   stays a candidate, as with the single-node kubelet, which bound everything).
/// - With `topologySpreadConstraints`, the first constraint whose topologyKey is a label of a
///   candidate node decides: among the candidates carrying that label, the node whose domain
///   (the label's value) has the fewest pods matching the constraint's labelSelector (and
///   matchLabelKeys) in the pod's namespace; ties go to the first node name.
/// - Otherwise the candidate with the fewest pods, ties by name.
pub fn choose_node(pod: &Pod, nodes: &[NodeSpec], placed: &[Placed]) -> Option<String> {
    let spec = pod.spec.as_ref();
    let mut candidates: Vec<&NodeSpec> = nodes.iter().collect();
    if let Some(sel) = spec.and_then(|s| s.node_selector.as_ref()) {
        let matching: Vec<&NodeSpec> = candidates
            .iter()
            .copied()
            .filter(|n| sel.iter().all(|(k, v)| n.labels.get(k) == Some(v)))
            .collect();
        if !matching.is_empty() {
            candidates = matching;
        }
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let no_labels = BTreeMap::new();
    let pod_labels = pod.metadata.labels.as_ref().unwrap_or(&no_labels);
    for c in spec
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
    {
        let key = &c.topology_key;
        if !candidates.iter().any(|n| n.labels.contains_key(key)) {
            continue;
        }
        let Some((sel, extra)) = constraint_selector(c, pod_labels) else {
            continue;
        };
        // Pods in a domain, over every served node of that domain (candidate or not).
        let domain_of: HashMap<&str, &str> = nodes
            .iter()
            .filter_map(|n| Some((n.name.as_str(), n.labels.get(key)?.as_str())))
            .collect();
        let mut per_domain: HashMap<&str, usize> = HashMap::new();
        for p in placed {
            if p.namespace == namespace && selector_matches(sel, &extra, &p.labels) {
                if let Some(d) = domain_of.get(p.node.as_str()) {
                    *per_domain.entry(d).or_default() += 1;
                }
            }
        }
        return candidates
            .iter()
            .filter_map(|n| Some((n, n.labels.get(key)?.as_str())))
            .min_by_key(|(n, d)| (per_domain.get(d).copied().unwrap_or(0), n.name.as_str()))
            .map(|(n, _)| n.name.clone());
    }
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for p in placed {
        *per_node.entry(p.node.as_str()).or_default() += 1;
    }
    candidates
        .iter()
        .min_by_key(|n| {
            (
                per_node.get(n.name.as_str()).copied().unwrap_or(0),
                n.name.as_str(),
            )
        })
        .map(|n| n.name.clone())
}

/// What the scheduler remembers of a pod.
#[derive(Debug, Clone)]
struct Tracked {
    namespace: String,
    labels: BTreeMap<String, String>,
    /// The node it is bound to, per the API server.
    node: Option<String>,
    /// Counts for placement: not terminating and not finished.
    counts: bool,
}

impl Tracked {
    fn of(p: &Pod) -> Self {
        let terminal = p
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
        Tracked {
            namespace: p
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            labels: p.metadata.labels.clone().unwrap_or_default(),
            node: p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            counts: !terminal && p.metadata.deletion_timestamp.is_none(),
        }
    }
}

/// The scheduler's view: every pod from the watch, plus the bindings it made itself that the
/// watch does not show yet (so pods arriving together are spread, not piled on one node).
#[derive(Debug)]
pub struct State {
    nodes: Vec<NodeSpec>,
    pods: HashMap<String, Tracked>,
    assumed: HashMap<String, String>,
}

fn uid_of(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

impl State {
    /// `nodes` with all their labels (see `node::node_labels`).
    pub fn new(nodes: Vec<NodeSpec>) -> Self {
        State {
            nodes,
            pods: HashMap::new(),
            assumed: HashMap::new(),
        }
    }

    /// A new version of a pod from the watch.
    pub fn observe(&mut self, p: &Pod) {
        let uid = uid_of(p);
        let t = Tracked::of(p);
        if t.node.is_some() {
            self.assumed.remove(&uid);
        }
        self.pods.insert(uid, t);
    }

    /// The pod is gone.
    pub fn forget(&mut self, uid: &str) {
        self.pods.remove(uid);
        self.assumed.remove(uid);
    }

    /// After a relist: `pods` is everything there is.
    fn replace(&mut self, pods: HashMap<String, Tracked>) {
        self.pods = pods;
        for (uid, t) in &self.pods {
            if t.node.is_some() {
                self.assumed.remove(uid);
            }
        }
        let pods = &self.pods;
        self.assumed.retain(|uid, _| pods.contains_key(uid));
    }

    /// Our binding of `uid` did not happen.
    pub fn unassume(&mut self, uid: &str) {
        self.assumed.remove(uid);
    }

    pub fn placed(&self) -> Vec<Placed> {
        self.pods
            .iter()
            .filter(|(_, t)| t.counts)
            .filter_map(|(uid, t)| {
                let node = t.node.clone().or_else(|| self.assumed.get(uid).cloned())?;
                Some(Placed {
                    namespace: t.namespace.clone(),
                    labels: t.labels.clone(),
                    node,
                })
            })
            .collect()
    }

    /// The node to bind `p` to now, remembered as assumed; None when it is not ours to bind or
    /// a binding of it is already under way.
    pub fn schedule(&mut self, p: &Pod) -> Option<String> {
        let uid = uid_of(p);
        if uid.is_empty() || !wants_binding(p) || self.assumed.contains_key(&uid) {
            return None;
        }
        self.observe(p);
        let node = choose_node(p, &self.nodes, &self.placed())?;
        self.assumed.insert(uid, node.clone());
        Some(node)
    }
}

/// Bind `pod` to `node`; whether it was bound.
async fn bind(client: Client, pod: Pod, node: String) -> bool {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.clone()),
            ..Default::default()
        },
    };
    let mut delay = Duration::from_millis(500);
    for _ in 0..8 {
        match api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %format!("{ns}/{name}"), node = %node, "bound pod");
                return true;
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                tracing::debug!(pod = %name, error = %e.message, "not binding");
                return false;
            }
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "binding failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    tracing::warn!(pod = %format!("{ns}/{name}"), node = %node, "giving up binding pod");
    false
}

/// Watch the pods forever and bind the unscheduled ones to the served `nodes` (as given on
/// the command line; their usual labels are added here).
pub async fn run(client: Client, nodes: Vec<NodeSpec>) {
    let nodes: Vec<NodeSpec> = nodes
        .iter()
        .map(|n| NodeSpec {
            name: n.name.clone(),
            labels: crate::node::node_labels(n),
        })
        .collect();
    let mut state = State::new(nodes);
    let api: Api<Pod> = Api::all(client.clone());
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel::<String>();
    let start = |state: &mut State, p: Pod| {
        if let Some(node) = state.schedule(&p) {
            let (client, failed) = (client.clone(), failed_tx.clone());
            tokio::spawn(async move {
                let uid = uid_of(&p);
                if !bind(client, p, node).await {
                    let _ = failed.send(uid);
                }
            });
        }
    };
    // During a (re)list: the pods seen so far, and the unscheduled ones among them.
    let mut relist: Option<(HashMap<String, Tracked>, Vec<Pod>)> = None;
    loop {
        tokio::select! {
            Some(uid) = failed_rx.recv() => state.unassume(&uid),
            ev = stream.try_next() => match ev {
                Ok(Some(Event::Init)) => relist = Some((HashMap::new(), Vec::new())),
                Ok(Some(Event::InitApply(p))) => {
                    if let Some((seen, pending)) = relist.as_mut() {
                        seen.insert(uid_of(&p), Tracked::of(&p));
                        if wants_binding(&p) {
                            pending.push(p);
                        }
                    }
                }
                Ok(Some(Event::InitDone)) => {
                    let (seen, mut pending) = relist.take().unwrap_or_default();
                    state.replace(seen);
                    // Oldest first, so that a batch is placed in a stable order.
                    pending.sort_by(|a, b| {
                        let key = |p: &Pod| {
                            (
                                p.metadata.creation_timestamp.clone(),
                                p.metadata.namespace.clone(),
                                p.metadata.name.clone(),
                            )
                        };
                        key(a).cmp(&key(b))
                    });
                    for p in pending {
                        start(&mut state, p);
                    }
                }
                Ok(Some(Event::Apply(p))) => {
                    state.observe(&p);
                    start(&mut state, p);
                }
                Ok(Some(Event::Delete(p))) => state.forget(&uid_of(&p)),
                Ok(None) => return,
                Err(e) => tracing::warn!(error = %e, "pod watch (scheduler)"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
