//! `deposito selftest`: an end-to-end check of a running system in one invocation, for
//! `helm test` (the image has no shell). It generates SIZE random bytes in memory (no scratch
//! file), deposits them under a fresh name `deposito-selftest-<16 hex>.bin` at N copies with
//! `ack=all`, waits until the gateway reports the file Ready with N ready copies, retrieves it
//! and compares every byte and the sha256 with what was sent, then deletes it and waits until
//! it is gone. Each step prints one line, and the last `selftest ok`.
//!
//! A failure ends the run with one line naming the step (`selftest failed at retrieve: ...`),
//! after an attempt to delete the test file, and a non-zero exit. The steps are the commands'
//! own code: [`deposit::upload_and_wait`], [`retrieve::retrieve_bytes`], [`files::rm`].

use std::time::Duration;

use deposito_api::gateway::{Ack, FileStatus, Phase};
use sha2::{Digest, Sha256};

use super::{deposit, files, print_out, retrieve, validate_replicas, Ctx};
use crate::api::{Upload, UploadBody};
use crate::cli::{GlobalOpts, SelftestArgs};
use crate::error::Error;
use crate::format::describe_status;

/// Prefix of the test file's name.
pub const NAME_PREFIX: &str = "deposito-selftest-";
/// Longest wait for the deletion of the test file after a failed step.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The steps, as failures name them.
const DEPOSIT: &str = "deposit";
const RETRIEVE: &str = "retrieve";
const DELETE: &str = "delete";

