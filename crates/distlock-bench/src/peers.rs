//! Lock clients measured in their own processes, through one line protocol that every language
//! can speak: distlock itself and the Rust peers (`distlock-bench peer <lib> …`, see
//! [`crate::rust_peers`]), and peers written in Python, JavaScript or Java.
//!
//! # The protocol
//!
//! A peer is a command (program and leading arguments, which say which library and which
//! server) followed by a mode:
//!
//! - `cycle --name NAME --warmup W --iterations I`: W untimed, then I timed uncontended
//!   acquire-and-release cycles of the lock `NAME`, each timed inside the peer. Prints one JSON
//!   object: `{"lib": "...", "version": "...", "samples": [ns, ...]}`.
//! - `contend --name NAME --hold-us H --duration-ms D`: connects and warms up, prints the line
//!   `ready`, then waits for one line on standard input. From then on, until D ms have passed,
//!   it loops: take a timestamp `requested`, acquire `NAME` waiting without bound, `granted`,
//!   hold it for H µs (sleeping; not at all when H is 0), `releasing`, release, `released`.
//!   Then prints one JSON object: `{"lib": "...", "version": "...", "events": [[requested,
//!   granted, releasing, released], ...]}`.
//!
//! Every timestamp is `CLOCK_MONOTONIC` in nanoseconds (Python's `time.monotonic_ns()`, Java's
//! `System.nanoTime()` and Node's `process.hrtime.bigint()` read the same clock on Linux), so
//! events from different processes on one host can be compared.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;

use crate::Result;
use crate::measure::Plan;

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of the peer protocol.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// The CPU time the calling thread has used, in nanoseconds (user and system).
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks used here always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The command that runs one peer, up to (not including) its mode.
#[derive(Debug, Clone)]
pub struct PeerCommand {
    /// The program.
    pub program: PathBuf,
    /// Its leading arguments.
    pub args: Vec<String>,
}

/// What a peer printed in `cycle` mode.
#[derive(Debug, Clone, Deserialize)]
pub struct CycleOutput {
    /// The library's name.
    pub lib: String,
    /// Its version.
    pub version: String,
    /// One duration per timed cycle, ns.
    pub samples: Vec<u64>,
}

/// What a peer printed in `contend` mode.
#[derive(Debug, Clone, Deserialize)]
pub struct ContendOutput {
    /// The library's name.
    pub lib: String,
    /// Its version.
    pub version: String,
    /// `[requested, granted, releasing, released]` per critical section, `CLOCK_MONOTONIC` ns.
    pub events: Vec<[u64; 4]>,
}

/// How long a peer may take to connect and say `ready` (a JVM takes a while to start).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

impl PeerCommand {
    /// `program` with no arguments yet.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        PeerCommand {
            program: program.into(),
            args: Vec::new(),
        }
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// This binary's `peer LIB --url URL`: distlock (`lib` = `distlock`) or a Rust peer.
    pub fn rust(lib: &str, url: &str) -> Result<Self> {
        Ok(PeerCommand::new(std::env::current_exe()?)
            .arg("peer")
            .arg(lib)
            .arg("--url")
            .arg(url))
    }

    fn command(&self, mode: &[String]) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).args(mode);
        command
    }

    /// A short description for error messages.
    pub fn describe(&self) -> String {
        let mut text = self.program.display().to_string();
        for arg in &self.args {
            text.push(' ');
            text.push_str(arg);
        }
        text
    }

    /// Runs `cycle` mode to the end.
    pub fn cycle(&self, name: &str, plan: Plan) -> Result<CycleOutput> {
        let mode = [
            "cycle".to_owned(),
            "--name".to_owned(),
            name.to_owned(),
            "--warmup".to_owned(),
            plan.warmup.to_string(),
            "--iterations".to_owned(),
            plan.iterations.to_string(),
        ];
        let output = self
            .command(&mode)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.describe()))?;
        if !output.status.success() {
            return Err(format!(
                "{} cycle failed ({}): {}",
                self.describe(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("{}: bad cycle output: {e}", self.describe()).into())
    }

    /// Starts `contend` mode; the peer runs once [`PeerProcess::go`] is called.
    pub fn contend(&self, name: &str, hold_us: u64, duration: Duration) -> Result<PeerProcess> {
        self.start(&[
            "contend".to_owned(),
            "--name".to_owned(),
            name.to_owned(),
            "--hold-us".to_owned(),
            hold_us.to_string(),
            "--duration-ms".to_owned(),
            duration.as_millis().to_string(),
        ])
    }

    /// Starts the peer in `mode` (the mode's name and arguments), with pipes to talk to it.
    pub fn start(&self, mode: &[String]) -> Result<PeerProcess> {
        let mut child = self
            .command(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.describe()))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let (tx, lines) = mpsc::channel();
        // A reader thread, so that a peer that never says anything cannot hang the bench.
        std::thread::spawn(move || {
            for line in stdout.lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(PeerProcess {
            describe: self.describe(),
            child,
            stdin,
            lines,
            done: false,
        })
    }
}

/// A running peer process.
#[derive(Debug)]
pub struct PeerProcess {
    describe: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<std::io::Result<String>>,
    done: bool,
}

impl PeerProcess {
    /// The next line the peer prints, waiting at most `timeout`.
    pub fn read_line(&mut self, timeout: Duration) -> Result<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(e)) => Err(self.failure(&format!("cannot read its output: {e}"))),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(self.failure(&format!("said nothing for {timeout:?}")))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.failure("exited early")),
        }
    }

    /// Waits until the peer says `ready`.
    pub fn wait_ready(&mut self) -> Result<()> {
        let line = self.read_line(READY_TIMEOUT)?;
        if line.trim() == "ready" {
            Ok(())
        } else {
            Err(self.failure(&format!("said {line:?} instead of ready")))
        }
    }

    /// Lets the peer start.
    pub fn go(&mut self) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or("already started")?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Sends `signal` to the peer.
    pub fn signal(&self, signal: libc::c_int) -> Result<()> {
        // SAFETY: kill(2) with our child's pid, which we have not reaped yet.
        if unsafe { libc::kill(self.child.id() as libc::pid_t, signal) } == 0 {
            Ok(())
        } else {
            Err(format!(
                "kill({}): {}",
                self.describe,
                std::io::Error::last_os_error()
            )
            .into())
        }
    }

    /// Waits for the peer to finish and returns the JSON it printed last; a peer still running
    /// after `timeout` is killed and `None` returned: a peer stuck waiting for a lock nobody
    /// holds is a finding, not a hang.
    pub fn finish_within<T: serde::de::DeserializeOwned>(
        mut self,
        timeout: Duration,
    ) -> Result<Option<T>> {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now().checked_add(timeout);
        let mut last = String::new();
        loop {
            let line = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    match self.lines.recv_timeout(left) {
                        Ok(line) => line,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            let _ = self.child.kill();
                            let _ = self.child.wait();
                            self.done = true;
                            return Ok(None);
                        }
                    }
                }
                None => match self.lines.recv() {
                    Ok(line) => line,
                    Err(_) => break,
                },
            }?;
            if !line.trim().is_empty() {
                last = line;
            }
        }
        let status = self.child.wait()?;
        self.done = true;
        if !status.success() {
            return Err(self.failure(&format!("exited with {status}")));
        }
        serde_json::from_str(last.trim())
            .map(Some)
            .map_err(|e| format!("{}: bad output: {e}", self.describe).into())
    }

    fn failure(&mut self, what: &str) -> crate::Error {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.done = true;
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        format!("{} {what}: {}", self.describe, stderr.trim()).into()
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
