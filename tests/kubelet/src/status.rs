//! Building a Pod's status from what the kubelet knows about its processes (pure).

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// State of one container process.
#[derive(Debug, Clone, PartialEq)]
pub enum CState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        pid: u32,
        started_at: Time,
    },
    Terminated {
        pid: Option<u32>,
        exit_code: i32,
        signal: Option<i32>,
        reason: String,
        started_at: Option<Time>,
        finished_at: Time,
    },
}

impl CState {
    pub fn waiting(reason: &str) -> Self {
        CState::Waiting {
            reason: reason.into(),
            message: None,
        }
    }
    fn pid(&self) -> Option<u32> {
        match self {
            CState::Running { pid, .. } => Some(*pid),
            CState::Terminated { pid, .. } => *pid,
            CState::Waiting { .. } => None,
        }
    }
    fn to_api(&self) -> ContainerState {
        match self {
            CState::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            CState::Running { started_at, .. } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(started_at.clone()),
                }),
                ..Default::default()
            },
            CState::Terminated {
                pid,
                exit_code,
                signal,
                reason,
                started_at,
                finished_at,
            } => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    container_id: pid.map(|p| format!("process://{p}")),
                    exit_code: *exit_code,
                    signal: *signal,
                    reason: Some(reason.clone()),
                    started_at: started_at.clone(),
                    finished_at: Some(finished_at.clone()),
                    message: None,
                }),
                ..Default::default()
            },
        }
    }
}

/// Snapshot of one container as tracked by its runner.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSnap {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: CState,
    pub last_state: Option<CState>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
    /// Terminated and will not be restarted.
    pub done: bool,
}

impl ContainerSnap {
    pub fn new(name: &str, image: &str) -> Self {
        ContainerSnap {
            name: name.into(),
            image: image.into(),
            image_id: String::new(),
            state: CState::waiting("ContainerCreating"),
            last_state: None,
            restart_count: 0,
            ready: false,
            started: false,
            done: false,
        }
    }

    fn to_api(&self) -> ContainerStatus {
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: if self.image_id.is_empty() {
                format!("process://{}", self.image)
            } else {
                self.image_id.clone()
            },
            container_id: self
                .state
                .pid()
                .or(self.last_state.as_ref().and_then(CState::pid))
                .map(|p| format!("process://{p}")),
            ready: self.ready,
            started: Some(self.started),
            restart_count: self.restart_count,
            state: Some(self.state.to_api()),
            last_state: Some(
                self.last_state
                    .as_ref()
                    .map(CState::to_api)
                    .unwrap_or_default(),
            ),
            ..Default::default()
        }
    }
}

/// Everything the status is computed from.
#[derive(Debug, Clone)]
pub struct PodView {
    pub pod_ip: String,
    pub host_ip: String,
    pub start_time: Time,
    /// Init containers first (`init_count` of them), then the app containers.
    pub containers: Vec<ContainerSnap>,
    pub init_count: usize,
}

/// Pod phase following the kubelet's rules, simplified.
pub fn phase(containers: &[ContainerSnap]) -> &'static str {
    if containers.is_empty() {
        return "Pending";
    }
    if containers.iter().all(|c| c.done) {
        let ok = containers
            .iter()
            .all(|c| matches!(c.state, CState::Terminated { exit_code: 0, .. }));
        return if ok { "Succeeded" } else { "Failed" };
    }
    let active = containers.iter().any(|c| {
        matches!(c.state, CState::Running { .. } | CState::Terminated { .. })
            || c.last_state.is_some()
    });
    if active {
        "Running"
    } else {
        "Pending"
    }
}

fn condition(
    kind: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    prev: &[PodCondition],
    now: &Time,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let last = prev
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    PodCondition {
        type_: kind.into(),
        status: status.into(),
        last_transition_time: Some(last),
        reason: if ok { None } else { reason.map(String::from) },
        message: if ok { None } else { message },
        ..Default::default()
    }
}

/// The pod conditions; `prev` keeps transition times stable.
pub fn conditions(
    containers: &[ContainerSnap],
    initialized: bool,
    prev: &[PodCondition],
    now: &Time,
) -> Vec<PodCondition> {
    let ph = phase(containers);
    let not_ready: Vec<&str> = containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let all_ready = not_ready.is_empty() && !containers.is_empty();
    let msg = (!not_ready.is_empty())
        .then(|| format!("containers with unready status: [{}]", not_ready.join(" ")));
    let terminal = ph == "Succeeded" || ph == "Failed";
    let reason = if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    vec![
        condition(
            "PodReadyToStartContainers",
            !terminal,
            None,
            None,
            prev,
            now,
        ),
        condition(
            "Initialized",
            initialized,
            Some("ContainersNotInitialized"),
            (!initialized).then(|| "containers with incomplete status: init".to_string()),
            prev,
            now,
        ),
        condition(
            "Ready",
            all_ready && !terminal,
            Some(reason),
            msg.clone(),
            prev,
            now,
        ),
        condition(
            "ContainersReady",
            all_ready && !terminal,
            Some(reason),
            msg,
            prev,
            now,
        ),
        condition("PodScheduled", true, None, None, prev, now),
    ]
}

