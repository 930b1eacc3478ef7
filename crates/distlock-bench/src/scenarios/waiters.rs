//! Many waiters in one process: 10,000 tasks wait for one lock held in the same process. The
//! figures are what the process uses (its open sockets and resident memory, read from /proc
//! before connecting, once connected, and with every task queued), how long the tasks took to
//! queue, and how long the queue took to drain once the holder released (every task takes and
//! releases the lock once, so the drain is `count` hand-offs).
//!
//! Backends whose waiting needs a server session per waiter (PostgreSQL and MySQL wait inside
//! the server, files in the kernel) are left out: there the count is the number of
//! connections by design.

use std::time::Duration;

use crate::Result;
use crate::peers::PeerCommand;
use crate::report::{Kind, Row, Section, Unit};
use crate::rust_peers::WaitersOutput;

use super::{Context, Scenario, start_server, temp_dir};

/// The backends whose waiters share the process's connections.
const BACKENDS: [&str; 3] = ["redis", "zookeeper", "etcd"];

/// See the module docs.
#[derive(Debug)]
pub struct ManyWaiters;

impl Scenario for ManyWaiters {
    fn id(&self) -> &'static str {
        "waiters"
    }

    fn run(&self, ctx: &Context, _earlier: &[Section]) -> Result<Section> {
        let count = ctx.waiters;
        let mut section = Section::new(
            self.id(),
            format!("{count} waiters in one process"),
            format!(
                "One `distlock-bench peer distlock … waiters --count {count}` process holds a \
                 lock and starts {count} tasks that wait for it; sockets and resident memory \
                 come from /proc/self. **queue** is from starting the tasks until `inspect()` \
                 lists all of them as waiters; **drain** from the release until every task has \
                 taken and released the lock once ({count} hand-offs)."
            ),
            Unit::Millis,
        );
        let dir = temp_dir(ctx, "distlock-bench-waiters-")?;
        for backend in ctx.backends() {
            if !BACKENDS.contains(&backend) {
                continue;
            }
            eprintln!("distlock-bench:   {backend}");
            let server = start_server(backend, dir.path())?;
            let run = || -> Result<WaitersOutput> {
                let command = PeerCommand::rust("distlock", &server.url)?;
                let peer = command.start(&[
                    "waiters".to_owned(),
                    "--name".to_owned(),
                    "many-waiters".to_owned(),
                    "--count".to_owned(),
                    count.to_string(),
                ])?;
                Ok(peer
                    .finish_within(Duration::from_secs(600))?
                    .ok_or_else(|| format!("{backend}: the waiters peer printed nothing"))?)
            };
            // A backend that cannot serve this many waiters is a finding to report, not a
            // reason to lose the rest of the run.
            let output = match run() {
                Ok(output) => output,
                Err(e) => {
                    eprintln!("distlock-bench:   {backend} failed: {e}");
                    section.notes.push(format!(
                        "{backend}: {count} waiters in one process did not complete: {e}"
                    ));
                    continue;
                }
            };
            drop(server);
            section.rows.push(Row::measured(
                format!("{backend}: queue {count} waiters"),
                Kind::Distlock,
                &[output.enqueue_ns],
            )?);
            section.rows.push(Row::measured(
                format!("{backend}: drain {count} hand-offs"),
                Kind::Distlock,
                &[output.drain_ns],
            )?);
            let [before, connected, waiting] = output.sockets;
            let [rss_before, rss_connected, rss_waiting] = output.rss_kb;
            section.notes.push(format!(
                "{backend}: sockets {before} before connecting, {connected} connected, \
                 {waiting} with {count} waiters; resident memory {:.1} MiB before, {:.1} MiB \
                 connected, {:.1} MiB with {count} waiters ({:.2} KiB per waiter).",
                rss_before as f64 / 1024.0,
                rss_connected as f64 / 1024.0,
                rss_waiting as f64 / 1024.0,
                rss_waiting.saturating_sub(rss_connected) as f64 / count as f64,
            ));
        }
        Ok(section.finish())
    }
}
