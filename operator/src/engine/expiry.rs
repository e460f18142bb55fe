//! A file's end: when its lifecycle's `expire@AGE` falls due, the deletion is recorded in
//! the catalog (as `rm` would), and the next reconcile removes the copies; and a deletion
//! requested while a retention lock holds (kube mode: `kubectl delete`, which no API server
//! rule can refuse by date) waits, copies kept, until the lock ends.

use std::time::Duration;

use deposito_api::lifecycle::format_time;
use tracing::info;

use super::aging::LONGEST_WAIT_MS;
use super::error::{PublishError, ReconcileError};
use super::events::EngineEvent;
use super::model::FileRecord;
use super::reconcile::{Engine, Outcome};

/// How soon a file whose expiry could not be recorded (it changed meanwhile) is looked at
/// again.
const EXPIRY_RETRY: Duration = Duration::from_secs(1);

impl Engine {
    /// A deletion requested while the retention lock holds is held: the file is reconciled
    /// as a live one (its copies kept at the level in force) until the lock ends, when the
    /// reconcile that [`super::revisit::until_lock_end`] schedules deletes it.
    pub(super) async fn hold_deletion_under_lock(&self, record: &mut FileRecord, now_ms: u64) {
        let Some(until) = record.retained_at(now_ms).filter(|_| record.deleting) else {
            return;
        };
        record.deleting = false;
        info!(file = %record.key, "deletion requested under a retention lock: held");
        let why = format!(
            "deletion requested under a retention lock: the copies are kept until {}",
            format_time(until)
        );
        self.events
            .emit(record, &EngineEvent::new("DeletionHeld", why))
            .await;
    }

    /// A file whose lifecycle expired: its deletion is recorded (as by `rm`), then the next
    /// reconcile removes the copies. A retention lock that still holds (an expiry never
    /// falls before it, but a lock may be extended) keeps the file until the lock ends.
    pub(super) async fn expire(
        &self,
        record: &FileRecord,
        now_ms: u64,
    ) -> Result<Outcome, ReconcileError> {
        if let Some(until) = record.retained_at(now_ms) {
            let wait = until.saturating_sub(now_ms).min(LONGEST_WAIT_MS);
            return Ok(Outcome::later(Duration::from_millis(wait)));
        }
        let expired = self
            .catalog
            .expire(record)
            .await
            .map_err(PublishError::Catalog)?;
        if !expired {
            return Ok(Outcome::later(EXPIRY_RETRY));
        }
        info!(file = %record.key, "the lifecycle's expiry fell due: deleting");
        self.events
            .emit(
                record,
                &EngineEvent::new(
                    "Expired",
                    "the lifecycle's expiry fell due: deleting the file",
                ),
            )
            .await;
        Ok(Outcome::later(Duration::ZERO))
    }
}
