//! The pod's `/etc/hosts`, bind-mounted over `/etc/hosts` in each container's mount namespace
//! (like the real kubelet's managed hosts file), with Service names added.
//!
//! This cluster has no cluster DNS and no kube-proxy, so a Service name does not resolve and a
//! ClusterIP leads nowhere. The hosts file stands in for both: every Service (all namespaces)
//! with at least one ready endpoint gets a line mapping `<svc>` (only in the pod's own
//! namespace), `<svc>.<ns>`, `<svc>.<ns>.svc` and `<svc>.<ns>.svc.cluster.local` to ONE ready
//! endpoint address — the first one in address order — and each ready endpoint of a headless
//! Service that has a hostname (StatefulSet pods) gets `<hostname>.<svc>.<ns>.svc[.cluster.local]`.
//! Limits:
//!
//! - a client connects straight to the endpoint on the port it names, so this only works when
//!   the Service port equals the target port (true for every Deposito Service);
//! - there is no load balancing: the endpoint is picked when the file is written (at every
//!   container start, then every [`HOSTS_REFRESH`] while the pod runs, and the file is only
//!   rewritten when its text changes), so a name follows its Service's endpoints within a few
//!   seconds;
//! - ClusterIPs themselves stay unreachable; ExternalName Services are left out.
//!
//! Where the endpoints come from: the API server refuses EndpointSlices (and Endpoints) with
//! loopback addresses ("may not be in the loopback range"), so the EndpointSlice controller
//! cannot publish this kubelet's pods (127.0.100.x) and their slices stay empty. The endpoints of
//! a Service with a selector are therefore worked out here the way that controller does it
//! (pods of the namespace matching the selector, with an IP, not finished; ready when the pod is
//! Ready and not terminating, or always with `publishNotReadyAddresses`; a hostname when the
//! pod's `subdomain` names the Service). The ready endpoints of its EndpointSlices (label
//! `kubernetes.io/service-name`) are added too, which covers Services without a selector whose
//! slices are written by hand (with non-loopback addresses).
//!
//! Services, Pods and EndpointSlices come from one reflector each, shared by every pod
//! ([`Sources`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource};
use tokio::task::JoinHandle;

/// How often a running pod's hosts file is re-rendered (and rewritten if it changed).
pub const HOSTS_REFRESH: Duration = Duration::from_secs(3);
/// The cluster domain of the fully qualified names.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Label of the EndpointSlices of a Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Keep `writer` up to date with every object of kind `K` in the cluster (forever).
async fn reflect<K>(client: Client, cfg: watcher::Config, writer: reflector::store::Writer<K>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::all(client);
    watcher(api, cfg)
        .default_backoff()
        .modify(|o| o.meta_mut().managed_fields = None)
        .reflect(writer)
        .for_each(|ev| async move {
            if let Err(e) = ev {
                tracing::warn!(kind = %K::kind(&()), error = %e, "watch for the hosts files");
            }
        })
        .await;
}

/// What the hosts files are made of: every Service, Pod and Service EndpointSlice of the
/// cluster, one reflector each, shared by all pods.
#[derive(Clone)]
pub struct Sources {
    pub services: Store<Service>,
    pub pods: Store<Pod>,
    pub slices: Store<EndpointSlice>,
}

impl Sources {
    /// Start the three reflectors; abort the returned tasks to stop them.
    pub fn start(client: &Client) -> (Self, Vec<JoinHandle<()>>) {
        let (services, sw) = reflector::store();
        let (pods, pw) = reflector::store();
        let (slices, ew) = reflector::store();
        let tasks = vec![
            tokio::spawn(reflect(client.clone(), watcher::Config::default(), sw)),
            tokio::spawn(reflect(client.clone(), watcher::Config::default(), pw)),
            tokio::spawn(reflect(
                client.clone(),
                watcher::Config::default().labels(SERVICE_NAME_LABEL),
                ew,
            )),
        ];
        (
            Sources {
                services,
                pods,
                slices,
            },
            tasks,
        )
    }

    /// Wait until each reflector has listed once.
    pub async fn wait_until_ready(&self) {
        let _ = self.services.wait_until_ready().await;
        let _ = self.pods.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
    }

    /// The Services with ready endpoints, now.
    pub fn services(&self) -> Vec<ServiceEndpoints> {
        let (services, pods, slices) = (
            self.services.state(),
            self.pods.state(),
            self.slices.state(),
        );
        service_endpoints(
            services.iter().map(AsRef::as_ref),
            pods.iter().map(AsRef::as_ref),
            slices.iter().map(AsRef::as_ref),
        )
    }
}

/// One ready endpoint of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyEndpoint {
    pub address: String,
    /// The endpoint's hostname (set for pods whose `subdomain` names the Service).
    pub hostname: Option<String>,
}

