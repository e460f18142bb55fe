//! Kube mode's membership: the pods of the replica StatefulSet, found by label and watched
//! through a reflector. A pod is available while it is Ready and has an IP; it is addressed by
//! pod IP. Draining is the annotation `deposito.io/drain=true`. Pods that vanish (deleted,
//! rescheduled) are remembered as unavailable for two grace periods, so the engine applies
//! the grace period before replacing their copies.
//!
//! A replica's zone (what copies are spread over) is its Node's `topology.kubernetes.io/zone`
//! label when the operator may read Nodes (a cluster-scoped, read-only permission the chart
//! grants), else the pod's own label of that name, else its node's name.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::ResourceExt;

use crate::engine::{Member, Membership, MembershipError};

/// The annotation that marks a replica pod draining.
pub const DRAIN_ANNOTATION: &str = "deposito.io/drain";
/// The container port name replicas serve on, when declared.
pub const PORT_NAME: &str = "api";
/// The well-known label of a Node's (or pod's) topology zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// How the watch of pods is going.
#[derive(Debug, Default)]
struct WatchState {
    listed: bool,
    error: Option<MembershipError>,
}

/// The replica pods.
pub struct KubeMembership {
    store: Store<Pod>,
    /// The cluster's Nodes, for zones (None: not read).
    nodes: Option<Store<PartialObjectMeta<Node>>>,
    watch: Mutex<WatchState>,
    /// Pods seen before and gone now: when they went, and how they looked.
    gone: Mutex<HashMap<String, (Instant, Member)>>,
    last_seen: Mutex<HashMap<String, Member>>,
    /// When each unavailable pod was first seen unavailable (for pods whose Ready condition
    /// does not say since when: still True but terminating, or without an IP).
    unavailable_since: Mutex<HashMap<String, Instant>>,
    /// `http`, or `https` with internal TLS.
    scheme: &'static str,
    default_port: u16,
    grace: Duration,
}

/// Maps a watcher failure to a membership error (403 is Forbidden: RBAC).
pub fn watch_error(err: &watcher::Error) -> MembershipError {
    let api = match err {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    };
    match api {
        Some(403) => MembershipError::Forbidden(format!("listing replica pods: {err}")),
        _ => MembershipError::Unavailable(format!("watching replica pods: {err}")),
    }
}

