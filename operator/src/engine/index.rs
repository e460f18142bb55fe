//! The shared in-memory index of what each replica holds, kept current incrementally: one
//! observer per replica feeds it from that replica's change feed, and the engine records the
//! outcome of its own pulls and deletes at once. Reading the copies of one file costs a hash
//! lookup, whatever the number of files.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use deposito_api::replica::{ObjectChange, ObjectInfo, RegisterRequest};
use deposito_api::FileKey;

use crate::plan::{CopyView, ReplicaId};

/// What the index knows of one replica.
#[derive(Debug, Default)]
struct ReplicaEntry {
    /// Files with at least one copy (any sha256, any state) on the replica.
    keys: HashSet<FileKey>,
    /// True once a full listing was read and the change feed followed since, without a gap.
    synced: bool,
    /// The replica's own description (free space, load), when the observer asks for it.
    info: Option<RegisterRequest>,
}

#[derive(Debug, Default)]
struct Inner {
    files: HashMap<FileKey, Vec<CopyView>>,
    replicas: HashMap<ReplicaId, ReplicaEntry>,
}

/// The index. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct InventoryIndex {
    inner: RwLock<Inner>,
}

fn copy_view(replica: &str, info: &ObjectInfo) -> CopyView {
    CopyView {
        replica: replica.to_string(),
        sha256: info.sha256.clone(),
        size: info.size,
        state: info.state,
        stored_at: info.stored_at,
    }
}

impl Inner {
    /// Sets (or removes, with `info` None) the copy `(key, sha256)` on `replica`. Returns
    /// true when the index changed.
    fn set(
        &mut self,
        replica: &str,
        key: &FileKey,
        sha256: &str,
        info: Option<&ObjectInfo>,
    ) -> bool {
        let copies = self.files.entry(key.clone()).or_default();
        let position = copies
            .iter()
            .position(|c| c.replica == replica && c.sha256 == sha256);
        let changed = match (position, info) {
            (Some(i), Some(info)) => {
                let new = copy_view(replica, info);
                let changed = copies[i] != new;
                copies[i] = new;
                changed
            }
            (None, Some(info)) => {
                copies.push(copy_view(replica, info));
                true
            }
            (Some(i), None) => {
                copies.swap_remove(i);
                true
            }
            (None, None) => false,
        };
        let still_held = copies.iter().any(|c| c.replica == replica);
        if copies.is_empty() {
            self.files.remove(key);
        }
        let entry = self.replicas.entry(replica.to_string()).or_default();
        if still_held {
            if !entry.keys.contains(key) {
                entry.keys.insert(key.clone());
            }
        } else {
            entry.keys.remove(key);
        }
        changed
    }

    /// Removes every copy on `replica`; returns the keys that had one.
    fn clear(&mut self, replica: &str) -> Vec<FileKey> {
        let Some(entry) = self.replicas.get_mut(replica) else {
            return vec![];
        };
        let keys: Vec<FileKey> = entry.keys.drain().collect();
        for key in &keys {
            if let Some(copies) = self.files.get_mut(key) {
                copies.retain(|c| c.replica != replica);
                if copies.is_empty() {
                    self.files.remove(key);
                }
            }
        }
        keys
    }
}

fn key_of(namespace: &str, name: &str) -> Option<FileKey> {
    FileKey::new(namespace, name).ok()
}

impl InventoryIndex {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Every known copy of one file, on any replica.
    pub fn copies(&self, key: &FileKey) -> Vec<CopyView> {
        self.read().files.get(key).cloned().unwrap_or_default()
    }

