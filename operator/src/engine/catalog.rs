//! The catalog seam: where each mode keeps the desired state of files (local: SQLite; kube:
//! StoredFile resources), how the engine publishes status into it, and how it says that
//! something changed.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use deposito_api::FileKey;
use tokio::sync::{mpsc, watch};

use super::category::ErrorCategory;
use super::model::{FileRecord, ObservedStatus};

/// Failure of a catalog operation, classified so that callers pick a backoff and an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The store can't be read or written now (SQLite busy, API server unreachable).
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
    /// The operator is not allowed to do this (Kubernetes RBAC).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Someone else changed the record first (optimistic concurrency); retry.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request or the stored record is invalid.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The file's retention lock forbids the change (the lock's end, ms since the epoch).
    #[error("{}", retained_message(*.0))]
    Retained(u64),
}

/// What a client is told when a retention lock refuses a change.
pub fn retained_message(until_ms: u64) -> String {
    format!(
        "the file is retained until {}: it can't be deleted, replaced or lowered before then",
        deposito_api::lifecycle::format_time(until_ms)
    )
}

impl CatalogError {
    pub fn category(&self) -> ErrorCategory {
        match self {
            Self::Unavailable(_) => ErrorCategory::Transient,
            Self::Forbidden(_) => ErrorCategory::Forbidden,
            Self::Conflict(_) => ErrorCategory::Conflict,
            Self::Invalid(_) | Self::Retained(_) => ErrorCategory::Invalid,
        }
    }
}

/// Whether a file claims the copies of a key, as far as the catalog can tell for certain:
/// what orphan collection asks before it touches a copy (rule 13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A file claims them.
    Claimed,
    /// No file claims them, and the catalog's view of the key's namespace is complete and
    /// current.
    Unclaimed,
    /// The catalog can't tell now (not listed yet, listing forbidden or failing, the API
    /// server unreachable): keep the copies.
    Unknown(String),
    /// The key's namespace is not one this operator manages: its copies are never touched.
    Unmanaged,
}

/// What reconciling needs of a mode's store of desired state (the gateway's reads and writes
/// are [`crate::gateway::store::FileStore`]). Reads are expected to be cheap (a SQLite row, a
/// reflector cache); nothing here lists the whole catalog except [`Catalog::keys`], which only
/// the slow resync calls.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// One file, by storage key.
    async fn get(&self, key: &FileKey) -> Result<Option<FileRecord>, CatalogError>;

    /// Every storage key, for the slow periodic resync.
    async fn keys(&self) -> Result<Vec<FileKey>, CatalogError>;

    /// Stores the status computed for `record` (as read, with the content the engine learned
    /// filled in). Ignored when the record moved on to another generation meanwhile. Returns
    /// true when what is stored changed.
    async fn publish(
        &self,
        record: &FileRecord,
        status: &ObservedStatus,
    ) -> Result<bool, CatalogError>;

    /// Removes a record whose deletion is complete (no copy left), unless it changed since
    /// `record.generation`. Returns true when it was removed.
    async fn finalize(&self, record: &FileRecord) -> Result<bool, CatalogError>;

    /// Deletes a file whose lifecycle expired, as `rm` would, unless the record changed
    /// since `record.generation` (new content restarts its age) or a retention lock holds.
    /// Returns true when the deletion was recorded.
    async fn expire(&self, record: &FileRecord) -> Result<bool, CatalogError>;

    /// Change notifications of this catalog.
    fn changes(&self) -> &Changes;

    /// Whether a file claims the copies of `key` ([`Claim::Unclaimed`] only with a complete,
    /// current view of its namespace).
    async fn claim(&self, key: &FileKey) -> Claim;

    /// Whether the catalog's view is complete and current now, so that copies no file
    /// claims may be collected; `Err(why)` while orphan collection waits (shown by `/readyz`
    /// and the metrics).
    fn completeness(&self) -> Result<(), String>;

    /// The lifecycle namespace `namespace` gives its files that have none of their own
    /// (read from memory: the engine asks at every reconcile). None by default.
    fn default_lifecycle(&self, _namespace: &str) -> Option<deposito_api::lifecycle::Lifecycle> {
        None
    }

    /// The content of a [`super::Source::Inline`] record, read when a copy must be made
    /// (a mode's cache need not keep it). A catalog without inline sources refuses.
    async fn inline_content(&self, key: &FileKey) -> Result<Vec<u8>, CatalogError> {
        Err(CatalogError::Invalid(format!(
            "{key}: this catalog keeps no inline content"
        )))
    }
}

