//! The same API without an async runtime in the caller.
//!
//! A [`Locks`] owns a small private Tokio runtime (one worker thread) that renews leases in the
//! background; every call blocks the calling thread until it completes. Do not call these from
//! inside an async task: use the async API there.
//!
//! ```no_run
//! # fn demo() -> distlock::Result<()> {
//! let locks = distlock::blocking::connect("file:///tmp/my-locks")?;
//! let lease = locks.mutex("nightly-report").no_wait().acquire()?;
//! println!("token {}", lease.token());
//! lease.release()?;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use distlock_core as core;
use tokio::runtime::Runtime;

use crate::{Error, ErrorKind, FencingToken, LeaseState, LockInfo, LockMode, LockName, Result};

/// Connects to `url` (see [`crate::connect`]) and returns a blocking handle.
pub fn connect(url: &str) -> Result<Locks> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("distlock-blocking")
        .enable_all()
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::Config,
                "connect",
                "could not start the blocking API's runtime",
            )
            .with_source(e)
        })?;
    let runtime = Arc::new(runtime);
    let inner = runtime.block_on(crate::connect(url))?;
    Ok(Locks { inner, runtime })
}

/// A blocking connection to one lock backend. Cheap to clone.
#[derive(Clone)]
pub struct Locks {
    inner: core::Locks,
    runtime: Arc<Runtime>,
}

impl std::fmt::Debug for Locks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Locks")
            .field("backend", &self.inner.backend_name())
            .finish()
    }
}

impl Locks {
    /// The async handle underneath, sharing this one's backend.
    pub fn as_async(&self) -> &core::Locks {
        &self.inner
    }

    /// An exclusive lock named `name`.
    pub fn mutex(&self, name: impl AsRef<str>) -> LockBuilder {
        self.wrap(self.inner.mutex(name))
    }

    /// The shared (read) side of the read-write lock `name`.
    pub fn read(&self, name: impl AsRef<str>) -> LockBuilder {
        self.wrap(self.inner.rwlock(name).read())
    }

    /// The exclusive (write) side of the read-write lock `name`.
    pub fn write(&self, name: impl AsRef<str>) -> LockBuilder {
        self.wrap(self.inner.rwlock(name).write())
    }

    /// A counting semaphore with `limit` permits; takes one unless [`LockBuilder::permits`] says more.
    pub fn semaphore(&self, name: impl AsRef<str>, limit: u32) -> LockBuilder {
        self.wrap(self.inner.semaphore(name, limit))
    }

    fn wrap(&self, inner: core::LockBuilder) -> LockBuilder {
        LockBuilder {
            inner,
            runtime: Arc::clone(&self.runtime),
        }
    }

    fn lease(&self, inner: core::Lease) -> Lease {
        Lease {
            inner: Some(inner),
            runtime: Arc::clone(&self.runtime),
        }
    }

    /// Acquires every named lock exclusively, all or nothing, in sorted order
    /// (see [`core::Locks::acquire_all_with`]).
    pub fn acquire_all<I, S>(&self, names: I, options: core::AcquireOptions) -> Result<Vec<Lease>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let leases = self
            .runtime
            .block_on(self.inner.acquire_all_with(names, options))?;
        Ok(leases.into_iter().map(|l| self.lease(l)).collect())
    }

    /// The holders and waiters of `name`.
    pub fn inspect(&self, name: impl AsRef<str>) -> Result<LockInfo> {
        self.runtime.block_on(self.inner.inspect(name))
    }

    /// Every lock whose name starts with `prefix` that has holders or waiters.
    pub fn list(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        self.runtime.block_on(self.inner.list(prefix))
    }

    /// Takes `name` away from its holders (see [`core::Locks::force_release`]).
    pub fn force_release(&self, name: impl AsRef<str>) -> Result<usize> {
        self.runtime.block_on(self.inner.force_release(name))
    }
}

/// Options for one lock, then [`acquire`](Self::acquire). The setters are those of the async
/// [`core::LockBuilder`].
#[must_use = "a lock builder does nothing until .acquire() is called"]
pub struct LockBuilder {
    inner: core::LockBuilder,
    runtime: Arc<Runtime>,
}

macro_rules! delegate_setters {
    ($($(#[$doc:meta])* $setter:ident($($arg:ident: $ty:ty),*);)*) => {
        impl LockBuilder {
            $(
                $(#[$doc])*
                pub fn $setter(self, $($arg: $ty),*) -> Self {
                    LockBuilder { inner: self.inner.$setter($($arg),*), runtime: self.runtime }
                }
            )*
        }
    };
}

delegate_setters! {
    /// Lease length (default 30 s).
    ttl(ttl: Duration);
    /// Wait at most `bound`.
    wait(bound: Duration);
    /// Fail at once if held.
    no_wait();
    /// Wait until acquired (the default).
    wait_forever();
    /// Take `count` permits of a semaphore.
    permits(count: u32);
    /// Priority, where the backend has priority queues.
    priority(priority: i32);
    /// Text shown by inspection.
    description(description: impl Into<String>);
}

impl LockBuilder {
    /// Acquires the lock, blocking the calling thread.
    pub fn acquire(self) -> Result<Lease> {
        let inner = self.runtime.block_on(self.inner.acquire())?;
        Ok(Lease {
            inner: Some(inner),
            runtime: self.runtime,
        })
    }
}

/// A held lock, renewed in the background by the handle's runtime.
///
/// Dropping it releases the lock in the background, as the async [`core::Lease`] does.
pub struct Lease {
    inner: Option<core::Lease>,
    runtime: Arc<Runtime>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.lease().fmt(f)
    }
}

impl Lease {
    fn lease(&self) -> &core::Lease {
        self.inner.as_ref().expect("present until drop")
    }

    /// The async lease underneath.
    pub fn as_async(&self) -> &core::Lease {
        self.lease()
    }

    /// The lock name.
    pub fn name(&self) -> &LockName {
        self.lease().name()
    }

    /// The fencing token.
    pub fn token(&self) -> FencingToken {
        self.lease().token()
    }

    /// How the lock is held.
    pub fn mode(&self) -> LockMode {
        self.lease().mode()
    }

    /// The current state.
    pub fn state(&self) -> LeaseState {
        self.lease().state()
    }

    /// Whether the lock is still ours.
    pub fn is_held(&self) -> bool {
        self.lease().is_held()
    }

    /// `Err(Lost)` once the lease is lost.
    pub fn check(&self) -> Result<()> {
        self.lease().check()
    }

    /// Blocks until the lease is lost (returning the loss) or `timeout` passes (`None`).
    pub fn wait_lost(&self, timeout: Duration) -> Option<Error> {
        let lost = self.lease().lost();
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, lost).await.ok() })
    }

    /// Gives the lock up; idempotent and owner-checked (see [`core::Lease::release`]).
    pub fn release(&self) -> Result<()> {
        self.runtime.block_on(self.lease().release())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Inside the runtime's context, the async lease's drop releases in the background.
        let _context = self.runtime.enter();
        drop(self.inner.take());
    }
}
