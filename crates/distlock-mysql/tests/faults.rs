//! Bad input and faults against a private MariaDB: wrong password, missing database, server
//! restart while held, a paused holder, and interop with plain `GET_LOCK` users.

use std::time::{Duration, Instant};

use distlock_core::{ErrorKind, LeaseState, Locks};
use distlock_testkit::mysql::MariaDbServer;
use mysql_async::prelude::Queryable;

#[path = "../../distlock-testkit/shared/paused_holder.rs"]
mod paused_holder;

const SOON: Duration = Duration::from_secs(20);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn wrong_password_is_a_clear_error_without_the_password() {
    let server = MariaDbServer::start();
    runtime().block_on(async {
        let secret = "Wr0ng-Pa55word-xyzzy";
        let err = distlock_mysql::connect(&server.url_with_password(secret))
            .await
            .unwrap_err();
        let (shown, debug) = (err.to_string(), format!("{err:?}"));
        assert_eq!(err.kind(), ErrorKind::Backend, "{shown}");
        assert!(shown.starts_with("mysql: "), "{shown}");
        assert!(shown.contains("Access denied"), "{shown}");
        assert!(
            !shown.contains(secret) && !debug.contains(secret),
            "{shown} / {debug}"
        );
        assert!(shown.contains("app:***@127.0.0.1"), "{shown}");
        let locks =
            distlock_mysql::connect(&server.url_with_password(distlock_testkit::mysql::PASSWORD))
                .await
                .unwrap();
        let lease = locks.mutex("pw").no_wait().acquire().await.unwrap();
        lease.release().await.unwrap();
    });
}

#[test]
fn missing_database_is_a_clear_error() {
    let server = MariaDbServer::start();
    runtime().block_on(async {
        let url = format!("mysql://distlock@127.0.0.1:{}/no_such_db", server.port());
        let err = distlock_mysql::connect(&url).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err =
            distlock_mysql::connect(&format!("mysql://u:hunter22@127.0.0.1:{}", server.port()))
                .await
                .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{err}");
        assert!(!format!("{err} {err:?}").contains("hunter22"));
    });
}

#[test]
fn server_restart_while_held_makes_the_lease_lost() {
    let mut server = MariaDbServer::start();
    let rt = runtime();
    let (locks, lease) = rt.block_on(async {
        let locks = distlock_mysql::connect(&server.url()).await.unwrap();
        let lease = locks
            .mutex("restart")
            .ttl(Duration::from_secs(3))
            .acquire()
            .await
            .unwrap();
        (locks, lease)
    });
    let first = lease.token();
    server.restart();
    rt.block_on(async {
        let error = tokio::time::timeout(SOON, lease.lost())
            .await
            .expect("Lost");
        assert!(error.is_lost(), "{error}");
        assert_eq!(lease.state(), LeaseState::Lost);
        let locks2 = distlock_mysql::connect(&server.url()).await.unwrap();
        let next = locks2.mutex("restart").wait(SOON).acquire().await.unwrap();
        assert!(next.token() > first, "the counter table survives a restart");
        next.release().await.unwrap();
        drop(locks);
    });
}

/// Helper run in a child process by `paused_holder_is_cut_off_by_the_server`.
#[test]
#[ignore = "helper: run in a child process"]
fn paused_holder_child() {
    runtime().block_on(paused_holder::hold(connect));
}

#[test]
fn paused_holder_is_cut_off_by_the_server() {
    let server = MariaDbServer::start();
    paused_holder::is_cut_off(&runtime(), &server.url(), connect, "wait_timeout");
}

async fn connect(url: String) -> Locks {
    distlock_mysql::connect(&url).await.unwrap()
}

#[test]
fn interop_with_plain_get_lock_users() {
    let server = MariaDbServer::start();
    runtime().block_on(async {
        let url = server.url();
        let locks = distlock_mysql::connect(&url).await.unwrap();
        let mut plain = mysql_async::Conn::from_url(&url).await.unwrap();
        let got: Option<i64> = plain
            .query_first("SELECT GET_LOCK('orders/42', 0)")
            .await
            .unwrap();
        assert_eq!(got, Some(1));
        let err = locks
            .mutex("orders/42")
            .no_wait()
            .acquire()
            .await
            .unwrap_err();
        assert!(err.is_would_block(), "{err}");
        let info = locks.inspect("orders/42").await.unwrap();
        assert_eq!(info.holders.len(), 1, "{info:?}");
        let released: Option<i64> = plain
            .query_first("SELECT RELEASE_LOCK('orders/42')")
            .await
            .unwrap();
        assert_eq!(released, Some(1));
        let lease = locks.mutex("orders/42").no_wait().acquire().await.unwrap();
        let got: Option<i64> = plain
            .query_first("SELECT GET_LOCK('orders/42', 0)")
            .await
            .unwrap();
        assert_eq!(
            got,
            Some(0),
            "distlock's holder excludes the plain connection"
        );
        // Names differing only in case are different locks (they are hashed).
        let upper = locks.mutex("Orders/42").no_wait().acquire().await.unwrap();
        upper.release().await.unwrap();
        lease.release().await.unwrap();
        plain.disconnect().await.unwrap();
    });
}

#[test]
fn a_waiting_connection_is_killed_in_the_server() {
    let server = MariaDbServer::start();
    runtime().block_on(async {
        let url = server.url();
        let locks = distlock_mysql::connect(&url).await.unwrap();
        let held = locks.mutex("cancel").acquire().await.unwrap();
        let attempt = locks.mutex("cancel").acquire();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), attempt)
                .await
                .is_err()
        );
        let mut plain = mysql_async::Conn::from_url(&url).await.unwrap();
        let deadline = Instant::now() + SOON;
        loop {
            let waiting: Option<i64> = plain
                .query_first(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                     WHERE INFO LIKE '%GET_LOCK%' AND ID <> CONNECTION_ID()",
                )
                .await
                .unwrap();
            if waiting == Some(0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the dropped wait is still in the server"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        held.release().await.unwrap();
        plain.disconnect().await.unwrap();
    });
}
