//! Unit tests of the hosts file: endpoints, rendering, the in-place rewrite.

use super::*;
use k8s_openapi::api::core::v1::{HostAlias, PodCondition, PodSpec, PodStatus, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;

fn svc(ns: &str, name: &str, selector: &[(&str, &str)], headless: bool) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: (!selector.is_empty()).then(|| {
                selector
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            cluster_ip: Some(if headless { "None" } else { "10.0.0.7" }.into()),
            ..Default::default()
        }),
        status: None,
    }
}

/// A Running, Ready pod labelled `app=<app>`.
fn pod(ns: &str, name: &str, app: &str, ip: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            labels: Some([("app".to_string(), app.to_string())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec::default()),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn unready(mut p: Pod) -> Pod {
    p.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
    p
}

fn sts_pod(ns: &str, name: &str, app: &str, ip: &str, subdomain: &str) -> Pod {
    let mut p = pod(ns, name, app, ip);
    let spec = p.spec.as_mut().unwrap();
    spec.hostname = Some(name.into());
    spec.subdomain = Some(subdomain.into());
    p
}

fn ep(addr: &str, ready: Option<bool>, hostname: Option<&str>) -> Endpoint {
    Endpoint {
        addresses: vec![addr.into()],
        conditions: Some(EndpointConditions {
            ready,
            ..Default::default()
        }),
        hostname: hostname.map(String::from),
        ..Default::default()
    }
}

fn slice(ns: &str, svc: &str, eps: Vec<Endpoint>) -> EndpointSlice {
    EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: Some(eps),
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(format!("{svc}-abcde")),
            labels: Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
            ..Default::default()
        },
        ports: None,
    }
}

fn addrs(s: &ServiceEndpoints) -> Vec<&str> {
    s.endpoints.iter().map(|e| e.address.as_str()).collect()
}

fn names(svcs: &[ServiceEndpoints]) -> Vec<String> {
    svcs.iter()
        .map(|s| format!("{}/{}", s.namespace, s.name))
        .collect()
}

fn pod_hosts() -> PodHosts {
    PodHosts {
        namespace: "d".into(),
        pod_ip: "127.0.100.9".into(),
        hostname: "client".into(),
        ..Default::default()
    }
}

#[test]
fn endpoints_from_pods_in_address_order() {
    let services = [
        svc("d", "gw", &[("app", "op")], false),
        svc("d", "idle", &[("app", "nobody")], false),
        svc("a", "zz", &[("app", "op")], false),
    ];
    let pods = [
        pod("d", "op-3", "op", "127.0.100.12"),
        pod("d", "op-1", "op", "127.0.100.3"),
        pod("d", "op-2", "op", "127.0.100.10"),
        unready(pod("d", "op-0", "op", "127.0.100.2")),
        // Other namespace, other labels: not the Service's.
        pod("x", "op-x", "op", "127.0.100.20"),
        pod("d", "other", "other", "127.0.100.21"),
        pod("a", "zz-0", "op", "127.0.100.7"),
    ];
    let svcs = service_endpoints(&services, &pods, []);
    // Sorted by namespace, then name; no ready endpoint, no entry.
    assert_eq!(names(&svcs), ["a/zz", "d/gw"]);
    // Numeric order: .3 before .10 and .12.
    assert_eq!(
        addrs(&svcs[1]),
        ["127.0.100.3", "127.0.100.10", "127.0.100.12"]
    );
    assert!(!svcs[1].headless);
}

#[test]
fn which_pods_count_as_ready() {
    let services = [svc("d", "s", &[("app", "a")], false)];
    let mut no_ip = pod("d", "p1", "a", "");
    no_ip.status.as_mut().unwrap().pod_ip = None;
    let mut done = pod("d", "p2", "a", "127.0.100.2");
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let mut terminating = pod("d", "p3", "a", "127.0.100.3");
    terminating.metadata.deletion_timestamp =
        Some(Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap()));
    let unready_pod = unready(pod("d", "p4", "a", "127.0.100.4"));
    let pods = [
        no_ip,
        done,
        terminating,
        unready_pod,
        pod("d", "p5", "a", "127.0.100.5"),
    ];
    let svcs = service_endpoints(&services, &pods, []);
    assert_eq!(addrs(&svcs[0]), ["127.0.100.5"]);

    // publishNotReadyAddresses: unready and terminating pods too (not finished ones).
    let mut publish = services[0].clone();
    publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let svcs = service_endpoints([&publish], &pods, []);
    assert_eq!(
        addrs(&svcs[0]),
        ["127.0.100.3", "127.0.100.4", "127.0.100.5"]
    );
}

