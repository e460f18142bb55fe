//! Bearer tokens kept in files (a Secret volume, the local data directory).

use std::path::{Path, PathBuf};

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
}

/// The token in `path`, without surrounding whitespace; an error when it can't be read or
/// is empty.
pub fn read_token_file(path: &Path) -> Result<String, TokenFileError> {
    let raw = std::fs::read_to_string(path).map_err(|source| TokenFileError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let token = raw.trim();
    if token.is_empty() {
        return Err(TokenFileError::Empty(path.to_path_buf()));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_refuses_empty_and_missing_files() {
        let dir = std::env::temp_dir().join(format!("deposito-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("token");
        std::fs::write(&path, "  abc\n").expect("write");
        assert_eq!(read_token_file(&path).expect("token"), "abc");
        std::fs::write(&path, " \n").expect("write");
        assert!(matches!(
            read_token_file(&path),
            Err(TokenFileError::Empty(_))
        ));
        assert!(matches!(
            read_token_file(&dir.join("missing")),
            Err(TokenFileError::Unreadable { .. })
        ));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
