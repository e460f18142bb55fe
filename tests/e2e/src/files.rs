//! Real files: streaming generation of pseudo-random content, streaming sha256, and the
//! census of copies under replicas' data folders.

use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

const CHUNK: usize = 1 << 20;

/// A fast pseudo-random byte source (xorshift64*), good enough to defeat compression and
/// deduplication, without holding the content in memory.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        Prng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A random seed from the OS.
pub fn random_seed() -> u64 {
    rand::random()
}

/// Writes `size` pseudo-random bytes to `path`, streaming; returns their sha256 (hex).
pub fn write_random_file(path: &Path, size: u64, seed: u64) -> String {
    let mut f = io::BufWriter::with_capacity(
        CHUNK,
        File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display())),
    );
    let mut rng = Prng::new(seed);
    let mut buf = vec![0u8; CHUNK];
    let mut hasher = Sha256::new();
    let mut left = size;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        rng.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        f.write_all(&buf[..n]).expect("write random file");
        left -= n as u64;
    }
    f.flush().expect("flush random file");
    hex::encode(hasher.finalize())
}

/// Writes `bytes` to `path`.
pub fn write_bytes(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// sha256 (hex) of a file, streaming.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; CHUNK];
    let mut hasher = Sha256::new();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// True when both files exist and have exactly the same bytes (streaming comparison).
pub fn same_bytes(a: &Path, b: &Path) -> bool {
    let (Ok(fa), Ok(fb)) = (File::open(a), File::open(b)) else {
        return false;
    };
    match (fa.metadata(), fb.metadata()) {
        (Ok(ma), Ok(mb)) if ma.len() == mb.len() => {}
        _ => return false,
    }
    let mut ra = BufReader::with_capacity(CHUNK, fa);
    let mut rb = BufReader::with_capacity(CHUNK, fb);
    let mut ba = vec![0u8; CHUNK];
    let mut bb = vec![0u8; CHUNK];
    loop {
        let Ok(na) = read_full(&mut ra, &mut ba) else {
            return false;
        };
        let Ok(nb) = read_full(&mut rb, &mut bb) else {
            return false;
        };
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Every regular file under `dir`, recursively (missing folders give nothing). Files that
/// vanish during the walk are skipped.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Where the copy (`namespace`, `name`, `sha256`) lives in the area `area` (`objects`, `trash`
/// or `quarantine`) of the replica data dir `data_dir` (the replica's own layout).
pub fn copy_path(
    data_dir: &Path,
    area: &str,
    namespace: &str,
    name: &str,
    sha256: &str,
) -> PathBuf {
    deposito_replica::storage::layout::copy_path(&data_dir.join(area), namespace, name, sha256)
}

/// The data files of every copy of (`namespace`, `name`) of any content in the area `area`
/// of the data dir `data_dir`, as (sha256, path).
pub fn copies_of_name(
    data_dir: &Path,
    area: &str,
    namespace: &str,
    name: &str,
) -> Vec<(String, PathBuf)> {
    deposito_replica::storage::layout::copies_of_name(&data_dir.join(area), namespace, name)
}

/// Reads a file of a replica data dir by its path `rel` relative to a namespace's folder of an
/// area: (name, file), where `file` is the sha256 for a copy's data and `{sha256}.json` for
/// its metadata. None for what is neither.
pub fn name_and_file(rel: &Path) -> Option<(String, String)> {
    use deposito_replica::storage::layout::{parse_flat, FlatFile};
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [file] => match parse_flat(file)? {
            FlatFile::Data(name, sha) => Some((name, sha)),
            FlatFile::Meta(name, sha) => Some((name, format!("{sha}.json"))),
        },
        [name, file] => Some((name.clone(), file.clone())),
        _ => None,
    }
}

/// Files under `DATA/objects/` (content copies and the `.json` metadata of those of more than
/// one chunk) of each data dir.
pub fn object_files(data_dirs: &[PathBuf]) -> Vec<PathBuf> {
    data_dirs
        .iter()
        .flat_map(|d| files_under(&d.join("objects")))
        .collect()
}

/// Files under `DATA/tmp/` of each data dir (in-flight writes).
pub fn tmp_files(data_dirs: &[PathBuf]) -> Vec<PathBuf> {
    data_dirs
        .iter()
        .flat_map(|d| files_under(&d.join("tmp")))
        .collect()
}

/// Paths of the files under the data dirs' `objects/` trees whose bytes equal `original`.
pub fn identical_copies(data_dirs: &[PathBuf], original: &Path) -> Vec<PathBuf> {
    let len = fs::metadata(original)
        .unwrap_or_else(|e| panic!("stat {}: {e}", original.display()))
        .len();
    object_files(data_dirs)
        .into_iter()
        .filter(|p| fs::metadata(p).map(|m| m.len() == len).unwrap_or(false))
        .filter(|p| same_bytes(p, original))
        .collect()
}

/// How many files under the data dirs' `objects/` trees have exactly the bytes of `original`.
pub fn count_copies(data_dirs: &[PathBuf], original: &Path) -> usize {
    identical_copies(data_dirs, original).len()
}

/// Flips (xor 0xff) the byte in the middle of `path`, in place, and syncs it.
pub fn flip_middle_byte(path: &Path) {
    use std::io::{Seek, SeekFrom};
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mid = f.metadata().expect("stat").len() / 2;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(mid)).expect("seek");
    f.read_exact(&mut b).expect("read byte");
    b[0] ^= 0xff;
    f.seek(SeekFrom::Start(mid)).expect("seek");
    f.write_all(&b).expect("write byte");
    f.sync_all().expect("sync");
}

/// Bytes available to an unprivileged writer on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("no NUL in path");
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is a valid, writable statvfs.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statvfs {}", dir.display());
    st.f_bavail as u64 * st.f_frsize as u64
}
