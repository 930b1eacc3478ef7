//! Try-lock + unlock of one key, raw on every backend and through distlock: the clients of the
//! many-keys scenario.

use std::hash::{Hash, Hasher};
use std::path::Path;

use mysql_async::prelude::Queryable;
use zookeeper_client as zk;

use super::file::OfdCycle;
use crate::Result;
use crate::rust_peers::BoxFuture;

/// One client that can try-lock and unlock any key.
pub trait KeyLocker: Send {
    /// Takes `key` without waiting and gives it back: true, or false if someone else held it.
    fn cycle<'a>(&'a mut self, key: &'a str) -> BoxFuture<'a, Result<bool>>;
}

/// distlock: `mutex(key).no_wait().acquire()` + `release()`.
pub async fn distlock(url: &str) -> Result<Box<dyn KeyLocker>> {
    Ok(Box::new(Distlock(distlock::connect(url).await?)))
}

struct Distlock(distlock::Locks);

impl KeyLocker for Distlock {
    fn cycle<'a>(&'a mut self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            match self.0.mutex(key).no_wait().acquire().await {
                Ok(lease) => {
                    lease.release().await?;
                    Ok(true)
                }
                Err(e) if e.is_would_block() || e.is_not_acquired() => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// Files: `open` + `F_OFD_SETLK` + unlock + `close` of `dir/raw-<key>`.
pub fn file(dir: &Path) -> Result<Box<dyn KeyLocker>> {
    Ok(Box::new(RawFile(dir.to_owned())))
}

struct RawFile(std::path::PathBuf);

impl KeyLocker for RawFile {
    fn cycle<'a>(&'a mut self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let mut cycle = OfdCycle::new(&self.0.join(key))?;
            Ok(cycle.cycle().is_ok())
        })
    }
}

/// Redis: `SET key owner NX PX` + a compare-and-delete script (EVALSHA).
pub async fn redis(url: &str) -> Result<Box<dyn KeyLocker>> {
    let client = redis::Client::open(url)?;
    let connection = client.get_multiplexed_async_connection().await?;
    Ok(Box::new(RawRedis {
        connection,
        owner: format!("raw-{}", std::process::id()),
        release: redis::Script::new(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) \
             else return 0 end",
        ),
    }))
}

struct RawRedis {
    connection: redis::aio::MultiplexedConnection,
    owner: String,
    release: redis::Script,
}

impl KeyLocker for RawRedis {
    fn cycle<'a>(&'a mut self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let set: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(&self.owner)
                .arg("NX")
                .arg("PX")
                .arg(30_000)
                .query_async(&mut self.connection)
                .await?;
            if set.is_none() {
                return Ok(false);
            }
            let _: i64 = self
                .release
                .key(key)
                .arg(&self.owner)
                .invoke_async(&mut self.connection)
                .await?;
            Ok(true)
        })
    }
}

/// A 64-bit key for PostgreSQL's advisory locks.
pub(crate) fn key_hash(key: &str) -> i64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish() as i64
}

/// A tokio-postgres session with a lock and an unlock statement prepared on it.
pub(crate) async fn advisory_session(
    url: &str,
    lock_sql: &str,
) -> Result<(
    tokio_postgres::Client,
    tokio_postgres::Statement,
    tokio_postgres::Statement,
)> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let lock = client.prepare(lock_sql).await?;
    let unlock = client.prepare("SELECT pg_advisory_unlock($1)").await?;
    Ok((client, lock, unlock))
}

/// PostgreSQL: `pg_try_advisory_lock` + `pg_advisory_unlock`, prepared once.
pub async fn postgres(url: &str) -> Result<Box<dyn KeyLocker>> {
    let (client, lock, unlock) = advisory_session(url, "SELECT pg_try_advisory_lock($1)").await?;
    Ok(Box::new(RawPostgres {
        client,
        lock,
        unlock,
    }))
}

struct RawPostgres {
    client: tokio_postgres::Client,
    lock: tokio_postgres::Statement,
    unlock: tokio_postgres::Statement,
}

impl KeyLocker for RawPostgres {
    fn cycle<'a>(&'a mut self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let id = key_hash(key);
            let got: bool = self.client.query_one(&self.lock, &[&id]).await?.get(0);
            if got {
                self.client.query_one(&self.unlock, &[&id]).await?;
            }
            Ok(got)
        })
    }
}

/// MySQL / MariaDB: `GET_LOCK(key, 0)` + `RELEASE_LOCK(key)`.
pub async fn mysql(url: &str) -> Result<Box<dyn KeyLocker>> {
    let connection = mysql_async::Conn::new(mysql_async::Opts::from_url(url)?).await?;
    Ok(Box::new(RawMysql(connection)))
}

struct RawMysql(mysql_async::Conn);

impl KeyLocker for RawMysql {
    fn cycle<'a>(&'a mut self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let got: Option<Option<i64>> =
                self.0.exec_first("SELECT GET_LOCK(?, 0)", (key,)).await?;
            if got.flatten() != Some(1) {
                return Ok(false);
            }
            let _: Option<Option<i64>> =
                self.0.exec_first("SELECT RELEASE_LOCK(?)", (key,)).await?;
            Ok(true)
        })
    }
}

/// ZooKeeper: create an ephemeral `/distlock-bench-raw/<key>` + delete it.
pub async fn zookeeper(hosts: &str) -> Result<Box<dyn KeyLocker>> {
    let client = zk::Client::connect(hosts).await?;
    let parent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    match client.create(RAW_ZK_ROOT, &[], &parent).await {
        Ok(_) | Err(zk::Error::NodeExists) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Box::new(RawZooKeeper(client)))
}

const RAW_ZK_ROOT: &str = "/distlock-bench-raw";

struct RawZooKeeper(zk::Client);

impl KeyLocker for RawZooKeeper {
    fn cycle<'a>(&'a mut self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let path = format!("{RAW_ZK_ROOT}/{key}");
            let options = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
            match self.0.create(&path, b"raw", &options).await {
                Ok(_) => {}
                Err(zk::Error::NodeExists) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
            self.0.delete(&path, None).await?;
            Ok(true)
        })
    }
}

/// etcd: a txn that puts the key under a lease if it does not exist + a delete.
pub async fn etcd(endpoints: &str) -> Result<Box<dyn KeyLocker>> {
    let endpoints: Vec<&str> = endpoints.split(',').collect();
    let mut client = etcd_client::Client::connect(&endpoints, None).await?;
    let lease = client.lease_grant(60, None).await?.id();
    Ok(Box::new(RawEtcd { client, lease }))
}

struct RawEtcd {
    client: etcd_client::Client,
    lease: i64,
}

impl KeyLocker for RawEtcd {
    fn cycle<'a>(&'a mut self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
        Box::pin(async move {
            let key = format!("distlock-bench-raw/{key}");
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.as_str(),
                    "raw",
                    Some(PutOptions::new().with_lease(self.lease)),
                )]);
            if !self.client.txn(txn).await?.succeeded() {
                return Ok(false);
            }
            self.client.delete(key.as_str(), None).await?;
            Ok(true)
        })
    }
}
