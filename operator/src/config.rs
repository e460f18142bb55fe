//! Command-line flags of `deposito-operator` (each with an environment twin).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::engine::observer::ObserverSettings;
use crate::engine::{EngineSettings, RebalanceSettings, StaleGuard, TrackerSettings};

/// Deposito operator: reconciles file copies across storage replicas and serves the gateway.
#[derive(Debug, Parser)]
#[command(name = "deposito-operator", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Modes of the operator.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a whole local system: SQLite catalog, registration-based membership, reconcile
    /// loop and gateway; with `--replicas K`, also K supervised replica processes.
    Local(LocalArgs),
    /// Run in a Kubernetes cluster: reconcile StoredFile resources against the pods of the
    /// replica StatefulSet, and serve the gateway.
    Kube(KubeArgs),
    /// Print the StoredFile CustomResourceDefinition as YAML.
    Crd,
    /// The chart's pre-upgrade hook: before the replica StatefulSet shrinks, drain the pods
    /// that will go and wait until no file would fall below its replication level.
    DrainBeforeScaleDown(ScaleDownArgs),
    /// GET a URL and exit 0 on a 2xx answer (container health checks: the image has no curl).
    #[command(hide = true)]
    Probe {
        /// The URL, such as http://127.0.0.1:7070/readyz.
        url: String,
    },
    /// Run a storage replica in this process (what `deposito-replica` runs). The local
    /// launcher uses it when no `deposito-replica` binary sits next to this one.
    #[command(hide = true)]
    Replica(deposito_replica::Config),
}

/// Flags of `deposito-operator local`.
#[derive(Debug, Clone, Args)]
pub struct LocalArgs {
    /// Address the gateway listens on.
    #[arg(long, env = "DEPOSITO_LISTEN", default_value = "127.0.0.1:7800")]
    pub listen: SocketAddr,
    /// Folder for the catalog, the tokens and the children's data
    /// [default: $HOME/.local/share/deposito].
    #[arg(long, env = "DEPOSITO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Replica processes to start and supervise (0: wait for replicas to register).
    #[arg(long, env = "DEPOSITO_REPLICAS", default_value_t = 0)]
    pub replicas: u32,
    /// Port of the supervised replicas; replica i listens on 127.0.0.(10+i). A port that is
    /// taken is replaced by a free one, remembered in the replica's folder.
    #[arg(long, env = "DEPOSITO_REPLICA_PORT", default_value_t = 7070)]
    pub replica_port: u16,
    /// The `deposito-replica` binary [default: next to this binary, else on PATH].
    #[arg(long, env = "DEPOSITO_REPLICA_BINARY")]
    pub replica_binary: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Heartbeat period asked of replicas, in seconds.
    #[arg(long, env = "DEPOSITO_HEARTBEAT_SECS", default_value_t = 2)]
    pub heartbeat_secs: u64,
    /// File holding the client token [default: DATA_DIR/token, generated if missing]. The
    /// environment variable DEPOSITO_CLIENT_TOKEN, when set, gives the token itself.
    #[arg(long, env = "DEPOSITO_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Scoped client tokens, one per line: `TOKEN NAMESPACES ACCESS` (NAMESPACES `*` or
    /// `a,b`; ACCESS `read-only` or `read-write`) [default: DATA_DIR/tokens, optional]. Reread
    /// when it changes; the token of --token-file keeps full access.
    #[arg(long, env = "DEPOSITO_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: crate::gateway::serve::TlsArgs,
    /// Internal TLS: a CA and a replica certificate made at each start in
    /// DATA_DIR/internal-tls; the children serve HTTPS only, and the operator and the
    /// children reach replicas over HTTPS only, trusting that CA alone.
    #[arg(long, env = "DEPOSITO_INTERNAL_TLS", default_value_t = false)]
    pub internal_tls: bool,
    /// Connection cap, timeouts and request limits of the gateway.
    #[command(flatten)]
    pub serve: crate::gateway::serve::ServeArgs,
    #[command(flatten)]
    pub s3: crate::gateway::s3::S3Args,
    /// File holding the replica token [default: DATA_DIR/replica-token, generated if missing].
    /// The environment variable DEPOSITO_REPLICA_TOKEN, when set, gives the token itself.
    #[arg(long, env = "DEPOSITO_REPLICA_TOKEN_FILE")]
    pub replica_token_file: Option<PathBuf>,
    /// Scrub interval passed to supervised replicas, in seconds.
    #[arg(long, env = "DEPOSITO_SCRUB_INTERVAL_SECS", default_value_t = 3600)]
    pub scrub_interval_secs: u64,
}

