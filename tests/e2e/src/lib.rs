//! Test support for Deposito's end-to-end suites, the fault campaign (`tests/chaos`) and the
//! benchmark (`tests/bench`): real processes on loopback addresses, real files, fault injection
//! (kill -9, corrupted bytes, full disks, cut connections) and bounded waits.
//!
//! - [`cluster::Cluster`]: `deposito-operator local` plus K separate `deposito-replica`
//!   processes on a random 127.A.B.x block, so that tests run in parallel.
//! - [`kube_cluster::KubeCluster`]: the real control plane of `tests/cluster/up`, for kube mode.
//! - [`launcher::Launcher`]: the one-command system, `deposito-operator local --replicas K`.
//! - [`files`]: streaming random files, sha256, and the census of copies on disk.
//! - [`metrics`]: figures out of a `/metrics` text.
//! - [`s3_clients`]: the S3 clients of the S3 suites, and the access key of a token.
//! - [`proc`]: processes killed on drop, one-shot commands with exit code and peak RSS, CPU
//!   time of a running process.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

pub mod bins;
pub mod cluster;
mod cluster_api;
pub mod files;
pub mod http;
pub mod kube_cluster;
pub mod launcher;
pub mod metrics;
pub mod proc;
pub mod real_node;
pub mod s3_clients;
pub mod tls;
pub mod wait;

pub use cluster::{Cluster, ClusterBuilder};
pub use files::{count_copies, write_random_file};
pub use launcher::Launcher;
pub use wait::{wait_for, wait_sync};

/// One MiB.
pub const MIB: u64 = 1 << 20;
