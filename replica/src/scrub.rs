//! The background scrubber: re-hashes every ready copy on a schedule, at a bounded rate, and
//! quarantines the ones that no longer match their sha256.

use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deposito_api::replica::{ObjectState, ScrubStatus};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use crate::app::AppState;
use crate::storage::ObjKey;

const MIB: u64 = 1 << 20;

/// Scrub state and the trigger of an immediate pass.
#[derive(Debug)]
pub struct Scrubber {
    status: Mutex<ScrubStatus>,
    trigger: Notify,
}

impl Scrubber {
    pub fn new(interval_secs: u64, rate_mib: u64) -> Self {
        Self {
            status: Mutex::new(ScrubStatus {
                passes: 0,
                objects_checked: 0,
                corrupt_found: 0,
                last_pass_finished: None,
                interval_secs,
                rate_bytes_per_sec: rate_mib.saturating_mul(MIB),
            }),
            trigger: Notify::new(),
        }
    }

    pub fn status(&self) -> ScrubStatus {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ScrubStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for a pass now (or right after the current one).
    pub fn trigger(&self) {
        self.trigger.notify_one();
    }
}

/// Runs passes every `interval_secs`, or when triggered, until cancelled.
pub async fn run(app: AppState, cancel: CancellationToken) {
    let interval = Duration::from_secs(app.config.scrub_interval_secs.max(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
            _ = app.scrubber.trigger.notified() => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = pass(&app) => {}
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

/// One full pass over the ready copies.
#[instrument(skip_all)]
pub async fn pass(app: &AppState) {
    let objects = app.store.ready_objects();
    tracing::info!(objects = objects.len(), "scrub pass started");
    let rate = app.scrubber.status().rate_bytes_per_sec;
    let mut limiter = Some(Limiter::new(rate));
    let mut corrupt = 0u64;
    for info in objects {
        let key = ObjKey::of(&info);
        let path = app.store.data_path(&key, ObjectState::Ready);
        let mut lim = limiter
            .take()
            .expect("limiter is returned after each object");
        let res = tokio::task::spawn_blocking(move || {
            let r = hash_limited(&path, &mut lim);
            (r, lim)
        })
        .await;
        let (res, lim) = match res {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "scrub task failed");
                return;
            }
        };
        limiter = Some(lim);
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
        app.metrics.scrubbed_objects.inc();
        app.scrubber.lock().objects_checked += 1;
        if let Some(reason) = problem {
            match app
                .store
                .quarantine(&key, Some(info.stored_at), &reason)
                .await
            {
                Ok(true) => {
                    corrupt += 1;
                    app.metrics.corrupt_found.inc();
                    app.scrubber.lock().corrupt_found += 1;
                }
                Ok(false) => {}
                Err(e) => tracing::error!(key = %key, error = %e, "cannot quarantine copy"),
            }
        }
    }
    let mut st = app.scrubber.lock();
    st.passes += 1;
    st.last_pass_finished = Some(crate::storage::now_secs());
    tracing::info!(corrupt, passes = st.passes, "scrub pass finished");
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
