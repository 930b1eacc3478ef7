//! A writer of holder records that keeps them off the lock's path.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use crate::BoxFuture;

/// How long a [`HolderRows`] writer gathers changes before it writes them.
pub const ROW_GATHER: Duration = Duration::from_millis(2);

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

/// What the writer has yet to write: the last change of each session since the last batch,
/// and who waits for it.
struct Pending<R> {
    changes: BTreeMap<u32, Option<Box<R>>>,
    flushes: Vec<oneshot::Sender<()>>,
    /// The writer was woken for these changes (so the next ones need not wake it again).
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
/// most of a round trip. Holder records are only for inspection: the writer gathers the
/// changes of [`ROW_GATHER`] and writes their net effect in one call of
/// [`RowStore::write`], so a grant released within that time writes nothing. Recording a
/// change takes a lock and a map insert; only the first change of a batch wakes the writer.
/// A backend's own inspection calls [`flush`](HolderRows::flush) first, so it always sees
/// its own holders; another process sees a record once it is written. Readers must
/// therefore check a record against the server's own state before they trust it.
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
        let mut pending = self.queue.pending.lock().unwrap();
        pending.changes.insert(session, row);
        if !std::mem::replace(&mut pending.woken, true) {
            self.queue.wake.notify_one();
        }
    }

    /// Waits until every change recorded before has been written (or failed to be), for at
    /// most one second.
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
        // Also ends a gathering in progress.
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

/// The writer: woken by the first change of a batch, gathers for [`ROW_GATHER`] (a flush
/// ends the gathering at once), then writes the last change of each session in one call.
async fn write_rows<S: RowStore>(backend: &'static str, mut store: S, queue: Arc<Queue<S::Row>>) {
    // Sessions whose row may exist: a delete of any other has nothing to delete.
    let mut written: HashSet<u32> = HashSet::new();
    loop {
        queue.wake.notified().await;
        let gathering = {
            let pending = queue.pending.lock().unwrap();
            pending.flushes.is_empty() && !pending.closed
        };
        if gathering {
            // A flush or the handle's drop wakes this early.
            let _ = tokio::time::timeout(ROW_GATHER, queue.wake.notified()).await;
        }
        let (mut last, flushes, closed) = {
            let mut pending = queue.pending.lock().unwrap();
            pending.woken = false;
            (
                std::mem::take(&mut pending.changes),
                std::mem::take(&mut pending.flushes),
                pending.closed,
            )
        };
        last.retain(|id, row| row.is_some() || written.contains(id));
        if !last.is_empty() {
            match store.write(&last).await {
                Ok(()) => {
                    for (id, row) in &last {
                        match row {
                            Some(_) => written.insert(*id),
                            None => written.remove(id),
                        };
                    }
                }
                Err(error) => {
                    // The rows are for inspection only: report and go on. What this batch
                    // left is unknown: its rows count as written, so that later deletes of
                    // them are sent; a row it failed to delete is left to the backend's
                    // prune of rows whose session is gone.
                    tracing::warn!(backend, %error, "distlock: writing holder rows failed");
                    written.extend(last.keys());
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
        if closed {
            return;
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
