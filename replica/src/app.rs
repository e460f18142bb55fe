//! The state shared by the HTTP handlers and the heartbeat worker; the other workers hold
//! only the handles they need (the store, the scrubber, the metrics).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use deposito_api::replica::RegisterRequest;
use deposito_util::token::LiveToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::scrub::Scrubber;
use crate::storage::Store;

/// One running replica.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    /// The replica token: presented to peers and the operator, checked on every request.
    pub token: Arc<LiveToken>,
    pub id: String,
    pub advertise_url: String,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub scrubber: Arc<Scrubber>,
    /// Client for registration and heartbeats (the operator's gateway).
    pub http: reqwest::Client,
    /// Client for pulls from peers: HTTPS only, checked against the internal CA, with
    /// internal TLS.
    pub peers: reqwest::Client,
    active_transfers: AtomicU64,
}

/// Shared handle on the [`App`].
pub type AppState = Arc<App>;

impl App {
    pub fn new(
        config: Config,
        token: Arc<LiveToken>,
        id: String,
        advertise_url: String,
        store: Store,
        roots: Vec<reqwest::Certificate>,
        peers: reqwest::Client,
    ) -> Self {
        let scrubber = Arc::new(Scrubber::new(
            &config.data_dir,
            config.scrub_interval_secs,
            config.scrub_first_delay_secs,
            config.scrub_rate_mib,
        ));
        let http = roots
            .into_iter()
            .fold(reqwest::Client::builder(), |b, root| {
                b.add_root_certificate(root)
            })
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("TLS backend initializes");
        Self {
            config,
            token,
            id,
            advertise_url,
            store: Arc::new(store),
            metrics: Arc::new(Metrics::new()),
            scrubber,
            http,
            peers,
            active_transfers: AtomicU64::new(0),
        }
    }

    /// Counts a transfer for as long as the returned guard lives.
    pub fn transfer(self: &Arc<Self>) -> TransferGuard {
        self.active_transfers.fetch_add(1, Ordering::Relaxed);
        TransferGuard { app: self.clone() }
    }

    pub fn active_transfers(&self) -> u64 {
        self.active_transfers.load(Ordering::Relaxed)
    }

    /// What the replica tells the operator about itself (`GET /v1/info`, heartbeats). A full
    /// replica is still ready: it refuses new copies, and goes on serving the ones it holds.
    pub async fn describe(&self) -> RegisterRequest {
        let space = self.store.space().ok();
        let readiness = self.store.readiness().await;
        let trash = self.store.trash_stats();
        RegisterRequest {
            id: self.id.clone(),
            url: self.advertise_url.clone(),
            zone: self.config.zone.clone(),
            capacity_bytes: space.map_or(0, |s| s.capacity_bytes),
            // Room for new copies: what is free above the floor of `--min-free-bytes`.
            free_bytes: space.map_or(0, |s| {
                s.free_bytes.saturating_sub(self.store.min_free_bytes())
            }),
            objects: self.store.stats().ready,
            active_transfers: self.active_transfers(),
            ready: readiness.is_ok(),
            full: readiness.is_ok_and(|r| r.full),
            trash_bytes: trash.bytes,
            trash_objects: trash.objects,
        }
    }
}

/// The client for pulls from peers: with internal TLS, HTTPS only (the replica token never
/// goes out in clear) and the peers' certificates checked against the internal CA and
/// `--internal-server-name`; plain otherwise. A CA file that can't be used is an error at
/// start-up.
///
/// A peer that sends nothing for the minimum-rate window (`--min-transfer-window-secs`),
/// before its answer or in its body, is cut off, so a pull never outlives a peer that stopped
/// sending without closing; a body that trickles is held to the same rate as an upload
/// (see `pull`). Pooled connections are dropped before the peers' own idle limit
/// (`--header-read-timeout-secs`) closes them.
pub fn peer_client(
    tls: &crate::config::InternalTlsConfig,
    serve: &crate::http::serve::ServeArgs,
) -> anyhow::Result<reqwest::Client> {
    let idle = serve
        .min_rate()
        .window
        .max(std::time::Duration::from_secs(1));
    let builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(idle)
        .tcp_keepalive(std::time::Duration::from_secs(30))
        .pool_idle_timeout(serve.header_timeout() / 2);
    let builder = match &tls.internal_ca_cert {
        Some(ca) if tls.enabled() => {
            let config = deposito_util::tls::pinned_name_client(
                ca,
                "--internal-ca-cert",
                &tls.internal_server_name,
                "--internal-server-name",
            )?;
            builder.use_preconfigured_tls(config).https_only(true)
        }
        _ => builder,
    };
    Ok(builder.build()?)
}

/// Decrements the active-transfer count when dropped.
#[derive(Debug)]
pub struct TransferGuard {
    app: Arc<App>,
}

impl Drop for TransferGuard {
    fn drop(&mut self) {
        self.app.active_transfers.fetch_sub(1, Ordering::Relaxed);
    }
}
