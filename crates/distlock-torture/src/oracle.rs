//! The resource oracle: a TCP server process on 127.0.0.1 holding three registers that the
//! clients treat as the protected resource.
//!
//! - an **unfenced counter**: `begin` reads it, `commit` writes `read + 1`; a commit whose read
//!   value is no longer current overwrote someone else's update and counts as a lost update;
//! - a **fenced register**: `begin` and `commit` carry the lease's token and are rejected when
//!   it is below the highest token the register has seen. An accepted commit whose version is no
//!   longer the one its `begin` read is *accepted-but-stale*: fencing let a lost update through
//!   (only possible when tokens repeat or go backwards);
//! - a **CAS register** (control): `commit` is a compare-and-swap from the value `begin` read;
//!   it fails exactly when another commit intervened, whatever the lock did.
//!
//! Protocol: one JSON request per line, one JSON reply per line.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A request to the oracle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Read all three registers; the fenced read carries the lease's token.
    Begin {
        /// The fencing token.
        token: u64,
    },
    /// Write all three registers from what `begin` returned.
    Commit {
        /// The fencing token.
        token: u64,
        /// The unfenced value `begin` read.
        based_on: u64,
        /// The fenced register's version `begin` read.
        version: u64,
        /// The CAS register's value `begin` read.
        cas_expect: u64,
    },
    /// The counts so far.
    Stats,
}

/// What `begin` returns.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BeginReply {
    /// The unfenced counter.
    pub value: u64,
    /// Whether the fenced read was accepted.
    pub fenced_ok: bool,
    /// The fenced register's version.
    pub version: u64,
    /// The CAS register.
    pub cas: u64,
}

/// What `commit` returns.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommitReply {
    /// The unfenced write overwrote another client's update.
    pub lost_update: bool,
    /// `accepted`, `rejected` or `stale` (accepted-but-stale).
    pub fenced: String,
    /// Whether the compare-and-swap succeeded.
    pub cas_ok: bool,
}

/// The oracle's counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OracleStats {
    /// Commits received.
    pub commits: u64,
    /// Unfenced writes that overwrote another client's update.
    pub lost_updates: u64,
    /// Final unfenced counter (commits − lost updates).
    pub counter: u64,
    /// Fenced reads rejected (token below the highest seen).
    pub fenced_reads_rejected: u64,
    /// Fenced writes rejected.
    pub fenced_writes_rejected: u64,
    /// Fenced writes accepted.
    pub fenced_writes_accepted: u64,
    /// Fenced writes accepted although another write happened since their read.
    pub fenced_accepted_stale: u64,
    /// Successful compare-and-swaps.
    pub cas_ok: u64,
    /// Failed compare-and-swaps (another commit intervened).
    pub cas_failed: u64,
}

#[derive(Default)]
struct State {
    counter: u64,
    highest: u64,
    fenced_version: u64,
    cas: u64,
    stats: OracleStats,
}

impl State {
    fn handle(&mut self, request: Request) -> serde_json::Value {
        match request {
            Request::Begin { token } => {
                let fenced_ok = token >= self.highest;
                if fenced_ok {
                    self.highest = token;
                } else {
                    self.stats.fenced_reads_rejected += 1;
                }
                serde_json::to_value(BeginReply {
                    value: self.counter,
                    fenced_ok,
                    version: self.fenced_version,
                    cas: self.cas,
                })
            }
            Request::Commit {
                token,
                based_on,
                version,
                cas_expect,
            } => {
                self.stats.commits += 1;
                let lost_update = self.counter != based_on;
                if lost_update {
                    self.stats.lost_updates += 1;
                }
                self.counter = based_on + 1;
                let fenced = if token < self.highest {
                    self.stats.fenced_writes_rejected += 1;
                    "rejected"
                } else {
                    self.highest = token;
                    self.stats.fenced_writes_accepted += 1;
                    let stale = version != self.fenced_version;
                    self.fenced_version += 1;
                    if stale {
                        self.stats.fenced_accepted_stale += 1;
                        "stale"
                    } else {
                        "accepted"
                    }
                };
                let cas_ok = self.cas == cas_expect;
                if cas_ok {
                    self.cas += 1;
                    self.stats.cas_ok += 1;
                } else {
                    self.stats.cas_failed += 1;
                }
                serde_json::to_value(CommitReply {
                    lost_update,
                    fenced: fenced.to_owned(),
                    cas_ok,
                })
            }
            Request::Stats => {
                self.stats.counter = self.counter;
                serde_json::to_value(&self.stats)
            }
        }
        .expect("replies serialize")
    }
}

/// Runs the oracle on `listen` until `lifetime` passes (a bound so it always stops by itself).
/// Prints `listening <addr>` once ready.
pub async fn run(listen: &str, lifetime: std::time::Duration) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("listening {}", listener.local_addr()?);
    let state = Arc::new(Mutex::new(State::default()));
    let serve = async {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let reply = match serde_json::from_str::<Request>(&line) {
                        Ok(request) => state.lock().unwrap().handle(request),
                        Err(e) => serde_json::json!({ "error": e.to_string() }),
                    };
                    let mut out = reply.to_string();
                    out.push('\n');
                    if write.write_all(out.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    };
    let _ = tokio::time::timeout(lifetime, serve).await;
    Ok(())
}

/// A client connection to the oracle.
pub struct OracleConn {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl OracleConn {
    /// Connects to the oracle at `addr`.
    pub async fn connect(addr: &str) -> std::io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(OracleConn {
            lines: BufReader::new(read).lines(),
            write,
        })
    }

    /// Sends one request and decodes the reply.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &mut self,
        request: &Request,
    ) -> std::io::Result<T> {
        let mut line = serde_json::to_string(request).expect("requests serialize");
        line.push('\n');
        self.write.write_all(line.as_bytes()).await?;
        let reply = self.lines.next_line().await?.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "oracle closed")
        })?;
        serde_json::from_str(&reply)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(s: &mut State, token: u64, b: &BeginReply) -> CommitReply {
        serde_json::from_value(s.handle(Request::Commit {
            token,
            based_on: b.value,
            version: b.version,
            cas_expect: b.cas,
        }))
        .unwrap()
    }

    fn begin(s: &mut State, token: u64) -> BeginReply {
        serde_json::from_value(s.handle(Request::Begin { token })).unwrap()
    }

    #[test]
    fn interleaving_counts_lost_updates_and_fencing_rejects_the_older_token() {
        let mut s = State::default();
        let a = begin(&mut s, 5);
        let b = begin(&mut s, 6);
        assert!(!commit(&mut s, 6, &b).lost_update);
        let late = commit(&mut s, 5, &a);
        assert!(late.lost_update);
        assert_eq!(late.fenced, "rejected");
        assert!(!late.cas_ok);
        assert_eq!(s.stats.fenced_accepted_stale, 0);
    }

    #[test]
    fn a_repeated_token_is_accepted_but_stale() {
        let mut s = State::default();
        let a = begin(&mut s, 7);
        let b = begin(&mut s, 7);
        commit(&mut s, 7, &b);
        assert_eq!(commit(&mut s, 7, &a).fenced, "stale");
        assert_eq!(s.stats.fenced_accepted_stale, 1);
    }
}
