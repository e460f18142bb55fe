//! The scrub worker: runs the [`Scrubber`]'s passes when they are due or asked for, hashing
//! every ready copy at a bounded rate and quarantining the ones that no longer match.
//!
//! A copy over one chunk committed before chunk digests were recorded gets them in the same
//! read that verifies its sha256, and only when that matches: from then on its Range reads
//! are verified chunk by chunk too.
//!
//! One step verifies one copy (or starts or ends a pass), so shutdown stops a pass between
//! two copies or inside one, never with a verified copy unrecorded; the worker then records
//! how far the pass got. While no pass runs, a step waits for the next one to be due or for
//! `POST /v1/scrub` to ask for it (the runner's own pacing could not be cut short by the
//! request).

use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deposito_api::replica::{ObjectInfo, ObjectState};
use deposito_util::clock::unix_now;
use deposito_util::worker::{Next, StepError, Worker};
use sha2::{Digest, Sha256};

use super::{Scrubber, MIB};
use crate::metrics::Metrics;
use crate::storage::chunks::{chunk_count, ChunkDigests, ChunkHasher, CHUNK};
use crate::storage::{ObjKey, Store};

/// How often a pass in progress records its position.
const SAVE_EVERY: Duration = Duration::from_secs(5);
/// Copies read from the index at a time.
const BATCH: usize = 256;

/// The scrubber's worker: the scrub state, the store it verifies, and the metrics it counts
/// verified and corrupt copies in.
pub struct ScrubWorker {
    scrubber: Arc<Scrubber>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    /// The pass in progress.
    pass: Option<Pass>,
}

/// A pass in progress.
struct Pass {
    /// The ready copies of the current page not verified yet.
    queue: VecDeque<ObjectInfo>,
    /// Where the next page starts.
    after: Option<ObjKey>,
    /// The current page is the last one.
    last_page: bool,
    /// Taken while a copy is hashed, and given back after.
    limiter: Option<Limiter>,
    saved: Instant,
    corrupt: u64,
    /// Copies over one chunk this pass found without chunk digests and could not give any.
    without_digests: u64,
    /// The pass started at the first copy (not resumed after a restart), so its count of
    /// copies without digests covers every copy.
    from_start: bool,
}

/// What verifying one copy found.
struct Verdict {
    corrupt: bool,
    /// A copy over one chunk left without chunk digests.
    without_digests: bool,
}

impl ScrubWorker {
    /// The worker of `scrubber`, its first pass scheduled (see `Scrubber::first_pass_at`).
    pub fn new(scrubber: Arc<Scrubber>, store: Arc<Store>, metrics: Arc<Metrics>) -> Self {
        let first = scrubber.first_pass_at(unix_now());
        scrubber.lock().next_pass_at = Some(first);
        Self {
            scrubber,
            store,
            metrics,
            pass: None,
        }
    }

    /// Waits until the next pass is due or asked for, then starts it, or takes up the one in
    /// progress (cut short by a restart).
    async fn start_pass(&self) -> Pass {
        let due = self.scrubber.lock().next_pass_at.unwrap_or_else(unix_now);
        let wait = Duration::from_secs(due.saturating_sub(unix_now()));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.scrubber.trigger.notified() => {}
        }
        let after = self.scrubber.begin_pass();
        self.scrubber.save();
        tracing::info!(resume_after = ?after, "scrub pass started");
        let from_start = after.is_none();
        Pass {
            queue: VecDeque::new(),
            after,
            last_page: false,
            limiter: Some(Limiter::new(self.scrubber.rate_bytes_per_sec)),
            saved: Instant::now(),
            corrupt: 0,
            without_digests: 0,
            from_start,
        }
    }
}

#[async_trait]
impl Worker for ScrubWorker {
    fn name(&self) -> String {
        "scrubber".into()
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        let Some(pass) = self.pass.as_mut() else {
            self.pass = Some(self.start_pass().await);
            return Ok(Next::Now);
        };
        loop {
            if let Some(info) = pass.queue.pop_front() {
                let key = ObjKey::of(&info);
                let limiter = pass.limiter.take();
                let Some((verdict, limiter)) =
                    verify(&self.store, &self.metrics, &key, &info, limiter).await
                else {
                    // The hashing task died: the pass starts again at once, after the last
                    // copy it recorded.
                    self.pass = None;
                    return Ok(Next::Now);
                };
                pass.limiter = Some(limiter);
                pass.corrupt += u64::from(verdict.corrupt);
                pass.without_digests += u64::from(verdict.without_digests);
                self.scrubber.checked(&key, verdict.corrupt);
                if pass.saved.elapsed() >= SAVE_EVERY {
                    self.scrubber.save();
                    pass.saved = Instant::now();
                }
                return Ok(Next::Now);
            }
            if pass.last_page {
                let corrupt = pass.corrupt;
                if pass.from_start {
                    self.metrics.without_chunk_digests.set(pass.without_digests);
                }
                self.pass = None;
                self.scrubber.finish_pass();
                self.scrubber.save();
                tracing::info!(corrupt, "scrub pass finished");
                return Ok(Next::Now);
            }
            let page = self.store.page(pass.after.as_ref(), BATCH);
            let Some(last) = page.items.last() else {
                pass.last_page = true;
                continue;
            };
            pass.after = Some(ObjKey::of(last));
            pass.last_page = page.next.is_none();
            pass.queue = page
                .items
                .into_iter()
                .filter(|i| i.state == ObjectState::Ready)
                .collect();
        }
    }
}

