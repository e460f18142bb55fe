//! Rot on disk: flips bits in, or truncates, one stored copy on a replica, chosen so that the
//! damage is recoverable (another intact copy of the same content exists on another replica,
//! and no level reduction is pending that could trim that other copy first). A copy whose only
//! twin is gone would be lost by any design, so such copies are not touched.

use crate::ledger::{Ledger, State};
use deposito_e2e::files::{copy_path, files_under, name_and_file, sha256_file};
use deposito_e2e::Cluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What to do to the copy.
#[derive(Debug, Clone, Copy)]
pub enum Corruption {
    /// Flip this many bits at random offsets.
    FlipBits(u32),
    /// Keep this many thousandths of the length (strictly shorter).
    Truncate(u64),
}

/// One content file under a replica's `objects/default/` (`{name}@{sha256}`).
#[derive(Debug, Clone)]
struct StoredCopy {
    name: String,
    sha256: String,
    path: PathBuf,
}

/// Content files (not `.json` sidecars) of at least one byte on `data_dir`, sorted.
fn copies_on(data_dir: &Path) -> Vec<StoredCopy> {
    let root = data_dir.join("objects").join("default");
    let mut out = Vec::new();
    for path in files_under(&root) {
        let Some((name, sha256)) = path.strip_prefix(&root).ok().and_then(name_and_file) else {
            continue;
        };
        let is_content = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        let nonempty = fs::metadata(&path).map(|m| m.is_file() && m.len() > 0);
        if is_content && nonempty.unwrap_or(false) {
            out.push(StoredCopy { name, sha256, path });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// True when `path` holds exactly the content `sha256`.
fn intact(path: &Path, sha256: &str) -> bool {
    sha256_file(path).is_ok_and(|h| h == sha256)
}

/// Corrupts the first eligible copy on replica `k`, starting from the `pick`-th (modulo the
/// number of copies); returns what it did, or why nothing was eligible.
pub fn corrupt_one_copy(
    c: &Cluster,
    ledger: &Ledger,
    k: usize,
    pick: u64,
    how: Corruption,
) -> Result<String, String> {
    let copies = copies_on(&c.replica(k).dir);
    if copies.is_empty() {
        return Err("no stored copy".into());
    }
    let known = ledger.snapshot();
    let start = (pick % copies.len() as u64) as usize;
    for i in 0..copies.len() {
        let copy = &copies[(start + i) % copies.len()];
        if !known.contains_key(&copy.name) {
            continue;
        }
        // No operation on the name may be in flight while we decide and act.
        let lock = ledger.lock_of(&copy.name);
        let Ok(_turn) = lock.try_lock() else {
            continue;
        };
        let record = ledger.record(&copy.name);
        let safe_levels = record
            .possible
            .iter()
            .all(|s| matches!(s, State::Present { replicas, .. } if *replicas >= 2));
        if record.corrupted || record.lowered || !safe_levels {
            continue;
        }
        let twin = c.replicas.iter().enumerate().any(|(j, r)| {
            j + 1 != k && {
                let p = copy_path(&r.dir, "objects", "default", &copy.name, &copy.sha256);
                intact(&p, &copy.sha256)
            }
        });
        if !twin || !intact(&copy.path, &copy.sha256) {
            continue;
        }
        let done = apply(&copy.path, pick, how).map_err(|e| format!("{how:?}: {e}"))?;
        ledger.mark_corrupted(&copy.name);
        return Ok(format!("{} on replica-{k}: {done}", copy.path.display()));
    }
    Err(format!("none of {} copies eligible", copies.len()))
}

/// Damages the file at `path` in place and syncs it.
fn apply(path: &Path, seed: u64, how: Corruption) -> std::io::Result<String> {
    let f = OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    let what = match how {
        Corruption::FlipBits(bits) => {
            let mut rng = StdRng::seed_from_u64(seed);
            // Distinct bits: flipping one twice would undo it.
            let mut bits_to_flip = std::collections::BTreeSet::new();
            while (bits_to_flip.len() as u64) < u64::from(bits.max(1)).min(len * 8) {
                bits_to_flip.insert(rng.gen_range(0..len * 8));
            }
            let mut flipped = Vec::new();
            for bit in bits_to_flip {
                let mut b = [0u8; 1];
                f.read_exact_at(&mut b, bit / 8)?;
                b[0] ^= 1 << (bit % 8);
                f.write_all_at(&b, bit / 8)?;
                flipped.push(bit);
            }
            format!("flipped bits {flipped:?} of {len} bytes")
        }
        Corruption::Truncate(keep_permille) => {
            let keep = len * keep_permille.min(999) / 1000;
            f.set_len(keep)?;
            format!("truncated {len} -> {keep} bytes")
        }
    };
    f.sync_all()?;
    Ok(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_change_the_bytes_and_truncation_shortens() {
        let dir = std::env::temp_dir().join(format!("chaos-corrupt-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        fs::write(&p, vec![7u8; 1000]).unwrap();
        apply(&p, 3, Corruption::FlipBits(1)).unwrap();
        assert_ne!(fs::read(&p).unwrap(), vec![7u8; 1000]);
        apply(&p, 3, Corruption::Truncate(999)).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().len(), 999);
        fs::write(&p, [1u8]).unwrap();
        apply(&p, 3, Corruption::Truncate(999)).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().len(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
