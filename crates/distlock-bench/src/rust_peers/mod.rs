//! `distlock-bench peer LIB --url URL MODE …`: distlock and the Rust peers speaking the
//! [peer protocol](crate::peers), each in its own process like the peers in other languages.
//!
//! A Rust peer is a [`RustPeer`]: a name, a version and a function that connects a
//! [`PeerLock`]. The backend modules list theirs; other lock crates are compiled only with the
//! `rust-peers` feature (on in `scripts/bench`), so that the test suite does not build them.

mod file;
mod net;

pub use net::{MYSQL_RAW, POSTGRES_RAW, REDIS_RELAY};

use std::future::Future;
use std::io::BufRead;
use std::pin::Pin;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::Result;
use crate::peers::monotonic_ns;

/// A boxed future, as the object-safe [`PeerLock`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One lock of one library, connected to one server.
pub trait PeerLock: Send {
    /// Acquires the lock, waiting (and retrying) without bound.
    fn acquire(&mut self) -> BoxFuture<'_, Result<()>>;
    /// Releases what [`acquire`](PeerLock::acquire) took.
    fn release(&mut self) -> BoxFuture<'_, Result<()>>;
}

/// Connects a [`PeerLock`] on the lock `name` of the server at `url`.
pub type Connect = fn(url: String, name: String) -> BoxFuture<'static, Result<Box<dyn PeerLock>>>;

/// A Rust lock library that the peer protocol can drive.
#[derive(Clone, Copy)]
pub struct RustPeer {
    /// Its name on the command line and in reports, such as `rslock`.
    pub lib: &'static str,
    /// Its version, as resolved in Cargo.lock.
    pub version: &'static str,
    /// Connects one lock.
    pub connect: Connect,
}

/// Every library `distlock-bench peer` knows: distlock first.
pub fn all() -> Vec<RustPeer> {
    let mut peers = vec![
        RustPeer {
            lib: "distlock",
            version: env!("CARGO_PKG_VERSION"),
            connect: |url, name| connect_distlock(url, name, true),
        },
        // The bench's own uncontended cycle, for `scripts/profile`.
        RustPeer {
            lib: "distlock-no-wait",
            version: env!("CARGO_PKG_VERSION"),
            connect: |url, name| connect_distlock(url, name, false),
        },
    ];
    peers.extend(file::peers());
    peers.extend(net::peers());
    peers
}

/// The arguments of `distlock-bench peer`.
#[derive(Debug, Parser)]
pub struct PeerArgs {
    /// The library: `distlock` or a Rust peer.
    lib: String,
    /// The server (a distlock URL, or what the library takes).
    #[arg(long)]
    url: String,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Timed uncontended cycles.
    Cycle {
        #[arg(long)]
        name: String,
        #[arg(long)]
        warmup: usize,
        #[arg(long)]
        iterations: usize,
    },
    /// Contention: see the peer protocol.
    Contend {
        #[arg(long)]
        name: String,
        #[arg(long)]
        hold_us: u64,
        #[arg(long)]
        duration_ms: u64,
    },
    /// distlock only: acquire with this TTL, print `held`, then wait for the lease to be lost
    /// and print `lost <CLOCK_MONOTONIC ns>` (the takeover scenario kills or stops this one).
    Hold {
        #[arg(long)]
        name: String,
        #[arg(long)]
        ttl_ms: u64,
    },
    /// Print `ready`, acquire once waiting without bound, print `granted <CLOCK_MONOTONIC ns>`.
    Take {
        #[arg(long)]
        name: String,
    },
    /// distlock only: hold the lock, start `count` tasks waiting for it in this process, then
    /// release and let each take it once; print the process's sockets and resident memory
    /// before connecting, after connecting and with every task waiting, and the times.
    Waiters {
        #[arg(long)]
        name: String,
        #[arg(long)]
        count: usize,
    },
}

/// What `peer distlock waiters` prints.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct WaitersOutput {
    /// Open sockets of the process: before connecting, connected, with every task waiting.
    pub sockets: [usize; 3],
    /// Resident memory (kB) at the same three points.
    pub rss_kb: [u64; 3],
    /// From starting the tasks until the backend listed all of them as waiters, ns.
    pub enqueue_ns: u64,
    /// From releasing until every task had taken and released the lock, ns.
    pub drain_ns: u64,
}

/// The process's open sockets and resident memory (kB), from /proc.
fn sockets_and_rss() -> Result<(usize, u64)> {
    let sockets = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count();
    let status = std::fs::read_to_string("/proc/self/status")?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS in /proc/self/status")?;
    Ok((sockets, rss))
}

