//! Unit tests of the store: atomic commits, cleanup on failure, metadata, index rebuild,
//! quarantine and paging.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use deposito_api::replica::{ObjectInfo, ObjectState};
use deposito_api::{is_sha256_hex, sha256_hex, FileKey};
use futures::{stream, StreamExt};

use super::*;
use crate::testing::files_under;

fn chunks(data: &[u8]) -> impl futures::Stream<Item = Result<Bytes>> {
    let parts: Vec<Result<Bytes>> = data
        .chunks(7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(parts)
}

fn fkey(name: &str) -> FileKey {
    FileKey::new("default", name).unwrap()
}

async fn put(store: &Store, name: &str, data: &[u8]) -> ObjectInfo {
    store
        .write(&fkey(name), None, Some(data.len() as u64), chunks(data))
        .await
        .unwrap()
        .info
}

#[tokio::test]
async fn commit_writes_data_and_metadata_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).await.unwrap();
    let data = b"hello deposito, this is a test body".repeat(100);
    let sha = sha256_hex(&data);
    let w = store
        .write(
            &fkey("a.txt"),
            Some(&sha),
            Some(data.len() as u64),
            chunks(&data),
        )
        .await
        .unwrap();
    assert!(w.created);
    assert_eq!(w.info.sha256, sha);
    assert_eq!(w.info.size, data.len() as u64);
    let key = ObjKey::of(&w.info);
    let path = store.data_path(&key, ObjectState::Ready);
    assert_eq!(
        path,
        dir.path().join(format!("objects/default/a.txt@{sha}"))
    );
    assert_eq!(std::fs::read(&path).unwrap(), data);
    // A copy of one chunk has no metadata file: its commit time is the data's.
    assert!(!json_path(&path).exists());
    let mtime_ms = fsutil::modified_ms(&std::fs::metadata(&path).unwrap());
    assert_eq!(w.info.stored_at_ms, mtime_ms);
    assert_eq!(w.info.stored_at, mtime_ms / 1000);
    assert_eq!(w.info.committed_ms(), mtime_ms);
    assert!(files_under(&dir.path().join("tmp")).is_empty());
    assert_eq!(store.get(&key), Some(w.info.clone()));
    // Same content again: idempotent, 200-style.
    let again = store
        .write(&fkey("a.txt"), None, None, chunks(&data))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.info, w.info);
    assert!(files_under(&dir.path().join("tmp")).is_empty());
}

#[tokio::test]
async fn failing_writer_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).await.unwrap();
    let body = stream::iter(vec![
        Ok(Bytes::from_static(b"first part")),
        Err(Error::IncompleteBody("connection reset".into())),
    ]);
    let err = store.write(&fkey("b"), None, None, body).await.unwrap_err();
    assert!(matches!(err, Error::IncompleteBody(_)), "{err:?}");
    assert!(files_under(&dir.path().join("objects")).is_empty());
    assert!(files_under(&dir.path().join("tmp")).is_empty());
    assert_eq!(store.stats(), Stats::default());
}

#[tokio::test]
async fn short_body_is_incomplete_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).await.unwrap();
    let err = store
        .write(&fkey("c"), None, Some(1000), chunks(b"only ten b"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::IncompleteBody(_)), "{err:?}");
    assert!(files_under(&dir.path().join("objects")).is_empty());
    assert!(files_under(&dir.path().join("tmp")).is_empty());
}

#[tokio::test]
async fn dropped_write_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).await.unwrap();
    let body = stream::iter(vec![Ok::<Bytes, Error>(Bytes::from_static(b"partial"))])
        .chain(stream::pending::<Result<Bytes>>());
    let k = fkey("d");
    let fut = store.write(&k, None, None, body);
    assert!(tokio::time::timeout(Duration::from_millis(200), fut)
        .await
        .is_err());
    assert!(files_under(&dir.path().join("objects")).is_empty());
    assert!(files_under(&dir.path().join("tmp")).is_empty());
}

