//! A small pool of idle lock-file descriptions, so an uncontended acquire + release costs a
//! few cheap syscalls instead of a path walk, a file allocation and its teardown.
//!
//! Why it is safe:
//! - A description enters the pool only after every lock on it was explicitly unlocked, and
//!   leaves it for one acquisition at a time: two acquisitions never share a description (they
//!   would not exclude each other).
//! - After `fork()` the child inherits the pool's descriptors, which it shares with the parent.
//!   The pool remembers the pid that filled it and a process that finds another pid drops
//!   its copies unused (closing a shared description's copy does not touch its locks).
//! - A pooled file may have been deleted or replaced since (a tmp cleaner, an operator): a
//!   lock on it would no longer exclude processes that open the new file. Each description is
//!   checked with `fstat` (link count > 0) when it is taken.
//! - At most [`POOL_CAP`] idle descriptors are kept per backend; beyond that they are closed.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::Path;
use std::sync::Mutex;

/// Idle descriptors kept per backend, across all names.
pub(crate) const POOL_CAP: usize = 32;

/// Idle, unlocked descriptions of lock files, by path.
///
/// Keyed by the path's bytes: a `Path` hashes component by component, which cost more than
/// the rest of the pool's work on every acquire and release.
#[derive(Debug)]
pub(crate) struct Pool {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    pid: u32,
    idle: HashMap<OsString, Vec<File>>,
    count: usize,
}

impl Inner {
    /// Empties the pool if it was filled by another process (we are a fork child).
    fn check_pid(&mut self, pid: u32) {
        if self.pid != pid {
            self.idle.clear();
            self.count = 0;
            self.pid = pid;
        }
    }
}

impl Pool {
    /// An empty pool owned by this process.
    pub(crate) fn new() -> Self {
        Pool {
            inner: Mutex::new(Inner {
                pid: distlock_core::current_pid(),
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle description of `path` whose file is still linked, if the pool has one.
    pub(crate) fn take(&self, path: &Path) -> Option<File> {
        let pid = distlock_core::current_pid();
        loop {
            let file = {
                let mut inner = self.lock();
                inner.check_pid(pid);
                let file = inner.idle.get_mut(path.as_os_str())?.pop()?;
                inner.count -= 1;
                file
            };
            if still_linked(&file) {
                return Some(file);
            }
            // Deleted or replaced: drop it and try the next one.
        }
    }

    /// Keeps `file`, whose locks have all been released, for the next acquisition of `path`.
    pub(crate) fn put(&self, path: &Path, file: File) {
        // No pid check here: if we forked since the pool was filled, the next `take` finds the
        // pid changed and drops everything, this file included.
        let mut inner = self.lock();
        if inner.count >= POOL_CAP {
            return; // closes `file`
        }
        inner.count += 1;
        match inner.idle.get_mut(path.as_os_str()) {
            Some(files) => files.push(file),
            None => {
                inner.idle.insert(path.as_os_str().to_owned(), vec![file]);
            }
        }
    }
}

/// Whether the open file still has a name.
fn still_linked(file: &File) -> bool {
    crate::sys::link_count(file).is_ok_and(|links| links > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_files_and_overflow_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.lock");
        let pool = Pool::new();
        pool.put(&path, File::create(&path).unwrap());
        assert!(pool.take(&path).is_some());
        assert!(pool.take(&path).is_none());
        pool.put(&path, File::create(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        assert!(
            pool.take(&path).is_none(),
            "a deleted file must not be reused"
        );
        for i in 0..POOL_CAP + 5 {
            let p = dir.path().join(format!("{i}.lock"));
            pool.put(&p, File::create(&p).unwrap());
        }
        assert_eq!(pool.lock().count, POOL_CAP);
    }

    #[test]
    fn a_pool_filled_by_another_process_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.lock");
        let pool = Pool::new();
        pool.put(&path, File::create(&path).unwrap());
        pool.lock().pid = std::process::id().wrapping_add(1); // as if we had forked since
        assert!(pool.take(&path).is_none());
        assert_eq!(pool.lock().count, 0);
    }
}
