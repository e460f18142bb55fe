//! Local-mode membership: replicas register and send heartbeats; their last word is kept in
//! memory, and their identity (id, url, zone, draining) in the catalog so that a restarted
//! operator still knows who held what.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deposito_api::replica::RegisterRequest;

use super::catalog::{Catalog, CatalogError};

/// What the operator knows of one replica right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub url: String,
    pub zone: Option<String>,
    pub draining: bool,
    pub free_bytes: u64,
    pub capacity_bytes: u64,
    pub objects: u64,
    pub active_transfers: u64,
    /// The replica's own readiness (data dir writable, room left).
    pub ready: bool,
    /// Whether a heartbeat arrived since this operator started.
    pub heard: bool,
    /// Time since the last heartbeat (or since operator start, if none yet).
    pub since_seen: Duration,
}

struct Record {
    member: Member,
    last_seen: Instant,
}

/// The registry of replicas.
pub struct Membership {
    catalog: Catalog,
    records: Mutex<BTreeMap<String, Record>>,
}

impl Membership {
    /// Loads the replicas the catalog remembers. Until they send a heartbeat they count as
    /// last seen now, so that the grace period starts at operator start, not at their death.
    pub fn load(catalog: Catalog) -> Result<Self, CatalogError> {
        let now = Instant::now();
        let records = catalog
            .replicas()?
            .into_iter()
            .map(|row| {
                let member = Member {
                    id: row.id.clone(),
                    url: row.url,
                    zone: row.zone,
                    draining: row.draining,
                    free_bytes: 0,
                    capacity_bytes: 0,
                    objects: 0,
                    active_transfers: 0,
                    ready: false,
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
        })
    }

    /// Records a registration or heartbeat. Returns true when the replica is new or moved.
    pub fn heartbeat(&self, beat: &RegisterRequest) -> Result<bool, CatalogError> {
        let changed = {
            let mut records = self.records.lock().expect("membership lock");
            let known = records.get(&beat.id);
            let changed =
                known.is_none_or(|r| r.member.url != beat.url || r.member.zone != beat.zone);
            let draining = known.is_some_and(|r| r.member.draining);
            records.insert(
                beat.id.clone(),
                Record {
                    member: Member {
                        id: beat.id.clone(),
                        url: beat.url.clone(),
                        zone: beat.zone.clone(),
                        draining,
                        free_bytes: beat.free_bytes,
                        capacity_bytes: beat.capacity_bytes,
                        objects: beat.objects,
                        active_transfers: beat.active_transfers,
                        ready: beat.ready,
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
    pub fn set_draining(&self, id: &str, draining: bool) -> Result<bool, CatalogError> {
        if !self.catalog.set_draining(id, draining)? {
            return Ok(false);
        }
        if let Some(record) = self.records.lock().expect("membership lock").get_mut(id) {
            record.member.draining = draining;
        }
        Ok(true)
    }

    /// Every known replica, sorted by id.
    pub fn snapshot(&self) -> Vec<Member> {
        let now = Instant::now();
        self.records
            .lock()
            .expect("membership lock")
            .values()
            .map(|r| Member {
                since_seen: now.saturating_duration_since(r.last_seen),
                ..r.member.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    #[test]
    fn members_and_draining_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        {
            let m = Membership::load(Catalog::open(&path).unwrap()).unwrap();
            assert!(m.heartbeat(&beat("r1", "http://a")).unwrap());
            assert!(!m.heartbeat(&beat("r1", "http://a")).unwrap());
            assert!(m.set_draining("r1", true).unwrap());
            assert!(!m.set_draining("nope", true).unwrap());
            // A heartbeat does not clear the draining mark.
            m.heartbeat(&beat("r1", "http://a")).unwrap();
            assert!(m.snapshot()[0].draining);
        }
        let m = Membership::load(Catalog::open(&path).unwrap()).unwrap();
        let snap = m.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(
            (snap[0].id.as_str(), snap[0].url.as_str(), snap[0].draining),
            ("r1", "http://a", true)
        );
        assert!(!snap[0].heard, "not heard from until it speaks again");
    }
}