#[tokio::test]
async fn digest_mismatch_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).await.unwrap();
    let wrong = sha256_hex(b"something else");
    let err = store
        .write(&fkey("e"), Some(&wrong), None, chunks(b"actual content"))
        .await
        .unwrap_err();
    match err {
        Error::DigestMismatch { expected, actual } => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, sha256_hex(b"actual content"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(files_under(&dir.path().join("objects")).is_empty());
    assert!(files_under(&dir.path().join("tmp")).is_empty());
}

#[tokio::test]
async fn min_free_bytes_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), u64::MAX / 2).await.unwrap();
    let err = store
        .write(&fkey("f"), None, None, chunks(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InsufficientStorage(_)), "{err:?}");
    assert!(files_under(&dir.path().join("tmp")).is_empty());
    // Full is not broken: the replica stays ready, and says it is full.
    assert_eq!(
        store.readiness().await.unwrap(),
        crate::storage::Readiness { full: true }
    );
}

#[tokio::test]
async fn startup_rebuilds_and_repairs_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let two_chunks = |tag: u8| vec![tag; chunks::CHUNK as usize + 1];
    let (good, torn, badsize, big, nojson, rotten) = {
        let store = Store::open(root, 0).await.unwrap();
        (
            put(&store, "good", b"good bytes").await,
            put(&store, "torn", b"metadata torn by a crash").await,
            put(&store, "badsize", b"metadata says another size").await,
            put(&store, "big", &two_chunks(1)).await,
            put(&store, "nojson", &two_chunks(2)).await,
            put(&store, "rotten", &two_chunks(3)).await,
        )
    };
    let p = |i: &ObjectInfo, s| data_path(root, &ObjKey::of(i), s);
    // Metadata left half-written by a crash (it is not fsync'd): the copy is hashed again,
    // and the torn file removed (a copy of one chunk needs none).
    std::fs::write(
        json_path(&p(&torn, ObjectState::Ready)),
        b"{\"namespace\": \"def",
    )
    .unwrap();
    // Data whose size disagrees with its metadata: quarantined.
    std::fs::write(
        json_path(&p(&badsize, ObjectState::Ready)),
        serde_json::to_vec(&badsize).unwrap(),
    )
    .unwrap();
    std::fs::write(p(&badsize, ObjectState::Ready), b"short").unwrap();
    // A copy of two chunks without metadata, intact: its metadata is recreated.
    std::fs::remove_file(json_path(&p(&nojson, ObjectState::Ready))).unwrap();
    // One without metadata that no longer matches its name: quarantined.
    std::fs::remove_file(json_path(&p(&rotten, ObjectState::Ready))).unwrap();
    let mut bytes = two_chunks(3);
    bytes[7] = 4;
    std::fs::write(p(&rotten, ObjectState::Ready), bytes).unwrap();
    // Metadata without data: dropped (this one in the older layout's folder, moved first).
    let orphan = root
        .join("objects/default/orphan")
        .join(format!("{}.json", "0".repeat(64)));
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, serde_json::to_vec(&good).unwrap()).unwrap();
    // Leftovers of an interrupted write: removed.
    std::fs::write(root.join("tmp/data-leftover"), b"partial").unwrap();

    let store = Store::open(root, 0).await.unwrap();
    assert!(files_under(&root.join("tmp")).is_empty());
    assert!(!orphan.parent().unwrap().exists());
    assert!(!root
        .join(format!("objects/default/orphan@{}.json", "0".repeat(64)))
        .exists());
    // A copy of one chunk is read from its path and file alone.
    assert_eq!(store.get(&ObjKey::of(&good)), Some(good.clone()));
    assert_eq!(store.get(&ObjKey::of(&big)), Some(big.clone()));
    let info = store.get(&ObjKey::of(&torn)).unwrap();
    assert_eq!((info.state, info.size), (ObjectState::Ready, torn.size));
    assert!(!json_path(&p(&torn, ObjectState::Ready)).exists());
    let info = store.get(&ObjKey::of(&nojson)).unwrap();
    assert_eq!((info.state, info.size), (ObjectState::Ready, nojson.size));
    let meta: CopyMeta =
        serde_json::from_slice(&std::fs::read(json_path(&p(&nojson, ObjectState::Ready))).unwrap())
            .unwrap();
    assert_eq!(
        (meta.info.size, meta.info.state),
        (nojson.size, ObjectState::Ready)
    );
    assert!(meta.chunks.is_some_and(|c| c.fits(nojson.size)));
    for bad in [&badsize, &rotten] {
        let info = store.get(&ObjKey::of(bad)).unwrap();
        assert_eq!(info.state, ObjectState::Corrupt, "{}", bad.name);
        assert!(!p(bad, ObjectState::Ready).exists());
        assert!(p(bad, ObjectState::Corrupt).exists());
        let meta: ObjectInfo = serde_json::from_slice(
            &std::fs::read(json_path(&p(bad, ObjectState::Corrupt))).unwrap(),
        )
        .unwrap();
        assert_eq!(meta.state, ObjectState::Corrupt);
    }
    let s = store.stats();
    assert_eq!((s.ready, s.corrupt), (4, 2));
    // And a third open finds the same thing.
    drop(store);
    let store = Store::open(root, 0).await.unwrap();
    assert_eq!(store.stats(), s);
}

