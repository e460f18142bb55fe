//! The work queue of file keys, in the manner of client-go's workqueue and kube-rs's
//! scheduler: a key is held at most once (de-duplicated while queued), never runs twice at
//! once (a key added while it runs is marked dirty and runs again after), keys that failed
//! wait an exponential, capped backoff chosen by the error's category without delaying the
//! others, and files at risk (one copy left) go first (rule 8).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use deposito_api::FileKey;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::category::ErrorCategory;

/// Which lane a key waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// At risk: at most one verified copy is left.
    Urgent,
    Normal,
}

/// How one run of a key ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Succeeded; look again after this long even if nothing changes (a young orphan or
    /// stale copy to collect later, a fenced upload).
    Ok { requeue_after: Option<Duration> },
    /// Failed: wait the category's backoff.
    Failed(ErrorCategory),
}

/// A key added while it failed is retried after at most this long, so that a fix of the
/// spec is not held back by a long backoff.
const DIRTY_RETRY_CAP: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct State {
    urgent: VecDeque<FileKey>,
    normal: VecDeque<FileKey>,
    /// Keys in a ready lane, with their lane.
    queued: HashMap<FileKey, Priority>,
    running: HashSet<FileKey>,
    /// Keys added while running: run again when done.
    dirty: HashMap<FileKey, Priority>,
    /// Keys waiting for a time, and the index of that order by key.
    delayed: BTreeSet<(Instant, u64, FileKey)>,
    delayed_at: HashMap<FileKey, (Instant, u64)>,
    failures: HashMap<FileKey, u32>,
    seq: u64,
}

impl State {
    fn enqueue(&mut self, key: FileKey, priority: Priority) {
        if let Some((at, seq)) = self.delayed_at.remove(&key) {
            self.delayed.remove(&(at, seq, key.clone()));
        }
        match self.queued.get(&key) {
            Some(p) if *p <= priority => return,
            _ => {}
        }
        self.queued.insert(key.clone(), priority);
        match priority {
            Priority::Urgent => self.urgent.push_back(key),
            Priority::Normal => self.normal.push_back(key),
        }
    }

    fn schedule(&mut self, key: FileKey, at: Instant) {
        if self.queued.contains_key(&key) {
            return;
        }
        if let Some((current, seq)) = self.delayed_at.get(&key).copied() {
            if current <= at {
                return;
            }
            self.delayed.remove(&(current, seq, key.clone()));
        }
        self.seq += 1;
        self.delayed.insert((at, self.seq, key.clone()));
        self.delayed_at.insert(key, (at, self.seq));
    }

    /// Moves delayed keys that are due into their lane.
    fn promote(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.delayed.first() {
            if *at > now {
                break;
            }
            let (_, _, key) = self.delayed.pop_first().expect("first exists");
            self.delayed_at.remove(&key);
            if self.running.contains(&key) {
                self.dirty.entry(key).or_insert(Priority::Normal);
            } else {
                self.enqueue(key, Priority::Normal);
            }
        }
    }

    fn pop(&mut self) -> Option<FileKey> {
        for lane in [Priority::Urgent, Priority::Normal] {
            loop {
                let next = match lane {
                    Priority::Urgent => self.urgent.pop_front(),
                    Priority::Normal => self.normal.pop_front(),
                };
                let Some(key) = next else { break };
                // A key moved to the urgent lane also still sits in the normal one: skip the
                // stale entry.
                if self.queued.get(&key) == Some(&lane) {
                    self.queued.remove(&key);
                    return Some(key);
                }
            }
        }
        None
    }
}

/// The queue. Share it behind an `Arc`; any number of workers call [`WorkQueue::next`] and
/// [`WorkQueue::done`].
#[derive(Debug, Default)]
pub struct WorkQueue {
    state: Mutex<State>,
    ready: Notify,
}

