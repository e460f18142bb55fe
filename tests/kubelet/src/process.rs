//! Starting a container as a local process in its own mount namespace, and stopping it.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::mount_targets;

/// A bind mount inside the container's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Everything needed to start one container process.
#[derive(Debug, Clone)]
pub struct Launch {
    pub binary: PathBuf,
    pub argv0: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
    pub mounts: Vec<Mount>,
    pub log_path: PathBuf,
}

static RUNNING: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

fn registry<R>(f: impl FnOnce(&mut HashSet<i32>) -> R) -> R {
    let mut g = RUNNING.lock().expect("process table lock");
    f(g.get_or_insert_with(HashSet::new))
}

/// Forget a process group once it has been reaped.
pub fn forget(pid: i32) {
    registry(|r| r.remove(&pid));
}

/// SIGKILL every process group this kubelet started, and remove the host-side mount points it
/// created (used on exit).
pub fn kill_all() {
    let pids: Vec<i32> = registry(|r| r.drain().collect());
    for pid in pids {
        signal_group(pid, libc::SIGKILL);
    }
    mount_targets::remove_all();
}

/// Send a signal to the process group of `pid`, and to `pid` itself.
pub fn signal_group(pid: i32, sig: i32) {
    // SAFETY: plain kill(2) calls.
    unsafe {
        libc::kill(-pid, sig);
        libc::kill(pid, sig);
    }
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Room for `/proc/self/fd/<fd>` and its NUL.
type FdPathBuf = [u8; 32];

/// Writes `/proc/self/fd/<fd>` (NUL-terminated) into `buf` without allocating (it runs in
/// the child between fork and exec) and returns it as a C string pointer.
fn fd_path(buf: &mut FdPathBuf, fd: libc::c_int) -> *const libc::c_char {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut n = fd.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    buf[PREFIX.len() + len] = 0;
    buf.as_ptr().cast()
}

/// `argv` and `envp` for `fexecve`, built before the fork.
struct ExecArgs {
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into `_strings`, owned by the same value and never changed.
unsafe impl Send for ExecArgs {}
// SAFETY: as above; nothing mutates through the pointers.
unsafe impl Sync for ExecArgs {}

impl ExecArgs {
    fn new(argv0: &str, args: &[String], env: &[(String, String)]) -> io::Result<ExecArgs> {
        let c =
            |s: String| CString::new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
        let argv_strings: Vec<CString> = std::iter::once(argv0.to_string())
            .chain(args.iter().cloned())
            .map(c)
            .collect::<io::Result<_>>()?;
        let env_strings: Vec<CString> = env
            .iter()
            .map(|(k, v)| c(format!("{k}={v}")))
            .collect::<io::Result<_>>()?;
        let pointers = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let argv = pointers(&argv_strings);
        let envp = pointers(&env_strings);
        let mut strings = argv_strings;
        strings.extend(env_strings);
        Ok(ExecArgs {
            _strings: strings,
            argv,
            envp,
        })
    }

    /// `fexecve(fd, argv, envp)`: returns only on failure (errno set).
    fn fexecve(&self, fd: libc::c_int) {
        // SAFETY: both arrays are NUL-terminated and point into strings `self` owns.
        unsafe {
            libc::fexecve(fd, self.argv.as_ptr(), self.envp.as_ptr());
        }
    }
}

/// Create the mount point on the host if missing: a directory, or an empty file when the source
/// is a file. What gets created is held by `lease` and removed again when the lease goes.
fn ensure_target(m: &Mount, lease: &mut mount_targets::Lease) -> io::Result<()> {
    lease.ensure(&m.target, m.source.is_file())
}

/// Start the process. Stdout and stderr are appended to `log_path`.
///
/// The returned lease holds the host-side mount points the kubelet had to create; keep it until
/// the process has exited, then drop it to remove them.
pub fn spawn(l: &Launch) -> io::Result<(Child, mount_targets::Lease)> {
    let mut lease = mount_targets::Lease::default();
    for m in &l.mounts {
        ensure_target(m, &mut lease)?;
    }
    if let Some(parent) = l.log_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&l.log_path)?;
    let log2 = log.try_clone()?;

    // Everything the child needs after fork is prepared here: no allocation in pre_exec.
    // The child opens every mount source and the binary (O_PATH, close-on-exec) in its new
    // mount namespace before it mounts anything, then mounts and executes through these
    // descriptors, so a volume mounted over a folder on their way (an emptyDir at /tmp while
    // the binaries and the kubelet's state live under /tmp, as in a checkout there) cannot
    // hide them. (Descriptors opened before the unshare would not do: a bind mount from a
    // mount of another namespace is EINVAL.)
    let mounts: Vec<(CString, CString, bool)> = l
        .mounts
        .iter()
        .map(|m| Ok((cstr(&m.source)?, cstr(&m.target)?, m.read_only)))
        .collect::<io::Result<_>>()?;
    let mut source_fds: Vec<libc::c_int> = vec![-1; mounts.len()];
    let mut source_paths: Vec<FdPathBuf> = vec![[0; 32]; mounts.len()];
    let binary = cstr(&l.binary)?;
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let mut env = vec![
        ("PATH".to_string(), path.clone()),
        ("HOME".into(), "/root".into()),
    ];
    for (k, v) in &l.env {
        env.retain(|(key, _)| key != k);
        env.push((k.clone(), v.clone()));
    }
    let exec = ExecArgs::new(&l.argv0, &l.args, &env)?;
    let cwd = l.working_dir.as_deref().map(cstr).transpose()?;
    let root = CString::new("/").expect("static");
    let none = CString::new("none").expect("static");

    let mut cmd = Command::new(&l.binary);
    cmd.arg0(&l.argv0)
        .args(&l.args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .kill_on_drop(false);
    // SAFETY: the closure only makes async-signal-safe system calls on pre-built C strings.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc != 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            check(libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ))?;
            if libc::getppid() == 1 {
                // The kubelet died between fork and prctl.
                libc::_exit(1);
            }
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                none.as_ptr(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for ((src, _, _), fd) in mounts.iter().zip(source_fds.iter_mut()) {
                *fd = libc::open(src.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                if *fd < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let binary_fd = libc::open(binary.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            if binary_fd < 0 {
                return Err(io::Error::last_os_error());
            }
            for (((_, dst, ro), fd), path) in mounts
                .iter()
                .zip(source_fds.iter())
                .zip(source_paths.iter_mut())
            {
                check(libc::mount(
                    fd_path(path, *fd),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                if *ro {
                    check(libc::mount(
                        none.as_ptr(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
            }
            if let Some(cwd) = &cwd {
                check(libc::chdir(cwd.as_ptr()))?;
            }
            exec.fexecve(binary_fd);
            // Only returns on failure. A script cannot run from a close-on-exec descriptor
            // (its interpreter opens it by path, ENOENT): the exec by path that follows runs it.
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOENT) {
                return Ok(());
            }
            Err(err)
        });
    }
    let child = cmd.spawn()?;
    if let Some(pid) = child.id() {
        registry(|r| r.insert(pid as i32));
    }
    Ok((child, lease))
}

/// Exit code as Kubernetes reports it: the code, or 128 + signal.
pub fn exit_code(status: &std::process::ExitStatus) -> (i32, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => (c, None),
        (None, Some(s)) => (128 + s, Some(s)),
        _ => (255, None),
    }
}

/// SIGTERM the process group, wait up to `grace`, then SIGKILL. Returns the exit status.
pub async fn terminate(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    let pid = child.id().map(|p| p as i32);
    if let Some(pid) = pid {
        signal_group(pid, libc::SIGTERM);
    }
    let st = match tokio::time::timeout(grace, child.wait()).await {
        Ok(r) => r.ok(),
        Err(_) => {
            if let Some(pid) = pid {
                signal_group(pid, libc::SIGKILL);
            }
            child.wait().await.ok()
        }
    };
    if let Some(pid) = pid {
        // Leftover members of the group, if any.
        signal_group(pid, libc::SIGKILL);
        forget(pid);
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`spawn`], tried again while the binary is "busy": a test that just copied it may
    /// still have a writable descriptor of it in a child another test forked meanwhile
    /// (`ETXTBSY` until that child execs), as Go's os/exec also allows for.
    fn spawn_settled(l: &Launch) -> io::Result<(Child, mount_targets::Lease)> {
        let mut tries = 0;
        loop {
            match spawn(l) {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 40 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    #[test]
    fn fd_paths_are_written_in_place() {
        let mut buf: FdPathBuf = [0xff; 32];
        for (fd, want) in [
            (0, "/proc/self/fd/0"),
            (7, "/proc/self/fd/7"),
            (1234567, "/proc/self/fd/1234567"),
        ] {
            let p = fd_path(&mut buf, fd);
            // SAFETY: fd_path NUL-terminates inside `buf`.
            let got = unsafe { std::ffi::CStr::from_ptr(p) };
            assert_eq!(got.to_str().unwrap(), want);
        }
    }

    #[tokio::test]
    async fn runs_with_bind_mount_and_env() {
        let base = std::env::temp_dir().join(format!("kubelet-proc-{}", std::process::id()));
        let src = base.join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("hello"), "hi").unwrap();
        let target = base.join("mnt");
        let l = Launch {
            binary: "/bin/sh".into(),
            argv0: "sh".into(),
            args: vec![
                "-c".into(),
                format!("cat {}/hello; echo \" $FOO\"; pwd", target.display()),
            ],
            env: vec![("FOO".into(), "bar".into())],
            working_dir: Some(target.clone()),
            mounts: vec![Mount {
                source: src.clone(),
                target: target.clone(),
                read_only: true,
            }],
            log_path: base.join("log"),
        };
        let (mut child, lease) = match spawn_settled(&l) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("skipping (no mount namespaces here?): {e}");
                return;
            }
        };
        let st = child.wait().await.unwrap();
        assert_eq!(exit_code(&st), (0, None));
        let out = std::fs::read_to_string(base.join("log")).unwrap();
        assert_eq!(out, format!("hi bar\n{}\n", target.display()));
        // The host side of the mount point stays empty.
        assert!(std::fs::read_dir(&target).unwrap().next().is_none());
        // The kubelet created the mount point, so it goes with the last user.
        drop(lease);
        assert!(!target.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// A volume mounted over a folder holding the binary and another volume's source (an
    /// emptyDir at /tmp with the checkout under /tmp) hides neither.
    #[tokio::test]
    async fn a_volume_over_the_binarys_folder_hides_neither_the_binary_nor_later_sources() {
        let base = std::env::temp_dir().join(format!("kubelet-shadow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("bin")).unwrap();
        std::fs::create_dir_all(base.join("secret")).unwrap();
        std::fs::create_dir_all(base.join("empty/s")).unwrap();
        std::fs::copy("/bin/cat", base.join("bin/cat")).unwrap();
        std::fs::write(base.join("secret/token"), "s3cret").unwrap();
        let logs = std::env::temp_dir().join(format!("kubelet-shadow-log-{}", std::process::id()));
        let l = Launch {
            binary: base.join("bin/cat"),
            argv0: "cat".into(),
            args: vec![base.join("s/token").display().to_string()],
            env: vec![],
            working_dir: None,
            mounts: vec![
                // `base` itself now shows the empty folder...
                Mount {
                    source: base.join("empty"),
                    target: base.clone(),
                    read_only: false,
                },
                // ...whose `s` gets the secret folder, mounted from a path now hidden.
                Mount {
                    source: base.join("secret"),
                    target: base.join("s"),
                    read_only: true,
                },
            ],
            log_path: logs.clone(),
        };
        let (mut child, lease) = match spawn_settled(&l) {
            Ok(c) => c,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipping (no mount namespaces here): {e}");
                return;
            }
            Err(e) => panic!("spawn: {e}"),
        };
        let st = child.wait().await.unwrap();
        let out = std::fs::read_to_string(&logs).unwrap();
        assert_eq!(exit_code(&st), (0, None), "{out}");
        assert_eq!(out, "s3cret");
        drop(lease);
        std::fs::remove_dir_all(&base).unwrap();
        std::fs::remove_file(&logs).unwrap();
    }

    #[tokio::test]
    async fn hosts_file_bind_mount_resolves_and_follows_rewrites() {
        if !Path::new("/usr/bin/getent").exists() && !Path::new("/bin/getent").exists() {
            eprintln!("skipping: no getent");
            return;
        }
        let base = std::env::temp_dir().join(format!("kubelet-hosts-mnt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let hosts = base.join("etc-hosts");
        crate::hosts::write_in_place(&hosts, b"127.0.0.1\tlocalhost\n127.0.100.4\tgw.d.svc\n")
            .unwrap();
        let l = Launch {
            binary: "/bin/sh".into(),
            argv0: "sh".into(),
            args: vec![
                "-c".into(),
                "getent hosts gw.d.svc; while ! grep -q 127.0.100.5 /etc/hosts; do sleep 0.05; done; getent hosts gw.d.svc".into(),
            ],
            env: vec![],
            working_dir: None,
            mounts: vec![Mount {
                source: hosts.clone(),
                target: "/etc/hosts".into(),
                read_only: false,
            }],
            log_path: base.join("log"),
        };
        let (mut child, _lease) = match spawn_settled(&l) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("skipping (no mount namespaces here?): {e}");
                return;
            }
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Rewritten in place: the running container sees the new text.
        crate::hosts::write_in_place(&hosts, b"127.0.100.5\tgw.d.svc\n").unwrap();
        let st = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("container sees the rewritten hosts file")
            .unwrap();
        assert_eq!(exit_code(&st), (0, None));
        let out = std::fs::read_to_string(base.join("log")).unwrap();
        let ips: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(ips, ["127.0.100.4", "127.0.100.5"], "{out}");
        // The host's own /etc/hosts is untouched.
        assert!(!std::fs::read_to_string("/etc/hosts")
            .unwrap()
            .contains("gw.d.svc"));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