/// A data dir of the older layout (a folder per name, a metadata file per copy) opens with
/// every copy in place, moved into the flat layout; a long name keeps its folder.
#[tokio::test]
async fn a_store_in_the_older_layout_is_moved_into_the_flat_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let long = "l".repeat(layout::FLAT_NAME_MAX + 1);
    let mut want = Vec::new();
    for (name, data) in [
        ("a.txt", &b"first"[..]),
        ("b@c", b"second"),
        (&long, b"third"),
    ] {
        let sha = sha256_hex(data);
        let folder = root.join("objects/default").join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(&sha), data).unwrap();
        let info = ObjectInfo {
            namespace: "default".into(),
            name: name.to_string(),
            sha256: sha.clone(),
            size: data.len() as u64,
            state: ObjectState::Ready,
            stored_at: 1_700_000_000,
            // Metadata written before the milliseconds were kept.
            stored_at_ms: 0,
        };
        std::fs::write(
            folder.join(format!("{sha}.json")),
            serde_json::to_vec(&info).unwrap(),
        )
        .unwrap();
        want.push((info, data.to_vec()));
    }
    let store = Store::open(root, 0).await.unwrap();
    for (info, data) in &want {
        let key = ObjKey::of(info);
        assert_eq!(store.get(&key).as_ref(), Some(info), "{}", info.name);
        let path = store.data_path(&key, ObjectState::Ready);
        assert_eq!(&std::fs::read(&path).unwrap(), data, "{}", info.name);
        assert!(json_path(&path).exists(), "{}", info.name);
    }
    assert!(!root.join("objects/default/a.txt").exists());
    assert!(root
        .join(format!("objects/default/a.txt@{}", want[0].0.sha256))
        .is_file());
    assert!(root.join("objects/default").join(&long).is_dir());
    assert_eq!(ready_on_disk(root).len(), 3);
    drop(store);
    let store = Store::open(root, 0).await.unwrap();
    assert_eq!(store.stats().ready, 3);
}

#[tokio::test]
async fn a_write_without_a_digest_of_trashed_content_brings_the_trashed_copy_back() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).await.unwrap();
    let info = put(&store, "t", b"trash me, then deposit me again").await;
    let key = ObjKey::of(&info);
    store.trash(&key).await.unwrap();
    let trashed = store.data_path(&key, ObjectState::Trashed);
    let inode = std::fs::metadata(&trashed).unwrap().ino();
    // The digest is not given: the body is hashed as it arrives (a trailer, S3).
    let w = store
        .write(
            &fkey("t"),
            None,
            None,
            chunks(b"trash me, then deposit me again"),
        )
        .await
        .unwrap();
    assert_eq!(w.info.state, ObjectState::Ready);
    let ready = store.data_path(&key, ObjectState::Ready);
    assert_eq!(
        std::fs::metadata(&ready).unwrap().ino(),
        inode,
        "the same file"
    );
    assert!(!trashed.exists());
    assert!(files_under(&dir.path().join("tmp")).is_empty());
    assert_eq!(store.get(&key).unwrap().state, ObjectState::Ready);
}

