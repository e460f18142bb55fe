//! Rebuilding the index from disk at startup, and the blocking quarantine/move/remove steps.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::Path;

use deposito_api::replica::{ObjectInfo, ObjectState};
use deposito_api::{is_sha256_hex, FileKey};
use sha2::{Digest, Sha256};

use super::chunks::{chunk_count, ChunkDigests, ChunkHasher};
use super::fsutil;
use super::layout::{self, FlatFile};
use super::{area_name, data_path, json_path, CopyMeta, ObjKey};

/// The index rebuilt from disk, and the trashed copies whose metadata is damaged.
pub(super) type Scanned = (BTreeMap<ObjKey, ObjectInfo>, BTreeSet<ObjKey>);

/// Creates the layout, empties `tmp/`, and indexes `quarantine/`, then `trash/`, then
/// `objects/`. A copy found in two areas keeps the later one (a ready copy over a trashed
/// one, a trashed one over a quarantined one) and the other is removed.
pub(super) fn open_dir(root: &Path) -> io::Result<Scanned> {
    for d in ["objects", "quarantine", "trash", "tmp"] {
        fsutil::create_dir_all_durable(&root.join(d))?;
    }
    let tmp = root.join("tmp");
    for entry in std::fs::read_dir(&tmp)? {
        fsutil::remove_stray(&entry?, "tmp/")?;
    }
    for i in 0..super::TEMP_FOLDERS {
        std::fs::create_dir(super::temp_folder(root, i))?;
    }
    let mut scanned = (BTreeMap::new(), BTreeSet::new());
    scan_area(root, ObjectState::Corrupt, &mut scanned)?;
    scan_area(root, ObjectState::Trashed, &mut scanned)?;
    scan_area(root, ObjectState::Ready, &mut scanned)?;
    Ok(scanned)
}

fn scan_area(root: &Path, state: ObjectState, index: &mut Scanned) -> io::Result<()> {
    let area = root.join(area_name(state));
    for ns in read_dirs(&area)? {
        let ns_dir = area.join(&ns);
        // A folder per name is the older layout for a name that fits the flat one: its copies
        // move into the namespace's folder first.
        let older: Vec<String> = read_dirs(&ns_dir)?
            .into_iter()
            .filter(|name| !layout::has_own_folder(name) && FileKey::new(&ns, name).is_ok())
            .collect();
        migrate_folders(&ns_dir, &older)?;
        let mut flat: BTreeMap<String, Found> = BTreeMap::new();
        for entry in std::fs::read_dir(&ns_dir)? {
            let entry = entry?;
            let fname = entry.file_name().to_string_lossy().into_owned();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                let key = FileKey::new(&ns, &fname).ok();
                let Some(key) = key.filter(|_| layout::has_own_folder(&fname)) else {
                    // An invalid name, or an older folder left with what is not a copy.
                    tracing::warn!(namespace = %ns, name = %fname, area = area_name(state), "skipping folder");
                    continue;
                };
                let found = read_name_dir(&entry.path())?;
                index_copies(root, state, &key, found, index)?;
            } else {
                match layout::parse_flat(&fname).filter(|_| kind.is_file()) {
                    Some(FlatFile::Data(name, sha)) => {
                        flat.entry(name).or_default().datas.insert(sha);
                    }
                    Some(FlatFile::Meta(name, sha)) => {
                        flat.entry(name).or_default().jsons.insert(sha);
                    }
                    None => {
                        tracing::warn!(path = %entry.path().display(), "ignoring unexpected entry");
                    }
                }
            }
        }
        for (name, found) in flat {
            match FileKey::new(&ns, &name) {
                Ok(key) if !layout::has_own_folder(&name) => {
                    index_copies(root, state, &key, found, index)?;
                }
                _ => {
                    tracing::warn!(namespace = %ns, name = %name, area = area_name(state), "skipping copies with an invalid name");
                }
            }
        }
    }
    Ok(())
}

