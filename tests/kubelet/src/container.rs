//! One container: building its launch, running it with restarts, probing it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::cli::resolve_binary;
use crate::env::{build_env, confine_wildcards, expand_argv, referenced_objects, Sources};
use crate::probes::{probe_config, run_once, ProbeCfg, Tracker};
use crate::process::{self, Launch, Mount};
use crate::status::CState;
use crate::volumes;
use crate::worker::PodCtx;

/// First restart delay; doubled on every restart up to `BACKOFF_MAX`.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A container that ran this long gets its backoff reset.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Next backoff delay.
pub fn next_backoff(cur: Duration) -> Duration {
    (cur * 2).min(BACKOFF_MAX)
}

/// Whether a container that exited with `code` is restarted under `policy`.
pub fn should_restart(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

type LaunchError = (String, String);

/// Where the pod's hosts file is bind-mounted in each container.
const HOSTS_TARGET: &str = "/etc/hosts";

/// Everything needed to start the container now (fetches secrets and config maps).
pub async fn build_launch(pc: &PodCtx, c: &Container) -> Result<Launch, LaunchError> {
    let cfg_err = |m: String| ("CreateContainerConfigError".to_string(), m);
    let pod = pc.pod();
    let vols = pc
        .ensure_volumes()
        .await
        .map_err(|e| cfg_err(format!("{e:#}")))?;
    let kubeconfig = pc
        .ensure_kubeconfig()
        .await
        .map_err(|e| cfg_err(format!("{e:#}")))?;

    let (secrets, cms) = referenced_objects([c]);
    let mut src = Sources::default();
    for s in secrets {
        if let Some(d) = volumes::secret_data(&pc.ctx, &pc.ns, &s)
            .await
            .map_err(|e| cfg_err(e.to_string()))?
        {
            src.secrets.insert(s, d);
        }
    }
    for s in cms {
        if let Some(d) = volumes::config_map_data(&pc.ctx, &pc.ns, &s)
            .await
            .map_err(|e| cfg_err(e.to_string()))?
        {
            src.config_maps.insert(s, d);
        }
    }
    let mut env = build_env(&pod, c, &pc.facts, &src).map_err(cfg_err)?;
    if let Some(k) = &kubeconfig {
        env.set("KUBECONFIG", k.display().to_string());
    }
    let (command, args) = expand_argv(c, &env);
    let confine = |a: String| confine_wildcards(&a, &pc.facts.pod_ip);
    let command: Vec<String> = command.into_iter().map(confine).collect();
    let args: Vec<String> = args.into_iter().map(confine).collect();
    let image = c.image.clone().unwrap_or_default();
    let binary = resolve_binary(&pc.ctx.cli.images, &image, &command)
        .map_err(|e| ("ErrImagePull".to_string(), e))?;
    let (argv0, args) = match command.split_first() {
        Some((first, rest)) => (first.clone(), rest.iter().cloned().chain(args).collect()),
        None => (
            binary
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            args,
        ),
    };
    let mut mounts = Vec::new();
    // The pod's managed hosts file (Service names in place of cluster DNS, see `hosts`),
    // first so that a volume mounted over /etc wins, and not when the container mounts a
    // volume at /etc/hosts itself (as the real kubelet).
    let own_hosts = c
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| Path::new(&m.mount_path) == Path::new(HOSTS_TARGET));
    if !own_hosts {
        let source = pc
            .write_hosts()
            .await
            .map_err(|e| cfg_err(format!("writing the hosts file: {e:#}")))?;
        mounts.push(Mount {
            source,
            target: PathBuf::from(HOSTS_TARGET),
            read_only: false,
        });
    }
    for m in c.volume_mounts.iter().flatten() {
        let base = vols.get(&m.name).ok_or_else(|| {
            cfg_err(format!(
                "volume {} not found for mount {}",
                m.name, m.mount_path
            ))
        })?;
        let sub = m.sub_path.clone().filter(|s| !s.is_empty()).or_else(|| {
            m.sub_path_expr
                .clone()
                .filter(|s| !s.is_empty())
                .map(|e| crate::env::expand(&e, &|n| env.get(n)))
        });
        let source = match sub {
            Some(s) if !s.starts_with('/') && !s.split('/').any(|p| p == "..") => {
                let p = base.join(s);
                if !p.exists() {
                    std::fs::create_dir_all(&p).map_err(|e| cfg_err(e.to_string()))?;
                }
                p
            }
            Some(s) => return Err(cfg_err(format!("bad subPath {s:?}"))),
            None => base.clone(),
        };
        mounts.push(Mount {
            source,
            target: PathBuf::from(&m.mount_path),
            read_only: m.read_only.unwrap_or(false),
        });
    }
    let log_path = pc
        .ctx
        .state_dir
        .join("logs")
        .join(format!("{}_{}_{}.log", pc.ns, pc.name, c.name));
    Ok(Launch {
        binary,
        argv0,
        args,
        env: env.0,
        working_dir: c
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .map(PathBuf::from),
        mounts,
        log_path,
    })
}

