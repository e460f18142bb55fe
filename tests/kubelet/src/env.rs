//! Container environment: `$(VAR)` expansion, fieldRef, secret/configMap references.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod};

/// Data of the Secrets and ConfigMaps a pod refers to, fetched beforehand. An absent name means
/// the object does not exist.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub secrets: HashMap<String, BTreeMap<String, Vec<u8>>>,
    pub config_maps: HashMap<String, BTreeMap<String, Vec<u8>>>,
}

/// Facts about the running pod that the API object may not carry yet.
#[derive(Debug, Clone)]
pub struct PodFacts {
    pub pod_ip: String,
    pub host_ip: String,
    pub node_name: String,
    pub api_host: String,
    pub api_port: u16,
}

/// Kubernetes `$(VAR)` expansion (third_party/forked/golang/expansion): `$$` is a literal `$`,
/// `$(NAME)` is replaced when NAME is known and left as written otherwise.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let b = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < b.len() {
        if b[cursor] == b'$' && cursor + 1 < b.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest[1..].find(')') {
                    Some(i) => {
                        let name = &rest[1..1 + i];
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        i + 2
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // "$x": the operator and the next character, copied as they are.
                    let ch = rest.chars().next().unwrap_or_default();
                    out.push('$');
                    out.push(ch);
                    ch.len_utf8()
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    if checkpoint < input.len() {
        out.push_str(&input[checkpoint..]);
    }
    out
}

/// Value of a downward-API field path.
pub fn field_ref(pod: &Pod, path: &str, facts: &PodFacts) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let sub = |prefix: &str| -> Option<String> {
        let rest = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(rest.to_string())
    };
    if let Some(k) = sub("metadata.labels['") {
        return Ok(meta
            .labels
            .as_ref()
            .and_then(|l| l.get(&k).cloned())
            .unwrap_or_default());
    }
    if let Some(k) = sub("metadata.annotations['") {
        return Ok(meta
            .annotations
            .as_ref()
            .and_then(|l| l.get(&k).cloned())
            .unwrap_or_default());
    }
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_else(|| "default".into()),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| facts.node_name.clone()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        _ => return Err(format!("unsupported fieldRef {path:?}")),
    })
}

/// Names of the Secrets and ConfigMaps referenced by env/envFrom of the given containers.
pub fn referenced_objects<'a>(
    containers: impl IntoIterator<Item = &'a Container>,
) -> (Vec<String>, Vec<String>) {
    let (mut secrets, mut cms) = (Vec::new(), Vec::new());
    for c in containers {
        for e in c.env.iter().flatten() {
            if let Some(vf) = &e.value_from {
                if let Some(s) = &vf.secret_key_ref {
                    secrets.push(s.name.clone());
                }
                if let Some(s) = &vf.config_map_key_ref {
                    cms.push(s.name.clone());
                }
            }
        }
        for ef in c.env_from.iter().flatten() {
            if let Some(s) = &ef.secret_ref {
                secrets.push(s.name.clone());
            }
            if let Some(s) = &ef.config_map_ref {
                cms.push(s.name.clone());
            }
        }
    }
    secrets.sort();
    secrets.dedup();
    cms.sort();
    cms.dedup();
    (secrets, cms)
}

/// Ordered environment with override semantics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EnvList(pub Vec<(String, String)>);

impl EnvList {
    pub fn set(&mut self, k: &str, v: String) {
        match self.0.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v,
            None => self.0.push((k.to_string(), v)),
        }
    }
    pub fn get(&self, k: &str) -> Option<String> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The container's environment as the real kubelet computes it: service variables, then
