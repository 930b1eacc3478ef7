//! `Locks`: the handle users acquire locks through, whatever the backend.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::backend::Backend;
use crate::error::{Error, ErrorKind, Result};
use crate::inspect::LockInfo;
use crate::lease::RenewalStarter;
use crate::lease::{Lease, LeaseSignal};
use crate::name::LockName;
use crate::options::{AcquireOptions, AcquireRequest, LockMode, OwnerInfo, Wait};
use crate::telemetry::{self, BackendKeys};
use crate::token::OwnerId;

/// A connection to one lock backend. Cheap to clone; clones share the backend.
#[derive(Clone)]
pub struct Locks {
    backend: Arc<dyn Backend>,
    renewals: Arc<RenewalStarter>,
    metrics: &'static BackendKeys,
}

impl fmt::Debug for Locks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Locks")
            .field("backend", &self.backend.name())
            .finish()
    }
}

impl Locks {
    /// Wraps a backend.
    pub fn new(backend: impl Backend) -> Self {
        Locks::from_arc(Arc::new(backend))
    }

    /// Wraps a shared backend.
    pub fn from_arc(backend: Arc<dyn Backend>) -> Self {
        Locks {
            metrics: telemetry::keys(backend.name()),
            backend,
            renewals: RenewalStarter::new(),
        }
    }

    /// The backend's name: `"file"`, `"redis"`, ...
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The backend's capabilities.
    pub fn capabilities(&self) -> crate::Capabilities {
        self.backend.capabilities()
    }

    /// An exclusive lock named `name`.
    pub fn mutex(&self, name: impl AsRef<str>) -> LockBuilder {
        self.builder(name, LockMode::Exclusive)
    }

    /// A read-write lock named `name`; choose a side with [`RwLockBuilder::read`] or
    /// [`RwLockBuilder::write`].
    pub fn rwlock(&self, name: impl AsRef<str>) -> RwLockBuilder {
        RwLockBuilder {
            locks: self.clone(),
            name: name.as_ref().to_owned(),
        }
    }

    /// A counting semaphore named `name` with `limit` permits in all; takes one permit unless
    /// [`LockBuilder::permits`] says more. Every user of one semaphore must pass the same
    /// `limit`.
    pub fn semaphore(&self, name: impl AsRef<str>, limit: u32) -> LockBuilder {
        self.builder(name, LockMode::Permits { count: 1, limit })
    }

    fn builder(&self, name: impl AsRef<str>, mode: LockMode) -> LockBuilder {
        LockBuilder {
            locks: self.clone(),
            name: name.as_ref().to_owned(),
            options: AcquireOptions {
                mode,
                ..AcquireOptions::default()
            },
        }
    }

    /// Validates a name for this backend.
    pub fn name(&self, name: impl AsRef<str>) -> Result<LockName> {
        LockName::new(name.as_ref(), self.backend.name())
    }

    /// Acquires one lock with explicit options.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future leaves nothing held or queued.
    pub async fn acquire_with(
        &self,
        name: impl AsRef<str>,
        options: AcquireOptions,
    ) -> Result<Lease> {
        let name = self.name(name)?;
        self.acquire_validated(name, options).await
    }

    async fn acquire_validated(&self, name: LockName, options: AcquireOptions) -> Result<Lease> {
        let backend = self.backend.name();
        options.validate(backend, &name)?;
        self.check_capabilities(&name, &options)?;
        let owner = OwnerId::random();
        let owner_info = OwnerInfo::current(owner, options.description.clone());
        let request = AcquireRequest::new(name, options, owner_info);
        let mode = request.options.mode;
        let span =
            tracing::debug_span!("distlock.acquire", backend, lock = ?request.name, %mode, %owner);
        let started = Instant::now();
        let signal = LeaseSignal::new(backend);
        let attempt = self.backend.acquire(&request, signal.clone());
        let outcome = match request.options.wait {
            Wait::Bounded(bound) => match tokio::time::timeout(bound, attempt)
                .instrument(span.clone())
                .await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(Error::new(
                    ErrorKind::Timeout,
                    backend,
                    format!("not acquired within {}", humantime::format_duration(bound)),
                )),
            },
            Wait::NoWait | Wait::Forever => attempt.instrument(span.clone()).await,
        };
        match outcome {
            Ok(held) => {
                let waited = started.elapsed();
                telemetry::acquired(self.metrics, mode, waited);
                span.in_scope(|| tracing::debug!(token = %held.token(), ?waited, "acquired"));
                Ok(Lease::start(
                    request.name,
                    self.metrics,
                    mode,
                    owner,
                    request.options.ttl,
                    held,
                    signal,
                    &self.renewals,
                ))
            }
            Err(error) => {
                telemetry::acquire_failed(backend, error.kind());
                span.in_scope(|| tracing::debug!(%error, "not acquired"));
                Err(if error.lock().is_none() {
                    error.with_lock(&request.name)
                } else {
                    error
                })
            }
        }
    }

    fn check_capabilities(&self, name: &LockName, options: &AcquireOptions) -> Result<()> {
        let caps = self.backend.capabilities();
        let missing = match options.mode {
            LockMode::Shared if !caps.shared => Some("shared (read) locks"),
            LockMode::Permits { .. } if !caps.semaphore => Some("semaphores"),
            _ if options.priority != 0 && !caps.priority => Some("priority queues"),
            _ => None,
        };
        match missing {
            Some(capability) => Err(Error::new(
                ErrorKind::Unsupported,
                self.backend.name(),
                format!(
                    "the {} backend does not support {capability}",
                    self.backend.name()
                ),
            )
            .with_lock(name)),
            None => Ok(()),
        }
    }

    /// Acquires every named lock exclusively, all or nothing, with default options.
    /// See [`acquire_all_with`](Self::acquire_all_with).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future releases (in the background) the locks taken so far.
    pub async fn acquire_all<I, S>(&self, names: I) -> Result<Vec<Lease>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.acquire_all_with(names, AcquireOptions::default())
            .await
    }

    /// Acquires every named lock, all or nothing.
    ///
    /// Names are validated, de-duplicated and taken in sorted (byte) order, so two callers
    /// asking for overlapping sets can never deadlock. The wait bound covers the whole set. On
    /// any failure the locks already taken are released and the error is returned. The leases
    /// come back in sorted order.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future releases (in the background) the locks taken so far.
    pub async fn acquire_all_with<I, S>(
        &self,
        names: I,
        options: AcquireOptions,
    ) -> Result<Vec<Lease>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut sorted = names
            .into_iter()
            .map(|n| self.name(n))
            .collect::<Result<Vec<_>>>()?;
        sorted.sort();
        sorted.dedup();
        let deadline = match options.wait {
            Wait::Bounded(bound) => Some(Instant::now() + bound),
            _ => None,
        };
        let mut leases = Vec::with_capacity(sorted.len());
        for name in sorted {
            let mut this = options.clone();
            if let Some(deadline) = deadline {
                this.wait = Wait::Bounded(deadline.saturating_duration_since(Instant::now()));
            }
            match self.acquire_validated(name, this).await {
                Ok(lease) => leases.push(lease),
                Err(error) => {
                    for lease in leases.into_iter().rev() {
                        let _ = lease.release().await;
                    }
                    return Err(error);
                }
            }
        }
        Ok(leases)
    }

    /// The holders and waiters of `name`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn inspect(&self, name: impl AsRef<str>) -> Result<LockInfo> {
        let name = self.name(name)?;
        self.backend.inspect(&name).await.map_err(|e| {
            if e.lock().is_none() {
                e.with_lock(&name)
            } else {
                e
            }
        })
    }

    /// Every lock whose name starts with `prefix` and that has holders or waiters.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        self.backend.list(prefix).await
    }

    /// Takes `name` away from its holders, for operators. Returns how many holders were
    /// removed; they see `Lost` at their next renewal at the latest.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if dropped midway, some holders may already have been removed.
    pub async fn force_release(&self, name: impl AsRef<str>) -> Result<usize> {
        let name = self.name(name)?;
        self.backend.force_release(&name).await
    }
}