#[tokio::test]
async fn quarantine_moves_the_copy_and_a_new_write_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).await.unwrap();
    let info = put(&store, "q", b"quarantine me").await;
    let key = ObjKey::of(&info);
    // A stale stored_at does not quarantine a newer commit.
    assert!(!store
        .quarantine(&key, Some(info.stored_at + 1), "test")
        .await
        .unwrap());
    assert!(store
        .quarantine(&key, Some(info.stored_at), "test")
        .await
        .unwrap());
    assert_eq!(store.get(&key).unwrap().state, ObjectState::Corrupt);
    assert!(!store.data_path(&key, ObjectState::Ready).exists());
    assert!(store.data_path(&key, ObjectState::Corrupt).exists());
    let items = store.page(None, 10).items;
    assert_eq!(items[0].state, ObjectState::Corrupt);
    // Survives a restart.
    let store = Store::open(dir.path(), 0).await.unwrap();
    assert_eq!(store.get(&key).unwrap().state, ObjectState::Corrupt);
    // A verified write of the same content replaces the quarantined copy.
    let w = store
        .write(&fkey("q"), None, None, chunks(b"quarantine me"))
        .await
        .unwrap();
    assert!(w.created);
    assert_eq!(store.get(&key).unwrap().state, ObjectState::Ready);
    assert!(!store.data_path(&key, ObjectState::Corrupt).exists());
    // Delete works on quarantined copies too.
    assert!(store.quarantine(&key, None, "again").await.unwrap());
    store.delete(&key).await.unwrap();
    assert!(store.get(&key).is_none());
    assert!(files_under(&dir.path().join("quarantine")).is_empty());
    assert!(matches!(store.delete(&key).await, Err(Error::NotFound)));
}

#[tokio::test]
async fn pages_are_sorted_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).await.unwrap();
    for i in (0..25).rev() {
        put(
            &store,
            &format!("file-{i:02}"),
            format!("content {i}").as_bytes(),
        )
        .await;
    }
    let mut all = Vec::new();
    let mut after: Option<ObjKey> = None;
    loop {
        let page = store.page(after.as_ref(), 10);
        assert!(page.items.len() <= 10);
        all.extend(page.items);
        match page.next {
            Some(k) => after = Some(ObjKey::from_cursor(&k.cursor()).unwrap()),
            None => break,
        }
    }
    assert_eq!(all.len(), 25);
    let names: Vec<_> = all.iter().map(|i| i.name.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(ObjKey::from_cursor("zz").is_err());
}