/// The data files and metadata files of one name's copies, by sha256.
#[derive(Debug, Default)]
struct Found {
    datas: BTreeSet<String>,
    jsons: BTreeSet<String>,
}

/// Moves the copies in the folders of `names` (the older layout) into the flat layout of
/// their namespace's folder `ns_dir`, then removes the folders. Each move is a rename: a crash
/// leaves each file in one place or the other, and the next start moves what is left. The
/// namespace's folder is fsync'd once after all the moves (before any folder goes) and once
/// after the removals, so a large store moves at the speed of renames.
fn migrate_folders(ns_dir: &Path, names: &[String]) -> io::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let mut moved = 0;
    for name in names {
        for entry in std::fs::read_dir(ns_dir.join(name))? {
            let entry = entry?;
            let fname = entry.file_name().to_string_lossy().into_owned();
            let sha = fname.strip_suffix(".json").unwrap_or(&fname);
            if !is_sha256_hex(sha) || !entry.file_type()?.is_file() {
                continue;
            }
            std::fs::rename(entry.path(), ns_dir.join(format!("{name}@{fname}")))?;
            moved += 1;
        }
    }
    fsutil::fsync_dir(ns_dir)?;
    for name in names {
        // A folder left with what is not a copy stays (and is skipped, with a warning).
        let _ = std::fs::remove_dir(ns_dir.join(name));
    }
    fsutil::fsync_dir(ns_dir)?;
    tracing::info!(folder = %ns_dir.display(), folders = names.len(), files = moved,
        "moved into the flat layout");
    Ok(())
}

/// Names of the sub-directories of `dir` (that are valid UTF-8).
fn read_dirs(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            match entry.file_name().into_string() {
                Ok(s) => out.push(s),
                Err(n) => tracing::warn!(name = ?n, "skipping non-UTF-8 folder"),
            }
        }
    }
    Ok(out)
}

/// The copies in the folder of a long name: `{sha256}` and `{sha256}.json` files.
fn read_name_dir(dir: &Path) -> io::Result<Found> {
    let mut found = Found::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let fname = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type()?.is_file() {
            tracing::warn!(path = %entry.path().display(), "ignoring unexpected entry");
        } else if is_sha256_hex(&fname) {
            found.datas.insert(fname);
        } else if let Some(sha) = fname.strip_suffix(".json").filter(|s| is_sha256_hex(s)) {
            found.jsons.insert(sha.to_string());
        } else {
            tracing::warn!(path = %entry.path().display(), "ignoring unexpected file");
        }
    }
    Ok(found)
}

/// Indexes the copies of one name found in `state`'s area; removes metadata without data.
fn index_copies(
    root: &Path,
    state: ObjectState,
    key: &FileKey,
    found: Found,
    (index, damaged): &mut Scanned,
) -> io::Result<()> {
    let okey = |sha: &String| ObjKey {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        sha256: sha.clone(),
    };
    for sha in found.jsons.difference(&found.datas) {
        let path = json_path(&data_path(root, &okey(sha), state));
        tracing::warn!(path = %path.display(), "removing metadata without data");
        fsutil::remove_if_exists(&path)?;
    }
    for sha in &found.datas {
        let okey = okey(sha);
        let loaded = if state == ObjectState::Trashed {
            let (info, intact) = load_trashed(root, &okey)?;
            if !intact {
                damaged.insert(okey.clone());
            }
            Some(info)
        } else {
            load_copy(root, state, &okey)?
        };
        if let Some(info) = loaded {
            // A copy found in an earlier area (quarantine, then trash) is superseded.
            if let Some(earlier) = index.get(&okey) {
                if earlier.state != info.state {
                    remove_copy(&data_path(root, &okey, earlier.state))?;
                    damaged.remove(&okey);
                }
            }
            index.insert(okey, info);
        }
    }
    Ok(())
}

