//! File-lock peers: the raw `F_OFD_SETLKW` floor (always built) and, with the `rust-peers`
//! feature, the fd-lock crate. Both wait in the kernel, as distlock's file backend does. The
//! URL is distlock's `file:///dir`; the lock `name` is the file `dir/name`.

use std::path::PathBuf;

use super::{BoxFuture, PeerLock, RustPeer};
use crate::Result;
use crate::floors::file::OfdWaitLock;

/// This module's peers.
pub fn peers() -> Vec<RustPeer> {
    #[allow(unused_mut)] // without the rust-peers feature, only the floor
    let mut peers = vec![RustPeer {
        lib: "raw-ofd",
        version: "libc",
        connect: |url, name| {
            Box::pin(async move {
                let lock = OfdWaitLock::new(&lock_path(&url, &name)?)?;
                Ok(Box::new(RawOfd(lock)) as Box<dyn PeerLock>)
            })
        },
    }];
    #[cfg(feature = "rust-peers")]
    peers.push(RustPeer {
        lib: "fd-lock",
        version: "4",
        connect: |url, name| {
            Box::pin(async move {
                let path = lock_path(&url, &name)?;
                Ok(Box::new(FdLock { path, held: None }) as Box<dyn PeerLock>)
            })
        },
    });
    peers
}

/// `dir/name` for the URL `file:///dir`.
fn lock_path(url: &str, name: &str) -> Result<PathBuf> {
    let dir = url
        .strip_prefix("file://")
        .ok_or_else(|| format!("{url}: not a file:// URL"))?;
    Ok(PathBuf::from(dir).join(name))
}

struct RawOfd(OfdWaitLock);

impl PeerLock for RawOfd {
    fn acquire(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.0.lock() })
    }

    fn release(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.0.unlock() })
    }
}

/// fd-lock's `RwLock::write()`: `flock(LOCK_EX)` on a file opened per acquisition and closed
/// at release, as distlock's file backend and the Python peers do. (The guard borrows the lock,
/// so it cannot outlive `acquire`; the lock goes with the closed descriptor instead.)
#[cfg(feature = "rust-peers")]
struct FdLock {
    path: PathBuf,
    held: Option<fd_lock::RwLock<std::fs::File>>,
}

#[cfg(feature = "rust-peers")]
impl PeerLock for FdLock {
    fn acquire(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)?;
            let mut lock = fd_lock::RwLock::new(file);
            std::mem::forget(lock.write()?);
            self.held = Some(lock);
            Ok(())
        })
    }

    fn release(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            drop(self.held.take());
            Ok(())
        })
    }
}
