//! The Redis backend of [distlock](https://docs.rs/distlock): exclusive, shared (read-write,
//! writer preference) and weighted-semaphore locks on one Redis server, a Redis Cluster, or
//! Redlock over independent masters, with fencing tokens and FIFO/priority queues that hand
//! the lock directly to the next live waiter.
//!
//! ```no_run
//! # async fn demo() -> distlock_core::Result<()> {
//! let locks = distlock_core::Locks::new(distlock_redis::connect("redis://127.0.0.1:6379").await?);
//! let lease = locks.mutex("orders/42").acquire().await?;
//! println!("token {}", lease.token());
//! lease.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! URL forms (see [`RedisConfig::from_url`]): `redis://`, `rediss://` (feature `tls`),
//! `redis+unix:///path`, `redis+cluster://h1:p1,h2:p2/`, `redlock://h1:p1,h2:p2,h3:p3/`.
//! The key layout, the guarantees and their limits are in `docs/redis.md`.

mod backend;
mod config;
mod conn;
mod keys;
mod scripts;

pub use backend::RedisBackend;
pub use config::{RedisConfig, Topology};
pub use keys::PREFIX as KEY_PREFIX;

/// The backend's name in errors and metrics.
pub const BACKEND: &str = "redis";

/// Connects to the Redis server, cluster or Redlock masters that `url` names.
///
/// Errors: [`InvalidUrl`](distlock_core::ErrorKind::InvalidUrl) for a URL that cannot be
/// understood, [`Connection`](distlock_core::ErrorKind::Connection) when a node cannot be
/// reached, [`Backend`](distlock_core::ErrorKind::Backend) when the user may not run scripts.
/// No message contains the URL's password.
///
/// # Cancel safety
///
/// Cancel safe: nothing is held until it returns.
pub async fn connect(url: &str) -> distlock_core::Result<RedisBackend> {
    RedisBackend::connect(RedisConfig::from_url(url)?).await
}
