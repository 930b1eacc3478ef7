//! The observer process: polls `inspect()` on the server directly (never through a proxy) and
//! logs the exclusive holders on every change, for the double-grant and lost-detection checks.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::clock::now_ns;
use crate::events::{JsonlWriter, ObserverSample};

/// The observer's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ObserveArgs {
    /// Backend URL (direct, not proxied).
    #[arg(long)]
    pub url: String,
    /// The lock's name.
    #[arg(long, default_value = "torture")]
    pub lock: String,
    /// JSONL sample log.
    #[arg(long)]
    pub log: PathBuf,
    /// Poll interval, ms.
    #[arg(long, default_value_t = 10)]
    pub interval_ms: u64,
    /// Stop after this long, ms.
    #[arg(long, default_value_t = 60_000)]
    pub duration_ms: u64,
}

/// Polls until the duration passes.
pub async fn run(args: ObserveArgs) -> Result<(), String> {
    let log = JsonlWriter::create(&args.log).map_err(|e| format!("log: {e}"))?;
    let deadline = Instant::now() + Duration::from_millis(args.duration_ms);
    let mut locks = None;
    // The state of the last sample written, and the send time of the last read showing it.
    let mut last: Option<(Vec<String>, Vec<String>, bool)> = None;
    let mut last_send: Option<u64> = None;
    println!("ready");
    while Instant::now() < deadline {
        if locks.is_none() {
            locks = distlock::connect(&args.url).await.ok();
        }
        let t_send = now_ns();
        let mut sample = match &locks {
            None => ObserverSample {
                t: now_ns(),
                error: Some("connect failed".into()),
                ..ObserverSample::default()
            },
            Some(l) => {
                let polled = tokio::time::timeout(Duration::from_secs(1), l.inspect(&args.lock))
                    .await
                    .map_err(|_| "inspect timed out".to_owned())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                let t = now_ns();
                match polled {
                    Ok(info) => {
                        let exclusive: Vec<_> = info
                            .holders
                            .iter()
                            .filter(|h| h.mode == distlock::LockMode::Exclusive)
                            .collect();
                        ObserverSample {
                            t,
                            tokens: exclusive.iter().map(|h| h.token.get()).collect(),
                            pids: exclusive.iter().map(|h| h.owner.pid).collect(),
                            owners: exclusive
                                .iter()
                                .map(|h| h.owner.owner.to_string())
                                .collect(),
                            waiters: info
                                .waiters
                                .iter()
                                .map(|w| w.owner.owner.to_string())
                                .collect(),
                            ..ObserverSample::default()
                        }
                    }
                    Err(e) => ObserverSample {
                        t,
                        error: Some(e),
                        ..ObserverSample::default()
                    },
                }
            }
        };
        sample.t_send = t_send;
        let key = (
            sample.owners.clone(),
            sample.waiters.clone(),
            sample.error.is_some(),
        );
        if last.as_ref() != Some(&key) {
            sample.prev_last_send = last_send;
            log.write(&sample);
            last = Some(key);
        }
        last_send = Some(t_send);
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    Ok(())
}
