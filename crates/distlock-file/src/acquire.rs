//! Acquiring a lock: the lock-taking steps, the waiter thread, and the held lock.
//!
//! An acquisition is a small state machine ([`Acq`]) over one open file description. The
//! caller's thread runs it without blocking; if a step would block and the request may wait,
//! the whole `Acq` moves to a dedicated thread that runs the same steps with `F_OFD_SETLKW`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use distlock_core::{
    BoxFuture, Error, ErrorKind, FencingToken, HeldLock, LockMode, LockName, OwnerId, OwnerInfo,
    Result,
};
use tokio::sync::oneshot;

use crate::error::{BACKEND, io_error};
use crate::layout::{
    self, COUNTER_BYTE, COUNTER_OFFSET, EXCLUSIVE_SLOT_OFFSET, GATE_BYTE, HeaderState, LOCK_BASE,
    LOCK_END, MAIN_BYTE, PERMIT_BASE, RECORD_LOCK_BASE, SLOT_REVOKE, SLOTS, STATE_EMPTY,
    STATE_HOLDING, STATE_WAITING,
};
use crate::pool::Pool;
use crate::record::{self, Tail};
use crate::sys::{self, LockType};

/// The lock a request is about: its name and its lock file. Shared by the acquisition and the
/// held lock, for error messages.
#[derive(Debug)]
pub(crate) struct Target {
    /// The lock name.
    pub name: LockName,
    /// The lock file.
    pub path: PathBuf,
}

/// How many times the non-blocking path retries the counter byte before handing over to a
/// waiter thread. Other holders keep it for a `pread` and a `pwrite`, so it is almost always
/// free again within a few yields.
const COUNTER_SPINS: u32 = 200;

/// Longest pause between rescans of a semaphore's permits (see [`Acq::advance`]).
const MAX_PERMIT_POLL: Duration = Duration::from_millis(20);

/// What stopped a non-blocking step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocker {
    /// The main byte: a conflicting holder.
    Main,
    /// The semaphore gate: another waiter is collecting permits.
    Gate,
    /// Not enough free permits.
    Permits,
    /// The counter byte stayed locked (a stopped process, or a foreign lock).
    Counter,
}

/// The outcome of [`Acq::advance`].
#[derive(Debug)]
pub(crate) enum Progress {
    /// Every lock is taken; call [`Acq::grant`].
    Ready,
    /// A non-blocking step failed.
    Blocked(Blocker),
    /// The waiter was cancelled while waiting.
    Cancelled,
}

/// Shared between a waiter thread and the acquiring future.
pub(crate) struct WaitShared {
    state: Mutex<WaitState>,
    /// The waiter's file, to clear its waiting record if the future is dropped. Weak so that
    /// it never keeps the description (and so the lock) alive.
    file: Weak<File>,
    slot: Option<u32>,
}

struct WaitState {
    /// The future was dropped: whatever the thread gets, it lets go at once.
    cancelled: bool,
    /// The thread still waits: its waiting record is still its own.
    waiting: bool,
}

impl WaitShared {
    fn lock(&self) -> MutexGuard<'_, WaitState> {
        // A panic while holding this mutex leaves two booleans; they stay meaningful.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }
}

/// Dropped with the acquire future: marks the wait cancelled and clears the waiting record,
/// so inspection stops showing a waiter nobody awaits.
pub(crate) struct CancelGuard(pub(crate) Arc<WaitShared>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.cancelled = true;
        // Only while the thread still waits is the record ours: once it has been granted it
        // may have given the slot up, and another participant may already use it.
        if state.waiting
            && let (Some(slot), Some(file)) = (self.0.slot, self.0.file.upgrade())
        {
            let _ = file.write_all_at(&[STATE_EMPTY], layout::slot_offset(slot));
        }
    }
}

/// One acquisition in progress.
pub(crate) struct Acq {
    file: Arc<File>,
    target: Arc<Target>,
    /// Where the description goes after release.
    pool: Arc<Pool>,
    mode: LockMode,
    owner: OwnerId,
    /// Semaphore waiters serialise through the gate; `no_wait` callers skip it (they never
    /// hold permits while waiting, so they cannot deadlock a waiter).
    use_gate: bool,
    main: bool,
    gate: bool,
    permits: BTreeSet<u32>,
    counter_locked: bool,
    slot: Option<u32>,
    /// Set once `grant` handed the description to a [`FileHeld`].
    granted: bool,
}

