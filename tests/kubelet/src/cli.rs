//! Command line, image → binary mapping, served nodes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Parser;

/// Process kubelet: runs the Pods of a real control plane as local processes.
#[derive(Debug, Clone, Parser)]
#[command(name = "deposito-kubelet", version)]
pub struct Cli {
    /// Admin kubeconfig of the control plane.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Directory for pod state, PVC data, logs and the IP map.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// `PATTERN=DIR`: containers whose image matches the glob PATTERN run binaries from DIR.
    #[arg(long = "image", value_parser = parse_image_rule)]
    pub images: Vec<ImageRule>,
    /// Name of a Node (without extra labels) this kubelet registers and serves. Without
    /// `--node-name` and `--node`, it serves the one Node `deposito-node`.
    #[arg(long, value_name = "NAME", value_parser = parse_node_name)]
    pub node_name: Option<String>,
    /// Register and serve the Node NAME, with the extra labels KEY=VALUE (besides the usual
    /// kubelet labels). Repeat it to serve several nodes, e.g. one per topology zone:
    /// `--node a1,topology.kubernetes.io/zone=zone-a --node b1,topology.kubernetes.io/zone=zone-b`.
    #[arg(long = "node", value_name = "NAME[,KEY=VALUE...]", value_parser = parse_node_spec)]
    pub node_specs: Vec<NodeSpec>,
    /// First three octets of pod IPs (127.A.B): pods get 127.A.B.2 .. .254, then 127.A.(B+1).2 ...
    #[arg(long, default_value = "127.0.100")]
    pub ip_prefix: String,
}

/// The node served when neither `--node-name` nor `--node` is given.
pub const DEFAULT_NODE: &str = "deposito-node";

impl Cli {
    /// The nodes to serve: `--node-name` (if given), then every `--node`, in order; the single
    /// node [`DEFAULT_NODE`] when there is neither. A name given twice is an error.
    pub fn nodes(&self) -> Result<Vec<NodeSpec>, String> {
        let mut nodes: Vec<NodeSpec> = self
            .node_name
            .iter()
            .map(|n| NodeSpec {
                name: n.clone(),
                labels: BTreeMap::new(),
            })
            .collect();
        for spec in &self.node_specs {
            if nodes.iter().any(|n| n.name == spec.name) {
                return Err(format!("node {:?} is given more than once", spec.name));
            }
            nodes.push(spec.clone());
        }
        if nodes.is_empty() {
            nodes.push(NodeSpec {
                name: DEFAULT_NODE.into(),
                labels: BTreeMap::new(),
            });
        }
        Ok(nodes)
    }
}

/// One served node: its name and the labels given with `--node` (the kubelet adds its usual
/// labels, see `node::node_labels`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A DNS-1123 subdomain: at most 253 characters, lower-case alphanumerics, `-` and `.`,
/// starting and ending with an alphanumeric.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// A label name or value (non-empty): at most 63 characters, alphanumerics, `-`, `_` and `.`,
/// starting and ending with an alphanumeric.
fn is_label_word(s: &str) -> bool {
    let alnum = |c: Option<u8>| c.is_some_and(|b| b.is_ascii_alphanumeric());
    s.len() <= 63
        && alnum(s.bytes().next())
        && alnum(s.bytes().last())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if !is_dns_subdomain(p) {
            return Err(format!(
                "label key {key:?}: prefix {p:?} is not a DNS subdomain"
            ));
        }
    }
    if !is_label_word(name) {
        return Err(format!(
            "label key {key:?}: name must be 1-63 characters [A-Za-z0-9._-], starting and ending alphanumeric"
        ));
    }
    Ok(())
}

fn parse_node_name(s: &str) -> Result<String, String> {
    if is_dns_subdomain(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "node name {s:?} must be a DNS subdomain (lower-case a-z, 0-9, '-', '.')"
        ))
    }
}

/// Parse one `--node NAME[,KEY=VALUE...]`.
pub fn parse_node_spec(s: &str) -> Result<NodeSpec, String> {
    let mut parts = s.split(',');
    let name = parse_node_name(parts.next().unwrap_or_default())?;
    let mut labels = BTreeMap::new();
    for part in parts {
        let (key, value) = part.split_once('=').ok_or_else(|| {
            format!("expected NAME[,KEY=VALUE...], got label {part:?} without '='")
        })?;
        check_label_key(key)?;
        if !value.is_empty() && !is_label_word(value) {
            return Err(format!(
                "label {key}: value {value:?} must be at most 63 characters [A-Za-z0-9._-], starting and ending alphanumeric"
            ));
        }
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            return Err(format!("label {key:?} is given twice"));
        }
    }
    Ok(NodeSpec { name, labels })
}

/// One `--image PATTERN=DIR` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRule {
    pub pattern: String,
    pub dir: PathBuf,
}

fn parse_image_rule(s: &str) -> Result<ImageRule, String> {
    let (pattern, dir) = s
        .split_once('=')
        .ok_or_else(|| format!("expected PATTERN=DIR, got {s:?}"))?;
    if pattern.is_empty() || dir.is_empty() {
        return Err(format!("expected PATTERN=DIR, got {s:?}"));
    }
    Ok(ImageRule {
        pattern: pattern.to_string(),
        dir: PathBuf::from(dir),
    })
}

/// Glob match supporting `*` (any run of characters) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// The binary name implied by an image: last path component, without tag or digest.
pub fn image_binary_name(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last).to_string()
}

