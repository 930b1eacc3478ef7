//! The core of [distlock](https://docs.rs/distlock): lock names, options, leases with renewal
//! and loss signalling, fencing tokens, errors, and the small [`Backend`] trait that each
//! backend crate implements.
//!
//! Applications depend on the `distlock` facade crate; backend authors depend on this one.
//!
//! With the `conformance` feature this crate also carries the conformance suite that every
//! backend runs against a real server (see [`conformance`]).

mod backend;
mod client;
mod error;
mod fresh_read;
mod holder_rows;
mod inspect;
mod lease;
mod name;
mod options;
mod per_key;
pub mod telemetry;
mod token;
mod url;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use backend::{Backend, BoxFuture, Capabilities, HeldLock};
pub use client::{LockBuilder, Locks, RwLockBuilder};
pub use error::{Error, ErrorKind, Result};
pub use fresh_read::FreshReads;
pub use holder_rows::{HolderRows, ROW_GATHER, RowStore};
pub use inspect::{Holder, LockInfo, SLOT_PROBE, Waiter};
pub use lease::{Lease, LeaseSignal, LeaseState, drift_margin, recheck_jitter};
pub use name::{LockName, MAX_NAME_BYTES, NameRule};
pub use options::{
    AcquireOptions, AcquireRequest, DEFAULT_TTL, LockMode, MAX_DESCRIPTION_BYTES, MIN_TTL,
    OwnerInfo, Wait, current_pid, local_host,
};
pub use token::{FencingToken, OwnerId, ParseOwnerIdError};
pub use url::redact_url;

/// Installs rustls' `ring` crypto provider as the process default, unless one is installed
/// already.
///
/// TLS clients that build their configuration with `rustls::ClientConfig::builder()` (redis-rs,
/// zookeeper-client) take the process-wide provider, and rustls cannot pick one by itself when
/// several are compiled in: another crate of the program may enable `aws-lc-rs` beside the
/// backend's `ring`, and the first TLS connection would then panic. Backends call this before
/// they open one.
#[cfg(feature = "rustls")]
pub fn install_rustls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
