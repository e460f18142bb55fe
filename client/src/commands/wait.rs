//! Waiting for convergence or deletion with the gateway's long poll.

use std::time::{Duration, Instant};

use deposito_api::gateway::{FileStatus, WaitFor};

use crate::api::GatewayClient;
use crate::error::Error;
use crate::format::describe_status;
use crate::progress;

/// Longest single long poll the client asks for, in seconds.
pub const POLL_SECS: u64 = 20;
/// A poll that answers faster than this without news is followed by a pause, so that a
/// gateway that ignores `wait` is not hammered.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Pause after a transient error before trying again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

fn poll_secs(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    secs.clamp(1, POLL_SECS)
}

/// The long poll one wait repeats: the file, what to wait for, until when.
struct Poll<'a> {
    client: &'a GatewayClient,
    ns: &'a str,
    name: &'a str,
    until: WaitFor,
    deadline: Instant,
}

/// The loop both waits share. Each turn shows `last`, ends when `done(&last)`, gives up at the
/// deadline with `timed_out(&last)` (plus the last transient error), else long-polls the
/// gateway: a status becomes `seen(status)` (followed by a pause when it came back faster than
/// [`MIN_POLL_INTERVAL`] and is not done), a transient error is retried after a pause, and for
/// [`WaitFor::Deleted`] a 404 ends the wait. Any other error ends it too.
async fn poll_until<S>(
    poll: Poll<'_>,
    mut last: S,
    seen: impl Fn(FileStatus) -> S,
    show: impl Fn(&S),
    done: impl Fn(&S) -> bool,
    timed_out: impl Fn(&S) -> String,
) -> Result<S, Error> {
    let mut last_err: Option<Error> = None;
    loop {
        show(&last);
        if done(&last) {
            return Ok(last);
        }
        if Instant::now() >= poll.deadline {
            let mut msg = timed_out(&last);
            if let Some(e) = &last_err {
                msg.push_str(&format!("; last error: {}", e.one_line()));
            }
            return Err(Error::Timeout(msg));
        }
        let started = Instant::now();
        match poll
            .client
            .status(
                poll.ns,
                poll.name,
                Some((poll.until, poll_secs(poll.deadline))),
            )
            .await
        {
            Ok(st) => {
                last = seen(st);
                last_err = None;
                if !done(&last) && started.elapsed() < MIN_POLL_INTERVAL {
                    tokio::time::sleep(MIN_POLL_INTERVAL).await;
                }
            }
            Err(e) if poll.until == WaitFor::Deleted && e.is_status(404) => return Ok(last),
            Err(e) if e.is_transient() => {
                last_err = Some(e);
                tokio::time::sleep(
                    RETRY_PAUSE.min(poll.deadline.saturating_duration_since(Instant::now())),
                )
                .await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Waits until the file has exactly `replicas` verified copies and nothing extra
/// (`FileStatus::is_converged`). `expect_sha256`, when given, must be the converged content's
/// digest (another deposit replacing the file meanwhile is reported). On timeout the error
/// gives the last status seen.
pub async fn wait_converged(
    client: &GatewayClient,
    ns: &str,
    name: &str,
    initial: FileStatus,
    timeout: Duration,
    expect_sha256: Option<&str>,
) -> Result<FileStatus, Error> {
    let poll = Poll {
        client,
        ns,
        name,
        until: WaitFor::Converged,
        deadline: Instant::now() + timeout,
    };
    let bar = progress::copies_bar(initial.replicas);
    let result = poll_until(
        poll,
        initial,
        |st| st,
        |last| {
            bar.set_length(u64::from(last.replicas));
            bar.set_position(u64::from(last.ready_replicas.min(last.replicas)));
            bar.set_message(last.phase.as_str());
        },
        FileStatus::is_converged,
        |last| {
            format!(
                "timed out after {}s waiting for {name} to converge to {} copies: {}",
                timeout.as_secs(),
                last.replicas,
                describe_status(last)
            )
        },
    )
    .await;
    bar.finish_and_clear();
    let st = result?;
    if let Some(want) = expect_sha256 {
        if !st.sha256.is_empty() && st.sha256 != want {
            return Err(Error::Protocol(format!(
                "{name} was replaced by another deposit while waiting (now sha256 {})",
                st.sha256
            )));
        }
    }
    Ok(st)
}

/// Waits until the file is gone (`wait=deleted` answers 404).
pub async fn wait_deleted(
    client: &GatewayClient,
    ns: &str,
    name: &str,
    initial: Option<FileStatus>,
    timeout: Duration,
) -> Result<(), Error> {
    let poll = Poll {
        client,
        ns,
        name,
        until: WaitFor::Deleted,
        deadline: Instant::now() + timeout,
    };
    let bar = progress::bytes_bar(None, "deleting");
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>11} {spinner} {msg} {elapsed}")
            .expect("static template"),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    let result = poll_until(
        poll,
        initial,
        Some,
        |last| {
            if let Some(st) = last {
                bar.set_message(format!("{} copies left", st.holders.len()));
            }
        },
        // Only the 404 of the long poll ends this wait.
        |_| false,
        |last| {
            let mut msg = format!(
                "timed out after {}s waiting for {name} to be deleted",
                timeout.as_secs()
            );
            if let Some(st) = last {
                msg.push_str(&format!(
                    ": phase {}, {} copies left",
                    st.phase.as_str(),
                    st.holders.len()
                ));
            }
            msg
        },
    )
    .await;
    bar.finish_and_clear();
    result.map(|_| ())
}
