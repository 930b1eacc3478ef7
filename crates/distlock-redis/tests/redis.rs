//! Redis-specific behaviour against real redis-server processes: bad input, faults, queue
//! order and the connection count of many waiters. Bounds are generous; nothing is timed
//! except "before the TTL could have expired", which is the guarantee itself.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlock_core::{ErrorKind, LeaseState, Locks};
use distlock_testkit::redis::{RedisCluster, RedisServer};

const SOON: Duration = Duration::from_secs(20);

async fn locks(url: &str) -> Locks {
    Locks::new(
        distlock_redis::connect(url)
            .await
            .expect("connect to redis"),
    )
}

#[tokio::test]
async fn server_down_at_start_is_a_quick_connection_error_without_the_password() {
    let port = distlock_testkit::free_port();
    let url = format!("redis://app:hunter2secret@127.0.0.1:{port}/0?connect_timeout=1s");
    let started = Instant::now();
    let err = distlock_redis::connect(&url).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(started.elapsed() < SOON, "took {:?}", started.elapsed());
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2secret"), "{text}");
    assert!(text.contains("redis"), "names the backend: {text}");
    assert!(
        text.contains(&port.to_string()),
        "names the address: {text}"
    );
    // Through the cluster and Redlock forms too.
    for url in [
        format!("redis+cluster://app:hunter2secret@127.0.0.1:{port}/?connect_timeout=1s"),
        format!(
            "redlock://app:hunter2secret@127.0.0.1:{port},127.0.0.1:{port},127.0.0.1:{port}/?connect_timeout=1s"
        ),
    ] {
        let err = distlock_redis::connect(&url).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
        assert!(!format!("{err} {err:?}").contains("hunter2secret"), "{err}");
    }
}

#[tokio::test]
async fn a_wrong_password_is_a_connection_error_without_the_password() {
    let server = RedisServer::start_with(
        distlock_testkit::redis::Persistence::None,
        &["--requirepass", "rightpw"],
    );
    let url = format!("redis://:wrongpw-hunter2@127.0.0.1:{}", server.port());
    let err = distlock_redis::connect(&url).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err}");
    let good = locks(&format!("redis://:rightpw@127.0.0.1:{}", server.port())).await;
    good.mutex("pw").no_wait().acquire().await.unwrap();
}

#[tokio::test]
async fn a_user_without_eval_gets_an_error_naming_the_permission() {
    let server = RedisServer::start();
    let reply = server.command(&[
        "ACL",
        "SETUSER",
        "noscripts",
        "on",
        ">s3cretpass",
        "~*",
        "&*",
        "+@all",
        "-eval",
        "-evalsha",
    ]);
    assert!(reply.starts_with("+OK"), "{reply}");
    let url = format!("redis://noscripts:s3cretpass@127.0.0.1:{}", server.port());
    let err = distlock_redis::connect(&url).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Backend, "{text}");
    assert!(
        text.contains("EVALSHA") && text.contains("permission"),
        "{text}"
    );
    assert!(!text.contains("s3cretpass"), "{text}");
    // The least privilege docs/redis.md suggests is enough.
    let reply = server.command(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">apppass",
        "+@scripting",
        "+@read",
        "+@write",
        "+publish",
        "+subscribe",
        "+time",
        "~distlock:*",
        "&distlock:*",
    ]);
    assert!(reply.starts_with("+OK"), "{reply}");
    let app = locks(&format!("redis://app:apppass@127.0.0.1:{}", server.port())).await;
    let lease = app.mutex("least/privilege").acquire().await.unwrap();
    assert_eq!(app.list("least/").await.unwrap().len(), 1);
    lease.release().await.unwrap();
}