#[test]
fn endpoints_from_slices() {
    let services = [
        // Without a selector: only its hand-written slices.
        svc("d", "ext", &[], false),
        svc("d", "gw", &[("app", "op")], false),
    ];
    let pods = [pod("d", "op-0", "op", "127.0.100.3")];
    let mut fqdn = slice("d", "ext", vec![ep("example.com", Some(true), None)]);
    fqdn.address_type = "FQDN".into();
    let slices = [
        slice(
            "d",
            "ext",
            vec![
                ep("10.1.0.9", None, None),
                ep("10.1.0.8", Some(false), None),
            ],
        ),
        slice("d", "ext", vec![ep("10.1.0.5", Some(true), None)]),
        fqdn,
        // Pod and slice agree: the address counts once.
        slice("d", "gw", vec![ep("127.0.100.3", Some(true), None)]),
        // No such Service (a slice left behind): ignored.
        slice("d", "gone", vec![ep("10.1.0.1", Some(true), None)]),
    ];
    let svcs = service_endpoints(&services, &pods, &slices);
    assert_eq!(names(&svcs), ["d/ext", "d/gw"]);
    assert_eq!(addrs(&svcs[0]), ["10.1.0.5", "10.1.0.9"]);
    assert_eq!(addrs(&svcs[1]), ["127.0.100.3"]);
}

#[test]
fn external_name_left_out() {
    let mut s = svc("d", "ext", &[], false);
    s.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
    let slices = [slice("d", "ext", vec![ep("10.1.0.9", None, None)])];
    assert!(service_endpoints([&s], [], &slices).is_empty());
}

#[test]
fn renders_pod_lines_and_services() {
    let services = [
        svc("d", "gw", &[("app", "op")], false),
        svc("other", "api", &[("app", "api")], false),
    ];
    let pods = [
        pod("d", "op-0", "op", "127.0.100.4"),
        pod("other", "api-0", "api", "127.0.100.8"),
    ];
    let text = render(&pod_hosts(), &service_endpoints(&services, &pods, []));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"127.0.0.1\tlocalhost"));
    assert!(lines.contains(&"::1\tlocalhost ip6-localhost ip6-loopback"));
    assert!(lines.contains(&"127.0.100.9\tclient"));
    // Own namespace: the short name too.
    assert!(lines.contains(&"127.0.100.4\tgw\tgw.d\tgw.d.svc\tgw.d.svc.cluster.local"));
    // Another namespace: qualified names only.
    assert!(lines.contains(&"127.0.100.8\tapi.other\tapi.other.svc\tapi.other.svc.cluster.local"));
    assert!(text.contains("ClusterIPs stay unreachable"));
    assert!(text.ends_with('\n'));
}

#[test]
fn renders_only_first_endpoint_and_headless_pod_records() {
    let services = [svc("d", "rep", &[("app", "rep")], true)];
    let pods = [
        sts_pod("d", "rep-1", "rep", "127.0.100.6", "rep"),
        sts_pod("d", "rep-0", "rep", "127.0.100.5", "rep"),
        unready(sts_pod("d", "rep-2", "rep", "127.0.100.7", "rep")),
        // Subdomain of another Service: an endpoint, but no hostname.
        sts_pod("d", "odd-0", "rep", "127.0.100.11", "other"),
    ];
    let svcs = service_endpoints(&services, &pods, []);
    assert!(svcs[0].headless);
    let text = render(&pod_hosts(), &svcs);
    let svc_lines: Vec<&str> = text.lines().filter(|l| l.contains("\trep\t")).collect();
    assert_eq!(
        svc_lines,
        ["127.0.100.5\trep\trep.d\trep.d.svc\trep.d.svc.cluster.local"]
    );
    assert!(text.contains("127.0.100.5\trep-0.rep.d.svc\trep-0.rep.d.svc.cluster.local\n"));
    assert!(text.contains("127.0.100.6\trep-1.rep.d.svc\trep-1.rep.d.svc.cluster.local\n"));
    // Not ready: no record; no hostname: no record.
    assert!(!text.contains("rep-2"));
    assert!(!text.contains("odd-0"));
}