/// See [`Mode::Waiters`].
async fn run_waiters(url: &str, name: &str, count: usize) -> Result<WaitersOutput> {
    let before = sockets_and_rss()?;
    let locks = distlock::connect(url).await?;
    let holder = locks.mutex(name).acquire().await?;
    let connected = sockets_and_rss()?;
    let started = monotonic_ns();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let locks = locks.clone();
        let name = name.to_owned();
        tasks.spawn(async move {
            let lease = locks.mutex(&name).wait_forever().acquire().await?;
            lease.release().await?;
            Ok::<_, distlock::Error>(())
        });
    }
    let give_up = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        // No task can finish while the lock is held, unless its acquire failed: say why now.
        if let Some(finished) = tasks.try_join_next() {
            finished??;
            return Err("a waiter acquired the lock while it was held".into());
        }
        let info = locks.inspect(name).await?;
        if info.waiters.len() >= count {
            break;
        }
        if std::time::Instant::now() > give_up {
            return Err(format!(
                "only {} of {count} waiters queued after 120 s",
                info.waiters.len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let enqueue_ns = monotonic_ns() - started;
    let waiting = sockets_and_rss()?;
    let released = monotonic_ns();
    holder.release().await?;
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(WaitersOutput {
        sockets: [before.0, connected.0, waiting.0],
        rss_kb: [before.1, connected.1, waiting.1],
        enqueue_ns,
        drain_ns: monotonic_ns() - released,
    })
}

/// Runs `distlock-bench peer …` to the end, printing its JSON.
pub fn run(args: PeerArgs) -> Result<()> {
    let peer = all()
        .into_iter()
        .find(|p| p.lib == args.lib)
        .ok_or_else(|| {
            let known: Vec<_> = all().iter().map(|p| p.lib).collect();
            format!(
                "unknown peer {:?}; known: {} (others need the rust-peers feature)",
                args.lib,
                known.join(", ")
            )
        })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let output = runtime.block_on(async {
        match args.mode {
            Mode::Hold { name, ttl_ms } => {
                if peer.lib != "distlock" {
                    return Err::<_, crate::Error>(
                        format!("hold mode needs distlock's lease, not {}", peer.lib).into(),
                    );
                }
                let locks = distlock::connect(&args.url).await?;
                let lease = locks
                    .mutex(&name)
                    .ttl(Duration::from_millis(ttl_ms))
                    .acquire()
                    .await?;
                println!("held");
                let _lost = lease.lost().await;
                println!("lost {}", monotonic_ns());
                Ok(serde_json::json!({ "lib": peer.lib, "version": peer.version }))
            }
            Mode::Waiters { name, count } => {
                if peer.lib != "distlock" {
                    return Err(format!("waiters mode is distlock's, not {}", peer.lib).into());
                }
                let output = run_waiters(&args.url, &name, count).await?;
                Ok(serde_json::to_value(output)?)
            }
            Mode::Take { name } => {
                let mut lock = (peer.connect)(args.url, name).await?;
                println!("ready");
                lock.acquire().await?;
                println!("granted {}", monotonic_ns());
                lock.release().await?;
                Ok(serde_json::json!({ "lib": peer.lib, "version": peer.version }))
            }
            Mode::Cycle {
                name,
                warmup,
                iterations,
            } => {
                let mut lock = (peer.connect)(args.url, name).await?;
                for _ in 0..warmup {
                    lock.acquire().await?;
                    lock.release().await?;
                }
                let mut samples = Vec::with_capacity(iterations);
                for _ in 0..iterations {
                    let started = monotonic_ns();
                    lock.acquire().await?;
                    lock.release().await?;
                    samples.push(monotonic_ns() - started);
                }
                Ok(serde_json::json!({
                    "lib": peer.lib, "version": peer.version, "samples": samples,
                }))
            }
            Mode::Contend {
                name,
                hold_us,
                duration_ms,
            } => {
                let mut lock = (peer.connect)(args.url, name).await?;
                lock.acquire().await?;
                lock.release().await?;
                println!("ready");
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                let hold = Duration::from_micros(hold_us);
                let stop = monotonic_ns() + duration_ms * 1_000_000;
                let mut events = Vec::new();
                while monotonic_ns() < stop {
                    let requested = monotonic_ns();
                    lock.acquire().await?;
                    let granted = monotonic_ns();
                    if !hold.is_zero() {
                        // Not tokio's sleep: its millisecond timer wheel would turn a 1 ms hold
                        // into up to 2 ms. Nothing else needs this thread meanwhile.
                        std::thread::sleep(hold);
                    }
                    let releasing = monotonic_ns();
                    lock.release().await?;
                    events.push([requested, granted, releasing, monotonic_ns()]);
                }
                Ok(serde_json::json!({
                    "lib": peer.lib, "version": peer.version, "events": events,
                }))
            }
        }
    })?;
    println!("{output}");
    Ok(())
}

/// distlock through the facade: `connect(url)` and a mutex that waits without bound, or with
/// `no_wait()` when `wait` is false.
fn connect_distlock(
    url: String,
    name: String,
    wait: bool,
) -> BoxFuture<'static, Result<Box<dyn PeerLock>>> {
    Box::pin(async move {
        let locks = distlock::connect(&url).await?;
        Ok(Box::new(DistlockPeer {
            locks,
            name,
            wait,
            lease: None,
        }) as Box<dyn PeerLock>)
    })
}

struct DistlockPeer {
    locks: distlock::Locks,
    name: String,
    wait: bool,
    lease: Option<distlock::Lease>,
}

impl PeerLock for DistlockPeer {
    fn acquire(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mutex = self.locks.mutex(&self.name);
            let mutex = if self.wait {
                mutex.wait_forever()
            } else {
                mutex.no_wait()
            };
            let lease = mutex.acquire().await?;
            self.lease = Some(lease);
            Ok(())
        })
    }

    fn release(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if let Some(lease) = self.lease.take() {
                lease.release().await?;
            }
            Ok(())
        })
    }
}