impl LocalArgs {
    /// The data folder, defaulting to `$HOME/.local/share/deposito`.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }
}

/// `$HOME/.local/share/deposito` (or `./deposito-data` without a home).
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".local/share/deposito"),
        _ => PathBuf::from("deposito-data"),
    }
}

/// Flags of `deposito-operator kube`.
#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Address the gateway (and /healthz, /readyz) listens on: `[::]:7800` is every address
    /// of both families (what `kubectl port-forward` needs); an IPv6 pod IP may be given
    /// bare (`fd00::5:7800`).
    #[arg(long, env = "DEPOSITO_LISTEN", default_value = "[::]:7800",
          value_parser = deposito_util::net::parse_listen)]
    pub listen: SocketAddr,
    /// Serve /metrics on this address only (plain HTTP, no token), not on the gateway's port;
    /// unset: /metrics is on the gateway's port.
    #[arg(long, env = "DEPOSITO_METRICS_LISTEN", value_parser = deposito_util::net::parse_listen)]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub tls: crate::gateway::serve::TlsArgs,
    /// PEM CA certificate(s) of the replicas' certificates (chart `internalTLS`): replicas
    /// are then reached over HTTPS only, trusting that CA alone.
    #[arg(long, env = "DEPOSITO_INTERNAL_CA_CERT", value_name = "PEM")]
    pub internal_ca_cert: Option<PathBuf>,
    /// The name the replicas' certificate is checked against, whatever pod address is
    /// dialed (with --internal-ca-cert).
    #[arg(long, env = "DEPOSITO_INTERNAL_SERVER_NAME",
          default_value = deposito_replica::config::DEFAULT_INTERNAL_SERVER_NAME)]
    pub internal_server_name: String,
    /// Connection cap, timeouts and request limits of the gateway.
    #[command(flatten)]
    pub serve: crate::gateway::serve::ServeArgs,
    /// Namespace whose StoredFiles are reconciled [default: the operator's own namespace].
    #[arg(long, env = "DEPOSITO_NAMESPACE")]
    pub namespace: Option<String>,
    /// Reconcile StoredFiles of every namespace (needs cluster-wide RBAC).
    #[arg(long, env = "DEPOSITO_ALL_NAMESPACES", default_value_t = false)]
    pub all_namespaces: bool,
    /// Label selector of the replica pods.
    #[arg(
        long,
        env = "DEPOSITO_REPLICA_SELECTOR",
        default_value = "app.kubernetes.io/component=replica"
    )]
    pub replica_selector: String,
    /// Namespace of the replica pods [default: the operator's namespace].
    #[arg(long, env = "DEPOSITO_REPLICA_NAMESPACE")]
    pub replica_namespace: Option<String>,
    /// Port replicas serve on, when their pod declares no container port named `api`.
    #[arg(long, env = "DEPOSITO_REPLICA_PORT", default_value_t = 7070)]
    pub replica_port: u16,
    /// File holding the client token (mounted from a Secret). Reread when it changes: the
    /// new token is in force at once and the old one refused.
    #[arg(long, env = "DEPOSITO_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// File holding the replica token (mounted from a Secret). Reread when it changes; the
    /// replicas accept the previous one for their `--previous-token-grace-secs`.
    #[arg(long, env = "DEPOSITO_REPLICA_TOKEN_FILE")]
    pub replica_token_file: PathBuf,
    /// After the replica token file changes, seconds during which the operator presents the
    /// previous token (the first half) and the replicas accept it (all of it): the same value
    /// as the replicas' `--previous-token-grace-secs`.
    #[arg(long, env = "DEPOSITO_PREVIOUS_TOKEN_GRACE_SECS",
          default_value_t = deposito_util::token::DEFAULT_PREVIOUS_TOKEN_GRACE_SECS)]
    pub previous_token_grace_secs: u64,
    /// Scoped client tokens (mounted from a Secret), one per line: `TOKEN NAMESPACES ACCESS`
    /// (NAMESPACES `*` or `a,b`; ACCESS `read-only` or `read-write`). Reread when it changes;
    /// the token of --token-file keeps full access.
    #[arg(long, env = "DEPOSITO_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// The S3 API (kube mode: off unless `--s3-listen` is given; the chart's `s3.enabled`).
    #[command(flatten)]
    pub s3: crate::gateway::s3::S3Args,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Elect a leader through a Lease, so that several operator replicas can run.
    #[arg(long, env = "DEPOSITO_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "DEPOSITO_LEASE_NAME", default_value = "deposito-operator")]
    pub lease_name: String,
    /// Seconds a leader's lease lasts without renewal before another operator may take it.
    #[arg(long, env = "DEPOSITO_LEASE_DURATION_SECS", default_value_t = 15)]
    pub lease_duration_secs: u64,
    /// Seconds before the lease's end at which the leader renews it.
    #[arg(long, env = "DEPOSITO_LEASE_GRACE_SECS", default_value_t = 5)]
    pub lease_grace_secs: u64,
    /// Longest wait, once leading, for the replicas' inventories to be observed before
    /// reconciling anyway.
    #[arg(long, env = "DEPOSITO_SETTLE_TIMEOUT_SECS", default_value_t = 30)]
    pub settle_timeout_secs: u64,
    /// Workers collecting copies that no StoredFile claims (only with a complete view).
    #[arg(long, env = "DEPOSITO_ORPHAN_WORKERS", default_value_t = 2)]
    pub orphan_workers: usize,
    /// Seconds between checks whether StoredFiles can be listed again while orphan
    /// collection is paused by an incomplete view.
    #[arg(long, env = "DEPOSITO_LIST_RECHECK_SECS", default_value_t = 15)]
    pub list_recheck_secs: u64,
    /// Read the Nodes (cluster-scoped, read-only) to spread copies over their
    /// `topology.kubernetes.io/zone` labels; without it (or without the permission) a
    /// replica's zone is its pod's label of that name, else its node.
    #[arg(long, env = "DEPOSITO_NODE_ZONES", default_value_t = true, action = clap::ArgAction::Set)]
    pub node_zones: bool,
}

