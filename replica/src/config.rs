//! Command-line flags (each with an environment twin) and their resolution.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use deposito_util::token::{check_token_strength, read_token_file, TokenFileError, WeakToken};

/// Environment variable carrying the replica token (env only, never a flag).
pub const TOKEN_ENV: &str = "DEPOSITO_REPLICA_TOKEN";
/// The client's token variables. A replica never takes its token from them (whoever holds the
/// client token must not be able to act as a replica); when one of them is set and neither
/// of the replica's own is, the start-up error says so.
pub const CLIENT_TOKEN_ENVS: [&str; 2] = ["DEPOSITO_TOKEN", "DEPOSITO_TOKEN_FILE"];

/// Configuration of one storage replica. Parsed from flags and environment by the binary;
/// library users may build it with [`Config::new`] and adjust the public fields.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "deposito-replica",
    version,
    about = "Deposito storage replica: stores verified copies and serves them over HTTP"
)]
pub struct Config {
    /// Address to serve on (`[::]:7070`: every address of both families; an IPv6 pod IP may
    /// be given bare, `fd00::5:7070`).
    #[arg(long, env = "DEPOSITO_LISTEN", default_value = "127.0.0.1:7070",
          value_parser = deposito_util::net::parse_listen)]
    pub listen: SocketAddr,
    /// Where copies live.
    #[arg(long, env = "DEPOSITO_DATA_DIR", default_value = "./replica-data")]
    pub data_dir: PathBuf,
    /// Claim the first free numbered slot `DIR/slot-N` (an exclusive lock held while the
    /// process runs) and use it as the data dir; the replica id defaults to `replica-N`. For
    /// replicas of one service sharing a volume (docker compose `deploy.replicas`): each keeps
    /// its identity and data across restarts. Overrides --data-dir.
    #[arg(long, env = "DEPOSITO_DATA_SLOTS")]
    pub data_slots: Option<PathBuf>,
    /// File holding the replica token (alternatively set DEPOSITO_REPLICA_TOKEN).
    #[arg(long, env = "DEPOSITO_REPLICA_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The replica token itself. Filled from DEPOSITO_REPLICA_TOKEN or --token-file by
    /// [`Config::resolve_token`]; never a command-line flag.
    #[arg(skip)]
    pub token: Option<String>,
    /// The token file to follow while running: set by [`Config::resolve_token`] when the
    /// token came from `--token-file`. A change (a Secret updated in place) puts the new
    /// token in force without a restart.
    #[arg(skip)]
    pub token_reload: Option<PathBuf>,
    /// After the token file changes, how long the previous token is still accepted, in
    /// seconds (the operator and the other replicas see a Secret change at different
    /// moments).
    #[arg(
        long,
        env = "DEPOSITO_PREVIOUS_TOKEN_GRACE_SECS",
        default_value_t = 600
    )]
    pub previous_token_grace_secs: u64,
    /// Operator base URL to register with and send heartbeats to.
    #[arg(long, env = "DEPOSITO_REGISTER")]
    pub register: Option<String>,
    #[command(flatten)]
    pub internal_tls: InternalTlsConfig,
    /// Stable replica id (default: kept in DIR/replica-id, else generated and kept there).
    #[arg(long, env = "DEPOSITO_REPLICA_ID")]
    pub id: Option<String>,
    /// URL peers and the operator use to reach this replica (default: http://<listen>, or
    /// https:// with --tls-cert).
    #[arg(long, env = "DEPOSITO_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Topology zone.
    #[arg(long, env = "DEPOSITO_ZONE")]
    pub zone: Option<String>,
    /// Heartbeat period in seconds (the operator's answer may override it).
    #[arg(long, env = "DEPOSITO_HEARTBEAT_SECS", default_value_t = 2)]
    pub heartbeat_secs: u64,
    /// Pause between scrub passes, in seconds.
    #[arg(long, env = "DEPOSITO_SCRUB_INTERVAL_SECS", default_value_t = 3600)]
    pub scrub_interval_secs: u64,
    /// Upper bound of the random pause before the first scrub pass after start-up, in
    /// seconds (capped by the interval). A pass interrupted by a restart resumes after it;
    /// otherwise the next pass is due one interval after the last one finished, a time kept
    /// in DIR/scrub-state.json across restarts.
    #[arg(long, env = "DEPOSITO_SCRUB_FIRST_DELAY_SECS", default_value_t = 120)]
    pub scrub_first_delay_secs: u64,
    /// Scrub hashing limit in MiB/s (0 = unlimited).
    #[arg(long, env = "DEPOSITO_SCRUB_RATE_MIB", default_value_t = 64)]
    pub scrub_rate_mib: u64,
    /// Below this free space (after emptying the trash as far as needed), writes get 507
    /// and the replica reports itself full. It stays ready: it serves and keeps its copies.
    #[arg(long, env = "DEPOSITO_MIN_FREE_BYTES", default_value_t = 0)]
    pub min_free_bytes: u64,
    /// How long a copy collected as an orphan stays in the trash before it is deleted, in
    /// seconds (a shortage of space may empty the trash earlier, oldest first).
    #[arg(long, env = "DEPOSITO_TRASH_RETENTION_SECS", default_value_t = 86_400)]
    pub trash_retention_secs: u64,
    /// What `url` fetches may reach, how much and for how long (`--fetch-*`).
    #[command(flatten)]
    pub fetch: crate::fetch::args::FetchArgs,
    /// PEM certificates to trust, besides the system's roots, when `--register` is an
    /// `https://` operator (local mode passes its own `--tls-cert` file).
    #[arg(long, env = "DEPOSITO_REGISTER_CA_CERT", value_name = "PEM")]
    pub register_ca_cert: Option<PathBuf>,
    /// Connection cap, timeouts and request limits of the server.
    #[command(flatten)]
    pub serve: crate::http::serve::ServeArgs,
}

