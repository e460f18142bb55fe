//! Bounded polling: wait until a condition holds, or fail with what was last observed.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polling period of the wait helpers.
pub const POLL: Duration = Duration::from_millis(100);

/// Calls `f` every [`POLL`] until it returns `Ok`, for at most `timeout`; panics with `what` and
/// the last `Err` (a description of the current state) when time runs out.
pub fn wait_sync<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => {
                if Instant::now() >= deadline {
                    panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Async twin of [`wait_sync`].
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) => {
                if Instant::now() >= deadline {
                    panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Like [`wait_for`] but returns the last error instead of panicking.
pub async fn try_wait_for<T, F, Fut>(timeout: Duration, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(last) => {
                if Instant::now() >= deadline {
                    return Err(last);
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}
