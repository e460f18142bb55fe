//! Who may do what through the gateway. Every client token carries a grant: the namespaces it
//! reaches (all, or a list) and whether it may change anything there. Mode-neutral: the full
//! access token (local mode's generated one, kube mode's from its Secret) plus the scoped
//! tokens of a tokens file, reloaded when the file changes (local mode: DATA_DIR/tokens by
//! default; kube mode: `--tokens-file`, which the chart mounts from `auth.scopedTokensSecret`).
//!
//! The tokens file has one token per line, `TOKEN NAMESPACES ACCESS`, where NAMESPACES is `*`
//! or a comma-separated list of namespaces and ACCESS is `read-only` or `read-write`; blank
//! lines and lines starting with `#` are ignored:
//!
//! ```text
//! # token                            namespaces      access
//! 6d0f4c1e9b2a47d8a3f05c7e21b9d4aa   team-a,team-b   read-write
//! 0b7e55c2d9a14f3e8c6a1d2f7e9b3c41   *               read-only
//! ```
//!
//! Routes that name a namespace need it in the grant; the others (the replica list and the
//! drain mark) need a grant of every namespace. GET and HEAD read; every other method writes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use deposito_api::names::validate_namespace;
use deposito_util::token::tokens_equal;
use deposito_util::token::{file_stamp, LiveToken, MIN_TOKEN_BYTES, RELOAD_EVERY};
use deposito_util::worker::{Next, StepError, Worker};

/// The namespaces a grant reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    All,
    Only(BTreeSet<String>),
}

/// What a grant allows inside its namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// A token's reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub namespaces: Namespaces,
    pub access: Access,
}

impl Grant {
    /// Every namespace, read and write: the generated token and kube mode's Secret token.
    pub fn full() -> Self {
        Grant {
            namespaces: Namespaces::All,
            access: Access::ReadWrite,
        }
    }

    /// Whether a request on `namespace` (`None`: a route outside namespaces) may go ahead.
    pub fn allows(&self, namespace: Option<&str>, write: bool) -> bool {
        if write && self.access == Access::ReadOnly {
            return false;
        }
        match (&self.namespaces, namespace) {
            (Namespaces::All, _) => true,
            (Namespaces::Only(set), Some(ns)) => set.contains(ns),
            (Namespaces::Only(_), None) => false,
        }
    }

    /// Why a request is refused, for the 403 body.
    pub fn refusal(&self, namespace: Option<&str>, write: bool) -> String {
        let verb = if write { "write" } else { "read" };
        match namespace {
            Some(ns)
                if write && self.access == Access::ReadOnly && self.allows(Some(ns), false) =>
            {
                format!("this token is read-only in namespace '{ns}'")
            }
            Some(ns) => format!("this token may not {verb} namespace '{ns}'"),
            None if write && self.access == Access::ReadOnly => {
                "this token is read-only".to_string()
            }
            None => "this route needs a token for every namespace".to_string(),
        }
    }
}

/// The S3 access key id of a client token: `DEP` and the first 17 characters of the
/// uppercase hex sha256 of the token (20 characters, like AWS key ids). The secret access key
/// is the token itself, so each token of the tokens file has its key pair with nothing more
/// to configure, and the id tells nothing about the token.
pub fn s3_access_key_id(token: &str) -> String {
    use sha2::Digest as _;
    let digest = hex::encode_upper(sha2::Sha256::digest(token.as_bytes()));
    format!("DEP{}", &digest[..17])
}

/// A line of the tokens file that can't be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tokens file line {line}: {reason}")]
pub struct TokensFileError {
    pub line: usize,
    pub reason: String,
}

