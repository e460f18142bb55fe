//! Replica health and its changes. A tracker looks at membership every tick (cheap: one entry
//! per replica), classifies each replica (Live, Unreachable within the grace period, Lost),
//! keeps one inventory observer per replica, and turns every change of a replica (health,
//! draining, address) into triggers for the files that replica holds, plus, when a replica
//! becomes usable, for the files still waiting for placement.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deposito_api::FileKey;
use deposito_util::worker::{Next, StepError, Worker, Workers};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::index::InventoryIndex;
use super::membership::{Capacity, Member, Membership, MembershipError};
use super::observer::{Observer, ObserverSettings, Target};
use crate::plan::{Health, ReplicaView};
use crate::replica_client::ReplicaClient;

/// Health of a member: Live only when the mode says it is up and its inventory is observed
/// completely; otherwise Unreachable until the grace period has passed, then Lost.
pub fn classify(member: &Member, synced: bool, grace: Duration) -> Health {
    if member.available && synced {
        Health::Live
    } else if member.down_for < grace {
        Health::Unreachable
    } else {
        Health::Lost
    }
}

/// The replicas as the engine sees them at one tick.
#[derive(Debug, Clone, Default)]
pub struct ViewSet {
    /// Sorted by id.
    pub replicas: Vec<ReplicaView>,
    /// The members these views were made from (for listings).
    pub members: Vec<Member>,
    /// Set when membership itself could not be observed: plan nothing then.
    pub error: Option<MembershipError>,
}

/// The shared, always-current [`ViewSet`], plus memory of replicas that are named as holders
/// but absent from membership (a pod deleted while the operator was down): they count as
/// Unreachable for one grace period from the moment the engine first missed them, so that a
/// restart never replaces copies hastily.
#[derive(Debug)]
pub struct ReplicaSet {
    views: RwLock<Arc<ViewSet>>,
    absent_since: Mutex<HashMap<String, Instant>>,
    /// Replicas the gateway just failed to reach, and when: tried last for a while, without
    /// waiting for missed heartbeats.
    suspects: Mutex<HashMap<String, Instant>>,
    grace: Duration,
}

/// How long a replica the gateway could not reach is tried last.
const SUSPECT_FOR: Duration = Duration::from_secs(10);

impl ReplicaSet {
    pub fn new(grace: Duration) -> Self {
        Self {
            views: RwLock::new(Arc::new(ViewSet {
                error: Some(MembershipError::Unavailable(
                    "replicas not observed yet".into(),
                )),
                ..ViewSet::default()
            })),
            absent_since: Mutex::new(HashMap::new()),
            suspects: Mutex::new(HashMap::new()),
            grace,
        }
    }

    /// Marks `id` suspect: the gateway could not connect to it just now.
    pub fn suspect(&self, id: &str) {
        self.suspects
            .lock()
            .expect("suspects")
            .insert(id.to_string(), Instant::now());
    }

    /// True while `id` is suspect.
    pub fn is_suspect(&self, id: &str) -> bool {
        let mut suspects = self.suspects.lock().expect("suspects");
        suspects.retain(|_, since| since.elapsed() < SUSPECT_FOR);
        suspects.contains_key(id)
    }

    /// The latest views.
    pub fn current(&self) -> Arc<ViewSet> {
        self.views.read().expect("views").clone()
    }

    fn publish(&self, views: ViewSet) {
        *self.views.write().expect("views") = Arc::new(views);
    }

    /// A view for a holder that membership does not know: Unreachable within the grace
    /// period counted from when it was first missed, then nothing (the plan takes an
    /// unknown holder for lost).
    pub fn absent_view(&self, id: &str) -> Option<ReplicaView> {
        let mut absent = self.absent_since.lock().expect("absent");
        let since = *absent.entry(id.to_string()).or_insert_with(Instant::now);
        (since.elapsed() < self.grace).then(|| ReplicaView {
            id: id.to_string(),
            zone: None,
            health: Health::Unreachable,
            draining: false,
            free_bytes: 0,
            active_transfers: 0,
            url: String::new(),
            full: false,
        })
    }

    /// True once membership is observed and every known replica is live with its inventory
    /// observed: before that, a plan would take healthy holders for unreachable. (Callers
    /// wait for this with a timeout: a replica that is really down never settles.)
    pub fn settled(&self) -> bool {
        let views = self.current();
        views.error.is_none() && views.replicas.iter().all(|v| v.health == Health::Live)
    }

    /// Live, non-draining replicas with room (ready), for the gateway's uploads.
    pub fn live_targets(&self) -> Vec<ReplicaView> {
        self.current()
            .replicas
            .iter()
            .filter(|v| v.health == Health::Live && !v.draining)
            .cloned()
            .collect()
    }

