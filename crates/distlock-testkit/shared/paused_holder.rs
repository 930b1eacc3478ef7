//! The paused-holder fault test shared by the `faults` test binaries of the SQL backends,
//! which include this file with `#[path]` (it needs `distlock-core`, which the testkit does
//! not depend on). A child process (the binary's ignored test `paused_holder_child`, which
//! runs [`hold`]) holds a lock with a 2 s ttl and is SIGSTOPped; the server must cut its
//! session off so that a waiter gets the lock within 5 s.

use std::future::Future;
use std::time::{Duration, Instant};

use distlock_core::Locks;
use distlock_testkit::child;

/// Generous bound for the child to report that it holds the lock.
const SOON: Duration = Duration::from_secs(20);

/// Child side: connects with `connect` to the URL the parent passed, takes the lock, reports
/// its token and holds it until killed.
pub async fn hold<F: Future<Output = Locks>>(connect: impl Fn(String) -> F) {
    let locks = connect(child::holder_url()).await;
    let lease = locks
        .mutex("paused")
        .ttl(Duration::from_secs(2))
        .acquire()
        .await
        .unwrap();
    child::report_held(lease.token());
    std::future::pending::<()>().await;
}

/// Parent side: runs the child holder against `url`, pauses it, and asserts that the server
/// (through `cut_off_by`, its setting that ends idle sessions) frees the lock for a waiter.
pub fn is_cut_off<F: Future<Output = Locks>>(
    rt: &tokio::runtime::Runtime,
    url: &str,
    connect: impl Fn(String) -> F,
    cut_off_by: &str,
) {
    let (mut holder, token) = child::spawn_holder("paused_holder_child", url, SOON);
    rt.block_on(async {
        let locks = connect(url.to_owned()).await;
        let err = locks.mutex("paused").no_wait().acquire().await.unwrap_err();
        assert!(err.is_would_block(), "{err}");
        holder.pause().unwrap();
        let paused = Instant::now();
        // ttl (2 s; the server's idle timeout is 2 s too) + 1 s, plus 2 s of slack for a
        // loaded machine.
        let lease = locks
            .mutex("paused")
            .wait(Duration::from_secs(5))
            .acquire()
            .await
            .unwrap_or_else(|e| panic!("{cut_off_by} cuts the paused holder off: {e:?}"));
        assert!(lease.token().get() > token);
        assert!(paused.elapsed() < Duration::from_secs(5));
        lease.release().await.unwrap();
    });
    holder.kill();
}