/// Seconds since a Kubernetes timestamp.
fn elapsed_since(time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Duration {
    let now = k8s_openapi::jiff::Timestamp::now();
    let secs = now.as_second() - time.0.as_second();
    Duration::from_secs(secs.max(0) as u64)
}

impl KubeMembership {
    pub fn new(store: Store<Pod>, default_port: u16, grace: Duration) -> Self {
        Self {
            store,
            nodes: None,
            watch: Mutex::new(WatchState::default()),
            gone: Mutex::new(HashMap::new()),
            last_seen: Mutex::new(HashMap::new()),
            unavailable_since: Mutex::new(HashMap::new()),
            default_port,
            scheme: "http",
            grace,
        }
    }

    /// Reaches the replicas over HTTPS (internal TLS).
    pub fn over_https(mut self) -> Self {
        self.scheme = "https";
        self
    }

    /// Reads zones from these Nodes' labels.
    pub fn with_nodes(mut self, nodes: Store<PartialObjectMeta<Node>>) -> Self {
        self.nodes = Some(nodes);
        self
    }

    /// The zone of a pod: its Node's zone label, else its own, else the node's name.
    fn zone_of(&self, pod: &Pod) -> Option<String> {
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let node_zone = node_name.as_ref().and_then(|name| {
            let node = self
                .nodes
                .as_ref()?
                .get(&kube::runtime::reflector::ObjectRef::new(name))?;
            node.labels().get(ZONE_LABEL).cloned()
        });
        node_zone
            .or_else(|| pod.labels().get(ZONE_LABEL).cloned())
            .or(node_name)
    }

    /// Records how the pod watch is going (called for every item of the watch stream).
    pub fn observed(&self, item: &Result<watcher::Event<Pod>, watcher::Error>) {
        let mut watch = self.watch.lock().expect("watch state");
        match item {
            Ok(watcher::Event::InitDone) => {
                watch.listed = true;
                watch.error = None;
            }
            Ok(_) => watch.error = None,
            Err(err) => watch.error = Some(watch_error(err)),
        }
    }

    /// The member a pod stands for. `down_for` counts from the Ready condition's transition
    /// when it says the pod became not ready; otherwise from when this operator first saw the
    /// pod unavailable (a Ready pod being deleted is down from now, not from when it became
    /// Ready).
    pub fn member_of(&self, pod: &Pod) -> Member {
        let status = pod.status.as_ref();
        let ip = status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty());
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
        let available = ip.is_some()
            && ready.is_some_and(|c| c.status == "True")
            && pod.metadata.deletion_timestamp.is_none();
        let mut noticed = self.unavailable_since.lock().expect("unavailable");
        let down_for = if available {
            noticed.remove(&pod.name_any());
            Duration::ZERO
        } else {
            let seen = noticed
                .entry(pod.name_any())
                .or_insert_with(Instant::now)
                .elapsed();
            let reported = ready
                .filter(|c| c.status == "False")
                .and_then(|c| c.last_transition_time.as_ref())
                .map(elapsed_since)
                .unwrap_or_default();
            seen.max(reported)
        };
        drop(noticed);
        let port = pod
            .spec
            .as_ref()
            .into_iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(PORT_NAME))
            .map(|p| p.container_port as u16)
            .unwrap_or(self.default_port);
        let zone = self.zone_of(pod);
        Member {
            id: pod.name_any(),
            url: ip
                .map(|ip| format!("{}://{ip}:{port}", self.scheme))
                .unwrap_or_default(),
            zone,
            draining: pod
                .annotations()
                .get(DRAIN_ANNOTATION)
                .is_some_and(|v| v == "true"),
            available,
            down_for,
            capacity: None,
        }
    }
}

