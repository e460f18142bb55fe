//! The background scrubber: re-hashes every ready copy at a bounded rate and quarantines the
//! ones that no longer match their sha256.
//!
//! Scrubbing survives restarts. The first pass starts at a random moment within
//! `--scrub-first-delay-secs` of start-up; a pass walks the copies in key order and records how
//! far it got in `DIR/scrub-state.json` (every few seconds and at the end), so a pass cut short
//! by a restart resumes where it stopped, and the next pass is due one interval after the last
//! one finished, whatever happened in between. `GET /v1/scrub` and the metric
//! `deposito_replica_scrub_oldest_unverified_seconds` report how long ago the least recently
//! verified copy was last hashed.
//!
//! This module keeps the [`Scrubber`]'s state: the schedule, the progress kept across
//! restarts and the status; [`worker`] runs the passes.

pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use deposito_api::replica::ScrubStatus;
use deposito_util::clock::unix_now;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::storage::{fsutil, ObjKey, Store};

const MIB: u64 = 1 << 20;
/// Name of the progress file in the data dir.
pub const STATE_FILE: &str = "scrub-state.json";

/// Where a pass stands: the last copy it verified, in key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    namespace: String,
    name: String,
    sha256: String,
}

impl Cursor {
    fn of(key: &ObjKey) -> Self {
        Cursor {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            sha256: key.sha256.clone(),
        }
    }

    fn key(&self) -> Option<ObjKey> {
        ObjKey::new(&self.namespace, &self.name, &self.sha256).ok()
    }
}

/// A pass in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    /// Unix seconds when the pass started.
    started: u64,
    /// The last copy verified; `None` before the first.
    after: Option<Cursor>,
}

/// What `DIR/scrub-state.json` keeps across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Persisted {
    last_pass_started: Option<u64>,
    last_pass_finished: Option<u64>,
    current: Option<Progress>,
}

/// Counters since start and the persisted progress.
#[derive(Debug, Default)]
struct State {
    passes: u64,
    objects_checked: u64,
    corrupt_found: u64,
    next_pass_at: Option<u64>,
    persisted: Persisted,
}

/// Scrub state and the trigger of an immediate pass.
#[derive(Debug)]
pub struct Scrubber {
    state: Mutex<State>,
    trigger: Notify,
    state_file: PathBuf,
    interval_secs: u64,
    first_delay_secs: u64,
    rate_bytes_per_sec: u64,
}

impl Scrubber {
    /// Loads the progress kept in `data_dir` (an unreadable file counts as none, with a
    /// warning: the worst outcome is a pass started afresh).
    pub fn new(data_dir: &Path, interval_secs: u64, first_delay_secs: u64, rate_mib: u64) -> Self {
        let state_file = data_dir.join(STATE_FILE);
        let persisted = match std::fs::read(&state_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %state_file.display(), error = %e, "ignoring unreadable scrub progress");
                Persisted::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(e) => {
                tracing::warn!(file = %state_file.display(), error = %e, "cannot read scrub progress");
                Persisted::default()
            }
        };
        Self {
            state: Mutex::new(State {
                persisted,
                ..State::default()
            }),
            trigger: Notify::new(),
            state_file,
            interval_secs: interval_secs.max(1),
            first_delay_secs,
            rate_bytes_per_sec: rate_mib.saturating_mul(MIB),
        }
    }

    /// The status, with the oldest verification computed over `store`'s copies.
    pub fn status(&self, store: &Store) -> ScrubStatus {
        let st = self.lock();
        let p = &st.persisted;
        let now = unix_now();
        let oldest = oldest_verification(store, p);
        let measured = match (p.last_pass_started, p.last_pass_finished) {
            (Some(s), Some(f)) => f.saturating_sub(s),
            _ => 0,
        };
        let pass_secs = store
            .stats()
            .bytes_used
            .checked_div(self.rate_bytes_per_sec)
            .unwrap_or(measured);
        ScrubStatus {
            passes: st.passes,
            objects_checked: st.objects_checked,
            corrupt_found: st.corrupt_found,
            last_pass_finished: p.last_pass_finished,
            last_pass_started: p.last_pass_started,
            pass_started: p.current.as_ref().map(|c| c.started),
            next_pass_at: st.next_pass_at,
            oldest_unverified_secs: oldest.map(|t| now.saturating_sub(t)),
            detection_bound_secs: self.interval_secs + 2 * pass_secs,
            interval_secs: self.interval_secs,
            rate_bytes_per_sec: self.rate_bytes_per_sec,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        deposito_util::lock(&self.state, "scrub state")
    }

    /// Asks for a pass now (or right after the current one).
    pub fn trigger(&self) {
        self.trigger.notify_one();
    }

    /// When the first pass after start-up is due: a pass cut short resumes, and an
    /// unscrubbed replica starts, at a random moment between half the first delay and all of
    /// it (capped by the interval); otherwise one interval after the last pass finished.
    fn first_pass_at(&self, now: u64) -> u64 {
        let bound = self.first_delay_secs.min(self.interval_secs);
        let jittered = now + rand::Rng::gen_range(&mut rand::thread_rng(), bound / 2..=bound);
        let p = &self.lock().persisted;
        match (&p.current, p.last_pass_finished) {
            (None, Some(finished)) => jittered.max(finished + self.interval_secs),
            _ => jittered,
        }
    }

    /// Starts a pass, or takes up the one in progress; returns where to continue.
    fn begin_pass(&self) -> Option<ObjKey> {
        let mut st = self.lock();
        st.next_pass_at = None;
        let current = st.persisted.current.get_or_insert_with(|| Progress {
            started: unix_now(),
            after: None,
        });
        current.after.as_ref().and_then(Cursor::key)
    }

    /// Records one verified copy (and whether it was corrupt).
    fn checked(&self, key: &ObjKey, corrupt: bool) {
        let mut st = self.lock();
        st.objects_checked += 1;
        st.corrupt_found += u64::from(corrupt);
        if let Some(current) = st.persisted.current.as_mut() {
            current.after = Some(Cursor::of(key));
        }
    }

    /// Ends the pass: it becomes the last completed one.
    fn finish_pass(&self) {
        let mut st = self.lock();
        st.passes += 1;
        let started = st.persisted.current.take().map(|c| c.started);
        st.persisted.last_pass_started = started;
        st.persisted.last_pass_finished = Some(unix_now());
        st.next_pass_at = Some(unix_now() + self.interval_secs);
    }

    /// Writes the progress to the data dir (atomically, fsync'd).
    fn save(&self) {
        let bytes = serde_json::to_vec(&self.lock().persisted).expect("plain data serializes");
        if let Err(e) = fsutil::write_file_atomic(&self.state_file, &bytes) {
            tracing::error!(file = %self.state_file.display(), error = %e, "cannot record scrub progress");
        }
    }
}

