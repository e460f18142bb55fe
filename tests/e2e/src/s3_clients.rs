//! The S3 clients the S3 suites drive (installed by `tests/s3/clients`: a virtualenv with
//! the aws CLI, boto3 and s3cmd; rclone from Debian), and the access key id of a token.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The folder of the S3 clients' virtualenv (installed on first use).
pub fn clients() -> PathBuf {
    let script = suite_dir().join("clients");
    let out = Command::new(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// `tests/s3`: the suites and the clients' installer.
pub fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../s3")
}

/// The S3 access key id of a token, as docs/s3.md defines it: `DEP` and the first 17
/// characters of the uppercase hex sha256 of the token.
pub fn access_key_id(token: &str) -> String {
    use sha2::Digest as _;
    let hex = hex::encode_upper(sha2::Sha256::digest(token.as_bytes()));
    format!("DEP{}", &hex[..17])
}

/// An AWS shared-credentials file for `token` (profile `deposito`) written to `path`.
pub fn write_credentials(path: &Path, token: &str) {
    std::fs::write(
        path,
        format!(
            "[deposito]\naws_access_key_id = {}\naws_secret_access_key = {token}\n",
            access_key_id(token)
        ),
    )
    .unwrap();
}