/// Flags of the reconcile engine, the same in every mode.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Seconds a holder may be unreachable (silent, or its pod not Ready or gone) before its
    /// copies are replaced elsewhere.
    #[arg(long, env = "DEPOSITO_GRACE_PERIOD_SECS", default_value_t = 300)]
    pub grace_period_secs: u64,
    /// Seconds before a copy that no file claims is removed. In kube mode also how long
    /// copies of other content are kept, in case they belong to an upload whose StoredFile
    /// write is still in flight.
    #[arg(long, env = "DEPOSITO_ORPHAN_GRACE_SECS", default_value_t = 300)]
    pub orphan_grace_secs: u64,
    /// Seconds between slow resyncs that look at every file (changes are acted on at once;
    /// this only repairs what a missed notification would leave).
    #[arg(
        long,
        env = "DEPOSITO_RESYNC_INTERVAL_SECS",
        default_value_t = 600,
        alias = "reconcile-interval-secs"
    )]
    pub resync_interval_secs: u64,
    /// Seconds between full re-lists of each replica's inventory (between them, the
    /// operator follows each replica's change feed).
    #[arg(long, env = "DEPOSITO_RELIST_INTERVAL_SECS", default_value_t = 600)]
    pub relist_interval_secs: u64,
    /// Files reconciled at once.
    #[arg(long, env = "DEPOSITO_WORKERS", default_value_t = 64)]
    pub workers: usize,
    /// Most copies pulled into one replica at once (the re-replication throttle).
    #[arg(long, env = "DEPOSITO_PULLS_PER_REPLICA", default_value_t = 16)]
    pub pulls_per_replica: usize,
    /// Move copies from fuller to emptier replicas (when replicas join, or one holds far
    /// more bytes than the others), add before trim, after any repair work.
    #[arg(long, env = "DEPOSITO_REBALANCE", default_value_t = true, action = clap::ArgAction::Set)]
    pub rebalance: bool,
    /// Most bytes per second moved by rebalancing, over all moves.
    #[arg(long, env = "DEPOSITO_REBALANCE_BYTES_PER_SEC", default_value_t = 32 << 20)]
    pub rebalance_bytes_per_sec: u64,
    /// Rebalancing stops once the fullest replica holds at most this many times the bytes
    /// of the emptiest (or no copy can move without overshooting).
    #[arg(long, env = "DEPOSITO_REBALANCE_RATIO", default_value_t = 1.25)]
    pub rebalance_ratio: f64,
    /// Nothing moves while the fullest replica holds fewer than this many bytes more than
    /// the emptiest: differences of a few small files are not worth the traffic.
    #[arg(long, env = "DEPOSITO_REBALANCE_MIN_GAP_BYTES", default_value_t = 8 << 20)]
    pub rebalance_min_gap_bytes: u64,
}

