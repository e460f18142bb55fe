//! A scheduler of one node: binds every unscheduled pod meant for the default scheduler.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;

/// Whether this kubelet should bind `pod`.
pub fn wants_binding(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let default_sched = matches!(
        spec.scheduler_name.as_deref(),
        None | Some("") | Some("default-scheduler")
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

async fn bind(client: Client, pod: Pod, node: String) {
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
                return;
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                tracing::debug!(pod = %name, error = %e.message, "not binding");
                return;
            }
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "binding failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Watch unscheduled pods forever and bind them to `node`.
pub async fn run(client: Client, node: String) {
    let api: Api<Pod> = Api::all(client.clone());
    let cfg = watcher::Config::default().fields("spec.nodeName=");
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    loop {
        match stream.try_next().await {
            Ok(Some(Event::Apply(p) | Event::InitApply(p))) if wants_binding(&p) => {
                tokio::spawn(bind(client.clone(), p, node.clone()));
            }
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => tracing::warn!(error = %e, "unscheduled pod watch"),
        }
    }
}

#[cfg(test)]
mod tests {
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
}
