//! What a file's age decides: the level its lifecycle has in force, its expiry, and its
//! retention lock (see [`deposito_api::lifecycle`] for the lifecycle itself).
//!
//! Pure: every function takes the moment it judges (`now_ms`), so the engine, the gateway
//! and the tests agree on one answer. The rules of a change (PATCH, `set-lifecycle`, a
//! deposit over an existing file) are [`check_change`]: a retention lock can be extended,
//! never shortened; while it holds, nothing may take the level below the one in force or
//! delete the file; an expiry never falls before the lock's end.

use deposito_api::lifecycle::{format_time, Lifecycle};

use super::catalog::{retained_message, CatalogError};
use super::model::FileRecord;

/// Why a change of a file's aging is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgingError {
    /// The change breaks a rule whatever the time (a lifecycle that expires before the
    /// lock's end, a lock shortened).
    #[error("{0}")]
    Invalid(String),
    /// The retention lock forbids it until then (ms since the epoch).
    #[error("{}", retained_message(*.0))]
    Retained(u64),
}

impl From<AgingError> for CatalogError {
    fn from(err: AgingError) -> Self {
        match err {
            AgingError::Invalid(why) => CatalogError::Invalid(why),
            AgingError::Retained(until) => CatalogError::Retained(until),
        }
    }
}

/// The longest a file waits for its next look when its next transition is further away:
/// the engine looks again at least daily (cheap), so a clock step never strands a file.
pub const LONGEST_WAIT_MS: u64 = 86_400_000;

/// How soon a file with a lifecycle whose age 0 is not known yet is looked at again.
const AGE_UNKNOWN_RETRY_MS: u64 = 1_000;

/// What a file's age decides, as its catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Aging {
    pub lifecycle: Option<Lifecycle>,
    /// When the current content was acknowledged (milliseconds since the Unix epoch): age 0.
    pub acked_ms: u64,
    /// Until then the file can't be deleted, replaced or lowered.
    pub retain_until_ms: Option<u64>,
}

/// What a file's lifecycle has in force at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The level to keep now; `None` once the file has expired.
    pub replicas: Option<u32>,
    /// How many steps have taken effect.
    pub step: usize,
    /// When the next step or the expiry falls due (milliseconds since the Unix epoch).
    pub next_ms: Option<u64>,
}

/// A change of a file's level, lifecycle or retention lock (each `None` keeps what is).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgingChange {
    pub replicas: Option<u32>,
    /// `Some(None)` removes the lifecycle.
    pub lifecycle: Option<Option<Lifecycle>>,
    pub retain_until_ms: Option<u64>,
}

impl AgingChange {
    /// True when the change names nothing.
    pub fn is_empty(&self) -> bool {
        self.replicas.is_none() && self.lifecycle.is_none() && self.retain_until_ms.is_none()
    }
}

impl FileRecord {
    /// What is in force at `now_ms`: the lifecycle's level, or the record's own level for a
    /// file without one.
    pub fn schedule(&self, now_ms: u64) -> Schedule {
        match &self.aging.lifecycle {
            None => Schedule {
                replicas: Some(self.replicas),
                step: 0,
                next_ms: None,
            },
            // Age 0 not known yet (kube mode learns it when the first copy is verified):
            // the starting level, and a look again soon.
            Some(lifecycle) if self.aging.acked_ms == 0 => Schedule {
                replicas: Some(lifecycle.starting(self.replicas)),
                step: 0,
                next_ms: Some(now_ms + AGE_UNKNOWN_RETRY_MS),
            },
            Some(lifecycle) => {
                let (in_force, next_ms) =
                    lifecycle.in_force(self.replicas, self.aging.acked_ms, now_ms);
                Schedule {
                    replicas: in_force.replicas,
                    step: in_force.step,
                    next_ms,
                }
            }
        }
    }