/// Reads one copy's metadata, repairing what can be repaired: data without metadata is
/// re-hashed (metadata recreated when it matches, quarantined otherwise); metadata whose size
/// or identity disagrees with the data quarantines the copy.
fn load_copy(root: &Path, state: ObjectState, key: &ObjKey) -> io::Result<Option<ObjectInfo>> {
    let data = data_path(root, key, state);
    let meta = std::fs::metadata(&data)?;
    let len = meta.len();
    let modified_ms = fsutil::modified_ms(&meta);
    let json = std::fs::read(json_path(&data));
    let no_json = json
        .as_ref()
        .is_err_and(|e| e.kind() == io::ErrorKind::NotFound);
    let parsed: Option<ObjectInfo> = json.ok().and_then(|b| serde_json::from_slice(&b).ok());
    let matches = |i: &ObjectInfo| {
        i.namespace == key.namespace && i.name == key.name && i.sha256 == key.sha256
    };
    let info = match parsed {
        Some(mut i) if matches(&i) && i.size == len => {
            i.state = state;
            return Ok(Some(i));
        }
        None if no_json && state == ObjectState::Ready && chunk_count(len) <= 1 => {
            // A ready copy of one chunk has no metadata (see `layout`): its data was fsync'd
            // before it was renamed into place, and every read checks it against its sha256.
            return Ok(Some(ObjectInfo {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                sha256: key.sha256.clone(),
                size: len,
                state,
                stored_at: modified_ms / 1000,
                stored_at_ms: modified_ms,
            }));
        }
        Some(i) if matches(&i) => {
            tracing::warn!(path = %data.display(), want = i.size, have = len, "data size disagrees with metadata");
            corrupt_info(key, len, i.committed_ms())
        }
        _ => {
            tracing::warn!(path = %data.display(), "data without valid metadata: re-hashing");
            let (actual, chunks) = hash_file(&data)?;
            if actual == key.sha256 && state == ObjectState::Ready {
                let info = ObjectInfo {
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    sha256: key.sha256.clone(),
                    size: len,
                    state,
                    stored_at: modified_ms / 1000,
                    stored_at_ms: modified_ms,
                };
                // A copy of one chunk needs no metadata (see `layout`).
                match chunks {
                    Some(chunks) => {
                        let meta = CopyMeta {
                            info: info.clone(),
                            chunks: Some(chunks),
                        };
                        write_meta(root, &json_path(&data), &meta)?;
                    }
                    None => fsutil::remove_if_exists(&json_path(&data))?,
                }
                return Ok(Some(info));
            }
            corrupt_info(key, len, modified_ms)
        }
    };
    if info.state == ObjectState::Corrupt && state == ObjectState::Ready {
        return quarantine_blocking(root, key, info).map(Some);
    }
    if state == ObjectState::Corrupt && info.state == ObjectState::Corrupt {
        write_meta(
            root,
            &json_path(&data),
            &CopyMeta {
                info: info.clone(),
                chunks: None,
            },
        )?;
    }
    Ok(Some(info))
}

fn corrupt_info(key: &ObjKey, size: u64, stored_at_ms: u64) -> ObjectInfo {
    ObjectInfo {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        sha256: key.sha256.clone(),
        size,
        state: ObjectState::Corrupt,
        stored_at: stored_at_ms / 1000,
        stored_at_ms,
    }
}

/// Writes metadata atomically through `tmp/`.
pub(super) fn write_meta(root: &Path, path: &Path, meta: &CopyMeta) -> io::Result<()> {
    let json = meta.to_json()?;
    let tmp = fsutil::write_temp(&root.join("tmp"), "meta", &json)?;
    std::fs::rename(tmp.path(), path)?;
    tmp.keep();
    fsutil::fsync_dir(path.parent().expect("metadata path has a parent"))
}

