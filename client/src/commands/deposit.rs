//! `deposito deposit PATH`: upload (streaming, hashed on the way: the digest follows the
//! bytes as a trailer), wait for N verified copies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use deposito_api::gateway::FileStatus;
use deposito_api::lifecycle::{parse_time, Lifecycle};

use super::{print_out, validate_name, validate_replicas, Ctx};
use crate::api::{Upload, UploadBody};
use crate::cli::{DepositArgs, GlobalOpts};
use crate::error::Error;
use crate::progress;

/// Upload attempts before a failure on the server's side is reported.
pub const UPLOAD_ATTEMPTS: u32 = 5;

/// The pause after failed attempt `attempt` (1, 2, ...): 250 ms doubling, at most 4 s.
pub fn retry_delay(attempt: u32) -> Duration {
    (Duration::from_millis(250) * (1 << attempt.saturating_sub(1).min(4)))
        .min(Duration::from_secs(4))
}

/// The name a file is stored under: `--name`, else the file name of PATH.
pub fn name_for(path: &Path, name: Option<&str>) -> Result<String, Error> {
    if let Some(n) = name {
        return Ok(n.to_string());
    }
    match path.file_name().map(|n| n.to_str()) {
        Some(Some(n)) => Ok(n.to_string()),
        Some(None) => Err(Error::Usage(format!(
            "the file name of {} is not valid UTF-8; give one with --name",
            path.display()
        ))),
        None => Err(Error::Usage(format!(
            "{} has no file name; give one with --name",
            path.display()
        ))),
    }
}

/// What a deposit needs, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    pub path: PathBuf,
    pub name: String,
    pub replicas: u32,
    pub ack: deposito_api::gateway::Ack,
    pub wait: bool,
    pub timeout: Duration,
    /// The lifecycle, canonical.
    pub lifecycle: Option<String>,
    /// The retention lock, as given (the gateway reads it).
    pub retain_until: Option<String>,
}

/// Local checks, before anything is sent: name, replication level, readable regular file.
pub fn plan(args: &DepositArgs) -> Result<Plan, Error> {
    let name = name_for(&args.path, args.name.as_deref())?;
    validate_name(&name)?;
    validate_replicas(args.replicas)?;
    let lifecycle = args
        .lifecycle
        .as_deref()
        .map(Lifecycle::parse)
        .transpose()
        .map_err(|e| Error::Usage(e.to_string()))?;
    if let Some(until) = &args.retain_until {
        parse_time(until).map_err(|why| Error::Usage(format!("--retain-until: {why}")))?;
    }
    // The lifecycle's first bare number is the starting level, in place of --replicas.
    let replicas = lifecycle
        .as_ref()
        .map_or(args.replicas, |l| l.starting(args.replicas));
    let meta = std::fs::metadata(&args.path)
        .map_err(|e| Error::io(format!("cannot read {}", args.path.display()), &e))?;
    if !meta.is_file() {
        return Err(Error::Usage(format!(
            "{} is not a regular file",
            args.path.display()
        )));
    }
    Ok(Plan {
        path: args.path.clone(),
        name,
        replicas,
        ack: args.ack.into(),
        wait: !args.wait.no_wait,
        timeout: Duration::from_secs(args.wait.timeout),
        lifecycle: lifecycle.map(|l| l.to_string()),
        retain_until: args.retain_until.clone(),
    })
}

/// The summary line printed after a deposit.
pub fn summary(st: &FileStatus, waited: bool) -> String {
    if waited {
        format!(
            "deposited {}: {}/{} copies, {} bytes, sha256 {}",
            st.name, st.ready_replicas, st.replicas, st.size, st.sha256
        )
    } else {
        format!(
            "deposited {}: {}/{} copies durable (not waiting for the rest), {} bytes, sha256 {}",
            st.name, st.ready_replicas, st.replicas, st.size, st.sha256
        )
    }
}

