//! Transaction mode (`distlock_mode=transaction`, for PgBouncer transaction pooling) against a
//! private PostgreSQL cluster: exclusion with session-mode and plain users, shared holders,
//! wait bounds, hand-off, cancel, renewal, loss, and that nothing outlives a lease's
//! transaction. (End to end through a real PgBouncer: `distlock-cli/tests/sql_backends.rs`.)

use std::time::Duration;

use distlock_core::{ErrorKind, LeaseState};
use distlock_testkit::postgres::PostgresServer;

const SOON: Duration = Duration::from_secs(20);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn plain_session(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[test]
fn transaction_mode_locks_and_leaves_nothing_behind() {
    let server = PostgresServer::start();
    let session_url = server.url();
    let url = format!("{session_url}?distlock_mode=transaction");
    runtime().block_on(async {
        let locks = distlock_postgres::connect(&url).await.unwrap();
        let session = distlock_postgres::connect(&session_url).await.unwrap();
        let plain = plain_session(&session_url).await;
        assert!(!locks.capabilities().semaphore);
        let err = locks.semaphore("sem", 3).acquire().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");

        // Exclusive: excludes session mode and is excluded by it; tokens increase.
        let a = locks.mutex("tx").no_wait().acquire().await.unwrap();
        let err = session.mutex("tx").no_wait().acquire().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");
        let err = locks.mutex("tx").no_wait().acquire().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");
        assert_eq!(
            count(
                &plain,
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
            )
            .await,
            1,
            "the held lease is one open transaction; failed tries rolled back"
        );
        let info = locks.inspect("tx").await.unwrap();
        assert_eq!(info.holders.len(), 1, "{info:?}");
        assert_eq!(info.holders[0].owner.owner, a.owner(), "{info:?}");
        assert_eq!(info.holders[0].token, a.token(), "{info:?}");
        assert_eq!(info.holders[0].owner.pid, std::process::id(), "{info:?}");
        // A wait bound runs out with a Timeout, and leaves no waiter and no transaction.
        let err = locks
            .mutex("tx")
            .wait(Duration::from_millis(300))
            .acquire()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        // A waiter gets the lock at release, with a larger token.
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.mutex("tx").wait(SOON).acquire().await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let first = a.token();
        a.release().await.unwrap();
        let b = waiter.await.unwrap().unwrap();
        assert!(b.token() > first);
        b.release().await.unwrap();

        // Shared holders coexist; an exclusive one waits for them.
        let r1 = locks.rwlock("rw").read().no_wait().acquire().await.unwrap();
        let r2 = locks.rwlock("rw").read().no_wait().acquire().await.unwrap();
        let err = locks
            .rwlock("rw")
            .write()
            .no_wait()
            .acquire()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");
        r1.release().await.unwrap();
        r2.release().await.unwrap();

        // A dropped acquire leaves no ungranted lock behind.
        let holder = locks.mutex("drop").acquire().await.unwrap();
        let pending = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.mutex("drop").wait(SOON).acquire().await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        pending.abort();
        let _ = pending.await;
        let ungranted = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted";
        let mut left = 1;
        for _ in 0..100 {
            left = count(&plain, ungranted).await;
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(left, 0, "the cancelled wait is gone");
        holder.release().await.unwrap();

        // Renewal keeps a short lease (idle_in_transaction_session_timeout = ttl) alive.
        let short = locks
            .mutex("short")
            .ttl(Duration::from_millis(600))
            .acquire()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(short.state(), LeaseState::Held);
        short.release().await.unwrap();

        // Terminating the holder's backend makes the lease Lost at once.
        let held = locks.mutex("term").acquire().await.unwrap();
        let terminated = count(
            &plain,
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_locks \
             WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()",
        )
        .await;
        assert_eq!(terminated, 1);
        let lost = tokio::time::timeout(SOON, held.lost()).await.unwrap();
        assert_eq!(lost.kind(), ErrorKind::Lost, "{lost}");

        // Nothing is left: no advisory lock, no open transaction, no leaked setting.
        assert_eq!(
            count(
                &plain,
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            )
            .await,
            0
        );
        assert_eq!(
            count(
                &plain,
                "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'"
            )
            .await,
            0
        );
        let reused = locks.mutex("again").acquire().await.unwrap();
        reused.release().await.unwrap();
    });
}
