//! Read-your-writes for the gateway in kube mode: after a write through the API server, wait
//! (bounded) until the reflector cache shows it, so that the client's next read through this
//! gateway sees its own write. Woken by the watch events themselves, not by polling.

use deposito_api::FileKey;
use kube::ResourceExt;

use super::{KubeCatalog, CATCH_UP_FOR};
use crate::kube::cached::CachedFile;

impl KubeCatalog {
    /// Read-your-writes for the gateway: waits, bounded by [`CATCH_UP_FOR`], until the
    /// reflector cache holds `written` (its generation or a later one), so that a client reading
    /// through this gateway right after its write (a deposit then its status) sees the write.
    /// Woken by the watch event itself, not by polling.
    pub(in crate::kube) async fn catch_up(&self, written: &CachedFile) {
        let (Some(ns), name) = (written.namespace(), written.name_any()) else {
            return;
        };
        let generation = written.metadata.generation.unwrap_or(0);
        self.catch_up_until(&ns, &name, |cached| {
            cached.is_some_and(|c| c.metadata.generation.unwrap_or(0) >= generation)
        })
        .await;
    }

    /// [`Self::catch_up`] to a StoredFile the API server removed: until the cache lacks it.
    pub(super) async fn catch_up_gone(&self, key: &FileKey) {
        self.catch_up_until(&key.namespace, &key.name, |cached| cached.is_none())
            .await;
    }

    async fn catch_up_until(
        &self,
        ns: &str,
        name: &str,
        done: impl Fn(Option<&CachedFile>) -> bool,
    ) {
        let Ok(key) = FileKey::new(ns, name) else {
            return;
        };
        let mut changes = self.changes.watch(&key);
        let caught_up = async {
            loop {
                changes.mark_seen();
                if done(self.cached(ns, name).as_deref()) {
                    return;
                }
                changes.changed().await;
            }
        };
        if tokio::time::timeout(CATCH_UP_FOR, caught_up).await.is_err() {
            tracing::info!(namespace = %ns, name = %name, "the StoredFile cache lags behind a write");
        }
    }
}
