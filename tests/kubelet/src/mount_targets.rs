//! Host-side mount points that the kubelet had to create, reference-counted so they can be
//! removed again once no running container needs them.
//!
//! A bind mount needs an existing target on the host (a directory, or a file when the source is
//! a file). When the target, or some of its parents, are missing, the kubelet creates them and
//! records them here. Every container process holds a [`Lease`] on the created paths at or above
//! its targets; when the last lease on a path goes, the path is removed — with `rmdir` (or, for a
//! file, only when it is still an empty regular file), deepest first, never recursively. Paths
//! that existed before are never recorded and so never removed.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Paths created by the kubelet, with the number of users of each.
#[derive(Debug, Default)]
pub struct Registry {
    created: BTreeMap<PathBuf, Created>,
}

#[derive(Debug, Clone, Copy)]
struct Created {
    refs: usize,
    file: bool,
}

impl Registry {
    pub const fn new() -> Self {
        Registry {
            created: BTreeMap::new(),
        }
    }

    /// Make sure `target` exists (as an empty file if `file`, else as a directory), creating it
    /// and its missing parents. Returns the created-by-us paths at or above `target`, each of
    /// which now has one more user; pass them to [`Registry::release`] when done.
    pub fn acquire(&mut self, target: &Path, file: bool) -> io::Result<Vec<PathBuf>> {
        let mut made = Vec::new();
        if let Err(e) = self.create(target, file, &mut made) {
            // Undo this call's creations, deepest first.
            for p in made.iter().rev() {
                let c = self.created.remove(p).expect("recorded");
                let _ = remove(p, c.file);
            }
            return Err(e);
        }
        let held: Vec<PathBuf> = target
            .ancestors()
            .filter(|p| self.created.contains_key(*p))
            .map(Path::to_path_buf)
            .collect();
        for p in &held {
            self.created.get_mut(p).expect("recorded").refs += 1;
        }
        Ok(held)
    }

    fn create(&mut self, target: &Path, file: bool, made: &mut Vec<PathBuf>) -> io::Result<()> {
        // Missing paths from `target` upwards, created top-down.
        let missing: Vec<&Path> = target
            .ancestors()
            .filter(|p| !p.as_os_str().is_empty())
            .take_while(|p| std::fs::symlink_metadata(p).is_err())
            .collect();
        for (i, p) in missing.iter().enumerate().rev() {
            let as_file = file && i == 0;
            let r = if as_file {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(p)
                    .map(drop)
            } else {
                std::fs::create_dir(p)
            };
            match r {
                Ok(()) => {
                    self.created.insert(
                        p.to_path_buf(),
                        Created {
                            refs: 0,
                            file: as_file,
                        },
                    );
                    made.push(p.to_path_buf());
                }
                // Someone else made it meanwhile: not ours.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        if !file && !target.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("mount target {} is not a directory", target.display()),
            ));
        }
        Ok(())
    }

    /// Drop one use of each of `held`; remove those that no longer have users, deepest first.
    pub fn release(&mut self, held: &[PathBuf]) {
        let mut gone = Vec::new();
        for p in held {
            if let Some(c) = self.created.get_mut(p) {
                c.refs = c.refs.saturating_sub(1);
                if c.refs == 0 {
                    gone.push((p.clone(), c.file));
                    self.created.remove(p);
                }
            }
        }
        remove_deepest_first(gone);
    }

    /// Remove everything recorded, whoever still uses it (the kubelet is shutting down).
    pub fn remove_all(&mut self) {
        let gone = std::mem::take(&mut self.created)
            .into_iter()
            .map(|(p, c)| (p, c.file))
            .collect();
        remove_deepest_first(gone);
    }

    /// Number of users of `p`, if the kubelet created it.
    pub fn users(&self, p: &Path) -> Option<usize> {
        self.created.get(p).map(|c| c.refs)
    }
}

fn remove_deepest_first(mut gone: Vec<(PathBuf, bool)>) {
    gone.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (p, file) in gone {
        match remove(&p, file) {
            Ok(()) => tracing::debug!(path = %p.display(), "removed mount target"),
            Err(e) => tracing::debug!(path = %p.display(), error = %e, "left mount target"),
        }
    }
}

/// `rmdir`, or for a file: unlink only if it is still an empty regular file.
fn remove(p: &Path, file: bool) -> io::Result<()> {
    if file {
        let md = std::fs::symlink_metadata(p)?;
        if !md.is_file() || md.len() != 0 {
            return Err(io::Error::other("no longer an empty file"));
        }
        std::fs::remove_file(p)
    } else {
        std::fs::remove_dir(p)
    }
}

