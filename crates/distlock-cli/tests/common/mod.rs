//! Test plumbing shared by the integration tests of the `distlock` binary: running it (or any
//! other process) with its output read by threads, and killing whatever is left on drop.

// Each integration test binary compiles this module on its own and uses only part of it
// (e.g. `sql_backends` never signals or reads stderr line by line), so unused items there are
// expected rather than dead.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_distlock");
/// Upper bound for anything that should take well under a second.
pub const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// `distlock --url URL ARGS...` with a clean environment for distlock's variables.
pub fn cmd<I, S>(url: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    use std::os::unix::process::CommandExt;

    let mut cmd = Command::new(BIN);
    cmd.env_remove("DISTLOCK_URL")
        .env_remove("DISTLOCK_LOG")
        .arg("--url")
        .arg(url)
        .args(args)
        .stdin(Stdio::null());
    // As from a terminal, even when the tests themselves run under nohup: ignored signals
    // are inherited, and some tests send SIGHUP or check what the command inherits.
    // SAFETY: signal(2) between fork and exec of the test's child.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            Ok(())
        });
    }
    cmd
}

/// Runs `cmd` to completion (bounded) and returns status, stdout, stderr.
pub fn output(cmd: Command) -> Output {
    Proc::spawn(cmd).finish()
}

/// A running process, SIGKILLed and reaped on drop, with its output read by threads.
pub struct Proc {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// The process's stdin, if the command was set up with `Stdio::piped()`; closed on drop.
    pub stdin: Option<ChildStdin>,
    reaped: Option<ExitStatus>,
    /// Other processes to SIGKILL on drop (commands started by distlock).
    pub also_kill: Vec<i32>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        Proc {
            stdout: lines(child.stdout.take().unwrap()),
            stderr: lines(child.stderr.take().unwrap()),
            stdin: child.stdin.take(),
            child,
            reaped: None,
            also_kill: Vec::new(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next stdout line, or panics after `PATIENCE`.
    pub fn stdout_line(&mut self) -> String {
        self.stdout
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("no stdout line from pid {}: {e}", self.pid()))
    }

    /// Waits for a stderr line containing `needle`; returns the lines seen.
    pub fn stderr_until(&mut self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(e) => panic!("no stderr line containing {needle:?} ({e}); saw {seen:?}"),
            }
        }
    }

    pub fn signal(&self, signo: i32) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(self.pid(), signo);
        }
    }

    /// Waits for exit, panicking after `bound`.
    pub fn wait(&mut self, bound: Duration) -> ExitStatus {
        if let Some(status) = self.reaped {
            return status;
        }
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.reaped = Some(status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pid {} still running after {bound:?}",
                self.pid()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything left on stdout and stderr (after exit).
    pub fn drain(&mut self) -> (String, String) {
        let collect = |rx: &mpsc::Receiver<String>| {
            let mut text = String::new();
            while let Ok(line) = rx.recv_timeout(PATIENCE) {
                text.push_str(&line);
                text.push('\n');
            }
            text
        };
        (collect(&self.stdout), collect(&self.stderr))
    }

    /// Waits (bounded by `PATIENCE`) for the exit and returns everything it printed.
    pub fn finish(mut self) -> Output {
        let status = self.wait(PATIENCE);
        let (stdout, stderr) = self.drain();
        Output {
            code: status.code(),
            stdout,
            stderr,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        for &pid in &self.also_kill {
            // SAFETY: kill(2); the pid is a command this test started, at worst already gone.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        drop(self.stdin.take());
        if self.reaped.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads lines on a thread; the channel closes at EOF.
pub fn lines(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Polls `condition` until it holds, panicking after `PATIENCE`.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(20));
    }
}
