//! `DATA_DIR/s3-credentials`: the full-access S3 key pair in the AWS shared-credentials
//! format (profile `deposito`, mode 0600), so that
//! `AWS_SHARED_CREDENTIALS_FILE=DATA_DIR/s3-credentials aws --profile deposito
//! --endpoint-url http://127.0.0.1:7900 s3 ls` works with nothing else. Written at each
//! start from the client token in force, and again when the token file changes (the new key
//! pair works at once; the old one stops with the old token).

use std::path::{Path, PathBuf};

use crate::gateway::s3::s3_access_key_id;

/// The profile name in the file.
pub const PROFILE: &str = "deposito";

/// The file's text for `token`.
pub fn render(token: &str) -> String {
    format!(
        "# Deposito S3 key pair (full access), written by deposito-operator local.\n\
         # The secret key is the client token; this file follows the token file.\n\
         [{PROFILE}]\naws_access_key_id = {}\naws_secret_access_key = {token}\n",
        s3_access_key_id(token)
    )
}

/// Writes the file for `token` into `data_dir`; its path.
pub fn write(data_dir: &Path, token: &str) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("s3-credentials");
    super::private::write_private(&path, &render(token))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_an_aws_profile_readable_only_by_its_owner() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let token = "t".repeat(64);
        let path = write(dir.path(), &token).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("[deposito]\n"), "{text}");
        assert!(text.contains(&format!(
            "aws_access_key_id = {}\n",
            s3_access_key_id(&token)
        )));
        assert!(text.contains(&format!("aws_secret_access_key = {token}\n")));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(s3_access_key_id(&token).len(), 20);
    }
}
