//! Prometheus metrics, served in the text exposition format at `/metrics`.

use std::sync::atomic::AtomicU64;

use deposito_util::worker::WorkerMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

use crate::storage::{Stats, Store};

/// Labels of `deposito_replica_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub status: String,
}

/// Every metric of a replica.
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
    pub chunk_digests_added: Counter,
    pub without_chunk_digests: Gauge<u64, AtomicU64>,
    pub scrub_oldest_unverified: Gauge<u64, AtomicU64>,
    pub scrub_last_pass_finished: Gauge<u64, AtomicU64>,
    pub trash_objects: Gauge<u64, AtomicU64>,
    pub trash_bytes: Gauge<u64, AtomicU64>,
    pub trash_damaged: Gauge<u64, AtomicU64>,
    pub trash_restored: Counter,
    pub trash_expired: Counter,
    pub trash_evicted: Counter,
    pub full: Gauge<u64, AtomicU64>,
    pub freed_inodes_kept: Gauge<u64, AtomicU64>,
    pub http_requests: Family<HttpLabels, Counter>,
    /// The background workers' metrics (`deposito_replica_worker_*`), given to the runner.
    pub workers: WorkerMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The registry holds every metric, and prints them.
        f.debug_struct("Metrics")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// Raises `counter` to `total` (the store keeps the totals; counters only go up).
fn catch_up(counter: &Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// A new metric, registered in `r` as `name` (under the registry's prefix).
fn registered<M: Metric + Clone + Default>(r: &mut Registry, name: &str, help: &str) -> M {
    let m = M::default();
    r.register(name, help, m.clone());
    m
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("deposito_replica");
        let r = &mut registry;
        Metrics {
            bytes_used: registered(
                r,
                "bytes_used",
                "Bytes held by stored copies (ready and quarantined)",
            ),
            bytes_free: registered(r, "bytes_free", "Free bytes on the data dir's file system"),
            objects: registered(r, "objects", "Ready copies held"),
            corrupt_objects: registered(r, "corrupt_objects", "Quarantined copies held"),
            active_transfers: registered(
                r,
                "active_transfers",
                "Uploads, downloads and pulls in progress",
            ),
            bytes_received: registered(r, "bytes_received", "Bytes received by uploads and pulls"),
            bytes_sent: registered(r, "bytes_sent", "Bytes sent by downloads"),
            scrubbed_objects: registered(r, "scrubbed_objects", "Copies verified by the scrubber"),
            corrupt_found: registered(
                r,
                "corrupt_found",
                "Copies found corrupt (by the scrubber or on read)",
            ),
            chunk_digests_added: registered(
                r,
                "chunk_digests_added",
                "Copies over one chunk given chunk digests by the scrubber (committed before \
                 digests were recorded; verified against their sha256 first)",
            ),
            without_chunk_digests: registered(
                r,
                "copies_without_chunk_digests",
                "Ready copies over one chunk still without chunk digests (Range reads of them \
                 are not verified chunk by chunk) at the end of the last complete scrub pass",
            ),
            scrub_oldest_unverified: registered(
                r,
                "scrub_oldest_unverified_seconds",
                "Seconds since the least recently verified ready copy was last hashed",
            ),
            scrub_last_pass_finished: registered(
                r,
                "scrub_last_pass_finished_timestamp_seconds",
                "Unix time the last complete scrub pass finished (0: none yet)",
            ),
            trash_objects: registered(r, "trash_objects", "Copies held in the trash"),
            trash_bytes: registered(
                r,
                "trash_bytes",
                "Bytes held in the trash (reclaimable: emptied first when space runs short)",
            ),
            trash_damaged: registered(
                r,
                "trash_damaged_objects",
                "Trashed copies whose metadata is damaged (kept, never emptied automatically)",
            ),
            trash_restored: registered(
                r,
                "trash_restored",
                "Copies restored from the trash because a file claimed them again",
            ),
            trash_expired: registered(
                r,
                "trash_expired",
                "Trashed copies deleted at the end of the retention",
            ),
            trash_evicted: registered(
                r,
                "trash_evicted",
                "Trashed copies deleted early to make room for writes",
            ),
            full: registered(
                r,
                "full",
                "1 while new copies are refused for lack of space (the replica stays ready)",
            ),
            freed_inodes_kept: registered(
                r,
                "freed_inodes_kept",
                "Emptied files of deleted small copies kept in free/ for new copies to reuse",
            ),
            http_requests: registered(
                r,
                "http_requests",
                "HTTP requests answered, by method and status",
            ),
            workers: WorkerMetrics::registered(r),
            registry,
        }
    }

    /// Refreshes the gauges derived from the store (`full`: as its readiness says).
    pub fn refresh(&self, store: &Store, active: u64, full: bool) {
        let Stats {
            ready,
            corrupt,
            bytes_used,
            ..
        } = store.stats();
        self.objects.set(ready);
        self.corrupt_objects.set(corrupt);
        self.bytes_used.set(bytes_used);
        self.active_transfers.set(active);
        if let Ok(space) = store.space() {
            self.bytes_free.set(space.free_bytes);
        }
        let trash = store.trash_stats();
        self.trash_objects.set(trash.objects);
        self.trash_bytes.set(trash.bytes);
        self.trash_damaged.set(trash.damaged);
        catch_up(&self.trash_restored, trash.restored);
        catch_up(&self.trash_expired, trash.expired);
        catch_up(&self.trash_evicted, trash.evicted);
        self.full.set(u64::from(full));
        self.freed_inodes_kept.set(store.inode_pool().len() as u64);
    }

    /// Sets the scrub gauges from the scrubber's status.
    pub fn refresh_scrub(&self, status: &deposito_api::replica::ScrubStatus) {
        self.scrub_oldest_unverified
            .set(status.oldest_unverified_secs.unwrap_or(0));
        self.scrub_last_pass_finished
            .set(status.last_pass_finished.unwrap_or(0));
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
