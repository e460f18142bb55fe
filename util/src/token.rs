//! Bearer tokens kept in files (a Secret volume, the local data directory), and tokens that
//! follow their file: [`LiveToken`] holds the token in force (and, for a grace period after a
//! change, the one before it), [`TokenFileReload`] rereads the file when it changes.
//!
//! Why a grace period: a Secret updated in place reaches each pod's volume on its own
//! schedule (a real kubelet takes up to a minute or two), so the operator and each replica
//! see the new replica token at different moments. The usual two-phase rotation follows from
//! one rule applied by everyone: after seeing the change, accept both tokens for the grace
//! period, and keep presenting the previous one for the first half of it. Whoever has not
//! seen the change yet still presents and accepts the old token only, which everyone
//! accepts; once the first half has passed for everyone, everyone has both and presents the
//! new one; at the end of the grace the old token is refused. This holds as long as every
//! pod sees the change within half the grace (600 s by default).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use subtle::ConstantTimeEq;

use crate::worker::{Next, StepError, Worker};

/// The default grace for a replaced token (`--previous-token-grace-secs`).
pub const DEFAULT_PREVIOUS_TOKEN_GRACE_SECS: u64 = 600;

/// The shortest token the operator accepts from configuration (a file, a variable, a line
/// of the scoped tokens file): 32 bytes, the length of a 128-bit random value in hex. The
/// tokens Deposito generates are 64 hex characters.
pub const MIN_TOKEN_BYTES: usize = 32;

/// How often [`TokenFileReload`] looks at its file.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Why a token file can't be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token file {0} is empty")]
    Empty(PathBuf),
    #[error("the token in {path} is too short: {reason}")]
    Weak { path: PathBuf, reason: WeakToken },
}

/// Why a configured token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakToken {
    #[error("{len} bytes, the minimum is {MIN_TOKEN_BYTES} (make one with: openssl rand -hex 32)")]
    TooShort { len: usize },
}

/// Compares a presented secret with a token in constant time (the `subtle` crate), so
/// timing reveals neither how much matched nor, beyond the length, anything of the token.
pub fn tokens_equal(presented: &[u8], token: &[u8]) -> bool {
    presented.ct_eq(token).into()
}

/// Refuses a client token equal to the replica token: whoever holds the client token could
/// then act as a replica (register, report, delete copies).
pub fn ensure_distinct(client: &str, replica: &str) -> Result<(), SameTokens> {
    if tokens_equal(client.as_bytes(), replica.as_bytes()) {
        return Err(SameTokens);
    }
    Ok(())
}

/// The client token and the replica token are the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the client token and the replica token are the same; give each its own \
     (make one with: openssl rand -hex 32)"
)]
pub struct SameTokens;

/// Refuses a token shorter than [`MIN_TOKEN_BYTES`].
pub fn check_token_strength(token: &str) -> Result<(), WeakToken> {
    if token.len() < MIN_TOKEN_BYTES {
        return Err(WeakToken::TooShort { len: token.len() });
    }
    Ok(())
}