impl Drop for Acq {
    fn drop(&mut self) {
        if !self.granted {
            // Failed, refused or cancelled: give up every lock now. Closing alone would not do
            // if a concurrent fork() left a copy of the descriptor in a child process.
            let _ = sys::unlock(&self.file, LOCK_BASE, LOCK_END - LOCK_BASE);
        }
    }
}

impl Acq {
    pub(crate) fn new(
        file: File,
        target: Arc<Target>,
        pool: Arc<Pool>,
        mode: LockMode,
        owner: OwnerId,
        may_wait: bool,
    ) -> Self {
        Acq {
            file: Arc::new(file),
            target,
            pool,
            mode,
            owner,
            use_gate: may_wait,
            main: false,
            gate: false,
            permits: BTreeSet::new(),
            counter_locked: false,
            slot: None,
            granted: false,
        }
    }

    fn fail(&self, what: &str, source: io::Error) -> Error {
        io_error(what, &self.target.path, source).with_lock(&self.target.name)
    }

    /// A starting point derived from the owner id (its low half is well mixed), so concurrent participants probe
    /// different slots and permits first instead of all colliding on index 0.
    fn spread(&self, modulus: u32) -> u32 {
        (self.owner.as_u128() % u128::from(modulus.max(1))) as u32
    }

    /// Takes whatever locks are still missing. With `wait == None` nothing blocks: a busy
    /// lock yields [`Progress::Blocked`]. With `Some`, it blocks in `F_OFD_SETLKW` (on a waiter
    /// thread) and stops early with [`Progress::Cancelled`] when the future is gone.
    ///
    /// Order: main byte, then (semaphores) gate and permits, then (non-exclusive) the counter
    /// byte. Every participant takes them in this order, so no two can wait on each other.
    pub(crate) fn advance(&mut self, wait: Option<&WaitShared>) -> Result<Progress> {
        let exclusive = self.mode == LockMode::Exclusive;
        if !self.main {
            let kind = if exclusive {
                LockType::Write
            } else {
                LockType::Read
            };
            match wait {
                None => {
                    let got = sys::try_lock(&self.file, kind, MAIN_BYTE, 1)
                        .map_err(|e| self.fail("cannot lock", e))?;
                    if !got {
                        return Ok(Progress::Blocked(Blocker::Main));
                    }
                }
                Some(shared) => {
                    if shared.is_cancelled() {
                        return Ok(Progress::Cancelled);
                    }
                    sys::lock_wait(&self.file, kind, MAIN_BYTE, 1)
                        .map_err(|e| self.fail("cannot lock", e))?;
                }
            }
            self.main = true;
        }
        if let LockMode::Permits { count, limit } = self.mode
            && (self.permits.len() as u64) < u64::from(count)
        {
            if self.use_gate && !self.gate {
                match wait {
                    None => {
                        let got = sys::try_lock(&self.file, LockType::Write, GATE_BYTE, 1)
                            .map_err(|e| self.fail("cannot lock the semaphore gate of", e))?;
                        if !got {
                            return Ok(Progress::Blocked(Blocker::Gate));
                        }
                    }
                    Some(shared) => {
                        if shared.is_cancelled() {
                            return Ok(Progress::Cancelled);
                        }
                        sys::lock_wait(&self.file, LockType::Write, GATE_BYTE, 1)
                            .map_err(|e| self.fail("cannot lock the semaphore gate of", e))?;
                    }
                }
                self.gate = true;
            }
            let mut pause = Duration::from_millis(1);
            loop {
                self.take_free_permits(count, limit)?;
                let held = self.permits.len() as u32;
                if held >= count {
                    break;
                }
                let Some(shared) = wait else {
                    return Ok(Progress::Blocked(Blocker::Permits));
                };
                if shared.is_cancelled() {
                    return Ok(Progress::Cancelled);
                }
                if count == limit {
                    // We need every permit, so one range lock over all of them waits in the
                    // kernel for exactly that (the ones we hold already do not conflict).
                    sys::lock_wait(&self.file, LockType::Write, PERMIT_BASE, u64::from(limit))
                        .map_err(|e| self.fail("cannot take the permits of", e))?;
                    self.permits.extend(0..limit);
                } else {
                    // We need *some* of the taken permits back, and fcntl cannot wait for "any
                    // one of these byte ranges": blocking on one permit could wait for the
                    // longest holder while others come and go. So the gate holder (only one
                    // waiter per semaphore) rescans, backing off to MAX_PERMIT_POLL.
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(MAX_PERMIT_POLL);
                }
            }
            if self.gate {
                sys::unlock(&self.file, GATE_BYTE, 1)
                    .map_err(|e| self.fail("cannot unlock the semaphore gate of", e))?;
                self.gate = false;
            }
        }
        if !exclusive && !self.counter_locked {
            match wait {
                None => {
                    let mut spins = 0;
                    while !sys::try_lock(&self.file, LockType::Write, COUNTER_BYTE, 1)
                        .map_err(|e| self.fail("cannot lock the counter of", e))?
                    {
                        spins += 1;
                        if spins >= COUNTER_SPINS {
                            return Ok(Progress::Blocked(Blocker::Counter));
                        }
                        std::thread::yield_now();
                    }
                }
                Some(_) => sys::lock_wait(&self.file, LockType::Write, COUNTER_BYTE, 1)
                    .map_err(|e| self.fail("cannot lock the counter of", e))?,
            }
            self.counter_locked = true;
        }
        Ok(Progress::Ready)
    }