/// Uploads (one pass over the file: it is hashed as it is sent) and (unless `plan.wait` is
/// false) waits. Returns the summary line.
pub async fn deposit(ctx: &Ctx, plan: &Plan) -> Result<String, Error> {
    // Fail fast (unreachable server, bad token) before sending a large file.
    match ctx.client.head_file(&ctx.namespace, &plan.name).await {
        Ok(_) => {}
        Err(e @ (Error::Unreachable { .. } | Error::Api { status: 401, .. })) => return Err(e),
        Err(_) => {}
    }
    let size = std::fs::metadata(&plan.path)
        .map_err(|e| Error::io(format!("cannot read {}", plan.path.display()), &e))?
        .len();
    let upload = Upload {
        body: UploadBody::File(&plan.path),
        size,
        sha256: None,
        ack: plan.ack,
        lifecycle: plan.lifecycle.as_deref(),
        retain_until: plan.retain_until.as_deref(),
    };
    let wait = plan.wait.then_some(plan.timeout);
    let st = upload_and_wait(ctx, &plan.name, plan.replicas, &upload, wait).await?;
    Ok(summary(&st, plan.wait))
}

/// Uploads content under `name` at `replicas` copies, checks the digest the gateway
/// acknowledges against the one sent, and (when `wait` gives a timeout) waits until exactly `replicas` verified
/// copies exist. Returns the last status.
pub async fn upload_and_wait(
    ctx: &Ctx,
    name: &str,
    replicas: u32,
    upload: &Upload<'_>,
    wait: Option<Duration>,
) -> Result<FileStatus, Error> {
    let c = &ctx.client;
    let ns = &ctx.namespace;
    // A failure on the server's side (a 502 or 503, a reset, a replica gone mid-transfer) is
    // retried with backoff, sending the content again: the same content is stored idempotently.
    let mut attempt = 1;
    let (st, sha256) = loop {
        let bar = progress::bytes_bar(Some(upload.size), "uploading");
        let bar2 = bar.clone();
        let uploaded = c
            .put_file(ns, name, replicas, upload, move |n| bar2.inc(n))
            .await;
        bar.finish_and_clear();
        match uploaded {
            Err(err) if err.is_transient() && attempt < UPLOAD_ATTEMPTS => {
                tokio::time::sleep(retry_delay(attempt)).await;
                attempt += 1;
            }
            other => break other?,
        }
    };
    if st.sha256 != sha256 && !st.sha256.is_empty() {
        return Err(Error::Protocol(format!(
            "the gateway acknowledged sha256 {} but the file's sha256 is {sha256}",
            st.sha256
        )));
    }
    match wait {
        None => Ok(st),
        Some(timeout) => super::wait::wait_converged(c, ns, name, st, timeout, Some(&sha256)).await,
    }
}

pub async fn run(global: &GlobalOpts, args: DepositArgs) -> Result<(), Error> {
    let plan = plan(&args)?;
    let ctx = Ctx::from_opts(global)?;
    let line = deposit(&ctx, &plan).await?;
    print_out(&format!("{line}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{AckMode, WaitArgs};

    fn args(path: &Path, name: Option<&str>, replicas: u32) -> DepositArgs {
        DepositArgs {
            path: path.to_path_buf(),
            replicas,
            name: name.map(Into::into),
            ack: AckMode::All,
            lifecycle: None,
            retain_until: None,
            wait: WaitArgs {
                no_wait: false,
                timeout: 600,
            },
        }
    }

    #[test]
    fn retry_delays_double_up_to_four_seconds() {
        let ms: Vec<u128> = (1..=7).map(|a| retry_delay(a).as_millis()).collect();
        assert_eq!(ms, vec![250, 500, 1000, 2000, 4000, 4000, 4000]);
    }

    #[test]
    fn plan_checks_name_replicas_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("data.bin");
        std::fs::write(&f, b"x").unwrap();
        let p = plan(&args(&f, None, 2)).unwrap();
        assert_eq!(p.name, "data.bin");
        assert_eq!(p.replicas, 2);
        assert_eq!(plan(&args(&f, Some("other"), 1)).unwrap().name, "other");
        let e = plan(&args(&f, Some("a/b"), 1)).unwrap_err().to_string();
        assert_eq!(e, "invalid name 'a/b': name contains '/'");
        let e = plan(&args(&f, None, 0)).unwrap_err().to_string();
        assert!(e.starts_with("invalid replicas 0"), "{e}");
        let e = plan(&args(&dir.path().join("missing"), None, 1))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("missing: no such file or directory"), "{e}");
        let e = plan(&args(dir.path(), Some("d"), 1))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("is not a regular file"), "{e}");
    }
}