/// A Service with its ready endpoints, first in address order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEndpoints {
    pub namespace: String,
    pub name: String,
    pub headless: bool,
    pub endpoints: Vec<ReadyEndpoint>,
}

/// Sort key of an address: numerically for IPs (IPv4 before IPv6), else by text.
fn address_key(a: &str) -> (u8, u128, String) {
    match a.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => (0, u128::from(u32::from(v4)), String::new()),
        Ok(IpAddr::V6(v6)) => (1, u128::from(v6), String::new()),
        Err(_) => (2, 0, a.to_string()),
    }
}

fn pod_is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The endpoint the EndpointSlice controller would make of pod `p` for `svc` (whose selector
/// it matches), if it would make one and mark it ready.
fn pod_endpoint(svc: &Service, p: &Pod) -> Option<ReadyEndpoint> {
    let status = p.status.as_ref()?;
    let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let spec = svc.spec.as_ref()?;
    let terminating = p.metadata.deletion_timestamp.is_some();
    let ready = spec.publish_not_ready_addresses == Some(true) || (pod_is_ready(p) && !terminating);
    if !ready {
        return None;
    }
    let pod_spec = p.spec.as_ref();
    let hostname = pod_spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .filter(|_| pod_spec.and_then(|s| s.subdomain.as_deref()) == svc.metadata.name.as_deref());
    Some(ReadyEndpoint {
        address: ip,
        hostname,
    })
}

/// The Services that have ready endpoints, sorted by namespace then name, each with its ready
/// endpoints (each address once) in address order: the endpoints of the pods its selector
/// matches (see the module comment) plus the ready IP endpoints of its EndpointSlices (a
/// missing `ready` condition counts as ready, as the API says). ExternalName Services, and
/// slices of a Service that does not exist, are left out.
pub fn service_endpoints<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    pods: impl IntoIterator<Item = &'a Pod>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Vec<ServiceEndpoints> {
    let mut pods_by_ns: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for p in pods {
        pods_by_ns
            .entry(p.metadata.namespace.as_deref().unwrap_or_default())
            .or_default()
            .push(p);
    }
    let mut slices_by_svc: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        if s.address_type != "IPv4" && s.address_type != "IPv6" {
            continue;
        }
        if let Some(name) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            let ns = s.metadata.namespace.as_deref().unwrap_or_default();
            slices_by_svc.entry((ns, name)).or_default().push(s);
        }
    }
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        let mut endpoints: Vec<ReadyEndpoint> = Vec::new();
        let mut add = |e: ReadyEndpoint| {
            if !endpoints.iter().any(|x| x.address == e.address) {
                endpoints.push(e);
            }
        };
        if let Some(sel) = spec.selector.as_ref().filter(|s| !s.is_empty()) {
            for p in pods_by_ns.get(ns).into_iter().flatten() {
                let labels = p.metadata.labels.as_ref();
                let matches = sel
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
                if matches {
                    if let Some(e) = pod_endpoint(svc, p) {
                        add(e);
                    }
                }
            }
        }
        for s in slices_by_svc.get(&(ns, name)).into_iter().flatten() {
            for ep in s.endpoints.iter().flatten() {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                // The first address is the one consumers use (the others are the same
                // endpoint).
                if let Some(address) = ep.addresses.first().filter(|_| ready) {
                    add(ReadyEndpoint {
                        address: address.clone(),
                        hostname: ep.hostname.clone().filter(|h| !h.is_empty()),
                    });
                }
            }
        }
        if endpoints.is_empty() {
            continue;
        }
        endpoints.sort_by_key(|e| address_key(&e.address));
        out.push(ServiceEndpoints {
            namespace: ns.to_string(),
            name: name.to_string(),
            headless: spec.cluster_ip.as_deref() == Some("None"),
            endpoints,
        });
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

/// What the hosts file says about the pod itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodHosts {
    pub namespace: String,
    pub pod_ip: String,
    pub hostname: String,
    /// `spec.subdomain`: the pod's own line gets `<hostname>.<subdomain>.<ns>.svc.<domain>`.
    pub subdomain: Option<String>,
    /// `spec.hostAliases`: (ip, names).
    pub host_aliases: Vec<(String, Vec<String>)>,
    /// For a hostNetwork pod: the host's own hosts file, which replaces the standard lines.
    pub host_file: Option<String>,
    /// The machine's host name, which is what the pod's processes see as theirs (they share
    /// the kubelet's UTS namespace): added to the pod's own line so that it resolves, to the
    /// pod IP, as a real pod's host name does.
    pub machine_hostname: Option<String>,
}