impl Drop for ScrubWorker {
    /// Stopped in the middle of a pass (shutdown drops the worker): records how far it got,
    /// so that the next start resumes there.
    fn drop(&mut self) {
        if self.pass.is_some() {
            self.scrubber.save();
        }
    }
}

/// Paces hashing to a byte rate.
struct Limiter {
    rate: u64,
    start: Instant,
    bytes: u64,
}

impl Limiter {
    fn new(rate: u64) -> Self {
        Self {
            rate,
            start: Instant::now(),
            bytes: 0,
        }
    }

    /// Accounts `n` bytes and sleeps until the average rate is back under the limit.
    fn consume(&mut self, n: u64) {
        if self.rate == 0 {
            return;
        }
        self.bytes += n;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

/// What hashing a copy found: its sha256, its length and, when asked for, its chunk digests
/// (`None` for a copy of one chunk).
struct Hashed {
    sha256: String,
    len: u64,
    chunks: Option<ChunkDigests>,
}

/// Hashes a file at a bounded rate, with its chunk digests in the same read when
/// `with_chunks`.
fn hash_limited(path: &Path, limiter: &mut Limiter, with_chunks: bool) -> std::io::Result<Hashed> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut chunks = with_chunks.then(ChunkHasher::default);
    let mut buf = vec![0u8; MIB as usize];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        if let Some(chunks) = chunks.as_mut() {
            chunks.update(&buf[..n]);
        }
        len += n as u64;
        limiter.consume(n as u64);
    }
    Ok(Hashed {
        sha256: hex::encode(h.finalize()),
        len,
        chunks: chunks.and_then(ChunkHasher::finish),
    })
}

/// Hashes a copy recorded as one chunk: reads at most a chunk and a byte of it (a longer
/// file does not match, and its length is the file's).
fn hash_small(path: &Path) -> std::io::Result<Hashed> {
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    let read = f.take(CHUNK + 1).read_to_end(&mut buf)? as u64;
    let len = if read > CHUNK {
        std::fs::metadata(path)?.len()
    } else {
        read
    };
    Ok(Hashed {
        sha256: hex::encode(Sha256::digest(&buf)),
        len,
        chunks: None,
    })
}

/// Hashes one copy and quarantines it when it no longer matches; gives a matching copy over
/// one chunk the chunk digests it lacks. Returns what it found, and the limiter back; `None`
/// if the hashing task died.
async fn verify(
    store: &Store,
    metrics: &Metrics,
    key: &ObjKey,
    info: &ObjectInfo,
    limiter: Option<Limiter>,
) -> Option<(Verdict, Limiter)> {
    let path = store.data_path(key, ObjectState::Ready);
    let lacks_digests =
        chunk_count(info.size) > 1 && store.chunk_digests(key, info.size).await.is_none();
    let mut lim = limiter.expect("limiter is returned after each object");
    let (pool, size) = (store.inode_pool(), info.size);
    let res = tokio::task::spawn_blocking(move || {
        // A copy of one chunk is read whole under the pool's gate (its file is not emptied or
        // reused meanwhile: see `storage::pool`), and paced after the gate is let go.
        let r = match pool.reading(size) {
            Some(reading) => {
                let r = hash_small(&path);
                drop(reading);
                if let Ok(h) = &r {
                    lim.consume(h.len);
                }
                r
            }
            None => hash_limited(&path, &mut lim, lacks_digests),
        };
        (r, lim)
    })
    .await;
    let (res, lim) = match res {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "scrub task failed");
            return None;
        }
    };
    let mut verdict = Verdict {
        corrupt: false,
        without_digests: lacks_digests,
    };
    let problem = match res {
        Ok(h) if h.sha256 == info.sha256 && h.len == info.size => {
            if let Some(digests) = h.chunks.filter(|_| lacks_digests) {
                match store.add_chunk_digests(key, info.stored_at, digests).await {
                    Ok(true) => {
                        metrics.chunk_digests_added.inc();
                        verdict.without_digests = false;
                        tracing::info!(key = %key, "chunk digests added to a verified copy");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(key = %key, error = %e, "cannot record chunk digests; will retry next pass");
                    }
                }
            }
            None
        }
        Ok(h) => Some(format!(
            "content has sha256 {} and {} bytes, expected {} and {} bytes",
            h.sha256, h.len, info.sha256, info.size
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some("data file is missing".to_string())
        }
        Err(e) => {
            tracing::warn!(key = %key, error = %e, "cannot read copy; will retry next pass");
            None
        }
    };
    metrics.scrubbed_objects.inc();
    let Some(reason) = problem else {
        return Some((verdict, lim));
    };
    verdict.without_digests = false;
    match store.quarantine(key, Some(info.stored_at), &reason).await {
        Ok(true) => {
            metrics.corrupt_found.inc();
            verdict.corrupt = true;
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(key = %key, error = %e, "cannot quarantine copy");
        }
    }
    Some((verdict, lim))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_paces_to_the_rate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![7u8; 3 * MIB as usize]).unwrap();
        let mut lim = Limiter::new(10 * MIB);
        let t = Instant::now();
        let hashed = hash_limited(&p, &mut lim, true).unwrap();
        assert_eq!(hashed.len, 3 * MIB);
        let data = vec![7u8; 3 * MIB as usize];
        assert_eq!(hashed.sha256, deposito_api::sha256_hex(&data));
        let digests = hashed.chunks.expect("three chunks");
        assert_eq!(digests.count(), 3);
        assert!(digests.verify(2, &data[2 * MIB as usize..]));
        // 3 MiB at 10 MiB/s takes at least ~0.3 s.
        assert!(
            t.elapsed() >= Duration::from_millis(280),
            "{:?}",
            t.elapsed()
        );
    }
}
