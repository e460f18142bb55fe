//! The act stage: carrying out a plan against the replicas.
//!
//! - Pulls run concurrently, replica to replica (rule 6), at most `pulls_per_replica` at once
//!   into any one replica (the re-replication throttle).
//! - Trims of good copies (extra, draining, stale) run only after every copy that stays has
//!   been confirmed present on its replica right now (rule 5: add before trim, checked against
//!   the replicas, not only against the index).
//! - Corrupt copies and copies of deleted files go without that check: they are never
//!   served, so removing them loses nothing.
//! - Orphans (copies no file claims, collected only with a complete view of the catalog) go
//!   to their replica's trash, not away, and so do copies of content newer than the file's
//!   own (a restored older catalog); restores bring such copies back without copying.
//! - For `inline` and `url` sources the engine creates the first copy itself.
//!
//! Every success is recorded in the index at once; the replicas' change feeds confirm it.

use std::collections::BTreeSet;

use deposito_api::replica::ObjectState;
use deposito_api::{sha256_hex, FileKey};
use futures::future::join_all;
use tracing::{info, warn};

use super::error::ActError;
use super::events::EngineEvent;
use super::model::{FileRecord, Source};
use super::reconcile::Engine;
use crate::plan::{
    self, Action, CopyView, DeleteReason, FilePlan, Health, OrphanCopy, ReplicaView,
};

fn url_of<'a>(views: &'a [ReplicaView], id: &str) -> Option<&'a str> {
    views
        .iter()
        .find(|v| v.id == id && !v.url.is_empty())
        .map(|v| v.url.as_str())
}

/// True for trims of verified content, which wait for the staying copies to be confirmed.
fn needs_verification(reason: DeleteReason) -> bool {
    matches!(
        reason,
        DeleteReason::Extra | DeleteReason::Draining | DeleteReason::Stale | DeleteReason::Moved
    )
}