impl PodHosts {
    /// The facts of `pod`, which runs on `pod_ip`.
    pub fn of(pod: &Pod, pod_ip: &str) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let hostname = spec
            .hostname_override
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| spec.hostname.clone().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| {
                // The kubelet's rule: a pod name longer than a DNS label is cut to 63
                // characters, without trailing '-' or '.'.
                let cut: String = name.chars().take(63).collect();
                cut.trim_end_matches(['-', '.']).to_string()
            });
        let host_file = spec
            .host_network
            .unwrap_or(false)
            .then(|| std::fs::read_to_string("/etc/hosts").unwrap_or_default());
        PodHosts {
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            pod_ip: pod_ip.to_string(),
            subdomain: spec.subdomain.filter(|s| !s.is_empty()),
            host_aliases: spec
                .host_aliases
                .unwrap_or_default()
                .into_iter()
                .map(|a| (a.ip, a.hostnames.unwrap_or_default()))
                .collect(),
            machine_hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty() && *h != hostname && *h != "localhost"),
            hostname,
            host_file,
        }
    }
}

/// The text of the hosts file of `pod`, given the Services with ready endpoints (pure).
pub fn render(pod: &PodHosts, services: &[ServiceEndpoints]) -> String {
    let mut out = String::from("# Kubernetes-managed hosts file (deposito-kubelet).\n");
    if let Some(host) = &pod.host_file {
        out.push_str(host);
        if !host.is_empty() && !host.ends_with('\n') {
            out.push('\n');
        }
    } else {
        out.push_str(
            "127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\n\
             fe00::0\tip6-mcastprefix\n\
             fe00::1\tip6-allnodes\n\
             fe00::2\tip6-allrouters\n",
        );
        let machine = pod
            .machine_hostname
            .as_ref()
            .map(|h| format!("\t{h}"))
            .unwrap_or_default();
        match &pod.subdomain {
            Some(sub) => out.push_str(&format!(
                "{}\t{}.{sub}.{}.svc.{CLUSTER_DOMAIN}\t{}{machine}\n",
                pod.pod_ip, pod.hostname, pod.namespace, pod.hostname
            )),
            None => out.push_str(&format!("{}\t{}{machine}\n", pod.pod_ip, pod.hostname)),
        }
    }
    let aliases: Vec<_> = pod
        .host_aliases
        .iter()
        .filter(|(ip, names)| !ip.is_empty() && !names.is_empty())
        .collect();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for (ip, names) in aliases {
            out.push_str(&format!("{ip}\t{}\n", names.join("\t")));
        }
    }
    if services.is_empty() {
        return out;
    }
    out.push_str(
        "\n# Services, in place of cluster DNS and kube-proxy: each name maps to ONE ready \
         endpoint\n# (the first by address), so it works when the Service port equals the \
         target port.\n# Rewritten every few seconds; ClusterIPs stay unreachable.\n",
    );
    let mut pod_records: BTreeSet<(String, String)> = BTreeSet::new();
    for s in services {
        let Some(first) = s.endpoints.first() else {
            continue;
        };
        let (n, ns) = (&s.name, &s.namespace);
        let short = if *ns == pod.namespace {
            format!("{n}\t")
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{}\t{short}{n}.{ns}\t{n}.{ns}.svc\t{n}.{ns}.svc.{CLUSTER_DOMAIN}\n",
            first.address
        ));
        if s.headless {
            for e in &s.endpoints {
                if let Some(h) = &e.hostname {
                    pod_records.insert((
                        format!("{h}.{n}.{ns}.svc"),
                        format!(
                            "{}\t{h}.{n}.{ns}.svc\t{h}.{n}.{ns}.svc.{CLUSTER_DOMAIN}\n",
                            e.address
                        ),
                    ));
                }
            }
        }
    }
    if !pod_records.is_empty() {
        out.push_str("\n# Ready pods of headless Services.\n");
        for (_, line) in pod_records {
            out.push_str(&line);
        }
    }
    out
}

/// Put `content` into the file at `path`, keeping its inode: the file is bind-mounted over
/// `/etc/hosts` in running containers, and a rename would leave them with the old file. Returns
/// whether the file was written (false when it already holds `content`).
///
/// The new text is written over the old one in a single write from offset 0, and only then is
/// the file cut to its new length, so a reader never sees an empty file; it may, in the
/// moment between the two, see the new text followed by the tail of a longer old one.
pub fn write_in_place(path: &Path, content: &[u8]) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    match std::fs::read(path) {
        Ok(cur) if cur == content => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // First time: no container has it yet, create it whole.
            crate::volumes::write_atomic(path, content)?;
            return Ok(true);
        }
        Err(e) => return Err(e),
    }
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all_at(content, 0)?;
    f.set_len(content.len() as u64)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
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
        assert!(
            lines.contains(&"127.0.100.8\tapi.other\tapi.other.svc\tapi.other.svc.cluster.local")
        );
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
        assert!(render(&p, &[])
            .contains("127.0.100.9\trep-0.rep.d.svc.cluster.local\trep-0\tbuildbox\n"));
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
}
