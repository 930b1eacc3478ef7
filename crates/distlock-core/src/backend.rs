//! The trait a backend implements. Kept small on purpose: the lease state machine, renewal,
//! option checks, metrics and tracing live in the core, once.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::inspect::LockInfo;
use crate::lease::LeaseSignal;
use crate::name::LockName;
use crate::options::AcquireRequest;
use crate::token::FencingToken;

/// A boxed, sendable future, the return type of the backend trait's methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a backend can do. Asking for anything else fails with
/// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) before the backend is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Shared (read) holders.
    pub shared: bool,
    /// Counting semaphores, including weighted acquisition of several permits.
    pub semaphore: bool,
    /// Priority queues: a non-zero priority is honoured.
    pub priority: bool,
}

impl Capabilities {
    /// Exclusive locks only.
    pub const EXCLUSIVE_ONLY: Capabilities = Capabilities {
        shared: false,
        semaphore: false,
        priority: false,
    };

    /// Adds shared holders.
    pub const fn with_shared(mut self) -> Self {
        self.shared = true;
        self
    }

    /// Adds semaphores.
    pub const fn with_semaphore(mut self) -> Self {
        self.semaphore = true;
        self
    }

    /// Adds priority queues.
    pub const fn with_priority(mut self) -> Self {
        self.priority = true;
        self
    }
}

/// A lock service: files, Redis, PostgreSQL, ...
///
/// Implementations are cheap to share (`Arc<dyn Backend>`); the core calls them from many tasks.
pub trait Backend: Send + Sync + 'static {
    /// Short backend name for messages and metrics: `"file"`, `"redis"`, ...
    fn name(&self) -> &'static str;

    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Acquires the lock described by `request`, honouring its wait bound, and returns the held
    /// lock. `signal` lets the backend report jeopardy or loss it detects on its own (a closed
    /// connection, an expired session); the core reports what renewal finds.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel safe: if the future is dropped, nothing stays held or queued (a waiter
    /// thread or server-side wait that completes late releases at once).
    fn acquire<'a>(
        &'a self,
        request: &'a AcquireRequest,
        signal: LeaseSignal,
    ) -> BoxFuture<'a, Result<Box<dyn HeldLock>>>;

    /// Reports the holders and waiters of `name`.
    fn inspect<'a>(&'a self, name: &'a LockName) -> BoxFuture<'a, Result<LockInfo>>;

    /// Reports every lock whose name starts with `prefix` and that has a holder or a waiter.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>>;

    /// Takes the lock away from its current holders (an operator's tool); returns how many
    /// holders were removed. Holders see the loss at their next renewal or at once.
    fn force_release<'a>(&'a self, name: &'a LockName) -> BoxFuture<'a, Result<usize>>;
}

/// A lock a backend granted, owned by one [`Lease`](crate::Lease).
///
/// Dropping it must give the lock up where that can be done without a runtime (closing a file
/// descriptor or a connection); otherwise the lease runs out on the server.
pub trait HeldLock: Send + Sync + 'static {
    /// The fencing token of this acquisition.
    fn token(&self) -> FencingToken;

    /// When the server-side lease started counting: the time the request that granted or last
    /// extended it was *sent*. `None` when the lock does not expire on its own while its holder
    /// lives (a file lock).
    fn granted_at(&self) -> Option<Instant>;

    /// Extends the lease to `ttl` from now, only if this owner still holds it. Returns
    /// [`ErrorKind::Lost`](crate::ErrorKind::Lost) when the lock is gone or owned by another; any
    /// other error means the outcome is unknown (the lease goes to jeopardy and is retried).
    fn renew(&self, ttl: Duration) -> BoxFuture<'_, Result<()>>;

    /// Gives the lock up if this owner still holds it; a no-op otherwise.
    fn release(&self) -> BoxFuture<'_, Result<()>>;
}
