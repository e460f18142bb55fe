//! Prometheus metrics, served in the text exposition format at `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::storage::{Stats, Store};

/// Labels of `deposito_replica_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub status: String,
}

/// Every metric of a replica.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub bytes_used: Gauge<u64, AtomicU64>,
    pub bytes_free: Gauge<u64, AtomicU64>,
    pub objects: Gauge<u64, AtomicU64>,
    pub corrupt_objects: Gauge<u64, AtomicU64>,
    pub active_transfers: Gauge<u64, AtomicU64>,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub scrubbed_objects: Counter,
    pub corrupt_found: Counter,
    pub http_requests: Family<HttpLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            bytes_used: Gauge::default(),
            bytes_free: Gauge::default(),
            objects: Gauge::default(),
            corrupt_objects: Gauge::default(),
            active_transfers: Gauge::default(),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            scrubbed_objects: Counter::default(),
            corrupt_found: Counter::default(),
            http_requests: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "deposito_replica_bytes_used",
            "Bytes held by stored copies (ready and quarantined)",
            m.bytes_used.clone(),
        );
        r.register(
            "deposito_replica_bytes_free",
            "Free bytes on the data dir's file system",
            m.bytes_free.clone(),
        );
        r.register(
            "deposito_replica_objects",
            "Ready copies held",
            m.objects.clone(),
        );
        r.register(
            "deposito_replica_corrupt_objects",
            "Quarantined copies held",
            m.corrupt_objects.clone(),
        );
        r.register(
            "deposito_replica_active_transfers",
            "Uploads, downloads and pulls in progress",
            m.active_transfers.clone(),
        );
        r.register(
            "deposito_replica_bytes_received",
            "Bytes received by uploads and pulls",
            m.bytes_received.clone(),
        );
        r.register(
            "deposito_replica_bytes_sent",
            "Bytes sent by downloads",
            m.bytes_sent.clone(),
        );
        r.register(
            "deposito_replica_scrubbed_objects",
            "Copies verified by the scrubber",
            m.scrubbed_objects.clone(),
        );
        r.register(
            "deposito_replica_corrupt_found",
            "Copies found corrupt (by the scrubber or on read)",
            m.corrupt_found.clone(),
        );
        r.register(
            "deposito_replica_http_requests",
            "HTTP requests answered, by method and status",
            m.http_requests.clone(),
        );
        m
    }

    /// Refreshes the gauges derived from the store.
    pub fn refresh(&self, store: &Store, active: u64) {
        let Stats {
            ready,
            corrupt,
            bytes_used,
        } = store.stats();
        self.objects.set(ready);
        self.corrupt_objects.set(corrupt);
        self.bytes_used.set(bytes_used);
        self.active_transfers.set(active);
        if let Ok(space) = store.space() {
            self.bytes_free.set(space.free_bytes);
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// Counts one answered request.
    pub fn observe_request(&self, method: &str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_string(),
                status: status.to_string(),
            })
            .inc();
    }
}
