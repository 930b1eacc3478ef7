//! The JSONL records every process writes: client events, observer samples, controller faults.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::now_ns;

/// One line of a client's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientEvent {
    /// CLOCK_MONOTONIC, ns.
    pub t: u64,
    /// The client's name.
    pub client: String,
    /// `request`, `granted`, `lost`, `releasing`, `released`, `commit`, `acquire_error`, `exit`.
    pub ev: String,
    /// The fencing token of the acquisition the event belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    /// Free detail: an error, or the oracle's verdict on a commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The acquisition's owner id (`granted` only): what the observer sees on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// One line of the observer's log: the holders `inspect()` reported, written on every change.
///
/// The read behind a sample happened somewhere in `[t_send, t]`; `prev_last_send` is when the
/// last read that still showed the previous sample's state was sent, so the previous state's
/// holders held at least over `[previous t, prev_last_send]` (an owner id names one
/// acquisition, which stays the holder from the moment it becomes it until it is gone).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ObserverSample {
    /// CLOCK_MONOTONIC, ns: when the reply arrived.
    pub t: u64,
    /// When the request was sent, ns (0 in logs of older harness versions).
    #[serde(default)]
    pub t_send: u64,
    /// Send time of the last read that showed the previous sample's state, ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_last_send: Option<u64>,
    /// Owner ids of the exclusive holders, in the order of `tokens`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    /// Owner ids of the acquisitions the server ranks as waiting (ZooKeeper, etcd).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiters: Vec<String>,
    /// Tokens of the exclusive holders, as the server reports them.
    pub tokens: Vec<u64>,
    /// Process ids of those holders.
    pub pids: Vec<u32>,
    /// Set when inspection failed (server down); `tokens` is then empty and means "unknown".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One fault the controller applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultEvent {
    /// When it started (CLOCK_MONOTONIC, ns).
    pub t: u64,
    /// When it ended (SIGCONT, heal, server back), ns; equal to `t` for instant faults.
    pub t_end: u64,
    /// The fault's label.
    pub kind: String,
    /// The client it hit, if any.
    pub client: Option<String>,
    /// The token that client held when hit, if known.
    pub token: Option<u64>,
}

/// An append-only JSONL file shared by the tasks of one process; every line is flushed at
/// once so a SIGKILL loses nothing written before it.
#[derive(Clone)]
pub struct JsonlWriter {
    file: Arc<Mutex<File>>,
}

impl JsonlWriter {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(JsonlWriter {
            file: Arc::new(Mutex::new(File::create(path)?)),
        })
    }

    /// Appends one record.
    pub fn write<T: Serialize>(&self, record: &T) {
        let mut line = serde_json::to_vec(record).expect("records serialize");
        line.push(b'\n');
        let mut file = self.file.lock().unwrap();
        let _ = file.write_all(&line);
    }
}

impl ClientEvent {
    /// An event stamped now.
    pub fn now(client: &str, ev: &str, token: Option<u64>, detail: Option<String>) -> Self {
        ClientEvent {
            t: now_ns(),
            client: client.to_owned(),
            ev: ev.to_owned(),
            token,
            detail,
            owner: None,
        }
    }
}

/// Reads every well-formed record of a JSONL file (a torn last line from a SIGKILL is skipped).
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Vec<T> {
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect()
}
