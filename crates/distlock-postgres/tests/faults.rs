//! Bad input and faults against a private PostgreSQL cluster: wrong password, missing
//! database, server restart while held, a paused holder, and interop with plain
//! `pg_advisory_lock` users.

use std::time::Duration;

use distlock_core::{ErrorKind, LeaseState, LockBuilder, Locks};
use distlock_testkit::postgres::PostgresServer;

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

async fn plain_session(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[test]
fn wrong_password_is_a_clear_error_without_the_password() {
    let server = PostgresServer::start();
    runtime().block_on(async {
        let secret = "Wr0ng-Pa55word-xyzzy";
        let err = distlock_postgres::connect(&server.url_with_password(secret))
            .await
            .unwrap_err();
        let (shown, debug) = (err.to_string(), format!("{err:?}"));
        assert_eq!(err.kind(), ErrorKind::Backend, "{shown}");
        assert!(shown.starts_with("postgres: "), "{shown}");
        assert!(shown.contains("password authentication failed"), "{shown}");
        assert!(
            !shown.contains(secret) && !debug.contains(secret),
            "{shown} / {debug}"
        );
        assert!(shown.contains("app:***@127.0.0.1"), "{shown}");
        // The right password works, for a role that is not a superuser (first use creates
        // distlock's objects in the schema it may write).
        let locks = distlock_postgres::connect(
            &server.url_with_password(distlock_testkit::postgres::PASSWORD),
        )
        .await
        .unwrap();
        let lease = locks.mutex("pw").no_wait().acquire().await.unwrap();
        lease.release().await.unwrap();
    });
}

#[test]
fn missing_database_is_a_clear_error() {
    let server = PostgresServer::start();
    runtime().block_on(async {
        let url = format!("postgres://distlock@127.0.0.1:{}/no_such_db", server.port());
        let err = distlock_postgres::connect(&url).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(err.to_string().contains("no_such_db"), "{err}");
    });
}

#[test]
fn unreachable_server_is_a_connection_error() {
    runtime().block_on(async {
        let port = distlock_testkit::free_port();
        let url = format!("postgres://u:hunter22@127.0.0.1:{port}/db?connect_timeout=2");
        let err = distlock_postgres::connect(&url).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
        assert!(!err.to_string().contains("hunter22") && !format!("{err:?}").contains("hunter22"));
    });
}

#[test]
fn server_restart_while_held_makes_the_lease_lost() {
    let mut server = PostgresServer::start();
    let rt = runtime();
    let (locks, lease) = rt.block_on(async {
        let locks = distlock_postgres::connect(&server.url()).await.unwrap();
        let lease = locks.mutex("restart").acquire().await.unwrap();
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
        // The token sequence survives the restart: the next token is larger.
        let next = locks.mutex("restart").wait(SOON).acquire().await.unwrap();
        assert!(next.token() > first, "{} after {first}", next.token());
        next.release().await.unwrap();
    });
}

#[test]
fn crash_keeps_tokens_increasing() {
    let mut server = PostgresServer::start();
    let rt = runtime();
    let last = rt.block_on(async {
        let locks = distlock_postgres::connect(&server.url()).await.unwrap();
        let mut last = 0;
        for _ in 0..40 {
            let lease = locks.mutex("crash").acquire().await.unwrap();
            last = lease.token().get();
            lease.release().await.unwrap();
        }
        last
    });
    server.kill();
    server.start_again();
    rt.block_on(async {
        let locks = distlock_postgres::connect(&server.url()).await.unwrap();
        let lease = locks.mutex("crash").acquire().await.unwrap();
        assert!(lease.token().get() > last, "{} after {last}", lease.token());
        lease.release().await.unwrap();
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
    let server = PostgresServer::start();
    paused_holder::is_cut_off(&runtime(), &server.url(), connect, "idle_session_timeout");
}

async fn connect(url: String) -> Locks {
    distlock_postgres::connect(&url).await.unwrap()
}

#[test]
fn interop_with_plain_advisory_lock_users() {
    let server = PostgresServer::start();
    runtime().block_on(async {
        let url = server.url();
        let locks = distlock_postgres::connect(&url).await.unwrap();
        let plain = plain_session(&url).await;
        // A plain session holds pg_advisory_lock(4242): distlock's "4242" is excluded.
        plain
            .execute("SELECT pg_advisory_lock(4242)", &[])
            .await
            .unwrap();
        let err = locks.mutex("4242").no_wait().acquire().await.unwrap_err();
        assert!(err.is_would_block(), "{err}");
        let info = locks.inspect("4242").await.unwrap();
        assert_eq!(info.holders.len(), 1, "{info:?}");
        let description = info.holders[0].owner.description.clone().unwrap();
        assert!(description.contains("without distlock"), "{description}");
        plain
            .execute("SELECT pg_advisory_unlock(4242)", &[])
            .await
            .unwrap();
        // And the other way round.
        let lease = locks.mutex("4242").no_wait().acquire().await.unwrap();
        let row = plain
            .query_one("SELECT pg_try_advisory_lock(4242)", &[])
            .await
            .unwrap();
        assert!(
            !row.get::<_, bool>(0),
            "distlock's holder excludes the plain session"
        );
        let row = plain
            .query_one("SELECT pg_try_advisory_lock_shared(4242)", &[])
            .await
            .unwrap();
        assert!(!row.get::<_, bool>(0));
        lease.release().await.unwrap();
        let row = plain
            .query_one("SELECT pg_try_advisory_lock(4242)", &[])
            .await
            .unwrap();
        assert!(row.get::<_, bool>(0));
    });
}

#[test]
fn a_waiting_session_is_cancelled_in_the_server() {
    let server = PostgresServer::start();
    runtime().block_on(async {
        let url = server.url();
        let locks = distlock_postgres::connect(&url).await.unwrap();
        let held = locks.mutex("cancel").acquire().await.unwrap();
        let attempt = locks.mutex("cancel").acquire();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), attempt)
                .await
                .is_err()
        );
        // The server no longer has a session waiting for the key.
        let plain = plain_session(&url).await;
        let gone = distlock_testkit::wait_until(SOON, || {
            let plain = &plain;
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    let row = plain
                        .query_one(
                            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                             AND NOT granted",
                            &[],
                        )
                        .await
                        .unwrap();
                    row.get::<_, i64>(0) == 0
                })
            })
        });
        assert!(gone, "the cancelled wait is gone from pg_locks");
        held.release().await.unwrap();
    });
}

