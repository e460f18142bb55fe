//! The shared in-memory index of what each replica holds, kept current incrementally: one
//! observer per replica feeds it from that replica's change feed, and the engine records the
//! outcome of its own pulls and deletes at once. Reading the copies of one file costs a hash
//! lookup, whatever the number of files.

use std::collections::HashMap;
use std::sync::RwLock;

use deposito_api::replica::{ObjectChange, ObjectInfo, ObjectState, RegisterRequest};
use deposito_api::FileKey;

use crate::plan::{CopyView, ReplicaId};

/// One copy, stored compactly (56 bytes): the replica as an index into the replica table,
/// the digest as bytes. Converted to a [`CopyView`] only when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    replica: u16,
    sha256: [u8; 32],
    size: u64,
    stored_at_ms: u64,
    state: ObjectState,
    /// The replica's listing under way (or last done) when this copy was last set: a full
    /// listing removes, at its end, the copies of that replica it did not set.
    listing: u32,
}

impl Held {
    /// Whether the copy itself differs (not only when it was last seen).
    fn differs(&self, other: &Held) -> bool {
        Held {
            listing: 0,
            ..*self
        } != Held {
            listing: 0,
            ..*other
        }
    }
}

/// What the index knows of one replica.
#[derive(Debug, Default)]
struct ReplicaEntry {
    id: ReplicaId,
    /// True once a full listing was read and the change feed followed since, without a gap.
    synced: bool,
    /// The replica's own description (free space, load), when the observer asks for it.
    info: Option<RegisterRequest>,
    /// Bytes of the ready copies it holds, kept current on every change (what rebalancing
    /// evens out).
    ready_bytes: u64,
    /// Number of its current (or last) full listing.
    listing: u32,
}

#[derive(Debug, Default)]
struct Inner {
    files: HashMap<FileKey, Vec<Held>>,
    replicas: Vec<ReplicaEntry>,
}

/// The index. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct InventoryIndex {
    inner: RwLock<Inner>,
}

fn digest(hex_sha: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_sha, &mut out).ok()?;
    Some(out)
}

impl Inner {
    /// The table index of `replica`, added when new.
    fn slot(&mut self, replica: &str) -> u16 {
        if let Some(i) = self.replicas.iter().position(|r| r.id == replica) {
            return i as u16;
        }
        self.replicas.push(ReplicaEntry {
            id: replica.to_string(),
            ..ReplicaEntry::default()
        });
        (self.replicas.len() - 1) as u16
    }

    fn find(&self, replica: &str) -> Option<u16> {
        self.replicas
            .iter()
            .position(|r| r.id == replica)
            .map(|i| i as u16)
    }

    fn view(&self, copy: &Held) -> CopyView {
        CopyView {
            replica: self.replicas[copy.replica as usize].id.clone(),
            sha256: hex::encode(copy.sha256),
            size: copy.size,
            state: copy.state,
            stored_at_ms: copy.stored_at_ms,
        }
    }

    /// Sets (or removes, with `info` None) the copy `(key, sha256)` on replica `slot`.
    /// Returns true when the index changed.
    fn set(&mut self, slot: u16, key: &FileKey, sha256: &str, info: Option<&ObjectInfo>) -> bool {
        let Some(sha) = digest(sha256) else {
            return false;
        };
        let listing = self.replicas[slot as usize].listing;
        let new = info.map(|info| Held {
            replica: slot,
            sha256: sha,
            size: info.size,
            stored_at_ms: info.committed_ms(),
            state: info.state,
            listing,
        });
        let ready_size = |copy: &Held| {
            if copy.state == ObjectState::Ready {
                copy.size
            } else {
                0
            }
        };
        let added = new.as_ref().map_or(0, ready_size);
        let Some(copies) = self.files.get_mut(key) else {
            return match new {
                Some(copy) => {
                    self.files.insert(key.clone(), vec![copy]);
                    self.replicas[slot as usize].ready_bytes += added;
                    true
                }
                None => false,
            };
        };
        let position = copies
            .iter()
            .position(|c| c.replica == slot && c.sha256 == sha);
        let mut removed = 0;
        let changed = match (position, new) {
            (Some(i), Some(copy)) => {
                let old = std::mem::replace(&mut copies[i], copy);
                removed = ready_size(&old);
                old.differs(&copy)
            }
            (None, Some(copy)) => {
                copies.push(copy);
                true
            }
            (Some(i), None) => {
                removed = ready_size(&copies.swap_remove(i));
                true
            }
            (None, None) => false,
        };
        if copies.is_empty() {
            self.files.remove(key);
        }
        let entry = &mut self.replicas[slot as usize];
        entry.ready_bytes = (entry.ready_bytes + added).saturating_sub(removed);
        changed
    }

    /// Removes every copy on replica `slot`; returns the files that had one.
    fn clear(&mut self, slot: u16) -> Vec<FileKey> {
        let mut keys = Vec::new();
        self.files.retain(|key, copies| {
            let before = copies.len();
            copies.retain(|c| c.replica != slot);
            if copies.len() != before {
                keys.push(key.clone());
            }
            !copies.is_empty()
        });
        self.replicas[slot as usize].ready_bytes = 0;
        keys
    }
}

