//! 10,000 waiting tasks in one process, against a real redis-server. In its own test binary
//! so its load does not disturb the deadline checks in `tests/redis.rs`.

use std::time::{Duration, Instant};

use distlock_core::Locks;
use distlock_testkit::redis::RedisServer;

async fn locks(url: &str) -> Locks {
    Locks::new(
        distlock_redis::connect(url)
            .await
            .expect("connect to redis"),
    )
}

fn connected_clients(server: &RedisServer) -> usize {
    let reply = server.command(&["INFO", "clients"]);
    reply
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("connected_clients in INFO")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_waiters_use_a_constant_number_of_connections() {
    const WAITERS: usize = 10_000;
    let server = RedisServer::start();
    let locks = locks(&server.url()).await;
    let baseline = connected_clients(&server);
    let held = locks.mutex("crowd").acquire().await.unwrap();
    let mut tasks = Vec::with_capacity(WAITERS);
    for _ in 0..WAITERS {
        let locks = locks.clone();
        tasks.push(tokio::spawn(async move {
            let lease = locks.mutex("crowd").acquire().await.unwrap();
            lease.release().await.unwrap();
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let queued = locks.inspect("crowd").await.unwrap().waiters.len();
        if queued == WAITERS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {queued} of {WAITERS} queued"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        connected_clients(&server),
        baseline,
        "10,000 waiters must not open connections"
    );
    // Cancelling every waiter leaves nothing queued.
    for task in &tasks {
        task.abort();
    }
    held.release().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = locks.inspect("crowd").await.unwrap();
        if info.waiters.is_empty() && info.holders.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {} waiters",
            info.waiters.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
