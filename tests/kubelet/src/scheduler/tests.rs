//! Unit tests of the scheduler: which pods it binds, selectors and spread constraints, node
//! choice and the state of placed pods.

use super::*;
use k8s_openapi::api::core::v1::PodSpec;

#[test]
fn binding_rules() {
    let pod = |node: Option<&str>, sched: Option<&str>| Pod {
        spec: Some(PodSpec {
            node_name: node.map(String::from),
            scheduler_name: sched.map(String::from),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(wants_binding(&pod(None, None)));
    assert!(wants_binding(&pod(Some(""), Some("default-scheduler"))));
    assert!(!wants_binding(&pod(Some("n"), None)));
    assert!(!wants_binding(&pod(None, Some("other"))));
}

fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const ZONE: &str = "topology.kubernetes.io/zone";

fn node(name: &str, zone: Option<&str>) -> NodeSpec {
    let spec = NodeSpec {
        name: name.into(),
        labels: zone.map(|z| labels(&[(ZONE, z)])).unwrap_or_default(),
    };
    NodeSpec {
        name: name.into(),
        labels: crate::node::node_labels(&spec),
    }
}

fn placed(ns: &str, app: &str, node: &str) -> Placed {
    Placed {
        namespace: ns.into(),
        labels: labels(&[("app", app)]),
        node: node.into(),
    }
}

fn spread(key: &str, app: Option<&str>) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew: 1,
        topology_key: key.into(),
        when_unsatisfiable: "DoNotSchedule".into(),
        label_selector: app.map(|a| LabelSelector {
            match_labels: Some(labels(&[("app", a)])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn new_pod(uid: &str, app: &str, constraints: Vec<TopologySpreadConstraint>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(uid.into()),
            namespace: Some("ns".into()),
            uid: Some(uid.into()),
            labels: Some(labels(&[("app", app)])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            topology_spread_constraints: (!constraints.is_empty()).then_some(constraints),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn one_node_takes_everything() {
    let nodes = [node("deposito-node", None)];
    let pod = new_pod("p", "x", vec![spread(ZONE, Some("x"))]);
    let busy = vec![placed("ns", "x", "deposito-node"); 5];
    assert_eq!(
        choose_node(&pod, &nodes, &busy).as_deref(),
        Some("deposito-node")
    );
    assert_eq!(choose_node(&pod, &[], &busy), None);
}

#[test]
fn fewest_pods_without_constraints() {
    let nodes = [node("b", None), node("a", None), node("c", None)];
    let pod = new_pod("p", "x", vec![]);
    assert_eq!(choose_node(&pod, &nodes, &[]).as_deref(), Some("a"));
    let busy = [
        placed("ns", "x", "a"),
        placed("other", "y", "a"),
        placed("ns", "x", "b"),
    ];
    // Counts every pod, whatever its namespace or labels.
    assert_eq!(choose_node(&pod, &nodes, &busy).as_deref(), Some("c"));
    let busy = [placed("ns", "x", "a"), placed("ns", "x", "c")];
    assert_eq!(choose_node(&pod, &nodes, &busy).as_deref(), Some("b"));
}

#[test]
fn zone_spread() {
    let nodes = [
        node("a1", Some("zone-a")),
        node("a2", Some("zone-a")),
        node("b1", Some("zone-b")),
    ];
    let pod = new_pod("p", "rep", vec![spread(ZONE, Some("rep"))]);
    // Empty: tie between zones, first name wins.
    assert_eq!(choose_node(&pod, &nodes, &[]).as_deref(), Some("a1"));
    // One matching pod in zone-a (on a2): zone-b has fewer.
    let busy = [placed("ns", "rep", "a2")];
    assert_eq!(choose_node(&pod, &nodes, &busy).as_deref(), Some("b1"));
    // Pods of other apps or other namespaces do not count.
    let busy = [
        placed("ns", "rep", "b1"),
        placed("ns", "other", "a1"),
        placed("ns", "other", "a2"),
        placed("other-ns", "rep", "a1"),
    ];
    assert_eq!(choose_node(&pod, &nodes, &busy).as_deref(), Some("a1"));
    // Both zones equal again: ties by node name, even if a1 holds more pods.
    let busy = [placed("ns", "rep", "b1"), placed("ns", "rep", "a1")];
    assert_eq!(choose_node(&pod, &nodes, &busy).as_deref(), Some("a1"));
}

#[test]
fn first_constraint_with_a_known_key() {
    let nodes = [node("a1", Some("zone-a")), node("b1", Some("zone-b"))];
    let busy = [placed("ns", "rep", "a1")];
    // Unknown key first: the zone constraint decides.
    let pod = new_pod(
        "p",
        "rep",
        vec![
            spread("example.com/rack", Some("rep")),
            spread(ZONE, Some("rep")),
        ],
    );
    assert_eq!(choose_node(&pod, &nodes, &busy).as_deref(), Some("b1"));
    // Hostname is a label of every node: each node is its own domain.
    let pod = new_pod(
        "p",
        "rep",
        vec![spread("kubernetes.io/hostname", Some("rep"))],
    );
    assert_eq!(choose_node(&pod, &nodes, &busy).as_deref(), Some("b1"));
    // No constraint applies: fewest pods.
    let pod = new_pod("p", "rep", vec![spread("example.com/rack", Some("rep"))]);
    assert_eq!(choose_node(&pod, &nodes, &busy).as_deref(), Some("b1"));
    let busy = [placed("ns", "rep", "b1")];
    assert_eq!(choose_node(&pod, &nodes, &busy).as_deref(), Some("a1"));
}

#[test]
fn only_nodes_with_the_key() {
    // c1 has no zone label: a zone constraint never picks it, though it is empty.
    let nodes = [
        node("a1", Some("zone-a")),
        node("b1", Some("zone-b")),
        node("c1", None),
    ];
    let busy = [placed("ns", "rep", "a1")];
    let pod = new_pod("p", "rep", vec![spread(ZONE, Some("rep"))]);
    assert_eq!(choose_node(&pod, &nodes, &busy).as_deref(), Some("b1"));
}

#[test]
fn node_selector() {
    let nodes = [node("a1", Some("zone-a")), node("b1", Some("zone-b"))];
    let mut pod = new_pod("p", "rep", vec![]);
    pod.spec.as_mut().unwrap().node_selector = Some(labels(&[(ZONE, "zone-b")]));
    assert_eq!(choose_node(&pod, &nodes, &[]).as_deref(), Some("b1"));
    // Matches no node: every node stays a candidate.
    pod.spec.as_mut().unwrap().node_selector = Some(labels(&[(ZONE, "zone-z")]));
    assert_eq!(choose_node(&pod, &nodes, &[]).as_deref(), Some("a1"));
}

#[test]
fn selectors() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    let l = labels(&[("app", "rep"), ("tier", "db")]);
    let none = BTreeMap::new();
    let req = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: Some(
            values
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        ),
    };
    let sel = |reqs: Vec<LabelSelectorRequirement>| LabelSelector {
        match_expressions: Some(reqs),
        match_labels: None,
    };
    assert!(selector_matches(&LabelSelector::default(), &none, &l));
    assert!(selector_matches(
        &sel(vec![req("app", "In", &["rep", "x"])]),
        &none,
        &l
    ));
    assert!(!selector_matches(
        &sel(vec![req("app", "NotIn", &["rep"])]),
        &none,
        &l
    ));
    assert!(selector_matches(
        &sel(vec![req("zone", "NotIn", &["a"])]),
        &none,
        &l
    ));
    assert!(selector_matches(
        &sel(vec![req("tier", "Exists", &[])]),
        &none,
        &l
    ));
    assert!(!selector_matches(
        &sel(vec![req("tier", "DoesNotExist", &[])]),
        &none,
        &l
    ));
    assert!(!selector_matches(
        &sel(vec![req("tier", "Bogus", &[])]),
        &none,
        &l
    ));
    let extra = labels(&[("pod-template-hash", "abc")]);
    assert!(!selector_matches(&LabelSelector::default(), &extra, &l));
}

#[test]
fn match_label_keys_and_missing_selector() {
    let nodes = [node("a1", Some("zone-a")), node("b1", Some("zone-b"))];
    let mut c = spread(ZONE, Some("rep"));
    c.match_label_keys = Some(vec!["rev".into()]);
    let mut pod = new_pod("p", "rep", vec![c]);
    pod.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("rev".into(), "2".into());
    // Pods of revision 1 in zone-a do not count for revision 2: tie, a1.
    let mut old = placed("ns", "rep", "a1");
    old.labels.insert("rev".into(), "1".into());
    assert_eq!(
        choose_node(&pod, &nodes, &[old.clone()]).as_deref(),
        Some("a1")
    );
    let mut cur = old.clone();
    cur.labels.insert("rev".into(), "2".into());
    assert_eq!(
        choose_node(&pod, &nodes, &[old, cur]).as_deref(),
        Some("b1")
    );
    // A constraint without labelSelector is skipped: fewest pods per node.
    let pod = new_pod("p", "rep", vec![spread(ZONE, None)]);
    let busy = [placed("ns", "x", "a1")];
    assert_eq!(choose_node(&pod, &nodes, &busy).as_deref(), Some("b1"));
}

#[test]
fn a_burst_of_pods_is_spread() {
    // Four pods arrive before the watch shows any binding: the assumed bindings count.
    let nodes = vec![node("a1", Some("zone-a")), node("b1", Some("zone-b"))];
    let mut state = State::new(nodes);
    let pods: Vec<Pod> = (0..4)
        .map(|i| new_pod(&format!("rep-{i}"), "rep", vec![spread(ZONE, Some("rep"))]))
        .collect();
    let chosen: Vec<String> = pods.iter().map(|p| state.schedule(p).unwrap()).collect();
    assert_eq!(chosen, ["a1", "b1", "a1", "b1"]);
    // The same pod again (a repeated watch event) is not bound twice.
    assert_eq!(state.schedule(&pods[0]), None);
    // The watch shows rep-0 bound: no longer assumed, still counted once.
    let mut bound = pods[0].clone();
    bound.spec.as_mut().unwrap().node_name = Some("a1".into());
    state.observe(&bound);
    assert_eq!(state.placed().len(), 4);
    // A failed binding is forgotten: rep-1 may be scheduled again.
    state.unassume("rep-1");
    assert_eq!(state.placed().len(), 3);
    assert_eq!(state.schedule(&pods[1]).as_deref(), Some("b1"));
    // Terminating pods do not count: rep-0 goes, zone-a has one pod left (rep-2).
    bound.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    state.observe(&bound);
    let p = new_pod("rep-4", "rep", vec![spread(ZONE, Some("rep"))]);
    assert_eq!(state.schedule(&p).as_deref(), Some("a1"));
    // Deleted pods are forgotten, assumed or not.
    state.forget("rep-4");
    state.forget("rep-0");
    assert_eq!(state.placed().len(), 3);
}
