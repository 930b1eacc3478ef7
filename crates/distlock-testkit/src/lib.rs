//! Test support for distlock: real processes, real servers, injected faults. No mocks.
//!
//! - [`Process`]: a child process that is killed when dropped, with SIGKILL / SIGSTOP /
//!   SIGCONT helpers and line-oriented reading of its standard output. Used for lock holders
//!   in other processes (the conformance suite kills them with SIGKILL) and for servers.
//! - [`free_port`]: a TCP port on 127.0.0.1 that nothing listens on.
//! - [`wait_until`]: polls a condition with a generous bound, for asserting eventual outcomes
//!   without timing assertions.
//!
//! Server launchers (redis-server, postgres, mariadbd, zookeeper, etcd) are added here by the
//! backend issues; each starts the locally installed binary on a free port in a temp dir and
//! fails loudly when it cannot.

pub mod child;
mod datadir;
pub mod etcd;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod zookeeper;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A child process owned by a test: SIGKILLed and reaped when dropped, so a failing test
/// never leaves it behind.
pub struct Process {
    name: String,
    child: Child,
    lines: Option<mpsc::Receiver<String>>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Process {
    /// Spawns `command` with its standard output captured line by line (read it with
    /// [`Process::wait_for_line`]); standard error is inherited so failures show in test logs.
    pub fn spawn(name: &str, mut command: Command) -> std::io::Result<Process> {
        command.stdout(Stdio::piped()).stdin(Stdio::null());
        let mut child = command
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("could not start {name}: {e}")))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(Process {
            name: name.to_owned(),
            child,
            lines: Some(forward_lines(stdout)),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for a line of standard output starting with `prefix` and returns
    /// the rest of it. Panics with the process name if it exits or the time runs out first.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let lines = self.lines.as_ref().expect("stdout captured");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no line starting {prefix:?} within {timeout:?}",
                        self.name
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "{}: exited ({status:?}) before printing a line starting {prefix:?}",
                        self.name
                    )
                }
            }
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        // SAFETY: kill(2) has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// SIGKILL, then reap. Idempotent.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the process freezes, as in a long GC pause or a stopped VM.
    pub fn pause(&self) -> std::io::Result<()> {
        self.signal(libc::SIGSTOP)
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) -> std::io::Result<()> {
        self.signal(libc::SIGCONT)
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A paused process must be continued or SIGKILL still works; SIGKILL always works.
        self.kill();
    }
}

fn forward_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out
/// before.
///
/// Ports come from below the kernel's ephemeral range (`ip_local_port_range`, 32768–60999 by
/// default): a port the kernel picked for `bind(0)` is also one it hands to outgoing
/// connections, so a server started on it a moment later could find it taken by some client's
/// socket, and a cluster member then never starts. Tests in one binary run in parallel, so the
/// ports already handed out are remembered too.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Mutex;

    /// Below the default ephemeral range and above the well-known service ports.
    const RANGE: std::ops::Range<u16> = 20_000..32_000;
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let random = RandomState::new();
    for attempt in 0u64.. {
        let offset = random.hash_one((std::process::id(), attempt, Instant::now()))
            % u64::from(RANGE.end - RANGE.start);
        let port = RANGE.start + offset as u16;
        if handed_out.contains(&port) {
            continue;
        }
        // Bindable means nothing listens on it and no socket is bound to it right now.
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
        assert!(attempt < 10_000, "no free port in {RANGE:?} on 127.0.0.1");
    }
    unreachable!("the loop returns or panics")
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process with this id still exists (zombies count as gone once reaped).
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lines_and_kills_on_drop() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo starting; echo READY 42; exec sleep 60"]);
        let mut process = Process::spawn("sh", command).unwrap();
        assert_eq!(
            process.wait_for_line("READY", Duration::from_secs(10)),
            "42"
        );
        let pid = process.pid();
        assert!(process_exists(pid));
        process.pause().unwrap();
        process.resume().unwrap();
        drop(process);
        assert!(!process_exists(pid), "dropped process {pid} must be gone");
    }

    #[test]
    fn free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        for port in ports {
            assert!(port < 32_768, "{port} is in the kernel's ephemeral range");
            TcpListener::bind(("127.0.0.1", port)).expect("a handed-out port is bindable");
        }
    }
}
