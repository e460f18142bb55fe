//! A file's lifecycle: the number of copies it keeps as it ages, and when it expires.
//!
//! Written as a spec string (the CLI's `--lifecycle`, a deposit header):
//!
//! ```text
//! 3,1@7d,expire@90d
//! ```
//!
//! - an optional first item, a bare number: N from the start (when absent, the file's own
//!   level, `spec.replicas` or the deposit's N, is the level before the first step);
//! - `N@AGE`: N copies from that age on;
//! - `expire@AGE`: the file is deleted at that age, as by `rm` (last, at most once).
//!
//! Ages are a whole number and a unit, `s`, `m`, `h` or `d`, counted from the moment the
//! current content was acknowledged. Steps come in increasing age order, each N from 1 to
//! [`MAX_REPLICAS`], and the expiry comes after the last step. [`Lifecycle::at`] says what is
//! in force at an age and when the next transition falls: the engine requeues a file for
//! that moment instead of scanning.

use std::fmt;

use crate::openapi::MAX_REPLICAS;

/// Most steps in one lifecycle.
pub const MAX_STEPS: usize = 16;
/// Longest age a lifecycle may name: 100 years.
pub const MAX_AGE_SECS: u64 = 100 * 365 * 86_400;

/// One step: from `after_secs` of age on, keep `replicas` copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub after_secs: u64,
    pub replicas: u32,
}

/// A validated lifecycle (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lifecycle {
    /// N from the start; `None`: the file's own level.
    pub start: Option<u32>,
    /// In strictly increasing age order, each age above 0.
    pub steps: Vec<Step>,
    /// Age at which the file is deleted; after the last step.
    pub expire_after_secs: Option<u64>,
}

/// What a lifecycle has in force at one age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InForce {
    /// Copies to keep now; `None` once expired.
    pub replicas: Option<u32>,
    /// How many steps have taken effect (0: the starting level).
    pub step: usize,
    /// The age of the next transition (a step or the expiry), if any is left.
    pub next_at_secs: Option<u64>,
}

/// Why a lifecycle spec is refused (the message is the whole explanation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid lifecycle '{spec}': {reason}")]
pub struct LifecycleError {
    pub spec: String,
    pub reason: String,
}

fn parse_replicas(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if (1..=MAX_REPLICAS).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{text}' is not a number of copies from 1 to {MAX_REPLICAS}"
        )),
    }
}

/// An age such as `90d`: seconds.
pub fn parse_age(text: &str) -> Result<u64, String> {
    let bad = || format!("'{text}' is not an age (a whole number and s, m, h or d: 7d, 36h)");
    let unit_at = text.len().checked_sub(1).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(unit_at);
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|s| *s <= MAX_AGE_SECS)
        .ok_or_else(|| format!("'{text}' is longer than 100 years"))?;
    Ok(secs)
}

