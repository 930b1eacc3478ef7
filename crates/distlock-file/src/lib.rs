//! distlock's file backend: one lock file per name in a local directory, locked with Linux
//! open-file-description (OFD) byte-range locks. No server, no setup: the default backend.
//!
//! ```no_run
//! # async fn demo() -> distlock_core::Result<()> {
//! use distlock_core::Locks;
//! use distlock_file::FileBackend;
//!
//! let locks = Locks::new(FileBackend::open_default()?);
//! let lease = locks.mutex("orders/42").acquire().await?;
//! println!("token {}", lease.token());
//! lease.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! What it gives, in short (the full story, with the file layout, is `docs/file-backend.md`):
//!
//! - **Modes**: exclusive, shared (read) and counting semaphores with weighted permits. No
//!   priorities.
//! - **Liveness**: a lock lasts exactly as long as the holder's open file description; when the
//!   process exits or crashes, the kernel drops it. Leases never expire while the holder lives,
//!   so the TTL only sets how often `force_release` and a deleted lock file are noticed.
//! - **Fencing tokens**: a counter in the lock file, never below the wall clock in
//!   microseconds, so tokens keep increasing even after the directory is wiped (tmpfs at
//!   reboot) or rolled back (power loss; nothing is fsynced).
//! - **Waiting**: in the kernel (`F_OFD_SETLKW`) on a dedicated thread per waiting acquisition;
//!   no polling, except a semaphore waiter that needs some, not all, of the taken permits.
//! - **Interop**: classic POSIX locks (`lockf`, `fcntl(F_SETLK)`) over the whole lock file
//!   exclude distlock and are excluded by it. `flock(2)` locks do not interact.
//!
//! Linux only (OFD locks need Linux 3.15 or later, and a 64-bit target).

#![cfg_attr(
    not(target_os = "linux"),
    doc = "**This build target is not Linux: the file backend needs Linux OFD locks.**"
)]

#[cfg(not(target_os = "linux"))]
compile_error!("distlock-file needs Linux: it is built on fcntl open-file-description locks");

mod acquire;
mod dir;
mod error;
mod inspect;
mod layout;
mod name;
mod pool;
mod record;
mod sys;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use distlock_core::{
    AcquireRequest, Backend, BoxFuture, Capabilities, Error, ErrorKind, HeldLock, LeaseSignal,
    LockInfo, LockMode, LockName, Result, Wait,
};

use crate::acquire::{Acq, Blocker, CancelGuard, Progress, Target};
use crate::dir::Trust;
use crate::error::{BACKEND, io_error};
use crate::pool::Pool;

/// The largest semaphore the file backend accepts: each permit is one lock byte, and a waiter
/// scans the bytes it does not hold.
pub const MAX_PERMITS: u32 = 65_536;

/// The file backend: lock files in one directory.
///
/// Cheap to share (`Clone` shares its state). Every acquisition uses a file description of its
/// own (freshly opened, or an idle one from a small pool), so two acquisitions exclude each
/// other exactly as two processes do, whether they go through one `FileBackend` or several.
///
/// # Fork
///
/// A child created by `fork()` without `exec` inherits the descriptors of the locks held at
/// that moment, and so shares them. `release()` (or dropping the lease) in the process that
/// acquired a lock unlocks it even if a child still has a copy; the same call in the child only
/// closes the child's copy and leaves the parent's lock alone. Descriptors are close-on-exec.
#[derive(Debug, Clone)]
pub struct FileBackend {
    dir: PathBuf,
    trust: Trust,
    /// Idle descriptions of recently used lock files (see `pool.rs`).
    pool: Arc<Pool>,
}