fn key_of(namespace: &str, name: &str) -> Option<FileKey> {
    FileKey::new(namespace, name).ok()
}

impl InventoryIndex {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().expect("inventory index lock")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().expect("inventory index lock")
    }

    /// Every known copy of one file, on any replica.
    pub fn copies(&self, key: &FileKey) -> Vec<CopyView> {
        let inner = self.read();
        inner
            .files
            .get(key)
            .map(|copies| copies.iter().map(|c| inner.view(c)).collect())
            .unwrap_or_default()
    }

    /// Files with a copy on `replica`. Visits every file: only replica changes call it.
    pub fn keys_on(&self, replica: &str) -> Vec<FileKey> {
        let inner = self.read();
        let Some(slot) = inner.find(replica) else {
            return vec![];
        };
        inner
            .files
            .iter()
            .filter(|(_, copies)| copies.iter().any(|c| c.replica == slot))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Every file with a copy anywhere (the slow resync also visits copies no catalog entry
    /// claims, so that orphans are found).
    pub fn keys(&self) -> Vec<FileKey> {
        self.read().files.keys().cloned().collect()
    }

    /// Bytes of ready copies on `replica`, as last observed.
    pub fn ready_bytes(&self, replica: &str) -> u64 {
        let inner = self.read();
        inner
            .find(replica)
            .map_or(0, |slot| inner.replicas[slot as usize].ready_bytes)
    }

    /// Up to `limit` ready copies on `from`, as (file, sha256, size), of files no copy of
    /// which (in any state) is on `to`, each no larger than `max_size`: candidates for a
    /// rebalancing move. Visits the files until it has enough: only rebalancing calls it,
    /// while replicas are uneven.
    pub fn movable(
        &self,
        from: &str,
        to: &str,
        max_size: u64,
        limit: usize,
    ) -> Vec<(FileKey, String, u64)> {
        let inner = self.read();
        let (Some(from), to) = (inner.find(from), inner.find(to)) else {
            return vec![];
        };
        let mut out = Vec::new();
        for (key, copies) in &inner.files {
            if to.is_some_and(|to| copies.iter().any(|c| c.replica == to)) {
                continue;
            }
            if let Some(copy) = copies
                .iter()
                .find(|c| c.replica == from && c.state == ObjectState::Ready && c.size <= max_size)
            {
                out.push((key.clone(), hex::encode(copy.sha256), copy.size));
                if out.len() >= limit {
                    break;
                }
            }
        }
        out
    }

    /// Number of files with a copy anywhere.
    pub fn file_count(&self) -> usize {
        self.read().files.len()
    }

    /// Starts a full listing of `replica`, given a page at a time to
    /// [`InventoryIndex::listed`] and ended by [`InventoryIndex::end_listing`]: its copies
    /// that neither the listing nor anything else set meanwhile are removed at the end. A
    /// listing never holds a second copy of the replica's inventory.
    pub fn begin_listing(&self, replica: &str) {
        let mut inner = self.write();
        let slot = inner.slot(replica) as usize;
        let entry = &mut inner.replicas[slot];
        entry.listing = entry.listing.wrapping_add(1);
    }

    /// One page of the listing `begin_listing` started. Returns the files whose copies on
    /// `replica` changed.
    pub fn listed(&self, replica: &str, items: &[ObjectInfo]) -> Vec<FileKey> {
        let mut inner = self.write();
        let slot = inner.slot(replica);
        let mut changed = Vec::new();
        for item in items {
            if let Some(key) = key_of(&item.namespace, &item.name) {
                if inner.set(slot, &key, &item.sha256, Some(item)) {
                    changed.push(key);
                }
            }
        }
        changed.dedup();
        changed
    }

    /// Ends the listing of `replica`: removes its copies not set since the listing began.
    /// Returns the files that had one.
    pub fn end_listing(&self, replica: &str) -> Vec<FileKey> {
        let mut inner = self.write();
        let slot = inner.slot(replica);
        let listing = inner.replicas[slot as usize].listing;
        let mut changed = Vec::new();
        let mut removed_bytes = 0;
        inner.files.retain(|key, copies| {
            let before = copies.len();
            copies.retain(|c| {
                let stale = c.replica == slot && c.listing != listing;
                if stale && c.state == ObjectState::Ready {
                    removed_bytes += c.size;
                }
                !stale
            });
            if copies.len() != before {
                changed.push(key.clone());
            }
            !copies.is_empty()
        });
        let entry = &mut inner.replicas[slot as usize];
        entry.ready_bytes = entry.ready_bytes.saturating_sub(removed_bytes);
        changed
    }

    /// A whole listing at once (begin, one page, end). Returns the files whose copies on
    /// `replica` changed.
    pub fn replace(&self, replica: &str, items: &[ObjectInfo]) -> Vec<FileKey> {
        self.begin_listing(replica);
        let mut changed = self.listed(replica, items);
        changed.extend(self.end_listing(replica));
        changed
    }

    /// Applies change-feed entries of `replica`, in order. Returns the files that changed.
    pub fn apply(&self, replica: &str, changes: &[ObjectChange]) -> Vec<FileKey> {
        let mut inner = self.write();
        let slot = inner.slot(replica);
        let mut changed = Vec::new();
        for change in changes {
            let Some(key) = key_of(&change.namespace, &change.name) else {
                continue;
            };
            if inner.set(slot, &key, &change.sha256, change.object.as_ref()) {
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
        let mut inner = self.write();
        let slot = inner.slot(replica);
        inner.set(slot, &key, &info.sha256, Some(info))
    }

    /// Records that `replica` no longer holds `(key, sha256)`.
    pub fn record_removed(&self, replica: &str, key: &FileKey, sha256: &str) -> bool {
        let mut inner = self.write();
        match inner.find(replica) {
            Some(slot) => inner.set(slot, key, sha256, None),
            None => false,
        }
    }

    /// Forgets a replica's copies (it left the membership). Returns the files it held.
    pub fn forget(&self, replica: &str) -> Vec<FileKey> {
        let mut inner = self.write();
        let Some(slot) = inner.find(replica) else {
            return vec![];
        };
        let keys = inner.clear(slot);
        let entry = &mut inner.replicas[slot as usize];
        entry.synced = false;
        entry.info = None;
        keys
    }

    /// Whether `replica`'s entries are complete and current.
    pub fn is_synced(&self, replica: &str) -> bool {
        let inner = self.read();
        inner
            .find(replica)
            .is_some_and(|slot| inner.replicas[slot as usize].synced)
    }

    pub fn set_synced(&self, replica: &str, synced: bool) {
        let mut inner = self.write();
        let slot = inner.slot(replica);
        inner.replicas[slot as usize].synced = synced;
    }

    /// The replica's own description, as last read by its observer.
    pub fn info(&self, replica: &str) -> Option<RegisterRequest> {
        let inner = self.read();
        inner
            .find(replica)
            .and_then(|slot| inner.replicas[slot as usize].info.clone())
    }

    pub fn set_info(&self, replica: &str, info: RegisterRequest) {
        let mut inner = self.write();
        let slot = inner.slot(replica);
        inner.replicas[slot as usize].info = Some(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deposito_api::replica::ObjectState;

    /// A 64-digit hex digest made of one repeated hex pair ("aa" → "aaaa…").
    fn sha(pair: &str) -> String {
        pair.repeat(32)
    }

    fn info(name: &str, pair: &str, state: ObjectState) -> ObjectInfo {
        ObjectInfo {
            namespace: "default".into(),
            name: name.into(),
            sha256: sha(pair),
            size: 4,
            state,
            stored_at: 10,
            stored_at_ms: 10_250,
        }
    }

    fn change(seq: u64, name: &str, pair: &str, object: Option<ObjectInfo>) -> ObjectChange {
        ObjectChange {
            seq,
            namespace: "default".into(),
            name: name.into(),
            sha256: sha(pair),
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
            .map(|c| (c.replica, c.sha256[..2].to_string(), c.state))
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }

    /// A listing given a page at a time: what it shows is set, what changed meanwhile
    /// (the engine's own pulls) stays, and only what neither set goes at its end.
    #[test]
    fn a_paged_listing_removes_only_what_nothing_set_since_it_began() {
        let index = InventoryIndex::default();
        let ready = ObjectState::Ready;
        index.replace(
            "r1",
            &[
                info("a", "aa", ready),
                info("b", "bb", ready),
                info("c", "cc", ready),
            ],
        );
        assert_eq!(index.ready_bytes("r1"), 12);
        index.begin_listing("r1");
        assert!(
            index.listed("r1", &[info("a", "aa", ready)]).is_empty(),
            "unchanged"
        );
        // A copy the engine recorded during the listing (after its page was read).
        index.record_copy("r1", &info("d", "dd", ready));
        let changed = index.listed("r1", &[info("b", "b2", ready)]);
        assert_eq!(changed, vec![key("b")]);
        let mut gone: Vec<_> = index
            .end_listing("r1")
            .into_iter()
            .map(|k| k.name)
            .collect();
        gone.sort();
        // b's old content and c were not listed; d was set meanwhile and stays.
        assert_eq!(gone, vec!["b", "c"]);
        assert_eq!(held(&index, "a"), vec![("r1".into(), "aa".into(), ready)]);
        assert_eq!(held(&index, "b"), vec![("r1".into(), "b2".into(), ready)]);
        assert!(held(&index, "c").is_empty());
        assert_eq!(held(&index, "d"), vec![("r1".into(), "dd".into(), ready)]);
        assert_eq!(index.ready_bytes("r1"), 12, "a, b2 and d");
        assert_eq!(index.file_count(), 3);
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
        assert!(index.record_removed("r3", &key("c"), &sha("cc")));
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