impl EngineArgs {
    pub fn grace_period(&self) -> Duration {
        Duration::from_secs(self.grace_period_secs)
    }

    pub fn orphan_grace(&self) -> Duration {
        Duration::from_secs(self.orphan_grace_secs)
    }

    pub fn resync_interval(&self) -> Duration {
        Duration::from_secs(self.resync_interval_secs.max(1))
    }

    /// The engine's settings, with the mode's way of telling stale copies from uploads.
    pub fn engine_settings(&self, stale_guard: StaleGuard) -> EngineSettings {
        EngineSettings {
            grace_period: self.grace_period(),
            orphan_grace: self.orphan_grace(),
            stale_guard,
            pulls_per_replica: self.pulls_per_replica,
        }
    }

    /// The rebalancer's settings.
    pub fn rebalance_settings(&self) -> RebalanceSettings {
        RebalanceSettings {
            enabled: self.rebalance,
            bytes_per_sec: self.rebalance_bytes_per_sec.max(1),
            ratio: self.rebalance_ratio.max(1.0),
            min_gap_bytes: self.rebalance_min_gap_bytes,
            ..RebalanceSettings::default()
        }
    }

    /// The health tracker's settings; `read_info`: ask replicas for free space (when
    /// membership does not report it).
    pub fn tracker_settings(&self, read_info: bool) -> TrackerSettings {
        TrackerSettings {
            tick: Duration::from_millis(500),
            grace: self.grace_period(),
            observer: ObserverSettings {
                poll_wait: Duration::from_secs(20),
                relist_every: Duration::from_secs(self.relist_interval_secs.max(1)),
                read_info,
            },
        }
    }
}

/// Flags of `deposito-operator drain-before-scale-down`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleDownArgs {
    /// The replica StatefulSet.
    #[arg(long)]
    pub statefulset: String,
    /// Its size after the upgrade.
    #[arg(long)]
    pub replicas: u32,
    /// Namespace of the StatefulSet [default: $POD_NAMESPACE, else the client's].
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// The operator reconciles StoredFiles of every namespace: read them all.
    #[arg(long, default_value_t = false)]
    pub all_namespaces: bool,
    /// Give up (and undo the drain marks) after this long.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
    /// How often the StoredFiles are read again.
    #[arg(long, default_value_t = 5)]
    pub poll_secs: u64,
}