impl FileBackend {
    /// Uses `dir` for lock files, creating it (mode 0700; missing parents with default
    /// permissions) if it does not exist.
    ///
    /// Fails with [`ErrorKind::Backend`], naming the path, when `dir` is a symbolic link, is
    /// not a directory, or is not writable by this process. On NFS it logs a warning (see
    /// `docs/file-backend.md` for what holds there).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir::prepare(dir.as_ref(), Trust::Named)?;
        Ok(FileBackend {
            dir,
            trust: Trust::Named,
            pool: Arc::new(Pool::new()),
        })
    }

    /// Uses [`default_dir`](Self::default_dir).
    ///
    /// Because the default may live in a shared place (`/tmp`), it is checked more strictly
    /// than a directory passed to [`open`](Self::open): besides being a real, writable
    /// directory it must belong to this user and be writable by nobody else. Otherwise another
    /// user could have created `/tmp/distlock-<uid>` in advance to read or hold our locks; the
    /// error says so instead of using it.
    pub fn open_default() -> Result<Self> {
        let dir = dir::prepare(&Self::default_dir(), Trust::Private)?;
        Ok(FileBackend {
            dir,
            trust: Trust::Private,
            pool: Arc::new(Pool::new()),
        })
    }

    /// The default lock directory: `$XDG_RUNTIME_DIR/distlock` when `XDG_RUNTIME_DIR` is set to
    /// an absolute path of an existing directory, else `/tmp/distlock-<uid>` (effective uid).
    ///
    /// `XDG_RUNTIME_DIR` is private to the user and usually a tmpfs that a reboot empties; the
    /// fencing tokens are built to survive that (see the crate docs).
    pub fn default_dir() -> PathBuf {
        if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
            let runtime = PathBuf::from(runtime);
            if runtime.is_absolute() && runtime.is_dir() {
                return runtime.join("distlock");
            }
        }
        PathBuf::from(format!("/tmp/distlock-{}", sys::euid()))
    }

    /// The lock directory in use (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, name: &LockName) -> PathBuf {
        let file_name = name::file_name(name.as_str());
        let mut path = PathBuf::with_capacity(self.dir.as_os_str().len() + 1 + file_name.len());
        path.push(&self.dir);
        path.push(file_name);
        path
    }

    /// Opens (creating) the lock file of `name` for locking. If the directory vanished since
    /// `open` (a tmp cleaner, a reboot of a tmpfs), it is recreated and vetted once more.
    fn open_for_lock(&self, name: &LockName, path: &Path) -> Result<File> {
        let attempt = || {
            open_noatime(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .mode(0o600),
                path,
            )
        };
        let opened = match attempt() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                dir::prepare(&self.dir, self.trust).map_err(|e| e.with_lock(name))?;
                attempt()
            }
            other => other,
        };
        opened.map_err(|e| io_error("cannot open lock file", path, e).with_lock(name))
    }

    /// Opens an existing lock file without creating it; `None` if there is none.
    fn open_existing(path: &Path, write: bool) -> io::Result<Option<File>> {
        match open_noatime(OpenOptions::new().read(true).write(write), path) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn acquire_inner(&self, request: &AcquireRequest) -> Result<Box<dyn HeldLock>> {
        let name = &request.name;
        if let LockMode::Permits { limit, .. } = request.options.mode
            && limit > MAX_PERMITS
        {
            return Err(Error::new(
                ErrorKind::Config,
                BACKEND,
                format!(
                    "the file backend supports semaphores of at most {MAX_PERMITS} permits, got {limit}"
                ),
            )
            .with_lock(name));
        }
        let target = Arc::new(Target {
            name: name.clone(),
            path: self.path_of(name),
        });
        let file = match self.pool.take(&target.path) {
            Some(file) => file,
            None => self.open_for_lock(name, &target.path)?,
        };
        let may_wait = request.options.wait != Wait::NoWait;
        let mut acq = Acq::new(
            file,
            Arc::clone(&target),
            Arc::clone(&self.pool),
            request.options.mode,
            request.owner.owner,
            may_wait,
        );
        // Fast path, on the caller's thread: a handful of non-blocking syscalls.
        let blocker = match acq.advance(None)? {
            Progress::Ready => return Ok(Box::new(acq.grant(&request.owner)?)),
            Progress::Blocked(blocker) => blocker,
            Progress::Cancelled => unreachable!("no waiter exists on the fast path"),
        };
        if !may_wait {
            // Let go of what we took before looking at who holds the rest.
            drop(acq);
            return Err(self.would_block(name, &target.path, request.options.mode, blocker));
        }
        // Slow path: show up as a waiter, then block in the kernel on a thread of our own.
        acq.claim_slot()?;
        acq.write_waiting_record(&request.owner, request.options.priority);
        tracing::debug!(lock = ?name, ?blocker, "waiting for the lock");
        let shared = acq.shared_for_wait();
        let receiver = acquire::spawn_waiter(acq, request.owner.clone(), shared.clone())?;
        // Declared after `receiver`, so dropped first: if this future is dropped, the guard
        // clears the waiting record while the thread still owns it, then the receiver goes and
        // the thread releases whatever it is granted later.
        let _guard = CancelGuard(shared);
        match receiver.await {
            Ok(result) => result.map(|held| Box::new(held) as Box<dyn HeldLock>),
            Err(_) => Err(Error::new(
                ErrorKind::Backend,
                BACKEND,
                "the waiter thread ended without an answer",
            )
            .with_lock(name)),
        }
    }

    fn would_block(&self, name: &LockName, path: &Path, mode: LockMode, blocker: Blocker) -> Error {
        let holders = Self::open_existing(path, false)
            .ok()
            .flatten()
            .and_then(|file| inspect::snapshot(&file, name.as_str()).ok())
            .map(|snapshot| inspect::describe_holders(&snapshot.info))
            .unwrap_or_else(|| "held by another owner".to_owned());
        let message = match (blocker, mode) {
            (Blocker::Permits, LockMode::Permits { count, limit }) => {
                format!("fewer than {count} of {limit} permits are free; {holders}")
            }
            (Blocker::Counter, _) => format!(
                "the token counter stayed locked (a stopped process, or a foreign lock); {holders}"
            ),
            _ => holders,
        };
        Error::new(ErrorKind::WouldBlock, BACKEND, message).with_lock(name)
    }

    fn inspect_sync(&self, name: &LockName) -> Result<LockInfo> {
        let path = self.path_of(name);
        let read = || -> io::Result<LockInfo> {
            match Self::open_existing(&path, false)? {
                Some(file) => Ok(inspect::snapshot(&file, name.as_str())?.info),
                None => Ok(LockInfo::new(name.as_str(), BACKEND)),
            }
        };
        read().map_err(|e| io_error("cannot inspect lock file", &path, e).with_lock(name))
    }

    fn force_release_sync(&self, name: &LockName) -> Result<usize> {
        let path = self.path_of(name);
        let revoke = || -> io::Result<usize> {
            match Self::open_existing(&path, true)? {
                Some(file) => inspect::revoke_all(&file, name.as_str()),
                None => Ok(0),
            }
        };
        let marked = revoke().map_err(|e| {
            io_error("cannot revoke holders in lock file", &path, e).with_lock(name)
        })?;
        tracing::debug!(lock = ?name, marked, "force release marked holders revoked");
        Ok(marked)
    }

    fn list_sync(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        let encoded_prefix = name::percent_encode(prefix);
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| io_error("cannot read lock directory", &self.dir, e))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("cannot read lock directory", &self.dir, e))?;
            let Ok(file_name) = entry.file_name().into_string() else {
                continue;
            };
            // `file_type` does not follow symlinks: a planted link is skipped, not read.
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            if !is_file || !name::may_match_prefix(&file_name, &encoded_prefix) {
                continue;
            }
            let path = entry.path();
            match Self::list_one(&path, &file_name, prefix) {
                Ok(Some(info)) => found.push(info),
                Ok(None) => {}
                // One unreadable or vanished file must not hide every other lock.
                Err(error) => {
                    tracing::debug!(path = %path.display(), %error, "skipping lock file in list")
                }
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    fn list_one(path: &Path, file_name: &str, prefix: &str) -> io::Result<Option<LockInfo>> {
        let Some(file) = Self::open_existing(path, false)? else {
            return Ok(None);
        };
        if !inspect::anything_locked(&file)? {
            return Ok(None);
        }
        let Some(name) = inspect::header_name(&file)?.or_else(|| name::decode_file_name(file_name))
        else {
            return Ok(None);
        };
        if !name.starts_with(prefix) {
            return Ok(None);
        }
        let info = inspect::snapshot(&file, &name)?.info;
        Ok((info.is_held() || !info.waiters.is_empty()).then_some(info))
    }
}

