//! The etcd backend of [distlock](https://docs.rs/distlock): exclusive, shared (read-write)
//! and semaphore locks on etcd v3, laid out as etcd's Go `concurrency.Mutex` and
//! `etcdctl lock` lay out theirs, so that they and distlock exclude each other.
//!
//! ```no_run
//! # async fn demo() -> distlock_core::Result<()> {
//! let backend = distlock_etcd::connect("etcd://127.0.0.1:2379/").await?;
//! let locks = distlock_core::Locks::new(backend.clone());
//! let lease = locks.mutex("orders-42").acquire().await?;
//! // Writes that must only happen while the lock is held:
//! let fence = backend.fence(&lease).expect("held by this backend");
//! let txn = fence.txn([], [distlock_etcd::etcd_client::TxnOp::put("orders/42", "paid", None)], []);
//! let done = backend.client().txn(txn).await.expect("etcd answers");
//! assert!(done.succeeded(), "the lock was lost before the write");
//! lease.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! - **Sessions**: one etcd lease per [`EtcdBackend`] (per `connect()`) and TTL in whole
//!   seconds, kept alive at a third of its TTL; the local deadline of a held lock counts from
//!   the send time of the last keep-alive etcd confirmed. A lease that expired or was revoked
//!   loses its locks, and the next acquisition grants a new one (never reviving the old).
//! - **Keys**: `<root><escaped name>/<lease id hex>`, ordered by create revision; the fencing
//!   token is the create revision.
//! - **Waiting**: a watch on the delete of the key with the next lower create revision.
//!
//! URL forms are described at [`EtcdConfig::from_url`]; the layout, guarantees and their
//! limits are in `docs/etcd.md`.

mod backend;
mod config;
mod keys;
mod watch_hub;

pub use backend::{EtcdBackend, Fence};
pub use config::EtcdConfig;
/// The etcd client crate this backend is built on, for [`Fence::txn`] and
/// [`EtcdBackend::client`].
pub use etcd_client;

/// The backend's name in errors and metrics.
pub const BACKEND: &str = "etcd";

/// Connects to the etcd cluster that `url` names
/// (`etcd://[user:password@]host:port[,host:port]/[root]`).
///
/// Errors: [`InvalidUrl`](distlock_core::ErrorKind::InvalidUrl) for a URL that cannot be
/// understood, [`Connection`](distlock_core::ErrorKind::Connection) when no endpoint answers,
/// [`Unsupported`](distlock_core::ErrorKind::Unsupported) for `etcds://` without the `tls`
/// feature. No message contains the URL's password.
///
/// # Cancel safety
///
/// Cancel safe: nothing is held until it returns.
pub async fn connect(url: &str) -> distlock_core::Result<EtcdBackend> {
    EtcdBackend::connect(EtcdConfig::from_url(url)?).await
}