impl WorkQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("work queue lock")
    }

    /// Queues `key` to run as soon as a worker is free (earlier than any pending delay).
    pub fn add(&self, key: FileKey, priority: Priority) {
        {
            let mut state = self.lock();
            if state.running.contains(&key) {
                let p = state.dirty.entry(key).or_insert(priority);
                *p = (*p).min(priority);
                return;
            }
            state.enqueue(key, priority);
        }
        self.ready.notify_one();
    }

    /// Queues `key` to run after `delay`, unless it is due sooner anyway.
    pub fn add_after(&self, key: FileKey, delay: Duration) {
        self.lock().schedule(key, Instant::now() + delay);
        // A worker may be sleeping until a later instant: let it recompute.
        self.ready.notify_one();
    }

    /// Waits for the next key to run and marks it running.
    pub async fn next(&self) -> FileKey {
        loop {
            match self.take_ready(Instant::now()) {
                Ok(key) => return key,
                Err(Some(at)) => {
                    let _ = tokio::time::timeout_at(at, self.ready.notified()).await;
                }
                Err(None) => self.ready.notified().await,
            }
        }
    }

    /// The next key due at `now`, marked running; else when the earliest delayed key is due
    /// (`None`: nothing is delayed).
    fn take_ready(&self, now: Instant) -> Result<FileKey, Option<Instant>> {
        let mut state = self.lock();
        state.promote(now);
        if let Some(key) = state.pop() {
            state.running.insert(key.clone());
            let more = !state.queued.is_empty();
            drop(state);
            if more {
                // Pass the baton: another idle worker may take the next key.
                self.ready.notify_one();
            }
            return Ok(key);
        }
        Err(state.delayed.first().map(|(at, _, _)| *at))
    }

    /// Records how a run of `key` ended and schedules what follows.
    pub fn done(&self, key: &FileKey, outcome: Done) {
        {
            let mut state = self.lock();
            state.running.remove(key);
            let dirty = state.dirty.remove(key);
            match outcome {
                Done::Ok { requeue_after } => {
                    state.failures.remove(key);
                    if let Some(priority) = dirty {
                        state.enqueue(key.clone(), priority);
                    } else if let Some(delay) = requeue_after {
                        state.schedule(key.clone(), Instant::now() + delay);
                    }
                }
                Done::Failed(category) => {
                    let failures = state.failures.entry(key.clone()).or_insert(0);
                    *failures = failures.saturating_add(1);
                    let mut delay = category.backoff(*failures);
                    if dirty.is_some() {
                        delay = delay.min(DIRTY_RETRY_CAP);
                    }
                    state.schedule(key.clone(), Instant::now() + delay);
                }
            }
        }
        self.ready.notify_one();
    }

    /// Keys waiting to run now or later (not counting running ones).
    pub fn len(&self) -> usize {
        let state = self.lock();
        state.queued.len() + state.delayed_at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Consecutive failures of `key` so far.
    pub fn failures(&self, key: &FileKey) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> FileKey {
        FileKey::new("default", name).unwrap()
    }

    /// Takes what is due at `at`, without waiting. The tests look ahead in time rather than
    /// pausing the clock: what `done` schedules at `Instant::now() + delay` lies between the
    /// instants read just before and just after it.
    fn ready_at(queue: &WorkQueue, at: Instant) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(k) = queue.take_ready(at) {
            out.push(k.name);
        }
        out
    }

    fn ready_now(queue: &WorkQueue) -> Vec<String> {
        ready_at(queue, Instant::now())
    }

    /// Runs `f` (which schedules something `Instant::now() + delay` ahead) and returns the
    /// instants read just before and just after it.
    fn timed(f: impl FnOnce()) -> (Instant, Instant) {
        let before = Instant::now();
        f();
        (before, Instant::now())
    }

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn keys_are_deduplicated_and_urgent_ones_go_first() {
        let q = WorkQueue::default();
        q.add(key("a"), Priority::Normal);
        q.add(key("b"), Priority::Normal);
        q.add(key("a"), Priority::Normal);
        q.add(key("c"), Priority::Normal);
        q.add(key("c"), Priority::Urgent); // upgraded: runs first, once
        q.add(key("d"), Priority::Urgent);
        assert_eq!(q.len(), 4);
        assert_eq!(ready_now(&q), vec!["c", "d", "a", "b"]);
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_running_runs_again_after_and_never_twice_at_once() {
        let q = WorkQueue::default();
        q.add(key("a"), Priority::Normal);
        let a = q.next().await;
        q.add(key("a"), Priority::Normal);
        q.add(key("a"), Priority::Normal);
        assert!(ready_now(&q).is_empty(), "not while it runs");
        q.done(
            &a,
            Done::Ok {
                requeue_after: None,
            },
        );
        assert_eq!(ready_now(&q), vec!["a"]);
        q.done(
            &a,
            Done::Ok {
                requeue_after: None,
            },
        );
        assert!(ready_now(&q).is_empty(), "dirty only once");
    }

    #[tokio::test]
    async fn failures_back_off_per_key_without_delaying_others() {
        let q = WorkQueue::default();
        q.add(key("bad"), Priority::Normal);
        let bad = q.next().await;
        let mut failed = timed(|| q.done(&bad, Done::Failed(ErrorCategory::Transient)));
        q.add(key("good"), Priority::Normal);
        assert_eq!(ready_now(&q), vec!["good"]);
        q.done(
            &key("good"),
            Done::Ok {
                requeue_after: None,
            },
        );
        // Transient backoff: 500 ms, then 1 s, then 2 s.
        for (round, wait_ms) in [(1u32, 500u64), (2, 1000), (3, 2000)] {
            assert_eq!(q.failures(&bad), round);
            let (before, after) = failed;
            let wait = Duration::from_millis(wait_ms);
            assert!(
                ready_at(&q, before + wait - 10 * MS).is_empty(),
                "round {round}: too early"
            );
            assert_eq!(
                ready_at(&q, after + wait + 10 * MS),
                vec!["bad"],
                "round {round}"
            );
            failed = timed(|| q.done(&bad, Done::Failed(ErrorCategory::Transient)));
        }
        // A success resets the count.
        assert_eq!(ready_at(&q, failed.1 + Duration::from_secs(5)), vec!["bad"]);
        q.done(
            &bad,
            Done::Ok {
                requeue_after: None,
            },
        );
        assert_eq!(q.failures(&bad), 0);
    }

    #[tokio::test]
    async fn a_trigger_overrides_a_pending_delay_and_requeue_after_is_honoured() {
        let q = WorkQueue::default();
        q.add(key("a"), Priority::Normal);
        let a = q.next().await;
        q.done(&a, Done::Failed(ErrorCategory::Invalid)); // 10 s backoff
        q.add(key("a"), Priority::Normal); // the spec changed: run now
        assert_eq!(ready_now(&q), vec!["a"]);
        let (before, after) = timed(|| {
            q.done(
                &a,
                Done::Ok {
                    requeue_after: Some(Duration::from_secs(3)),
                },
            );
        });
        assert!(ready_at(&q, before + 2990 * MS).is_empty());
        assert_eq!(ready_at(&q, after + 3010 * MS), vec!["a"]);
        // Two delays for one key keep the earlier one.
        q.done(
            &a,
            Done::Ok {
                requeue_after: None,
            },
        );
        let (before, after) = timed(|| {
            q.add_after(key("a"), Duration::from_secs(10));
            q.add_after(key("a"), Duration::from_secs(1));
            q.add_after(key("a"), Duration::from_secs(5));
        });
        assert_eq!(q.len(), 1);
        assert!(ready_at(&q, before + 990 * MS).is_empty());
        assert_eq!(ready_at(&q, after + 1010 * MS), vec!["a"]);
    }

    #[tokio::test]
    async fn a_failing_key_that_was_triggered_meanwhile_retries_within_a_second() {
        let q = WorkQueue::default();
        q.add(key("a"), Priority::Normal);
        let a = q.next().await;
        q.add(key("a"), Priority::Normal);
        let (_, after) = timed(|| q.done(&a, Done::Failed(ErrorCategory::Invalid)));
        assert_eq!(ready_at(&q, after + 1010 * MS), vec!["a"]);
    }

    #[tokio::test]
    async fn a_sleeping_worker_wakes_for_new_work() {
        let q = std::sync::Arc::new(WorkQueue::default());
        let worker = {
            let q = q.clone();
            tokio::spawn(async move { q.next().await })
        };
        // Let the worker reach its wait first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        q.add(key("late"), Priority::Normal);
        let got = tokio::time::timeout(Duration::from_secs(1), worker)
            .await
            .expect("woke")
            .unwrap();
        assert_eq!(got, key("late"));
    }
}