    /// The URL of a replica, if known.
    pub fn url_of(&self, id: &str) -> Option<String> {
        self.current()
            .replicas
            .iter()
            .find(|v| v.id == id)
            .map(|v| v.url.clone())
    }
}

/// Files that are not converged: they get another look when a replica becomes usable.
#[derive(Debug, Default)]
pub struct Backlog {
    inner: Mutex<BacklogInner>,
}

#[derive(Debug, Default)]
struct BacklogInner {
    unsettled: HashSet<FileKey>,
    under_replicated: HashSet<FileKey>,
}

impl Backlog {
    /// Records the outcome of a reconcile. Returns the number of under-replicated files.
    pub fn update(&self, key: &FileKey, converged: bool, under_replicated: bool) -> usize {
        let mut inner = self.inner.lock().expect("backlog");
        if converged {
            inner.unsettled.remove(key);
        } else if !inner.unsettled.contains(key) {
            inner.unsettled.insert(key.clone());
        }
        if under_replicated {
            if !inner.under_replicated.contains(key) {
                inner.under_replicated.insert(key.clone());
            }
        } else {
            inner.under_replicated.remove(key);
        }
        inner.under_replicated.len()
    }

    /// Forgets a file that no longer exists. Returns the number of under-replicated files.
    pub fn forget(&self, key: &FileKey) -> usize {
        let mut inner = self.inner.lock().expect("backlog");
        inner.unsettled.remove(key);
        inner.under_replicated.remove(key);
        inner.under_replicated.len()
    }

    /// Number of files with fewer verified copies than wanted (repair work waiting).
    pub fn under_replicated(&self) -> usize {
        self.inner.lock().expect("backlog").under_replicated.len()
    }

    /// Whether `key` is not converged.
    pub fn is_unsettled(&self, key: &FileKey) -> bool {
        self.inner.lock().expect("backlog").unsettled.contains(key)
    }

    /// Every file that is not converged.
    pub fn unsettled(&self) -> Vec<FileKey> {
        self.inner
            .lock()
            .expect("backlog")
            .unsettled
            .iter()
            .cloned()
            .collect()
    }
}

/// Settings of the tracker.
#[derive(Debug, Clone, Copy)]
pub struct TrackerSettings {
    /// How often membership is looked at.
    pub tick: Duration,
    pub grace: Duration,
    pub observer: ObserverSettings,
}

/// What the tracker remembers of a replica between ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    health: Health,
    draining: bool,
    /// Takes new copies: ready (data dir writable, room left) with free space.
    usable: bool,
    url: String,
    zone: Option<String>,
    /// Free bytes at the last tick: not a change of state of its own, but a jump wakes the
    /// backlog (see [`room_grew`]).
    free_bytes: u64,
}

impl Seen {
    /// Same state, free bytes aside.
    fn same_state(&self, other: &Seen) -> bool {
        self.health == other.health
            && self.draining == other.draining
            && self.usable == other.usable
            && self.url == other.url
            && self.zone == other.zone
    }
}

/// Whether a replica's free space grew enough between two ticks to wake files waiting for
/// room (a disk freed at once: a file too large for the little that was left may fit now).
/// At least doubled plus 1 MiB, so that the jitter of everyday writes and deletes does not.
fn room_grew(before: u64, now: u64) -> bool {
    before
        .checked_mul(2)
        .and_then(|b| b.checked_add(1 << 20))
        .is_some_and(|threshold| now >= threshold)
}

/// Whether a replica's change lets files waiting for a replica make progress: it is Live and
/// can take copies where before it could not (new, back, undrained, or ready again after a
/// full or read-only disk).
fn wakes_backlog(before: Option<&Seen>, now: &Seen) -> bool {
    let takes_copies = |s: &Seen| s.health == Health::Live && !s.draining && s.usable;
    match before {
        None => now.health == Health::Live,
        Some(before) => {
            now.health == Health::Live
                && (before.health != Health::Live
                    || before.draining && !now.draining
                    || (takes_copies(now) && !takes_copies(before)))
        }
    }
}

/// The tracker task's state.
pub struct Tracker {
    pub membership: Arc<dyn Membership>,
    pub replicas: Arc<ReplicaSet>,
    pub index: Arc<InventoryIndex>,
    pub client: ReplicaClient,
    pub triggers: mpsc::UnboundedSender<FileKey>,
    pub backlog: Arc<Backlog>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub settings: TrackerSettings,
}

