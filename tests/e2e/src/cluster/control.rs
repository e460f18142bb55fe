//! Finer process control of a [`Cluster`] for fault campaigns: stop and start the operator or
//! one replica without waiting for the whole cluster to be healthy (a campaign keeps other
//! replicas paused or broken meanwhile, and does its own bounded, non-panicking waits).

use std::net::{IpAddr, Ipv4Addr};

use super::Cluster;
use crate::proc;

impl Cluster {
    /// kill -9 the operator without starting it again (see [`Cluster::start_operator`]).
    pub fn kill_operator(&mut self) {
        if let Some(mut p) = self.op.take() {
            p.kill9();
        }
    }

    /// Starts the operator (same address, same data dir) when it is not running; does not wait.
    pub fn start_operator(&mut self) {
        if self.op.is_none() {
            self.spawn_operator();
        }
    }

    /// True when the operator was started and its process has not exited.
    pub fn operator_running(&self) -> bool {
        self.operator_pid().is_some_and(proc::alive)
    }

    /// Starts replica `k` (1-based; same address, same data dir) when it is not running; does
    /// not wait.
    pub fn start_replica(&mut self, k: usize) {
        if self.replicas[k - 1].proc.is_none() {
            self.spawn_replica(k);
        }
    }

    /// A new replica joins: the next ordinal, on the next address of the cluster's block, with
    /// an empty data dir. Returns its 1-based index; does not wait (see
    /// [`Cluster::wait_healthy`]).
    pub fn add_replica(&mut self) -> usize {
        let k = self.replicas.len() + 1;
        let IpAddr::V4(first) = self.replicas[0].addr.ip() else {
            unreachable!("replicas listen on IPv4 loopback")
        };
        let [a, b, c, _] = first.octets();
        let ip = Ipv4Addr::new(a, b, c, k as u8);
        let dir = self.root_path.join(format!("r{k}"));
        std::fs::create_dir_all(&dir).expect("replica dir");
        self.push_replica(ip, dir)
    }

    /// True when replica `k` was started and its process has not exited.
    pub fn replica_running(&self, k: usize) -> bool {
        self.replicas[k - 1].pid().is_some_and(proc::alive)
    }

    /// The last `lines` lines of replica `k`'s log ("operator" for `k == 0`).
    pub fn log_tail(&self, k: usize, lines: usize) -> String {
        let name = if k == 0 {
            "operator".to_string()
        } else {
            self.replicas[k - 1].id.clone()
        };
        proc::tail(&self.log_path(&name), lines)
    }
}