impl Engine {
    /// Carries out `plan`: pulls first, then deletes. Returns the first failure; the status is
    /// published either way, and the next reconcile observes what actually happened.
    pub(super) async fn act(
        &self,
        record: &FileRecord,
        views: &[ReplicaView],
        plan: &FilePlan,
    ) -> Result<(), ActError> {
        let key = &record.key;
        let restores = plan.actions.iter().filter_map(|a| match a {
            Action::Restore { replica, sha256 } => Some(self.restore(key, views, replica, sha256)),
            _ => None,
        });
        let pulls = plan.actions.iter().filter_map(|a| match a {
            Action::Pull {
                target,
                source,
                sha256,
            } => Some(self.pull(key, views, target, source, sha256)),
            _ => None,
        });
        let (restored, pulled) = futures::join!(join_all(restores), join_all(pulls));
        let mut first_error: Option<ActError> =
            restored.into_iter().chain(pulled).find_map(Result::err);

        let deletes: Vec<(&String, &String, DeleteReason)> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete {
                    replica,
                    sha256,
                    reason,
                } => Some((replica, sha256, *reason)),
                _ => None,
            })
            .collect();
        let guarded = deletes
            .iter()
            .any(|(_, _, reason)| needs_verification(*reason));
        let verified = if guarded {
            self.verify_staying(record, views, plan, &deletes).await
        } else {
            Ok(())
        };
        if let Err(err) = &verified {
            warn!(file = %key, %err, "trims postponed");
        }
        for (replica, sha256, reason) in deletes {
            if needs_verification(reason) && verified.is_err() {
                continue;
            }
            let to_trash = reason == DeleteReason::Newer;
            let removed = self.remove(
                key,
                views,
                (replica.as_str(), sha256.as_str()),
                reason,
                to_trash,
            );
            if let Err(err) = removed.await {
                first_error.get_or_insert(err);
            }
        }
        match (first_error, verified) {
            (Some(err), _) | (None, Err(err)) => Err(err),
            (None, Ok(())) => Ok(()),
        }
    }

    async fn pull(
        &self,
        key: &FileKey,
        views: &[ReplicaView],
        target: &str,
        source: &str,
        sha256: &str,
    ) -> Result<(), ActError> {
        let fail = |error| ActError::Pull {
            target: target.to_string(),
            source_replica: source.to_string(),
            error,
        };
        let (Some(target_url), Some(source_url)) = (url_of(views, target), url_of(views, source))
        else {
            return Err(fail(
                crate::replica_client::ReplicaClientError::Unreachable("no address known".into()),
            ));
        };
        let _slot = self.throttle.acquire(target).await;
        let result = self.client.pull(target_url, source_url, key, sha256).await;
        self.metrics.action("pull", result.is_ok());
        let info = result.map_err(fail)?;
        info!(file = %key, %target, %source, "replicated");
        self.index.record_copy(target, &info);
        Ok(())
    }

    async fn restore(
        &self,
        key: &FileKey,
        views: &[ReplicaView],
        replica: &str,
        sha256: &str,
    ) -> Result<(), ActError> {
        let fail = |error| ActError::Restore {
            replica: replica.to_string(),
            error,
        };
        let Some(url) = url_of(views, replica) else {
            return Err(fail(
                crate::replica_client::ReplicaClientError::Unreachable("no address known".into()),
            ));
        };
        let result = self.client.restore(url, key, sha256).await;
        self.metrics.action("restore", result.is_ok());
        let info = result.map_err(fail)?;
        info!(file = %key, %replica, "copy restored from the trash");
        self.index.record_copy(replica, &info);
        Ok(())
    }

    async fn delete(
        &self,
        key: &FileKey,
        views: &[ReplicaView],
        replica: &str,
        sha256: &str,
        reason: DeleteReason,
    ) -> Result<(), ActError> {
        let Some(url) = url_of(views, replica) else {
            return Ok(());
        };
        let result = self.client.delete(url, key, sha256).await;
        self.metrics.action("delete", result.is_ok());
        result.map_err(|error| ActError::Delete {
            replica: replica.to_string(),
            error,
        })?;
        info!(file = %key, %replica, ?reason, "copy deleted");
        self.index.record_removed(replica, key, sha256);
        Ok(())
    }

    /// Confirms, on the replicas themselves, that every good copy that stays after the
    /// planned trims is present and verified now.
    async fn verify_staying(
        &self,
        record: &FileRecord,
        views: &[ReplicaView],
        plan: &FilePlan,
        deletes: &[(&String, &String, DeleteReason)],
    ) -> Result<(), ActError> {
        let trimmed: BTreeSet<&str> = deletes
            .iter()
            .filter(|(_, sha, _)| **sha == record.sha256)
            .map(|(replica, _, _)| replica.as_str())
            .collect();
        let staying: Vec<&String> = plan
            .holders
            .iter()
            .filter(|h| !trimmed.contains(h.as_str()))
            .collect();
        if staying.is_empty() {
            return Err(ActError::Unverified {
                replica: "-".into(),
                reason: "no copy would stay".into(),
            });
        }
        let checks = staying.iter().map(|holder| async move {
            let url = url_of(views, holder).ok_or_else(|| ActError::Unverified {
                replica: (*holder).clone(),
                reason: "no address known".into(),
            })?;
            match self.client.holds(url, &record.key, &record.sha256).await {
                Ok(true) => Ok(()),
                Ok(false) => {
                    // The index was wrong about this replica: have it listed again.
                    self.index
                        .record_removed(holder, &record.key, &record.sha256);
                    Err(ActError::Unverified {
                        replica: (*holder).clone(),
                        reason: "the replica does not hold a verified copy".into(),
                    })
                }
                Err(err) => Err(ActError::Unverified {
                    replica: (*holder).clone(),
                    reason: err.to_string(),
                }),
            }
        });
        join_all(checks).await.into_iter().collect()
    }

    /// True when the engine must create the first copy itself: an inline or url source with
    /// no verified copy of its content on a live replica, and no holder that is only
    /// unreachable for now.
    pub(super) fn needs_ingest(
        &self,
        record: &FileRecord,
        views: &[ReplicaView],
        copies: &[CopyView],
    ) -> bool {
        if !record.source.can_ingest() {
            return false;
        }
        if record.sha256.is_empty() {
            return true;
        }
        let live = |id: &str| views.iter().any(|v| v.id == id && v.health == Health::Live);
        // A copy in a live replica's trash is restored, not stored again.
        let held = copies.iter().any(|c| {
            c.sha256 == record.sha256
                && matches!(c.state, ObjectState::Ready | ObjectState::Trashed)
                && live(&c.replica)
        });
        let pending = record
            .status
            .holders
            .iter()
            .chain(&record.status.unreachable_holders)
            .any(|id| {
                views
                    .iter()
                    .any(|v| &v.id == id && v.health == Health::Unreachable)
            });
        !held && !pending
    }

    /// Writes the content of an inline or url source to the best-placed replica. Learns the
    /// digest and size when the record did not know them.
    pub(super) async fn ingest(
        &self,
        record: &mut FileRecord,
        views: &[ReplicaView],
    ) -> Result<(), ActError> {
        let key = record.key.clone();
        let eligible: Vec<&ReplicaView> = views
            .iter()
            .filter(|v| v.health == Health::Live && !v.draining && v.free_bytes >= record.size)
            .filter(|v| v.free_bytes > 0)
            .collect();
        let Some(target) =
            plan::placement::rank_targets(&eligible, &[], 1, &key.namespace, &key.name)
                .into_iter()
                .next()
        else {
            return Err(ActError::NoTarget(format!(
                "{} live replica(s), none undrained with room",
                views.iter().filter(|v| v.health == Health::Live).count()
            )));
        };
        let url = url_of(views, &target).unwrap_or_default().to_string();
        let expected = (!record.sha256.is_empty()).then(|| record.sha256.clone());
        let (result, from) = match &record.source {
            Source::Inline => {
                let bytes = self
                    .catalog
                    .inline_content(&key)
                    .await
                    .map_err(ActError::Content)?;
                let sha = expected.clone().unwrap_or_else(|| sha256_hex(&bytes));
                let size = bytes.len() as u64;
                let body = reqwest::Body::from(bytes);
                (
                    self.client
                        .put(&url, &key, Some(&sha), Some(size), body)
                        .await,
                    "inline content".to_string(),
                )
            }
            Source::Url(source) => (
                self.client
                    .fetch(&url, &key, source, expected.as_deref())
                    .await,
                source.clone(),
            ),
            Source::Upload => return Ok(()),
        };
        self.metrics.action("ingest", result.is_ok());
        let info = result.map_err(|error| ActError::Ingest {
            replica: target.clone(),
            error,
        })?;
        self.index.record_copy(&target, &info);
        if record.sha256.is_empty() {
            record.sha256 = info.sha256.clone();
        }
        record.size = info.size;
        self.events
            .emit(
                record,
                &EngineEvent::new(
                    "Stored",
                    format!(
                        "copy stored on {target} from {from}: {} bytes, sha256 {}",
                        info.size,
                        &info.sha256[..12.min(info.sha256.len())]
                    ),
                ),
            )
            .await;
        Ok(())
    }

    /// Collects orphaned copies (no catalog entry claims them): ready ones go to their
    /// replica's trash, where they can come back from; quarantined ones, worth nothing, are
    /// deleted.
    pub(super) async fn collect(
        &self,
        key: &FileKey,
        views: &[ReplicaView],
        orphans: &[(OrphanCopy, ObjectState)],
    ) -> Result<(), ActError> {
        let mut first_error = None;
        for (orphan, state) in orphans {
            let copy = (orphan.replica.as_str(), orphan.sha256.as_str());
            let to_trash = *state != ObjectState::Corrupt;
            let result = self.remove(key, views, copy, DeleteReason::Orphan, to_trash);
            if let Err(err) = result.await {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Removes the copy `(replica, sha256)` from its replica's `objects/`: into the trash, or
    /// away.
    async fn remove(
        &self,
        key: &FileKey,
        views: &[ReplicaView],
        (replica, sha256): (&str, &str),
        reason: DeleteReason,
        to_trash: bool,
    ) -> Result<(), ActError> {
        if to_trash {
            self.trash(key, views, replica, sha256, reason).await
        } else {
            self.delete(key, views, replica, sha256, reason).await
        }
    }

    /// Moves a copy to its replica's trash (an orphan, or content newer than the catalog's).
    async fn trash(
        &self,
        key: &FileKey,
        views: &[ReplicaView],
        replica: &str,
        sha256: &str,
        reason: DeleteReason,
    ) -> Result<(), ActError> {
        let Some(url) = url_of(views, replica) else {
            return Ok(());
        };
        let result = self.client.trash(url, key, sha256).await;
        self.metrics.action("trash", result.is_ok());
        let trashed = result.map_err(|error| ActError::Trash {
            replica: replica.to_string(),
            error,
        })?;
        match trashed {
            Some(info) => {
                info!(file = %key, %replica, ?reason, "copy moved to the trash");
                self.index.record_copy(replica, &info);
            }
            None => {
                self.index.record_removed(replica, key, sha256);
            }
        }
        Ok(())
    }
}
