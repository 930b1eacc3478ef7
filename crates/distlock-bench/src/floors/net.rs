//! The network backends' floors, sent with the client crates distlock itself uses: one round
//! trip, and the least work any lock on that backend does per uncontended cycle.
//!
//! | backend | round trip | lock cycle floor |
//! |---|---|---|
//! | Redis | `PING` | 2 × `PING` |
//! | PostgreSQL, MySQL | `SELECT 1` | 2 × `SELECT 1` |
//! | ZooKeeper | `exists` | create (ephemeral sequential) + getChildren + delete |
//! | etcd | `get` | a create-if-absent txn under a lease + delete |

use mysql_async::prelude::Queryable;
use zookeeper_client as zk;

use crate::Result;
use crate::rust_peers::BoxFuture;

/// One backend's raw client.
pub trait Floor: Send {
    /// One round trip.
    fn round_trip(&mut self) -> BoxFuture<'_, Result<()>>;
    /// The least an uncontended lock cycle does: by default two round trips (one to take the
    /// lock, one to give it back).
    fn cycle(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.round_trip().await?;
            self.round_trip().await
        })
    }
    /// One committed single-row upsert, for the SQL backends (what a durable fencing counter
    /// costs at the least): `None` where it does not apply.
    fn durable_write(&mut self) -> Option<BoxFuture<'_, Result<()>>> {
        None
    }
}

/// Connects `backend`'s floor client: `url` for Redis, PostgreSQL and MySQL, `host:port` list
/// for ZooKeeper and etcd.
pub async fn connect(backend: &str, target: &str) -> Result<Box<dyn Floor>> {
    Ok(match backend {
        "redis" => {
            let client = redis::Client::open(target)?;
            Box::new(Redis(client.get_multiplexed_async_connection().await?))
        }
        "postgres" => {
            let (client, connection) =
                tokio_postgres::connect(target, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            let select = client.prepare("SELECT 1").await?;
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS distlock_bench_floor \
                     (k int PRIMARY KEY, v bigint NOT NULL)",
                )
                .await?;
            let upsert = client
                .prepare(
                    "INSERT INTO distlock_bench_floor VALUES (1, 1) \
                     ON CONFLICT (k) DO UPDATE SET v = distlock_bench_floor.v + 1",
                )
                .await?;
            Box::new(Postgres {
                client,
                select,
                upsert,
            })
        }
        "mysql" => {
            let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(target)?).await?;
            conn.query_drop(
                "CREATE TABLE IF NOT EXISTS distlock_bench_floor \
                 (k int PRIMARY KEY, v bigint NOT NULL) ENGINE=InnoDB",
            )
            .await?;
            Box::new(Mysql(conn))
        }
        "zookeeper" => {
            let client = zk::Client::connect(target).await?;
            let parent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
            match client.create(ZK_PARENT, &[], &parent).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(e.into()),
            }
            Box::new(ZooKeeper(client))
        }
        "etcd" => {
            let endpoints: Vec<&str> = target.split(',').collect();
            let mut client = etcd_client::Client::connect(&endpoints, None).await?;
            let lease = client.lease_grant(60, None).await?.id();
            Box::new(Etcd { client, lease })
        }
        other => return Err(format!("no floor for {other}").into()),
    })
}

struct Redis(redis::aio::MultiplexedConnection);

impl Floor for Redis {
    fn round_trip(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let _: String = redis::cmd("PING").query_async(&mut self.0).await?;
            Ok(())
        })
    }
}

struct Postgres {
    client: tokio_postgres::Client,
    select: tokio_postgres::Statement,
    upsert: tokio_postgres::Statement,
}

impl Floor for Postgres {
    fn round_trip(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.client.query_one(&self.select, &[]).await?;
            Ok(())
        })
    }

    fn durable_write(&mut self) -> Option<BoxFuture<'_, Result<()>>> {
        Some(Box::pin(async move {
            // Autocommit: one statement, one commit, one WAL flush.
            self.client.execute(&self.upsert, &[]).await?;
            Ok(())
        }))
    }
}

struct Mysql(mysql_async::Conn);

impl Floor for Mysql {
    fn round_trip(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let _: Option<i64> = self.0.query_first("SELECT 1").await?;
            Ok(())
        })
    }

    fn durable_write(&mut self) -> Option<BoxFuture<'_, Result<()>>> {
        Some(Box::pin(async move {
            // Autocommit: one statement, one InnoDB commit (a redo log flush).
            self.0
                .query_drop(
                    "INSERT INTO distlock_bench_floor VALUES (1, 1) \
                     ON DUPLICATE KEY UPDATE v = v + 1",
                )
                .await?;
            Ok(())
        }))
    }
}

const ZK_PARENT: &str = "/distlock-bench-floor";

struct ZooKeeper(zk::Client);

impl Floor for ZooKeeper {
    fn round_trip(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.0.check_stat(ZK_PARENT).await?;
            Ok(())
        })
    }

    fn cycle(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let options = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
            let (_, sequence) = self
                .0
                .create(&format!("{ZK_PARENT}/lock-"), b"floor", &options)
                .await?;
            self.0.get_children(ZK_PARENT).await?;
            self.0
                .delete(&format!("{ZK_PARENT}/lock-{sequence}"), None)
                .await?;
            Ok(())
        })
    }
}

struct Etcd {
    client: etcd_client::Client,
    lease: i64,
}

const ETCD_KEY: &str = "distlock-bench-floor/lock";

impl Floor for Etcd {
    fn round_trip(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.client.get(ETCD_KEY, None).await?;
            Ok(())
        })
    }

    fn cycle(&mut self) -> BoxFuture<'_, Result<()>> {
        use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
        Box::pin(async move {
            let txn = Txn::new()
                .when([Compare::create_revision(ETCD_KEY, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    ETCD_KEY,
                    "floor",
                    Some(PutOptions::new().with_lease(self.lease)),
                )]);
            self.client.txn(txn).await?;
            self.client.delete(ETCD_KEY, None).await?;
            Ok(())
        })
    }
}
