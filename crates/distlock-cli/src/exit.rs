//! Exit codes (sysexits.h where one fits) and how errors map to them.

use distlock::{Error, ErrorKind};

/// Success.
pub const OK: u8 = 0;
/// EX_USAGE: bad flags, invalid name or URL, bad option values, unsupported capability.
pub const USAGE: u8 = 64;
/// EX_UNAVAILABLE: the backend is unreachable or answered with an error.
pub const UNAVAILABLE: u8 = 69;
/// EX_SOFTWARE: an internal error (a panic).
pub const SOFTWARE: u8 = 70;
/// EX_OSERR: the operating system refused something distlock needs (a pipe, a thread).
pub const OS_ERROR: u8 = 71;
/// EX_IOERR, used for "the lock was lost while the command ran".
pub const LOST: u8 = 74;
/// EX_TEMPFAIL: the lock was not acquired (held, with `-n`, or the `-w` bound passed).
pub const NOT_ACQUIRED: u8 = 75;
/// The command exists but cannot be executed.
pub const NOT_EXECUTABLE: u8 = 126;
/// The command was not found.
pub const NOT_FOUND: u8 = 127;

/// 128 + the signal number, as shells report a death by signal.
pub fn signal(signo: i32) -> u8 {
    (128 + signo).clamp(0, 255) as u8
}

/// The exit code for a distlock error; `not_acquired` is the code chosen with `-E`.
pub fn for_error(error: &Error, not_acquired: u8) -> u8 {
    match error.kind() {
        ErrorKind::Timeout | ErrorKind::WouldBlock => not_acquired,
        ErrorKind::Lost => LOST,
        _ if error.is_usage() => USAGE,
        _ => UNAVAILABLE,
    }
}

/// Prints `distlock: <error>` on stderr and returns its exit code.
pub fn report(error: &Error, not_acquired: u8) -> u8 {
    eprintln!("distlock: {error}");
    for_error(error, not_acquired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_sysexits() {
        let code = |kind| for_error(&Error::new(kind, "file", "x"), NOT_ACQUIRED);
        assert_eq!(code(ErrorKind::Timeout), 75);
        assert_eq!(code(ErrorKind::WouldBlock), 75);
        assert_eq!(code(ErrorKind::Lost), 74);
        assert_eq!(code(ErrorKind::InvalidName), 64);
        assert_eq!(code(ErrorKind::InvalidUrl), 64);
        assert_eq!(code(ErrorKind::Config), 64);
        assert_eq!(code(ErrorKind::Unsupported), 64);
        assert_eq!(code(ErrorKind::Connection), 69);
        assert_eq!(code(ErrorKind::Backend), 69);
        let e = Error::new(ErrorKind::WouldBlock, "file", "held");
        assert_eq!(for_error(&e, 3), 3);
        assert_eq!(signal(libc::SIGINT), 130);
    }
}
