//! File contents of the campaign: every write carries a (seed, size) pair from the schedule, and
//! its bytes are the e2e pseudo-random stream of that seed, so nothing is kept in memory or on
//! disk between writing and checking: the expected sha256 is enough.

use deposito_e2e::files::{write_random_file, Prng};
use std::path::Path;

/// The content of one write: `size` bytes of the pseudo-random stream seeded by `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Content {
    pub seed: u64,
    pub size: u64,
}

/// Writes at most this size from memory; larger contents are streamed from a scratch file.
pub const IN_MEMORY_LIMIT: u64 = 1 << 20;

impl Content {
    /// The bytes, in memory (only for small contents).
    pub fn bytes(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.size as usize];
        Prng::new(self.seed).fill(&mut buf);
        buf
    }

    /// Writes the content to `path` (streaming); returns its sha256 (hex).
    pub fn write_to(&self, path: &Path) -> String {
        write_random_file(path, self.size, self.seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deposito_api::sha256_hex;

    #[test]
    fn in_memory_bytes_and_streamed_file_agree() {
        let dir = tempfile_dir();
        for size in [0u64, 1, 7, 8, 4096, 1_000_003] {
            let c = Content { seed: 42, size };
            let path = dir.join(format!("c{size}"));
            let sha = c.write_to(&path);
            assert_eq!(sha, sha256_hex(&c.bytes()), "size {size}");
            assert_eq!(std::fs::read(&path).unwrap(), c.bytes());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("chaos-content-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