/// Parses the tokens file format (see the module docs).
pub fn parse_tokens_file(text: &str) -> Result<Vec<(String, Grant)>, TokensFileError> {
    let mut entries: Vec<(String, Grant)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |reason: String| TokensFileError {
            line: i + 1,
            reason,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [token, namespaces, access] = fields[..] else {
            return Err(fail(format!(
                "expected TOKEN NAMESPACES ACCESS, found {} field(s)",
                fields.len()
            )));
        };
        if token.len() < MIN_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(fail(format!(
                "a token is at least {MIN_TOKEN_BYTES} printable ASCII characters \
                 (make one with: openssl rand -hex 32)"
            )));
        }
        if entries.iter().any(|(t, _)| t == token) {
            return Err(fail("this token is listed twice".to_string()));
        }
        let namespaces = if namespaces == "*" {
            Namespaces::All
        } else {
            let mut set = BTreeSet::new();
            for ns in namespaces.split(',') {
                validate_namespace(ns).map_err(|e| fail(e.to_string()))?;
                set.insert(ns.to_string());
            }
            Namespaces::Only(set)
        };
        let access = match access {
            "read-only" | "ro" => Access::ReadOnly,
            "read-write" | "rw" => Access::ReadWrite,
            other => {
                return Err(fail(format!(
                    "access '{other}' is neither read-only nor read-write"
                )))
            }
        };
        entries.push((token.to_string(), Grant { namespaces, access }));
    }
    Ok(entries)
}

/// The table of tokens the gateway accepts: a token with full access (which may follow its
/// file) plus the entries of a tokens file, swapped whole when the file changes.
#[derive(Debug)]
pub struct Tokens {
    full_access: Arc<LiveToken>,
    scoped: RwLock<Arc<Vec<(String, Grant)>>>,
}

impl Tokens {
    /// Only `token`, with full access.
    pub fn single(token: impl Into<String>) -> Self {
        Self::following(LiveToken::new(token.into(), Duration::ZERO))
    }

    /// Only the full-access `token`, whatever it holds at each request.
    pub fn following(token: Arc<LiveToken>) -> Self {
        Tokens {
            full_access: token,
            scoped: RwLock::new(Arc::new(Vec::new())),
        }
    }

    /// The grant of a presented token. Compares in constant time against every entry, so the
    /// answer's timing does not tell which tokens exist.
    pub fn grant(&self, presented: &str) -> Option<Grant> {
        let presented = presented.as_bytes();
        let mut found = self.full_access.accepts(presented).then(Grant::full);
        let scoped = self.scoped.read().expect("scoped tokens lock").clone();
        for (token, grant) in scoped.iter() {
            if tokens_equal(presented, token.as_bytes()) && found.is_none() {
                found = Some(grant.clone());
            }
        }
        found
    }

    /// The token and grant whose S3 access key id ([`s3_access_key_id`]) is `access_key`.
    /// The S3 API signs with the token as the secret key, so no second secret is stored.
    pub fn by_access_key(&self, access_key: &str) -> Option<(Arc<str>, Grant)> {
        let full = self.full_access.current();
        if tokens_equal(s3_access_key_id(&full).as_bytes(), access_key.as_bytes()) {
            return Some((full, Grant::full()));
        }
        let scoped = self.scoped.read().expect("scoped tokens lock").clone();
        scoped
            .iter()
            .find(|(token, _)| {
                tokens_equal(s3_access_key_id(token).as_bytes(), access_key.as_bytes())
            })
            .map(|(token, grant)| (Arc::from(token.as_str()), grant.clone()))
    }

    /// Replaces the scoped entries.
    pub fn set_scoped(&self, entries: Vec<(String, Grant)>) {
        *self.scoped.write().expect("scoped tokens lock") = Arc::new(entries);
    }