static GLOBAL: Mutex<Registry> = Mutex::new(Registry::new());

fn global<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    f(&mut GLOBAL.lock().expect("mount targets lock"))
}

/// One container's hold on the mount targets the kubelet created for it; released on drop.
#[derive(Debug, Default)]
#[must_use = "dropping the lease may remove the mount targets"]
pub struct Lease {
    held: Vec<PathBuf>,
}

impl Lease {
    /// Add `target` (an empty file if `file`, else a directory) to this lease, creating it if
    /// needed.
    pub fn ensure(&mut self, target: &Path, file: bool) -> io::Result<()> {
        let held = global(|r| r.acquire(target, file))?;
        self.held.extend(held);
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            global(|r| r.release(&held));
        }
    }
}

/// Remove every mount target the kubelet created (on shutdown).
pub fn remove_all() {
    global(Registry::remove_all);
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempRoot(PathBuf);

    impl TempRoot {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "kubelet-mount-targets-{tag}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempRoot(p)
        }
    }

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn created_target_and_parents_removed_after_release() {
        let root = TempRoot::new("created");
        let target = root.0.join("var/run/secrets/sa");
        let mut r = Registry::new();
        let held = r.acquire(&target, false).unwrap();
        assert!(target.is_dir());
        assert_eq!(held.len(), 4);
        r.release(&held);
        assert!(!root.0.join("var").exists());
        assert!(root.0.is_dir());
        assert_eq!(r.users(&target), None);
    }

    #[test]
    fn file_target_removed_after_release() {
        let root = TempRoot::new("file");
        let target = root.0.join("etc/conf/key");
        let mut r = Registry::new();
        let held = r.acquire(&target, true).unwrap();
        assert!(target.is_file());
        r.release(&held);
        assert!(!root.0.join("etc").exists());
    }

    #[test]
    fn pre_existing_directory_is_kept() {
        let root = TempRoot::new("existing");
        let existing = root.0.join("data");
        std::fs::create_dir(&existing).unwrap();
        let mut r = Registry::new();
        assert!(r.acquire(&existing, false).unwrap().is_empty());
        let target = existing.join("sub");
        let held = r.acquire(&target, false).unwrap();
        assert_eq!(held, vec![target.clone()]);
        r.release(&held);
        r.remove_all();
        assert!(!target.exists());
        assert!(existing.is_dir());
    }

    #[test]
    fn non_empty_directory_is_kept() {
        let root = TempRoot::new("nonempty");
        let target = root.0.join("a/b");
        let mut r = Registry::new();
        let held = r.acquire(&target, false).unwrap();
        std::fs::write(target.join("someone-elses"), "x").unwrap();
        r.release(&held);
        assert!(target.join("someone-elses").is_file());
        // Forgotten: never removed later either.
        assert_eq!(r.users(&target), None);
        std::fs::remove_file(target.join("someone-elses")).unwrap();
        r.remove_all();
        assert!(target.is_dir());
    }

    #[test]
    fn shared_target_removed_after_last_release() {
        let root = TempRoot::new("shared");
        let target = root.0.join("data");
        let mut r = Registry::new();
        let a = r.acquire(&target, false).unwrap();
        let b = r.acquire(&target, false).unwrap();
        assert_eq!(r.users(&target), Some(2));
        r.release(&a);
        assert!(target.is_dir());
        r.release(&b);
        assert!(!target.exists());
    }

    #[test]
    fn nested_target_keeps_created_parent_alive() {
        let root = TempRoot::new("nested");
        let outer = root.0.join("data");
        let inner = outer.join("x/y");
        let mut r = Registry::new();
        let a = r.acquire(&outer, false).unwrap();
        let b = r.acquire(&inner, false).unwrap();
        assert_eq!(r.users(&outer), Some(2));
        r.release(&a);
        assert!(inner.is_dir());
        r.release(&b);
        assert!(!outer.exists());
    }

    #[test]
    fn remove_all_removes_held_targets() {
        let root = TempRoot::new("all");
        let target = root.0.join("p/q");
        let mut r = Registry::new();
        let held = r.acquire(&target, false).unwrap();
        r.remove_all();
        assert!(!root.0.join("p").exists());
        // A late release is harmless.
        r.release(&held);
    }

    #[test]
    fn lease_releases_on_drop() {
        let root = TempRoot::new("lease");
        let target = root.0.join("m/n");
        let mut l = Lease::default();
        l.ensure(&target, false).unwrap();
        l.ensure(&root.0.join("m/o"), false).unwrap();
        assert!(target.is_dir());
        drop(l);
        assert!(!root.0.join("m").exists());
    }
}
