//! Local mode keeps its data to the user who runs it: the process's umask becomes 077 (so the
//! catalog, the token files, the replicas' folders and every copy are created 0700/0600; the
//! replica processes it starts inherit it), a data folder readable by others (made by an older
//! version) is narrowed to 0700, and a data folder that others can write to is refused with the
//! command that fixes it: whoever can write there could replace the catalog or the copies.
//! Secrets (tokens, keys) are written 0600 explicitly ([`write_private`]), umask or not.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context as _;
use nix::sys::stat::{umask, Mode};

/// Writes `text` to `path` through a temporary file beside it, mode 0600 whatever the umask,
/// synced before the rename: a reader sees the old file or the whole new one.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Sets the umask to 077, then creates `dir` (0700) or checks and narrows an existing one.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    umask(Mode::from_bits_truncate(0o077));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("cannot read data dir {}", dir.display()))?
        .permissions()
        .mode()
        & 0o7777;
    check_mode(dir, mode)?;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(
            || format!("cannot make data dir {} private (chmod 700)", dir.display()),
        )?;
        println!(
            "deposito: data dir {} was readable by other users (mode {mode:o}); now 0700",
            dir.display()
        );
    }
    Ok(())
}

/// Refuses a folder that users other than its owner can write to.
fn check_mode(dir: &Path, mode: u32) -> anyhow::Result<()> {
    if mode & 0o022 != 0 {
        anyhow::bail!(
            "data dir {} is writable by other users (mode {mode:o}), who could replace the \
             catalog or the copies; fix it with: chmod go-w {}",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_others_can_write_to_are_refused_with_the_fix() {
        for mode in [0o777, 0o775, 0o757, 0o1777, 0o720, 0o702] {
            let err = check_mode(Path::new("/d"), mode).unwrap_err().to_string();
            assert!(err.contains("chmod go-w /d"), "{mode:o}: {err}");
        }
        for mode in [0o700, 0o755, 0o750, 0o500] {
            assert!(check_mode(Path::new("/d"), mode).is_ok(), "{mode:o}");
        }
    }
}
