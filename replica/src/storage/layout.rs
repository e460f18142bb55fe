//! Where a copy lives on disk, and how a path names a copy.
//!
//! Each state of a copy has its area: `objects/` (ready), `quarantine/` (corrupt) and `trash/`
//! (trashed). In an area, each namespace has a folder, and a copy is one file in it named
//! `{name}@{sha256}`: a file name holds at most 255 bytes, so that is the layout of every name
//! up to [`FLAT_NAME_MAX`] bytes. A longer name has a folder of its own, holding
//! `{sha256}` files (`objects/{ns}/{name}/{sha256}`), the layout every copy had before.
//!
//! The flat layout creates one inode per copy where the folder per name made two (three with
//! the metadata file), and inode allocation is most of what a small write costs the kernel
//! (measured: BENCHMARKS.md, "Performance round 2"). A store written in the older layout is
//! moved into this one when it opens (`scan`), one copy at a time, each move a rename that a
//! crash leaves whole or undone.
//!
//! Beside a copy's data there may be its metadata, the same path with `.json` appended (its
//! `ObjectInfo`, and for a copy of more than one chunk its chunk digests). A ready copy of one
//! chunk needs none: its identity is its path, its size the file's, its commit time the
//! file's modification time, and every read checks it against its sha256.

use std::path::{Path, PathBuf};

use deposito_api::is_sha256_hex;
use deposito_api::replica::ObjectState;

use super::ObjKey;

/// The longest name kept in its namespace's folder: 255 bytes less `@` and a sha256.
pub const FLAT_NAME_MAX: usize = 255 - 1 - 64;

/// The folder of the copies in `state`: `objects`, `quarantine` or `trash`.
pub(crate) fn area_name(state: ObjectState) -> &'static str {
    match state {
        ObjectState::Ready => "objects",
        ObjectState::Corrupt => "quarantine",
        ObjectState::Trashed => "trash",
    }
}

/// The path of a copy in `state` under the data dir `root`.
pub(crate) fn data_path(root: &Path, key: &ObjKey, state: ObjectState) -> PathBuf {
    copy_path(
        &root.join(area_name(state)),
        &key.namespace,
        &key.name,
        &key.sha256,
    )
}

/// The path of the copy (`namespace`, `name`, `sha256`) in the area folder `area` (a data
/// dir's `objects`, `quarantine` or `trash`). For tools and tests that look at a data dir.
pub fn copy_path(area: &Path, namespace: &str, name: &str, sha256: &str) -> PathBuf {
    let ns = area.join(namespace);
    if name.len() <= FLAT_NAME_MAX {
        ns.join(format!("{name}@{sha256}"))
    } else {
        ns.join(name).join(sha256)
    }
}

/// The metadata file beside a data file (for tools and tests too).
pub fn json_path(data: &Path) -> PathBuf {
    let mut s = data.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// What a file in a namespace's folder is, by its name (for tools and tests too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlatFile {
    /// The data of the copy (name, sha256).
    Data(String, String),
    /// The metadata of the copy (name, sha256).
    Meta(String, String),
}

/// Reads a file name of the flat layout: `{name}@{sha256}` or `{name}@{sha256}.json`. The
/// sha256 is the last 64 characters (a name may itself hold `@`).
pub fn parse_flat(file_name: &str) -> Option<FlatFile> {
    let (stem, meta) = match file_name.strip_suffix(".json") {
        Some(stem) => (stem, true),
        None => (file_name, false),
    };
    let at = stem.len().checked_sub(65)?;
    let (name, tail) = (stem.get(..at)?, stem.get(at..)?);
    let sha = tail.strip_prefix('@').filter(|s| is_sha256_hex(s))?;
    if name.is_empty() {
        return None;
    }
    let (name, sha) = (name.to_string(), sha.to_string());
    Some(if meta {
        FlatFile::Meta(name, sha)
    } else {
        FlatFile::Data(name, sha)
    })
}

/// The data files of every copy of (`namespace`, `name`) in the area folder `area`, as
/// (sha256, path), in sha256 order. For tools and tests that look at a data dir.
pub fn copies_of_name(area: &Path, namespace: &str, name: &str) -> Vec<(String, PathBuf)> {
    let ns = area.join(namespace);
    let mut out = Vec::new();
    if has_own_folder(name) {
        for entry in std::fs::read_dir(ns.join(name))
            .into_iter()
            .flatten()
            .flatten()
        {
            let file = entry.file_name().to_string_lossy().into_owned();
            if is_sha256_hex(&file) {
                out.push((file, entry.path()));
            }
        }
    } else {
        for entry in std::fs::read_dir(&ns).into_iter().flatten().flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(FlatFile::Data(n, sha)) = parse_flat(&file) {
                if n == name {
                    out.push((sha, entry.path()));
                }
            }
        }
    }
    out.sort();
    out
}

/// True when the copies of `name` live in a folder of their own.
pub(crate) fn has_own_folder(name: &str) -> bool {
    name.len() > FLAT_NAME_MAX
}

/// After a copy at `data` was removed: removes the folder of its name (long names only) and
/// then its namespace's folder, when they are empty (failure, when they are not, is fine).
/// The area's own folder always stays.
pub(crate) fn tidy(key: &ObjKey, data: &Path) {
    let Some(dir) = data.parent() else { return };
    let ns_dir = if has_own_folder(&key.name) {
        if std::fs::remove_dir(dir).is_err() {
            return;
        }
        dir.parent()
    } else {
        Some(dir)
    };
    if let Some(ns_dir) = ns_dir {
        let _ = std::fs::remove_dir(ns_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_short_name_is_a_file_in_its_namespaces_folder_and_a_long_one_has_a_folder() {
        let area = Path::new("/d/objects");
        assert_eq!(
            copy_path(area, "ns", "a@b.txt", SHA),
            PathBuf::from(format!("/d/objects/ns/a@b.txt@{SHA}"))
        );
        let edge = "n".repeat(FLAT_NAME_MAX);
        let flat = copy_path(area, "ns", &edge, SHA);
        assert_eq!(flat.file_name().unwrap().len(), 255);
        let long = "n".repeat(FLAT_NAME_MAX + 1);
        assert_eq!(
            copy_path(area, "ns", &long, SHA),
            PathBuf::from(format!("/d/objects/ns/{long}/{SHA}"))
        );
    }

    #[test]
    fn flat_file_names_read_back_as_what_they_name() {
        let data = |n: &str| Some(FlatFile::Data(n.to_string(), SHA.to_string()));
        let meta = |n: &str| Some(FlatFile::Meta(n.to_string(), SHA.to_string()));
        assert_eq!(parse_flat(&format!("a.txt@{SHA}")), data("a.txt"));
        assert_eq!(parse_flat(&format!("a.txt@{SHA}.json")), meta("a.txt"));
        // A name that looks like a copy's file name is still read from the right.
        let tricky = format!("x@{SHA}");
        assert_eq!(parse_flat(&format!("{tricky}@{SHA}")), data(&tricky));
        assert_eq!(parse_flat(&format!("a.json@{SHA}")), data("a.json"));
        assert_eq!(parse_flat(&format!("a.json@{SHA}.json")), meta("a.json"));
        for bad in [
            SHA.to_string(),
            format!("@{SHA}"),
            format!("a-{SHA}"),
            format!("a@{}", &SHA[1..]),
            format!("a@{}", SHA.to_uppercase()),
            "a@b".to_string(),
            "é".repeat(40),
        ] {
            assert_eq!(parse_flat(&bad), None, "{bad}");
        }
    }
}
