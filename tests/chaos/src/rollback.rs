//! The catalog-rollback fault: the operator is stopped and started on an older copy of its
//! catalog (a backup restored by mistake), which does not claim the copies of files written
//! since. Those copies must go to the replicas' trash, not away; when the current catalog is
//! put back, they must come back from the trash and every acknowledged file be whole again.
//!
//! Older catalogs are taken while the operator runs, with SQLite's `VACUUM INTO` (a
//! consistent snapshot a reader can take beside the writer, in WAL mode).

use std::path::{Path, PathBuf};
use std::time::Duration;

use deposito_e2e::files::files_under;
use deposito_e2e::Cluster;

use crate::schedule::ORPHAN_GRACE_SECS;

/// The catalog's files in the operator's data dir.
const CATALOG_FILES: [&str; 3] = [
    "catalog.sqlite3",
    "catalog.sqlite3-wal",
    "catalog.sqlite3-shm",
];

/// Writes a consistent copy of the running operator's catalog to `to` (replaced if present).
pub fn snapshot(c: &Cluster, to: &Path) -> Result<(), String> {
    let _ = std::fs::remove_file(to);
    let db = rusqlite::Connection::open_with_flags(
        c.op_dir.join(CATALOG_FILES[0]),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
    )
    .map_err(|e| format!("opening the catalog: {e}"))?;
    db.busy_timeout(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    db.execute("VACUUM INTO ?1", [to.to_string_lossy()])
        .map_err(|e| format!("VACUUM INTO {}: {e}", to.display()))?;
    Ok(())
}

/// Copies in the replicas' trash (metadata files not counted).
pub fn trashed_copies(c: &Cluster) -> usize {
    c.data_dirs()
        .iter()
        .flat_map(|d| files_under(&d.join("trash")))
        .filter(|p| p.extension().is_none_or(|e| e != "json"))
        .count()
}

/// What a rollback did.
pub struct Rollback {
    /// Copies in the trash before, while the older catalog ran, and after the current one
    /// came back (and the operator had a while to restore).
    pub trash_before: usize,
    pub trash_under_older: usize,
}

/// Moves the catalog files of `from` (a dir) to `to` (a dir), replacing what is there.
fn move_catalog(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for file in CATALOG_FILES {
        let _ = std::fs::remove_file(to.join(file));
        match std::fs::rename(from.join(file), to.join(file)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("moving {file}: {e}")),
        }
    }
    Ok(())
}

/// Stops the operator (kill -9), starts it on `older`, lets it run past the orphan grace
/// (three times, plus a margin for its first look at every replica), stops it again and
/// starts it on the current catalog. The caller waits for the operator and checks.
pub async fn run(c: &mut Cluster, older: &Path) -> Result<Rollback, String> {
    let trash_before = trashed_copies(c);
    let current: PathBuf = c.scratch("catalog-current");
    c.kill_operator();
    move_catalog(&c.op_dir, &current)?;
    std::fs::copy(older, c.op_dir.join(CATALOG_FILES[0]))
        .map_err(|e| format!("restoring the older catalog: {e}"))?;
    c.start_operator();
    tokio::time::sleep(Duration::from_secs(3 * ORPHAN_GRACE_SECS + 4)).await;
    let trash_under_older = trashed_copies(c);
    c.kill_operator();
    for file in CATALOG_FILES {
        let _ = std::fs::remove_file(c.op_dir.join(file));
    }
    move_catalog(&current, &c.op_dir)?;
    c.start_operator();
    Ok(Rollback {
        trash_before,
        trash_under_older,
    })
}
