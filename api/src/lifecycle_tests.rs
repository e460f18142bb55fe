//! Table and randomized tests of [`super::Lifecycle`].

use proptest::prelude::*;

use super::*;

fn step(after_secs: u64, replicas: u32) -> Step {
    Step {
        after_secs,
        replicas,
    }
}

#[test]
fn specs_parse_to_their_steps() {
    let table: &[(&str, Lifecycle)] = &[
        (
            "3,1@7d,expire@90d",
            Lifecycle {
                start: Some(3),
                steps: vec![step(7 * 86_400, 1)],
                expire_after_secs: Some(90 * 86_400),
            },
        ),
        (
            "3,1@20s,expire@40s",
            Lifecycle {
                start: Some(3),
                steps: vec![step(20, 1)],
                expire_after_secs: Some(40),
            },
        ),
        (
            "2@1h,1@36h",
            Lifecycle {
                start: None,
                steps: vec![step(3_600, 2), step(36 * 3_600, 1)],
                expire_after_secs: None,
            },
        ),
        (
            "expire@30m",
            Lifecycle {
                start: None,
                steps: vec![],
                expire_after_secs: Some(1_800),
            },
        ),
        (
            " 4 , 2@90s ",
            Lifecycle {
                start: Some(4),
                steps: vec![step(90, 2)],
                expire_after_secs: None,
            },
        ),
    ];
    for (spec, want) in table {
        assert_eq!(Lifecycle::parse(spec).as_ref(), Ok(want), "{spec}");
    }
    assert_eq!(
        Lifecycle::parse(" 4 , 2@90s ").unwrap().to_string(),
        "4,2@90s"
    );
    assert_eq!(
        Lifecycle::parse("3,1@168h,expire@2160h")
            .unwrap()
            .to_string(),
        "3,1@7d,expire@90d"
    );
}

#[test]
fn invalid_specs_are_refused_with_the_reason() {
    let table: &[(&str, &str)] = &[
        ("", "it is empty"),
        ("0,1@7d", "not a number of copies from 1 to 512"),
        ("3,0@7d", "not a number of copies from 1 to 512"),
        ("3,513@7d", "not a number of copies from 1 to 512"),
        ("3,1@7d,2@1d", "step ages must increase"),
        ("3,1@7d,2@7d", "step ages must increase"),
        ("3,1@0s", "step ages must increase and be above 0"),
        (
            "3,1@7d,expire@1d",
            "the expiry (1d) must come after the last step (7d)",
        ),
        ("3,1@7d,expire@7d", "must come after the last step"),
        ("expire@0s", "would delete the file at once"),
        ("3,expire@9d,1@10d", "nothing may follow expire@AGE"),
        ("3,2", "only the first item may be a bare number"),
        ("3,1@7", "is not an age"),
        ("3,1@7w", "is not an age"),
        ("3,1@-7d", "is not an age"),
        ("3,1@d", "is not an age"),
        ("3,1@", "is not an age"),
        ("3,1@40000d", "longer than 100 years"),
        ("3,1@99999999999999999999d", "longer than 100 years"),
        ("three,1@7d", "is not a number of copies"),
    ];
    for (spec, reason) in table {
        let err = Lifecycle::parse(spec).expect_err(spec);
        assert!(err.to_string().contains(reason), "{spec}: {err}");
        assert!(err.to_string().starts_with("invalid lifecycle '"), "{err}");
    }
    let many: Vec<String> = (1..=17).map(|i| format!("1@{i}d")).collect();
    assert_eq!(
        Lifecycle::default().validate(),
        Err("it is empty".to_string())
    );
    assert!(Lifecycle::parse(&many.join(","))
        .unwrap_err()
        .to_string()
        .contains("more than 16 steps"));
}

#[test]
fn the_level_in_force_follows_the_age() {
    let l = Lifecycle::parse("3,1@20s,expire@40s").unwrap();
    let at = |age| l.at(2, age);
    assert_eq!(
        at(0),
        InForce {
            replicas: Some(3),
            step: 0,
            next_at_secs: Some(20)
        }
    );
    assert_eq!(at(19).replicas, Some(3));
    assert_eq!(
        at(20),
        InForce {
            replicas: Some(1),
            step: 1,
            next_at_secs: Some(40)
        }
    );
    assert_eq!(
        at(40),
        InForce {
            replicas: None,
            step: 1,
            next_at_secs: None
        }
    );
    // Without a start of its own, the file's level holds until the first step.
    let l = Lifecycle::parse("1@1h").unwrap();
    assert_eq!(l.at(4, 0).replicas, Some(4));
    assert_eq!(l.at(4, 3_600).replicas, Some(1));
    assert_eq!(l.at(4, 3_600).next_at_secs, None);
}

fn lifecycles() -> impl Strategy<Value = Lifecycle> {
    (
        proptest::option::of(1u32..=MAX_REPLICAS),
        proptest::collection::btree_map(1u64..=10_000_000, 1u32..=MAX_REPLICAS, 0..=MAX_STEPS),
        proptest::option::of(1u64..=5_000_000),
    )
        .prop_map(|(start, steps, extra)| {
            let steps: Vec<Step> = steps.into_iter().map(|(a, n)| step(a, n)).collect();
            let last = steps.last().map_or(0, |s| s.after_secs);
            Lifecycle {
                start,
                steps,
                expire_after_secs: extra.map(|e| last + e),
            }
        })
        .prop_filter("not empty", |l| l != &Lifecycle::default())
}

proptest! {
    #[test]
    fn a_valid_lifecycle_reads_back_from_its_spec(l in lifecycles()) {
        prop_assert_eq!(l.validate(), Ok(()));
        let spec = l.to_string();
        prop_assert_eq!(Lifecycle::parse(&spec), Ok(l));
    }

    #[test]
    fn nothing_changes_between_transitions_and_something_does_at_each(
        l in lifecycles(),
        base in 1u32..=MAX_REPLICAS,
        age in 0u64..=20_000_000,
    ) {
        let now = l.at(base, age);
        match now.next_at_secs {
            Some(next) => {
                prop_assert!(next > age);
                // The level holds until just before the next transition...
                prop_assert_eq!(l.at(base, next - 1).replicas, now.replicas);
                // ...which is a step taking effect or the expiry.
                let then = l.at(base, next);
                prop_assert!(then.step > now.step || then.replicas.is_none());
            }
            None => {
                prop_assert_eq!(l.at(base, age.saturating_add(1_000_000_000)), now);
            }
        }
        if let Some(n) = now.replicas {
            prop_assert!((1..=MAX_REPLICAS).contains(&n));
        }
    }
}
