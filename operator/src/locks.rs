//! Per-file locks: an upload's commit and a reconcile pass over the same file never overlap,
//! so the reconcile loop can't mistake a just-acknowledged copy for a stale one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deposito_api::FileKey;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// A map of async mutexes, one per file key, created on demand and dropped when unused.
#[derive(Default, Clone, Debug)]
pub struct KeyLocks {
    map: Arc<Mutex<HashMap<FileKey, Arc<AsyncMutex<()>>>>>,
}

/// Holds a file's lock; releases it (and forgets the unused mutex) on drop.
pub struct KeyGuard {
    guard: Option<OwnedMutexGuard<()>>,
    key: FileKey,
    locks: KeyLocks,
}

impl KeyLocks {
    fn entry(&self, key: &FileKey) -> Arc<AsyncMutex<()>> {
        self.map
            .lock()
            .expect("key locks")
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// Waits for the file's lock.
    pub async fn lock(&self, key: &FileKey) -> KeyGuard {
        let guard = self.entry(key).lock_owned().await;
        KeyGuard {
            guard: Some(guard),
            key: key.clone(),
            locks: self.clone(),
        }
    }

    /// Takes the file's lock if nobody holds it.
    pub fn try_lock(&self, key: &FileKey) -> Option<KeyGuard> {
        let guard = self.entry(key).try_lock_owned().ok()?;
        Some(KeyGuard {
            guard: Some(guard),
            key: key.clone(),
            locks: self.clone(),
        })
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map.lock().expect("key locks");
        if let Some(mutex) = map.get(&self.key) {
            // Only the map holds it: nobody waits, so it can go.
            if Arc::strong_count(mutex) == 1 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_key_cannot_be_taken_and_is_forgotten_after_release() {
        let locks = KeyLocks::default();
        let a = FileKey::new("default", "a").unwrap();
        let b = FileKey::new("default", "b").unwrap();
        let guard = locks.lock(&a).await;
        assert!(locks.try_lock(&a).is_none());
        assert!(locks.try_lock(&b).is_some());
        drop(guard);
        assert!(locks.try_lock(&a).is_some());
        assert!(locks.map.lock().unwrap().is_empty());
    }
}