/// The earliest time any ready copy was last verified: copies the pass in progress has
/// passed were verified at its start or later, the others at the start of the last completed
/// pass or later, and every copy when it was written.
fn oldest_verification(store: &Store, p: &Persisted) -> Option<u64> {
    let visited_since = p.current.as_ref().map(|c| c.started);
    let visited_through = p
        .current
        .as_ref()
        .and_then(|c| c.after.as_ref())
        .and_then(Cursor::key);
    let before = p.last_pass_started.unwrap_or(0);
    store.fold_ready(None, |oldest: Option<u64>, key, info| {
        let pass = match (&visited_through, visited_since) {
            (Some(through), Some(since)) if key <= through => since,
            _ => before,
        };
        let verified = info.stored_at.max(pass);
        Some(oldest.map_or(verified, |o| o.min(verified)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber(dir: &Path, interval: u64, first_delay: u64) -> Scrubber {
        Scrubber::new(dir, interval, first_delay, 64)
    }

    #[test]
    fn first_pass_is_jittered_within_the_bound_and_capped_by_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..200 {
            let at = scrubber(dir.path(), 3600, 120).first_pass_at(1_000);
            assert!((1_060..=1_120).contains(&at), "{at}");
            let at = scrubber(dir.path(), 10, 120).first_pass_at(1_000);
            assert!((1_005..=1_010).contains(&at), "{at}");
        }
    }

    #[test]
    fn progress_survives_a_restart_and_sets_the_next_pass() {
        let dir = tempfile::tempdir().unwrap();
        let s = scrubber(dir.path(), 3600, 0);
        assert_eq!(s.begin_pass(), None);
        let key = ObjKey::new("default", "a.bin", &"ab".repeat(32)).unwrap();
        s.checked(&key, false);
        s.save();
        // Restarted mid-pass: resumes after `key`, at once (first delay 0).
        let s = scrubber(dir.path(), 3600, 0);
        assert_eq!(s.first_pass_at(5_000), 5_000);
        assert_eq!(s.begin_pass(), Some(key));
        s.finish_pass();
        s.save();
        let finished = s.lock().persisted.last_pass_finished.unwrap();
        // Restarted after a complete pass: the next one is an interval after it finished.
        let s = scrubber(dir.path(), 3600, 0);
        assert_eq!(s.first_pass_at(finished + 10), finished + 3600);
        assert_eq!(s.begin_pass(), None, "a new pass starts from the beginning");
    }

    #[test]
    fn an_unreadable_progress_file_counts_as_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let s = scrubber(dir.path(), 3600, 0);
        assert_eq!(s.lock().persisted, Persisted::default());
    }
}