/// Resolve the executable for a container.
///
/// Returns the path of the binary and the remaining argv (without argv[0]).
pub fn resolve_binary(
    rules: &[ImageRule],
    image: &str,
    command: &[String],
) -> Result<PathBuf, String> {
    let rule = rules
        .iter()
        .find(|r| glob_match(&r.pattern, image))
        .ok_or_else(|| format!("no --image rule matches image {image:?}"))?;
    let name = match command.first() {
        Some(c) if !c.is_empty() => c.clone(),
        _ => image_binary_name(image),
    };
    if name.contains('/') {
        let p = Path::new(&name);
        if p.is_absolute() && p.exists() {
            return Ok(p.to_path_buf());
        }
        let base = p
            .file_name()
            .map(std::borrow::ToOwned::to_owned)
            .unwrap_or_default();
        let cand = rule.dir.join(base);
        if cand.exists() {
            return Ok(cand);
        }
        return Err(format!(
            "binary {name:?} not found (looked in {})",
            rule.dir.display()
        ));
    }
    let cand = rule.dir.join(&name);
    if cand.exists() {
        return Ok(cand);
    }
    // Fall back to the host PATH (sh, python3 ...), which makes small test pods easy.
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let c = d.join(&name);
            if c.is_file() {
                return Ok(c);
            }
        }
    }
    Err(format!(
        "binary {name:?} not found in {} or PATH",
        rule.dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        let cases = [
            ("deposito:*", "deposito:dev", true),
            ("deposito:*", "deposito:", true),
            ("deposito:*", "depositox:dev", false),
            ("*", "anything/at:all", true),
            ("reg/*/img:?", "reg/a/b/img:1", true),
            ("reg/*/img:?", "reg/a/img:12", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("exact", "exact", true),
            ("exact", "exac", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(glob_match(p, t), want, "{p} vs {t}");
        }
    }

    #[test]
    fn image_names() {
        assert_eq!(
            image_binary_name("deposito-replica:dev"),
            "deposito-replica"
        );
        assert_eq!(
            image_binary_name("ghcr.io/x/deposito-operator:1.0"),
            "deposito-operator"
        );
        assert_eq!(image_binary_name("localhost:5000/foo"), "foo");
        assert_eq!(image_binary_name("foo@sha256:abc"), "foo");
    }

    #[test]
    fn rules_parse() {
        let r = parse_image_rule("deposito:*=/work/main/target/release").unwrap();
        assert_eq!(r.pattern, "deposito:*");
        assert_eq!(r.dir, PathBuf::from("/work/main/target/release"));
        assert!(parse_image_rule("nodir").is_err());
    }

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn node_specs_parse() {
        assert_eq!(
            parse_node_spec("a1").unwrap(),
            NodeSpec {
                name: "a1".into(),
                labels: BTreeMap::new()
            }
        );
        assert_eq!(
            parse_node_spec("zone-a-node,topology.kubernetes.io/zone=zone-a,rack=r1,empty=")
                .unwrap(),
            NodeSpec {
                name: "zone-a-node".into(),
                labels: labels(&[
                    ("topology.kubernetes.io/zone", "zone-a"),
                    ("rack", "r1"),
                    ("empty", "")
                ])
            }
        );
        for bad in [
            "",
            ",zone=a",
            "Upper",
            "-a",
            "a_b",
            "a,",
            "a,zone",
            "a,=v",
            "a,zone=a,zone=b",
            "a,bad key=v",
            "a,Bad_Prefix/zone=v",
            "a,/zone=v",
            "a,zone=-v",
            "a,zone=v/w",
        ] {
            let e = parse_node_spec(bad).expect_err(bad);
            assert!(!e.contains('\n'), "{e}");
        }
        let long = "x".repeat(64);
        assert!(parse_node_spec(&format!("a,{long}=v")).is_err());
        assert!(parse_node_spec(&format!("a,k={long}")).is_err());
    }

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        let base = ["deposito-kubelet", "--kubeconfig", "k", "--state-dir", "s"];
        Cli::try_parse_from(base.iter().chain(args))
    }

    #[test]
    fn node_flags() {
        let names =
            |c: &Cli| -> Vec<String> { c.nodes().unwrap().into_iter().map(|n| n.name).collect() };
        assert_eq!(names(&cli(&[]).unwrap()), [DEFAULT_NODE]);
        assert_eq!(names(&cli(&["--node-name", "n1"]).unwrap()), ["n1"]);
        let c = cli(&[
            "--node",
            "a1,topology.kubernetes.io/zone=zone-a",
            "--node",
            "b1,topology.kubernetes.io/zone=zone-b",
        ])
        .unwrap();
        let nodes = c.nodes().unwrap();
        assert_eq!(names(&c), ["a1", "b1"]);
        assert_eq!(
            nodes[1].labels,
            labels(&[("topology.kubernetes.io/zone", "zone-b")])
        );
        assert!(cli(&["--node-name", "n1", "--node", "n2"])
            .unwrap()
            .nodes()
            .unwrap()
            .iter()
            .all(|n| n.labels.is_empty()));
        assert!(cli(&["--node", "a1", "--node", "a1,x=y"])
            .unwrap()
            .nodes()
            .is_err());
        assert!(cli(&["--node", "a1,zone"]).is_err());
        assert!(cli(&["--node-name", "Bad"]).is_err());
    }

    #[test]
    fn resolve() {
        let dir = std::env::temp_dir().join(format!("kubelet-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("mybin"), "").unwrap();
        let rules = vec![ImageRule {
            pattern: "deposito:*".into(),
            dir: dir.clone(),
        }];
        assert_eq!(
            resolve_binary(&rules, "deposito:dev", &["mybin".into()]).unwrap(),
            dir.join("mybin")
        );
        assert!(resolve_binary(&rules, "other:dev", &["mybin".into()]).is_err());
        assert_eq!(
            resolve_binary(&rules, "deposito:dev", &["/x/y/mybin".into()]).unwrap(),
            dir.join("mybin")
        );
        assert!(resolve_binary(&rules, "deposito:dev", &[]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
