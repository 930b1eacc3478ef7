//! Many keys: C clients in one process each loop try-lock + unlock on a random one of K keys,
//! and the throughput is compared with the same command mix sent raw to the same server.
//!
//! Each client is its own connection (its own `distlock::connect`, its own raw client), and all
//! run as tasks on one two-worker Tokio runtime. A try-lock that finds the key busy counts as an
//! attempt, not a cycle, for both.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Result;
use crate::floors::keys::{self, KeyLocker};
use crate::report::{ManyKeysRow, Section};
use crate::rust_peers::BoxFuture;

use super::{Context, Scenario, Server, start_server, temp_dir};

/// See the module docs.
#[derive(Debug)]
pub struct ManyKeys;

/// Connects one client of one kind.
type Connect = Box<dyn Fn() -> BoxFuture<'static, Result<Box<dyn KeyLocker>>>>;

impl Scenario for ManyKeys {
    fn id(&self) -> &'static str {
        "many_keys"
    }

    fn run(&self, ctx: &Context, _earlier: &[Section]) -> Result<Section> {
        let quick = ctx.network_cycles.iterations < 10_000;
        let key_counts: &[usize] = if quick { &[1_000] } else { &[1_000, 100_000] };
        let client_counts: &[usize] = if quick { &[1, 16] } else { &[1, 8, 64] };
        let duration = if quick {
            Duration::from_millis(500)
        } else {
            Duration::from_millis(1500)
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let dir = temp_dir(ctx, "distlock-bench-keys-")?;
        let mut rows = Vec::new();
        for backend in ctx.backends() {
            eprintln!("distlock-bench:   {backend}");
            let server = start_server(backend, dir.path())?;
            let raw = raw_clients(backend, &server, dir.path())?;
            let url = server.url.clone();
            let distlock: Connect = Box::new(move || {
                let url = url.clone();
                Box::pin(async move { keys::distlock(&url).await })
            });
            for &key_count in key_counts {
                for (connect, prefix) in [(&raw, "raw"), (&distlock, "dl")] {
                    runtime.block_on(warm_up(
                        connect,
                        &format!("{prefix}{key_count}"),
                        key_count,
                    ))?;
                }
                for &clients in client_counts {
                    // Raw first, then distlock, on separate key sets so neither finds the
                    // other's leftovers.
                    let (raw_rate, _) = runtime.block_on(throughput(
                        &raw,
                        &format!("raw{key_count}"),
                        key_count,
                        clients,
                        duration,
                    ))?;
                    let (rate, busy) = runtime.block_on(throughput(
                        &distlock,
                        &format!("dl{key_count}"),
                        key_count,
                        clients,
                        duration,
                    ))?;
                    rows.push(ManyKeysRow {
                        backend: backend.to_owned(),
                        keys: key_count,
                        clients,
                        raw_per_s: raw_rate,
                        distlock_per_s: rate,
                        ratio: if raw_rate > 0.0 { rate / raw_rate } else { 0.0 },
                        distlock_busy: busy,
                    });
                }
            }
        }
        let mut section = Section::new(
            self.id(),
            "Many keys",
            method(key_counts, client_counts, duration),
            crate::report::Unit::Micros,
        );
        section.notes = notes(&rows);
        section.many_keys = rows;
        Ok(section.finish())
    }
}

/// A connector of raw clients for `backend`'s `server`.
fn raw_clients(backend: &str, server: &Server, dir: &std::path::Path) -> Result<Connect> {
    fn connect<F, Fut>(f: F) -> Connect
    where
        F: Fn() -> Fut + 'static,
        Fut: std::future::Future<Output = Result<Box<dyn KeyLocker>>> + Send + 'static,
    {
        Box::new(move || Box::pin(f()))
    }
    let url = server.url.clone();
    let hosts = server.hosts.clone();
    Ok(match backend {
        "file" => {
            let dir = dir.to_owned();
            connect(move || {
                let dir = dir.clone();
                async move { keys::file(&dir) }
            })
        }
        "redis" => connect(move || {
            let url = url.clone();
            async move { keys::redis(&url).await }
        }),
        "postgres" => connect(move || {
            let url = url.clone();
            async move { keys::postgres(&url).await }
        }),
        "mysql" => connect(move || {
            let url = url.clone();
            async move { keys::mysql(&url).await }
        }),
        "zookeeper" => connect(move || {
            let hosts = hosts.clone();
            async move { keys::zookeeper(&hosts).await }
        }),
        "etcd" => connect(move || {
            let hosts = hosts.clone();
            async move { keys::etcd(&hosts).await }
        }),
        other => return Err(format!("no raw client for {other}").into()),
    })
}

/// How long the warm-up may touch keys for, per subject and key count.
const WARM_UP: Duration = Duration::from_secs(2);

