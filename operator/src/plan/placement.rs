//! Placement (rule 7): which replicas get new copies, which copies go, and which holder
//! serves a pull.
//!
//! Every choice is a deterministic function of its inputs: candidates are ranked by explicit
//! keys ending in a rendezvous score (a stable hash of replica id and file key, not a
//! randomly-seeded one), then by id, so the same inputs in any order give the same answer and
//! a reconcile pass doesn't shuffle copies.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::model::{Health, ReplicaId, ReplicaView};

/// Rendezvous (highest-random-weight) score of `replica` for the file `namespace/name`: the
/// first 8 bytes of `sha256(replica || 0x00 || namespace || '/' || name)`, big-endian. Stable
/// across processes, versions and platforms.
pub fn rendezvous_score(replica: &str, namespace: &str, name: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(replica.as_bytes());
    hasher.update([0u8]);
    hasher.update(namespace.as_bytes());
    hasher.update(b"/");
    hasher.update(name.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Free space quantized into power-of-two buckets (`floor(log2(bytes)) + 1`, 0 for 0 bytes),
/// so that small differences in reported free space don't reorder replicas between passes.
pub fn free_space_bucket(free_bytes: u64) -> u32 {
    64 - free_bytes.leading_zeros()
}

/// The zone a replica counts in for spreading. A replica without zone information is a zone
/// of its own, so it never looks crowded because of other replicas.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ZoneKey {
    /// A named topology zone shared by every replica labelled with it.
    Named(String),
    /// No zone information: the replica alone.
    Alone(ReplicaId),
}

impl ZoneKey {
    /// The zone of `replica`.
    pub fn of(replica: &ReplicaView) -> ZoneKey {
        match &replica.zone {
            Some(zone) => ZoneKey::Named(zone.clone()),
            None => ZoneKey::Alone(replica.id.clone()),
        }
    }
}

/// Number of copies per zone among `holders`.
pub fn zone_counts<'a>(
    holders: impl IntoIterator<Item = &'a ReplicaView>,
) -> BTreeMap<ZoneKey, u32> {
    let mut counts = BTreeMap::new();
    for holder in holders {
        *counts.entry(ZoneKey::of(holder)).or_insert(0) += 1;
    }
    counts
}

/// Chooses up to `count` pull targets among `candidates`, best first.
///
/// `counted_holders` are the replicas whose copies already count toward N (verified copies
/// on non-draining replicas, and holders unreachable within the grace period): their zones
/// are occupied. The choice is greedy, one target at a time, and each pick occupies its zone
/// for the next. Ranking, best first:
/// 1. the zone holding the fewest counted copies (spreads across zones; a replica without a
///    zone is its own zone);
/// 2. more free space, by [`free_space_bucket`];
/// 3. fewer active transfers;
/// 4. higher [`rendezvous_score`] for this file, then id (stable tie-break).
///
/// Filtering (health, draining, room, already holding) is the caller's job.
pub fn rank_targets(
    candidates: &[&ReplicaView],
    counted_holders: &[&ReplicaView],
    count: usize,
    namespace: &str,
    name: &str,
) -> Vec<ReplicaId> {
    let mut occupied = zone_counts(counted_holders.iter().copied());
    let mut remaining: Vec<&ReplicaView> = candidates.to_vec();
    remaining.sort_by(|a, b| a.id.cmp(&b.id));
    remaining.dedup_by(|a, b| a.id == b.id);
    let mut chosen = Vec::new();
    while chosen.len() < count && !remaining.is_empty() {
        let best_index = (0..remaining.len())
            .min_by_key(|&i| {
                let replica = remaining[i];
                (
                    occupied.get(&ZoneKey::of(replica)).copied().unwrap_or(0),
                    Reverse(free_space_bucket(replica.free_bytes)),
                    replica.active_transfers,
                    Reverse(rendezvous_score(&replica.id, namespace, name)),
                    replica.id.clone(),
                )
            })
            .expect("remaining is not empty");
        let best = remaining.remove(best_index);
        *occupied.entry(ZoneKey::of(best)).or_insert(0) += 1;
        chosen.push(best.id.clone());
    }
    chosen
}

/// Chooses `count` copies to drop among `holders` (each holding one verified copy), first
/// to drop first.
///
/// Greedy, one at a time, recounting zones after each pick. Ranking, first dropped first:
/// 1. from the most crowded zone (most copies among the holders still kept);
/// 2. a draining or not-live replica before a healthy one;
/// 3. less free space, by [`free_space_bucket`];
/// 4. lower [`rendezvous_score`] for this file, then id (stable tie-break: the copies that
///    [`rank_targets`] would prefer are kept).
pub fn choose_trim(
    holders: &[&ReplicaView],
    count: usize,
    namespace: &str,
    name: &str,
) -> Vec<ReplicaId> {
    let mut kept: Vec<&ReplicaView> = holders.to_vec();
    kept.sort_by(|a, b| a.id.cmp(&b.id));
    kept.dedup_by(|a, b| a.id == b.id);
    let mut dropped = Vec::new();
    while dropped.len() < count && !kept.is_empty() {
        let crowding = zone_counts(kept.iter().copied());
        let worst_index = (0..kept.len())
            .min_by_key(|&i| {
                let replica = kept[i];
                let unhealthy = replica.draining || replica.health != Health::Live;
                (
                    Reverse(crowding.get(&ZoneKey::of(replica)).copied().unwrap_or(0)),
                    !unhealthy,
                    free_space_bucket(replica.free_bytes),
                    rendezvous_score(&replica.id, namespace, name),
                    replica.id.clone(),
                )
            })
            .expect("kept is not empty");
        dropped.push(kept.remove(worst_index).id.clone());
    }
    dropped
}