/// Moves a ready copy (data if present, and metadata) to `quarantine/`, state corrupt.
pub(super) fn quarantine_blocking(
    root: &Path,
    key: &ObjKey,
    mut info: ObjectInfo,
) -> io::Result<ObjectInfo> {
    let from = data_path(root, key, ObjectState::Ready);
    let to = data_path(root, key, ObjectState::Corrupt);
    let to_dir = to.parent().expect("quarantine path has a parent");
    fsutil::create_dir_all_durable(to_dir)?;
    info.state = ObjectState::Corrupt;
    match std::fs::metadata(&from) {
        Ok(m) => {
            info.size = m.len();
            std::fs::rename(&from, &to)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Keep an empty stand-in so that the corrupt copy stays listed.
            std::fs::File::create(&to)?.sync_all()?;
            info.size = 0;
        }
        Err(e) => return Err(e),
    }
    let meta = CopyMeta {
        info: info.clone(),
        chunks: None,
    };
    write_meta(root, &json_path(&to), &meta)?;
    fsutil::remove_if_exists(&json_path(&from))?;
    fsutil::fsync_dir(from.parent().expect("data path has a parent"))?;
    Ok(info)
}

/// Reads a trashed copy's metadata. A copy whose metadata is missing, unreadable or does not
/// describe its data is kept as it is (never re-hashed or moved: a restore verifies it) and
/// reported damaged (`false`), dated by the data's modification time.
fn load_trashed(root: &Path, key: &ObjKey) -> io::Result<(ObjectInfo, bool)> {
    let data = data_path(root, key, ObjectState::Trashed);
    let meta = std::fs::metadata(&data)?;
    let parsed: Option<ObjectInfo> = std::fs::read(json_path(&data))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(mut info) = parsed.filter(|i| {
        i.namespace == key.namespace
            && i.name == key.name
            && i.sha256 == key.sha256
            && i.size == meta.len()
    }) {
        info.state = ObjectState::Trashed;
        return Ok((info, true));
    }
    tracing::warn!(path = %data.display(), "trashed copy with damaged metadata: kept");
    let trashed_at = fsutil::modified_ms(&meta);
    let info = ObjectInfo {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        sha256: key.sha256.clone(),
        size: meta.len(),
        state: ObjectState::Trashed,
        stored_at: trashed_at / 1000,
        stored_at_ms: trashed_at,
    };
    Ok((info, false))
}

/// Moves a copy's data from the `from` area to the area of `to.info.state`, with `to` as its
/// new metadata: the metadata is written first (a crash leaves metadata without data, which
/// the next start removes), then the data is renamed (same volume: no byte is copied), then
/// the old metadata is removed; both folders are fsync'd before it returns.
pub(super) fn relocate(
    root: &Path,
    key: &ObjKey,
    from: ObjectState,
    to: &CopyMeta,
) -> io::Result<()> {
    let source = data_path(root, key, from);
    let target = data_path(root, key, to.info.state);
    let target_dir = target.parent().expect("data path has a parent");
    fsutil::create_dir_all_durable(target_dir)?;
    let json = to.to_json()?;
    let meta = fsutil::write_temp_unsynced(&root.join("tmp"), "meta", &json)?;
    std::fs::rename(meta.path(), json_path(&target))?;
    meta.keep();
    std::fs::rename(&source, &target)?;
    fsutil::fsync_dir(target_dir)?;
    fsutil::remove_if_exists(&json_path(&source))?;
    let source_dir = source.parent().expect("data path has a parent");
    fsutil::fsync_dir(source_dir)?;
    layout::tidy(key, &source);
    Ok(())
}

/// Removes a copy's data and metadata, if present.
pub(crate) fn remove_copy(data: &Path) -> io::Result<()> {
    let existed = data.exists() || json_path(data).exists();
    fsutil::remove_if_exists(data)?;
    fsutil::remove_if_exists(&json_path(data))?;
    if existed {
        fsutil::fsync_dir(data.parent().expect("data path has a parent"))?;
    }
    Ok(())
}

/// sha256 of a whole file, and its chunk digests, in 1 MiB reads.
pub(crate) fn hash_file(path: &Path) -> io::Result<(String, Option<ChunkDigests>)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut chunks = ChunkHasher::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        chunks.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), chunks.finish()))
}
