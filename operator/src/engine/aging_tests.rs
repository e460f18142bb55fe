//! The rules of a file's aging, as tables: what is in force when, and which changes a
//! retention lock refuses.

use deposito_api::lifecycle::Lifecycle;
use deposito_api::FileKey;

use super::*;
use crate::engine::{Deposit, ObservedStatus, Source};

const DAY: u64 = 86_400_000;
/// An acknowledgement time well after the epoch.
const T0: u64 = 1_800_000_000_000;

fn record(replicas: u32, lifecycle: Option<&str>, retain_until_ms: Option<u64>) -> FileRecord {
    let d = Deposit::of_key(&FileKey::new("ns", "f").unwrap(), replicas, "aa", 1, "r1");
    FileRecord {
        key: d.key,
        file_name: d.file_name,
        replicas,
        sha256: d.sha256,
        size: 1,
        generation: 1,
        deleting: false,
        source: Source::Upload,
        status: ObservedStatus::initial(None),
        aging: Aging {
            lifecycle: lifecycle.map(|l| Lifecycle::parse(l).unwrap()),
            acked_ms: T0,
            retain_until_ms,
        },
    }
}

#[test]
fn the_schedule_in_force_at_each_moment() {
    let r = record(2, Some("3,1@7d,expire@90d"), None);
    let at = |ms| r.schedule(ms);
    assert_eq!(at(T0).replicas, Some(3));
    assert_eq!(at(T0).next_ms, Some(T0 + 7 * DAY));
    assert_eq!(at(T0 + 7 * DAY - 1).replicas, Some(3));
    assert_eq!(at(T0 + 7 * DAY).replicas, Some(1));
    assert_eq!(at(T0 + 7 * DAY).step, 1);
    assert_eq!(at(T0 + 7 * DAY).next_ms, Some(T0 + 90 * DAY));
    assert_eq!(at(T0 + 90 * DAY).replicas, None, "expired");
    assert_eq!(at(T0 + 90 * DAY).next_ms, None);
    // Without a start, the record's own level comes first.
    let own = record(2, Some("1@1h"), None);
    assert_eq!(own.schedule(T0).replicas, Some(2));
    // No lifecycle: the level, for good.
    let plain = record(4, None, None);
    assert_eq!(
        plain.schedule(T0 + 1000 * DAY),
        Schedule {
            replicas: Some(4),
            step: 0,
            next_ms: None
        }
    );
}

#[test]
fn what_a_retention_lock_refuses_and_allows() {
    let until = T0 + 30 * DAY;
    let now = T0 + DAY;
    let locked = record(3, None, Some(until));
    let change = |c: AgingChange| check_change(&locked, &c, now);
    let lower = AgingChange {
        replicas: Some(2),
        ..AgingChange::default()
    };
    assert_eq!(change(lower), Err(AgingError::Retained(until)));
    let raise = AgingChange {
        replicas: Some(4),
        ..AgingChange::default()
    };
    assert_eq!(change(raise), Ok(()));
    let extend = AgingChange {
        retain_until_ms: Some(until + DAY),
        ..AgingChange::default()
    };
    assert_eq!(change(extend), Ok(()));
    let shorten = AgingChange {
        retain_until_ms: Some(until - DAY),
        ..AgingChange::default()
    };
    assert!(matches!(change(shorten), Err(AgingError::Invalid(m)) if m.contains("not shortened")));
    // A lifecycle that lowers the level before the lock ends, or expires before it.
    let lowers_soon = AgingChange {
        lifecycle: Some(Some(Lifecycle::parse("3,1@2d").unwrap())),
        ..AgingChange::default()
    };
    assert_eq!(change(lowers_soon), Err(AgingError::Retained(until)));
    let lowers_after = AgingChange {
        lifecycle: Some(Some(Lifecycle::parse("3,1@60d").unwrap())),
        ..AgingChange::default()
    };
    assert_eq!(change(lowers_after), Ok(()));
    let expires_early = AgingChange {
        lifecycle: Some(Some(Lifecycle::parse("expire@10d").unwrap())),
        ..AgingChange::default()
    };
    assert!(
        matches!(change(expires_early), Err(AgingError::Invalid(m)) if m.contains("before its retention lock ends"))
    );
    assert_eq!(
        locked.check_removable(now),
        Err(AgingError::Retained(until))
    );
    // Once the date has passed, the lock forbids nothing.
    assert_eq!(locked.check_removable(until), Ok(()));
    assert_eq!(check_change(&locked, &lower_to(1), until), Ok(()));
}

#[test]
fn a_new_lock_may_come_with_any_level_but_not_before_an_expiry() {
    let open = record(3, Some("3,expire@5d"), None);
    let lock_late = AgingChange {
        retain_until_ms: Some(T0 + 10 * DAY),
        ..AgingChange::default()
    };
    assert!(matches!(
        check_change(&open, &lock_late, T0),
        Err(AgingError::Invalid(_))
    ));
    let lock_early = AgingChange {
        retain_until_ms: Some(T0 + 2 * DAY),
        replicas: Some(1),
        ..AgingChange::default()
    };
    assert_eq!(check_change(&open, &lock_early, T0), Ok(()));
}

fn lower_to(n: u32) -> AgingChange {
    AgingChange {
        replicas: Some(n),
        ..AgingChange::default()
    }
}

/// Kube mode cannot refuse a lowering schedule under a lock when it is applied (the API
/// server has no clock): the step that would lower the level waits for the lock's end.
#[test]
fn under_a_lock_a_lowering_step_waits_for_its_end() {
    let until = T0 + 10 * DAY;
    let locked = record(3, Some("1@1d,2@20d"), Some(until));
    // Day 2: step 1 (1 copy) is due, but step 0 (3 copies) was in force.
    let held = locked.schedule_under_lock(T0 + 2 * DAY, 0);
    assert_eq!(held.replicas, Some(3));
    assert_eq!(held.step, 0);
    assert_eq!(held.next_ms, Some(until));
    // Once the lock has ended, the step takes effect.
    let after = locked.schedule_under_lock(until + 1, 0);
    assert_eq!((after.replicas, after.step), (Some(1), 1));
    // A step that raises the level is never held.
    let raising = record(1, Some("3@1d"), Some(until));
    assert_eq!(
        raising.schedule_under_lock(T0 + 2 * DAY, 0).replicas,
        Some(3)
    );
    // Without a lock, the schedule as it is.
    let open = record(3, Some("1@1d"), None);
    assert_eq!(open.schedule_under_lock(T0 + 2 * DAY, 0).replicas, Some(1));
}

#[test]
fn a_lifecycle_whose_age_0_is_unknown_keeps_its_starting_level_and_looks_again_soon() {
    let mut unknown = record(2, Some("4,1@1s"), None);
    unknown.aging.acked_ms = 0;
    let s = unknown.schedule(T0);
    assert_eq!((s.replicas, s.step), (Some(4), 0));
    assert_eq!(s.next_ms, Some(T0 + AGE_UNKNOWN_RETRY_MS));
}
