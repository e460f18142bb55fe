//! The end-of-phase check: with every fault healed, waits (bounded) until the system has
//! converged, then checks the invariants against the ledger and against the replicas' disks:
//!
//! - each name is in a state the clients' acknowledgements allow (the latest acknowledged
//!   content, or a write that failed afterwards, or absence after a delete);
//! - a present file is converged, with exactly N byte-identical copies of its content on N
//!   distinct live replicas (the status' holders), and no other copy, sidecar or stale
//!   content under its name;
//! - a deleted file has no copy left once the orphan grace has passed;
//! - no replica has a partial or temporary file (`tmp/`);
//! - every present file retrieves byte-identical through the gateway.
//!
//! Then the ledger is collapsed to what was observed.

use crate::ledger::{Ledger, NameRecord, State, Violation};
use crate::workload::Workload;
use deposito_api::gateway::{FileStatus, Phase};
use deposito_e2e::files::{name_and_file, object_files, sha256_file, tmp_files};
use deposito_e2e::Cluster;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// How often a replica still holding a corrupt copy is asked to scrub again.
const RESCRUB_EVERY: Duration = Duration::from_secs(4);

/// A file of a copy under a replica's `objects/default/` (`{name}@{sha256}[.json]`).
#[derive(Debug, Clone)]
struct DiskFile {
    /// 1-based replica index.
    replica: usize,
    /// `{sha256}` (a content copy) or `{sha256}.json` (its sidecar).
    file: String,
    path: PathBuf,
}

/// Something wrong: settled (it will not change by waiting) or not yet converged.
enum Finding {
    Settled(Violation, String),
    Waiting(String),
}

/// The sha256 of files, remembered by (path, length, mtime).
#[derive(Default)]
struct HashCache(HashMap<(PathBuf, u64, Option<SystemTime>), Option<String>>);

impl HashCache {
    fn sha256(&mut self, path: &PathBuf) -> Option<String> {
        let meta = std::fs::metadata(path).ok()?;
        let key = (path.clone(), meta.len(), meta.modified().ok());
        self.0
            .entry(key)
            .or_insert_with(|| sha256_file(path).ok())
            .clone()
    }
}

/// Every file under `objects/default/` of every replica, by name.
fn census(c: &Cluster) -> BTreeMap<String, Vec<DiskFile>> {
    let mut by_name: BTreeMap<String, Vec<DiskFile>> = BTreeMap::new();
    for (i, dir) in c.data_dirs().iter().enumerate() {
        let root = dir.join("objects").join("default");
        for path in object_files(std::slice::from_ref(dir)) {
            let Some((name, file)) = path.strip_prefix(&root).ok().and_then(name_and_file) else {
                continue;
            };
            by_name.entry(name).or_default().push(DiskFile {
                replica: i + 1,
                file,
                path,
            });
        }
    }
    by_name
}

/// The catalog's state of a file.
fn state_of(s: &FileStatus) -> State {
    State::Present {
        sha256: s.sha256.clone(),
        replicas: s.replicas,
    }
}

/// Judges one name present in the catalog with an allowed state: converged, N good copies
/// on the holders, nothing else under the name. Adds replicas with a bad copy to `rescrub`.
fn judge_copies(
    c: &Cluster,
    name: &str,
    s: &FileStatus,
    files: &[DiskFile],
    hashes: &mut HashCache,
    rescrub: &mut BTreeSet<usize>,
) -> Option<Finding> {
    if !s.is_converged() {
        return Some(Finding::Waiting(format!(
            "{name}: {:?} {}/{} ready, holders {:?} (generation {}/{})",
            s.phase, s.ready_replicas, s.replicas, s.holders, s.observed_generation, s.generation
        )));
    }
    let mut good = BTreeSet::new();
    let mut problems = Vec::new();
    for f in files {
        if f.file == s.sha256 {
            if hashes.sha256(&f.path).as_deref() == Some(s.sha256.as_str()) {
                if !good.insert(c.replica(f.replica).id.clone()) {
                    problems.push(format!("two copies on replica-{}", f.replica));
                }
            } else {
                rescrub.insert(f.replica);
                problems.push(format!("damaged copy on replica-{}", f.replica));
            }
        } else if f.file == format!("{}.json", s.sha256) {
            // The copy's sidecar.
        } else {
            problems.push(format!("other file {} on replica-{}", f.file, f.replica));
        }
    }
    let sidecars = files
        .iter()
        .filter(|f| f.file == format!("{}.json", s.sha256))
        .count();
    if good.len() != s.replicas as usize {
        problems.push(format!("{} good copies for N={}", good.len(), s.replicas));
    }
    let holders: BTreeSet<String> = s.holders.iter().cloned().collect();
    if holders != good {
        problems.push(format!("holders {holders:?} but good copies on {good:?}"));
    }
    // A copy of more than one chunk has its metadata beside it; one of one chunk has none,
    // unless it came back from the trash (a restore writes it).
    let one_chunk = s.size <= 1 << 20;
    if (one_chunk && sidecars > good.len()) || (!one_chunk && sidecars != good.len()) {
        problems.push(format!("{sidecars} sidecars for {} copies", good.len()));
    }
    (!problems.is_empty()).then(|| Finding::Waiting(format!("{name}: {}", problems.join("; "))))
}