/// A process that dies leaves its sessions' holder rows behind (it deletes them itself only
/// when it releases): connecting deletes the rows of sessions that are gone, and only those.
#[test]
fn holder_rows_of_ended_sessions_are_deleted_at_connect() {
    let server = PostgresServer::start();
    runtime().block_on(async {
        let url = server.url();
        let locks = connect(url.clone()).await;
        let live = locks.mutex("live").no_wait().acquire().await.unwrap();
        // The rows are written in the background; inspection waits for this process' own.
        assert!(locks.inspect("live").await.unwrap().is_held());
        let plain = plain_session(&url).await;
        // The row a dead process left: the live row again, under the id of a session that
        // has ended.
        let ended = plain_session(&url).await;
        let ended_pid: i32 = ended
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        drop(ended);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while is_listed(&plain, ended_pid).await {
            assert!(
                std::time::Instant::now() < deadline,
                "the session did not end"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        plain
            .execute(
                "INSERT INTO distlock_holders SELECT $1, 'gone', mode, permits, lim, keys, \
                 owner, host, os_pid, description, since, ttl_ms, token \
                 FROM distlock_holders WHERE name = 'live'",
                &[&ended_pid],
            )
            .await
            .unwrap();
        drop(connect(url.clone()).await);
        let left: Vec<String> = plain
            .query("SELECT name FROM distlock_holders", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(left, ["live"]);
        live.release().await.unwrap();
    });
}

/// Another process sees a holder from its grant on: the session's `application_name` names
/// the owner and token before the holder row is written, or without one
/// (`distlock_holder_info=false`). A row of an earlier grant on the same pooled session is
/// never shown as the holder.
#[test]
fn other_processes_see_a_holder_by_its_application_name() {
    let server = PostgresServer::start();
    runtime().block_on(async {
        let url = server.url();
        let separator = if url.contains('?') { '&' } else { '?' };
        let without_rows = connect(format!("{url}{separator}distlock_holder_info=false")).await;
        let with_rows = connect(url.clone()).await;
        let observer = connect(url.clone()).await;
        let shows = |lease: &distlock_core::Lease, info: &distlock_core::LockInfo| {
            let [holder] = info.holders.as_slice() else {
                panic!("one holder expected: {info:?}");
            };
            assert_eq!(holder.owner.owner, lease.owner());
            assert_eq!(holder.token, lease.token());
            assert_eq!(holder.owner.pid, std::process::id());
        };
        for locks in [&without_rows, &with_rows] {
            let first = locks.mutex("seen").no_wait().acquire().await.unwrap();
            shows(&first, &observer.inspect("seen").await.unwrap());
            // This process' own inspection waits for its row: written now, where rows are.
            shows(&first, &locks.inspect("seen").await.unwrap());
            first.release().await.unwrap();
            // The same pooled session, another grant: its row is not written yet.
            let second = locks.mutex("seen").no_wait().acquire().await.unwrap();
            shows(&second, &observer.inspect("seen").await.unwrap());
            second.release().await.unwrap();
            assert!(!observer.inspect("seen").await.unwrap().is_held());
        }
    });
}

/// Whether the server still lists the session `pid`.
async fn is_listed(plain: &tokio_postgres::Client, pid: i32) -> bool {
    plain
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        > 0
}

/// The pid of the one session holding an advisory lock on the private server.
async fn holder_pid(plain: &tokio_postgres::Client) -> i32 {
    plain
        .query_one(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Takes the lock `request` asks for and releases it at once; returns the pid of the session
/// that held it, which the pool keeps.
async fn hold_and_release(plain: &tokio_postgres::Client, request: &LockBuilder) -> i32 {
    let lease = request.clone().acquire().await.unwrap();
    let pid = holder_pid(plain).await;
    lease.release().await.unwrap();
    pid
}

/// Waits until the pool has reset the released session `pid` (its `application_name` back to
/// the session's own), failing if that takes longer than [`SOON`] or the session is closed.
async fn wait_for_reset(plain: &tokio_postgres::Client, pid: i32) {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let name: String = plain
            .query_opt(
                "SELECT application_name FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .expect("the pooled session was closed")
            .get(0);
        if name == "distlock" {
            return;
        }
        assert!(name.starts_with("distlock "), "{name}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reset: {name}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A release leaves the grant's settings on the session (resetting them would cost every
/// lock cycle); the pool resets them once the session has stood idle a moment, and keeps the
/// session.
#[test]
fn an_idle_released_session_is_reset_and_kept() {
    let server = PostgresServer::start();
    runtime().block_on(async {
        let locks = connect(server.url()).await;
        let plain = plain_session(&server.url()).await;
        let pid = hold_and_release(&plain, &locks.mutex("settle").no_wait()).await;
        wait_for_reset(&plain, pid).await;
        // The same session serves the next grant.
        let again = locks.mutex("settle").no_wait().acquire().await.unwrap();
        assert_eq!(holder_pid(&plain).await, pid);
        again.release().await.unwrap();
    });
}

/// A process that stalls right after a release (here its only runtime thread sleeps) cannot
/// reset the session in time, and the server ends it when the grant's `idle_session_timeout`
/// runs out. The next acquisition must not use that dead session.
#[test]
fn a_session_the_server_timed_out_in_the_pool_is_not_used() {
    let server = PostgresServer::start();
    let runtime = ended_session::current_thread_runtime();
    runtime.block_on(async {
        let locks = connect(server.url()).await;
        let plain = plain_session(&server.url()).await;
        let ttl = Duration::from_secs(1);
        let stall = locks.mutex("stall").ttl(ttl).no_wait();
        let pid = hold_and_release(&plain, &stall).await;
        // Blocks the runtime: neither the settler nor the connection's task runs, so the
        // pool cannot have seen the session end when the acquisition takes one at once.
        std::thread::sleep(ttl * 2);
        let again = stall.acquire().await.unwrap();
        assert!(
            !is_listed(&plain, pid).await,
            "the server should have ended the idle session"
        );
        assert_ne!(holder_pid(&plain).await, pid);
        again.release().await.unwrap();
    });
}

/// A session taken again from the pool, at once (it still has the last grant's settings: the
/// grant sends none), after the pool reset it (`idle_session_timeout` back to 0), or at once
/// after a grant with a longer TTL, still cuts off a holder that stalls: its only runtime
/// thread sleeps, so it cannot renew, and the server ends it.
#[test]
fn a_stalled_holder_on_a_reused_session_is_cut_off() {
    let server = PostgresServer::start();
    let runtime = ended_session::current_thread_runtime();
    runtime.block_on(async {
        let locks = connect(server.url()).await;
        let plain = plain_session(&server.url()).await;
        let ttl = Duration::from_secs(1);
        let mutex = locks.mutex("reused").ttl(ttl).no_wait();
        for (first_ttl, reset_first) in [(ttl, false), (ttl, true), (ttl * 5, false)] {
            let first = locks.mutex("reused").ttl(first_ttl).no_wait();
            let pid = hold_and_release(&plain, &first).await;
            if reset_first {
                wait_for_reset(&plain, pid).await;
            }
            let again = mutex.clone().acquire().await.unwrap();
            assert_eq!(
                holder_pid(&plain).await,
                pid,
                "the pooled session is reused"
            );
            std::thread::sleep(ttl * 2);
            assert!(
                !is_listed(&plain, pid).await,
                "the server should have ended the stalled holder's session \
                 (reset before the grant: {reset_first}, the last grant's TTL: {first_ttl:?})"
            );
            drop(again);
        }
    });
}

/// Another process's semaphore holders are shown before their records are written (here:
/// never written), from the slots their connections hold.
#[test]
fn semaphore_holders_without_a_record_are_shown() {
    let server = PostgresServer::start();
    runtime().block_on(async {
        let url = server.url();
        let separator = if url.contains('?') { '&' } else { '?' };
        let without_rows =
            distlock_postgres::connect(&format!("{url}{separator}distlock_holder_info=false"))
                .await
                .unwrap();
        let with_rows = distlock_postgres::connect(&url).await.unwrap();
        rowless_holders::semaphore_holders_are_shown(&with_rows, &without_rows).await;
    });
}

/// A pooled session that the server ended while it stood idle (`pg_terminate_backend` here,
/// a restart or an administrator elsewhere) is replaced: the acquisition that took it runs
/// again on a new session. The runtime is blocked while the session is ended, so the pool
/// cannot have seen it go; both the try and the wait take it.
#[test]
fn a_pooled_session_the_server_ended_is_replaced() {
    let server = PostgresServer::start();
    ended_session::current_thread_runtime().block_on(async {
        let locks = connect(server.url()).await;
        let plain = plain_session(&server.url()).await;
        let holder = async || holder_pid(&plain).await as u64;
        ended_session::is_replaced(&locks, &server.url(), holder, terminate_and_wait).await;
    });
}

/// Ends the session `pid` and returns once the server no longer lists it (on a runtime of
/// its own, so the caller's stays blocked meanwhile).
fn terminate_and_wait(url: &str, pid: u64) {
    let pid = pid as i32;
    ended_session::current_thread_runtime().block_on(async {
        let plain = plain_session(url).await;
        plain
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        while is_listed(&plain, pid).await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}