    /// Takes free permit bytes, without blocking, until `count` are held or none is left.
    ///
    /// The common cases cost one call: a single permit at this owner's starting point, or a
    /// contiguous run for a weighted request. Otherwise the taken ranges are found with
    /// `F_OFD_GETLK` (about two probes per holder) and only bytes that looked free are tried,
    /// so a rescan of a full semaphore does not cost one syscall per permit.
    fn take_free_permits(&mut self, count: u32, limit: u32) -> Result<()> {
        let start = self.spread(limit);
        if self.permits.is_empty() {
            // Weighted requests try a contiguous run, single ones their starting point.
            let first = start.min(limit - count);
            let got = sys::try_lock(
                &self.file,
                LockType::Write,
                PERMIT_BASE + u64::from(first),
                u64::from(count),
            )
            .map_err(|e| self.fail("cannot take permits of", e))?;
            if got {
                self.permits.extend(first..first + count);
                return Ok(());
            }
        }
        let end = PERMIT_BASE + u64::from(limit);
        let busy = sys::probe_all(&self.file, PERMIT_BASE, end)
            .map_err(|e| self.fail("cannot probe the permits of", e))?;
        // Free index ranges, in index order, then rotated to begin at `start`.
        let mut free = Vec::new();
        let mut next = 0u32;
        for lock in &busy {
            let from = (lock.start.max(PERMIT_BASE) - PERMIT_BASE) as u32;
            let to = (lock.end.min(end) - PERMIT_BASE) as u32;
            if from > next {
                free.push((next, from));
            }
            next = next.max(to);
        }
        if next < limit {
            free.push((next, limit));
        }
        let split = free.partition_point(|&(_, to)| to <= start);
        free.rotate_left(split);
        for (from, to) in free {
            for index in from..to {
                if self.permits.len() as u32 >= count {
                    return Ok(());
                }
                if self.permits.contains(&index) {
                    continue;
                }
                let got = sys::try_lock(
                    &self.file,
                    LockType::Write,
                    PERMIT_BASE + u64::from(index),
                    1,
                )
                .map_err(|e| self.fail("cannot take a permit of", e))?;
                if got {
                    self.permits.insert(index);
                }
            }
        }
        Ok(())
    }

    /// Claims a free record slot (non-blocking) if none is held yet. Without a free slot the
    /// acquisition still goes on, just invisible to inspection and to `force_release`.
    pub(crate) fn claim_slot(&mut self) -> Result<()> {
        if self.slot.is_some() {
            return Ok(());
        }
        let start = self.spread(SLOTS);
        for step in 0..SLOTS {
            let slot = (start + step) % SLOTS;
            let byte = RECORD_LOCK_BASE + u64::from(slot);
            let got = sys::try_lock(&self.file, LockType::Write, byte, 1)
                .map_err(|e| self.fail("cannot claim a record slot in", e))?;
            if got {
                self.slot = Some(slot);
                return Ok(());
            }
            if step == 0 {
                // A classic POSIX lock over the whole file blocks every slot; do not scan 4096
                // bytes to find that out.
                let seen =
                    sys::probe(&self.file, byte, 1).map_err(|e| self.fail("cannot probe", e))?;
                if seen.is_some_and(|l| l.pid.is_some()) {
                    break;
                }
            }
        }
        tracing::debug!(lock = ?self.target.name, "no free record slot; this participant is not shown by inspect");
        Ok(())
    }

