//! The change log of the store's index: every commit, quarantine and delete gets the next
//! sequence number, so that an observer (the operator) can follow what a replica holds by
//! asking only for what changed since its cursor, instead of re-reading the whole inventory.
//!
//! The log lives in memory and keeps the last [`DEFAULT_CAPACITY`] changes. Its `epoch` is a
//! random identity chosen at every start: a cursor from another epoch, or older than what is
//! retained, is refused ([`Expired`]) and the observer lists the inventory again.

use std::collections::VecDeque;

use deposito_api::replica::{ObjectChange, ObjectInfo};
use rand::Rng;

use super::ObjKey;

/// Changes kept for observers that fall behind (a few MiB at most).
pub const DEFAULT_CAPACITY: usize = 65_536;

/// A cursor the log can no longer serve: the observer must re-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub reason: String,
}

/// The log itself. Mutated under the store's index lock, so a sequence number always
/// describes the index exactly as it was after that change.
#[derive(Debug)]
pub struct ChangeLog {
    epoch: String,
    seq: u64,
    entries: VecDeque<ObjectChange>,
    capacity: usize,
}

impl ChangeLog {
    /// An empty log with a fresh random epoch.
    pub fn new(capacity: usize) -> Self {
        let epoch: u128 = rand::thread_rng().gen();
        Self {
            epoch: format!("{epoch:032x}"),
            seq: 0,
            entries: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The sequence number of the last change.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Records that `key` now is `object` (absent: deleted). Returns its sequence number.
    pub fn record(&mut self, key: &ObjKey, object: Option<&ObjectInfo>) -> u64 {
        self.seq += 1;
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(ObjectChange {
            seq: self.seq,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            sha256: key.sha256.clone(),
            object: object.cloned(),
        });
        self.seq
    }

    /// Up to `limit` changes after `since` in epoch `epoch`, and whether more follow.
    pub fn since(
        &self,
        epoch: &str,
        since: u64,
        limit: usize,
    ) -> Result<(Vec<ObjectChange>, bool), Expired> {
        if epoch != self.epoch {
            return Err(Expired {
                reason: format!(
                    "epoch {epoch} is not the current one ({}): the replica restarted",
                    self.epoch
                ),
            });
        }
        if since > self.seq {
            return Err(Expired {
                reason: format!("cursor {since} is ahead of the log ({})", self.seq),
            });
        }
        let oldest = self.entries.front().map_or(self.seq + 1, |c| c.seq);
        if since + 1 < oldest {
            return Err(Expired {
                reason: format!("cursor {since} is older than the retained log (from {oldest})"),
            });
        }
        // Entries are consecutive: the change after `since` sits at a computable index.
        let start = (since + 1 - oldest) as usize;
        let changes: Vec<ObjectChange> = self
            .entries
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect();
        let more = start + changes.len() < self.entries.len();
        Ok((changes, more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deposito_api::replica::ObjectState;

    fn key(name: &str) -> ObjKey {
        ObjKey {
            namespace: "default".into(),
            name: name.into(),
            sha256: "a".repeat(64),
        }
    }

    fn info(name: &str) -> ObjectInfo {
        ObjectInfo {
            namespace: "default".into(),
            name: name.into(),
            sha256: "a".repeat(64),
            size: 1,
            state: ObjectState::Ready,
            stored_at: 1,
            stored_at_ms: 1_000,
        }
    }

    #[test]
    fn cursors_table() {
        let mut log = ChangeLog::new(3);
        let epoch = log.epoch().to_string();
        assert_eq!(log.since(&epoch, 0, 10).unwrap(), (vec![], false));
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            let object = (i != 2).then(|| info(name));
            assert_eq!(log.record(&key(name), object.as_ref()), i as u64 + 1);
        }
        // Capacity 3: changes 2, 3, 4 are kept.
        let names =
            |v: Vec<ObjectChange>| v.into_iter().map(|c| (c.seq, c.name)).collect::<Vec<_>>();
        let (changes, more) = log.since(&epoch, 1, 10).unwrap();
        assert_eq!(
            names(changes),
            vec![(2, "b".into()), (3, "c".into()), (4, "d".into())]
        );
        assert!(!more);
        let (changes, more) = log.since(&epoch, 1, 2).unwrap();
        assert_eq!(names(changes), vec![(2, "b".into()), (3, "c".into())]);
        assert!(more);
        let (changes, _) = log.since(&epoch, 2, 10).unwrap();
        assert_eq!(changes[0].seq, 3);
        assert!(changes[0].object.is_none(), "change 3 is a delete");
        assert_eq!(log.since(&epoch, 4, 10).unwrap(), (vec![], false));
        // Too old, from the future, or from another epoch: re-list.
        assert!(log.since(&epoch, 0, 10).is_err());
        assert!(log.since(&epoch, 5, 10).is_err());
        assert!(log.since("other", 4, 10).is_err());
        assert_ne!(
            ChangeLog::new(1).epoch(),
            epoch,
            "every log gets its own epoch"
        );
    }
}