/// Opens `path` with `O_NOFOLLOW` (refusing a planted symlink; std always adds `O_CLOEXEC`) and
/// `O_NOATIME`. Without `O_NOATIME` every read of the counter would update the access time (the
/// file's mtime is always newer, so even `relatime` updates it), dirtying the inode on every
/// acquisition. The kernel allows `O_NOATIME` only to the file's owner; otherwise (`EPERM`) the
/// file is opened without it.
fn open_noatime(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    match options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            options.custom_flags(libc::O_NOFOLLOW).open(path)
        }
        other => other,
    }
}

impl Backend for FileBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::EXCLUSIVE_ONLY.with_shared().with_semaphore()
    }

    /// Acquires an OFD lock on the name's lock file: non-blocking on the caller's thread
    /// first; if that would block and the request may wait, on a dedicated thread blocked in
    /// `F_OFD_SETLKW`. The wait bound itself is enforced by the core, which drops this future.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. Dropping the future clears the waiter's record at once; the waiter thread
    /// stays blocked in the kernel until it is granted the lock, and then closes its file
    /// description immediately, which releases everything it took.
    fn acquire<'a>(
        &'a self,
        request: &'a AcquireRequest,
        _signal: LeaseSignal,
    ) -> BoxFuture<'a, Result<Box<dyn HeldLock>>> {
        Box::pin(self.acquire_inner(request))
    }

    /// Reads the lock file's live records. A missing lock file is an idle lock (it is not
    /// created). A classic POSIX lock (`lockf`) on the file is reported as a holder with the
    /// pid the kernel gives, owner id 0 and token 0.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads, synchronously.
    fn inspect<'a>(&'a self, name: &'a LockName) -> BoxFuture<'a, Result<LockInfo>> {
        Box::pin(async move { self.inspect_sync(name) })
    }

    /// Scans the directory for lock files (symlinks skipped) whose name starts with `prefix`
    /// and that have holders or waiters, sorted by name.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads, synchronously.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        Box::pin(async move { self.list_sync(prefix) })
    }

    /// Marks every live holder's record revoked and returns how many were marked. This is
    /// cooperative: each holder sees the mark at its next renewal (every ttl/3), reports `Lost`
    /// and closes its file description. A holder that cannot run (stopped with SIGSTOP, or
    /// without a runtime renewing it) keeps the kernel lock until it runs again or exits.
    /// Classic POSIX locks of other programs cannot be revoked and are not counted.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it runs synchronously within one poll.
    fn force_release<'a>(&'a self, name: &'a LockName) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move { self.force_release_sync(name) })
    }
}