/// `envFrom`, then `env` (each value expanded against what was defined before it).
pub fn build_env(
    pod: &Pod,
    c: &Container,
    facts: &PodFacts,
    src: &Sources,
) -> Result<EnvList, String> {
    let mut env = EnvList::default();
    env.set("KUBERNETES_SERVICE_HOST", facts.api_host.clone());
    env.set("KUBERNETES_SERVICE_PORT", facts.api_port.to_string());
    env.set("KUBERNETES_SERVICE_PORT_HTTPS", facts.api_port.to_string());
    env.set(
        "KUBERNETES_PORT",
        format!("tcp://{}:{}", facts.api_host, facts.api_port),
    );
    for ef in c.env_from.iter().flatten() {
        let prefix = ef.prefix.clone().unwrap_or_default();
        let (data, optional, what) = if let Some(s) = &ef.secret_ref {
            (
                src.secrets.get(&s.name),
                s.optional.unwrap_or(false),
                format!("secret {}", s.name),
            )
        } else if let Some(s) = &ef.config_map_ref {
            (
                src.config_maps.get(&s.name),
                s.optional.unwrap_or(false),
                format!("configmap {}", s.name),
            )
        } else {
            continue;
        };
        match data {
            Some(d) => {
                for (k, v) in d {
                    env.set(&format!("{prefix}{k}"), text(v));
                }
            }
            None if optional => {}
            None => return Err(format!("{what} not found")),
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            let snapshot = env.clone();
            expand(v, &|n| snapshot.get(n))
        } else if let Some(vf) = &e.value_from {
            if let Some(f) = &vf.field_ref {
                field_ref(pod, &f.field_path, facts)?
            } else if let Some(s) = &vf.secret_key_ref {
                match src.secrets.get(&s.name).map(|d| d.get(&s.key)) {
                    Some(Some(v)) => text(v),
                    _ if s.optional.unwrap_or(false) => continue,
                    _ => return Err(format!("secret {} key {} not found", s.name, s.key)),
                }
            } else if let Some(s) = &vf.config_map_key_ref {
                match src.config_maps.get(&s.name).map(|d| d.get(&s.key)) {
                    Some(Some(v)) => text(v),
                    _ if s.optional.unwrap_or(false) => continue,
                    _ => return Err(format!("configmap {} key {} not found", s.name, s.key)),
                }
            } else if let Some(r) = &vf.resource_field_ref {
                resource_field(&r.resource)
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(&e.name, value);
    }
    Ok(env)
}

/// Node-level defaults for resourceFieldRef (this "node" has 2 CPUs and 24Gi).
fn resource_field(resource: &str) -> String {
    match resource {
        "limits.cpu" | "requests.cpu" => "2".into(),
        "limits.memory" | "requests.memory" => (24u64 << 30).to_string(),
        _ => "0".into(),
    }
}

/// Command line after expansion: (command ++ args), each expanded against `env`.
pub fn expand_argv(c: &Container, env: &EnvList) -> (Vec<String>, Vec<String>) {
    let f = |s: &String| expand(s, &|n| env.get(n));
    (
        c.command.iter().flatten().map(f).collect(),
        c.args.iter().flatten().map(f).collect(),
    )
}

/// Pods here share the host's network, so a wildcard listen address (`[::]:PORT`,
/// `0.0.0.0:PORT`) in an argument would listen beyond loopback and collide between pods:
/// it becomes the pod's own loopback IP, which is what "every address" means inside a real
/// pod's network namespace as far as other pods can tell.
pub fn confine_wildcards(arg: &str, pod_ip: &str) -> String {
    arg.replace("[::]:", &format!("{pod_ip}:"))
        .replace("0.0.0.0:", &format!("{pod_ip}:"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec};
    use kube::api::ObjectMeta;

    fn lookup(n: &str) -> Option<String> {
        match n {
            "VAR_A" => Some("A".into()),
            "VAR_B" => Some("B".into()),
            "POD_IP" => Some("127.0.100.2".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn wildcard_listen_addresses_become_the_pod_ip() {
        let ip = "127.0.100.4";
        assert_eq!(
            confine_wildcards("--listen=[::]:7800", ip),
            "--listen=127.0.100.4:7800"
        );
        assert_eq!(
            confine_wildcards("--listen=0.0.0.0:9090", ip),
            "--listen=127.0.100.4:9090"
        );
        assert_eq!(
            confine_wildcards("--listen=127.0.100.4:7070", ip),
            "--listen=127.0.100.4:7070"
        );
        assert_eq!(confine_wildcards("plain", ip), "plain");
    }

    #[test]
    fn expansion_table() {
        let cases = [
            ("", ""),
            ("plain", "plain"),
            ("$(VAR_A)", "A"),
            ("$(VAR_A)-$(VAR_B)", "A-B"),
            ("$(POD_IP):8080", "127.0.100.2:8080"),
            ("--listen=$(POD_IP):8080", "--listen=127.0.100.2:8080"),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("x$(UNKNOWN)y", "x$(UNKNOWN)y"),
            ("$$(VAR_A)", "$(VAR_A)"),
            ("$$$(VAR_A)", "$A"),
            ("$$$$(VAR_A)", "$$(VAR_A)"),
            ("$$", "$"),
            ("$", "$"),
            ("a$", "a$"),
            ("$VAR_A", "$VAR_A"),
            ("$(VAR_A", "$(VAR_A"),
            ("$()", "$()"),
            ("$(EMPTY)", ""),
            ("$(VAR_A)$(VAR_B)", "AB"),
            ("é$(VAR_A)ü", "éAü"),
            ("$é", "$é"),
            ("?$(VAR_A)", "?A"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &lookup), want, "input {input:?}");
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("rep-0".into()),
                namespace: Some("ns".into()),
                uid: Some("u-1".into()),
                labels: Some([("app".to_string(), "rep".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                service_account_name: Some("sa".into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn facts() -> PodFacts {
        PodFacts {
            pod_ip: "127.0.100.7".into(),
            host_ip: "127.0.0.1".into(),
            node_name: "n1".into(),
            api_host: "127.0.0.1".into(),
            api_port: 6443,
        }
    }

    #[test]
    fn field_refs() {
        let p = pod();
        let f = facts();
        let table = [
            ("metadata.name", "rep-0"),
            ("metadata.namespace", "ns"),
            ("metadata.uid", "u-1"),
            ("spec.nodeName", "n1"),
            ("spec.serviceAccountName", "sa"),
            ("status.podIP", "127.0.100.7"),
            ("status.hostIP", "127.0.0.1"),
            ("metadata.labels['app']", "rep"),
            ("metadata.labels['none']", ""),
        ];
        for (path, want) in table {
            assert_eq!(field_ref(&p, path, &f).unwrap(), want, "{path}");
        }
        assert!(field_ref(&p, "status.bogus", &f).is_err());
    }

    #[test]
    fn env_building() {
        let var = |n: &str, v: &str| EnvVar {
            name: n.into(),
            value: Some(v.into()),
            value_from: None,
        };
        let c = Container {
            name: "c".into(),
            env: Some(vec![
                EnvVar {
                    name: "POD_IP".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    }),
                },
                var("ADDR", "$(POD_IP):8080"),
                var("LATER", "$(DEFINED_AFTER)"),
                var("DEFINED_AFTER", "x"),
            ]),
            args: Some(vec!["--listen".into(), "$(ADDR)".into(), "$(LATER)".into()]),
            ..Default::default()
        };
        let env = build_env(&pod(), &c, &facts(), &Sources::default()).unwrap();
        assert_eq!(env.get("ADDR").unwrap(), "127.0.100.7:8080");
        assert_eq!(env.get("LATER").unwrap(), "$(DEFINED_AFTER)");
        assert_eq!(env.get("KUBERNETES_SERVICE_PORT").unwrap(), "6443");
        let (_, args) = expand_argv(&c, &env);
        assert_eq!(
            args,
            vec!["--listen", "127.0.100.7:8080", "$(DEFINED_AFTER)"]
        );
    }
}
