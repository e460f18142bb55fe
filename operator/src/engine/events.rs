//! Where the engine's events go: Kubernetes Events through a `Recorder` in kube mode, the log
//! and a counter in local mode.

use async_trait::async_trait;

use super::model::FileRecord;

/// One event about one file, such as `Replicated` or `Degraded`. Deterministic text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    pub reason: String,
    pub message: String,
    /// A Warning (something is wrong) rather than a Normal event.
    pub warning: bool,
}

impl EngineEvent {
    /// Reasons that report a problem rather than progress.
    pub fn is_warning_reason(reason: &str) -> bool {
        matches!(reason, "Degraded" | "Lost" | "Failed")
    }

    pub fn new(reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_string(),
            message: message.into(),
            warning: Self::is_warning_reason(reason),
        }
    }
}

/// Receives the engine's events.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    async fn emit(&self, record: &FileRecord, event: &EngineEvent);
}

/// Local mode's sink: a log line and the `deposito_operator_events` counter.
pub struct LogEvents {
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

#[async_trait]
impl EventSink for LogEvents {
    async fn emit(&self, record: &FileRecord, event: &EngineEvent) {
        if event.warning {
            tracing::warn!(file = %record.key, reason = %event.reason, message = %event.message, "event");
        } else {
            tracing::info!(file = %record.key, reason = %event.reason, message = %event.message, "event");
        }
        self.metrics.event(&event.reason);
    }
}
