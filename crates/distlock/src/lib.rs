//! Distributed locks that stay correct when processes pause, crash and lose the network.
//!
//! One API over several backends, chosen by URL:
//!
//! | URL | backend | cargo feature |
//! |---|---|---|
//! | `file:///var/lock/myapp`, or no URL | local files (fcntl OFD locks) | `file` (default) |
//! | `redis://[user:pass@]host:port[/db]`, `redis+unix:///path/to/sock` | one Redis server | `redis` |
//! | `rediss://host:port` | one Redis server over TLS | `redis-tls` |
//! | `redis+cluster://h1:p1,h2:p2/` (`rediss+cluster://`) | Redis Cluster | `redis` |
//! | `redlock://h1:p1,h2:p2,h3:p3/` (`redlocks://`) | Redlock over independent masters | `redis` |
//! | `postgres://[user[:pass]@]host[:port]/db` (`postgresql://`) | PostgreSQL advisory locks | `postgres` (`postgres-tls` for `sslmode=require`) |
//! | `mysql://[user[:pass]@]host[:port]/db` (`mariadb://`) | MySQL / MariaDB `GET_LOCK` | `mysql` (`mysql-tls`) |
//! | `zk://h1:p1,h2:p2/chroot` (`zks://`) | ZooKeeper, Apache Curator's lock layout | `zookeeper` (`zookeeper-tls`) |
//! | `etcd://[user:pass@]h1:p1,h2:p2/[root]` (`etcds://`) | etcd, `etcdctl lock` layout | `etcd` (`etcd-tls`) |
//!
//! Each backend's URL options and guarantees are in `docs/<backend>.md`. A URL whose backend
//! feature is not enabled fails with [`ErrorKind::Unsupported`] naming the feature.
//!
//! ```no_run
//! # async fn demo() -> distlock::Result<()> {
//! use std::time::Duration;
//!
//! let locks = distlock::connect("file:///tmp/my-locks").await?;
//! let lease = locks
//!     .mutex("orders/42")
//!     .ttl(Duration::from_secs(15))
//!     .wait(Duration::from_secs(10))
//!     .acquire()
//!     .await?;
//! let token = lease.token(); // pass it to the resource: it rejects lower tokens
//! tokio::select! {
//!     _ = do_work(token.get()) => {}
//!     lost = lease.lost() => return Err(lost),
//! }
//! lease.release().await?;
//! # Ok(())
//! # }
//! # async fn do_work(_token: u64) {}
//! ```
//!
//! Without an async runtime, use [`blocking`].

pub mod blocking;

pub use distlock_core::{
    AcquireOptions, Backend, Capabilities, Error, ErrorKind, FencingToken, Holder, Lease,
    LeaseState, LockBuilder, LockInfo, LockMode, LockName, Locks, MAX_NAME_BYTES, OwnerId,
    OwnerInfo, Result, RwLockBuilder, Wait, Waiter, redact_url,
};

/// The backend crates, for their own configuration types.
pub mod backends {
    #[cfg(feature = "etcd")]
    pub use distlock_etcd as etcd;
    #[cfg(feature = "file")]
    pub use distlock_file as file;
    #[cfg(feature = "mysql")]
    pub use distlock_mysql as mysql;
    #[cfg(feature = "postgres")]
    pub use distlock_postgres as postgres;
    #[cfg(feature = "redis")]
    pub use distlock_redis as redis;
    #[cfg(feature = "zookeeper")]
    pub use distlock_zookeeper as zookeeper;
}

/// The environment variable holding the default URL, as the CLI reads it.
pub const URL_ENV: &str = "DISTLOCK_URL";

const CONNECT: &str = "connect";

/// Connects to the backend `url` names.
///
/// - `file:///absolute/dir`: lock files in that directory (created 0700 if missing);
/// - `file:` or the empty string: the file backend's default directory,
///   `$XDG_RUNTIME_DIR/distlock`, else `/tmp/distlock-<uid>`.
///
/// Errors are [`ErrorKind::InvalidUrl`] for a URL that cannot be understood,
/// [`ErrorKind::Unsupported`] for a backend not built into this binary, and the backend's own
/// errors (an unwritable or symlinked directory, an unreachable server). No error or log line
/// contains the URL's password.
///
/// # Cancel safety
///
/// Cancel safe: nothing is held until it returns.
pub async fn connect(url: &str) -> Result<Locks> {
    let scheme = match url.split_once(':') {
        Some((scheme, _)) => scheme.to_ascii_lowercase(),
        None if url.is_empty() => "file".to_owned(),
        None => {
            return Err(invalid_url(
                url,
                "expected scheme:..., such as file:///var/lock/app",
            ));
        }
    };
    match scheme.as_str() {
        "file" => connect_file(url),
        "redis" | "rediss" | "redis+unix" | "unix" | "redis+cluster" | "rediss+cluster"
        | "redlock" | "redlocks" => connect_redis(url).await,
        "postgres" | "postgresql" => connect_postgres(url).await,
        "mysql" | "mariadb" => connect_mysql(url).await,
        "zk" | "zks" | "zookeeper" => connect_zookeeper(url).await,
        "etcd" | "etcds" => connect_etcd(url).await,
        _ => Err(invalid_url(
            url,
            "unknown scheme; known: file, redis, rediss, redlock, postgres, mysql, zk, etcd",
        )),
    }
}

/// The URL to use when none is given: `$DISTLOCK_URL`, else the file backend's default
/// directory (`file:`).
pub fn default_url() -> String {
    std::env::var(URL_ENV)
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "file:".to_owned())
}

