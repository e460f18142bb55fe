//! Readiness and liveness probes: httpGet (HTTP, or HTTPS without checking the certificate,
//! as the kubelet does), tcpSocket, exec (run on the host).

mod tls;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Http {
        host: String,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
        /// `scheme: HTTPS`: TLS, any certificate accepted.
        https: bool,
    },
    Tcp {
        host: String,
        port: u16,
    },
    Exec {
        command: Vec<String>,
    },
}

/// A probe with its timing, periods capped so that tests run fast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeCfg {
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// Longest period between probes, whatever the spec asks.
pub const MAX_PERIOD: Duration = Duration::from_secs(2);

fn resolve_port(p: &IntOrString, c: &Container) -> Result<u16, String> {
    match p {
        IntOrString::Int(i) => u16::try_from(*i).map_err(|_| format!("bad port {i}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            c.ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok())
                .ok_or_else(|| format!("named port {name:?} not found in container {}", c.name))
        }
    }
}

/// Turn a spec probe into a config; `pod_ip` is the default host.
pub fn probe_config(p: &Probe, c: &Container, pod_ip: &str) -> Result<ProbeCfg, String> {
    let secs = |v: Option<i32>, d: i32| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
    let action = if let Some(h) = &p.http_get {
        Action::Http {
            host: h
                .host
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| pod_ip.to_string()),
            port: resolve_port(&h.port, c)?,
            path: h
                .path
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "/".into()),
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|hh| (hh.name.clone(), hh.value.clone()))
                .collect(),
            https: match h.scheme.as_deref() {
                None | Some("HTTP") => false,
                Some("HTTPS") => true,
                Some(other) => return Err(format!("probe scheme {other:?} is not HTTP or HTTPS")),
            },
        }
    } else if let Some(t) = &p.tcp_socket {
        Action::Tcp {
            host: t
                .host
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| pod_ip.to_string()),
            port: resolve_port(&t.port, c)?,
        }
    } else if let Some(g) = &p.grpc {
        Action::Tcp {
            host: pod_ip.to_string(),
            port: u16::try_from(g.port).map_err(|e| e.to_string())?,
        }
    } else if let Some(e) = &p.exec {
        Action::Exec {
            command: e.command.clone().unwrap_or_default(),
        }
    } else {
        return Err("probe has no handler".into());
    };
    Ok(ProbeCfg {
        action,
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).clamp(Duration::from_millis(500), MAX_PERIOD),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
    })
}

/// Run the probe once.
pub async fn run_once(action: &Action, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, run_inner(action))
        .await
        .unwrap_or(false)
}

async fn run_inner(action: &Action) -> bool {
    match action {
        Action::Tcp { host, port } => TcpStream::connect((host.as_str(), *port)).await.is_ok(),
        Action::Http {
            host,
            port,
            path,
            headers,
            https,
        } => http_get(host, *port, path, headers, *https)
            .await
            .unwrap_or(false),
        Action::Exec { command } => {
            let Some((prog, args)) = command.split_first() else {
                return false;
            };
            tokio::process::Command::new(prog)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map(|s| s.success())
                .unwrap_or(false)
        }
    }
}

async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    https: bool,
) -> std::io::Result<bool> {
    let tcp = TcpStream::connect((host, port)).await?;
    let host_hdr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_hdr}\r\nUser-Agent: kube-probe/1.36\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let status = if https {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let tls = tokio_rustls::TlsConnector::from(tls::any_certificate())
            .connect(name, tcp)
            .await?;
        exchange(tls, req.as_bytes()).await?
    } else {
        exchange(tcp, req.as_bytes()).await?
    };
    Ok(status.is_some_and(|c| (200..400).contains(&c)))
}

/// Sends `request` and reads the status code of the answer.
async fn exchange<S>(mut s: S, request: &[u8]) -> std::io::Result<Option<u16>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(request).await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(parse_status_line(&buf))
}