#[async_trait]
impl Membership for KubeMembership {
    fn members(&self) -> Result<Vec<Member>, MembershipError> {
        {
            let watch = self.watch.lock().expect("watch state");
            if let Some(err) = &watch.error {
                return Err(err.clone());
            }
            if !watch.listed {
                return Err(MembershipError::Unavailable(
                    "replica pods are not listed yet".into(),
                ));
            }
        }
        let mut members: Vec<Member> = self
            .store
            .state()
            .iter()
            .map(|p| self.member_of(p))
            .collect();
        let mut gone = self.gone.lock().expect("gone");
        let mut last_seen = self.last_seen.lock().expect("last seen");
        let now = Instant::now();
        for (id, member) in last_seen.iter() {
            if !members.iter().any(|m| &m.id == id) && !gone.contains_key(id) {
                gone.insert(id.clone(), (now, member.clone()));
            }
        }
        gone.retain(|id, (since, _)| {
            !members.iter().any(|m| &m.id == id) && since.elapsed() < self.grace * 2
        });
        *last_seen = members.iter().map(|m| (m.id.clone(), m.clone())).collect();
        for (since, member) in gone.values() {
            members.push(Member {
                available: false,
                down_for: member.down_for + since.elapsed(),
                ..member.clone()
            });
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(members)
    }

    async fn set_draining(&self, id: &str, _draining: bool) -> Result<bool, MembershipError> {
        Err(MembershipError::Unsupported(format!(
            "in kube mode, drain a replica by annotating its pod: \
             kubectl annotate pod {id} {DRAIN_ANNOTATION}=true"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodCondition, PodSpec, PodStatus};

    fn pod(name: &str, ready: bool, ip: Option<&str>) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.spec = Some(PodSpec {
            node_name: Some("node-a".into()),
            containers: vec![Container {
                name: "replica".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("api".into()),
                    container_port: 8080,
                    ..ContainerPort::default()
                }]),
                ..Container::default()
            }],
            ..PodSpec::default()
        });
        pod.status = Some(PodStatus {
            pod_ip: ip.map(str::to_string),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        pod
    }

    #[test]
    fn pods_to_members_table() {
        let m = KubeMembership::new(
            kube::runtime::reflector::store().0,
            7070,
            Duration::from_secs(60),
        );
        let ready = m.member_of(&pod("rep-0", true, Some("127.0.100.2")));
        assert!(ready.available);
        assert_eq!(
            ready.url, "http://127.0.100.2:8080",
            "the declared 'api' port"
        );
        assert_eq!(
            ready.zone.as_deref(),
            Some("node-a"),
            "the node is the spread domain"
        );
        assert!(
            !m.member_of(&pod("rep-1", false, Some("127.0.100.3")))
                .available
        );
        assert!(!m.member_of(&pod("rep-2", true, None)).available);
        let mut draining = pod("rep-3", true, Some("127.0.100.4"));
        draining
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(DRAIN_ANNOTATION.into(), "true".into());
        assert!(m.member_of(&draining).draining);
    }

    #[test]
    fn the_zone_is_the_nodes_label_then_the_pods_then_the_node_name() {
        let (reader, mut writer) = kube::runtime::reflector::store::<PartialObjectMeta<Node>>();
        let mut node = PartialObjectMeta::<Node>::default();
        node.metadata.name = Some("node-a".into());
        node.metadata.labels = Some([(ZONE_LABEL.to_string(), "zone-1".to_string())].into());
        writer.apply_watcher_event(&watcher::Event::Apply(node));
        let plain = KubeMembership::new(
            kube::runtime::reflector::store().0,
            7070,
            Duration::from_secs(60),
        );
        let zoned = KubeMembership::new(
            kube::runtime::reflector::store().0,
            7070,
            Duration::from_secs(60),
        )
        .with_nodes(reader);
        let on_a = pod("rep-0", true, Some("127.0.100.2"));
        assert_eq!(zoned.member_of(&on_a).zone.as_deref(), Some("zone-1"));
        assert_eq!(plain.member_of(&on_a).zone.as_deref(), Some("node-a"));
        let mut labelled = on_a.clone();
        labelled.metadata.labels = Some([(ZONE_LABEL.to_string(), "pod-zone".to_string())].into());
        assert_eq!(plain.member_of(&labelled).zone.as_deref(), Some("pod-zone"));
        assert_eq!(zoned.member_of(&labelled).zone.as_deref(), Some("zone-1"));
    }

    #[test]
    fn a_ready_pod_being_deleted_is_down_from_now_not_from_when_it_became_ready() {
        let m = KubeMembership::new(
            kube::runtime::reflector::store().0,
            7070,
            Duration::from_secs(60),
        );
        let long_ago = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        );
        let mut pod = pod("rep-0", true, Some("127.0.100.2"));
        pod.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time =
            Some(long_ago.clone());
        pod.metadata.deletion_timestamp = Some(long_ago.clone());
        let member = m.member_of(&pod);
        assert!(!member.available);
        assert!(
            member.down_for < Duration::from_secs(5),
            "{:?}",
            member.down_for
        );
        // Not ready since long ago: that is how long it has been down.
        let mut not_ready = self::pod("rep-1", false, Some("127.0.100.3"));
        not_ready
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .last_transition_time = Some(long_ago);
        assert!(m.member_of(&not_ready).down_for > Duration::from_secs(3600));
    }

    #[test]
    fn nothing_is_reported_before_the_first_list_or_after_a_forbidden_watch() {
        let m = KubeMembership::new(
            kube::runtime::reflector::store().0,
            7070,
            Duration::from_secs(60),
        );
        assert!(matches!(m.members(), Err(MembershipError::Unavailable(_))));
        m.observed(&Ok(watcher::Event::InitDone));
        assert_eq!(m.members().unwrap(), vec![]);
        let forbidden = watcher::Error::InitialListFailed(kube::Error::Api(
            kube::core::Status::failure("pods is forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        ));
        m.observed(&Err(forbidden));
        assert!(matches!(m.members(), Err(MembershipError::Forbidden(_))));
    }
}