impl Config {
    /// The certificates of `--register-ca-cert` (none without the flag). An unreadable file
    /// or one without a certificate is an error at start-up.
    pub fn register_roots(&self) -> anyhow::Result<Vec<reqwest::Certificate>> {
        let Some(path) = &self.register_ca_cert else {
            return Ok(Vec::new());
        };
        let pem = std::fs::read(path).map_err(|e| {
            anyhow::anyhow!("cannot read --register-ca-cert {}: {e}", path.display())
        })?;
        reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|certs| !certs.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("--register-ca-cert {}: no PEM certificate", path.display())
            })
    }
}

/// Internal TLS: the replica serves HTTPS only, and pulls from peers over HTTPS only,
/// checking their certificate against the internal CA and the replicas' shared name. All
/// three of cert, key and CA go together.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InternalTlsConfig {
    /// PEM certificate chain (leaf first) to serve HTTPS with, valid for
    /// --internal-server-name. Reread when it changes. Needs --tls-key and --internal-ca-cert.
    #[arg(
        long = "tls-cert",
        env = "DEPOSITO_REPLICA_TLS_CERT",
        value_name = "PEM",
        requires_all = ["tls_key", "internal_ca_cert"]
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long = "tls-key",
        env = "DEPOSITO_REPLICA_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) that signed the replicas' certificates: the only roots trusted
    /// for pulls from peers.
    #[arg(
        long,
        env = "DEPOSITO_INTERNAL_CA_CERT",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub internal_ca_cert: Option<PathBuf>,
    /// The name every replica's certificate is checked against, whatever address is dialed.
    #[arg(
        long,
        env = "DEPOSITO_INTERNAL_SERVER_NAME",
        default_value = DEFAULT_INTERNAL_SERVER_NAME
    )]
    pub internal_server_name: String,
}

/// The name replicas' certificates carry unless configured otherwise.
pub const DEFAULT_INTERNAL_SERVER_NAME: &str = "replica.deposito.internal";

impl InternalTlsConfig {
    /// Whether internal TLS is on.
    pub fn enabled(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// `https` with internal TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.enabled() {
            "https"
        } else {
            "http"
        }
    }
}