/// Wait until the liveness probe fails `failureThreshold` times in a row (forever if none).
async fn liveness_failed(cfg: Option<ProbeCfg>) {
    let Some(cfg) = cfg else {
        return std::future::pending().await;
    };
    tokio::time::sleep(cfg.initial_delay).await;
    let mut t = Tracker::default();
    loop {
        tokio::time::sleep(cfg.period).await;
        let ok = run_once(&cfg.action, cfg.timeout).await;
        if t.record(ok, &cfg) == Some(false) {
            return;
        }
    }
}

/// Sleep, returning early (true) if the pod is being stopped.
async fn sleep_or_stop(pc: &PodCtx, d: Duration) -> bool {
    let mut stop = pc.stop.clone();
    if stop.borrow().is_some() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.changed() => true,
    }
}

/// Run container `idx` until the pod stops or the restart policy says it is done.
pub async fn run(pc: Arc<PodCtx>, idx: usize, c: Container, policy: String) {
    let mut backoff = BACKOFF_START;
    let mut stop = pc.stop.clone();
    let who = format!("{}/{}/{}", pc.ns, pc.name, c.name);
    loop {
        if stop.borrow().is_some() {
            break;
        }
        let launch = match build_launch(&pc, &c).await {
            Ok(l) => l,
            Err((reason, message)) => {
                tracing::warn!(container = %who, %reason, %message, "cannot start container");
                pc.update(idx, |s| {
                    s.state = CState::Waiting {
                        reason,
                        message: Some(message),
                    }
                });
                if sleep_or_stop(&pc, backoff).await {
                    break;
                }
                backoff = next_backoff(backoff);
                continue;
            }
        };
        let (mut child, mount_targets) = match process::spawn(&launch) {
            Ok(ch) => ch,
            Err(e) => {
                tracing::warn!(container = %who, error = %e, binary = %launch.binary.display(), "spawn failed");
                pc.update(idx, |s| {
                    s.state = CState::Waiting {
                        reason: "RunContainerError".into(),
                        message: Some(e.to_string()),
                    }
                });
                if sleep_or_stop(&pc, backoff).await {
                    break;
                }
                backoff = next_backoff(backoff);
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        let started_at = now();
        let started = Instant::now();
        let has_readiness = c.readiness_probe.is_some();
        tracing::info!(container = %who, pid, binary = %launch.binary.display(), args = ?launch.args, "started");
        pc.update(idx, |s| {
            s.state = CState::Running {
                pid,
                started_at: started_at.clone(),
            };
            s.started = true;
            s.ready = !has_readiness;
            s.image_id = format!("process://{}", launch.binary.display());
        });
        let liveness = c.liveness_probe.as_ref().and_then(|p| {
            probe_config(p, &c, &pc.facts.pod_ip)
                .map_err(|e| tracing::warn!(container = %who, error = %e, "bad liveness probe"))
                .ok()
        });
        let mut stopping = false;
        let status = tokio::select! {
            st = child.wait() => {
                process::forget(pid as i32);
                process::signal_group(pid as i32, libc::SIGKILL);
                st.ok()
            }
            _ = stop.changed() => {
                stopping = true;
                let grace = stop.borrow().unwrap_or_default();
                process::terminate(&mut child, grace).await
            }
            _ = liveness_failed(liveness) => {
                tracing::warn!(container = %who, "liveness probe failed; restarting");
                process::terminate(&mut child, Duration::from_secs(2)).await
            }
        };
        let (code, signal) = status
            .as_ref()
            .map(process::exit_code)
            .unwrap_or((137, Some(9)));
        // The process is gone: drop its hold on the host-side mount points the kubelet created.
        drop(mount_targets);
        tracing::info!(container = %who, pid, code, "exited");
        let terminated = CState::Terminated {
            pid: Some(pid),
            exit_code: code,
            signal,
            reason: if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            started_at: Some(started_at),
            finished_at: now(),
        };
        let restart = !stopping && should_restart(&policy, code);
        if started.elapsed() > BACKOFF_RESET_AFTER {
            backoff = BACKOFF_START;
        }
        pc.update(idx, |s| {
            s.ready = false;
            if restart {
                s.last_state = Some(terminated);
                s.restart_count += 1;
                s.state = CState::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: Some(format!(
                        "back-off {}s restarting failed container",
                        backoff.as_secs()
                    )),
                };
            } else {
                s.state = terminated;
                s.done = true;
            }
        });
        if !restart || sleep_or_stop(&pc, backoff).await {
            break;
        }
        backoff = next_backoff(backoff);
    }
    pc.update(idx, |s| {
        s.ready = false;
        if !matches!(s.state, CState::Terminated { .. }) {
            s.state = CState::waiting("ContainerStopped");
        }
        s.done = true;
    });
}

/// Run the init containers one after the other, then the app containers (`idx` of app
/// container `j` is `inits.len() + j`).
pub async fn run_all(pc: Arc<PodCtx>, inits: Vec<Container>, apps: Vec<Container>, policy: String) {
    let n = inits.len();
    // An init container is retried on failure unless the pod never restarts.
    let init_policy = if policy == "Never" {
        "Never"
    } else {
        "OnFailure"
    };
    for (i, c) in inits.into_iter().enumerate() {
        run(pc.clone(), i, c, init_policy.to_string()).await;
        let ok = pc
            .snap(i)
            .is_some_and(|s| matches!(s.state, CState::Terminated { exit_code: 0, .. }));
        if !ok {
            let stopped = pc.stop.borrow().is_some();
            for j in 0..apps.len() {
                pc.update(n + j, |s| {
                    s.state = CState::waiting(if stopped {
                        "ContainerStopped"
                    } else {
                        "InitError"
                    });
                    s.done = true;
                });
            }
            return;
        }
    }
    let mut tasks = Vec::new();
    for (j, c) in apps.into_iter().enumerate() {
        tasks.push(tokio::spawn(run(
            pc.clone(),
            n + j,
            c.clone(),
            policy.clone(),
        )));
        tasks.push(tokio::spawn(readiness(pc.clone(), n + j, c)));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Poll the readiness probe of container `idx` for the pod's lifetime.
pub async fn readiness(pc: Arc<PodCtx>, idx: usize, c: Container) {
    let Some(p) = &c.readiness_probe else { return };
    let cfg = match probe_config(p, &c, &pc.facts.pod_ip) {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::warn!(pod = %pc.name, container = %c.name, error = %e, "bad readiness probe");
            return;
        }
    };
    let mut tracker = Tracker::default();
    let mut seen: Option<(u32, Instant)> = None;
    loop {
        let pid = pc.snap(idx).and_then(|s| match s.state {
            CState::Running { pid, .. } => Some(pid),
            _ => None,
        });
        match pid {
            None => {
                seen = None;
                tracker = Tracker::default();
            }
            Some(pid) => {
                if seen.map(|(p, _)| p) != Some(pid) {
                    seen = Some((pid, Instant::now()));
                    tracker = Tracker::default();
                }
                let since = seen.map(|(_, t)| t.elapsed()).unwrap_or_default();
                if since >= cfg.initial_delay {
                    let ok = run_once(&cfg.action, cfg.timeout).await;
                    if let Some(verdict) = tracker.record(ok, &cfg) {
                        pc.update(idx, |s| {
                            if matches!(s.state, CState::Running { pid: p, .. } if p == pid) {
                                s.ready = verdict;
                            }
                        });
                    }
                }
            }
        }
        // Probe quickly until the first verdict, then at the configured period.
        let wait = if tracker.successes == 0 && tracker.failures < 3 && pid.is_some() {
            cfg.period.min(Duration::from_millis(500))
        } else {
            cfg.period
        };
        if sleep_or_stop(&pc, wait).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy() {
        assert!(should_restart("Always", 0));
        assert!(should_restart("", 1));
        assert!(should_restart("OnFailure", 1));
        assert!(!should_restart("OnFailure", 0));
        assert!(!should_restart("Never", 1));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = BACKOFF_START;
        let mut seen = vec![];
        for _ in 0..7 {
            seen.push(b.as_secs());
            b = next_backoff(b);
        }
        assert_eq!(seen, vec![1, 2, 4, 8, 16, 30, 30]);
    }
}