/// Builds the views of `members`, with capacity from membership or else from the replica's
/// own description in the index.
pub fn views_of(members: &[Member], index: &InventoryIndex, grace: Duration) -> Vec<ReplicaView> {
    let mut views: Vec<ReplicaView> = members
        .iter()
        .map(|m| {
            let capacity = m
                .capacity
                .or_else(|| index.info(&m.id).as_ref().map(Capacity::of));
            let (free_bytes, active_transfers, full) = match capacity {
                // Trash bytes are reclaimable: the replica empties its trash to make room.
                Some(c) if c.ready && !c.full => (
                    c.free_bytes.saturating_add(c.trash_bytes),
                    c.active_transfers,
                    false,
                ),
                // Full, or its data dir unusable: no new copies.
                Some(c) => (0, c.active_transfers, c.ready && c.full),
                None => (0, 0, false),
            };
            ReplicaView {
                id: m.id.clone(),
                zone: m.zone.clone(),
                health: classify(m, index.is_synced(&m.id), grace),
                draining: m.draining,
                free_bytes,
                active_transfers,
                url: m.url.clone(),
                full,
            }
        })
        .collect();
    views.sort_by(|a, b| a.id.cmp(&b.id));
    views
}

impl Tracker {
    /// The tracker as the `health` worker, which starts the replicas' observers in `workers`.
    pub fn into_worker(self, workers: &Workers) -> HealthWorker {
        HealthWorker {
            tracker: self,
            workers: workers.clone(),
            observers: HashMap::new(),
            seen: HashMap::new(),
        }
    }

    fn tick(
        &self,
        observers: &mut HashMap<String, (String, CancellationToken)>,
        seen: &mut HashMap<String, Seen>,
        workers: &Workers,
    ) {
        let members = match self.membership.members() {
            Ok(members) => members,
            Err(error) => {
                let mut views = (*self.replicas.current()).clone();
                views.error = Some(error);
                self.replicas.publish(views);
                return;
            }
        };
        self.keep_observers(&members, observers, workers);
        let views = views_of(&members, &self.index, self.settings.grace);
        let mut wake_backlog = false;
        let mut affected: Vec<String> = Vec::new();
        for view in &views {
            let now = Seen {
                health: view.health,
                draining: view.draining,
                usable: view.free_bytes > 0,
                url: view.url.clone(),
                zone: view.zone.clone(),
                free_bytes: view.free_bytes,
            };
            let before = seen.get(&view.id);
            if let Some(before) = before.filter(|b| b.same_state(&now)) {
                if now.health == Health::Live
                    && !now.draining
                    && room_grew(before.free_bytes, now.free_bytes)
                {
                    info!(replica = %view.id, from = before.free_bytes, to = now.free_bytes,
                        "replica has room again");
                    wake_backlog = true;
                }
                seen.insert(view.id.clone(), now);
                continue;
            }
            match before {
                Some(before) => info!(replica = %view.id, from = before.health.as_str(),
                    to = now.health.as_str(), draining = now.draining, usable = now.usable,
                    "replica changed"),
                None => info!(replica = %view.id, health = now.health.as_str(), "replica known"),
            }
            wake_backlog |= wakes_backlog(before, &now);
            affected.push(view.id.clone());
            seen.insert(view.id.clone(), now);
        }
        let gone: Vec<String> = seen
            .keys()
            .filter(|id| !views.iter().any(|v| &v.id == *id))
            .cloned()
            .collect();
        let mut keys: Vec<FileKey> = Vec::new();
        for id in gone {
            info!(replica = %id, "replica left");
            seen.remove(&id);
            keys.extend(self.index.forget(&id));
        }
        for id in &affected {
            keys.extend(self.index.keys_on(id));
        }
        if wake_backlog {
            keys.extend(self.backlog.unsettled());
        }
        let count = |h: Health, full: Option<bool>| {
            views
                .iter()
                .filter(|v| v.health == h && full.is_none_or(|f| v.full == f))
                .count()
        };
        self.metrics.set_replicas(&[
            ("Live", count(Health::Live, Some(false))),
            ("Full", count(Health::Live, Some(true))),
            ("Unreachable", count(Health::Unreachable, None)),
            ("Lost", count(Health::Lost, None)),
        ]);
        self.replicas.publish(ViewSet {
            replicas: views,
            members,
            error: None,
        });
        for key in keys {
            let _ = self.triggers.send(key);
        }
    }

