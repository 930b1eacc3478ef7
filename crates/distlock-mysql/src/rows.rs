//! The holder and waiter rows of `distlock_holders`, written by one task per backend on a
//! connection of its own, so that no grant or release waits for them.
//!
//! A statement that touches a table costs the server several times what a bare function
//! call such as `GET_LOCK` costs, so writing a row in every grant and deleting it in every
//! release made a lock cycle about twice the floor (docs/mysql.md, "Performance"). Rows are
//! only for inspection: the task gathers the changes of [`GATHER`] and writes their net
//! effect in one query, so a grant released within that time writes nothing. The same
//! backend's `inspect`, `list` and `force_release` [`HolderRows::flush`] first, so they
//! always see its own holders; another process sees a holder's row once it is written.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use distlock_core::OwnerInfo;
use mysql_async::{Conn, Opts};
use tokio::sync::{mpsc, oneshot};

use crate::{hex_literal, lock_name, millis, run};

/// How long the writer gathers changes before it writes them.
pub(crate) const GATHER: Duration = Duration::from_millis(2);

/// The longest [`HolderRows::flush`] waits: a writer whose connection hangs (a partition)
/// must not hang inspection with it.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// One row of `distlock_holders`: a holder when it has a token, else a waiter.
pub(crate) struct HolderRow {
    /// The lock's name (the row's key is its [`lock_name`], also for a semaphore).
    pub(crate) name: String,
    pub(crate) mode: &'static str,
    pub(crate) permits: u32,
    pub(crate) limit: u32,
    pub(crate) owner: OwnerInfo,
    /// Holders: when granted; waiters: when the acquisition started.
    pub(crate) since: SystemTime,
    pub(crate) ttl: Duration,
    pub(crate) token: Option<u64>,
}

enum Change {
    Upsert { conn_id: u32, row: Box<HolderRow> },
    Delete { conn_id: u32 },
    Flush(oneshot::Sender<()>),
}

/// The sending side of the writer task; the task ends when this is dropped.
pub(crate) struct HolderRows {
    changes: mpsc::UnboundedSender<Change>,
}

impl HolderRows {
    /// Starts the writer on the current Tokio runtime. It connects with `opts` when it
    /// first has something to write.
    pub(crate) fn start(opts: Opts) -> HolderRows {
        let (changes, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_rows(opts, receiver));
        HolderRows { changes }
    }

    /// Records that connection `conn_id` holds or waits as `row` says.
    pub(crate) fn upsert(&self, conn_id: u32, row: HolderRow) {
        let row = Box::new(row);
        let _ = self.changes.send(Change::Upsert { conn_id, row });
    }

    /// Records that connection `conn_id` neither holds nor waits any more.
    pub(crate) fn delete(&self, conn_id: u32) {
        let _ = self.changes.send(Change::Delete { conn_id });
    }

    /// Waits until every change sent before has been written (or failed to be), for at
    /// most [`FLUSH_WAIT`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the changes are written whether or not this is awaited.
    pub(crate) async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.changes.send(Change::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(FLUSH_WAIT, written).await;
        }
    }
}

/// The writer: gathers changes for [`GATHER`] (a flush ends the gathering at once), keeps
/// the last change of each connection and writes them in one query.
async fn write_rows(opts: Opts, mut changes: mpsc::UnboundedReceiver<Change>) {
    let mut conn: Option<Conn> = None;
    // Connections whose row may exist: a delete of any other has nothing to delete.
    let mut written: HashSet<u32> = HashSet::new();
    while let Some(first) = changes.recv().await {
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + GATHER;
        while !matches!(batch.last(), Some(Change::Flush(_))) {
            match tokio::time::timeout_at(until, changes.recv()).await {
                Ok(Some(change)) => batch.push(change),
                _ => break,
            }
        }
        let mut last: BTreeMap<u32, Option<Box<HolderRow>>> = BTreeMap::new();
        let mut flushes = Vec::new();
        for change in batch {
            match change {
                Change::Upsert { conn_id, row } => {
                    last.insert(conn_id, Some(row));
                }
                Change::Delete { conn_id } => {
                    last.insert(conn_id, None);
                }
                Change::Flush(done) => flushes.push(done),
            }
        }
        last.retain(|id, row| row.is_some() || written.contains(id));
        if !last.is_empty() {
            let sql = rows_sql(&last);
            let result = match conn.as_mut() {
                Some(c) => run(c, &sql).await,
                None => match Conn::new(opts.clone()).await {
                    Ok(c) => run(conn.insert(c), &sql).await,
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(_) => {
                    for (id, row) in &last {
                        match row {
                            Some(_) => written.insert(*id),
                            None => written.remove(id),
                        };
                    }
                }
                Err(e) => {
                    // The rows are for inspection only: report and go on with a new
                    // connection. What this batch left is unknown: its rows count as
                    // written, so that later deletes of them are sent; a row it failed to
                    // delete is left to the prune of the next backend that connects.
                    tracing::warn!(error = %e, "mysql: writing distlock's holder rows failed");
                    conn = None;
                    written.extend(last.keys());
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// One query for the net changes: a `DELETE` of the gone rows, a `REPLACE` of the others.
fn rows_sql(changes: &BTreeMap<u32, Option<Box<HolderRow>>>) -> String {
    let mut sql = String::with_capacity(256 + 512 * changes.len());
    let gone: Vec<String> = changes
        .iter()
        .filter(|(_, row)| row.is_none())
        .map(|(id, _)| id.to_string())
        .collect();
    if !gone.is_empty() {
        write!(
            sql,
            "DELETE FROM distlock_holders WHERE conn_id IN ({}); ",
            gone.join(", ")
        )
        .expect("writing to a String cannot fail");
    }
    let mut rows = changes
        .iter()
        .filter_map(|(id, row)| Some((id, row.as_deref()?)))
        .peekable();
    if rows.peek().is_some() {
        sql.push_str(
            "REPLACE INTO distlock_holders (conn_id, lock_key, name, mode, permits, lim, owner, \
             host, os_pid, description, since_ms, ttl_ms, token) VALUES ",
        );
        for (i, (id, row)) in rows.enumerate() {
            let description = match &row.owner.description {
                Some(d) => hex_literal(d.as_bytes()),
                None => "NULL".to_owned(),
            };
            let token = row
                .token
                .map_or_else(|| "NULL".to_owned(), |t| t.to_string());
            write!(
                sql,
                "{comma}({id}, {key}, {name}, '{mode}', {permits}, {limit}, '{owner}', {host}, \
                 {pid}, {description}, {since}, {ttl}, {token})",
                comma = if i == 0 { "" } else { ", " },
                key = hex_literal(lock_name(&row.name).as_bytes()),
                name = hex_literal(row.name.as_bytes()),
                mode = row.mode,
                permits = row.permits,
                limit = row.limit,
                owner = row.owner.owner,
                host = hex_literal(row.owner.host.as_bytes()),
                pid = row.owner.pid,
                since = millis(row.since),
                ttl = row.ttl.as_millis() as i64,
            )
            .expect("writing to a String cannot fail");
        }
        sql.push_str("; ");
    }
    // A final row, so that an error of an earlier statement cannot go unread (see `run`).
    sql.push_str("SELECT 1");
    sql
}