/// The shortest spelling of an age in whole units.
pub fn format_age(secs: u64) -> String {
    match secs {
        0 => "0s".to_string(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A moment written as RFC 3339 (`2027-01-31T12:00:00Z`) or as a date (`2027-01-31`,
/// midnight UTC): milliseconds since the Unix epoch.
pub fn parse_time(text: &str) -> Result<u64, String> {
    use time::format_description::well_known::Rfc3339;
    let bad = || {
        format!("'{text}' is not a time (RFC 3339 such as 2027-01-31T12:00:00Z, or a date such as 2027-01-31)")
    };
    let moment = match time::OffsetDateTime::parse(text, &Rfc3339) {
        Ok(moment) => moment,
        Err(_) => time::OffsetDateTime::parse(&format!("{text}T00:00:00Z"), &Rfc3339)
            .map_err(|_| bad())?,
    };
    let ms = moment.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map_err(|_| format!("'{text}' is before 1970"))
}

/// A moment (milliseconds since the Unix epoch) in RFC 3339, UTC, to the second.
pub fn format_time(ms: u64) -> String {
    use time::format_description::well_known::Rfc3339;
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{secs}"))
}

impl Lifecycle {
    /// Parses and validates a spec string.
    pub fn parse(spec: &str) -> Result<Self, LifecycleError> {
        Self::parse_items(spec).map_err(|reason| LifecycleError {
            spec: spec.to_string(),
            reason,
        })
    }

    fn parse_items(spec: &str) -> Result<Self, String> {
        let mut lifecycle = Lifecycle::default();
        if spec.trim().is_empty() {
            return Err("it is empty".to_string());
        }
        for (i, item) in spec.split(',').map(str::trim).enumerate() {
            if lifecycle.expire_after_secs.is_some() {
                return Err("nothing may follow expire@AGE".to_string());
            }
            match item.split_once('@') {
                None if i == 0 => lifecycle.start = Some(parse_replicas(item)?),
                None => {
                    return Err(format!(
                        "'{item}': only the first item may be a bare number (N from the start)"
                    ))
                }
                Some(("expire", age)) => lifecycle.expire_after_secs = Some(parse_age(age)?),
                Some((n, age)) => lifecycle.steps.push(Step {
                    after_secs: parse_age(age)?,
                    replicas: parse_replicas(n)?,
                }),
            }
        }
        lifecycle.validate()?;
        Ok(lifecycle)
    }

    /// Checks the rules of the module documentation; the reason when one is broken.
    pub fn validate(&self) -> Result<(), String> {
        if self.start.is_none() && self.steps.is_empty() && self.expire_after_secs.is_none() {
            return Err("it is empty".to_string());
        }
        if let Some(n) = self.start {
            parse_replicas(&n.to_string())?;
        }
        if self.steps.len() > MAX_STEPS {
            return Err(format!("more than {MAX_STEPS} steps"));
        }
        let mut last = 0;
        for step in &self.steps {
            parse_replicas(&step.replicas.to_string())?;
            if step.after_secs > MAX_AGE_SECS {
                return Err(format!(
                    "{} is longer than 100 years",
                    format_age(step.after_secs)
                ));
            }
            if step.after_secs <= last {
                return Err(format!(
                    "step ages must increase and be above 0: {}@{} comes after {}",
                    step.replicas,
                    format_age(step.after_secs),
                    format_age(last)
                ));
            }
            last = step.after_secs;
        }
        match self.expire_after_secs {
            Some(0) => Err("expire@0s would delete the file at once".to_string()),
            Some(e) if e > MAX_AGE_SECS => {
                Err(format!("{} is longer than 100 years", format_age(e)))
            }
            Some(e) if e <= last => Err(format!(
                "the expiry ({}) must come after the last step ({})",
                format_age(e),
                format_age(last)
            )),
            _ => Ok(()),
        }
    }

    /// The level before the first step: the lifecycle's own start, else `base`.
    pub fn starting(&self, base: u32) -> u32 {
        self.start.unwrap_or(base)
    }

    /// What is in force at `age_secs` for a file whose own level is `base`.
    pub fn at(&self, base: u32, age_secs: u64) -> InForce {
        if self.expire_after_secs.is_some_and(|e| age_secs >= e) {
            return InForce {
                replicas: None,
                step: self.steps.len(),
                next_at_secs: None,
            };
        }
        let step = self.steps.partition_point(|s| s.after_secs <= age_secs);
        let replicas = match step {
            0 => self.starting(base),
            k => self.steps[k - 1].replicas,
        };
        let next_at_secs = self
            .steps
            .get(step)
            .map(|s| s.after_secs)
            .or(self.expire_after_secs);
        InForce {
            replicas: Some(replicas),
            step,
            next_at_secs,
        }
    }
}

impl Lifecycle {
    /// What is in force at `now_ms` for content acknowledged at `acked_ms`, with the next
    /// transition as a moment (milliseconds since the epoch) instead of an age.
    pub fn in_force(&self, base: u32, acked_ms: u64, now_ms: u64) -> (InForce, Option<u64>) {
        let age_secs = now_ms.saturating_sub(acked_ms) / 1000;
        let in_force = self.at(base, age_secs);
        let next_ms = in_force
            .next_at_secs
            .map(|secs| acked_ms.saturating_add(secs.saturating_mul(1000)));
        (in_force, next_ms)
    }

    /// The moment the content acknowledged at `acked_ms` expires, if it does.
    pub fn expires_ms(&self, acked_ms: u64) -> Option<u64> {
        self.expire_after_secs
            .map(|secs| acked_ms.saturating_add(secs.saturating_mul(1000)))
    }

    /// The fewest copies the lifecycle keeps at any age from `from_secs` up to (not
    /// including) `until_secs`; 0 when it expires in between. What a retention lock checks:
    /// while it holds, no change may take the level below the one in force.
    pub fn lowest_between(&self, base: u32, from_secs: u64, until_secs: u64) -> u32 {
        let mut lowest = self.at(base, from_secs).replicas.unwrap_or(0);
        for step in &self.steps {
            if step.after_secs > from_secs && step.after_secs < until_secs {
                lowest = lowest.min(step.replicas);
            }
        }
        if self
            .expire_after_secs
            .is_some_and(|e| e > from_secs && e < until_secs)
        {
            lowest = 0;
        }
        lowest
    }
}

impl fmt::Display for Lifecycle {
    /// The canonical spec string (what [`Lifecycle::parse`] reads back to the same value).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = self.start.iter().map(u32::to_string).collect();
        items.extend(
            self.steps
                .iter()
                .map(|s| format!("{}@{}", s.replicas, format_age(s.after_secs))),
        );
        items.extend(
            self.expire_after_secs
                .map(|e| format!("expire@{}", format_age(e))),
        );
        f.write_str(&items.join(","))
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
