//! The holder and waiter rows of `distlock_holders`, written off the lock's path by
//! [`HolderRows`] (distlock-core) on a connection of their own.
//!
//! A statement that touches a table costs the server several times what a bare function
//! call such as `GET_LOCK` costs, so writing a row in every grant and deleting it in every
//! release made a lock cycle about twice the floor (docs/mysql.md, "Performance").

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use distlock_core::{BoxFuture, HolderRows, OwnerInfo, RowStore};
use mysql_async::{Conn, Opts};

use crate::{BACKEND, hex_literal, lock_name, millis, run};

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

/// Starts the writer of a backend's rows, keyed by connection id. It connects with `opts`
/// when it first has something to write.
pub(crate) fn start(opts: Opts) -> HolderRows<HolderRow> {
    HolderRows::start(BACKEND, MySqlRows { opts, conn: None })
}

/// `distlock_holders`, on the writer's own connection.
struct MySqlRows {
    opts: Opts,
    conn: Option<Conn>,
}

impl RowStore for MySqlRows {
    type Row = HolderRow;

    fn write<'a>(
        &'a mut self,
        changes: &'a BTreeMap<u32, Option<Box<HolderRow>>>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let sql = rows_sql(changes);
            let conn = match &mut self.conn {
                Some(conn) => conn,
                None => self.conn.insert(
                    Conn::new(self.opts.clone())
                        .await
                        .map_err(|e| e.to_string())?,
                ),
            };
            let result = run(conn, &sql).await;
            if result.is_err() {
                self.conn = None;
            }
            result.map(|_| ()).map_err(|e| e.to_string())
        })
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
