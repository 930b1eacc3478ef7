//! Rust lock crates for the network backends, each driven through the peer protocol.
//! Compiled with the `rust-peers` feature, except the etcd lock service, which needs nothing
//! beyond the etcd client distlock already uses.

use super::{BoxFuture, PeerLock, RustPeer};
use crate::Result;

/// This module's peers.
pub fn peers() -> Vec<RustPeer> {
    #[allow(unused_mut)] // without the rust-peers feature, only the etcd lock service
    let mut peers = vec![
        RustPeer {
            lib: "etcd-client-lock",
            version: "0.21",
            connect: |url, name| Box::pin(async move { etcd_lock(&url, name).await }),
        },
        RustPeer {
            lib: REDIS_RELAY,
            version: "1.8",
            connect: |url, name| Box::pin(async move { redis_relay(&url, name).await }),
        },
        RustPeer {
            lib: POSTGRES_RAW,
            version: "0.7",
            connect: |url, name| Box::pin(async move { postgres_raw(&url, &name).await }),
        },
        RustPeer {
            lib: MYSQL_RAW,
            version: "0.37",
            connect: |url, name| Box::pin(async move { mysql_raw(&url, name).await }),
        },
    ];
    #[cfg(feature = "rust-peers")]
    {
        peers.push(RustPeer {
            lib: "rslock",
            version: "0.9",
            connect: |url, name| Box::pin(async move { rslock_peer(&url, name) }),
        });
        peers.push(RustPeer {
            lib: "sqlx-pg-advisory-lock",
            version: "0.8",
            connect: |url, name| Box::pin(async move { sqlx_peer(&url, name).await }),
        });
    }
    peers
}

/// `host:port` of an `etcd://host:port/` URL.
fn etcd_endpoints(url: &str) -> Result<Vec<String>> {
    let rest = url
        .strip_prefix("etcd://")
        .ok_or_else(|| format!("{url}: not an etcd:// URL"))?;
    let hosts = rest.split('/').next().unwrap_or(rest);
    Ok(hosts.split(',').map(str::to_owned).collect())
}

/// etcd's own lock service (`Lock`/`Unlock` RPCs, the server-side `concurrency.Mutex`), under
/// one lease kept for the process, as `etcdctl lock` does.
async fn etcd_lock(url: &str, name: String) -> Result<Box<dyn PeerLock>> {
    let mut client = etcd_client::Client::connect(etcd_endpoints(url)?, None).await?;
    let lease = client.lease_grant(60, None).await?.id();
    Ok(Box::new(EtcdLock {
        client,
        lease,
        name,
        key: None,
    }))
}

struct EtcdLock {
    client: etcd_client::Client,
    lease: i64,
    name: String,
    key: Option<Vec<u8>>,
}

impl PeerLock for EtcdLock {
    fn acquire(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let options = etcd_client::LockOptions::new().with_lease(self.lease);
            let response = self.client.lock(self.name.as_str(), Some(options)).await?;
            self.key = Some(response.key().to_vec());
            Ok(())
        })
    }

    fn release(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if let Some(key) = self.key.take() {
                self.client.unlock(key).await?;
            }
            Ok(())
        })
    }
}

/// The hand-off reference on Redis: not a lock library but the least work a queued hand-off
/// through a Redis server takes.
pub const REDIS_RELAY: &str = "redis-blpop-relay";

/// One token in a Redis list, passed from client to client: acquire is `BLPOP` (the server
/// serves the longest-blocked client first), release is `LPUSH`. A hand-off is one command to
/// the server and one reply from it, with no script, token or record, so its gap is the
/// floor for any lock that queues its waiters in Redis. The first client to connect puts the
/// token in.
async fn redis_relay(url: &str, name: String) -> Result<Box<dyn PeerLock>> {
    let client = redis::Client::open(url)?;
    // A blocked BLPOP answers only when the token comes: no response timeout.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let list = format!("{name}:relay");
    let first: Option<String> = redis::cmd("SET")
        .arg(format!("{name}:relay-started"))
        .arg(1)
        .arg("NX")
        .query_async(&mut conn)
        .await?;
    if first.is_some() {
        redis::cmd("LPUSH")
            .arg(&list)
            .arg("token")
            .query_async::<()>(&mut conn)
            .await?;
    }
    Ok(Box::new(RedisRelay { conn, list }))
}

struct RedisRelay {
    conn: redis::aio::MultiplexedConnection,
    list: String,
}

impl PeerLock for RedisRelay {
    fn acquire(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            redis::cmd("BLPOP")
                .arg(&self.list)
                .arg(0)
                .query_async::<()>(&mut self.conn)
                .await?;
            Ok(())
        })
    }

    fn release(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            redis::cmd("LPUSH")
                .arg(&self.list)
                .arg("token")
                .query_async::<()>(&mut self.conn)
                .await?;
            Ok(())
        })
    }
}

/// The hand-off reference on PostgreSQL: a bare session advisory lock.
pub const POSTGRES_RAW: &str = "postgres-advisory-raw";

