//! The category of a failure, shared by every stage's error and by the seams' errors: it
//! decides how long the file waits before it is tried again.

use std::time::Duration;

/// What kind of failure it was, which decides the backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCategory {
    /// Something that usually passes on its own (a replica or the API server unreachable).
    Transient,
    /// Lost an optimistic-concurrency race: retry soon.
    Conflict,
    /// Not allowed (RBAC): retried slowly until an administrator fixes it.
    Forbidden,
    /// The desired state itself is wrong (a digest that does not match, a bad url): retried
    /// slowly, and at once when the spec changes.
    Invalid,
}

impl ErrorCategory {
    /// First and longest delay of the exponential backoff.
    pub fn backoff_bounds(self) -> (Duration, Duration) {
        match self {
            Self::Conflict => (Duration::from_millis(100), Duration::from_secs(5)),
            Self::Transient => (Duration::from_millis(500), Duration::from_secs(60)),
            Self::Forbidden => (Duration::from_secs(5), Duration::from_secs(300)),
            Self::Invalid => (Duration::from_secs(10), Duration::from_secs(600)),
        }
    }

    /// The delay before attempt `failures + 1` after `failures` consecutive failures
    /// (1 or more): `base * 2^(failures-1)`, capped.
    pub fn backoff(self, failures: u32) -> Duration {
        let (base, cap) = self.backoff_bounds();
        let shift = failures.saturating_sub(1).min(20);
        base.saturating_mul(1 << shift).min(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_category_base_up_to_its_cap() {
        let cases = [
            (ErrorCategory::Conflict, 1, 100),
            (ErrorCategory::Conflict, 2, 200),
            (ErrorCategory::Conflict, 7, 5_000),
            (ErrorCategory::Transient, 1, 500),
            (ErrorCategory::Transient, 3, 2_000),
            (ErrorCategory::Transient, 100, 60_000),
            (ErrorCategory::Forbidden, 1, 5_000),
            (ErrorCategory::Invalid, 2, 20_000),
            (ErrorCategory::Invalid, 40, 600_000),
        ];
        for (category, failures, millis) in cases {
            assert_eq!(
                category.backoff(failures),
                Duration::from_millis(millis),
                "{category:?} after {failures}"
            );
        }
    }
}
