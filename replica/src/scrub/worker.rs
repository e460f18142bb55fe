//! The scrub worker: runs the [`Scrubber`]'s passes when they are due or asked for, hashing
//! every ready copy at a bounded rate and quarantining the ones that no longer match.
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
        Pass {
            queue: VecDeque::new(),
            after,
            last_page: false,
            limiter: Some(Limiter::new(self.scrubber.rate_bytes_per_sec)),
            saved: Instant::now(),
            corrupt: 0,
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
                let Some((found_corrupt, limiter)) =
                    verify(&self.store, &self.metrics, &key, &info, limiter).await
                else {
                    // The hashing task died: the pass starts again at once, after the last
                    // copy it recorded.
                    self.pass = None;
                    return Ok(Next::Now);
                };
                pass.limiter = Some(limiter);
                pass.corrupt += u64::from(found_corrupt);
                self.scrubber.checked(&key, found_corrupt);
                if pass.saved.elapsed() >= SAVE_EVERY {
                    self.scrubber.save();
                    pass.saved = Instant::now();
                }
                return Ok(Next::Now);
            }
            if pass.last_page {
                let corrupt = pass.corrupt;
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

/// Hashes a file at a bounded rate; returns (sha256, length).
fn hash_limited(path: &Path, limiter: &mut Limiter) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
        limiter.consume(n as u64);
    }
    Ok((hex::encode(h.finalize()), len))
}

/// Hashes one copy and quarantines it when it no longer matches. Returns whether it was
/// found corrupt, and the limiter back; `None` if the hashing task died.
async fn verify(
    store: &Store,
    metrics: &Metrics,
    key: &ObjKey,
    info: &ObjectInfo,
    limiter: Option<Limiter>,
) -> Option<(bool, Limiter)> {
    let path = store.data_path(key, ObjectState::Ready);
    let mut lim = limiter.expect("limiter is returned after each object");
    let res = tokio::task::spawn_blocking(move || {
        let r = hash_limited(&path, &mut lim);
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
    let problem = match res {
        Ok((sha, len)) if sha == info.sha256 && len == info.size => None,
        Ok((sha, len)) => Some(format!(
            "content has sha256 {sha} and {len} bytes, expected {} and {} bytes",
            info.sha256, info.size
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
        return Some((false, lim));
    };
    match store.quarantine(key, Some(info.stored_at), &reason).await {
        Ok(true) => {
            metrics.corrupt_found.inc();
            Some((true, lim))
        }
        Ok(false) => Some((false, lim)),
        Err(e) => {
            tracing::error!(key = %key, error = %e, "cannot quarantine copy");
            Some((false, lim))
        }
    }
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
        let (sha, len) = hash_limited(&p, &mut lim).unwrap();
        assert_eq!(len, 3 * MIB);
        assert_eq!(sha, deposito_api::sha256_hex(&vec![7u8; 3 * MIB as usize]));
        // 3 MiB at 10 MiB/s takes at least ~0.3 s.
        assert!(
            t.elapsed() >= Duration::from_millis(280),
            "{:?}",
            t.elapsed()
        );
    }
}