/// `pg_advisory_lock` (waiting in the server) + `pg_advisory_unlock`, prepared once, with the
/// client crate distlock uses: no token, no holder row, no session settings.
async fn postgres_raw(url: &str, name: &str) -> Result<Box<dyn PeerLock>> {
    let (client, lock, unlock) =
        crate::floors::keys::advisory_session(url, "SELECT pg_advisory_lock($1)").await?;
    Ok(Box::new(PostgresRaw {
        client,
        lock,
        unlock,
        key: crate::floors::keys::key_hash(name),
    }))
}

struct PostgresRaw {
    client: tokio_postgres::Client,
    lock: tokio_postgres::Statement,
    unlock: tokio_postgres::Statement,
    key: i64,
}

impl PeerLock for PostgresRaw {
    fn acquire(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.client.execute(&self.lock, &[&self.key]).await?;
            Ok(())
        })
    }

    fn release(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.client.execute(&self.unlock, &[&self.key]).await?;
            Ok(())
        })
    }
}

/// The hand-off reference on MySQL / MariaDB: a bare named lock.
pub const MYSQL_RAW: &str = "mysql-get-lock-raw";

/// `GET_LOCK(name, a year)` (waiting in the server; MariaDB takes no negative timeout) +
/// `RELEASE_LOCK(name)`, with the client crate distlock uses: no token, no holder row, no
/// session settings.
async fn mysql_raw(url: &str, name: String) -> Result<Box<dyn PeerLock>> {
    let conn = mysql_async::Conn::new(mysql_async::Opts::from_url(url)?).await?;
    Ok(Box::new(MysqlRaw { conn, name }))
}

struct MysqlRaw {
    conn: mysql_async::Conn,
    name: String,
}

impl PeerLock for MysqlRaw {
    fn acquire(&mut self) -> BoxFuture<'_, Result<()>> {
        use mysql_async::prelude::Queryable;
        Box::pin(async move {
            let got: Option<Option<i64>> = self
                .conn
                .exec_first("SELECT GET_LOCK(?, 31536000)", (&self.name,))
                .await?;
            match got.flatten() {
                Some(1) => Ok(()),
                other => Err(format!("GET_LOCK returned {other:?}").into()),
            }
        })
    }

    fn release(&mut self) -> BoxFuture<'_, Result<()>> {
        use mysql_async::prelude::Queryable;
        Box::pin(async move {
            let _: Option<Option<i64>> = self
                .conn
                .exec_first("SELECT RELEASE_LOCK(?)", (&self.name,))
                .await?;
            Ok(())
        })
    }
}

/// rslock's `LockManager` on one Redis server, retrying until it gets the lock (its own retry
/// count and delay per `lock()` call, looped).
#[cfg(feature = "rust-peers")]
fn rslock_peer(url: &str, name: String) -> Result<Box<dyn PeerLock>> {
    Ok(Box::new(Rslock {
        manager: rslock::LockManager::new(vec![url.to_owned()]),
        name,
        held: None,
    }))
}

#[cfg(feature = "rust-peers")]
struct Rslock {
    manager: rslock::LockManager,
    name: String,
    held: Option<rslock::Lock>,
}

#[cfg(feature = "rust-peers")]
impl PeerLock for Rslock {
    fn acquire(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let ttl = std::time::Duration::from_secs(30);
            loop {
                if let Ok(lock) = self.manager.lock(self.name.as_bytes(), ttl).await {
                    self.held = Some(lock);
                    return Ok(());
                }
            }
        })
    }

    fn release(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if let Some(lock) = self.held.take() {
                self.manager.unlock(&lock).await;
            }
            Ok(())
        })
    }
}

/// sqlx's `PgAdvisoryLock`: a session advisory lock waited for in the server, on one
/// connection kept for the process.
#[cfg(feature = "rust-peers")]
async fn sqlx_peer(url: &str, name: String) -> Result<Box<dyn PeerLock>> {
    use sqlx::Connection;
    let connection = sqlx::PgConnection::connect(url).await?;
    Ok(Box::new(SqlxLock {
        // The guard borrows the lock for as long as it is held, across our acquire/release
        // calls; one lock per worker process lives as long as the process.
        lock: Box::leak(Box::new(sqlx::postgres::PgAdvisoryLock::new(name))),
        idle: Some(connection),
        held: None,
    }))
}

#[cfg(feature = "rust-peers")]
struct SqlxLock {
    lock: &'static sqlx::postgres::PgAdvisoryLock,
    idle: Option<sqlx::PgConnection>,
    held: Option<sqlx::postgres::PgAdvisoryLockGuard<'static, sqlx::PgConnection>>,
}

#[cfg(feature = "rust-peers")]
impl PeerLock for SqlxLock {
    fn acquire(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let connection = self.idle.take().ok_or("the connection was lost")?;
            self.held = Some(self.lock.acquire(connection).await?);
            Ok(())
        })
    }

    fn release(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if let Some(guard) = self.held.take() {
                self.idle = Some(guard.release_now().await?);
            }
            Ok(())
        })
    }
}