/// Judges one name of the ledger against the catalog and the disks.
fn judge(
    c: &Cluster,
    name: &str,
    rec: &NameRecord,
    status: Option<&FileStatus>,
    files: &[DiskFile],
    hashes: &mut HashCache,
    rescrub: &mut BTreeSet<usize>,
) -> Option<Finding> {
    let possible = &rec.possible;
    let Some(s) = status else {
        if !possible.contains(&State::Absent) {
            return Some(Finding::Settled(
                Violation::Lost,
                format!("{name}: gone from the catalog; acknowledged states: {possible:?}"),
            ));
        }
        let left: Vec<String> = files
            .iter()
            .map(|f| format!("replica-{}:{}", f.replica, f.file))
            .collect();
        return (!left.is_empty())
            .then(|| Finding::Waiting(format!("{name}: deleted, but copies left: {left:?}")));
    };
    if s.phase == Phase::Deleting {
        return Some(Finding::Waiting(format!("{name}: still deleting")));
    }
    if !possible.contains(&state_of(s)) {
        let (kind, why) = if rec.may_hold(&s.sha256) {
            (Violation::Invariant, "a level nobody asked for")
        } else if rec.history.contains_key(&s.sha256) {
            (
                Violation::Lost,
                "superseded content back (the latest is lost)",
            )
        } else if s.sha256.is_empty() {
            (Violation::Lost, "no content")
        } else {
            (Violation::Corrupt, "content that was never written")
        };
        return Some(Finding::Settled(
            kind,
            format!(
                "{name}: catalog has {} at N={}: {why}; acknowledged states: {possible:?}",
                s.sha256, s.replicas
            ),
        ));
    }
    judge_copies(c, name, s, files, hashes, rescrub)
}

/// One look at everything: findings, and the catalog seen.
async fn look(
    c: &Cluster,
    ledger: &Ledger,
    hashes: &mut HashCache,
    rescrub: &mut BTreeSet<usize>,
) -> (Vec<Finding>, BTreeMap<String, FileStatus>) {
    let catalog: BTreeMap<String, FileStatus> = match c.list().await {
        Ok(list) => list
            .items
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect(),
        Err(e) => {
            return (
                vec![Finding::Waiting(format!("listing failed: {e}"))],
                BTreeMap::new(),
            )
        }
    };
    let disk = census(c);
    let records = ledger.snapshot();
    let mut findings = Vec::new();
    for (name, rec) in &records {
        let files = disk.get(name).map(Vec::as_slice).unwrap_or(&[]);
        if let Some(f) = judge(c, name, rec, catalog.get(name), files, hashes, rescrub) {
            findings.push(f);
        }
    }
    for name in catalog.keys().filter(|n| !records.contains_key(*n)) {
        findings.push(Finding::Settled(
            Violation::Invariant,
            format!("{name}: in the catalog but never written"),
        ));
    }
    for (name, files) in disk.iter().filter(|(n, _)| !records.contains_key(*n)) {
        findings.push(Finding::Waiting(format!(
            "{name}: never written, but {} files on disk",
            files.len()
        )));
    }
    for tmp in tmp_files(&c.data_dirs()) {
        // Size and age tell a transfer still moving from one stalled (for the next reader
        // of a failed campaign).
        let (size, idle) = std::fs::metadata(&tmp).map_or((0, 0), |m| {
            let idle = m.modified().ok().and_then(|t| t.elapsed().ok());
            (m.len(), idle.map_or(0, |d| d.as_secs()))
        });
        findings.push(Finding::Waiting(format!(
            "temporary file left: {} ({size} bytes, unchanged for {idle}s){}",
            tmp.display(),
            log_lines_about(c, &tmp)
        )));
    }
    (findings, catalog)
}

