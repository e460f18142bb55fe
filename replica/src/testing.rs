//! Helpers shared by the unit tests and the integration tests (`tests/`). Not part of the
//! API: hidden from the docs, and free to change.

use std::path::{Path, PathBuf};

/// Every regular file under `dir`, recursively, sorted (none when `dir` can't be read).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
