//! Thin wrappers over the few syscalls libstd does not cover: OFD byte-range locks and statfs.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

// OFD locks take a 64-bit `struct flock`; on 32-bit targets libc's `flock` has a 32-bit off_t
// and the lock bytes at 2^40 would not fit.
const _: () = assert!(
    std::mem::size_of::<libc::off_t>() == 8,
    "distlock-file needs a 64-bit off_t (a 64-bit Linux target)"
);

/// The kind of an OFD lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockType {
    /// `F_RDLCK`.
    Read,
    /// `F_WRLCK`.
    Write,
}

impl LockType {
    fn raw(self) -> libc::c_short {
        match self {
            LockType::Read => libc::F_RDLCK as libc::c_short,
            LockType::Write => libc::F_WRLCK as libc::c_short,
        }
    }
}

fn flock(l_type: libc::c_short, start: u64, len: u64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes is a valid value; zeroing
    // also gives OFD requests the `l_pid == 0` they require.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    fl.l_len = len as libc::off_t;
    fl
}

fn fcntl_lock(file: &File, cmd: libc::c_int, fl: &mut libc::flock) -> io::Result<()> {
    // SAFETY: the descriptor is open for the lifetime of `file`, and `fl` is a valid, exclusively
    // borrowed `struct flock` the kernel reads and (for GETLK) writes.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, fl as *mut libc::flock) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Takes an OFD lock on `[start, start + len)` without waiting. `Ok(false)` when another open
/// file description (or a classic POSIX lock) holds a conflicting lock.
pub(crate) fn try_lock(file: &File, kind: LockType, start: u64, len: u64) -> io::Result<bool> {
    let mut fl = flock(kind.raw(), start, len);
    loop {
        match fcntl_lock(file, libc::F_OFD_SETLK, &mut fl) {
            Ok(()) => return Ok(true),
            Err(e) => match e.raw_os_error() {
                // POSIX allows either errno for "held by someone else".
                Some(libc::EAGAIN) | Some(libc::EACCES) => return Ok(false),
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            },
        }
    }
}

/// Takes an OFD lock on `[start, start + len)`, blocking until it is granted. Retries when a
/// signal interrupts the wait.
pub(crate) fn lock_wait(file: &File, kind: LockType, start: u64, len: u64) -> io::Result<()> {
    let mut fl = flock(kind.raw(), start, len);
    loop {
        match fcntl_lock(file, libc::F_OFD_SETLKW, &mut fl) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Drops this description's locks on `[start, start + len)` (len 0: to the end of the space).
pub(crate) fn unlock(file: &File, start: u64, len: u64) -> io::Result<()> {
    let mut fl = flock(libc::F_UNLCK as libc::c_short, start, len);
    loop {
        match fcntl_lock(file, libc::F_OFD_SETLK, &mut fl) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// A lock seen by [`probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeenLock {
    /// First locked byte.
    pub start: u64,
    /// One past the last locked byte (`u64::MAX` for "to the end of the file and beyond").
    pub end: u64,
    /// Read or write.
    pub kind: LockType,
    /// The holder's pid for classic POSIX locks; `None` for OFD locks, which belong to an open
    /// file description rather than a process.
    pub pid: Option<u32>,
}

/// `F_OFD_GETLK`: one lock, held through another description, that would conflict with a write
/// lock on `[start, start + len)`; `None` when the range is free.
pub(crate) fn probe(file: &File, start: u64, len: u64) -> io::Result<Option<SeenLock>> {
    let mut fl = flock(LockType::Write.raw(), start, len);
    loop {
        match fcntl_lock(file, libc::F_OFD_GETLK, &mut fl) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(()) => break,
        }
    }
    if fl.l_type == libc::F_UNLCK as libc::c_short {
        return Ok(None);
    }
    let start = fl.l_start.max(0) as u64;
    let end = if fl.l_len <= 0 {
        u64::MAX
    } else {
        start.saturating_add(fl.l_len as u64)
    };
    let kind = if fl.l_type == libc::F_RDLCK as libc::c_short {
        LockType::Read
    } else {
        LockType::Write
    };
    let pid = (fl.l_pid > 0).then_some(fl.l_pid as u32);
    Ok(Some(SeenLock {
        start,
        end,
        kind,
        pid,
    }))
}

/// Every distinct lock held through other descriptions in `[start, end)`, found by splitting
/// the range around each lock `F_OFD_GETLK` reports: about two probes per lock, rather than one
/// per byte. Where several read locks cover the same bytes only one of them is reported.
pub(crate) fn probe_all(file: &File, start: u64, end: u64) -> io::Result<Vec<SeenLock>> {
    let mut seen = Vec::new();
    let mut todo = vec![(start, end)];
    while let Some((a, b)) = todo.pop() {
        if a >= b {
            continue;
        }
        let Some(lock) = probe(file, a, b - a)? else {
            continue;
        };
        let (s, e) = (lock.start.max(a), lock.end.min(b));
        if s >= e {
            // The kernel reported a lock outside the range asked about; should not happen, but
            // do not loop on it.
            continue;
        }
        seen.push(lock);
        todo.push((a, s));
        todo.push((e, b));
    }
    seen.sort_by_key(|l| l.start);
    Ok(seen)
}

/// Reads into `buf` at `offset` until it is full or the file ends; returns the bytes read.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The number of names `file` has (0 once deleted), from `statx(STATX_NLINK)`.
///
/// Deliberately not `fstat`: asking for the change time marks it "queried", and with the
/// kernel's multi-grain timestamps the next write must then store a fine-grained ctime, which
/// dirties the inode (an ext4 journal transaction) on every acquisition.
pub(crate) fn link_count(file: &File) -> io::Result<u32> {
    // SAFETY: zeroed bytes are a valid `statx`, which the kernel fills in.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the lifetime of `file`; the path is an empty
    // NUL-terminated string, as AT_EMPTY_PATH requires; `stx` is a valid out-pointer.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_NLINK,
            &mut stx,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(stx.stx_nlink)
}

/// The `f_type` of the file system holding `path`.
pub(crate) fn fs_type(path: &Path) -> io::Result<i64> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: zeroed bytes are a valid `statfs`; the kernel fills it in.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` a valid out-pointer.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut st) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // __fsword_t differs between targets
    Ok(st.f_type as i64)
}

/// `faccessat(path, W_OK | X_OK, AT_EACCESS)`: can this process create files in `path`?
/// (Root passes permission bits, but not a read-only file system.)
pub(crate) fn check_writable_dir(path: &Path) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: `c_path` is a valid NUL-terminated string.
    let rc = unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        )
    };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The effective uid of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}

/// The file-system magic of NFS (`NFS_SUPER_MAGIC`).
pub(crate) const NFS_SUPER_MAGIC: i64 = 0x6969;
/// The file-system magics of SMB/CIFS, where byte-range locks are mandatory.
pub(crate) const SMB_MAGICS: [i64; 3] = [0x517B, 0xFF53_4D42, 0xFE53_4D42];
