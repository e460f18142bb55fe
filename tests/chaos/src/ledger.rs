//! What the clients were told, per name, and the campaign's counters.
//!
//! Operations on one name never overlap (a per-name lock), so each name's history is a
//! sequence. After an acknowledged write the only possible state is that content; a failed
//! operation may or may not have landed, so it adds its outcome to the possible states
//! instead of replacing them. A check after convergence observes the real state, verifies it
//! is one of the possible ones, and collapses the possibilities to it.

use crate::content::Content;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A state of one name as the gateway would report it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    Absent,
    Present { sha256: String, replicas: u32 },
}

/// One name's record.
#[derive(Debug, Clone)]
pub struct NameRecord {
    /// States the name may be in once everything settles.
    pub possible: BTreeSet<State>,
    /// Every content ever sent to this name, by sha256.
    pub history: BTreeMap<String, Content>,
    /// A copy of one of its contents was corrupted since the last check: lowering its level
    /// could trim the good copy before the scrubber finds the bad one, so it is not done.
    pub corrupted: bool,
    /// Its level was (or may have been) lowered since the last check: trims may be pending,
    /// so none of its copies is corrupted.
    pub lowered: bool,
}

impl NameRecord {
    fn new() -> Self {
        NameRecord {
            possible: BTreeSet::from([State::Absent]),
            history: BTreeMap::new(),
            corrupted: false,
            lowered: false,
        }
    }

    /// True when `sha256` is a content the name may hold now.
    pub fn may_hold(&self, sha256: &str) -> bool {
        self.possible
            .iter()
            .any(|s| matches!(s, State::Present { sha256: h, .. } if h == sha256))
    }

    /// The highest level among the possible states (0 when surely absent).
    pub fn max_level(&self) -> u32 {
        self.possible
            .iter()
            .map(|s| match s {
                State::Present { replicas, .. } => *replicas,
                State::Absent => 0,
            })
            .max()
            .unwrap_or(0)
    }

    /// The possible states with each present one at level `n`.
    fn with_level(&self, n: u32) -> BTreeSet<State> {
        self.possible
            .iter()
            .map(|s| match s {
                State::Present { sha256, .. } => State::Present {
                    sha256: sha256.clone(),
                    replicas: n,
                },
                State::Absent => State::Absent,
            })
            .collect()
    }
}

/// How an operation ended, from the client's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged (201, 200 or 202, or the CLI exited 0).
    Acked,
    /// The gateway answered 404: the file does not exist.
    NotFound,
    /// Anything else: an error status, a cut connection, a timeout. `transient` when trying
    /// again may help (no connection, 5xx other than 501 and 507), as the CLI judges it.
    Failed { reason: String, transient: bool },
}

impl Outcome {
    /// A failure that is not worth retrying.
    pub fn failed(reason: String) -> Outcome {
        Outcome::Failed {
            reason,
            transient: false,
        }
    }

    /// A failure that may go away.
    pub fn transient(reason: String) -> Outcome {
        Outcome::Failed {
            reason,
            transient: true,
        }
    }

    /// True for a failure that may go away.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Outcome::Failed {
                transient: true,
                ..
            }
        )
    }
}

/// Counters of the whole run.
#[derive(Debug, Default)]
pub struct Counters {
    pub operations: AtomicU64,
    pub acknowledged: AtomicU64,
    pub client_failures: AtomicU64,
    pub reads_verified: AtomicU64,
    pub bytes_written: AtomicU64,
    pub lost: AtomicU64,
    pub corrupt: AtomicU64,
    pub invariant_failures: AtomicU64,
}

/// Kinds of violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    Lost,
    Corrupt,
    Invariant,
}

/// The shared ledger.
pub struct Ledger {
    names: Mutex<BTreeMap<String, NameRecord>>,
    locks: BTreeMap<String, Arc<tokio::sync::Mutex<()>>>,
    pub counters: Counters,
    messages: Mutex<Vec<String>>,
    /// The phase running now (for messages).
    pub phase: AtomicU64,
}

impl Ledger {
    pub fn new(names: &[String]) -> Self {
        Ledger {
            names: Mutex::new(
                names
                    .iter()
                    .map(|n| (n.clone(), NameRecord::new()))
                    .collect(),
            ),
            locks: names
                .iter()
                .map(|n| (n.clone(), Arc::new(tokio::sync::Mutex::new(()))))
                .collect(),
            counters: Counters::default(),
            messages: Mutex::new(Vec::new()),
            phase: AtomicU64::new(0),
        }
    }