    /// [`Self::schedule`] under the retention lock: while it holds, a step that would lower
    /// the level below the step in force (`held_step`, the one last published) or the expiry
    /// waits for the lock's end. Local mode refuses such schedules when the lock is taken;
    /// kube mode's API server cannot read the time, so the engine is where they wait.
    pub fn schedule_under_lock(&self, now_ms: u64, held_step: usize) -> Schedule {
        let schedule = self.schedule(now_ms);
        let (Some(until), Some(lifecycle)) = (self.retained_at(now_ms), &self.aging.lifecycle)
        else {
            return schedule;
        };
        let held = held_step.min(schedule.step).min(lifecycle.steps.len());
        let held_level = match held {
            0 => lifecycle.starting(self.replicas),
            k => lifecycle.steps[k - 1].replicas,
        };
        if schedule.replicas.is_some_and(|n| n >= held_level) {
            return schedule;
        }
        Schedule {
            replicas: Some(held_level),
            step: held,
            next_ms: Some(schedule.next_ms.map_or(until, |next| next.min(until))),
        }
    }

    /// The retention lock's end, while it holds at `now_ms`.
    pub fn retained_at(&self, now_ms: u64) -> Option<u64> {
        self.aging.retain_until_ms.filter(|until| *until > now_ms)
    }

    /// Refuses deleting the file (or replacing its content) while its lock holds.
    pub fn check_removable(&self, now_ms: u64) -> Result<(), AgingError> {
        match self.retained_at(now_ms) {
            Some(until) => Err(AgingError::Retained(until)),
            None => Ok(()),
        }
    }

    /// The record as it would be after `change` (not checked; see [`check_change`]).
    pub fn with_change(&self, change: &AgingChange) -> FileRecord {
        let mut next = self.clone();
        if let Some(n) = change.replicas {
            next.replicas = n;
        }
        if let Some(lifecycle) = &change.lifecycle {
            next.aging.lifecycle = lifecycle.clone();
        }
        if let Some(until) = change.retain_until_ms {
            next.aging.retain_until_ms = Some(until);
        }
        next
    }
}

/// Checks `change` of `record` at `now_ms` (see the module documentation). A lifecycle
/// that expires before the lock's end is `Invalid`; anything the lock forbids is `Retained`.
pub fn check_change(
    record: &FileRecord,
    change: &AgingChange,
    now_ms: u64,
) -> Result<(), AgingError> {
    let held = record.retained_at(now_ms);
    if let (Some(until), Some(new)) = (held, change.retain_until_ms) {
        if new < until {
            return Err(AgingError::Invalid(format!(
                "the retention lock can be extended, not shortened: it holds until {}, not {}",
                format_time(until),
                format_time(new)
            )));
        }
    }
    let next = record.with_change(change);
    check_expiry_after_lock(&next)?;
    let Some(until) = next.retained_at(now_ms) else {
        return Ok(());
    };
    let in_force = record.schedule(now_ms).replicas.unwrap_or(0);
    let lowest = lowest_until(&next, now_ms, until);
    if held.is_some() && lowest < in_force {
        return Err(AgingError::Retained(until));
    }
    Ok(())
}

/// The fewest copies `record` keeps from `now_ms` until `until_ms` (0 if it expires).
fn lowest_until(record: &FileRecord, now_ms: u64, until_ms: u64) -> u32 {
    match &record.aging.lifecycle {
        None => record.replicas,
        Some(lifecycle) => {
            let age = |ms: u64| ms.saturating_sub(record.aging.acked_ms) / 1000;
            lifecycle.lowest_between(record.replicas, age(now_ms), age(until_ms))
        }
    }
}

/// A lifecycle's expiry must not fall before the retention lock's end.
pub fn check_expiry_after_lock(record: &FileRecord) -> Result<(), AgingError> {
    let expires = record
        .aging
        .lifecycle
        .as_ref()
        .and_then(|l| l.expires_ms(record.aging.acked_ms));
    match (expires, record.aging.retain_until_ms) {
        (Some(expires), Some(until)) if expires < until => Err(AgingError::Invalid(format!(
            "the lifecycle expires the file at {}, before its retention lock ends ({})",
            format_time(expires),
            format_time(until)
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "aging_tests.rs"]
mod tests;
