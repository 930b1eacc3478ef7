//! A writer of holder records that keeps them off the lock's path.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::BoxFuture;

/// How long a session's holder record must stand before a [`HolderRows`] writer writes it.
pub const ROW_GATHER: Duration = Duration::from_millis(50);

/// The longest [`HolderRows::flush`] waits: a writer whose connection hangs (a partition)
/// must not hang inspection with it.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// Where a [`HolderRows`] writer puts the records: a backend's table, on a connection of
/// the store's own.
pub trait RowStore: Send + 'static {
    /// What is recorded of one session that holds or waits.
    type Row: Send + 'static;

    /// Writes the net effect of a batch, keyed by session: `Some` rows are inserted or
    /// replaced, `None` rows deleted. On an error the store should drop its connection; the
    /// writer reports the error and goes on.
    fn write<'a>(
        &'a mut self,
        changes: &'a BTreeMap<u32, Option<Box<Self::Row>>>,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// A session's latest change: its record (`None`: it holds and waits no more), and when.
struct Change<R> {
    row: Option<Box<R>>,
    at: Instant,
}

/// What the writer has yet to write: the latest change of each session, and who waits for
/// them.
struct Pending<R> {
    changes: BTreeMap<u32, Change<R>>,
    flushes: Vec<oneshot::Sender<()>>,
    /// The writer has these changes in hand (so the next ones need not wake it again).
    woken: bool,
    /// The handle was dropped: the writer ends.
    closed: bool,
}

struct Queue<R> {
    pending: Mutex<Pending<R>>,
    wake: Notify,
}

/// Records who holds and waits on a server, written by one task per backend so that no
/// grant or release waits for them.
///
/// A statement that touches a table costs a SQL server several times what a bare lock call
/// costs, so a row written in every grant and deleted in every release costs a lock cycle
/// most of a round trip. Holder records are only for inspection: the writer writes a
/// session's record once it has stood for [`ROW_GATHER`], all that are due in one call of
/// [`RowStore::write`]. A lock held, or a wait, shorter than that writes nothing, and under
/// contention, where every process's sessions change state every few round trips, the
/// server is not kept busy with records that are gone before anyone reads them. Recording a
/// change takes a lock and a map insert; only the first change after a quiet spell wakes the
/// writer. A backend's own inspection calls [`flush`](HolderRows::flush) first, which writes
/// everything at once, so it always sees its own holders and waiters; another process sees a
/// record once it is written. Readers must therefore check a record against the server's own
/// state before they trust it.
pub struct HolderRows<R> {
    queue: Arc<Queue<R>>,
}

impl<R: Send + 'static> HolderRows<R> {
    /// Starts the writer on the current Tokio runtime; `backend` names it in its logs. The
    /// task ends when the returned handle is dropped.
    pub fn start<S: RowStore<Row = R>>(backend: &'static str, store: S) -> HolderRows<R> {
        let queue = Arc::new(Queue {
            pending: Mutex::new(Pending {
                changes: BTreeMap::new(),
                flushes: Vec::new(),
                woken: false,
                closed: false,
            }),
            wake: Notify::new(),
        });
        tokio::spawn(write_rows(backend, store, Arc::clone(&queue)));
        HolderRows { queue }
    }

    /// Records that `session` holds or waits as `row` says.
    pub fn upsert(&self, session: u32, row: R) {
        self.change(session, Some(Box::new(row)));
    }

    /// Records that `session` neither holds nor waits any more.
    pub fn delete(&self, session: u32) {
        self.change(session, None);
    }

    fn change(&self, session: u32, row: Option<Box<R>>) {
        let at = Instant::now();
        let mut pending = self.queue.pending.lock().unwrap();
        pending.changes.insert(session, Change { row, at });
        if !std::mem::replace(&mut pending.woken, true) {
            self.queue.wake.notify_one();
        }
    }

    /// Writes every change recorded before, at once, and waits until it is written (or
    /// failed to be), for at most one second.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the changes are written whether or not this is awaited.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        {
            let mut pending = self.queue.pending.lock().unwrap();
            pending.flushes.push(done);
            pending.woken = true;
        }
        // Also cuts short the writer's wait for the next change to come due.
        self.queue.wake.notify_one();
        let _ = tokio::time::timeout(FLUSH_WAIT, written).await;
    }
}

