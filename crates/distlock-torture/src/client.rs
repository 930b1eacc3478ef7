//! A client process: acquire → read the oracle (logged) → work → write the oracle with the token →
//! release, until its duration runs out, logging every event with a CLOCK_MONOTONIC stamp.
//!
//! The client writes without re-checking its lease first: that is the window every real
//! client has between its last check and its write, stretched by the injected pauses, and the
//! one fencing exists for.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::events::{ClientEvent, JsonlWriter};
use crate::oracle::{BeginReply, CommitReply, OracleConn, Request};

/// A client's settings, from its command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Backend URL.
    #[arg(long)]
    pub url: String,
    /// This client's name (unique in the run).
    #[arg(long)]
    pub name: String,
    /// The lock's name.
    #[arg(long, default_value = "torture")]
    pub lock: String,
    /// The oracle's `host:port`.
    #[arg(long)]
    pub oracle: String,
    /// JSONL event log.
    #[arg(long)]
    pub log: PathBuf,
    /// Seed for the work durations.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Lease TTL, ms.
    #[arg(long, default_value_t = 2000)]
    pub ttl_ms: u64,
    /// Shortest work, ms.
    #[arg(long, default_value_t = 20)]
    pub work_min_ms: u64,
    /// Longest work, ms.
    #[arg(long, default_value_t = 300)]
    pub work_max_ms: u64,
    /// Stop starting iterations after this long, ms.
    #[arg(long, default_value_t = 10_000)]
    pub duration_ms: u64,
}

/// Runs the client loop.
pub async fn run(args: ClientArgs) -> Result<(), String> {
    let log = JsonlWriter::create(&args.log).map_err(|e| format!("log: {e}"))?;
    let ev = |name: &str, token: Option<u64>, detail: Option<String>| {
        log.write(&ClientEvent::now(&args.name, name, token, detail));
    };
    let locks = distlock::connect(&args.url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut oracle = OracleConn::connect(&args.oracle)
        .await
        .map_err(|e| format!("oracle: {e}"))?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let deadline = Instant::now() + Duration::from_millis(args.duration_ms);
    let ttl = Duration::from_millis(args.ttl_ms);
    println!("ready");
    while Instant::now() < deadline {
        ev("request", None, None);
        let lease = match locks
            .mutex(&args.lock)
            .ttl(ttl)
            .wait(deadline.saturating_duration_since(Instant::now()) + ttl)
            .acquire()
            .await
        {
            Ok(lease) => lease,
            Err(e) => {
                ev("acquire_error", None, Some(e.to_string()));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let token = lease.token().get();
        let mut granted = ClientEvent::now(&args.name, "granted", Some(token), None);
        // The observer reports holders by owner id: this is how the checkers match them.
        granted.owner = Some(lease.owner().to_string());
        log.write(&granted);
        let lost = lease.lost();
        let lost_log = log.clone();
        let name = args.name.clone();
        let watcher = tokio::spawn(async move {
            let error = lost.await;
            lost_log.write(&ClientEvent::now(
                &name,
                "lost",
                Some(token),
                Some(error.to_string()),
            ));
        });
        let begin: BeginReply = oracle
            .call(&Request::Begin { token })
            .await
            .map_err(|e| format!("oracle: {e}"))?;
        // The controller's SIGSTOP waits for this event, so a stopped holder is stopped between
        // its read and its write: the window a lost update needs.
        ev("read", Some(token), None);
        let work = rng.random_range(args.work_min_ms..=args.work_max_ms.max(args.work_min_ms));
        tokio::time::sleep(Duration::from_millis(work)).await;
        // Logged before the request goes out: a holder stopped with "read" as its last event
        // has not sent its write (a stop that lands while the write is in flight would let it
        // reach the oracle before the lock passes on, and the control would see nothing).
        ev("writing", Some(token), None);
        let commit: CommitReply = oracle
            .call(&Request::Commit {
                token,
                based_on: begin.value,
                version: begin.version,
                cas_expect: begin.cas,
            })
            .await
            .map_err(|e| format!("oracle: {e}"))?;
        ev(
            "commit",
            Some(token),
            Some(format!(
                "lost_update={} fenced={} cas_ok={}",
                commit.lost_update, commit.fenced, commit.cas_ok
            )),
        );
        ev("releasing", Some(token), None);
        let released = lease.release().await;
        // Give a Lost that raced the release a moment to be logged, then stop watching.
        tokio::task::yield_now().await;
        watcher.abort();
        ev(
            "released",
            Some(token),
            released.err().map(|e| e.to_string()),
        );
        let pause = rng.random_range(0..=20);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    ev("exit", None, None);
    Ok(())
}