#[tokio::test]
async fn server_killed_while_held_is_lost_before_the_ttl_could_expire() {
    let mut server = RedisServer::start();
    let locks = locks(&server.url()).await;
    // The margin between the local deadline and the server's expiry is 1% + 2 ms; a longer
    // TTL keeps a loaded machine's scheduling delay inside it.
    let ttl = Duration::from_secs(5);
    let before = Instant::now();
    let lease = locks.mutex("killed").ttl(ttl).acquire().await.unwrap();
    let mut states = lease.watch();
    let lost = lease.lost();
    server.kill();
    let error = tokio::time::timeout(SOON, lost).await.expect("Lost");
    let lost_at = Instant::now();
    assert!(error.is_lost(), "{error}");
    // The server-side lease started no earlier than `before`; Lost must come before it can
    // have run out there.
    assert!(
        lost_at < before + ttl,
        "lost {:?} after the request, TTL {ttl:?}",
        lost_at - before
    );
    assert_eq!(*states.borrow_and_update(), LeaseState::Lost);
}

#[tokio::test]
async fn a_killed_connection_is_jeopardy_then_held_again() {
    let server = RedisServer::start();
    let locks = locks(&server.url()).await;
    let lease = locks
        .mutex("client-kill")
        .ttl(Duration::from_secs(30))
        .acquire()
        .await
        .unwrap();
    let mut states = lease.watch();
    let reply = server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(reply.starts_with(':'), "{reply}");
    tokio::time::timeout(SOON, states.wait_for(|s| *s == LeaseState::Jeopardy))
        .await
        .expect("jeopardy after the connection closed")
        .unwrap();
    tokio::time::timeout(SOON, states.wait_for(|s| *s == LeaseState::Held))
        .await
        .expect("held again once the lock was found still ours")
        .unwrap();
    lease.release().await.unwrap();
}

#[tokio::test]
async fn waiters_are_served_in_fifo_order_with_priority_first() {
    let server = RedisServer::start();
    let url = server.url();
    let holder = locks(&url).await;
    let held = holder.mutex("fifo").acquire().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // Priorities: equal ones keep arrival order; the 5 goes first.
    let plan = [(0, 0), (1, 0), (2, 5), (3, 0), (4, -1), (5, 0)];
    for (i, (id, priority)) in plan.into_iter().enumerate() {
        let client = locks(&url).await;
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let lease = client
                .mutex("fifo")
                .priority(priority)
                .wait(SOON)
                .acquire()
                .await
                .unwrap();
            order.lock().unwrap().push(id);
            lease.release().await.unwrap();
        }));
        // Wait until this waiter is queued before starting the next one.
        let deadline = Instant::now() + SOON;
        while holder.inspect("fifo").await.unwrap().waiters.len() < i + 1 {
            assert!(Instant::now() < deadline, "waiter {id} never queued");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let info = holder.inspect("fifo").await.unwrap();
    let priorities: Vec<i32> = info.waiters.iter().map(|w| w.priority).collect();
    assert_eq!(priorities, vec![5, 0, 0, 0, 0, -1], "{info:?}");
    held.release().await.unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![2, 0, 1, 3, 5, 4]);
}

#[tokio::test]
async fn writers_do_not_starve_behind_a_stream_of_readers() {
    let server = RedisServer::start();
    let a = locks(&server.url()).await;
    let b = locks(&server.url()).await;
    let reader = a.rwlock("rw").read().acquire().await.unwrap();
    let writer = tokio::spawn(async move { b.rwlock("rw").write().wait(SOON).acquire().await });
    let deadline = Instant::now() + SOON;
    while a.inspect("rw").await.unwrap().waiters.is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A queued writer blocks new readers even though only readers hold the lock.
    let err = a.rwlock("rw").read().no_wait().acquire().await.unwrap_err();
    assert!(err.is_would_block(), "{err}");
    reader.release().await.unwrap();
    let w = writer.await.unwrap().unwrap();
    assert_eq!(w.mode(), distlock_core::LockMode::Exclusive);
    w.release().await.unwrap();
}