    /// Files with a copy on `replica`.
    pub fn keys_on(&self, replica: &str) -> Vec<FileKey> {
        self.read()
            .replicas
            .get(replica)
            .map(|e| e.keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every file with a copy anywhere (the slow resync also visits copies no catalog entry
    /// claims, so that orphans are found).
    pub fn keys(&self) -> Vec<FileKey> {
        self.read().files.keys().cloned().collect()
    }

    /// Number of files with a copy anywhere.
    pub fn file_count(&self) -> usize {
        self.read().files.len()
    }

    /// Replaces everything known of `replica` with a full listing. Returns the files whose
    /// copies on it changed.
    pub fn replace(&self, replica: &str, items: &[ObjectInfo]) -> Vec<FileKey> {
        let mut inner = self.write();
        let old: HashMap<FileKey, Vec<CopyView>> = inner
            .replicas
            .get(replica)
            .map(|e| {
                e.keys
                    .iter()
                    .map(|k| {
                        let mut mine: Vec<CopyView> = inner.files[k]
                            .iter()
                            .filter(|c| c.replica == replica)
                            .cloned()
                            .collect();
                        mine.sort_by(|a, b| a.sha256.cmp(&b.sha256));
                        (k.clone(), mine)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut new: HashMap<FileKey, Vec<CopyView>> = HashMap::new();
        for item in items {
            if let Some(key) = key_of(&item.namespace, &item.name) {
                new.entry(key).or_default().push(copy_view(replica, item));
            }
        }
        for copies in new.values_mut() {
            copies.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        }
        let mut changed = Vec::new();
        for (key, was) in &old {
            if new.get(key) != Some(was) {
                changed.push(key.clone());
            }
        }
        for key in new.keys() {
            if !old.contains_key(key) {
                changed.push(key.clone());
            }
        }
        inner.clear(replica);
        for (key, copies) in new {
            for copy in copies {
                let info = ObjectInfo {
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    sha256: copy.sha256.clone(),
                    size: copy.size,
                    state: copy.state,
                    stored_at: copy.stored_at,
                };
                inner.set(replica, &key, &copy.sha256, Some(&info));
            }
        }
        changed
    }

    /// Applies change-feed entries of `replica`, in order. Returns the files that changed.
    pub fn apply(&self, replica: &str, changes: &[ObjectChange]) -> Vec<FileKey> {
        let mut inner = self.write();
        let mut changed = Vec::new();
        for change in changes {
            let Some(key) = key_of(&change.namespace, &change.name) else {
                continue;
            };
            if inner.set(replica, &key, &change.sha256, change.object.as_ref()) {
                changed.push(key);
            }
        }
        changed.dedup();
        changed
    }

    /// Records the outcome of one of the engine's own actions: `replica` now holds `info`.
    pub fn record_copy(&self, replica: &str, info: &ObjectInfo) -> bool {
        let Some(key) = key_of(&info.namespace, &info.name) else {
            return false;
        };
        self.write().set(replica, &key, &info.sha256, Some(info))
    }

    /// Records that `replica` no longer holds `(key, sha256)`.
    pub fn record_removed(&self, replica: &str, key: &FileKey, sha256: &str) -> bool {
        self.write().set(replica, key, sha256, None)
    }

    /// Forgets a replica entirely (it left the membership). Returns the files it held.
    pub fn forget(&self, replica: &str) -> Vec<FileKey> {
        let mut inner = self.write();
        let keys = inner.clear(replica);
        inner.replicas.remove(replica);
        keys
    }

    /// Whether `replica`'s entries are complete and current.
    pub fn is_synced(&self, replica: &str) -> bool {
        self.read().replicas.get(replica).is_some_and(|e| e.synced)
    }

    pub fn set_synced(&self, replica: &str, synced: bool) {
        self.write()
            .replicas
            .entry(replica.to_string())
            .or_default()
            .synced = synced;
    }

    /// The replica's own description, as last read by its observer.
    pub fn info(&self, replica: &str) -> Option<RegisterRequest> {
        self.read()
            .replicas
            .get(replica)
            .and_then(|e| e.info.clone())
    }

    pub fn set_info(&self, replica: &str, info: RegisterRequest) {
        self.write()
            .replicas
            .entry(replica.to_string())
            .or_default()
            .info = Some(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deposito_api::replica::ObjectState;

    fn info(name: &str, sha: &str, state: ObjectState) -> ObjectInfo {
        ObjectInfo {
            namespace: "default".into(),
            name: name.into(),
            sha256: sha.into(),
            size: 4,
            state,
            stored_at: 10,
        }
    }

    fn change(seq: u64, name: &str, sha: &str, object: Option<ObjectInfo>) -> ObjectChange {
        ObjectChange {
            seq,
            namespace: "default".into(),
            name: name.into(),
            sha256: sha.into(),
            object,
        }
    }

    fn key(name: &str) -> FileKey {
        FileKey::new("default", name).unwrap()
    }

    fn held(index: &InventoryIndex, name: &str) -> Vec<(String, String, ObjectState)> {
        let mut v: Vec<_> = index
            .copies(&key(name))
            .into_iter()
            .map(|c| (c.replica, c.sha256, c.state))
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }

    #[test]
    fn listing_then_changes_table() {
        let index = InventoryIndex::default();
        let ready = ObjectState::Ready;
        let changed = index.replace("r1", &[info("a", "aa", ready), info("b", "bb", ready)]);
        let mut changed_names: Vec<_> = changed.iter().map(|k| k.name.clone()).collect();
        changed_names.sort();
        assert_eq!(changed_names, vec!["a", "b"]);
        index.replace("r2", &[info("a", "aa", ready)]);
        assert_eq!(
            held(&index, "a"),
            vec![
                ("r1".into(), "aa".into(), ready),
                ("r2".into(), "aa".into(), ready)
            ]
        );

        // The same listing again changes nothing.
        assert!(index
            .replace("r1", &[info("b", "bb", ready), info("a", "aa", ready)])
            .is_empty());

        // Changes: new content beside old, a quarantine, a delete, a repeat (no change).
        let corrupt = info("b", "bb", ObjectState::Corrupt);
        let changed = index.apply(
            "r1",
            &[
                change(3, "a", "a2", Some(info("a", "a2", ready))),
                change(4, "b", "bb", Some(corrupt.clone())),
                change(5, "a", "aa", None),
                change(6, "b", "bb", Some(corrupt)),
            ],
        );
        assert_eq!(changed, vec![key("a"), key("b"), key("a")]);
        assert_eq!(
            held(&index, "a"),
            vec![
                ("r1".into(), "a2".into(), ready),
                ("r2".into(), "aa".into(), ready)
            ]
        );
        assert_eq!(
            held(&index, "b"),
            vec![("r1".into(), "bb".into(), ObjectState::Corrupt)]
        );

        // A listing that lost "b" reports it, and keys_on follows.
        let changed = index.replace("r1", &[info("a", "a2", ready)]);
        assert_eq!(changed, vec![key("b")]);
        assert!(held(&index, "b").is_empty());
        assert_eq!(index.keys_on("r1"), vec![key("a")]);
        assert_eq!(index.file_count(), 1);

        // The engine's own outcomes.
        assert!(index.record_copy("r3", &info("c", "cc", ready)));
        assert!(!index.record_copy("r3", &info("c", "cc", ready)));
        assert!(index.record_removed("r3", &key("c"), "cc"));
        assert!(index.keys_on("r3").is_empty());

        let mut forgotten = index.forget("r2");
        forgotten.sort();
        assert_eq!(forgotten, vec![key("a")]);
        assert_eq!(held(&index, "a"), vec![("r1".into(), "a2".into(), ready)]);
        assert!(!index.is_synced("r1"));
        index.set_synced("r1", true);
        assert!(index.is_synced("r1"));
    }
}