    /// Writes a "waiting" record for `owner` into the claimed slot. Best effort: a waiter that
    /// cannot write its record (a full disk) still waits, it is just not shown.
    pub(crate) fn write_waiting_record(&self, owner: &OwnerInfo, priority: i32) {
        let Some(slot) = self.slot else {
            return;
        };
        let mut buf = Vec::with_capacity(512);
        record::append_slot(
            &mut buf,
            STATE_WAITING,
            owner,
            owner.since,
            self.mode,
            Tail::Priority(priority),
        );
        if let Err(error) = self.file.write_all_at(&buf, layout::slot_offset(slot)) {
            tracing::debug!(lock = ?self.target.name, %error, "cannot write the waiting record");
        }
    }

    /// The slot this acquisition holds, for the cancel guard.
    pub(crate) fn shared_for_wait(&self) -> Arc<WaitShared> {
        Arc::new(WaitShared {
            state: Mutex::new(WaitState {
                cancelled: false,
                waiting: true,
            }),
            file: Arc::downgrade(&self.file),
            slot: self.slot,
        })
    }

    /// With every lock taken: bumps the counter, writes `owner`'s holder record and returns the
    /// held lock. The exclusive path is one `pread` and one `pwrite`.
    pub(crate) fn grant(mut self, owner: &OwnerInfo) -> Result<FileHeld> {
        let now = SystemTime::now();
        let mut head = [0u8; 16];
        let read = sys::read_full_at(&self.file, &mut head, 0)
            .map_err(|e| self.fail("cannot read the header of", e))?;
        let stored = match layout::header_state(&head[..read]) {
            HeaderState::New => None,
            HeaderState::Valid(counter) => Some(counter),
            HeaderState::Foreign => {
                return Err(Error::new(
                    ErrorKind::Backend,
                    BACKEND,
                    format!(
                        "{} is not a distlock lock file (unknown header); refusing to overwrite it",
                        self.target.path.display()
                    ),
                )
                .with_lock(&self.target.name));
            }
        };
        let token = next_token(stored.unwrap_or(0), now);
        // The counter, then the record: for the exclusive slot, which follows the counter in
        // the file, this is exactly the bytes to write.
        let mut buf = Vec::with_capacity(512);
        buf.extend_from_slice(&token.to_le_bytes());
        record::append_slot(
            &mut buf,
            STATE_HOLDING,
            owner,
            now,
            self.mode,
            Tail::Token(token),
        );
        let (counter, record) = buf.split_at(8);

        let held_slot = if self.mode == LockMode::Exclusive {
            // The main byte excludes every other participant, so the counter needs no lock of
            // its own, and counter + record go out in one write.
            let write = match stored {
                None => self.file.write_all_at(
                    &layout::full_header(token, record, self.target.name.as_str()),
                    0,
                ),
                Some(_) => self.file.write_all_at(&buf, COUNTER_OFFSET),
            };
            write.map_err(|e| self.fail("cannot write the holder record in", e))?;
            if let Some(slot) = self.slot.take() {
                // A waiter that got the lock: its record now lives in the exclusive slot.
                let _ = self
                    .file
                    .write_all_at(&[STATE_EMPTY], layout::slot_offset(slot));
                sys::unlock(&self.file, RECORD_LOCK_BASE + u64::from(slot), 1)
                    .map_err(|e| self.fail("cannot free the waiting record of", e))?;
            }
            HeldSlot::Exclusive
        } else {
            // Several read holders of the main byte may bump the counter at once; the counter
            // byte (held since `advance`) serialises them.
            let write = match stored {
                None => self.file.write_all_at(
                    &layout::full_header(token, &[], self.target.name.as_str()),
                    0,
                ),
                Some(_) => self.file.write_all_at(counter, COUNTER_OFFSET),
            };
            write.map_err(|e| self.fail("cannot write the counter of", e))?;
            sys::unlock(&self.file, COUNTER_BYTE, 1)
                .map_err(|e| self.fail("cannot unlock the counter of", e))?;
            self.counter_locked = false;
            self.claim_slot()?;
            match self.slot {
                Some(slot) => {
                    self.file
                        .write_all_at(record, layout::slot_offset(slot))
                        .map_err(|e| self.fail("cannot write the holder record in", e))?;
                    HeldSlot::Table(slot)
                }
                None => HeldSlot::Unrecorded,
            }
        };
        self.granted = true;
        Ok(FileHeld {
            file: Mutex::new(Some(Arc::clone(&self.file))),
            token: FencingToken::new(token),
            owner: self.owner,
            slot: held_slot,
            target: Arc::clone(&self.target),
            pool: Arc::clone(&self.pool),
            pid: distlock_core::current_pid(),
        })
    }
}