/// Options for one lock, then [`acquire`](Self::acquire).
#[derive(Debug, Clone)]
#[must_use = "a lock builder does nothing until .acquire() is awaited"]
pub struct LockBuilder {
    locks: Locks,
    name: String,
    options: AcquireOptions,
}

impl LockBuilder {
    /// Lease length (default 30 s); renewed at a third of it while held.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.options.ttl = ttl;
        self
    }

    /// Wait at most `bound`, then fail with [`ErrorKind::Timeout`].
    pub fn wait(mut self, bound: Duration) -> Self {
        self.options.wait = Wait::Bounded(bound);
        self
    }

    /// Do not wait: fail with [`ErrorKind::WouldBlock`] if the lock is held.
    pub fn no_wait(mut self) -> Self {
        self.options.wait = Wait::NoWait;
        self
    }

    /// Wait until acquired (the default).
    pub fn wait_forever(mut self) -> Self {
        self.options.wait = Wait::Forever;
        self
    }

    /// Sets the wait policy.
    pub fn wait_policy(mut self, wait: Wait) -> Self {
        self.options.wait = wait;
        self
    }

    /// Take the lock shared (as a reader).
    pub fn shared(mut self) -> Self {
        self.options.mode = LockMode::Shared;
        self
    }

    /// Take `count` permits of a semaphore (weighted acquisition). Only for
    /// [`Locks::semaphore`]; on other locks it is a configuration error.
    pub fn permits(mut self, count: u32) -> Self {
        self.options.mode = match self.options.mode {
            LockMode::Permits { limit, .. } => LockMode::Permits { count, limit },
            // Keep the request visibly invalid instead of silently ignoring it.
            _ => LockMode::Permits { count, limit: 0 },
        };
        self
    }

    /// Higher is served first on backends with priority queues; elsewhere a non-zero
    /// priority fails with [`ErrorKind::Unsupported`].
    pub fn priority(mut self, priority: i32) -> Self {
        self.options.priority = priority;
        self
    }

    /// Free text shown by inspection, such as `"nightly backup"`.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.options.description = Some(description.into());
        self
    }

    /// The options as set so far.
    pub fn options(&self) -> &AcquireOptions {
        &self.options
    }

    /// Acquires the lock.
    ///
    /// Errors: [`ErrorKind::WouldBlock`] (no-wait and held), [`ErrorKind::Timeout`] (wait bound
    /// passed), [`ErrorKind::InvalidName`], [`ErrorKind::Config`], [`ErrorKind::Unsupported`],
    /// and the backend's connection errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future leaves nothing held or queued.
    pub async fn acquire(self) -> Result<Lease> {
        self.locks.acquire_with(&self.name, self.options).await
    }
}

/// The two sides of a read-write lock.
#[derive(Debug, Clone)]
pub struct RwLockBuilder {
    locks: Locks,
    name: String,
}

impl RwLockBuilder {
    /// The shared (read) side.
    pub fn read(self) -> LockBuilder {
        self.locks.builder(self.name, LockMode::Shared)
    }

    /// The exclusive (write) side.
    pub fn write(self) -> LockBuilder {
        let mut builder = self.locks.builder(self.name, LockMode::Exclusive);
        builder.options.write_side = true;
        builder
    }
}