/// Change notifications of a catalog: keys whose desired state changed go to the engine's
/// work queue (once something took the receiver), and any change of a key wakes the long
/// polls waiting on that key, and only those.
#[derive(Default)]
pub struct Changes {
    queue: Mutex<Option<mpsc::UnboundedSender<FileKey>>>,
    waiters: Mutex<HashMap<FileKey, watch::Sender<u64>>>,
}

impl Changes {
    /// The desired state of `key` changed: queue it and wake its waiters.
    pub fn desired_changed(&self, key: &FileKey) {
        if let Some(queue) = self.queue.lock().expect("changes").as_ref() {
            let _ = queue.send(key.clone());
        }
        self.status_changed(key);
    }

    /// Something about `key` changed (its status): wake its waiters.
    pub fn status_changed(&self, key: &FileKey) {
        if let Some(tx) = self.waiters.lock().expect("changes").get(key) {
            tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// The stream of keys whose desired state changed, from now on. There is one: a second
    /// call replaces the first receiver.
    pub fn queue_receiver(&self) -> mpsc::UnboundedReceiver<FileKey> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.queue.lock().expect("changes") = Some(tx);
        rx
    }

    /// Watches `key` until the returned handle is dropped.
    pub fn watch(&self, key: &FileKey) -> KeyWatch<'_> {
        let mut waiters = self.waiters.lock().expect("changes");
        let rx = waiters
            .entry(key.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        KeyWatch {
            changes: self,
            key: key.clone(),
            rx: Some(rx),
        }
    }
}

/// A subscription to one key's changes. Forgets the key when its last watcher goes.
pub struct KeyWatch<'a> {
    changes: &'a Changes,
    key: FileKey,
    rx: Option<watch::Receiver<u64>>,
}

impl KeyWatch<'_> {
    /// Marks what was seen so far; [`KeyWatch::changed`] then waits for something newer.
    pub fn mark_seen(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            rx.borrow_and_update();
        }
    }

    /// Waits for the next change of the key.
    pub async fn changed(&mut self) {
        let Some(rx) = self.rx.as_mut() else {
            return std::future::pending().await;
        };
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for KeyWatch<'_> {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut waiters = self.changes.waiters.lock().expect("changes");
        if waiters
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            waiters.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(name: &str) -> FileKey {
        FileKey::new("default", name).unwrap()
    }

    #[tokio::test]
    async fn only_the_changed_key_wakes_and_watchers_are_forgotten() {
        let changes = Changes::default();
        // Nobody took the queue yet: changes only wake waiters, nothing piles up.
        changes.desired_changed(&key("a"));
        let mut queue = changes.queue_receiver();
        let mut a = changes.watch(&key("a"));
        let mut b = changes.watch(&key("b"));
        a.mark_seen();
        b.mark_seen();
        changes.desired_changed(&key("a"));
        tokio::time::timeout(Duration::from_secs(1), a.changed())
            .await
            .expect("a woke");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), b.changed())
                .await
                .is_err(),
            "b did not change"
        );
        assert_eq!(queue.try_recv().unwrap(), key("a"));
        assert!(queue.try_recv().is_err());
        changes.status_changed(&key("b"));
        assert!(queue.try_recv().is_err(), "status changes are not queued");
        drop(a);
        drop(b);
        assert!(changes.waiters.lock().unwrap().is_empty());
    }
}