/// Chooses the holder that serves a pull to `target`, or `None` when `sources` is empty.
///
/// Ranking, best first: a non-draining holder; the least loaded, counting its
/// `active_transfers` plus the pulls already assigned to it in this plan (`assigned`); then
/// the higher rendezvous score of (source, target) for this file, then id. Scoring the pair
/// spreads the pulls of one plan over equally loaded holders, stably.
pub fn choose_source(
    sources: &[&ReplicaView],
    assigned: &BTreeMap<ReplicaId, u64>,
    target: &str,
    namespace: &str,
    name: &str,
) -> Option<ReplicaId> {
    sources
        .iter()
        .filter(|source| source.id != target)
        .min_by_key(|source| {
            let load = source.active_transfers + assigned.get(&source.id).copied().unwrap_or(0);
            let pair = format!("{}\0{}", source.id, target);
            (
                source.draining,
                load,
                Reverse(rendezvous_score(&pair, namespace, name)),
                source.id.clone(),
            )
        })
        .map(|source| source.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(id: &str, zone: Option<&str>, free: u64) -> ReplicaView {
        ReplicaView {
            id: id.to_string(),
            zone: zone.map(str::to_string),
            health: Health::Live,
            draining: false,
            free_bytes: free,
            active_transfers: 0,
            url: format!("http://{id}"),
            full: false,
        }
    }

    #[test]
    fn rendezvous_score_is_a_fixed_function() {
        // Pinned value: changing the hash would reshuffle every placement in a cluster.
        let expected = {
            let digest = Sha256::digest(b"r1\0default/a.txt");
            u64::from_be_bytes(digest[..8].try_into().unwrap())
        };
        assert_eq!(rendezvous_score("r1", "default", "a.txt"), expected);
        assert_ne!(
            rendezvous_score("r1", "default", "a.txt"),
            rendezvous_score("r2", "default", "a.txt")
        );
    }

    #[test]
    fn free_space_buckets_are_log2() {
        assert_eq!(free_space_bucket(0), 0);
        assert_eq!(free_space_bucket(1), 1);
        assert_eq!(free_space_bucket(1023), 10);
        assert_eq!(free_space_bucket(1024), 11);
        assert_eq!(free_space_bucket(1500), 11);
        assert_eq!(free_space_bucket(u64::MAX), 64);
    }

    #[test]
    fn targets_prefer_empty_zones_then_free_space_then_load() {
        let a1 = replica("a1", Some("a"), 1 << 30);
        let a2 = replica("a2", Some("a"), 1 << 40);
        let b1 = replica("b1", Some("b"), 1 << 20);
        let mut b2 = replica("b2", Some("b"), 1 << 20);
        b2.active_transfers = 5;
        // a1 already holds a copy: zone a is occupied, so zone b comes first despite space.
        let chosen = rank_targets(&[&a2, &b1, &b2], &[&a1], 2, "ns", "f");
        assert_eq!(chosen, vec!["b1".to_string(), "a2".to_string()]);
    }

    #[test]
    fn small_free_space_differences_fall_back_to_rendezvous() {
        let x = replica("x", None, 1_000_000_000);
        let y = replica("y", None, 1_000_000_001);
        let by_score = if rendezvous_score("x", "ns", "f") > rendezvous_score("y", "ns", "f") {
            "x"
        } else {
            "y"
        };
        assert_eq!(
            rank_targets(&[&x, &y], &[], 1, "ns", "f"),
            vec![by_score.to_string()]
        );
        assert_eq!(
            rank_targets(&[&y, &x], &[], 1, "ns", "f"),
            vec![by_score.to_string()]
        );
    }

    #[test]
    fn trim_takes_from_the_crowded_zone_then_draining_then_least_free() {
        let a1 = replica("a1", Some("a"), 1 << 40);
        let a2 = replica("a2", Some("a"), 1 << 20);
        let b1 = replica("b1", Some("b"), 1 << 10);
        assert_eq!(
            choose_trim(&[&a1, &a2, &b1], 1, "ns", "f"),
            vec!["a2".to_string()]
        );

        let mut c1 = replica("c1", Some("c"), 1 << 40);
        c1.draining = true;
        let c2 = replica("c2", Some("c"), 1 << 10);
        assert_eq!(
            choose_trim(&[&c2, &c1], 1, "ns", "f"),
            vec!["c1".to_string()]
        );
    }

    #[test]
    fn source_prefers_non_draining_then_least_loaded() {
        let mut busy = replica("busy", None, 0);
        busy.active_transfers = 3;
        let idle = replica("idle", None, 0);
        let mut leaving = replica("leaving", None, 0);
        leaving.draining = true;
        let none = BTreeMap::new();
        assert_eq!(
            choose_source(&[&leaving, &busy, &idle], &none, "t", "ns", "f"),
            Some("idle".to_string())
        );
        let assigned = BTreeMap::from([("idle".to_string(), 4)]);
        assert_eq!(
            choose_source(&[&leaving, &busy, &idle], &assigned, "t", "ns", "f"),
            Some("busy".to_string())
        );
        assert_eq!(
            choose_source(&[&leaving], &none, "t", "ns", "f"),
            Some("leaving".to_string())
        );
        assert_eq!(choose_source(&[], &none, "t", "ns", "f"), None);
    }
}