/// A listing plus the changes after its `seq` reproduce the index exactly, and a long poll
/// wakes at the first change.
#[tokio::test]
async fn listing_plus_changes_reproduce_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path(), 0).await.unwrap());
    let a = put(&store, "a", b"first").await;
    let page = store.page(None, 100);
    assert_eq!(page.seq, 1);
    assert_eq!(page.items, vec![a.clone()]);

    // Nothing new: an immediate answer with the same cursor.
    let none = store
        .changes(&page.epoch, page.seq, 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((none.seq, none.changes.len(), none.more), (1, 0, false));

    // A long poll is answered by the next change, not by its timeout.
    let waiter = {
        let (store, epoch) = (store.clone(), page.epoch.clone());
        tokio::spawn(async move { store.changes(&epoch, 1, 10, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    let b = put(&store, "b", b"second").await;
    let woke = waiter.await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(woke.changes.len(), 1);
    assert_eq!(woke.changes[0].object.as_ref(), Some(&b));

    store
        .quarantine(&ObjKey::of(&a), None, "test")
        .await
        .unwrap();
    store.delete(&ObjKey::of(&b)).await.unwrap();
    let mut replay: std::collections::BTreeMap<ObjKey, ObjectInfo> = page
        .items
        .iter()
        .map(|i| (ObjKey::of(i), i.clone()))
        .collect();
    let feed = store
        .changes(&page.epoch, page.seq, 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(feed.seq, 4);
    for change in feed.changes {
        let key = ObjKey::new(&change.namespace, &change.name, &change.sha256).unwrap();
        match change.object {
            Some(info) => replay.insert(key, info),
            None => replay.remove(&key),
        };
    }
    let now: Vec<ObjectInfo> = store.page(None, 100).items;
    assert_eq!(replay.into_values().collect::<Vec<_>>(), now);
    assert_eq!(now[0].state, ObjectState::Corrupt);
    assert_eq!(store.stats().corrupt, 1);
    assert_eq!(store.stats().ready, 0);

    // A restart is a new epoch: the old cursor is refused.
    drop(store);
    let reopened = Store::open(dir.path(), 0).await.unwrap();
    assert!(matches!(
        reopened.changes(&page.epoch, 4, 10, Duration::ZERO).await,
        Err(Error::CursorExpired(_))
    ));
}

/// The ready copies on disk, by key, read from their paths (metadata files aside).
fn ready_on_disk(root: &Path) -> Vec<ObjKey> {
    let objects = root.join("objects");
    let mut keys: Vec<ObjKey> = files_under(&objects)
        .iter()
        .filter_map(|p| {
            let parts: Vec<String> = p
                .strip_prefix(&objects)
                .unwrap()
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            let (name, sha256) = match &parts[1..] {
                [file] => match layout::parse_flat(file)? {
                    layout::FlatFile::Data(name, sha) => (name, sha),
                    layout::FlatFile::Meta(..) => return None,
                },
                [name, file] if is_sha256_hex(file) => (name.clone(), file.clone()),
                _ => return None,
            };
            Some(ObjKey {
                namespace: parts[0].clone(),
                name,
                sha256,
            })
        })
        .collect();
    keys.sort();
    keys
}

/// A request dropped at any moment of a commit or a delete (the operator killed mid-request,
/// a client gone) never leaves the disk and the index apart: before, the disk changed in a
/// blocking task and the index only after the await, so a drop in between left a committed
/// copy the replica never reported, or an entry for a file already gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_commits_and_deletes_keep_index_and_disk_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path(), 0).await.unwrap());
    for i in 0..200u32 {
        let data = format!("content {i}").repeat(50).into_bytes();
        let name = format!("f{}", i % 20);
        let s = store.clone();
        let d = data.clone();
        let n = name.clone();
        let write = tokio::spawn(async move {
            s.write(&fkey(&n), None, Some(d.len() as u64), chunks(&d))
                .await
        });
        // Spread the drops over the whole request: writing, fsync, rename, index.
        tokio::time::sleep(Duration::from_micros(u64::from(i * 53 % 4000))).await;
        write.abort();
        let _ = write.await;
        let key = ObjKey::new("default", &name, &sha256_hex(&data)).unwrap();
        let s = store.clone();
        let delete = tokio::spawn(async move { s.delete(&key).await });
        tokio::time::sleep(Duration::from_micros(u64::from(i * 29 % 2000))).await;
        delete.abort();
        let _ = delete.await;
    }
    // Every started change has finished once the commit lock is free again (and blocking
    // work orphaned by a drop, as before the fix, has had time to land).
    store.change_on_disk(|_| Ok(())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut indexed = store.fold_ready(Vec::new(), |mut v, k, _| {
        v.push(k.clone());
        v
    });
    indexed.sort();
    let mut on_disk = ready_on_disk(dir.path());
    on_disk.sort();
    assert_eq!(indexed, on_disk, "index and disk disagree");
    for key in &indexed {
        store.delete(key).await.unwrap();
    }
    assert!(ready_on_disk(dir.path()).is_empty());
}

/// Concurrent writes are committed in shared batches (fewer batches than copies), and each
/// one is complete: the index, the disk and the bytes agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path(), 0).await.unwrap());
    let writes: Vec<_> = (0..64u32)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                let data = format!("small file {i}").into_bytes();
                let w = s
                    .write(
                        &fkey(&format!("s{i}")),
                        None,
                        Some(data.len() as u64),
                        chunks(&data),
                    )
                    .await
                    .unwrap();
                assert!(w.created);
                (w.info, data)
            })
        })
        .collect();
    for w in writes {
        let (info, data) = w.await.unwrap();
        let path = data_path(dir.path(), &ObjKey::of(&info), ObjectState::Ready);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert_eq!(store.get(&ObjKey::of(&info)), Some(info));
    }
    let counts = store.commit_counts();
    assert_eq!(counts.copies, 64);
    assert!(
        counts.batches < 64,
        "64 concurrent writes took {} commit batches",
        counts.batches
    );
    let mut on_disk = ready_on_disk(dir.path());
    on_disk.sort();
    assert_eq!(on_disk.len(), 64);
}