/// 32 bytes of entropy: the standard library's random hash keys (drawn from the operating
/// system once per thread), the clock and the process id.
fn seed() -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = Sha256::new();
    for i in 0..4u64 {
        let mut keyed = std::collections::hash_map::RandomState::new().build_hasher();
        keyed.write_u64(i);
        h.update(keyed.finish().to_le_bytes());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(now.as_nanos().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.finalize().into()
}

/// `size` pseudo-random bytes from `seed`: sha256 of the seed, a tag and a block counter.
pub fn content(seed: &[u8; 32], size: u64) -> Vec<u8> {
    let size = usize::try_from(size).expect("--size is at most 1 GiB");
    let mut out = Vec::with_capacity(size);
    let mut block = 0u64;
    while out.len() < size {
        let digest = Sha256::new()
            .chain_update(seed)
            .chain_update(b"content")
            .chain_update(block.to_le_bytes())
            .finalize();
        let take = digest.len().min(size - out.len());
        out.extend_from_slice(&digest[..take]);
        block += 1;
    }
    out
}

/// The test file's name: [`NAME_PREFIX`], 16 hex digits derived from `seed`, `.bin`.
pub fn test_name(seed: &[u8; 32]) -> String {
    let digest = Sha256::new()
        .chain_update(seed)
        .chain_update(b"name")
        .finalize();
    format!("{NAME_PREFIX}{}.bin", hex::encode(&digest[..8]))
}

/// Err unless the deposited file is Ready with `replicas` ready copies of the content sent.
fn check_ready(st: &FileStatus, replicas: u32, sha256: &str, size: u64) -> Result<(), Error> {
    if st.phase == Phase::Ready
        && st.replicas == replicas
        && st.ready_replicas == replicas
        && st.sha256 == sha256
        && st.size == size
    {
        Ok(())
    } else {
        Err(Error::Protocol(format!(
            "{} is not Ready with {replicas} copies of the {size} bytes sent (sha256 {sha256}): {}, sha256 {}, {} bytes",
            st.name,
            describe_status(st),
            st.sha256,
            st.size
        )))
    }
}

/// Err unless `got` (whose verified sha256 is `got_sha256`) is exactly `sent`.
fn compare(
    name: &str,
    sent: &[u8],
    sha256: &str,
    got: &[u8],
    got_sha256: &str,
) -> Result<(), Error> {
    let differs = |what: String| {
        Err(Error::Protocol(format!(
            "{name} came back different: {what}"
        )))
    };
    if got.len() != sent.len() {
        return differs(format!("{} bytes instead of {}", got.len(), sent.len()));
    }
    if let Some(at) = sent.iter().zip(got).position(|(a, b)| a != b) {
        return differs(format!("first difference at byte {at} of {}", sent.len()));
    }
    if got_sha256 != sha256 {
        return differs(format!("sha256 {got_sha256} instead of {sha256}"));
    }
    Ok(())
}

/// Tags an error with the step it happened in.
fn at(step: &'static str) -> impl Fn(Error) -> (&'static str, Error) {
    move |e| (step, e)
}

/// Deposit, wait, retrieve, compare, delete, wait; one line printed per step.
async fn steps(
    ctx: &Ctx,
    name: &str,
    data: &[u8],
    replicas: u32,
    timeout: Duration,
) -> Result<(), (&'static str, Error)> {
    let size = data.len() as u64;
    let sha256 = deposito_api::sha256_hex(data);
    let upload = Upload {
        body: UploadBody::Memory(data),
        size,
        sha256: Some(&sha256),
        ack: Ack::All,
        lifecycle: None,
        retain_until: None,
    };
    let st = deposit::upload_and_wait(ctx, name, replicas, &upload, Some(timeout))
        .await
        .map_err(at(DEPOSIT))?;
    check_ready(&st, replicas, &sha256, size).map_err(at(DEPOSIT))?;
    print_out(&format!(
        "deposited {name}: {size} bytes, sha256 {sha256} ({} copies ready)\n",
        st.ready_replicas
    ))
    .map_err(at(DEPOSIT))?;

    let (got, got_sha256) = retrieve::retrieve_bytes(ctx, name)
        .await
        .map_err(at(RETRIEVE))?;
    compare(name, data, &sha256, &got, &got_sha256).map_err(at(RETRIEVE))?;
    print_out(&format!(
        "retrieved {name}: {size} bytes, sha256 {got_sha256}, identical\n"
    ))
    .map_err(at(RETRIEVE))?;

    let line = files::rm(ctx, name, Some(timeout))
        .await
        .map_err(at(DELETE))?;
    print_out(&format!("{line}\n")).map_err(at(DELETE))
}

/// After a failed step: deletes the test file and waits (a bounded time) until it is gone.
/// Returns what to add to the failure's line: nothing when there was nothing to delete.
async fn cleanup(ctx: &Ctx, name: &str, timeout: Duration, failure: &Error) -> String {
    if failure.is_status(401) || failure.is_status(403) {
        // The token was refused: nothing was stored with it, and a deletion would be refused.
        return String::new();
    }
    match files::rm(ctx, name, Some(timeout.min(CLEANUP_TIMEOUT))).await {
        Ok(line) => format!("; cleanup: {line}"),
        Err(e) if e.is_status(404) => String::new(),
        Err(e) => format!("; cleanup failed, {name} may remain: {}", e.one_line()),
    }
}

pub async fn run(global: &GlobalOpts, args: SelftestArgs) -> Result<(), Error> {
    validate_replicas(args.replicas)?;
    let ctx = Ctx::from_opts(global)?;
    let seed = seed();
    let name = test_name(&seed);
    let data = content(&seed, args.size);
    let timeout = Duration::from_secs(args.timeout);
    if let Err((step, e)) = steps(&ctx, &name, &data, args.replicas, timeout).await {
        let cleanup = cleanup(&ctx, &name, timeout, &e).await;
        return Err(Error::Selftest {
            step,
            source: Box::new(e),
            cleanup,
        });
    }
    print_out("selftest ok\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_fresh_and_valid() {
        let (a, b) = (seed(), seed());
        assert_ne!(a, b);
        let name = test_name(&a);
        assert_ne!(name, test_name(&b));
        assert!(
            name.starts_with(NAME_PREFIX) && name.ends_with(".bin"),
            "{name}"
        );
        let hex = &name[NAME_PREFIX.len()..name.len() - 4];
        assert_eq!(hex.len(), 16);
        assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()), "{name}");
        assert!(super::super::validate_name(&name).is_ok());
    }

    #[test]
    fn content_has_the_size_and_depends_on_the_seed() {
        let s = seed();
        for size in [1, 31, 32, 33, 65536] {
            assert_eq!(content(&s, size).len() as u64, size);
        }
        assert_eq!(content(&s, 100), content(&s, 100));
        assert_ne!(content(&s, 100), content(&seed(), 100));
        assert_eq!(content(&s, 40)[..], content(&s, 100)[..40]);
    }

    #[test]
    fn comparison_names_the_difference() {
        let sent = b"abcdef";
        let sha = deposito_api::sha256_hex(sent);
        assert!(compare("f", sent, &sha, sent, &sha).is_ok());
        let e = compare("f", sent, &sha, b"abcxef", &sha).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("f came back different: first difference at byte 3 of 6"),
            "{e}"
        );
        let e = compare("f", sent, &sha, b"abc", &sha).unwrap_err();
        assert!(e.to_string().ends_with("3 bytes instead of 6"), "{e}");
        let e = compare("f", sent, &sha, sent, "00").unwrap_err();
        assert!(e.to_string().contains("sha256 00 instead of"), "{e}");
    }

    #[test]
    fn failures_name_the_step_on_one_line() {
        let e = Error::Selftest {
            step: DEPOSIT,
            source: Box::new(Error::Api {
                status: 401,
                code: "unauthorized".into(),
                message: "bad token".into(),
            }),
            cleanup: String::new(),
        };
        assert_eq!(
            e.one_line(),
            "selftest failed at deposit: 401 unauthorized: bad token"
        );
        assert_eq!(e.exit_code(), 1);
    }
}