/// The next fencing token: one more than the stored counter, but never below the wall clock in
/// microseconds. The clock floor makes tokens survive a wiped (tmpfs) or rolled-back (power
/// loss without fsync) counter: a fresh counter starts above every token handed out before,
/// as long as the clock did not go back and acquisitions stayed below one per microsecond on
/// average.
pub(crate) fn next_token(stored: u64, now: SystemTime) -> u64 {
    let clock = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    stored.saturating_add(1).max(clock)
}

/// Runs a waiting acquisition for `owner` on its own thread and sends the result back.
pub(crate) fn spawn_waiter(
    acq: Acq,
    owner: OwnerInfo,
    shared: Arc<WaitShared>,
) -> Result<oneshot::Receiver<Result<FileHeld>>> {
    let (tx, rx) = oneshot::channel();
    let target = Arc::clone(&acq.target);
    std::thread::Builder::new()
        .name("distlock-file-wait".into())
        // The thread only blocks in fcntl and formats a record; a small stack keeps thousands
        // of waiters affordable.
        .stack_size(256 * 1024)
        .spawn(move || wait_thread(acq, owner, shared, tx))
        .map_err(|e| {
            Error::new(
                ErrorKind::Backend,
                BACKEND,
                "cannot start a waiter thread (too many threads?)",
            )
            .with_lock(&target.name)
            .with_source(e)
        })?;
    Ok(rx)
}

fn wait_thread(
    mut acq: Acq,
    owner: OwnerInfo,
    shared: Arc<WaitShared>,
    tx: oneshot::Sender<Result<FileHeld>>,
) {
    let started = Instant::now();
    let outcome = acq.advance(Some(&shared));
    {
        // From here on the waiting record is the thread's business, whatever the outcome: the
        // cancel guard must not touch the slot once we may unlock it (someone else could claim
        // it and write their own record).
        let mut state = shared.lock();
        state.waiting = false;
        if state.cancelled {
            // Nobody wants the lock any more: dropping `acq` unlocks everything at once.
            return;
        }
    }
    drop(shared);
    let result = match outcome {
        Ok(Progress::Ready) => acq.grant(&owner),
        Ok(Progress::Cancelled) => return,
        Ok(Progress::Blocked(_)) => Err(Error::new(
            ErrorKind::Backend,
            BACKEND,
            "internal error: a blocking wait reported a non-blocking failure",
        )
        .with_lock(&acq.target.name)),
        Err(error) => Err(error),
    };
    if let Ok(held) = &result {
        tracing::debug!(lock = ?held.target.name, token = %held.token, waited = ?started.elapsed(), "granted after waiting");
    }
    // If the receiver went away meanwhile, `send` hands the value back and dropping it
    // releases the lock synchronously.
    let _ = tx.send(result);
}

/// Where a holder's record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeldSlot {
    /// The exclusive slot in the header.
    Exclusive,
    /// A slot of the table.
    Table(u32),
    /// No slot was free: not visible, not revocable.
    Unrecorded,
}

/// A lock this process holds: the open file description carrying its OFD locks.
pub(crate) struct FileHeld {
    /// `None` once released. Closing the last reference to the description drops its locks.
    file: Mutex<Option<Arc<File>>>,
    token: FencingToken,
    owner: OwnerId,
    slot: HeldSlot,
    target: Arc<Target>,
    pool: Arc<Pool>,
    /// The process that was granted the lock. A fork child inherits this value (and the
    /// descriptor) but must never release the parent's lock.
    pid: u32,
}

