//! Shared reads of a lock's queue for the many waiters of one process.

use std::future::Future;
use std::sync::Mutex;

use crate::per_key::PerKey;

/// Shares reads of one key among the tasks of a process that need them at the same time,
/// while still giving every caller a read that *started after it asked*.
///
/// Queue-ordered recipes (ZooKeeper's sequential nodes, etcd's create revisions) have each
/// waiter read the whole queue once to find its predecessor. With `n` waiters in one process
/// that is `n` reads of up to `n` entries: quadratic traffic that times the session out long
/// before 10,000 waiters are queued. Through `FreshReads` at most one read per key is in
/// flight; every caller that arrives while it runs shares the next one. A caller never gets
/// a result that began before its call, so anything it wrote before asking (its own queue
/// entry) is in the result.
///
/// A failed read is returned to the caller that ran it only; the callers queued behind it
/// run their own.
pub struct FreshReads<V> {
    keys: PerKey<KeyReads<V>>,
}

struct KeyReads<V> {
    /// Held while a read runs; FIFO, so queued callers are served in arrival order.
    running: tokio::sync::Mutex<()>,
    state: Mutex<ReadState<V>>,
}

struct ReadState<V> {
    /// How many reads have started.
    started: u64,
    /// The latest completed read and its number.
    latest: Option<(u64, V)>,
}

impl<V> Default for KeyReads<V> {
    fn default() -> Self {
        KeyReads {
            running: tokio::sync::Mutex::new(()),
            state: Mutex::new(ReadState {
                started: 0,
                latest: None,
            }),
        }
    }
}

impl<V: Clone> FreshReads<V> {
    /// No reads yet.
    pub fn new() -> Self {
        FreshReads {
            keys: PerKey::new(),
        }
    }

    /// Returns the result of a read of `key` that started after this call: one already
    /// queued by another caller, or `read()` run by this one.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. A caller dropped while its read runs abandons that read; the next
    /// queued caller runs its own.
    pub async fn read<F, Fut, E>(&self, key: &str, read: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let reads = self.keys.entry(key);
        // Reads numbered above `started` now begin after this call.
        let wanted = reads.state.lock().unwrap().started + 1;
        let _running = reads.running.lock().await;
        let number = {
            let mut state = reads.state.lock().unwrap();
            if let Some((number, value)) = &state.latest
                && *number >= wanted
            {
                return Ok(value.clone());
            }
            state.started += 1;
            state.started
        };
        let value = read().await?;
        let mut state = reads.state.lock().unwrap();
        // Only a newer result replaces the latest (a later read can finish first only if
        // this one was abandoned, and then this code does not run).
        if state.latest.as_ref().is_none_or(|(n, _)| *n < number) {
            state.latest = Some((number, value.clone()));
        }
        Ok(value)
    }
}

impl<V: Clone> Default for FreshReads<V> {
    fn default() -> Self {
        FreshReads::new()
    }
}

impl<V> std::fmt::Debug for FreshReads<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreshReads")
            .field("keys", &self.keys.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// A "server" whose value is a counter of writes; a read returns (writes seen, read no.).
    struct Server {
        writes: AtomicU64,
        reads: AtomicU64,
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_caller_sees_its_own_write_and_reads_are_shared() {
        let server = Arc::new(Server {
            writes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        });
        let fresh = Arc::new(FreshReads::<u64>::new());
        let callers = 200;
        let mut tasks = Vec::new();
        for _ in 0..callers {
            let (server, fresh) = (Arc::clone(&server), Arc::clone(&fresh));
            tasks.push(tokio::spawn(async move {
                let mine = server.writes.fetch_add(1, Ordering::SeqCst) + 1;
                let seen = fresh
                    .read("queue", || async {
                        server.reads.fetch_add(1, Ordering::SeqCst);
                        let seen = server.writes.load(Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        Ok::<_, ()>(seen)
                    })
                    .await
                    .unwrap();
                assert!(
                    seen >= mine,
                    "a read that began before my write: {seen} < {mine}"
                );
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let reads = server.reads.load(Ordering::SeqCst);
        assert!(
            reads < callers,
            "{reads} reads for {callers} callers: none shared"
        );
        assert_eq!(fresh.keys.len(), 0, "a key was left behind");
    }

    #[tokio::test]
    async fn a_failed_read_goes_to_its_caller_only_and_a_dropped_one_is_rerun() {
        let fresh = FreshReads::<u32>::new();
        let failed = fresh.read("k", || async { Err::<u32, &str>("down") }).await;
        assert_eq!(failed, Err("down"));
        let abandoned = tokio::time::timeout(
            Duration::from_millis(10),
            fresh.read("k", || async {
                std::future::pending::<()>().await;
                Ok::<_, &str>(1)
            }),
        )
        .await;
        assert!(abandoned.is_err());
        assert_eq!(fresh.read("k", || async { Ok::<_, &str>(2) }).await, Ok(2));
        assert_eq!(fresh.keys.len(), 0);
    }
}
