//! The `--fetch-*` flags of a replica: which addresses `url` sources may reach (see
//! [`super::guard`]) and how long and how large a fetch may be. Apart from the fetch itself,
//! so that the configuration does not depend on the code that serves requests.

use std::time::Duration;

use super::guard::{Cidr, HostPattern, Policy};

/// The `--fetch-*` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    /// Let `url` sources reach every address, private, loopback and link-local ones included
    /// (tests only). Without it only globally reachable addresses and the allow-lists pass.
    #[arg(long, env = "DEPOSITO_FETCH_ALLOW_PRIVATE", default_value_t = false)]
    pub fetch_allow_private: bool,
    /// Networks `url` sources may reach besides the global ones (repeat the flag, or a
    /// comma-separated list): `10.20.0.0/16,fd00:1::/32`.
    #[arg(
        long,
        env = "DEPOSITO_FETCH_ALLOW_CIDR",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub fetch_allow_cidr: Vec<Cidr>,
    /// Host names `url` sources may reach whatever they resolve to (repeat, or a
    /// comma-separated list); `*.internal` allows every name under `internal`.
    #[arg(
        long,
        env = "DEPOSITO_FETCH_ALLOW_HOST",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub fetch_allow_host: Vec<HostPattern>,
    /// Largest body a `url` fetch keeps, in bytes; a longer one is cut off, nothing kept.
    #[arg(long, env = "DEPOSITO_FETCH_MAX_BYTES", default_value_t = 10 << 30)]
    pub fetch_max_bytes: u64,
    /// Longest a `url` fetch may take, in seconds, from the request to the last byte.
    #[arg(long, env = "DEPOSITO_FETCH_DEADLINE_SECS", default_value_t = 3600)]
    pub fetch_deadline_secs: u64,
    /// Longest a `url` fetch may wait for the next bytes, in seconds; also the window of
    /// `--fetch-min-bytes-per-sec`.
    #[arg(long, env = "DEPOSITO_FETCH_IDLE_SECS", default_value_t = 60)]
    pub fetch_idle_secs: u64,
    /// Slowest average rate a `url` fetch may run at over each `--fetch-idle-secs` window,
    /// in bytes per second (0: no minimum).
    #[arg(long, env = "DEPOSITO_FETCH_MIN_BYTES_PER_SEC", default_value_t = 1024)]
    pub fetch_min_bytes_per_sec: u64,
}

impl FetchArgs {
    /// The address policy these flags describe.
    pub fn policy(&self) -> Policy {
        Policy {
            allow_private: self.fetch_allow_private,
            allow_cidrs: self.fetch_allow_cidr.clone(),
            allow_hosts: self.fetch_allow_host.clone(),
        }
    }

    pub(crate) fn idle(&self) -> Duration {
        Duration::from_secs(self.fetch_idle_secs.max(1))
    }
}