impl FileHeld {
    fn file(&self) -> MutexGuard<'_, Option<Arc<File>>> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Releases synchronously: clears the record, unlocks, closes the description.
    /// Idempotent.
    fn release_now(&self) -> Result<()> {
        let Some(file) = self.file().take() else {
            return Ok(());
        };
        if distlock_core::current_pid() != self.pid {
            // We are a fork child holding a copy of the parent's description: unlocking would
            // take the lock away from the parent. Closing our copy leaves it alone.
            return Ok(());
        }
        if let HeldSlot::Table(slot) = self.slot {
            // Tidiness only: a record is dead anyway once its lock byte is free.
            let _ = file.write_all_at(&[STATE_EMPTY], layout::slot_offset(slot));
        }
        // Unlock explicitly rather than rely on close(): if another thread fork()ed meanwhile,
        // the child holds a copy of the descriptor until it execs or exits, and the locks of an
        // open file description only go away with its last descriptor.
        match sys::unlock(&file, LOCK_BASE, LOCK_END - LOCK_BASE) {
            Ok(()) => {
                // Unlocked: the description can serve the next acquisition of this name.
                if let Ok(file) = Arc::try_unwrap(file) {
                    self.pool.put(&self.target.path, file);
                }
                Ok(())
            }
            // Closing (when `file` drops) still releases, unless a fork child has a copy.
            Err(e) => {
                Err(io_error("cannot unlock", &self.target.path, e).with_lock(&self.target.name))
            }
        }
    }

    /// A failed renewal check. `EIO` and `ESTALE` mean the lock is gone: the Linux NFS client
    /// fails I/O on a descriptor whose lock the server revoked (its lease ran out during a
    /// partition), and `ESTALE` means the file was deleted on the server. Anything else leaves
    /// the outcome unknown (jeopardy, retried).
    fn renew_error(&self, what: &str, source: io::Error) -> Error {
        if matches!(source.raw_os_error(), Some(libc::EIO) | Some(libc::ESTALE)) {
            Error::new(
                ErrorKind::Lost,
                BACKEND,
                format!(
                    "{what} {}: the lock is gone (on NFS, the server revoked it or the file \
                     was deleted)",
                    self.target.path.display()
                ),
            )
            .with_lock(&self.target.name)
            .with_source(source)
        } else {
            io_error(what, &self.target.path, source).with_lock(&self.target.name)
        }
    }

    fn check_still_ours(&self) -> Result<()> {
        let guard = self.file();
        let Some(file) = guard.as_ref() else {
            return Err(
                Error::new(ErrorKind::Lost, BACKEND, "the lock was already released")
                    .with_lock(&self.target.name),
            );
        };
        let offset = match self.slot {
            HeldSlot::Exclusive => Some(EXCLUSIVE_SLOT_OFFSET),
            HeldSlot::Table(slot) => Some(layout::slot_offset(slot)),
            HeldSlot::Unrecorded => None,
        };
        if let Some(offset) = offset {
            let mut mark = [0u8; 16];
            sys::read_full_at(file, &mut mark, offset + SLOT_REVOKE)
                .map_err(|e| self.renew_error("cannot read the record in", e))?;
            if u128::from_le_bytes(mark) == self.owner.as_u128() {
                return Err(
                    Error::new(ErrorKind::Lost, BACKEND, "revoked by force release")
                        .with_lock(&self.target.name),
                );
            }
        }
        // Someone deleted (or replaced) the lock file: the next acquirer creates a new file and
        // gets a lock of its own, so ours no longer excludes anyone.
        let links = sys::link_count(file).map_err(|e| self.renew_error("cannot stat", e))?;
        if links == 0 {
            return Err(Error::new(
                ErrorKind::Lost,
                BACKEND,
                format!(
                    "the lock file {} was deleted, so it no longer excludes other processes",
                    self.target.path.display()
                ),
            )
            .with_lock(&self.target.name));
        }
        Ok(())
    }
}

impl HeldLock for FileHeld {
    fn token(&self) -> FencingToken {
        self.token
    }

    fn granted_at(&self) -> Option<Instant> {
        // A file lock lasts as long as its description, whatever the TTL says.
        None
    }

    fn renew(&self, _ttl: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.check_still_ours() })
    }

    fn release(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.release_now() })
    }
}

impl Drop for FileHeld {
    fn drop(&mut self) {
        if let Err(error) = self.release_now() {
            tracing::warn!(%error, "distlock file lock: unlock on drop failed; closing anyway");
        }
    }
}
