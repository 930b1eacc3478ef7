//! Building distlock errors from OS errors, with the path and a hint where one helps.

use std::io;
use std::path::Path;

use distlock_core::{Error, ErrorKind};

/// The backend name used in every error and log line.
pub(crate) const BACKEND: &str = "file";

/// A hint for the errno values whose bare text would puzzle a user.
fn hint(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EINVAL) => " (OFD locks need Linux 3.15 or later)",
        Some(libc::ENOLCK) => {
            " (no locks available: on NFS, is the lock manager (lockd/rpc.statd) running?)"
        }
        Some(libc::ELOOP) => " (it is a symbolic link; distlock never follows links to lock files)",
        Some(libc::EDEADLK) => " (the kernel reported a deadlock)",
        Some(libc::EACCES) | Some(libc::EPERM) => " (permission denied)",
        Some(libc::EROFS) => " (read-only file system)",
        _ => "",
    }
}

/// A [`ErrorKind::Backend`] error: `what` failed on `path`, caused by `source`.
pub(crate) fn io_error(what: &str, path: &Path, source: io::Error) -> Error {
    let hint = hint(&source);
    Error::new(
        ErrorKind::Backend,
        BACKEND,
        format!("{what} {}{hint}", path.display()),
    )
    .with_source(source)
}

/// A [`ErrorKind::Backend`] error about the lock directory: the store is unusable as it is
/// (a symlink, not a directory, unwritable, unsafe), which is an environment problem rather
/// than a mistake in the caller's options, so the CLI reports it as "unavailable" (exit 69).
pub(crate) fn dir_error(path: &Path, why: &str, source: Option<io::Error>) -> Error {
    let error = Error::new(
        ErrorKind::Backend,
        BACKEND,
        format!("lock directory {}: {why}", path.display()),
    );
    match source {
        Some(source) => error.with_source(source),
        None => error,
    }
}
