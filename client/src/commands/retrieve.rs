//! `deposito retrieve NAME`: stream to a temp file beside the destination (or to stdout),
//! hash while writing, verify against the announced sha256, then fsync and rename.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{print_out, validate_name, Ctx};
use crate::api::Download;
use crate::cli::{GlobalOpts, RetrieveArgs};
use crate::error::{from_reqwest, Error};
use crate::progress;

/// Where the bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Stdout,
    File(PathBuf),
}

/// `-o` resolution: `-` is stdout, a directory gets `DIR/NAME`, nothing means `./NAME`.
pub fn dest_for(name: &str, output: Option<&Path>) -> Dest {
    match output {
        None => Dest::File(PathBuf::from(".").join(name)),
        Some(p) if p.as_os_str() == "-" => Dest::Stdout,
        Some(p) if p.is_dir() => Dest::File(p.join(name)),
        Some(p) => Dest::File(p.to_path_buf()),
    }
}

/// Removes the temp file unless disarmed (also on error, panic or Ctrl-C).
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn temp_path(dir: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    dir.join(format!(
        ".deposito-{}-{:08x}.tmp",
        std::process::id(),
        nanos
    ))
}

/// Starts the download of `name`; content without an announced sha256 is refused. Returns the
/// download and that digest.
async fn start_download(ctx: &Ctx, name: &str) -> Result<(Download, String), Error> {
    validate_name(name)?;
    let dl = ctx.client.get_file(&ctx.namespace, name).await?;
    let expected = dl.sha256.clone().ok_or_else(|| {
        Error::Protocol(format!(
            "the gateway sent {name} without a sha256 (no ETag or x-deposito-sha256); refusing unverified content"
        ))
    })?;
    Ok((dl, expected))
}

/// Streams `dl` into `writer` with a "downloading" bar, hashing as it goes, then checks the
/// length against `Content-Length` and the digest against `expected`. `write_ctx` describes the
/// destination in write errors. Returns the number of bytes and the verified sha256.
async fn receive<W: tokio::io::AsyncWrite + Unpin>(
    ctx: &Ctx,
    name: &str,
    dl: Download,
    expected: String,
    writer: &mut W,
    write_ctx: &str,
) -> Result<(u64, String), Error> {
    let what = format!("download of {name}");
    let server = ctx.client.server();
    let bar = progress::bytes_bar(dl.size, "downloading");
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut stream = dl.response.bytes_stream();
    let copied: Result<(), Error> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| from_reqwest(e, server, &what))?;
            hasher.update(&chunk);
            writer
                .write_all(&chunk)
                .await
                .map_err(|e| Error::io(write_ctx, &e))?;
            total += chunk.len() as u64;
            bar.set_position(total);
        }
        writer.flush().await.map_err(|e| Error::io(write_ctx, &e))?;
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    copied?;
    if let Some(len) = dl.size {
        if len != total {
            return Err(Error::Transport {
                what,
                reason: format!("body cut short: {total} of {len} bytes"),
            });
        }
    }
    let actual = hex::encode(hasher.finalize());
    if actual != expected {
        return Err(Error::DigestMismatch {
            name: name.to_string(),
            expected,
            actual,
        });
    }
    Ok((total, actual))
}

/// Downloads `name` into memory. Returns its bytes and the verified sha256.
pub async fn retrieve_bytes(ctx: &Ctx, name: &str) -> Result<(Vec<u8>, String), Error> {
    let (dl, expected) = start_download(ctx, name).await?;
    // The announced length only sizes the buffer up front, within reason.
    let capacity = dl.size.unwrap_or(0).min(64 << 20);
    let mut buf = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    let (_, sha256) = receive(
        ctx,
        name,
        dl,
        expected,
        &mut buf,
        "cannot buffer the download",
    )
    .await?;
    Ok((buf, sha256))
}

/// Downloads `name` to `dest`. Returns the number of bytes and the verified sha256.
pub async fn retrieve(ctx: &Ctx, name: &str, dest: &Dest) -> Result<(u64, String), Error> {
    let (dl, expected) = start_download(ctx, name).await?;
    let (mut writer, guard): (
        Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
        Option<TempGuard>,
    ) = match dest {
        Dest::Stdout => (Box::new(tokio::io::stdout()), None),
        Dest::File(path) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let tmp = temp_path(&dir);
            let file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .await
                .map_err(|e| Error::io(format!("cannot create a file in {}", dir.display()), &e))?;
            (
                Box::new(file),
                Some(TempGuard {
                    path: tmp,
                    armed: true,
                }),
            )
        }
    };
    let write_ctx = match dest {
        Dest::Stdout => "cannot write to stdout".to_string(),
        Dest::File(p) => format!("cannot write {}", p.display()),
    };
    let (total, actual) = receive(ctx, name, dl, expected, &mut writer, &write_ctx).await?;
    if let (Dest::File(path), Some(mut guard)) = (dest, guard) {
        let file = writer;
        drop(file);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&guard.path)
            .map_err(|e| Error::io(write_ctx.clone(), &e))?;
        f.sync_all().map_err(|e| Error::io(write_ctx.clone(), &e))?;
        drop(f);
        std::fs::rename(&guard.path, path).map_err(|e| Error::io(write_ctx.clone(), &e))?;
        guard.armed = false;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
    }
    Ok((total, actual))
}

pub async fn run(global: &GlobalOpts, args: RetrieveArgs) -> Result<(), Error> {
    validate_name(&args.name)?;
    let dest = dest_for(&args.name, args.output.as_deref());
    let ctx = Ctx::from_opts(global)?;
    let (size, sha) = retrieve(&ctx, &args.name, &dest).await?;
    match dest {
        Dest::Stdout => Ok(()),
        Dest::File(p) => print_out(&format!(
            "retrieved {} to {}: {size} bytes, sha256 {sha}\n",
            args.name,
            p.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(
            dest_for("a.txt", None),
            Dest::File(PathBuf::from("./a.txt"))
        );
        assert_eq!(dest_for("a.txt", Some(Path::new("-"))), Dest::Stdout);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            dest_for("a.txt", Some(dir.path())),
            Dest::File(dir.path().join("a.txt"))
        );
        let f = dir.path().join("out.bin");
        assert_eq!(dest_for("a.txt", Some(&f)), Dest::File(f.clone()));
    }
}
