//! distlock's file backend (being written).
#![allow(missing_docs)]
use std::path::{Path, PathBuf};

use distlock_core::{
    AcquireRequest, Backend, BoxFuture, Capabilities, HeldLock, LeaseSignal, LockInfo, LockName,
    Result,
};

pub struct FileBackend {
    dir: PathBuf,
}

impl FileBackend {
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Ok(FileBackend {
            dir: dir.as_ref().to_owned(),
        })
    }
    pub fn open_default() -> Result<Self> {
        Self::open(Self::default_dir())
    }
    pub fn default_dir() -> PathBuf {
        PathBuf::from("/tmp/distlock")
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Backend for FileBackend {
    fn name(&self) -> &'static str {
        "file"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::EXCLUSIVE_ONLY.with_shared().with_semaphore()
    }
    fn acquire<'a>(
        &'a self,
        _request: &'a AcquireRequest,
        _signal: LeaseSignal,
    ) -> BoxFuture<'a, Result<Box<dyn HeldLock>>> {
        todo!()
    }
    fn inspect<'a>(&'a self, _name: &'a LockName) -> BoxFuture<'a, Result<LockInfo>> {
        todo!()
    }
    fn list<'a>(&'a self, _prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        todo!()
    }
    fn force_release<'a>(&'a self, _name: &'a LockName) -> BoxFuture<'a, Result<usize>> {
        todo!()
    }
}