impl<R> Drop for HolderRows<R> {
    fn drop(&mut self) {
        self.queue.pending.lock().unwrap().closed = true;
        self.queue.wake.notify_one();
    }
}

impl<R> std::fmt::Debug for HolderRows<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HolderRows").finish_non_exhaustive()
    }
}

/// The writer: woken by the first change after a quiet spell, it writes each session's
/// latest change once that has stood for [`ROW_GATHER`] (everything at once on a flush),
/// and sleeps until the next one comes due.
async fn write_rows<S: RowStore>(backend: &'static str, mut store: S, queue: Arc<Queue<S::Row>>) {
    // Sessions whose row may exist: a delete of any other has nothing to delete.
    let mut written: HashSet<u32> = HashSet::new();
    loop {
        queue.wake.notified().await;
        loop {
            let (mut due, flushes, closed, next) = {
                let mut pending = queue.pending.lock().unwrap();
                let everything = !pending.flushes.is_empty() || pending.closed;
                let now = Instant::now();
                let mut due = BTreeMap::new();
                for (session, change) in std::mem::take(&mut pending.changes) {
                    if everything || change.at + ROW_GATHER <= now {
                        due.insert(session, change.row);
                    } else {
                        pending.changes.insert(session, change);
                    }
                }
                let next = pending.changes.values().map(|c| c.at + ROW_GATHER).min();
                if next.is_none() {
                    pending.woken = false;
                }
                (
                    due,
                    std::mem::take(&mut pending.flushes),
                    pending.closed,
                    next,
                )
            };
            due.retain(|id, row| row.is_some() || written.contains(id));
            if !due.is_empty() {
                match store.write(&due).await {
                    Ok(()) => {
                        for (id, row) in &due {
                            match row {
                                Some(_) => written.insert(*id),
                                None => written.remove(id),
                            };
                        }
                    }
                    Err(error) => {
                        // The rows are for inspection only: report and go on. What this
                        // batch left is unknown: its rows count as written, so that later
                        // deletes of them are sent; a row it failed to delete is left to the
                        // backend's prune of rows whose session is gone.
                        tracing::warn!(backend, %error, "distlock: writing holder rows failed");
                        written.extend(due.keys());
                    }
                }
            }
            for done in flushes {
                let _ = done.send(());
            }
            if closed {
                return;
            }
            let Some(next) = next else { break };
            // A flush or the handle's drop wakes this early.
            let _ = tokio::time::timeout_at(next, queue.wake.notified()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One batch, as (session, row or `None` for deleted) pairs.
    type Batch = Vec<(u32, Option<&'static str>)>;

    /// Keeps every batch it is given.
    struct Recorder(Arc<Mutex<Vec<Batch>>>);

    impl RowStore for Recorder {
        type Row = &'static str;
        fn write<'a>(
            &'a mut self,
            changes: &'a BTreeMap<u32, Option<Box<&'static str>>>,
        ) -> BoxFuture<'a, Result<(), String>> {
            let batch = changes.iter().map(|(s, r)| (*s, r.as_deref().copied()));
            self.0.lock().unwrap().push(batch.collect());
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_row_is_written_once_it_has_stood_for_the_gather_time() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let rows = HolderRows::start("test", Recorder(batches.clone()));
        let step = |parts| tokio::time::sleep(ROW_GATHER * parts / 4);
        rows.upsert(1, "a");
        step(2).await;
        // Replaces "a", which was never written; its own time starts now.
        rows.upsert(1, "b");
        rows.upsert(2, "c");
        rows.delete(2);
        step(3).await;
        assert!(
            batches.lock().unwrap().is_empty(),
            "nothing has stood for ROW_GATHER yet"
        );
        step(2).await;
        assert_eq!(*batches.lock().unwrap(), vec![vec![(1, Some("b"))]]);
    }

    #[tokio::test]
    async fn a_batch_writes_the_net_changes_and_skips_rows_never_written() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let rows = HolderRows::start("test", Recorder(batches.clone()));
        // Granted and released within one batch: nothing to write, nothing to delete.
        rows.upsert(1, "a");
        rows.delete(1);
        rows.upsert(2, "b");
        rows.upsert(2, "c");
        rows.flush().await;
        rows.delete(2);
        rows.delete(3);
        rows.flush().await;
        assert_eq!(
            *batches.lock().unwrap(),
            vec![vec![(2, Some("c"))], vec![(2, None)]]
        );
    }
}