/// Touches the keys once each, in order, with a few clients, for at most [`WARM_UP`]: first
/// use creates what a key needs (a lock file, a parent znode), which is not what the
/// throughput measures.
async fn warm_up(connect: &Connect, prefix: &str, key_count: usize) -> Result<()> {
    const CLIENTS: usize = 8;
    let deadline = Instant::now() + WARM_UP;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let mut locker = connect().await?;
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            for k in (client..key_count).step_by(CLIENTS) {
                if Instant::now() > deadline {
                    break;
                }
                tokio::task::coop::consume_budget().await;
                locker.cycle(&format!("{prefix}-{k}")).await?;
            }
            Ok::<_, crate::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Runs `clients` clients for `duration`; returns cycles per second and the busy share.
async fn throughput(
    connect: &Connect,
    prefix: &str,
    key_count: usize,
    clients: usize,
    duration: Duration,
) -> Result<(f64, f64)> {
    let mut lockers = Vec::with_capacity(clients);
    for _ in 0..clients {
        lockers.push(connect().await?);
    }
    let names: Arc<Vec<String>> =
        Arc::new((0..key_count).map(|k| format!("{prefix}-{k}")).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicU64::new(0));
    let busy = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, mut locker) in lockers.into_iter().enumerate() {
        let (names, stop, cycles, busy) =
            (names.clone(), stop.clone(), cycles.clone(), busy.clone());
        tasks.push(tokio::spawn(async move {
            // A cheap per-client pseudo-random walk over the keys (xorshift).
            let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 + 1);
            while !stop.load(Ordering::Relaxed) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let key = &names[(state % names.len() as u64) as usize];
                // Cooperative scheduling for clients that never wait (files).
                tokio::task::coop::consume_budget().await;
                if locker.cycle(key).await? {
                    cycles.fetch_add(1, Ordering::Relaxed);
                } else {
                    busy.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, crate::Error>(())
        }));
    }
    let started = Instant::now();
    // Not tokio's sleep: the raw file client never awaits anything pending, so its tasks can
    // keep both workers from turning the timer. This thread is only the runtime's caller.
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    // Count what finished inside the window only.
    let done = cycles.load(Ordering::Relaxed);
    let refused = busy.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for task in tasks {
        task.await??;
    }
    let attempts = done + refused;
    Ok((
        done as f64 / elapsed,
        if attempts > 0 {
            refused as f64 / attempts as f64
        } else {
            0.0
        },
    ))
}

/// Per backend, the range of distlock's ratios, and what distlock does per cycle beyond the raw
/// mix.
fn notes(rows: &[ManyKeysRow]) -> Vec<String> {
    let mut notes = Vec::new();
    let mut backends: Vec<&str> = rows.iter().map(|r| r.backend.as_str()).collect();
    backends.dedup();
    for backend in backends {
        let ratios: Vec<f64> = rows
            .iter()
            .filter(|r| r.backend == backend)
            .map(|r| r.ratio)
            .collect();
        let lo = ratios.iter().copied().fold(f64::MAX, f64::min);
        let hi = ratios.iter().copied().fold(f64::MIN, f64::max);
        let extra = match backend {
            "file" => {
                "per acquisition distlock also reads and advances the fencing counter and \
                 writes the holder record (`pread` + `pwrite`), checks the file's link count, \
                 and starts and stops a renewal task"
            }
            "redis" => {
                "distlock's acquire script also issues the fencing token, stores the \
                 holder record and checks the waiter queue; its release script hands off to \
                 waiters"
            }
            "postgres" => {
                "distlock also advances the durable fencing counter and sets the session's \
                 lease parameters (`idle_session_timeout`, keepalives) on the connection that \
                 holds the lock"
            }
            "mysql" => {
                "distlock also advances the fencing counter row and sets `wait_timeout` from \
                 the TTL on the connection that holds the lock"
            }
            "zookeeper" => {
                "distlock's Curator layout needs a parent znode per lock, a protected-mode \
                 sequential node and a getChildren to see its place in the queue"
            }
            "etcd" => {
                "distlock's create transaction also counts the keys under the lock's prefix \
                 (its place in the queue), and its release compares the key's create revision \
                 before deleting"
            }
            _ => "",
        };
        notes.push(format!(
            "{backend}: distlock reaches {lo:.2}× to {hi:.2}× of the raw rate; {extra}."
        ));
    }
    notes
}

fn method(keys: &[usize], clients: &[usize], duration: Duration) -> String {
    format!(
        "C clients (C = {clients:?}) in one process, each with its own connection, loop over \
         random keys of K (K = {keys:?}): try-lock, then unlock, for {:.1} s per point, as tasks \
         on a two-worker Tokio runtime. **raw**: the least each backend's lock takes, sent with \
         the same client crates distlock uses: files `open` + `F_OFD_SETLK` + unlock + `close`; \
         Redis `SET key owner NX PX` + a compare-and-delete script; PostgreSQL \
         `pg_try_advisory_lock` + `pg_advisory_unlock`; MySQL `GET_LOCK(key, 0)` + \
         `RELEASE_LOCK`; ZooKeeper create (ephemeral) + delete; etcd a create-if-absent txn + \
         delete. **distlock**: `mutex(key).no_wait().acquire()` + `release()`. Before the \
         points of a K, each subject touches its keys once, in order, with 8 clients, for at \
         most {} s, so that first-use costs (a new lock file, a new parent znode) weigh less; \
         with 100,000 keys the network backends get through only part of them. The ratio is \
         distlock's cycles per second ÷ raw's.",
        duration.as_secs_f64(),
        WARM_UP.as_secs()
    )
}