/// The token in `path`, without surrounding whitespace; an error when it can't be read, is
/// empty or is shorter than [`MIN_TOKEN_BYTES`].
pub fn read_token_file(path: &Path) -> Result<String, TokenFileError> {
    let raw = std::fs::read_to_string(path).map_err(|source| TokenFileError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let token = raw.trim();
    if token.is_empty() {
        return Err(TokenFileError::Empty(path.to_path_buf()));
    }
    check_token_strength(token).map_err(|reason| TokenFileError::Weak {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(token.to_string())
}

/// A bearer token that may change while the process runs.
#[derive(Debug)]
pub struct LiveToken {
    grace: Duration,
    state: RwLock<TokenState>,
}

#[derive(Debug)]
struct TokenState {
    current: Arc<str>,
    /// The token replaced last and when, accepted until `grace` has passed.
    previous: Option<(Arc<str>, Instant)>,
}

impl LiveToken {
    /// `token`, with the previous one accepted for `grace` after a change (zero: refused
    /// at once).
    pub fn new(token: impl Into<Arc<str>>, grace: Duration) -> Arc<LiveToken> {
        Arc::new(LiveToken {
            grace,
            state: RwLock::new(TokenState {
                current: token.into(),
                previous: None,
            }),
        })
    }

    /// The token in force (the newest one seen).
    pub fn current(&self) -> Arc<str> {
        self.state.read().expect("token lock").current.clone()
    }

    /// The token to present to others: the previous one during the first half of the grace
    /// after a change (peers that have not seen the change yet accept only that one), the
    /// current one otherwise.
    pub fn presented(&self) -> Arc<str> {
        let state = self.state.read().expect("token lock");
        match &state.previous {
            Some((previous, since)) if since.elapsed() < self.grace / 2 => previous.clone(),
            _ => state.current.clone(),
        }
    }

    /// Whether `presented` is the current token or, within the grace period, the previous
    /// one. Constant time in the tokens' contents.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let state = self.state.read().expect("token lock");
        let current: bool = presented.ct_eq(state.current.as_bytes()).into();
        let previous: bool = state.previous.as_ref().is_some_and(|(token, since)| {
            let matches: bool = presented.ct_eq(token.as_bytes()).into();
            matches && since.elapsed() < self.grace
        });
        current | previous
    }

    /// Puts `token` in force; the one it replaces stays accepted for the grace period.
    /// Returns false (and changes nothing) when `token` is already the current one.
    pub fn replace(&self, token: &str) -> bool {
        let mut state = self.state.write().expect("token lock");
        if &*state.current == token {
            return false;
        }
        let old = std::mem::replace(&mut state.current, Arc::from(token));
        state.previous = Some((old, Instant::now()));
        true
    }
}

/// What identifies a version of a file (a Secret volume swaps a symlink, which changes the
/// target's modification time and usually its size).
pub fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// What [`TokenFileReload::on_change`] calls with a new token.
type TokenHook = Box<dyn Fn(&str) + Send + Sync>;

/// `token-reload-<what>`: rereads a token file whenever it changes (checked every
/// [`RELOAD_EVERY`]) and puts the new token in force. A file that can't be read, is empty or
/// holds a token that is too short leaves the token in force and is logged as an error.
pub struct TokenFileReload {
    what: &'static str,
    token: Arc<LiveToken>,
    path: PathBuf,
    seen: Option<(SystemTime, u64)>,
    on_change: Option<TokenHook>,
}

impl TokenFileReload {
    /// Follows `path`, whose content is in `token` now; `what` names the token in logs and
    /// in the worker's name (`client`, `replica`).
    pub fn new(what: &'static str, token: Arc<LiveToken>, path: PathBuf) -> Self {
        let seen = file_stamp(&path);
        Self {
            what,
            token,
            path,
            seen,
            on_change: None,
        }
    }

    /// Also calls `hook` with each new token once it is in force (to rewrite a file derived
    /// from it, say).
    pub fn on_change(mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_change = Some(Box::new(hook));
        self
    }
}

#[async_trait::async_trait]
impl Worker for TokenFileReload {
    fn name(&self) -> String {
        format!("token-reload-{}", self.what)
    }

    fn first_step_after(&self) -> Duration {
        RELOAD_EVERY
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        let now = file_stamp(&self.path);
        if now != self.seen {
            self.seen = now;
            match read_token_file(&self.path) {
                Ok(token) => {
                    if self.token.replace(&token) {
                        tracing::info!(file = %self.path.display(), token = self.what, "token file changed: the new token is in force");
                        if let Some(hook) = &self.on_change {
                            hook(&token);
                        }
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, token = self.what, "token file not reloaded; the token in force stays");
                }
            }
        }
        Ok(Next::After(RELOAD_EVERY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_token_is_accepted_only_within_the_grace() {
        let token = LiveToken::new("old-token", Duration::from_millis(300));
        assert!(token.accepts(b"old-token"));
        assert!(!token.accepts(b"new-token"));
        assert!(
            !token.replace("old-token"),
            "the same token changes nothing"
        );
        assert_eq!(&*token.presented(), "old-token");
        assert!(token.replace("new-token"));
        assert_eq!(&*token.current(), "new-token");
        assert_eq!(&*token.presented(), "old-token", "first half of the grace");
        assert!(token.accepts(b"new-token"));
        assert!(token.accepts(b"old-token"), "within the grace");
        assert!(!token.accepts(b"other"));
        assert!(!token.accepts(b""));
        std::thread::sleep(Duration::from_millis(175));
        assert_eq!(&*token.presented(), "new-token", "second half of the grace");
        assert!(token.accepts(b"old-token"), "within the grace");
        std::thread::sleep(Duration::from_millis(175));
        assert!(!token.accepts(b"old-token"), "after the grace");
        assert!(token.accepts(b"new-token"));
        assert_eq!(&*token.presented(), "new-token");
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(tokens_equal(b"secret", b"secret"));
        assert!(!tokens_equal(b"secret", b"secreT"));
        assert!(!tokens_equal(b"secret", b"secret2"));
        assert!(!tokens_equal(b"", b"x"));
        assert!(tokens_equal(b"", b""));
    }

    #[test]
    fn without_a_grace_the_previous_token_is_refused_at_once() {
        let token = LiveToken::new("first-token", Duration::ZERO);
        token.replace("second-token");
        assert!(!token.accepts(b"first-token"));
        assert!(token.accepts(b"second-token"));
        assert_eq!(&*token.presented(), "second-token");
    }

    #[tokio::test]
    async fn the_reload_worker_follows_the_file_and_keeps_the_token_on_a_bad_file() {
        const FIRST: &str = "first-token-0123456789abcdef0123";
        const SECOND: &str = "second-token-0123456789abcdef0123";
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{FIRST}\n")).expect("write");
        let token = LiveToken::new(FIRST, Duration::from_secs(60));
        let mut worker = TokenFileReload::new("test", token.clone(), path.clone());
        assert_eq!(worker.name(), "token-reload-test");
        worker.step().await.expect("step");
        assert_eq!(&*token.current(), FIRST, "unchanged file");
        std::fs::write(&path, format!("{SECOND}\n")).expect("write");
        worker.step().await.expect("step");
        assert_eq!(&*token.current(), SECOND);
        std::fs::write(&path, "  \n").expect("write");
        worker.step().await.expect("step");
        assert_eq!(&*token.current(), SECOND, "an empty file is ignored");
        std::fs::write(&path, "short-token\n").expect("write");
        worker.step().await.expect("step");
        assert_eq!(&*token.current(), SECOND, "a short token is ignored");
    }

    #[test]
    fn trims_and_refuses_empty_short_and_missing_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("token");
        let long = "a".repeat(MIN_TOKEN_BYTES);
        std::fs::write(&path, format!("  {long}\n")).expect("write");
        assert_eq!(read_token_file(&path).expect("token"), long);
        std::fs::write(&path, " \n").expect("write");
        assert!(matches!(
            read_token_file(&path),
            Err(TokenFileError::Empty(_))
        ));
        std::fs::write(&path, format!("{}\n", &long[1..])).expect("write");
        let err = read_token_file(&path).expect_err("31 bytes");
        assert!(
            matches!(
                err,
                TokenFileError::Weak {
                    reason: WeakToken::TooShort { len: 31 },
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("the minimum is 32"), "{err}");
        assert!(matches!(
            read_token_file(&dir.path().join("missing")),
            Err(TokenFileError::Unreadable { .. })
        ));
    }
}