/// Why a configuration can't be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no replica token: set DEPOSITO_REPLICA_TOKEN or --token-file/DEPOSITO_REPLICA_TOKEN_FILE"
    )]
    MissingToken,
    #[error(
        "no replica token: {0} is set, but that is the client's variable and a replica does not \
         read it; set DEPOSITO_REPLICA_TOKEN or --token-file/DEPOSITO_REPLICA_TOKEN_FILE"
    )]
    OnlyClientToken(&'static str),
    #[error("cannot claim a data slot in {path}: {reason}")]
    Slot { path: PathBuf, reason: String },
    /// The token file (`--token-file`) is unreadable, empty or holds a token that is too
    /// short.
    #[error(transparent)]
    TokenFile(#[from] TokenFileError),
    #[error("cannot read or write replica id in {path}: {source}")]
    ReplicaId {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Config {
    /// A configuration with the documented defaults, the given data dir and token.
    pub fn new(data_dir: impl Into<PathBuf>, token: impl Into<String>) -> Self {
        let mut cfg = Config::parse_from(["deposito-replica"]);
        cfg.data_dir = data_dir.into();
        cfg.token = Some(token.into());
        cfg
    }

    /// Fills `token` from DEPOSITO_REPLICA_TOKEN, else from `token_file`, unless already set.
    /// Says where the token came from, so the binary can warn about a short one. The client's
    /// variables (see [`CLIENT_TOKEN_ENVS`]) are never read; set alone, they make the error
    /// say so.
    pub fn resolve_token(&mut self) -> Result<TokenSource, ConfigError> {
        if self.token.as_deref().is_some_and(|t| !t.is_empty()) {
            return Ok(TokenSource::Given);
        }
        if let Some(t) = non_empty_env(TOKEN_ENV) {
            let weak = check_token_strength(&t).err();
            self.token = Some(t);
            return Ok(weak.map_or(TokenSource::ReplicaVariable, TokenSource::WeakVariable));
        }
        if let Some(path) = self.token_file.clone() {
            self.token = Some(read_token_file(&path)?);
            self.token_reload = Some(path);
            return Ok(TokenSource::File);
        }
        if let Some(name) = CLIENT_TOKEN_ENVS
            .into_iter()
            .find(|name| non_empty_env(name).is_some())
        {
            return Err(ConfigError::OnlyClientToken(name));
        }
        Err(ConfigError::MissingToken)
    }

    /// The token, after [`Config::resolve_token`]; an error when there is none.
    pub fn token(&self) -> Result<&str, ConfigError> {
        match self.token.as_deref() {
            Some(t) if !t.is_empty() => Ok(t),
            _ => Err(ConfigError::MissingToken),
        }
    }
}

/// Where [`Config::resolve_token`] found the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Already in the configuration (library use).
    Given,
    /// `DEPOSITO_REPLICA_TOKEN`.
    ReplicaVariable,
    /// `DEPOSITO_REPLICA_TOKEN`, shorter than the operator accepts. The replica alone still
    /// starts (a replica checks tokens, it does not choose them), with a warning: the
    /// operator refuses such a token, so no whole system runs with it.
    WeakVariable(WeakToken),
    /// `--token-file`/`DEPOSITO_REPLICA_TOKEN_FILE`, followed while running.
    File,
}

impl TokenSource {
    /// The one-line warning to print at start-up, if any.
    pub fn warning(&self) -> Option<String> {
        match self {
            TokenSource::WeakVariable(weak) => Some(format!(
                "warning: the token of {TOKEN_ENV} is weak ({weak}); the operator refuses it"
            )),
            _ => None,
        }
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The replica id: `configured`, else the content of `DIR/replica-id`, else a new
/// `r-<8 hex>` that is written there.
pub fn resolve_replica_id(
    configured: Option<&str>,
    data_dir: &Path,
) -> Result<String, ConfigError> {
    if let Some(id) = configured.map(str::trim).filter(|s| !s.is_empty()) {
        return Ok(id.to_string());
    }
    let path = data_dir.join("replica-id");
    let err = |source| ConfigError::ReplicaId {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let id = format!("r-{:08x}", rand::random::<u32>());
    std::fs::create_dir_all(data_dir).map_err(err)?;
    crate::storage::fsutil::write_file_atomic(&path, format!("{id}\n").as_bytes()).map_err(err)?;
    Ok(id)
}

/// A claimed data slot: the lock file stays open (and locked) for the life of the process.
#[derive(Debug)]
pub struct SlotClaim {
    pub number: u32,
    pub dir: PathBuf,
    _lock: std::fs::File,
}

/// Claims the first free `root/slot-N` with an exclusive, non-blocking `flock` on
/// `root/slot-N.lock`. Another process (a container sharing the volume) holding a slot makes
/// this one take the next. The lock goes away with the process, even on `kill -9`.
pub fn claim_slot(root: &Path) -> Result<SlotClaim, ConfigError> {
    use std::os::fd::AsRawFd;
    let fail = |reason: String| ConfigError::Slot {
        path: root.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(root).map_err(|e| fail(e.to_string()))?;
    for number in 1..=4096u32 {
        let lock_path = root.join(format!("slot-{number}.lock"));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| fail(format!("{}: {e}", lock_path.display())))?;
        // SAFETY: flock on an open descriptor we own.
        let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if locked {
            let dir = root.join(format!("slot-{number}"));
            std::fs::create_dir_all(&dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
            return Ok(SlotClaim {
                number,
                dir,
                _lock: lock,
            });
        }
    }
    Err(fail("every slot is taken".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::parse_from(["deposito-replica"]);
        assert_eq!(c.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(c.data_dir, PathBuf::from("./replica-data"));
        assert_eq!(c.heartbeat_secs, 2);
        assert_eq!(c.scrub_interval_secs, 3600);
        assert_eq!(c.scrub_rate_mib, 64);
        assert_eq!(c.min_free_bytes, 0);
    }

    #[test]
    fn replica_id_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = resolve_replica_id(None, dir.path()).unwrap();
        assert!(a.starts_with("r-") && a.len() == 10, "{a}");
        assert_eq!(resolve_replica_id(None, dir.path()).unwrap(), a);
        assert_eq!(resolve_replica_id(Some("x1"), dir.path()).unwrap(), "x1");
    }

    #[test]
    fn slots_are_claimed_once_each_and_freed_with_their_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = claim_slot(dir.path()).unwrap();
        let second = claim_slot(dir.path()).unwrap();
        assert_eq!((first.number, second.number), (1, 2));
        assert!(first.dir.ends_with("slot-1") && first.dir.is_dir());
        drop(first);
        assert_eq!(
            claim_slot(dir.path()).unwrap().number,
            1,
            "freed with its holder"
        );
    }

    #[test]
    fn an_empty_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, " \n").unwrap();
        let mut c = Config::parse_from(["deposito-replica", "--token-file", f.to_str().unwrap()]);
        if std::env::var(TOKEN_ENV).is_err() {
            let err = c.resolve_token().unwrap_err();
            assert!(
                matches!(err, ConfigError::TokenFile(TokenFileError::Empty(_))),
                "{err}"
            );
            assert!(err.to_string().contains("is empty"), "{err}");
        }
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        let secret = "s".repeat(deposito_util::token::MIN_TOKEN_BYTES);
        std::fs::write(&f, format!("{secret}\n")).unwrap();
        let mut c = Config::parse_from(["deposito-replica", "--token-file", f.to_str().unwrap()]);
        if std::env::var(TOKEN_ENV).is_err() {
            assert_eq!(c.resolve_token().unwrap(), TokenSource::File);
            assert_eq!(c.token().unwrap(), secret);
            assert_eq!(c.token_reload.as_deref(), Some(f.as_path()), "followed");
        }
    }

    #[test]
    fn a_short_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "secret\n").unwrap();
        let mut c = Config::parse_from(["deposito-replica", "--token-file", f.to_str().unwrap()]);
        if std::env::var(TOKEN_ENV).is_err() {
            let err = c.resolve_token().unwrap_err();
            assert!(
                matches!(err, ConfigError::TokenFile(TokenFileError::Weak { .. })),
                "{err}"
            );
            assert!(
                err.to_string().contains("6 bytes, the minimum is 32"),
                "{err}"
            );
        }
    }
}