/// What the replicas' logs say about the temp file `tmp` (the write that made it warns when
/// it is cut off or slow to finish), for the reader of a failed campaign; empty if nothing.
fn log_lines_about(c: &Cluster, tmp: &std::path::Path) -> String {
    let Some(name) = tmp.file_name().and_then(|n| n.to_str()) else {
        return String::new();
    };
    let mut lines = Vec::new();
    for r in &c.replicas {
        let log = std::fs::read_to_string(c.log_path(&r.id)).unwrap_or_default();
        lines.extend(
            log.lines()
                .filter(|l| l.contains(name))
                .map(|l| format!("\n    {} log: {l}", r.id)),
        );
    }
    lines.concat()
}

/// Asks replica `k` to start a scrub pass now (errors ignored: the next try comes soon).
async fn scrub(c: &Cluster, k: usize) {
    let url = format!("{}/v1/scrub", c.replica(k).url());
    let _ = c.http.post(url).bearer_auth(&c.replica_token).send().await;
}

/// What a check found.
pub struct CheckResult {
    pub converged: bool,
    pub elapsed: Duration,
    /// Files present in the catalog, and copies found byte-identical on disk.
    pub files: usize,
    pub good_copies: usize,
}

/// Waits up to `timeout` for convergence, checks the invariants, reads every present file
/// back, and collapses the ledger to what was observed. `stuck` holds the non-convergence
/// already reported by earlier checks: it is neither waited for nor counted again.
pub async fn check(
    c: &Cluster,
    w: &Workload,
    timeout: Duration,
    stuck: &mut BTreeSet<String>,
) -> CheckResult {
    let ledger = &w.ledger;
    let start = Instant::now();
    for k in 1..=c.replicas.len() {
        scrub(c, k).await;
    }
    let mut hashes = HashCache::default();
    let mut last_scrub = Instant::now();
    let (findings, catalog) = loop {
        let mut rescrub = BTreeSet::new();
        let (findings, catalog) = look(c, ledger, &mut hashes, &mut rescrub).await;
        let waiting = findings
            .iter()
            .any(|f| matches!(f, Finding::Waiting(m) if !stuck.contains(m)));
        if !waiting || start.elapsed() >= timeout {
            break (findings, catalog);
        }
        if last_scrub.elapsed() >= RESCRUB_EVERY {
            for k in rescrub {
                scrub(c, k).await;
            }
            last_scrub = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut converged = true;
    let mut waiting = Vec::new();
    for f in findings {
        match f {
            Finding::Settled(kind, msg) => ledger.violation(kind, msg),
            Finding::Waiting(msg) => {
                converged = false;
                if stuck.insert(msg.clone()) {
                    waiting.push(msg);
                }
            }
        }
    }
    for msg in waiting.iter().take(20) {
        ledger.violation(
            Violation::Invariant,
            format!("not converged after {timeout:?}: {msg}"),
        );
    }
    if waiting.len() > 20 {
        ledger.violation(
            Violation::Invariant,
            format!("... and {} more not converged", waiting.len() - 20),
        );
    }
    read_back(w, &catalog).await;
    for name in ledger.snapshot().keys() {
        let observed = catalog.get(name).map_or(State::Absent, state_of);
        ledger.settle(name, observed);
    }
    let disk = census(c);
    let good_copies = catalog
        .values()
        .map(|st| {
            disk.get(&st.name).map_or(0, |files| {
                files
                    .iter()
                    .filter(|f| {
                        f.file == st.sha256
                            && hashes.sha256(&f.path).as_deref() == Some(st.sha256.as_str())
                    })
                    .count()
            })
        })
        .sum();
    CheckResult {
        converged,
        elapsed: start.elapsed(),
        files: catalog.len(),
        good_copies,
    }
}

/// Retrieves every file of `catalog` through the gateway (three tries) and compares its bytes
/// with the catalog's sha256.
async fn read_back(w: &Workload, catalog: &BTreeMap<String, FileStatus>) {
    for (name, s) in catalog {
        if s.phase == Phase::Deleting {
            continue;
        }
        let mut last = String::new();
        let mut ok = false;
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match w.gateway.read_sha256(name).await {
                Ok((body, _)) if body == s.sha256 => {
                    ok = true;
                    break;
                }
                Ok((body, etag)) => {
                    w.ledger.violation(
                        Violation::Corrupt,
                        format!(
                            "{name}: read back {body} (ETag {etag}), catalog says {}",
                            s.sha256
                        ),
                    );
                    ok = true;
                    break;
                }
                Err(e) => last = format!("{e:?}"),
            }
        }
        if !ok {
            w.ledger.violation(
                Violation::Lost,
                format!("{name}: cannot be read back after convergence: {last}"),
            );
        }
    }
}