    /// Starts an observer for every member, restarts it when the address changes, and stops
    /// those of members that left.
    fn keep_observers(
        &self,
        members: &[Member],
        observers: &mut HashMap<String, (String, CancellationToken)>,
        workers: &Workers,
    ) {
        observers.retain(|id, (url, token)| {
            let keep = members.iter().any(|m| &m.id == id && &m.url == url);
            if !keep {
                token.cancel();
            }
            keep
        });
        for member in members {
            if member.url.is_empty() || observers.contains_key(&member.id) {
                continue;
            }
            let token = workers.child_token();
            let mut settings = self.settings.observer;
            settings.read_info = member.capacity.is_none();
            workers.spawn_until(
                Observer::new(
                    Target {
                        replica: member.id.clone(),
                        url: member.url.clone(),
                    },
                    self.client.clone(),
                    self.index.clone(),
                    self.triggers.clone(),
                    settings,
                ),
                token.clone(),
            );
            observers.insert(member.id.clone(), (member.url.clone(), token));
        }
    }
}

/// `health`: each tick, classifies the replicas (grace period), publishes the views, wakes
/// the files that a change concerns, and keeps one `observer-<replica>` worker per member.
pub struct HealthWorker {
    tracker: Tracker,
    workers: Workers,
    observers: HashMap<String, (String, CancellationToken)>,
    seen: HashMap<String, Seen>,
}

#[async_trait]
impl Worker for HealthWorker {
    fn name(&self) -> String {
        "health".into()
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        self.tracker
            .tick(&mut self.observers, &mut self.seen, &self.workers);
        Ok(Next::After(self.tracker.settings.tick))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(available: bool, down_secs: u64) -> Member {
        Member {
            id: "r".into(),
            url: "http://r".into(),
            zone: None,
            draining: false,
            available,
            down_for: Duration::from_secs(down_secs),
            capacity: None,
        }
    }

    #[test]
    fn backlog_wakes_when_a_replica_can_take_copies_again() {
        let seen = |health, draining, usable| Seen {
            health,
            draining,
            usable,
            url: "http://r".into(),
            zone: None,
            free_bytes: 1 << 30,
        };
        let live = seen(Health::Live, false, true);
        let cases = [
            (None, live.clone(), true),
            (
                Some(seen(Health::Unreachable, false, true)),
                live.clone(),
                true,
            ),
            (Some(seen(Health::Live, true, true)), live.clone(), true),
            // Ready again after a full or read-only disk.
            (Some(seen(Health::Live, false, false)), live.clone(), true),
            (Some(live.clone()), seen(Health::Live, false, false), false),
            (
                Some(live.clone()),
                seen(Health::Unreachable, false, true),
                false,
            ),
            (
                Some(seen(Health::Live, true, false)),
                seen(Health::Live, true, true),
                false,
            ),
        ];
        for (before, now, want) in cases {
            assert_eq!(
                wakes_backlog(before.as_ref(), &now),
                want,
                "{before:?} -> {now:?}"
            );
        }
    }

    #[test]
    fn a_jump_in_free_space_counts_as_room_again() {
        let mib = 1u64 << 20;
        for (before, now, want) in [
            (0, 400 * mib, true),
            (mib, 3 * mib, true),
            (mib, 2 * mib, false),
            (100 * mib, 150 * mib, false),
            (100 * mib, 201 * mib, true),
            (400 * mib, 0, false),
            (u64::MAX, u64::MAX, false),
        ] {
            assert_eq!(room_grew(before, now), want, "{before} -> {now}");
        }
    }

    #[test]
    fn health_table() {
        let grace = Duration::from_secs(10);
        let cases = [
            (true, 0, true, Health::Live),
            // Up, but its inventory is not observed yet: not usable, not lost.
            (true, 0, false, Health::Unreachable),
            (false, 3, true, Health::Unreachable),
            (false, 9, false, Health::Unreachable),
            (false, 10, true, Health::Lost),
            (false, 500, false, Health::Lost),
        ];
        for (available, down, synced, want) in cases {
            assert_eq!(
                classify(&member(available, down), synced, grace),
                want,
                "{available} {down} {synced}"
            );
        }
    }

    #[test]
    fn absent_holders_are_unreachable_for_one_grace_period() {
        let set = ReplicaSet::new(Duration::from_millis(50));
        assert_eq!(set.absent_view("gone").unwrap().health, Health::Unreachable);
        std::thread::sleep(Duration::from_millis(60));
        assert!(set.absent_view("gone").is_none());
    }

    #[test]
    fn backlog_tracks_unsettled_and_under_replicated_files() {
        let backlog = Backlog::default();
        let a = FileKey::new("default", "a").unwrap();
        assert_eq!(backlog.update(&a, false, true), 1);
        assert_eq!(backlog.unsettled(), vec![a.clone()]);
        assert_eq!(backlog.update(&a, false, false), 0);
        assert_eq!(backlog.update(&a, true, false), 0);
        assert!(backlog.unsettled().is_empty());
        backlog.update(&a, false, true);
        assert_eq!(backlog.forget(&a), 0);
    }
}