    /// The lock that keeps operations on `name` from overlapping.
    pub fn lock_of(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .get(name)
            .unwrap_or_else(|| panic!("unknown name {name}"))
            .clone()
    }

    /// A copy of `name`'s record.
    pub fn record(&self, name: &str) -> NameRecord {
        self.names.lock().expect("ledger")[name].clone()
    }

    /// Every name with its record.
    pub fn snapshot(&self) -> BTreeMap<String, NameRecord> {
        self.names.lock().expect("ledger").clone()
    }

    fn update<T>(&self, name: &str, f: impl FnOnce(&mut NameRecord) -> T) -> T {
        let mut names = self.names.lock().expect("ledger");
        f(names.get_mut(name).expect("known name"))
    }

    /// Records a content about to be sent to `name`.
    pub fn will_write(&self, name: &str, sha256: &str, content: Content) {
        self.update(name, |r| {
            r.history.insert(sha256.to_string(), content);
        });
        self.counters
            .bytes_written
            .fetch_add(content.size, Ordering::Relaxed);
    }

    /// Counts one operation and its outcome.
    fn count(&self, outcome: &Outcome) {
        self.counters.operations.fetch_add(1, Ordering::Relaxed);
        if let Outcome::Failed { .. } = outcome {
            self.counters
                .client_failures
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The end of a write of `sha256` at `replicas` copies.
    pub fn wrote(&self, name: &str, sha256: &str, replicas: u32, outcome: &Outcome) {
        self.count(outcome);
        let state = State::Present {
            sha256: sha256.to_string(),
            replicas,
        };
        self.update(name, |r| {
            if *outcome == Outcome::Acked {
                self.counters.acknowledged.fetch_add(1, Ordering::Relaxed);
                r.possible = BTreeSet::from([state]);
            } else {
                r.possible.insert(state);
                // It may have landed, with trims of other copies to follow: be careful.
                r.lowered = true;
            }
        });
    }

    /// The end of a change of level to `n`.
    pub fn set_level(&self, name: &str, n: u32, outcome: &Outcome) {
        self.count(outcome);
        match outcome {
            Outcome::Acked => {
                self.counters.acknowledged.fetch_add(1, Ordering::Relaxed);
                self.update(name, |r| {
                    r.lowered |= n < r.max_level();
                    let present: BTreeSet<State> = r
                        .with_level(n)
                        .into_iter()
                        .filter(|s| *s != State::Absent)
                        .collect();
                    if present.is_empty() {
                        self.violation(
                            Violation::Invariant,
                            format!("{name}: level change acknowledged for a file surely absent"),
                        );
                    } else {
                        r.possible = present;
                    }
                });
            }
            Outcome::NotFound => self.not_found(name, "PATCH"),
            Outcome::Failed { .. } => self.update(name, |r| {
                r.lowered |= n < r.max_level();
                let more = r.with_level(n);
                r.possible.extend(more);
            }),
        }
    }

    /// The end of a delete.
    pub fn deleted(&self, name: &str, outcome: &Outcome) {
        self.count(outcome);
        match outcome {
            Outcome::Acked => {
                self.counters.acknowledged.fetch_add(1, Ordering::Relaxed);
                self.update(name, |r| r.possible = BTreeSet::from([State::Absent]));
            }
            Outcome::NotFound => self.not_found(name, "DELETE"),
            Outcome::Failed { .. } => self.update(name, |r| {
                r.possible.insert(State::Absent);
            }),
        }
    }

    /// An earlier try of a delete failed: it may have landed.
    pub fn may_be_deleted(&self, name: &str) {
        self.update(name, |r| {
            r.possible.insert(State::Absent);
        });
    }

    /// A 404 for `name`: fine (and then surely absent) when absence was possible; otherwise an
    /// acknowledged file is gone.
    pub fn not_found(&self, name: &str, what: &str) {
        let possible = self.update(name, |r| {
            let was = r.possible.clone();
            if was.contains(&State::Absent) {
                r.possible = BTreeSet::from([State::Absent]);
            }
            was
        });
        if !possible.contains(&State::Absent) {
            self.violation(
                Violation::Lost,
                format!("{name}: {what} answered 404 but it must exist: {possible:?}"),
            );
        }
    }

    /// The end of a read: `served` is the sha256 of the bytes received whole and the ETag
    /// the gateway announced, or the outcome when there were no such bytes.
    pub fn read(&self, name: &str, served: Result<(String, String), Outcome>) {
        let outcome = match &served {
            Ok(_) => Outcome::Acked,
            Err(o) => o.clone(),
        };
        self.count(&outcome);
        match served {
            Err(Outcome::NotFound) => self.not_found(name, "GET"),
            Err(_) => {}
            Ok((body_sha, etag)) => {
                let r = self.record(name);
                if body_sha != etag {
                    self.violation(
                        Violation::Corrupt,
                        format!("{name}: served bytes with sha256 {body_sha} under ETag {etag}"),
                    );
                } else if !r.history.contains_key(&body_sha) {
                    self.violation(
                        Violation::Corrupt,
                        format!("{name}: served content {body_sha} that was never written"),
                    );
                } else if !r.may_hold(&body_sha) {
                    self.violation(
                        Violation::Invariant,
                        format!(
                            "{name}: served superseded content {body_sha}; possible: {:?}",
                            r.possible
                        ),
                    );
                } else {
                    self.counters.reads_verified.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Marks `name` as holding a corrupted copy (until the next check).
    pub fn mark_corrupted(&self, name: &str) {
        self.update(name, |r| r.corrupted = true);
    }

    /// After a check: the observed state is the only possible one, and the marks are cleared.
    pub fn settle(&self, name: &str, observed: State) {
        self.update(name, |r| {
            r.possible = BTreeSet::from([observed]);
            r.corrupted = false;
            r.lowered = false;
        });
    }

    /// Records a violation (counted and kept for the report).
    pub fn violation(&self, kind: Violation, message: String) {
        let counter = match kind {
            Violation::Lost => &self.counters.lost,
            Violation::Corrupt => &self.counters.corrupt,
            Violation::Invariant => &self.counters.invariant_failures,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let phase = self.phase.load(Ordering::Relaxed);
        let line = format!("phase {phase}: {kind:?}: {message}");
        eprintln!("chaos: VIOLATION {line}");
        self.messages.lock().expect("messages").push(line);
    }

    /// Every violation message so far.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().expect("messages").clone()
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(sha: &str, n: u32) -> State {
        State::Present {
            sha256: sha.into(),
            replicas: n,
        }
    }

    #[test]
    fn acknowledged_write_replaces_failed_ones_add() {
        let l = Ledger::new(&["a".to_string()]);
        let c = Content { seed: 1, size: 1 };
        l.will_write("a", "x", c);
        l.wrote("a", "x", 2, &Outcome::Acked);
        l.wrote("a", "y", 3, &Outcome::failed("reset".into()));
        assert_eq!(
            l.record("a").possible,
            BTreeSet::from([present("x", 2), present("y", 3)])
        );
        l.set_level("a", 1, &Outcome::Acked);
        assert_eq!(
            l.record("a").possible,
            BTreeSet::from([present("x", 1), present("y", 1)])
        );
        assert!(l.record("a").lowered);
        l.deleted("a", &Outcome::transient("503".into()));
        assert!(l.record("a").possible.contains(&State::Absent));
        l.deleted("a", &Outcome::Acked);
        assert_eq!(l.record("a").possible, BTreeSet::from([State::Absent]));
        assert_eq!(Ledger::get(&l.counters.lost), 0);
    }

    #[test]
    fn not_found_for_an_acknowledged_file_is_a_loss() {
        let l = Ledger::new(&["a".to_string()]);
        l.wrote("a", "x", 2, &Outcome::Acked);
        l.read("a", Err(Outcome::NotFound));
        assert_eq!(Ledger::get(&l.counters.lost), 1);
    }

    #[test]
    fn reads_of_wrong_or_superseded_content_are_violations() {
        let l = Ledger::new(&["a".to_string()]);
        let c = Content { seed: 1, size: 1 };
        l.will_write("a", "x", c);
        l.wrote("a", "x", 2, &Outcome::Acked);
        l.will_write("a", "y", c);
        l.wrote("a", "y", 2, &Outcome::Acked);
        l.read("a", Ok(("y".into(), "y".into())));
        assert_eq!(Ledger::get(&l.counters.reads_verified), 1);
        l.read("a", Ok(("x".into(), "x".into())));
        assert_eq!(Ledger::get(&l.counters.invariant_failures), 1);
        l.read("a", Ok(("z".into(), "z".into())));
        l.read("a", Ok(("z".into(), "y".into())));
        assert_eq!(Ledger::get(&l.counters.corrupt), 2);
    }
}
