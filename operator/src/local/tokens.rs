//! Bearer tokens of the local system: read from a file, or generated once and kept.

use std::path::Path;

use anyhow::Context;
use deposito_util::token::{check_token_strength, read_token_file, TokenFileError};
use rand::RngCore;

/// The token from the environment variable `env` when set (compose passes tokens so), else
/// from [`load_or_create`]. A token shorter than 32 bytes is refused either way.
pub fn from_env_or_file(
    env: &str,
    explicit: Option<&Path>,
    default_path: &Path,
) -> anyhow::Result<String> {
    match std::env::var(env) {
        Ok(token) if !token.trim().is_empty() => {
            let token = token.trim();
            check_token_strength(token).with_context(|| format!("the token of {env}"))?;
            Ok(token.to_string())
        }
        _ => load_or_create(explicit, default_path),
    }
}

/// Reads the token from `explicit` if given, else from `default_path`, creating it there (mode
/// 0600, 32 random bytes as hex) when missing.
pub fn load_or_create(explicit: Option<&Path>, default_path: &Path) -> anyhow::Result<String> {
    let path = explicit.unwrap_or(default_path);
    match read_token_file(path) {
        Ok(token) => Ok(token),
        Err(TokenFileError::Unreadable { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && explicit.is_none() =>
        {
            let mut bytes = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut bytes);
            let token = hex::encode(bytes);
            super::private::write_private(path, &format!("{token}\n"))?;
            Ok(token)
        }
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_generated_token_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let first = load_or_create(None, &path).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_or_create(None, &path).unwrap(), first);
        assert!(load_or_create(Some(&dir.path().join("missing")), &path).is_err());
    }
}
