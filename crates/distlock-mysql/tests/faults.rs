//! Bad input and faults against a private MariaDB: wrong password, missing database, server
//! restart while held, a paused holder, and interop with plain `GET_LOCK` users.

use std::time::{Duration, Instant};

use distlock_core::{ErrorKind, LeaseState, Locks};
use distlock_testkit::mysql::{MariaDbServer, PASSWORD};
use mysql_async::prelude::Queryable;

#[path = "../../distlock-testkit/shared/ended_session.rs"]
mod ended_session;
#[path = "../../distlock-testkit/shared/paused_holder.rs"]
mod paused_holder;
#[path = "../../distlock-testkit/shared/rowless_holders.rs"]
mod rowless_holders;

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
        assert!(
            next.token() > first,
            "the reserved ceiling survives a restart: {:?} after {first:?}",
            next.token()
        );
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

/// The token of one uncontended acquire + release of `name`.
async fn token_of_one_grant(locks: &Locks, name: &str) -> u64 {
    let lease = locks.mutex(name).no_wait().acquire().await.unwrap();
    let token = lease.token().get();
    lease.release().await.unwrap();
    token
}

/// A value of a `distlock_tokens` row.
async fn token_row(plain: &mut mysql_async::Conn, key: &str) -> u64 {
    plain
        .query_first(format!(
            "SELECT token FROM distlock_tokens WHERE lock_key = '{key}'"
        ))
        .await
        .unwrap()
        .unwrap()
}

#[test]
fn tokens_rise_and_a_server_run_behind_the_high_water_mark_starts_above_it() {
    let server = MariaDbServer::start();
    runtime().block_on(async {
        let url = server.url();
        let locks = distlock_mysql::connect(&url).await.unwrap();
        let mut tokens = Vec::new();
        for name in ["tokens", "tokens", "other", "tokens"] {
            tokens.push(token_of_one_grant(&locks, name).await);
        }
        // One server-wide counter for every lock: each grant's token is above the last.
        assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
        let mut plain = mysql_async::Conn::from_url(&url).await.unwrap();
        // Opening a connection raised the high-water mark to the tokens of this run.
        let high = token_row(&mut plain, "high").await;
        assert!(
            high > 0 && high <= tokens[0],
            "high {high}, tokens {tokens:?}"
        );
        assert_eq!(token_row(&mut plain, "offset").await, 0);
        drop(locks);

        // A mark far above this run's tokens, as a server whose clock ran ahead (or the
        // primary before a failover) leaves it: new connections start above it.
        let ahead = tokens[3] + (1 << 45);
        plain
            .query_drop(format!(
                "UPDATE distlock_tokens SET token = {ahead} WHERE lock_key = 'high'"
            ))
            .await
            .unwrap();
        let locks = distlock_mysql::connect(&url).await.unwrap();
        let first = token_of_one_grant(&locks, "tokens").await;
        assert!(first > ahead, "token {first} is not above the mark {ahead}");
        let offset = token_row(&mut plain, "offset").await;
        assert!(offset > 0);
        // The offset stays for the rest of the run, and tokens go on rising.
        let again = distlock_mysql::connect(&url).await.unwrap();
        let next = token_of_one_grant(&again, "tokens").await;
        assert!(next > first, "{next} after {first}");
        assert_eq!(token_row(&mut plain, "offset").await, offset);
        plain.disconnect().await.unwrap();
    });
}