#[test]
fn no_pod_records_for_non_headless() {
    let services = [svc("d", "gw", &[("app", "op")], false)];
    let pods = [sts_pod("d", "op-0", "op", "127.0.100.5", "gw")];
    let svcs = service_endpoints(&services, &pods, []);
    assert_eq!(svcs[0].endpoints[0].hostname.as_deref(), Some("op-0"));
    let text = render(&pod_hosts(), &svcs);
    assert!(!text.contains("op-0"));
}

#[test]
fn subdomain_aliases_and_no_services() {
    let mut p = pod_hosts();
    p.hostname = "rep-0".into();
    p.subdomain = Some("rep".into());
    p.host_aliases = vec![("10.1.2.3".into(), vec!["foo".into(), "bar".into()])];
    let text = render(&p, &[]);
    assert!(text.contains("127.0.100.9\trep-0.rep.d.svc.cluster.local\trep-0\n"));
    p.machine_hostname = Some("buildbox".into());
    assert!(
        render(&p, &[]).contains("127.0.100.9\trep-0.rep.d.svc.cluster.local\trep-0\tbuildbox\n")
    );
    assert!(text.contains("# Entries added by HostAliases.\n10.1.2.3\tfoo\tbar\n"));
    assert!(!text.contains("# Services"));
}

#[test]
fn host_network_keeps_host_file() {
    let mut p = pod_hosts();
    p.host_file = Some("127.0.0.1 localhost\n10.0.0.5 builder".into());
    let services = [svc("d", "gw", &[("app", "op")], false)];
    let pods = [pod("d", "op-0", "op", "127.0.100.4")];
    let text = render(&p, &service_endpoints(&services, &pods, []));
    assert!(text.contains("10.0.0.5 builder\n"));
    assert!(!text.contains("127.0.100.9\tclient"));
    assert!(text.contains("127.0.100.4\tgw\t"));
}

#[test]
fn pod_facts() {
    let mut pod = Pod {
        metadata: ObjectMeta {
            name: Some(format!("{}-", "x".repeat(62))),
            namespace: Some("d".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            host_aliases: Some(vec![HostAlias {
                ip: "10.0.0.1".into(),
                hostnames: Some(vec!["a".into()]),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let h = PodHosts::of(&pod, "127.0.100.2");
    assert_eq!(h.hostname, "x".repeat(62));
    assert_eq!(
        h.host_aliases,
        [("10.0.0.1".to_string(), vec!["a".to_string()])]
    );
    assert_eq!(h.host_file, None);
    let spec = pod.spec.as_mut().unwrap();
    spec.hostname = Some("rep-0".into());
    spec.subdomain = Some("rep".into());
    let h = PodHosts::of(&pod, "127.0.100.2");
    assert_eq!(
        (h.hostname.as_str(), h.subdomain.as_deref()),
        ("rep-0", Some("rep"))
    );
}

#[test]
fn rewrites_in_place_keeping_the_inode() {
    use std::os::unix::fs::MetadataExt;
    let dir = std::env::temp_dir().join(format!("kubelet-hosts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("etc-hosts");
    assert!(write_in_place(&path, b"first version, long\n").unwrap());
    let ino = std::fs::metadata(&path).unwrap().ino();
    assert!(!write_in_place(&path, b"first version, long\n").unwrap());
    assert!(write_in_place(&path, b"second\n").unwrap());
    assert_eq!(std::fs::read(&path).unwrap(), b"second\n");
    assert!(write_in_place(&path, b"third, longer than before\n").unwrap());
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"third, longer than before\n"
    );
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
    std::fs::remove_dir_all(&dir).unwrap();
}