#[tokio::test]
async fn hostile_names_in_a_cluster_never_crossslot_or_collide() {
    let cluster = RedisCluster::start();
    let locks = locks(&format!("redis+cluster://{}/", cluster.hosts())).await;
    let long = "{".repeat(distlock_core::MAX_NAME_BYTES);
    let mut long_other = long.clone();
    long_other.pop();
    long_other.push('}');
    let names: Vec<String> = [
        "{",
        "}",
        "{}",
        "{{}}",
        "}{",
        "a{b}c",
        "a{c}b",
        "{a}",
        "{a}x",
        "{a}y",
        "with space",
        " ",
        "\\x00\\xff",
        "\u{fffd}\u{fffd}",
        "%7B",
        "%7b",
        "a:b",
        "a%3Ab",
        "*",
        "[a-z]",
        "?",
        "ключ",
        "🔒{🔑}",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([long, long_other])
    .collect();
    let mut leases = Vec::new();
    for name in &names {
        let lease = locks
            .mutex(name)
            .no_wait()
            .acquire()
            .await
            .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        leases.push(lease);
    }
    // Held all at once: a collision would have been WouldBlock above; each reports its own.
    for (name, lease) in names.iter().zip(&leases) {
        let info = locks.inspect(name).await.unwrap();
        assert_eq!(info.holders.len(), 1, "{name:?}");
        assert_eq!(info.holders[0].token, lease.token());
    }
    let listed = locks.list("").await.unwrap();
    assert_eq!(listed.len(), names.len());
    for lease in leases {
        lease.release().await.unwrap();
    }
}

#[tokio::test]
async fn tokens_grow_across_a_restart_without_persistence() {
    let mut server = RedisServer::start();
    let first = {
        let locks = locks(&server.url()).await;
        let lease = locks.mutex("restart").acquire().await.unwrap();
        let token = lease.token();
        lease.release().await.unwrap();
        token
    };
    server.restart();
    let locks = locks(&server.url()).await;
    let lease = locks.mutex("restart").acquire().await.unwrap();
    assert!(lease.token() > first, "{} after {first}", lease.token());
    lease.release().await.unwrap();
}

/// A server whose script cache was emptied (`SCRIPT FLUSH`, or a restart while connected)
/// answers `NOSCRIPT`: every script call loads its script and runs again.
#[tokio::test]
async fn scripts_are_loaded_again_after_a_script_flush() {
    let server = RedisServer::start();
    let locks = locks(&server.url()).await;
    let first = locks.mutex("flushed").acquire().await.unwrap();
    server.command(&["SCRIPT", "FLUSH"]);
    first.release().await.unwrap();
    server.command(&["SCRIPT", "FLUSH"]);
    let second = locks.mutex("flushed").no_wait().acquire().await.unwrap();
    assert!(second.token() > first.token());
    server.command(&["SCRIPT", "FLUSH"]);
    let info = locks.inspect("flushed").await.unwrap();
    assert_eq!(info.holders.len(), 1, "{info:?}");
    // A lease handed off releases behind a PING (see `Conn::invoke_waking_first`), and loads
    // the release script again all the same.
    let waiting = locks.clone();
    let third = tokio::spawn(async move { waiting.mutex("flushed").wait(SOON).acquire().await });
    while locks.inspect("flushed").await.unwrap().waiters.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    second.release().await.unwrap();
    let third = third.await.unwrap().unwrap();
    assert!(third.token() > second.token());
    server.command(&["SCRIPT", "FLUSH"]);
    third.release().await.unwrap();
    let keys = server.command(&["KEYS", "distlock:*:flushed:l"]);
    assert!(!keys.contains("distlock:"), "released: {keys}");
}

/// A counter ahead of the server clock (a clock stepped back, or more than one grant per
/// microsecond) still gives strictly increasing tokens: each one more than the last.
#[tokio::test]
async fn tokens_grow_past_a_counter_ahead_of_the_clock() {
    let server = RedisServer::start();
    let locks = locks(&server.url()).await;
    let lease = locks.mutex("ahead").acquire().await.unwrap();
    lease.release().await.unwrap();
    // The reply is RESP: the key is its last line.
    let reply = server.command(&["KEYS", "distlock:*:ahead:c"]);
    let counter = reply.lines().last().unwrap_or_default().trim();
    assert!(counter.starts_with("distlock:{"), "{reply}");
    // Twice today's clock in microseconds, and below 2^53 (Lua numbers are doubles).
    let ahead: u64 = 4_000_000_000_000_000;
    server.command(&["SET", counter, &ahead.to_string()]);
    for expected in ahead + 1..=ahead + 3 {
        let lease = locks.mutex("ahead").acquire().await.unwrap();
        assert_eq!(lease.token().get(), expected);
        lease.release().await.unwrap();
    }
    // The counter still expires on its own.
    let reply = server.command(&["PTTL", counter]);
    let ttl: i64 = reply.trim().trim_start_matches(':').parse().unwrap();
    assert!(ttl > 0, "{reply}");
}

#[tokio::test]
async fn unix_socket_urls_work() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("redis.sock");
    let socket_arg = socket.to_str().unwrap().to_owned();
    let _server = RedisServer::start_with(
        distlock_testkit::redis::Persistence::None,
        &["--unixsocket", &socket_arg, "--unixsocketperm", "700"],
    );
    let locks = locks(&format!(
        "redis+unix://{}?response_timeout=3s",
        socket.display()
    ))
    .await;
    let lease = locks.mutex("over/unix").no_wait().acquire().await.unwrap();
    let err = locks
        .mutex("over/unix")
        .no_wait()
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_would_block(), "{err}");
    lease.release().await.unwrap();
}