/// The status code of an HTTP response's first line.
pub fn parse_status_line(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    let proto = parts.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Consecutive-result bookkeeping for success/failure thresholds.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    pub successes: u32,
    pub failures: u32,
}

impl Tracker {
    /// Record a result; returns Some(new verdict) when a threshold is crossed.
    pub fn record(&mut self, ok: bool, cfg: &ProbeCfg) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes += 1;
            (self.successes >= cfg.success_threshold).then_some(true)
        } else {
            self.successes = 0;
            self.failures += 1;
            (self.failures >= cfg.failure_threshold).then_some(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction};

    #[test]
    fn config_from_spec() {
        let c = Container {
            name: "c".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        let p = Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".into()),
                port: IntOrString::String("http".into()),
                ..Default::default()
            }),
            period_seconds: Some(10),
            ..Default::default()
        };
        let cfg = probe_config(&p, &c, "127.0.100.2").unwrap();
        assert_eq!(
            cfg.action,
            Action::Http {
                host: "127.0.100.2".into(),
                port: 8080,
                path: "/healthz".into(),
                headers: vec![],
                https: false,
            }
        );
        assert_eq!(cfg.period, MAX_PERIOD);
        let mut https = p.clone();
        https.http_get.as_mut().unwrap().scheme = Some("HTTPS".into());
        let cfg = probe_config(&https, &c, "127.0.100.2").unwrap();
        assert!(matches!(cfg.action, Action::Http { https: true, .. }));
        https.http_get.as_mut().unwrap().scheme = Some("FTP".into());
        assert!(probe_config(&https, &c, "x").is_err());
        assert_eq!(cfg.failure_threshold, 3);
        let mut bad = p.clone();
        bad.http_get.as_mut().unwrap().port = IntOrString::String("nope".into());
        assert!(probe_config(&bad, &c, "x").is_err());
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status_line(b"garbage"), None);
    }

    #[test]
    fn thresholds() {
        let cfg = ProbeCfg {
            action: Action::Tcp {
                host: "h".into(),
                port: 1,
            },
            initial_delay: Duration::ZERO,
            period: MAX_PERIOD,
            timeout: MAX_PERIOD,
            success_threshold: 2,
            failure_threshold: 3,
        };
        let mut t = Tracker::default();
        assert_eq!(t.record(true, &cfg), None);
        assert_eq!(t.record(true, &cfg), Some(true));
        assert_eq!(t.record(false, &cfg), None);
        assert_eq!(t.record(false, &cfg), None);
        assert_eq!(t.record(false, &cfg), Some(false));
    }

    #[tokio::test]
    async fn http_probe_against_local_server() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 1024];
                let n = s.read(&mut b).await.unwrap();
                let ok = String::from_utf8_lossy(&b[..n]).starts_with("GET /ok ");
                let resp = if ok {
                    "HTTP/1.1 200 OK\r\n\r\n"
                } else {
                    "HTTP/1.1 500 NO\r\n\r\n"
                };
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        let a = |path: &str| Action::Http {
            host: "127.0.0.1".into(),
            port,
            path: path.into(),
            headers: vec![],
            https: false,
        };
        assert!(run_once(&a("/ok"), Duration::from_secs(2)).await);
        assert!(!run_once(&a("/bad"), Duration::from_secs(2)).await);
        // An HTTPS probe of a plain HTTP server fails its handshake (the HTTPS success case
        // is the operator's probe in tests/e2e/tests/kube_access.rs).
        let tls = Action::Http {
            host: "127.0.0.1".into(),
            port,
            path: "/ok".into(),
            headers: vec![],
            https: true,
        };
        assert!(!run_once(&tls, Duration::from_secs(2)).await);
        assert!(
            run_once(
                &Action::Tcp {
                    host: "127.0.0.1".into(),
                    port
                },
                Duration::from_secs(2)
            )
            .await
        );
    }
}
