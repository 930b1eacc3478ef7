//! The ended-pooled-session test shared by the `faults` test binaries of the SQL backends,
//! which include this file with `#[path]` (it needs `distlock-core`, which the testkit does
//! not depend on): the server ends a released, pooled session while the test's runtime is
//! blocked, so the pool cannot see it go, and the next acquisition must still succeed.

use std::time::Duration;

use distlock_core::Locks;

/// Generous bound for the waiting acquisition.
const SOON: Duration = Duration::from_secs(20);

/// A runtime on the calling thread only: blocking that thread stops everything on it,
/// connection tasks included.
pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Takes and releases the lock, then has `end` (in another thread, on a runtime of its own,
/// while this one is blocked) end the session that held it, found by `holder`; both a try and
/// a wait must then acquire, on another session.
pub async fn is_replaced(
    locks: &Locks,
    url: &str,
    mut holder: impl AsyncFnMut() -> u64,
    end: fn(&str, u64),
) {
    for wait in [false, true] {
        let lease = locks.mutex("ended").no_wait().acquire().await.unwrap();
        let ended = holder().await;
        lease.release().await.unwrap();
        let url = url.to_owned();
        std::thread::spawn(move || end(&url, ended)).join().unwrap();
        let builder = locks.mutex("ended");
        let builder = if wait {
            builder.wait(SOON)
        } else {
            builder.no_wait()
        };
        let again = builder.acquire().await.unwrap();
        assert_ne!(holder().await, ended);
        again.release().await.unwrap();
    }
}
