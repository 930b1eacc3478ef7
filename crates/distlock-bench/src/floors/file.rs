//! The file backend's floor: an uncontended fcntl OFD lock cycle with libc directly.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::Result;

/// `open(O_RDWR|O_CREAT|O_CLOEXEC)` + `fcntl(F_OFD_SETLK, F_WRLCK)` + unlock + `close` on one
/// file: what any fcntl-based lock must do at the least.
#[derive(Debug)]
pub struct OfdCycle {
    path: CString,
}

impl OfdCycle {
    /// A cycle on the file `path` (created on first use).
    pub fn new(path: &Path) -> Result<Self> {
        Ok(OfdCycle {
            path: CString::new(path.as_os_str().as_bytes())?,
        })
    }

    /// One cycle. Fails if the lock is held elsewhere.
    pub fn cycle(&mut self) -> Result<()> {
        let fd = open_rw(&self.path)?;
        let locked = ofd_setlk(fd, libc::F_WRLCK as libc::c_short);
        let unlocked = locked.and_then(|()| ofd_setlk(fd, libc::F_UNLCK as libc::c_short));
        close(fd)?;
        unlocked.map_err(|e| format!("fcntl(F_OFD_SETLK): {e}").into())
    }
}

/// The same cycle plus what a fencing token stored in the lock file costs at the least:
/// `pread` of the counter and `pwrite` of the next value while the lock is held.
///
/// Information only: it shows how much of distlock's time a persisted token explains.
#[derive(Debug)]
pub struct OfdTokenCycle {
    path: CString,
}

impl OfdTokenCycle {
    /// A cycle on the file `path` (created on first use).
    pub fn new(path: &Path) -> Result<Self> {
        Ok(OfdTokenCycle {
            path: CString::new(path.as_os_str().as_bytes())?,
        })
    }

    /// One cycle: open, lock, read the counter, write it plus one, unlock, close.
    pub fn cycle(&mut self) -> Result<()> {
        let fd = open_rw(&self.path)?;
        let outcome = ofd_setlk(fd, libc::F_WRLCK as libc::c_short).and_then(|()| {
            let mut counter = [0u8; 8];
            // SAFETY: fd is open; the buffer is 8 writable bytes.
            let read = unsafe { libc::pread(fd, counter.as_mut_ptr().cast(), 8, 0) };
            if read < 0 {
                return Err(io::Error::last_os_error());
            }
            let next = u64::from_le_bytes(counter).wrapping_add(1).to_le_bytes();
            // SAFETY: fd is open; the buffer is 8 readable bytes.
            if unsafe { libc::pwrite(fd, next.as_ptr().cast(), 8, 0) } != 8 {
                return Err(io::Error::last_os_error());
            }
            ofd_setlk(fd, libc::F_UNLCK as libc::c_short)
        });
        close(fd)?;
        outcome.map_err(|e| format!("token cycle: {e}").into())
    }
}

fn open_rw(path: &CString) -> Result<libc::c_int> {
    // SAFETY: path is NUL-terminated; the mode is passed for O_CREAT.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(format!("open: {}", io::Error::last_os_error()).into());
    }
    Ok(fd)
}

/// A whole-file OFD lock taken by waiting in the kernel (`F_OFD_SETLKW`), on a descriptor opened
/// at lock and closed at unlock: the floor of a blocking hand-off between processes.
#[derive(Debug)]
pub struct OfdWaitLock {
    path: CString,
    fd: Option<libc::c_int>,
}

impl OfdWaitLock {
    /// A lock on the file `path` (created on first use).
    pub fn new(path: &Path) -> Result<Self> {
        Ok(OfdWaitLock {
            path: CString::new(path.as_os_str().as_bytes())?,
            fd: None,
        })
    }

    /// Opens the file and waits for the lock.
    pub fn lock(&mut self) -> Result<()> {
        let fd = open_rw(&self.path)?;
        if let Err(e) = ofd_lock(fd, libc::F_WRLCK as libc::c_short, libc::F_OFD_SETLKW) {
            close(fd)?;
            return Err(format!("fcntl(F_OFD_SETLKW): {e}").into());
        }
        self.fd = Some(fd);
        Ok(())
    }

    /// Unlocks and closes.
    pub fn unlock(&mut self) -> Result<()> {
        let Some(fd) = self.fd.take() else {
            return Ok(());
        };
        let unlocked = ofd_setlk(fd, libc::F_UNLCK as libc::c_short);
        close(fd)?;
        unlocked.map_err(|e| format!("fcntl(F_OFD_SETLK): {e}").into())
    }
}

impl Drop for OfdWaitLock {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            let _ = close(fd);
        }
    }
}

fn ofd_setlk(fd: libc::c_int, kind: libc::c_short) -> io::Result<()> {
    ofd_lock(fd, kind, libc::F_OFD_SETLK)
}

fn ofd_lock(fd: libc::c_int, kind: libc::c_short, command: libc::c_int) -> io::Result<()> {
    // SAFETY: an all-zero flock is valid: whole file from offset 0, l_pid 0 as OFD locks need.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    loop {
        // SAFETY: fd is open and lock is a valid struct flock.
        if unsafe { libc::fcntl(fd, command, &lock) } == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

fn close(fd: libc::c_int) -> Result<()> {
    // SAFETY: fd is open and owned by the caller, closed once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(format!("close: {}", io::Error::last_os_error()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_leave_the_file_unlocked() {
        let dir = tempfile::tempdir().unwrap();
        let mut plain = OfdCycle::new(&dir.path().join("a.lock")).unwrap();
        let mut token = OfdTokenCycle::new(&dir.path().join("b.lock")).unwrap();
        for _ in 0..3 {
            plain.cycle().unwrap();
            token.cycle().unwrap();
        }
        let counter = std::fs::read(dir.path().join("b.lock")).unwrap();
        assert_eq!(u64::from_le_bytes(counter[..8].try_into().unwrap()), 3);
    }

    #[test]
    fn a_held_lock_makes_the_cycle_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held.lock");
        let mut holder = OfdCycle::new(&path).unwrap();
        let fd = open_rw(&holder.path).unwrap();
        ofd_setlk(fd, libc::F_WRLCK as libc::c_short).unwrap();
        assert!(holder.cycle().is_err());
        close(fd).unwrap();
        holder.cycle().unwrap();
    }
}
