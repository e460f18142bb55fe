//! Process plumbing shared by the operator and the replica, one definition each:
//!
//! - [`worker`]: background loops as named workers run by one [`worker::Workers`] runner
//!   (status, pacing, cancellation on shutdown, metrics).
//! - [`shutdown`]: waiting for SIGINT or SIGTERM.
//! - [`token`]: reading a bearer token from a file, and following the file as it changes.
//! - [`tls`]: a server certificate that follows its PEM files.
//! - [`clock`]: seconds since the Unix epoch.
//! - [`net`]: listen addresses (`[::]` is every address of both families; a bare IPv6 pod IP
//!   followed by `:port` parses too).
//!
//! Lock poisoning rule (every crate of the workspace): a poisoned `std::sync::Mutex` means a
//! thread panicked while holding it, and the data it guards may be half-updated. Code never
//! recovers the guard of such a lock; it takes it with [`lock`] (or `.expect("<what>")`),
//! which panics in turn with the lock's name, so a broken invariant stops the process instead
//! of spreading.

pub mod clock;
pub mod net;
pub mod shutdown;
pub mod tls;
pub mod token;
pub mod worker;

/// Locks `mutex`, panicking with `what` if a thread panicked while holding it (the lock
/// poisoning rule above).
pub fn lock<'a, T>(mutex: &'a std::sync::Mutex<T>, what: &str) -> std::sync::MutexGuard<'a, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(_) => panic!("the {what} lock is poisoned: a thread panicked while holding it"),
    }
}
