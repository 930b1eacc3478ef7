//! The rows of `distlock_holders`, written off the lock's path by [`HolderRows`]
//! (distlock-core) on a session of their own.
//!
//! An upsert in the grant statement made it a writing transaction: it cost a lock cycle about
//! a third of a round trip (docs/postgres.md, "Performance"). The grant now only sets the
//! session's `application_name` to the holder's identity, which readers check a row against.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use distlock_core::{BoxFuture, HolderRows, OwnerInfo, RowStore};
use tokio_postgres::Client;
use tokio_postgres::types::{ToSql, Type};

use crate::{BACKEND, Tls, connect_client, millis};

/// One row of `distlock_holders`, keyed by the server process id of its session: a holder
/// when it has a token, else a waiter.
pub(crate) struct HolderRow {
    pub(crate) name: String,
    pub(crate) mode: &'static str,
    pub(crate) permits: i32,
    pub(crate) limit: i32,
    /// The keys held (a semaphore's slots), or waited for.
    pub(crate) keys: Vec<i64>,
    pub(crate) owner: OwnerInfo,
    /// Holders: when granted; waiters: when the acquisition started.
    pub(crate) since: SystemTime,
    pub(crate) ttl: Duration,
    pub(crate) token: Option<u64>,
}

/// Starts the writer of a backend's rows into `holders` (the qualified table name). It
/// connects with `pg` and `tls` when it first has something to write.
pub(crate) fn start(pg: tokio_postgres::Config, tls: Tls, holders: &str) -> HolderRows<HolderRow> {
    let sql = format!(
        "WITH gone AS (DELETE FROM {holders} WHERE pid = ANY($1::int4[])) \
         INSERT INTO {holders} AS h (pid, name, mode, permits, lim, keys, owner, host, os_pid, \
         description, since, ttl_ms, token) \
         SELECT pid, name, mode, permits, lim, keys::int8[], owner, host, os_pid, description, \
         to_timestamp(since / 1000.0), ttl_ms, token \
         FROM unnest($2::int4[], $3::text[], $4::text[], $5::int4[], $6::int4[], $7::text[], \
         $8::text[], $9::text[], $10::int4[], $11::text[], $12::int8[], $13::int8[], \
         $14::int8[]) AS r(pid, name, mode, permits, lim, keys, owner, host, os_pid, \
         description, since, ttl_ms, token) \
         ON CONFLICT (pid) DO UPDATE SET name = excluded.name, mode = excluded.mode, \
         permits = excluded.permits, lim = excluded.lim, keys = excluded.keys, \
         owner = excluded.owner, host = excluded.host, os_pid = excluded.os_pid, \
         description = excluded.description, since = excluded.since, \
         ttl_ms = excluded.ttl_ms, token = excluded.token"
    );
    HolderRows::start(
        BACKEND,
        PgRows {
            pg,
            tls,
            sql,
            client: None,
        },
    )
}

/// `distlock_holders`, on the writer's own session.
struct PgRows {
    pg: tokio_postgres::Config,
    tls: Tls,
    sql: String,
    client: Option<Client>,
}

impl RowStore for PgRows {
    type Row = HolderRow;

    fn write<'a>(
        &'a mut self,
        changes: &'a BTreeMap<u32, Option<Box<HolderRow>>>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let gone: Vec<i32> = changes
                .iter()
                .filter(|(_, row)| row.is_none())
                .map(|(pid, _)| *pid as i32)
                .collect();
            let rows: Vec<(i32, &HolderRow)> = changes
                .iter()
                .filter_map(|(pid, row)| Some((*pid as i32, row.as_deref()?)))
                .collect();
            let column = |f: &dyn Fn(&HolderRow) -> String| -> Vec<String> {
                rows.iter().map(|(_, r)| f(r)).collect()
            };
            let pids: Vec<i32> = rows.iter().map(|(pid, _)| *pid).collect();
            let names = column(&|r| r.name.clone());
            let modes = column(&|r| r.mode.to_owned());
            let permits: Vec<i32> = rows.iter().map(|(_, r)| r.permits).collect();
            let limits: Vec<i32> = rows.iter().map(|(_, r)| r.limit).collect();
            let keys = column(&|r| {
                let keys: Vec<String> = r.keys.iter().map(i64::to_string).collect();
                format!("{{{}}}", keys.join(","))
            });
            let owners = column(&|r| r.owner.owner.to_string());
            let hosts = column(&|r| r.owner.host.clone());
            let os_pids: Vec<i32> = rows.iter().map(|(_, r)| r.owner.pid as i32).collect();
            let descriptions: Vec<Option<&str>> = rows
                .iter()
                .map(|(_, r)| r.owner.description.as_deref())
                .collect();
            let since: Vec<i64> = rows.iter().map(|(_, r)| millis(r.since)).collect();
            let ttls: Vec<i64> = rows.iter().map(|(_, r)| r.ttl.as_millis() as i64).collect();
            let tokens: Vec<Option<i64>> = rows
                .iter()
                .map(|(_, r)| r.token.map(|t| t as i64))
                .collect();
            let params: [(&(dyn ToSql + Sync), Type); 14] = [
                (&gone, Type::INT4_ARRAY),
                (&pids, Type::INT4_ARRAY),
                (&names, Type::TEXT_ARRAY),
                (&modes, Type::TEXT_ARRAY),
                (&permits, Type::INT4_ARRAY),
                (&limits, Type::INT4_ARRAY),
                (&keys, Type::TEXT_ARRAY),
                (&owners, Type::TEXT_ARRAY),
                (&hosts, Type::TEXT_ARRAY),
                (&os_pids, Type::INT4_ARRAY),
                (&descriptions, Type::TEXT_ARRAY),
                (&since, Type::INT8_ARRAY),
                (&ttls, Type::INT8_ARRAY),
                (&tokens, Type::INT8_ARRAY),
            ];
            let client = match &self.client {
                Some(client) if !client.is_closed() => client,
                _ => {
                    let (client, _task) = connect_client(&self.pg, &self.tls, Default::default())
                        .await
                        .map_err(|e| crate::describe(&e))?;
                    self.client.insert(client)
                }
            };
            let result = client.query_typed(&self.sql, &params).await;
            result.map(|_| ()).map_err(|e| {
                self.client = None;
                crate::describe(&e)
            })
        })
    }
}
