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
mod tests;
