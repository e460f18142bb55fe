//! Prometheus metrics of the operator (both modes), served at `/metrics`.

use deposito_util::worker::WorkerMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

/// Labels of action counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// `pull`, `delete` or `ingest`.
    pub kind: String,
    /// `ok` or `error`.
    pub result: String,
}

/// Labels of the replica gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    pub health: String,
}

/// Labels with a reason (events, failures).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Labels with an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: String,
}

/// Labels of Kubernetes API requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// The HTTP method.
    pub verb: String,
}

/// What the heap holds, as the binary's allocator reports it.
#[derive(Debug, Clone, Copy)]
pub struct HeapFigures {
    /// Bytes in live allocations.
    pub allocated: u64,
    /// Bytes of memory pages the allocator keeps resident (live data, its own metadata, and
    /// freed pages not returned yet).
    pub resident: u64,
}

/// Reads [`HeapFigures`] (the operator binary sets one: jemalloc's statistics).
pub type HeapProbe = fn() -> Option<HeapFigures>;

static HEAP_PROBE: std::sync::OnceLock<HeapProbe> = std::sync::OnceLock::new();

/// Sets where the heap gauges come from (once per process; later calls are ignored).
pub fn set_heap_probe(probe: HeapProbe) {
    let _ = HEAP_PROBE.set(probe);
}

/// Every metric the operator exports.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_failures: Family<ReasonLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub under_replicated: Gauge,
    pub queue_depth: Gauge,
    pub actions: Family<ActionLabels, Counter>,
    pub events: Family<ReasonLabels, Counter>,
    pub files: Gauge,
    pub replicas: Family<HealthLabels, Gauge>,
    pub bytes_uploaded: Counter,
    pub bytes_downloaded: Counter,
    pub kube_requests: Family<VerbLabels, Counter>,
    pub orphans_kept: Family<ReasonLabels, Counter>,
    pub orphan_collection_paused: Gauge,
    pub rebalance_moves: Family<ResultLabels, Counter>,
    pub rebalance_bytes: Counter,
    pub rebalance_spread: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// The background workers: steps, errors, running, last step.
    pub workers: WorkerMetrics,
    pub heap_allocated: Gauge,
    pub heap_resident: Gauge,
}

fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("deposito_operator");
        Self {
            reconciles: registered(
                &mut r,
                "reconciles",
                "Reconciles of one file, by result",
                Family::default(),
            ),
            reconcile_failures: registered(
                &mut r,
                "reconcile_failures",
                "Failed reconciles, by reason",
                Family::default(),
            ),
            reconcile_duration: registered(
                &mut r,
                "reconcile_duration_seconds",
                "Time spent reconciling one file",
                Histogram::new(exponential_buckets(0.0005, 4.0, 10)),
            ),
            under_replicated: registered(
                &mut r,
                "under_replicated_files",
                "Files with fewer verified copies than wanted",
                Gauge::default(),
            ),
            queue_depth: registered(
                &mut r,
                "queue_depth",
                "Files waiting to be reconciled (now or after a backoff)",
                Gauge::default(),
            ),
            actions: registered(
                &mut r,
                "actions",
                "Pulls, deletes and ingests asked of replicas",
                Family::default(),
            ),
            events: registered(
                &mut r,
                "events",
                "Events emitted, by reason",
                Family::default(),
            ),
            files: registered(
                &mut r,
                "files",
                "Files in the catalog (at the last resync)",
                Gauge::default(),
            ),
            replicas: registered(
                &mut r,
                "replicas",
                "Known replicas by health",
                Family::default(),
            ),
            bytes_uploaded: registered(
                &mut r,
                "bytes_uploaded",
                "Bytes received from clients",
                Counter::default(),
            ),
            bytes_downloaded: registered(
                &mut r,
                "bytes_downloaded",
                "Bytes sent to clients",
                Counter::default(),
            ),
            kube_requests: registered(
                &mut r,
                "kube_api_requests",
                "Requests sent to the Kubernetes API server, by verb",
                Family::default(),
            ),
            orphans_kept: registered(
                &mut r,
                "orphans_kept",
                "Checks that found copies no file claims and kept them, by reason \
                 (incomplete_view: the catalog could not be read completely; \
                 unmanaged_namespace; claimed: the cache lagged)",
                Family::default(),
            ),
            orphan_collection_paused: registered(
                &mut r,
                "orphan_collection_paused",
                "1 while copies no file claims are kept because the catalog's view is not \
                 complete (StoredFiles not listed, listing forbidden or failing)",
                Gauge::default(),
            ),
            rebalance_moves: registered(
                &mut r,
                "rebalance_moves",
                "Rebalancing moves of one copy to an emptier replica, by result",
                Family::default(),
            ),
            rebalance_bytes: registered(
                &mut r,
                "rebalance_bytes",
                "Bytes of copies moved by rebalancing",
                Counter::default(),
            ),
            rebalance_spread: registered(
                &mut r,
                "rebalance_spread_ratio",
                "Bytes on the fullest replica that takes copies over bytes on the emptiest",
                Gauge::default(),
            ),
            workers: WorkerMetrics::registered(&mut r),
            heap_allocated: registered(
                &mut r,
                "heap_allocated_bytes",
                "Bytes in live heap allocations (0 when the allocator cannot say)",
                Gauge::default(),
            ),
            heap_resident: registered(
                &mut r,
                "heap_resident_bytes",
                "Bytes of pages the heap allocator keeps resident (0 when it cannot say)",
                Gauge::default(),
            ),
            registry: r,
        }
    }
}

impl Metrics {
    /// Renders the text exposition format.
    pub fn render(&self) -> String {
        if let Some(figures) = HEAP_PROBE.get().and_then(|probe| probe()) {
            self.heap_allocated
                .set(i64::try_from(figures.allocated).unwrap_or(i64::MAX));
            self.heap_resident
                .set(i64::try_from(figures.resident).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String never fails");
        out
    }

    /// Counts one action outcome.
    pub fn action(&self, kind: &str, ok: bool) {
        self.actions
            .get_or_create(&ActionLabels {
                kind: kind.to_string(),
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }

    /// Counts copies kept by orphan collection, by reason.
    pub fn orphans_kept(&self, reason: &str) {
        self.orphans_kept
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts one event.
    pub fn event(&self, reason: &str) {
        self.events
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts one reconcile and its duration; `failure` is the reason label of a failure.
    pub fn reconciled(&self, seconds: f64, failure: Option<&str>) {
        self.reconcile_duration.observe(seconds);
        let result = if failure.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
        if let Some(reason) = failure {
            self.reconcile_failures
                .get_or_create(&ReasonLabels {
                    reason: reason.to_string(),
                })
                .inc();
        }
    }

    /// Sets the replica gauge from a count per health (`Live`, `Full`, `Unreachable`,
    /// `Lost`).
    pub fn set_replicas(&self, counts: &[(&str, usize)]) {
        for &(health, n) in counts {
            self.replicas
                .get_or_create(&HealthLabels {
                    health: health.to_string(),
                })
                .set(n as i64);
        }
    }
}
