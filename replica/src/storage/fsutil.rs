//! Small blocking file-system helpers: atomic small-file writes, directory fsync, statvfs,
//! and a guard that removes a temp file unless it was committed.

use std::ffi::CString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Space of the file system holding a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub capacity_bytes: u64,
    /// Bytes available to an unprivileged writer.
    pub free_bytes: u64,
}

/// `statvfs(2)` of `path`.
pub fn space(path: &Path) -> io::Result<Space> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok(Space {
        capacity_bytes: (st.f_blocks as u64).saturating_mul(frsize),
        free_bytes: (st.f_bavail as u64).saturating_mul(frsize),
    })
}

/// fsyncs a directory, making renames and creations in it durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents, fsyncing each parent that gained an entry.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all_durable(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// A file's modification time in milliseconds since the epoch (now, when the file system
/// keeps none).
pub fn modified_ms(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(deposito_util::clock::unix_now_ms, |d| d.as_millis() as u64)
}

/// A random file name for `tmp/`.
pub fn temp_name(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// Removes the file at `path` when dropped, unless [`TempPath::keep`] was called.
#[derive(Debug)]
pub struct TempPath {
    path: PathBuf,
    armed: bool,
}

impl TempPath {
    pub fn new(path: PathBuf) -> Self {
        Self { path, armed: true }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file was renamed away: nothing to remove.
    pub fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = std::fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e,
                        "cannot remove temp file; will retry");
                    leftovers().push(std::mem::take(&mut self.path));
                }
            }
        }
    }
}

/// Temp files whose removal failed (a data dir turned read-only mid-write, say), retried by
/// [`remove_leftovers`] until they are gone, so none outlives the fault that left it.
fn leftovers() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    static LEFTOVERS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    deposito_util::lock(&LEFTOVERS, "temp file leftovers")
}

/// Tries again to remove the temp files a [`TempPath`] could not; keeps those that still fail.
/// Returns how many are left.
pub fn remove_leftovers() -> usize {
    let mut left = leftovers();
    left.retain(|path| match std::fs::remove_file(path) {
        Err(e) => e.kind() != io::ErrorKind::NotFound,
        Ok(()) => false,
    });
    left.len()
}

/// Writes `bytes` to a new file in `tmp_dir`, fsyncs it and returns its guard.
pub fn write_temp(tmp_dir: &Path, prefix: &str, bytes: &[u8]) -> io::Result<TempPath> {
    write_temp_with(tmp_dir, prefix, bytes, true)
}

/// Writes `bytes` to a new file in `tmp_dir` without an fsync: only for content that can be
/// rebuilt from what is durable (a ready copy's metadata is rebuilt from its data, whose
/// name is its digest, when a crash left it empty or torn: see `scan::load_copy`).
pub fn write_temp_unsynced(tmp_dir: &Path, prefix: &str, bytes: &[u8]) -> io::Result<TempPath> {
    write_temp_with(tmp_dir, prefix, bytes, false)
}

fn write_temp_with(tmp_dir: &Path, prefix: &str, bytes: &[u8], sync: bool) -> io::Result<TempPath> {
    let guard = TempPath::new(tmp_dir.join(temp_name(prefix)));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(guard.path())?;
    f.write_all(bytes)?;
    if sync {
        f.sync_all()?;
    }
    Ok(guard)
}

/// Atomically replaces `path` with `bytes`: temp file in the same directory, fsync, rename,
/// fsync of the directory.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = write_temp(dir, ".tmp-write", bytes)?;
    std::fs::rename(tmp.path(), path)?;
    tmp.keep();
    fsync_dir(dir)
}

/// Removes the entry `entry` of a folder, a file or a whole folder, and says so in the log
/// when it cannot (a leftover of `what`, which the next start tries again).
pub fn remove_stray(entry: &std::fs::DirEntry, what: &str) -> io::Result<()> {
    let path = entry.path();
    let removed = if entry.file_type()?.is_dir() {
        std::fs::remove_dir_all(&path)
    } else {
        std::fs::remove_file(&path)
    };
    if let Err(e) = removed {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover of {what}");
    }
    Ok(())
}

/// Removes a file, treating "already gone" as success.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_file_that_cannot_be_removed_is_removed_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tmp-stuck");
        // A directory in its place makes remove_file fail (EISDIR), like a read-only disk.
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("x"), b"x").unwrap();
        drop(TempPath::new(path.clone()));
        assert!(path.exists(), "the failed removal left it");
        assert!(leftovers().contains(&path));
        // The fault is gone: the next retry removes what the guard could not.
        std::fs::remove_dir_all(&path).unwrap();
        std::fs::write(&path, b"partial").unwrap();
        remove_leftovers();
        assert!(!path.exists(), "left over after the retry");
        assert!(!leftovers().contains(&path));
    }

    #[test]
    fn temp_path_removes_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let t = write_temp(dir.path(), "x", b"abc").unwrap();
        let p = t.path().to_path_buf();
        assert!(p.exists());
        drop(t);
        assert!(!p.exists());
        let t = write_temp(dir.path(), "x", b"abc").unwrap();
        let p = t.path().to_path_buf();
        t.keep();
        assert!(p.exists());
    }

    #[test]
    fn space_reports_something() {
        let s = space(Path::new("/")).unwrap();
        assert!(s.capacity_bytes >= s.free_bytes);
    }
}
