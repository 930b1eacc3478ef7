//! The error type shared by every backend.

use std::fmt;

/// A `Result` whose error is distlock's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, independent of the backend.
///
/// Match on it with a wildcard arm: new kinds may be added.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The wait bound passed before the lock could be acquired.
    Timeout,
    /// `no_wait()` was asked for and the lock is held by someone else.
    WouldBlock,
    /// The lease is gone: it expired, was revoked, or its session ended.
    Lost,
    /// The backend lacks the capability that was asked for.
    Unsupported,
    /// The lock name breaks one of the naming rules.
    InvalidName,
    /// The connection URL could not be understood.
    InvalidUrl,
    /// The backend could not be reached, or the connection broke.
    Connection,
    /// The backend answered with an error.
    Backend,
    /// An option was out of range (a zero TTL, zero permits, ...).
    Config,
}

impl ErrorKind {
    /// A short lower-case label, stable for logs, metrics and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::WouldBlock => "would_block",
            ErrorKind::Lost => "lost",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidName => "invalid_name",
            ErrorKind::InvalidUrl => "invalid_url",
            ErrorKind::Connection => "connection",
            ErrorKind::Backend => "backend",
            ErrorKind::Config => "config",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from distlock.
///
/// Its message names the backend and, where there is one, the lock. Messages never contain
/// credentials: URLs are shown through [`redact_url`](crate::redact_url).
pub struct Error {
    kind: ErrorKind,
    backend: &'static str,
    lock: Option<String>,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` raised by `backend` (such as `"file"` or `"redis"`).
    pub fn new(kind: ErrorKind, backend: &'static str, message: impl Into<String>) -> Self {
        Error {
            kind,
            backend,
            lock: None,
            message: message.into(),
            source: None,
        }
    }

    /// Names the lock the error is about.
    pub fn with_lock(mut self, lock: impl AsRef<str>) -> Self {
        self.lock = Some(crate::name::display_name(lock.as_ref()));
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The backend that raised the error (`"file"`, `"redis"`, ...).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The lock the error is about, quoted and shortened for display, if any.
    pub fn lock(&self) -> Option<&str> {
        self.lock.as_deref()
    }

    /// The message without the backend and lock prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The wait bound passed before the lock was acquired.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// The lock was held and `no_wait()` was asked for.
    pub fn is_would_block(&self) -> bool {
        self.kind == ErrorKind::WouldBlock
    }

    /// The lock was not acquired because someone else holds it (timeout or would-block).
    pub fn is_not_acquired(&self) -> bool {
        self.is_timeout() || self.is_would_block()
    }

    /// The lease is gone.
    pub fn is_lost(&self) -> bool {
        self.kind == ErrorKind::Lost
    }

    /// The backend does not support what was asked for.
    pub fn is_unsupported(&self) -> bool {
        self.kind == ErrorKind::Unsupported
    }

    /// The lock name is invalid.
    pub fn is_invalid_name(&self) -> bool {
        self.kind == ErrorKind::InvalidName
    }

    /// The backend could not be reached or the connection broke.
    pub fn is_connection(&self) -> bool {
        self.kind == ErrorKind::Connection
    }

    /// The caller made a mistake (bad name, URL or option) that no retry will fix.
    pub fn is_usage(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::InvalidName
                | ErrorKind::InvalidUrl
                | ErrorKind::Config
                | ErrorKind::Unsupported
        )
    }

    /// Trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Timeout | ErrorKind::WouldBlock | ErrorKind::Connection | ErrorKind::Lost
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.lock {
            Some(lock) => write!(f, "{} lock {}: {}", self.backend, lock, self.message)?,
            None => write!(f, "{}: {}", self.backend, self.message)?,
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("backend", &self.backend)
            .field("lock", &self.lock)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_backend_and_lock() {
        let e = Error::new(ErrorKind::WouldBlock, "file", "held by another owner").with_lock("a/b");
        assert_eq!(e.to_string(), "file lock \"a/b\": held by another owner");
        assert!(e.is_would_block() && e.is_not_acquired() && e.is_retryable());
        assert!(!e.is_usage());
    }

    #[test]
    fn hostile_lock_names_are_escaped_in_messages() {
        let e = Error::new(ErrorKind::InvalidName, "file", "bad").with_lock("a\u{1b}[31mb");
        assert!(!e.to_string().contains('\u{1b}'));
    }
}