/// Needs `--features tls-insecure` (the test server's certificate is self-signed).
#[cfg(feature = "tls-insecure")]
#[tokio::test]
async fn rediss_urls_work() {
    let server = RedisServer::start_tls();
    let locks = locks(&server.tls_url()).await;
    let lease = locks.mutex("over/tls").no_wait().acquire().await.unwrap();
    let err = locks
        .mutex("over/tls")
        .no_wait()
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_would_block(), "{err}");
    lease.release().await.unwrap();
}

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn rediss_without_the_tls_feature_is_unsupported() {
    let err = distlock_redis::connect("rediss://:hunter2@127.0.0.1:1/")
        .await
        .unwrap_err();
    assert!(err.is_unsupported(), "{err}");
    assert!(err.to_string().contains("tls"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn a_paused_server_is_lost_before_the_ttl_could_expire() {
    let server = RedisServer::start();
    let locks = locks(&server.url()).await;
    let ttl = Duration::from_secs(5);
    let before = Instant::now();
    let lease = locks.mutex("paused").ttl(ttl).acquire().await.unwrap();
    let lost = lease.lost();
    server.pause();
    let error = tokio::time::timeout(SOON, lost).await.expect("Lost");
    let lost_at = Instant::now();
    server.resume();
    assert!(error.is_lost(), "{error}");
    assert!(
        lost_at < before + ttl,
        "lost {:?} after the request",
        lost_at - before
    );
}

#[tokio::test]
async fn redlock_survives_a_minority_and_loses_the_lease_without_a_majority() {
    let mut masters = distlock_testkit::redis::RedisMasters::start(3);
    let url = format!(
        "redlock://{}/?connect_timeout=1s&response_timeout=1s",
        masters.hosts()
    );
    let a = locks(&url).await;
    let b = locks(&url).await;
    let ttl = Duration::from_secs(4);
    masters.servers[0].kill();
    // Two of three masters: still a majority.
    let lease = a.mutex("quorum").ttl(ttl).acquire().await.unwrap();
    let err = b.mutex("quorum").no_wait().acquire().await.unwrap_err();
    assert!(err.is_would_block(), "{err}");
    tokio::time::sleep(ttl).await;
    assert!(
        lease.is_held(),
        "renewed on the majority: {:?}",
        lease.state()
    );
    let first = lease.token();
    lease.release().await.unwrap();
    let again = b
        .mutex("quorum")
        .ttl(ttl)
        .no_wait()
        .acquire()
        .await
        .unwrap();
    assert!(again.token() > first);
    // One of three: no majority; the lease ends before its TTL could have run out.
    let lost = again.lost();
    let before = Instant::now();
    masters.servers[1].kill();
    let error = tokio::time::timeout(SOON, lost).await.expect("Lost");
    assert!(error.is_lost(), "{error}");
    assert!(before.elapsed() < ttl, "{:?}", before.elapsed());
    let err = a.mutex("quorum").no_wait().acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
}

#[tokio::test]
async fn a_restart_keeps_locks_with_aof_and_loses_them_without() {
    use distlock_testkit::redis::Persistence;
    for persistence in [Persistence::AofAlways, Persistence::None] {
        let mut server = RedisServer::start_with(persistence, &[]);
        let holder = locks(&server.url()).await;
        let lease = holder
            .mutex("restart")
            .ttl(Duration::from_secs(30))
            .acquire()
            .await
            .unwrap();
        let mut states = lease.watch();
        server.restart();
        let other = locks(&server.url()).await;
        match persistence {
            Persistence::AofAlways => {
                let err = other
                    .mutex("restart")
                    .no_wait()
                    .acquire()
                    .await
                    .unwrap_err();
                assert!(err.is_would_block(), "kept across the restart: {err}");
                // The holder saw its connection close, then found the lock still its own.
                tokio::time::timeout(SOON, states.wait_for(|s| *s == LeaseState::Held))
                    .await
                    .unwrap()
                    .unwrap();
                lease.release().await.unwrap();
            }
            _ => {
                // The lock is gone: the holder learns it on reconnecting, long before its TTL.
                let error = tokio::time::timeout(SOON, lease.lost())
                    .await
                    .expect("Lost");
                assert!(error.is_lost(), "{error}");
                let next = other.mutex("restart").no_wait().acquire().await.unwrap();
                assert!(next.token() > lease.token());
            }
        }
    }
}

/// A waiter whose process stops refreshing its entry (here: the one thread of its runtime is
/// blocked) is dropped once it comes to the head of the queue, so the waiter behind it gets
/// the lock at the release; once it runs again, it waits anew and gets the lock too.
#[tokio::test]
async fn a_waiter_that_stops_refreshing_does_not_stall_the_queue() {
    let server = RedisServer::start();
    let url = server.url();
    let holder = locks(&url).await;
    let held = holder.mutex("stalled").acquire().await.unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    let stalled_url = format!("{url}{separator}waiter_ttl=2s");
    let (go, blocked) = std::sync::mpsc::channel::<()>();
    let stalled_ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ended = stalled_ended.clone();
    let stalled = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let client = locks(&stalled_url).await;
            let waiting = tokio::spawn(async move {
                let lease = client.mutex("stalled").wait(SOON).acquire().await?;
                lease.release().await
            });
            while blocked.try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Nothing on this runtime runs now: the entry is not refreshed.
            std::thread::sleep(Duration::from_secs(5));
            ended.store(true, std::sync::atomic::Ordering::SeqCst);
            waiting.await.unwrap()
        })
    });
    let waiters = |n| {
        let holder = &holder;
        async move {
            let deadline = Instant::now() + SOON;
            while holder.inspect("stalled").await.unwrap().waiters.len() < n {
                assert!(Instant::now() < deadline, "{n} waiters never queued");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    waiters(1).await;
    go.send(()).unwrap();
    let behind = locks(&url).await;
    let next = tokio::spawn(async move { behind.mutex("stalled").wait(SOON).acquire().await });
    waiters(2).await;
    // The stalled entry runs out (2 s) while the lock is still held.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    held.release().await.unwrap();
    let lease = next.await.unwrap().unwrap();
    assert!(
        !stalled_ended.load(std::sync::atomic::Ordering::SeqCst),
        "the waiter behind got the lock only after the stalled one ran again"
    );
    lease.release().await.unwrap();
    stalled.join().unwrap().unwrap();
}
