//! The Node object and its heartbeats (node Lease + Ready condition).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use crate::NodeSpec;

/// How long the lease is valid; renewed every `LEASE_RENEW`.
pub const LEASE_SECONDS: i32 = 40;
pub const LEASE_RENEW: Duration = Duration::from_secs(10);

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

fn resources() -> BTreeMap<String, Quantity> {
    [
        ("cpu", "2"),
        ("memory", "24Gi"),
        ("pods", "110"),
        ("ephemeral-storage", "100Gi"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
    .collect()
}

/// Node conditions: Ready, and no pressure. `since` is the transition time.
pub fn node_conditions(heartbeat: &Time, since: &Time) -> Vec<NodeCondition> {
    let cond = |kind: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(heartbeat.clone()),
        last_transition_time: Some(since.clone()),
    };
    vec![
        cond(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        cond(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        cond(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        cond(
            "Ready",
            "True",
            "KubeletReady",
            "process kubelet is posting ready status",
        ),
    ]
}

fn node_status(name: &str, heartbeat: &Time, since: &Time) -> NodeStatus {
    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: "127.0.0.1".into(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.into(),
            },
        ]),
        allocatable: Some(resources()),
        capacity: Some(resources()),
        conditions: Some(node_conditions(heartbeat, since)),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
            boot_id: String::new(),
            container_runtime_version: "process://0.1.0".into(),
            kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .into(),
            kube_proxy_version: String::new(),
            kubelet_version: "v1.36.0-deposito".into(),
            machine_id: String::new(),
            operating_system: "linux".into(),
            os_image: "deposito process kubelet".into(),
            system_uuid: String::new(),
            swap: None,
        }),
        ..Default::default()
    }
}

/// The labels of a served node: the usual kubelet labels, then those given with `--node` (which
/// win over the usual ones).
pub fn node_labels(spec: &NodeSpec) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", spec.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("node.kubernetes.io/instance-type", "process"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    labels.extend(spec.labels.clone());
    labels
}

/// Create the Node if missing (or give an existing one its labels) and post its status.
pub async fn register(client: &Client, spec: &NodeSpec, since: &Time) -> Result<Node> {
    let name = spec.name.as_str();
    let api: Api<Node> = Api::all(client.clone());
    let labels = node_labels(spec);
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = name, "registered node"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // From an earlier run in the same state: make sure it has today's labels.
            api.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "labels": labels } })),
            )
            .await?;
            tracing::info!(node = name, "node already registered");
        }
        Err(e) => return Err(e.into()),
    }
    post_status(client, name, since).await
}

async fn post_status(client: &Client, name: &str, since: &Time) -> Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let status = node_status(name, &Time(now()), since);
    Ok(api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?)
}

async fn renew_lease(client: &Client, node: &Node) -> Result<()> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let spec = LeaseSpec {
        holder_identity: Some(name.clone()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        renew_time: Some(MicroTime(now())),
        ..Default::default()
    };
    match api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some("kube-node-lease".into()),
                    owner_references: node.metadata.uid.clone().map(|uid| {
                        vec![OwnerReference {
                            api_version: "v1".into(),
                            kind: "Node".into(),
                            name: name.clone(),
                            uid,
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease).await?;
            tracing::info!(node = %name, "created node lease");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Register the node (retrying until the API server answers), then keep it alive forever.
pub async fn run(client: Client, spec: NodeSpec) {
    let name = spec.name.clone();
    let since = Time(now());
    let mut node = loop {
        match register(&client, &spec, &since).await {
            Ok(n) => break n,
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "registering node; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    let mut tick = tokio::time::interval(LEASE_RENEW);
    let mut n = 0u64;
    loop {
        tick.tick().await;
        if let Err(e) = renew_lease(&client, &node).await {
            tracing::warn!(node = %name, error = %e, "renewing node lease");
        }
        // Refresh the Ready heartbeat every other lease renewal (20 s).
        if n % 2 == 1 {
            match post_status(&client, &name, &since).await {
                Ok(nd) => node = nd,
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "posting node status");
                    if let Ok(nd) = register(&client, &spec, &since).await {
                        node = nd;
                    }
                }
            }
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_condition() {
        let t = Time(now());
        let c = node_conditions(&t, &t);
        let ready = c.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        let s = node_status("n", &t, &t);
        assert_eq!(s.capacity.unwrap()["memory"], Quantity("24Gi".into()));
        assert_eq!(s.addresses.unwrap()[0].address, "127.0.0.1");
    }

    #[test]
    fn labels() {
        let spec = crate::cli::parse_node_spec("a1,topology.kubernetes.io/zone=zone-a").unwrap();
        let l = node_labels(&spec);
        assert_eq!(l["kubernetes.io/hostname"], "a1");
        assert_eq!(l["kubernetes.io/os"], "linux");
        assert_eq!(l["topology.kubernetes.io/zone"], "zone-a");
        assert_eq!(l.len(), 5);
    }
}