    /// Loads `path` (a missing file means no scoped tokens). An unusable file is an error.
    pub fn load(&self, path: &Path) -> anyhow::Result<()> {
        let entries = match std::fs::read_to_string(path) {
            Ok(text) => {
                parse_tokens_file(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => anyhow::bail!("cannot read tokens file {}: {e}", path.display()),
        };
        self.set_scoped(entries);
        Ok(())
    }
}

/// `tokens-reload`: reloads the tokens file into the table whenever it changes (checked
/// every [`RELOAD_EVERY`]). A file that can't be used leaves the previous table in force and
/// is logged as an error.
pub struct TokensReload {
    tokens: Arc<Tokens>,
    path: PathBuf,
    seen: Option<(SystemTime, u64)>,
}

impl TokensReload {
    /// Watches `path`, as loaded now into `tokens`.
    pub fn new(tokens: Arc<Tokens>, path: PathBuf) -> Self {
        let seen = file_stamp(&path);
        Self { tokens, path, seen }
    }
}

#[async_trait::async_trait]
impl Worker for TokensReload {
    fn name(&self) -> String {
        "tokens-reload".into()
    }

    fn first_step_after(&self) -> Duration {
        RELOAD_EVERY
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        let now = file_stamp(&self.path);
        if now != self.seen {
            self.seen = now;
            match self.tokens.load(&self.path) {
                Ok(()) => tracing::info!(file = %self.path.display(), "tokens file reloaded"),
                Err(err) => {
                    tracing::error!(error = %err, "tokens file not reloaded; the previous tokens stay in force");
                }
            }
        }
        Ok(Next::After(RELOAD_EVERY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(list: &[&str]) -> Namespaces {
        Namespaces::Only(list.iter().map(std::string::ToString::to_string).collect())
    }

    #[test]
    fn grants_table() {
        let ro_a = Grant {
            namespaces: only(&["team-a"]),
            access: Access::ReadOnly,
        };
        let rw_a = Grant {
            namespaces: only(&["team-a"]),
            access: Access::ReadWrite,
        };
        let ro_all = Grant {
            namespaces: Namespaces::All,
            access: Access::ReadOnly,
        };
        let cases = [
            (&ro_a, Some("team-a"), false, true),
            (&ro_a, Some("team-a"), true, false),
            (&ro_a, Some("team-b"), false, false),
            (&ro_a, None, false, false),
            (&rw_a, Some("team-a"), true, true),
            (&rw_a, Some("team-b"), true, false),
            (&rw_a, None, true, false),
            (&ro_all, Some("any"), false, true),
            (&ro_all, Some("any"), true, false),
            (&ro_all, None, false, true),
            (&ro_all, None, true, false),
        ];
        for (grant, ns, write, allowed) in cases {
            assert_eq!(grant.allows(ns, write), allowed, "{grant:?} {ns:?} {write}");
        }
        assert!(Grant::full().allows(None, true));
        assert_eq!(
            ro_a.refusal(Some("team-a"), true),
            "this token is read-only in namespace 'team-a'"
        );
        assert_eq!(
            rw_a.refusal(Some("team-b"), false),
            "this token may not read namespace 'team-b'"
        );
    }

    #[test]
    fn tokens_file_parses_and_refuses_bad_lines() {
        let text =
            "# comment\n\n  aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa team-a,team-b rw\nbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb * read-only\n";
        let entries = parse_tokens_file(text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].1.namespaces, only(&["team-a", "team-b"]));
        assert_eq!(entries[1].1.access, Access::ReadOnly);
        let cases: [(&str, usize, &str); 6] = [
            ("short team-a rw", 1, "at least 32"),
            (&format!("{} team-a rw", "a".repeat(31)), 1, "at least 32"),
            ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa team-a", 1, "found 2"),
            ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa Team_A rw", 1, "DNS label"),
            ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa team-a admin", 1, "admin"),
            (
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa team-a rw\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa team-b ro",
                2,
                "twice",
            ),
        ];
        for (bad, line, needle) in cases {
            let err = parse_tokens_file(bad).unwrap_err();
            assert_eq!(err.line, line, "{bad}");
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn the_full_access_token_and_scoped_tokens_are_found() {
        let tokens = Tokens::single("generated-token-0123456789");
        assert_eq!(
            tokens.grant("generated-token-0123456789"),
            Some(Grant::full())
        );
        assert_eq!(tokens.grant("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), None);
        tokens.set_scoped(parse_tokens_file("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa team-a ro").unwrap());
        assert_eq!(
            tokens
                .grant("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
                .map(|g| g.access),
            Some(Access::ReadOnly)
        );
        assert_eq!(
            tokens.grant("aaaaaaaaaaaaaaa"),
            None,
            "a prefix is no token"
        );
        tokens.set_scoped(Vec::new());
        assert_eq!(
            tokens.grant("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            None,
            "revoked"
        );
    }
}