fn invalid_url(url: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::InvalidUrl,
        CONNECT,
        format!("invalid URL {:?}: {why}", redact_url(url)),
    )
}

// Unused only when every backend feature is enabled.
#[allow(dead_code)]
fn not_built(url: &str, backend: &str) -> Result<Locks> {
    Err(Error::new(
        ErrorKind::Unsupported,
        CONNECT,
        format!(
            "{:?}: the {backend} backend is not built in: enable the distlock cargo \
             feature \"{backend}\"",
            redact_url(url)
        ),
    ))
}

#[cfg(feature = "file")]
fn connect_file(url: &str) -> Result<Locks> {
    use distlock_file::FileBackend;

    if url.is_empty() || url.eq_ignore_ascii_case("file:") {
        return FileBackend::open_default().map(Locks::new);
    }
    let parsed = url::Url::parse(url).map_err(|e| invalid_url(url, &e.to_string()))?;
    if !matches!(parsed.host_str(), None | Some("") | Some("localhost")) {
        return Err(invalid_url(
            url,
            "a file URL names a local directory: file:///absolute/path",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid_url(url, "a file URL takes no query or fragment"));
    }
    if !url[5..].starts_with("//") {
        return Err(invalid_url(url, "expected file:///absolute/path"));
    }
    let dir = parsed
        .to_file_path()
        .map_err(|()| invalid_url(url, "expected file:///absolute/path"))?;
    FileBackend::open(dir).map(Locks::new)
}

#[cfg(not(feature = "file"))]
fn connect_file(url: &str) -> Result<Locks> {
    not_built(url, "file")
}

#[cfg(feature = "redis")]
async fn connect_redis(url: &str) -> Result<Locks> {
    distlock_redis::connect(url).await.map(Locks::new)
}

#[cfg(not(feature = "redis"))]
async fn connect_redis(url: &str) -> Result<Locks> {
    not_built(url, "redis")
}

#[cfg(feature = "postgres")]
async fn connect_postgres(url: &str) -> Result<Locks> {
    distlock_postgres::connect(url).await
}

#[cfg(not(feature = "postgres"))]
async fn connect_postgres(url: &str) -> Result<Locks> {
    not_built(url, "postgres")
}

#[cfg(feature = "mysql")]
async fn connect_mysql(url: &str) -> Result<Locks> {
    distlock_mysql::connect(url).await
}

#[cfg(not(feature = "mysql"))]
async fn connect_mysql(url: &str) -> Result<Locks> {
    not_built(url, "mysql")
}

#[cfg(feature = "zookeeper")]
async fn connect_zookeeper(url: &str) -> Result<Locks> {
    distlock_zookeeper::connect(url).await.map(Locks::new)
}

#[cfg(not(feature = "zookeeper"))]
async fn connect_zookeeper(url: &str) -> Result<Locks> {
    not_built(url, "zookeeper")
}

#[cfg(feature = "etcd")]
async fn connect_etcd(url: &str) -> Result<Locks> {
    distlock_etcd::connect(url).await.map(Locks::new)
}

#[cfg(not(feature = "etcd"))]
async fn connect_etcd(url: &str) -> Result<Locks> {
    not_built(url, "etcd")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rejects_unknown_schemes_and_malformed_file_urls() {
        for url in [
            "gopher://x",
            "nonsense",
            "file://otherhost/dir",
            "file:relative/dir",
            "file:///tmp/x?mode=1",
        ] {
            let err = connect(url).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{url}: {err}");
        }
    }

    #[cfg(not(feature = "redis"))]
    #[tokio::test]
    async fn planned_backends_say_so_without_leaking_passwords() {
        let err = connect("redis://user:hunter2@localhost:6379")
            .await
            .unwrap_err();
        assert!(err.is_unsupported(), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    }

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn redis_urls_reach_the_redis_backend_without_leaking_passwords() {
        for url in [
            "redis://user:hunter2@127.0.0.1:1/?connect_timeout=1s",
            "redis+cluster://user:hunter2@127.0.0.1:1/?connect_timeout=1s",
            "redlock://user:hunter2@127.0.0.1:1,127.0.0.1:1,127.0.0.1:1/?connect_timeout=1s",
        ] {
            let err = connect(url).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Connection, "{url}: {err}");
            assert_eq!(err.backend(), "redis");
            assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
        }
        let err = connect("redlock://h1:1,h2:2").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{err}");
    }

    #[tokio::test]
    async fn unreachable_servers_are_connection_errors_without_passwords() {
        #[allow(unused_mut)]
        let mut urls: Vec<(&str, &str)> = Vec::new();
        #[cfg(feature = "postgres")]
        urls.push(("postgres://u:hunter2@127.0.0.1:1/db", "postgres"));
        #[cfg(feature = "mysql")]
        urls.push(("mysql://u:hunter2@127.0.0.1:1/db", "mysql"));
        #[cfg(feature = "zookeeper")]
        urls.push(("zk://127.0.0.1:1/hunter2", "zookeeper"));
        #[cfg(feature = "etcd")]
        urls.push(("etcd://u:hunter2@127.0.0.1:1/", "etcd"));
        for (url, backend) in urls {
            let err = tokio::time::timeout(std::time::Duration::from_secs(60), connect(url))
                .await
                .unwrap_or_else(|_| panic!("{backend}: an unreachable server must fail, not hang"))
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Connection, "{url}: {err}");
            assert_eq!(err.backend(), backend, "{err}");
            if backend != "zookeeper" {
                assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
            }
        }
    }
}
