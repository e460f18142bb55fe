//! Errors of one reconcile, one type per stage (observe, plan, act, publish), each with a
//! category that decides how long the file waits before it is tried again.

use crate::replica_client::ReplicaClientError;

use super::catalog::CatalogError;
use super::category::ErrorCategory;
use super::membership::MembershipError;

/// The observe stage: reading the record and the replicas.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ObserveError {
    #[error("reading the catalog: {0}")]
    Catalog(CatalogError),
    #[error("reading the replica set: {0}")]
    Membership(MembershipError),
}

/// The plan stage: the record can't be planned as it is.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PlanError {
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
}

/// The act stage: a step asked of a replica failed. The status still shows the plan; the
/// next attempt observes what actually happened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ActError {
    #[error("pull to {target} from {source_replica} failed: {error}")]
    Pull {
        target: String,
        source_replica: String,
        error: ReplicaClientError,
    },
    #[error("delete on {replica} failed: {error}")]
    Delete {
        replica: String,
        error: ReplicaClientError,
    },
    #[error("restore from the trash on {replica} failed: {error}")]
    Restore {
        replica: String,
        error: ReplicaClientError,
    },
    #[error("moving the orphan on {replica} to its trash failed: {error}")]
    Trash {
        replica: String,
        error: ReplicaClientError,
    },
    #[error("before trimming, the copy on {replica} could not be verified present: {reason}")]
    Unverified { replica: String, reason: String },
    #[error("no replica can take the first copy: {0}")]
    NoTarget(String),
    #[error("storing the content on {replica} failed: {error}")]
    Ingest {
        replica: String,
        error: ReplicaClientError,
    },
    #[error("reading the inline content from the catalog failed: {0}")]
    Content(CatalogError),
}

impl ActError {
    pub fn category(&self) -> ErrorCategory {
        match self {
            Self::Ingest { error, .. } if error.is_content_error() => ErrorCategory::Invalid,
            Self::Content(error) => error.category(),
            _ => ErrorCategory::Transient,
        }
    }
}

/// The publish stage: writing status, or removing a finished deletion.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    #[error("writing status: {0}")]
    Catalog(CatalogError),
}

/// Any failure of one reconcile.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Act(#[from] ActError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl ReconcileError {
    /// Decides the backoff.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Self::Observe(ObserveError::Catalog(e)) | Self::Publish(PublishError::Catalog(e)) => {
                e.category()
            }
            Self::Observe(ObserveError::Membership(e)) => e.category(),
            Self::Plan(_) => ErrorCategory::Invalid,
            Self::Act(e) => e.category(),
        }
    }

    /// A short stable label for metrics (`failures by reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Observe(
                ObserveError::Catalog(CatalogError::Forbidden(_))
                | ObserveError::Membership(MembershipError::Forbidden(_)),
            )
            | Self::Publish(PublishError::Catalog(CatalogError::Forbidden(_))) => "forbidden",
            Self::Observe(ObserveError::Catalog(_)) => "catalog_read",
            Self::Observe(ObserveError::Membership(_)) => "membership",
            Self::Plan(_) => "invalid_spec",
            Self::Act(ActError::Pull { .. }) => "pull",
            Self::Act(ActError::Delete { .. }) => "delete",
            Self::Act(ActError::Restore { .. }) => "restore",
            Self::Act(ActError::Trash { .. }) => "trash",
            Self::Act(ActError::Unverified { .. }) => "unverified",
            Self::Act(ActError::NoTarget(_)) => "no_target",
            Self::Act(ActError::Ingest { .. }) => "ingest",
            Self::Act(ActError::Content(_)) => "inline_content",
            Self::Publish(PublishError::Catalog(CatalogError::Conflict(_))) => "conflict",
            Self::Publish(_) => "publish",
        }
    }

    /// The stage that failed, for messages.
    pub fn stage(&self) -> &'static str {
        match self {
            Self::Observe(_) => "observe",
            Self::Plan(_) => "plan",
            Self::Act(_) => "act",
            Self::Publish(_) => "publish",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_follow_the_cause() {
        let forbidden = ReconcileError::Observe(ObserveError::Membership(
            MembershipError::Forbidden("pods".into()),
        ));
        assert_eq!(forbidden.category(), ErrorCategory::Forbidden);
        assert_eq!(forbidden.reason(), "forbidden");
        let conflict =
            ReconcileError::Publish(PublishError::Catalog(CatalogError::Conflict("rv".into())));
        assert_eq!(conflict.category(), ErrorCategory::Conflict);
        let unreachable = ReconcileError::Act(ActError::Pull {
            target: "a".into(),
            source_replica: "b".into(),
            error: ReplicaClientError::Unreachable("refused".into()),
        });
        assert_eq!(unreachable.category(), ErrorCategory::Transient);
        assert_eq!(unreachable.stage(), "act");
    }
}
