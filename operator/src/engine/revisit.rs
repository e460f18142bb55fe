//! When a file is looked at again without a change: at its next lifecycle transition (the
//! work queue holds the file until then, so schedules cost no idle CPU), when its retention
//! lock ends, or when a kept stale copy may go.

use std::time::Duration;

use deposito_api::replica::ObjectState;
use deposito_util::clock::unix_now_ms;

use super::aging::{Schedule, LONGEST_WAIT_MS};
use super::model::FileRecord;
use crate::plan::{CopyView, Health, ReplicaView};

/// The wait until the file's next lifecycle transition (at most [`LONGEST_WAIT_MS`]: a file
/// is looked at daily anyway), a second after it falls due.
pub(super) fn until_transition(schedule: &Schedule, now_ms: u64) -> Option<Duration> {
    let next = schedule.next_ms?;
    let wait = next.saturating_sub(now_ms).min(LONGEST_WAIT_MS);
    Some(Duration::from_millis(wait) + Duration::from_millis(200))
}

/// The wait until the file's retention lock ends (at most [`LONGEST_WAIT_MS`]), when one
/// holds: the status then says it no longer does, and what it held back goes ahead.
pub(super) fn until_lock_end(record: &FileRecord, now_ms: u64) -> Option<Duration> {
    let until = record.retained_at(now_ms)?;
    let wait = until.saturating_sub(now_ms).min(LONGEST_WAIT_MS);
    Some(Duration::from_millis(wait) + Duration::from_millis(200))
}

/// The sooner of two optional waits.
pub(super) fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Under the age guard, the wait until the youngest kept stale copy may be collected.
pub(super) fn young_stale_wait(
    record: &FileRecord,
    views: &[ReplicaView],
    copies: &[CopyView],
    stale_age: Option<Duration>,
) -> Option<Duration> {
    let age = stale_age?;
    let now = unix_now_ms();
    copies
        .iter()
        .filter(|c| c.sha256 != record.sha256 && c.state == ObjectState::Ready)
        .filter(|c| {
            views
                .iter()
                .any(|v| v.id == c.replica && v.health == Health::Live)
        })
        .map(|c| (c.stored_at_ms + age.as_millis() as u64).saturating_sub(now))
        .filter(|wait| *wait > 0)
        .min()
        .map(|ms| Duration::from_millis(ms + 1))
}
