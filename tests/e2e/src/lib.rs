//! Test support for Deposito's end-to-end suites and benchmark: real processes on loopback
//! addresses, real files, fault injection (kill -9, corrupted bytes, full disks, cut
//! connections) and bounded waits.
//!
//! - [`cluster::Cluster`]: `deposito-operator local` plus K separate `deposito-replica`
//!   processes on a random 127.A.B.x block, so that tests run in parallel.
//! - [`kube_cluster::KubeCluster`]: the real control plane of `tests/cluster/up`, for kube mode.
//! - [`launcher::Launcher`]: the one-command system, `deposito-operator local --replicas K`.
//! - [`files`]: streaming random files, sha256, and the census of copies on disk.
//! - [`metrics`]: figures out of a `/metrics` text.
//! - [`proc`]: processes killed on drop, one-shot commands with exit code and peak RSS.
//! - [`bench`]: the `deposito-bench` benchmark; [`scale`]: its engine-scale workload.

pub mod bench;
mod bench_base;
mod bench_small;
pub mod bins;
pub mod cluster;
mod cluster_api;
pub mod files;
pub mod http;
pub mod kube_bench;
pub mod kube_cluster;
pub mod launcher;
pub mod metrics;
pub mod proc;
pub mod scale;
pub mod tls;
pub mod wait;

pub use cluster::{Cluster, ClusterBuilder};
pub use files::{count_copies, write_random_file};
pub use launcher::Launcher;
pub use wait::{wait_for, wait_sync};

/// One MiB.
pub const MIB: u64 = 1 << 20;
