//! Per-chunk digests of a copy, recorded at commit, so that every read — whole or a Range —
//! is verified chunk by chunk before any of its bytes is sent.
//!
//! A copy is cut into chunks of [`CHUNK`] bytes (the last one shorter). A copy of one chunk
//! needs nothing more: its sha256, its name, covers it. A longer copy's metadata records
//! the BLAKE3 digest of each chunk, computed in the same pass as the sha256 that verified
//! the upload, so the digests describe exactly the verified bytes. BLAKE3 is several times
//! faster than sha256 on one core, which keeps verification off the critical path of reads.

use serde::{Deserialize, Serialize};

/// Bytes per verified chunk.
pub const CHUNK: u64 = 1 << 20;

/// The BLAKE3 digests of a copy's chunks, in order; hex in the metadata file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkDigests {
    /// Bytes per chunk (the last chunk may be shorter).
    pub chunk_size: u64,
    /// Concatenated 32-byte digests, hex.
    pub blake3: String,
}

impl ChunkDigests {
    /// The digest of chunk `index`, if recorded.
    fn digest(&self, index: u64) -> Option<[u8; 32]> {
        let start = usize::try_from(index).ok()?.checked_mul(64)?;
        let hex = self.blake3.get(start..start + 64)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex, &mut out).ok()?;
        Some(out)
    }

    /// Number of chunks recorded.
    pub fn count(&self) -> u64 {
        (self.blake3.len() / 64) as u64
    }

    /// True when `data` is chunk `index` as it was committed.
    pub fn verify(&self, index: u64, data: &[u8]) -> bool {
        self.digest(index)
            .is_some_and(|d| blake3::hash(data).as_bytes() == &d)
    }

    /// True when these digests can describe a copy of `size` bytes.
    pub fn fits(&self, size: u64) -> bool {
        self.chunk_size == CHUNK && self.count() == chunk_count(size)
    }
}

/// Number of chunks of a copy of `size` bytes (an empty copy has one, empty).
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK).max(1)
}

/// Computes the chunk digests of a stream of bytes cut anywhere.
#[derive(Default)]
pub struct ChunkHasher {
    current: blake3::Hasher,
    in_current: u64,
    digests: String,
    total: u64,
}

impl ChunkHasher {
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (CHUNK - self.in_current) as usize;
            let take = room.min(data.len());
            self.current.update(&data[..take]);
            self.in_current += take as u64;
            self.total += take as u64;
            data = &data[take..];
            if self.in_current == CHUNK {
                self.close_chunk();
            }
        }
    }

    fn close_chunk(&mut self) {
        self.digests.push_str(&self.current.finalize().to_hex());
        self.current.reset();
        self.in_current = 0;
    }

    /// The digests, or None when the bytes fit in one chunk (the sha256 covers them).
    pub fn finish(mut self) -> Option<ChunkDigests> {
        if self.total <= CHUNK {
            return None;
        }
        if self.in_current > 0 {
            self.close_chunk();
        }
        Some(ChunkDigests {
            chunk_size: CHUNK,
            blake3: self.digests,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn digests_do_not_depend_on_how_the_stream_is_cut() {
        let data = bytes(3 * CHUNK as usize + 12345);
        let mut whole = ChunkHasher::default();
        whole.update(&data);
        let whole = whole.finish().unwrap();
        for cut in [1usize, 4096, 65_537, CHUNK as usize, CHUNK as usize + 1] {
            let mut h = ChunkHasher::default();
            data.chunks(cut).for_each(|c| h.update(c));
            assert_eq!(h.finish().unwrap(), whole, "cut {cut}");
        }
        assert_eq!(whole.count(), 4);
        assert!(whole.fits(data.len() as u64));
        for (i, c) in data.chunks(CHUNK as usize).enumerate() {
            assert!(whole.verify(i as u64, c), "chunk {i}");
        }
        let mut flipped = data[CHUNK as usize..2 * CHUNK as usize].to_vec();
        flipped[777] ^= 1;
        assert!(!whole.verify(1, &flipped));
        assert!(!whole.verify(4, b""), "no such chunk");
    }

    #[test]
    fn one_chunk_or_less_records_nothing() {
        for n in [0usize, 1, CHUNK as usize] {
            let mut h = ChunkHasher::default();
            h.update(&bytes(n));
            assert_eq!(h.finish(), None, "{n} bytes");
        }
        assert_eq!(chunk_count(0), 1);
        assert_eq!(chunk_count(CHUNK), 1);
        assert_eq!(chunk_count(CHUNK + 1), 2);
    }
}
