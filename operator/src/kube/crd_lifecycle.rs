//! A StoredFile's lifecycle and retention lock, as the CRD spells them:
//!
//! ```yaml
//! spec:
//!   replicas: 3            # the level until the first step
//!   lifecycle:
//!     steps:
//!       - after: 7d        # from this age on ...
//!         replicas: 1      # ... keep this many copies
//!     expireAfter: 90d     # then the StoredFile is deleted, as by kubectl delete
//!   retainUntil: "2027-01-31T00:00:00Z"
//! ```
//!
//! The API server checks the shape with CEL ([`STEPS_RULE`], [`EXPIRY_RULE`]): ages
//! increase, the expiry comes after the last step. A retention lock's rules depend on the
//! time, which CEL cannot read: the operator publishes `status.retainedUntil` while the lock
//! holds, and [`LOCK_RULE`] refuses, while that field is set, a lower `spec.replicas`, other
//! content, another lifecycle and a shorter or removed `spec.retainUntil`. Deletion is held
//! by the finalizer until the lock ends. Conversions to and from
//! [`deposito_api::lifecycle::Lifecycle`] are here too.

use deposito_api::lifecycle::{format_age, parse_age, Lifecycle, Step, MAX_STEPS};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// An age: a whole number and `s`, `m`, `h` or `d` (as the CLI's `--lifecycle` writes it).
pub const AGE_PATTERN: &str = r"^[1-9][0-9]{0,8}[smhd]$";

/// The CEL expression of an age's seconds (`$x` is an age string).
macro_rules! secs {
    ($x:literal) => {
        concat!(
            "(int(",
            $x,
            ".substring(0, size(",
            $x,
            ") - 1)) * (",
            $x,
            ".endsWith('d') ? 86400 : ",
            $x,
            ".endsWith('h') ? 3600 : ",
            $x,
            ".endsWith('m') ? 60 : 1))"
        )
    };
}

/// Step ages strictly increase (sorted, and no two the same).
pub const STEPS_RULE: &str = concat!(
    "!has(self.steps) || (self.steps.map(s, ",
    secs!("s.after"),
    ").isSorted() && self.steps.all(a, self.steps.exists_one(b, ",
    secs!("b.after"),
    " == ",
    secs!("a.after"),
    ")))"
);

/// The expiry comes after the last step.
pub const EXPIRY_RULE: &str = concat!(
    "!has(self.expireAfter) || !has(self.steps) || size(self.steps) == 0 || ",
    secs!("self.expireAfter"),
    " > ",
    secs!("self.steps[size(self.steps) - 1].after")
);

/// A lifecycle says something.
pub const NOT_EMPTY_RULE: &str =
    "(has(self.steps) && size(self.steps) > 0) || has(self.expireAfter)";

/// While the operator reports the lock holding (`status.retainedUntil`), an update keeps the
/// content, the lifecycle and at least the level, and keeps or extends the lock.
pub const LOCK_RULE: &str = "!has(oldSelf.status) || !has(oldSelf.status.retainedUntil) || (\
     self.spec.replicas >= oldSelf.spec.replicas \
     && self.spec.source == oldSelf.spec.source \
     && has(self.spec.sha256) == has(oldSelf.spec.sha256) \
     && (!has(self.spec.sha256) || self.spec.sha256 == oldSelf.spec.sha256) \
     && has(self.spec.lifecycle) == has(oldSelf.spec.lifecycle) \
     && (!has(self.spec.lifecycle) || self.spec.lifecycle == oldSelf.spec.lifecycle) \
     && has(self.spec.retainUntil) \
     && timestamp(self.spec.retainUntil) >= timestamp(oldSelf.status.retainedUntil))";

/// What the API server says when [`LOCK_RULE`] refuses an update.
pub const LOCK_RULE_MESSAGE: &str = "the file is under a retention lock (status.retainedUntil): \
     until then spec.replicas cannot be lowered, the content and spec.lifecycle cannot change, \
     and spec.retainUntil can only be extended";

/// The level as the file ages (see the module documentation).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(NOT_EMPTY_RULE).message("a lifecycle needs steps or expireAfter"))]
#[x_kube(validation = Rule::new(STEPS_RULE).message("lifecycle step ages must increase"))]
#[x_kube(validation = Rule::new(EXPIRY_RULE).message("lifecycle expireAfter must come after the last step"))]
pub struct LifecycleSpec {
    /// In increasing age order: from each step's age on, keep its number of copies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub steps: Vec<LifecycleStep>,
    /// The age at which the StoredFile is deleted (after the last step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 10), regex(pattern = AGE_PATTERN))]
    pub expire_after: Option<String>,
}

/// From `after` of age on, keep `replicas` copies.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleStep {
    /// An age counted from the moment the current content was acknowledged: a whole number
    /// and s, m, h or d (7d, 36h).
    #[schemars(length(max = 10), regex(pattern = AGE_PATTERN))]
    pub after: String,
    /// Copies from that age on.
    #[schemars(range(min = 1, max = 512))]
    pub replicas: i32,
}

impl LifecycleSpec {
    /// The engine's lifecycle; the reason when the API server's checks were bypassed (an
    /// older CRD) or an age is longer than 100 years.
    pub fn to_lifecycle(&self) -> Result<Lifecycle, String> {
        let steps = self
            .steps
            .iter()
            .map(|s| {
                Ok(Step {
                    after_secs: parse_age(&s.after)?,
                    replicas: u32::try_from(s.replicas)
                        .map_err(|_| format!("{} is not a number of copies", s.replicas))?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let lifecycle = Lifecycle {
            start: None,
            steps,
            expire_after_secs: self.expire_after.as_deref().map(parse_age).transpose()?,
        };
        lifecycle.validate()?;
        Ok(lifecycle)
    }

    /// The CRD's form of `lifecycle`; its starting level (if it names one) is
    /// `spec.replicas`, which the caller sets.
    pub fn of(lifecycle: &Lifecycle) -> Self {
        LifecycleSpec {
            steps: lifecycle
                .steps
                .iter()
                .take(MAX_STEPS)
                .map(|s| LifecycleStep {
                    after: format_age(s.after_secs),
                    replicas: s.replicas as i32,
                })
                .collect(),
            expire_after: lifecycle.expire_after_secs.map(format_age),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lifecycle_goes_to_the_crd_form_and_back() {
        let lifecycle = Lifecycle::parse("1@36h,expire@90d").unwrap();
        let spec = LifecycleSpec::of(&lifecycle);
        assert_eq!(spec.steps[0].after, "36h");
        assert_eq!(spec.expire_after.as_deref(), Some("90d"));
        assert_eq!(spec.to_lifecycle().unwrap(), lifecycle);
    }

    #[test]
    fn a_spec_the_api_server_would_refuse_is_refused_here_too() {
        let decreasing = LifecycleSpec {
            steps: vec![
                LifecycleStep {
                    after: "2d".into(),
                    replicas: 2,
                },
                LifecycleStep {
                    after: "1d".into(),
                    replicas: 1,
                },
            ],
            expire_after: None,
        };
        assert!(decreasing
            .to_lifecycle()
            .unwrap_err()
            .contains("must increase"));
        assert!(LifecycleSpec::default().to_lifecycle().is_err());
    }

    #[test]
    fn the_age_expression_reads_each_unit() {
        assert_eq!(
            secs!("x"),
            "(int(x.substring(0, size(x) - 1)) * (x.endsWith('d') ? 86400 : \
             x.endsWith('h') ? 3600 : x.endsWith('m') ? 60 : 1))"
        );
        assert!(AGE_PATTERN.contains("[smhd]"));
    }
}
