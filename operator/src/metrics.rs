//! Prometheus metrics of the operator.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of action counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// `pull` or `delete`.
    pub kind: String,
    /// `ok` or `error`.
    pub result: String,
}

/// Labels of the replica gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    pub health: String,
}

/// Labels of the event counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub reason: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    pub registry: Registry,
    pub reconcile_passes: Counter,
    pub actions: Family<ActionLabels, Counter>,
    pub events: Family<EventLabels, Counter>,
    pub files: Gauge,
    pub replicas: Family<HealthLabels, Gauge>,
    pub bytes_uploaded: Counter,
    pub bytes_downloaded: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("deposito_operator");
        let reconcile_passes = Counter::default();
        let actions = Family::<ActionLabels, Counter>::default();
        let events = Family::<EventLabels, Counter>::default();
        let files = Gauge::default();
        let replicas = Family::<HealthLabels, Gauge>::default();
        let bytes_uploaded = Counter::default();
        let bytes_downloaded = Counter::default();
        registry.register(
            "reconcile_passes",
            "Reconcile passes run",
            reconcile_passes.clone(),
        );
        registry.register(
            "actions",
            "Pulls and deletes asked of replicas",
            actions.clone(),
        );
        registry.register("events", "Events emitted, by reason", events.clone());
        registry.register("files", "Files in the catalog", files.clone());
        registry.register("replicas", "Known replicas by health", replicas.clone());
        registry.register(
            "bytes_uploaded",
            "Bytes received from clients",
            bytes_uploaded.clone(),
        );
        registry.register(
            "bytes_downloaded",
            "Bytes sent to clients",
            bytes_downloaded.clone(),
        );
        Self {
            registry,
            reconcile_passes,
            actions,
            events,
            files,
            replicas,
            bytes_uploaded,
            bytes_downloaded,
        }
    }
}

impl Metrics {
    /// Renders the text exposition format.
    pub fn render(&self) -> String {
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
}
