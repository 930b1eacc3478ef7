//! The ZooKeeper backend of [distlock](https://docs.rs/distlock): exclusive, shared and
//! semaphore locks on ZooKeeper in Apache Curator's lock layout, so that a Java service using
//! Curator's `InterProcessMutex` on the same path and distlock exclude each other.
//!
//! ```no_run
//! # async fn demo() -> distlock_core::Result<()> {
//! let locks = distlock_core::Locks::new(
//!     distlock_zookeeper::connect("zk://127.0.0.1:2181/").await?,
//! );
//! let lease = locks.mutex("orders/42").acquire().await?;
//! println!("token (czxid) {}", lease.token());
//! lease.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! - **Layout**: `/<root>/<escaped name>/_c_<uuid>-lock-<seq>`, ephemeral-sequential, as
//!   Curator's protected mode makes them; readers `__READ__`, writers `lock-`, semaphore
//!   holders `__PERM_<count>_<limit>__`. Nodes under the lock path whose names distlock does
//!   not know count as exclusive holders ordered by their sequence suffix.
//! - **Token**: the czxid of the lock node.
//! - **Waiting**: a watch on the predecessor only.
//! - **TLS**: `zks://host:port/?ca=/etc/zk/ca.pem[&cert=...&key=...]` with the `tls` feature
//!   (rustls); see [`connect`] and [`ZkTls`].
//! - **Session**: disconnected → Jeopardy; expired (or disconnected for a third of the session
//!   timeout) → Lost. After a session has expired, the next acquisition opens a new session
//!   on the same handle; locks of the old session stay Lost.
//!
//! The layout, guarantees and their limits are in `docs/zookeeper.md`.

mod backend;
#[cfg(feature = "tls")]
mod tls;

pub use backend::{ZkConfig, ZkTls, ZooKeeperBackend};

/// The backend's name in errors and metrics.
pub const BACKEND: &str = "zookeeper";

/// Connects to the ensemble that `url` names
/// (`zk://host:port[,host:port]/[chroot][?session_timeout=4s&root=distlock]`), or over TLS
/// with `zks://` (the `tls` feature) and the PEM file parameters `ca=<path>` (trust anchors;
/// without it the system's CA bundle), `cert=<path>` and `key=<path>` (a client certificate
/// and its key, together): `zks://host:port/[chroot]?ca=/etc/zk/ca.pem`. The server
/// certificate must chain to a trust anchor and name the host as the URL spells it (an IP
/// SAN for an IP address).
///
/// Errors: [`InvalidUrl`](distlock_core::ErrorKind::InvalidUrl) for a URL that cannot be
/// understood (including `cert=` without `key=` or the reverse, and TLS parameters on
/// `zk://`), [`Unsupported`](distlock_core::ErrorKind::Unsupported) for `zks://` without the
/// `tls` feature, [`Config`](distlock_core::ErrorKind::Config) for a PEM file that cannot be
/// read or used (the message names the file), [`Connection`](distlock_core::ErrorKind::Connection)
/// when no server answers or the TLS handshake fails.
///
/// # Cancel safety
///
/// Cancel safe: nothing is held until it returns.
pub async fn connect(url: &str) -> distlock_core::Result<ZooKeeperBackend> {
    ZooKeeperBackend::connect(ZkConfig::from_url(url)?).await
}
