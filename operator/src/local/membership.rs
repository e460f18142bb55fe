//! Local-mode membership: replicas register and send heartbeats; their last word is kept in
//! memory, and their identity (id, url, zone, draining) in the catalog so that a restarted
//! operator still knows who held what. Implements the engine's [`engine::Membership`] seam:
//! a replica is available while its heartbeats arrive within the liveness timeout.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deposito_api::replica::RegisterRequest;

use super::db::{Db, DbError};
use crate::engine::{self, Capacity, MembershipError};

/// What the operator knows of one replica right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub id: String,
    pub url: String,
    pub zone: Option<String>,
    pub draining: bool,
    /// Space, load and readiness, as its last heartbeat said.
    pub capacity: Capacity,
    /// Whether a heartbeat arrived since this operator started.
    pub heard: bool,
    /// Time since the last heartbeat (or since operator start, if none yet).
    pub since_seen: Duration,
}

struct Record {
    member: Registered,
    last_seen: Instant,
}

/// The registry of replicas.
pub struct HeartbeatMembership {
    catalog: Db,
    records: Mutex<BTreeMap<String, Record>>,
    /// A replica silent for longer than this is not available.
    liveness_timeout: Duration,
}

impl HeartbeatMembership {
    /// Loads the replicas the catalog remembers. Until they send a heartbeat they count as
    /// last seen now, so that the grace period starts at operator start, not at their death.
    pub fn load(catalog: Db, liveness_timeout: Duration) -> Result<Self, DbError> {
        let now = Instant::now();
        let records = catalog
            .replicas()?
            .into_iter()
            .map(|row| {
                let member = Registered {
                    id: row.id.clone(),
                    url: row.url,
                    zone: row.zone,
                    draining: row.draining,
                    capacity: Capacity::default(),
                    heard: false,
                    since_seen: Duration::ZERO,
                };
                (
                    row.id,
                    Record {
                        member,
                        last_seen: now,
                    },
                )
            })
            .collect();
        Ok(Self {
            catalog,
            records: Mutex::new(records),
            liveness_timeout,
        })
    }

    /// Records a registration or heartbeat. Returns true when the replica is new or moved.
    pub fn heartbeat(&self, beat: &RegisterRequest) -> Result<bool, DbError> {
        let changed = {
            let mut records = self.records.lock().expect("membership lock");
            let known = records.get(&beat.id);
            let changed =
                known.is_none_or(|r| r.member.url != beat.url || r.member.zone != beat.zone);
            let draining = known.is_some_and(|r| r.member.draining);
            records.insert(
                beat.id.clone(),
                Record {
                    member: Registered {
                        id: beat.id.clone(),
                        url: beat.url.clone(),
                        zone: beat.zone.clone(),
                        draining,
                        capacity: Capacity::of(beat),
                        heard: true,
                        since_seen: Duration::ZERO,
                    },
                    last_seen: Instant::now(),
                },
            );
            changed
        };
        if changed {
            self.catalog
                .upsert_replica(&beat.id, &beat.url, beat.zone.as_deref())?;
        }
        Ok(changed)
    }

    /// Marks a replica draining (or not). False when it is unknown.
    pub fn mark_draining(&self, id: &str, draining: bool) -> Result<bool, DbError> {
        if !self.catalog.set_draining(id, draining)? {
            return Ok(false);
        }
        if let Some(record) = self.records.lock().expect("membership lock").get_mut(id) {
            record.member.draining = draining;
        }
        Ok(true)
    }

    /// Every known replica, sorted by id.
    pub fn snapshot(&self) -> Vec<Registered> {
        let now = Instant::now();
        self.records
            .lock()
            .expect("membership lock")
            .values()
            .map(|r| Registered {
                since_seen: now.saturating_duration_since(r.last_seen),
                ..r.member.clone()
            })
            .collect()
    }

    /// The engine's view of one member.
    fn to_member(&self, m: Registered) -> engine::Member {
        let available = m.heard && m.since_seen <= self.liveness_timeout;
        engine::Member {
            available,
            down_for: if available {
                Duration::ZERO
            } else {
                m.since_seen
            },
            capacity: m.heard.then_some(m.capacity),
            id: m.id,
            url: m.url,
            zone: m.zone,
            draining: m.draining,
        }
    }
}

#[async_trait]
impl engine::Membership for HeartbeatMembership {
    fn members(&self) -> Result<Vec<engine::Member>, MembershipError> {
        Ok(self
            .snapshot()
            .into_iter()
            .map(|m| self.to_member(m))
            .collect())
    }

    /// A rare administrative write: one short SQLite update, done in place.
    async fn set_draining(&self, id: &str, draining: bool) -> Result<bool, MembershipError> {
        self.mark_draining(id, draining)
            .map_err(|e| MembershipError::Unavailable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVENESS: Duration = Duration::from_secs(5);

    fn beat(id: &str, url: &str) -> RegisterRequest {
        RegisterRequest {
            id: id.into(),
            url: url.into(),
            zone: None,
            capacity_bytes: 100,
            free_bytes: 50,
            objects: 1,
            active_transfers: 0,
            ready: true,
            full: false,
            trash_bytes: 0,
            trash_objects: 0,
        }
    }

    #[test]
    fn members_and_draining_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        {
            let m = HeartbeatMembership::load(Db::open(&path).unwrap(), LIVENESS).unwrap();
            assert!(m.heartbeat(&beat("r1", "http://a")).unwrap());
            assert!(!m.heartbeat(&beat("r1", "http://a")).unwrap());
            assert!(m.mark_draining("r1", true).unwrap());
            assert!(!m.mark_draining("nope", true).unwrap());
            // A heartbeat does not clear the draining mark.
            m.heartbeat(&beat("r1", "http://a")).unwrap();
            assert!(m.snapshot()[0].draining);
        }
        let m = HeartbeatMembership::load(Db::open(&path).unwrap(), LIVENESS).unwrap();
        let snap = m.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(
            (snap[0].id.as_str(), snap[0].url.as_str(), snap[0].draining),
            ("r1", "http://a", true)
        );
        assert!(!snap[0].heard, "not heard from until it speaks again");
        use engine::Membership as _;
        let members = m.members().unwrap();
        assert!(!members[0].available, "unheard replicas are not available");
        assert_eq!(members[0].capacity, None);
        m.heartbeat(&beat("r1", "http://a")).unwrap();
        let members = m.members().unwrap();
        assert!(members[0].available);
        assert_eq!(members[0].down_for, Duration::ZERO);
        assert_eq!(members[0].capacity.unwrap().free_bytes, 50);
    }
}