/// distlock shortens a session's `wait_timeout` to the TTL and leaves it so for the next
/// grant: a pooled connection idle for longer than half of it is not used again, as the
/// server may be closing it.
#[test]
fn a_pooled_connection_the_server_may_have_closed_is_not_reused() {
    let server = MariaDbServer::start();
    runtime().block_on(async {
        let locks = distlock_mysql::connect(&server.url()).await.unwrap();
        let ttl = Duration::from_secs(1);
        for _ in 0..2 {
            let lease = locks
                .mutex("idle")
                .ttl(ttl)
                .no_wait()
                .acquire()
                .await
                .unwrap();
            lease.release().await.unwrap();
            // Longer than wait_timeout (1 s): the server closes the idle connection.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let lease = locks
            .mutex("idle")
            .ttl(ttl)
            .no_wait()
            .acquire()
            .await
            .unwrap();
        lease.release().await.unwrap();
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
        // Its waiter row goes too (the closed connection could not delete it).
        while holder_rows(&mut plain).await.len() > 1 {
            assert!(Instant::now() < deadline, "the dropped wait left its row");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        held.release().await.unwrap();
        plain.disconnect().await.unwrap();
    });
}

/// The connection ids that have a row in `distlock_holders`, in order.
async fn holder_rows(plain: &mut mysql_async::Conn) -> Vec<u64> {
    plain
        .query("SELECT conn_id FROM distlock_holders ORDER BY conn_id")
        .await
        .unwrap()
}

/// A holder or waiter whose connection closes without a release leaves its row in the
/// `MEMORY` table, which would fill up over time: connecting deletes the rows of connections
/// that are gone, as far as the connecting user can tell.
#[test]
fn holder_rows_of_closed_connections_are_deleted_at_connect() {
    let server = MariaDbServer::start();
    runtime().block_on(async {
        let url = server.url();
        let locks = distlock_mysql::connect(&url).await.unwrap();
        let _lease = locks.mutex("gone").no_wait().acquire().await.unwrap();
        // The holder row is written a moment after the grant; inspecting waits for it.
        locks.inspect("gone").await.unwrap();
        let mut plain = mysql_async::Conn::from_url(&url).await.unwrap();
        let holder: u64 = plain
            .query_first("SELECT conn_id FROM distlock_holders WHERE name = 'gone'")
            .await
            .unwrap()
            .unwrap();
        plain.query_drop(format!("KILL {holder}")).await.unwrap();
        let deadline = Instant::now() + SOON;
        while is_listed(&mut plain, holder).await {
            assert!(
                Instant::now() < deadline,
                "the killed connection is still listed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Rows as dead processes leave them: a waiter's and a semaphore holder's; and a live
        // connection's (this one's) waiter row.
        let live = plain.id();
        for (conn_id, mode, token) in [
            (4_000_000_001u64, "exclusive", "NULL"),
            (4_000_000_002, "permits", "7"),
            (u64::from(live), "exclusive", "NULL"),
        ] {
            plain
                .query_drop(format!(
                    "INSERT INTO distlock_holders VALUES ({conn_id}, 'k', 'n', '{mode}', 1, 1, \
                     REPEAT('0', 32), 'host', 1, NULL, 0, 1000, {token})"
                ))
                .await
                .unwrap();
        }
        let mut all = vec![4_000_000_001, 4_000_000_002, u64::from(live), holder];
        all.sort_unstable();
        assert_eq!(holder_rows(&mut plain).await, all);

        // A user without PROCESS sees only its own connections: it deletes only the rows it
        // can prove stale, holders' whose connection does not hold the acquisition's owner
        // lock; a waiter's row it cannot tell from another user's live waiter.
        let app = distlock_mysql::connect(&server.url_with_password(PASSWORD)).await;
        drop(app.unwrap());
        all.retain(|id| *id != holder && *id != 4_000_000_002);
        assert_eq!(holder_rows(&mut plain).await, all);

        // A user who sees every connection deletes every row of a connection that is gone.
        drop(distlock_mysql::connect(&url).await.unwrap());
        assert_eq!(holder_rows(&mut plain).await, vec![u64::from(live)]);
        plain.disconnect().await.unwrap();
    });
}

/// Another process's semaphore holders are shown before their records are written (here:
/// never written), from the slots their connections hold.
#[test]
fn semaphore_holders_without_a_record_are_shown() {
    let server = MariaDbServer::start();
    runtime().block_on(async {
        let url = server.url();
        let separator = if url.contains('?') { '&' } else { '?' };
        let without_rows =
            distlock_mysql::connect(&format!("{url}{separator}distlock_holder_info=false"))
                .await
                .unwrap();
        let with_rows = distlock_mysql::connect(&url).await.unwrap();
        rowless_holders::semaphore_holders_are_shown(&with_rows, &without_rows).await;
    });
}

/// A pooled connection that the server closed while it stood idle (`KILL` here, a restart or
/// `wait_timeout` elsewhere) is replaced: the acquisition that took it runs again on a new
/// connection. The runtime is blocked while the connection is killed, so the pool cannot have
/// seen it go; both the try and the wait take it.
#[test]
fn a_pooled_connection_the_server_closed_is_replaced() {
    let server = MariaDbServer::start();
    ended_session::current_thread_runtime().block_on(async {
        let url = server.url();
        let locks = distlock_mysql::connect(&url).await.unwrap();
        let mut plain = mysql_async::Conn::from_url(&url).await.unwrap();
        let holder = async || -> u64 {
            plain
                .query_first("SELECT IS_USED_LOCK('ended')")
                .await
                .unwrap()
                .unwrap()
        };
        ended_session::is_replaced(&locks, &url, holder, kill_and_wait).await;
        plain.disconnect().await.unwrap();
    });
}

/// Whether the server still lists connection `id`.
async fn is_listed(plain: &mut mysql_async::Conn, id: u64) -> bool {
    plain
        .query_first::<u64, _>(format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID = {id}"
        ))
        .await
        .unwrap()
        .is_some()
}

/// Kills connection `id` and returns once the server no longer lists it (on a runtime of its
/// own, so the caller's stays blocked meanwhile).
fn kill_and_wait(url: &str, id: u64) {
    ended_session::current_thread_runtime().block_on(async {
        let mut plain = mysql_async::Conn::from_url(url).await.unwrap();
        plain.query_drop(format!("KILL {id}")).await.unwrap();
        while is_listed(&mut plain, id).await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        plain.disconnect().await.unwrap();
    });
}

/// Many processes connecting at once to a database without distlock's tables: each may find
/// them missing and create them, and each must see them complete once it sees the token rows
/// (the last thing created).
#[test]
fn first_connections_at_once_all_succeed() {
    let server = MariaDbServer::start();
    runtime().block_on(async {
        let url = server.url();
        let mut plain = mysql_async::Conn::from_url(&url).await.unwrap();
        for round in 0..20 {
            plain
                .query_drop("DROP TABLE IF EXISTS distlock_tokens, distlock_holders")
                .await
                .unwrap();
            // Started a little apart, so that some start while others are half done.
            let connects: Vec<_> = (0..32)
                .map(|i| {
                    let url = url.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_micros(500 * i)).await;
                        distlock_mysql::connect(&url).await
                    })
                })
                .collect();
            for connect in connects {
                if let Err(error) = connect.await.unwrap() {
                    panic!("round {round}: {error}");
                }
            }
        }
        plain.disconnect().await.unwrap();
    });
}
