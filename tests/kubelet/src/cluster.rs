//! What the kubelet knows about the control plane: API server address and CA, taken from the
//! admin kubeconfig, and a writer for per-pod kubeconfig files.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use kube::config::Kubeconfig;

/// API server address and trust anchor.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub server: String,
    pub host: String,
    pub port: u16,
    /// PEM bytes of the CA, if the kubeconfig has one.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure: bool,
}

impl ClusterInfo {
    pub fn from_kubeconfig(path: &Path) -> Result<Self> {
        let kc =
            Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
        let ctx_name = kc
            .current_context
            .clone()
            .or_else(|| kc.contexts.first().map(|c| c.name.clone()))
            .ok_or_else(|| anyhow!("kubeconfig has no context"))?;
        let ctx = kc
            .contexts
            .iter()
            .find(|c| c.name == ctx_name)
            .and_then(|c| c.context.clone())
            .ok_or_else(|| anyhow!("context {ctx_name} not found"))?;
        let cluster = kc
            .clusters
            .iter()
            .find(|c| c.name == ctx.cluster)
            .and_then(|c| c.cluster.clone())
            .ok_or_else(|| anyhow!("cluster {} not found", ctx.cluster))?;
        let server = cluster
            .server
            .clone()
            .ok_or_else(|| anyhow!("cluster has no server"))?;
        let (host, port) = split_server(&server)?;
        let ca_pem = if let Some(data) = &cluster.certificate_authority_data {
            Some(base64_decode(data).ok_or_else(|| anyhow!("bad certificate-authority-data"))?)
        } else if let Some(file) = &cluster.certificate_authority {
            let p = Path::new(file);
            let p = if p.is_relative() {
                path.parent().unwrap_or(Path::new(".")).join(p)
            } else {
                p.to_path_buf()
            };
            Some(std::fs::read(&p).with_context(|| format!("reading CA {}", p.display()))?)
        } else {
            None
        };
        Ok(ClusterInfo {
            server,
            host,
            port,
            ca_pem,
            insecure: cluster.insecure_skip_tls_verify.unwrap_or(false),
        })
    }

    /// A kubeconfig that authenticates with a bearer token.
    pub fn token_kubeconfig(&self, token: &str, namespace: &str) -> String {
        let mut cluster = format!("    server: {}\n", yaml_str(&self.server));
        if let Some(ca) = &self.ca_pem {
            cluster.push_str(&format!(
                "    certificate-authority-data: {}\n",
                base64_encode(ca)
            ));
        }
        if self.insecure {
            cluster.push_str("    insecure-skip-tls-verify: true\n");
        }
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: cluster\n  cluster:\n{cluster}users:\n- name: pod\n  user:\n    token: {}\ncontexts:\n- name: pod\n  context:\n    cluster: cluster\n    user: pod\n    namespace: {}\ncurrent-context: pod\n",
            yaml_str(token),
            yaml_str(namespace)
        )
    }
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn split_server(server: &str) -> Result<(String, u16)> {
    let (scheme, rest) = server.split_once("://").unwrap_or(("https", server));
    let authority = rest.split('/').next().unwrap_or(rest);
    let default_port = if scheme == "http" { 80 } else { 443 };
    if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6
            .split_once(']')
            .ok_or_else(|| anyhow!("bad server {server}"))?;
        let port = p
            .strip_prefix(':')
            .map(str::parse)
            .transpose()?
            .unwrap_or(default_port);
        return Ok((h.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_string(), p.parse().context("bad server port")?)),
        None => Ok((authority.to_string(), default_port)),
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64_roundtrip() {
        for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            let e = base64_encode(s.as_bytes());
            assert_eq!(base64_decode(&e).unwrap(), s.as_bytes());
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
    }

    #[test]
    fn servers() {
        assert_eq!(
            split_server("https://127.0.0.1:6443").unwrap(),
            ("127.0.0.1".into(), 6443)
        );
        assert_eq!(
            split_server("https://example.com").unwrap(),
            ("example.com".into(), 443)
        );
        assert_eq!(
            split_server("https://[::1]:6443/").unwrap(),
            ("::1".into(), 6443)
        );
    }
}
