//! Command line, image → binary mapping.

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
    /// Name of the Node object this kubelet registers and serves.
    #[arg(long, default_value = "deposito-node")]
    pub node_name: String,
    /// First three octets of pod IPs (127.A.B): pods get 127.A.B.2 .. .254, then 127.A.(B+1).2 ...
    #[arg(long, default_value = "127.0.100")]
    pub ip_prefix: String,
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
        let base = p.file_name().map(|f| f.to_owned()).unwrap_or_default();
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
