//! Locating the workspace's binaries (other packages' `CARGO_BIN_EXE_*` are not available).

use std::path::PathBuf;

/// The directory holding the workspace binaries: `$DEPOSITO_BIN_DIR`, else the profile
/// directory of the running executable (`target/<profile>/`, also for `deps/` test binaries).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DEPOSITO_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// Path of the workspace binary `name`; panics with a build hint when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "binary {} not found; build the workspace binaries first: \
         `cargo build --release --bins` (or set DEPOSITO_BIN_DIR)",
        p.display()
    );
    p
}