/// The full status to write through pods/status.
pub fn build_status(view: &PodView, prev_conditions: &[PodCondition], now: &Time) -> PodStatus {
    let n = view.init_count.min(view.containers.len());
    let (init, main) = view.containers.split_at(n);
    let initialized = init
        .iter()
        .all(|c| c.done && matches!(c.state, CState::Terminated { exit_code: 0, .. }));
    PodStatus {
        phase: Some(phase(main).into()),
        conditions: Some(conditions(main, initialized, prev_conditions, now)),
        init_container_statuses: (n > 0).then(|| init.iter().map(ContainerSnap::to_api).collect()),
        host_ip: Some(view.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: view.host_ip.clone(),
        }]),
        pod_ip: Some(view.pod_ip.clone()),
        pod_ips: Some(vec![PodIP {
            ip: view.pod_ip.clone(),
        }]),
        start_time: Some(view.start_time.clone()),
        container_statuses: Some(main.iter().map(ContainerSnap::to_api).collect()),
        // The API server sets the QoS class at creation (from the resources) and it is
        // immutable: the merge patch leaves it out.
        qos_class: None,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + s).unwrap())
    }

    fn running(name: &str, ready: bool) -> ContainerSnap {
        ContainerSnap {
            state: CState::Running {
                pid: 42,
                started_at: t(0),
            },
            started: true,
            ready,
            ..ContainerSnap::new(name, "deposito:dev")
        }
    }

    fn get<'a>(c: &'a [PodCondition], k: &str) -> &'a PodCondition {
        c.iter().find(|c| c.type_ == k).unwrap()
    }

    #[test]
    fn phases() {
        assert_eq!(phase(&[]), "Pending");
        assert_eq!(phase(&[ContainerSnap::new("a", "i")]), "Pending");
        assert_eq!(phase(&[running("a", false)]), "Running");
        let done = |code| ContainerSnap {
            state: CState::Terminated {
                pid: Some(1),
                exit_code: code,
                signal: None,
                reason: "Completed".into(),
                started_at: None,
                finished_at: t(1),
            },
            done: true,
            ..ContainerSnap::new("a", "i")
        };
        assert_eq!(phase(&[done(0), done(0)]), "Succeeded");
        assert_eq!(phase(&[done(0), done(1)]), "Failed");
        assert_eq!(phase(&[done(0), running("b", true)]), "Running");
        let backoff = ContainerSnap {
            state: CState::waiting("CrashLoopBackOff"),
            last_state: Some(done(1).state),
            restart_count: 1,
            ..ContainerSnap::new("a", "i")
        };
        assert_eq!(phase(&[backoff]), "Running");
    }

    #[test]
    fn ready_conditions() {
        let c = conditions(&[running("a", true), running("b", false)], true, &[], &t(5));
        assert_eq!(get(&c, "Ready").status, "False");
        assert_eq!(get(&c, "ContainersReady").status, "False");
        assert_eq!(
            get(&c, "Ready").message.as_deref(),
            Some("containers with unready status: [b]")
        );
        assert_eq!(get(&c, "PodScheduled").status, "True");
        assert_eq!(get(&c, "Initialized").status, "True");

        let c2 = conditions(&[running("a", true), running("b", true)], true, &c, &t(9));
        assert_eq!(get(&c2, "Ready").status, "True");
        assert_eq!(get(&c2, "Ready").last_transition_time, Some(t(9)));
        // Unchanged conditions keep their transition time.
        assert_eq!(get(&c2, "PodScheduled").last_transition_time, Some(t(5)));
        let c3 = conditions(&[running("a", true), running("b", true)], true, &c2, &t(20));
        assert_eq!(c3, c2);
    }

    #[test]
    fn status_fields() {
        let view = PodView {
            pod_ip: "127.0.100.2".into(),
            host_ip: "127.0.0.1".into(),
            start_time: t(0),
            containers: vec![running("replica", true)],
            init_count: 0,
        };
        let s = build_status(&view, &[], &t(1));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ips.unwrap()[0].ip, "127.0.100.2");
        let cs = &s.container_statuses.unwrap()[0];
        assert_eq!(cs.container_id.as_deref(), Some("process://42"));
        assert!(cs.ready);
        assert!(cs.state.as_ref().unwrap().running.is_some());
    }

    #[test]
    fn init_containers() {
        let done = ContainerSnap {
            state: CState::Terminated {
                pid: Some(1),
                exit_code: 0,
                signal: None,
                reason: "Completed".into(),
                started_at: None,
                finished_at: t(1),
            },
            done: true,
            ..ContainerSnap::new("init", "i")
        };
        let mut view = PodView {
            pod_ip: "127.0.100.2".into(),
            host_ip: "127.0.0.1".into(),
            start_time: t(0),
            containers: vec![running("init", false), ContainerSnap::new("main", "i")],
            init_count: 1,
        };
        let s = build_status(&view, &[], &t(1));
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(s.init_container_statuses.as_ref().unwrap().len(), 1);
        assert_eq!(s.container_statuses.as_ref().unwrap()[0].name, "main");
        let conds = s.conditions.unwrap();
        assert_eq!(get(&conds, "Initialized").status, "False");
        view.containers = vec![done, running("main", true)];
        let s = build_status(&view, &conds, &t(2));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let conds = s.conditions.unwrap();
        assert_eq!(get(&conds, "Initialized").status, "True");
        assert_eq!(get(&conds, "Ready").status, "True");
    }
}
