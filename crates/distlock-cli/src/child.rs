//! Starting the command in its own process group, watching it, signalling it, and handing it
//! the terminal.
//!
//! The command is started from the main thread (the one running the `current_thread`
//! runtime), because `PR_SET_PDEATHSIG` fires when the *thread* that forked exits, not the
//! process.

use std::ffi::OsString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{Signal, SignalKind};
use tokio::sync::oneshot;

use crate::spawn::Prepared;

/// A command started by [`spawn`].
pub struct Running {
    pgid: i32,
    exit: ExitWatch,
    terminal: Option<Terminal>,
    /// SIGCHLD, in terminal mode only: how we learn that the command was suspended.
    sigchld: Option<Signal>,
}

/// What to start.
pub struct Spec<'a> {
    /// Program and arguments.
    pub argv: &'a [OsString],
    /// Extra environment variables.
    pub env: &'a [(&'a str, String)],
}

/// Starts the command in a new process group with `PR_SET_PDEATHSIG = SIGKILL` (see
/// [`crate::spawn`]).
///
/// When distlock is in the foreground of a terminal (stdin, stdout or stderr is that
/// terminal), the command's process group becomes the terminal's foreground group so that
/// interactive programs can read from it; [`Running::reap`] gives the terminal back.
///
/// Errors are the `io::Error` of `execvp`: `NotFound`, `PermissionDenied`, ...
pub fn spawn(spec: &Spec<'_>) -> io::Result<Running> {
    let terminal = Terminal::foreground();
    let tty_fd = terminal.as_ref().map(|t| t.fd);
    let prepared = Prepared::new(spec.argv, spec.env, tty_fd)?;
    // Registered before the command starts so that no stop of it goes unnoticed.
    let sigchld = match terminal {
        Some(_) => Some(tokio::signal::unix::signal(SignalKind::child())?),
        None => None,
    };
    // In terminal mode the child has made its group the foreground group before exec, and
    // `spawn` returns only after the exec (vfork semantics): nothing left to do here.
    let pid = prepared.spawn()?;
    let mut running = Running {
        pgid: pid,
        exit: ExitWatch::Done,
        terminal,
        sigchld,
    };
    match ExitWatch::new(pid) {
        Ok(exit) => {
            running.exit = exit;
            Ok(running)
        }
        Err(error) => {
            running.signal(libc::SIGKILL);
            let _ = running.reap();
            Err(error)
        }
    }
}

impl Running {
    /// The command's process id (also its process group id).
    pub fn pid(&self) -> i32 {
        self.pgid
    }

    /// Sends `signo` to the command's whole process group. Errors (the group is gone) are
    /// ignored.
    pub fn signal(&self, signo: i32) {
        // SAFETY: kill(2) on our own child's process group. The group id cannot be reused
        // while the child is unreaped, and it is only reaped by `reap`, which consumes self.
        unsafe {
            libc::kill(-self.pgid, signo);
        }
    }

    /// Resolves when the command (the group leader) has exited. It is not reaped yet, so the
    /// process group id stays reserved and [`signal`](Self::signal) stays safe.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn exited(&mut self) {
        self.exit.wait().await
    }

    /// The next thing that happens to the command: it exits, or (in terminal mode only) it is
    /// suspended by job control (Ctrl-Z, SIGTTIN, ...).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is only consumed when this returns it.
    pub async fn next_event(&mut self) -> Event {
        tokio::select! {
            biased;
            () = self.exit.wait() => Event::Exited,
            signal = stopped(self.sigchld.as_mut(), self.pgid) => Event::Stopped(signal),
        }
    }

    /// The command was suspended from the terminal by `signal`: take the terminal back and
    /// suspend distlock's own process group (the shell's job), so the shell regains control.
    /// When the shell resumes us, hand the terminal back to the command (if we are in the
    /// foreground again) and resume the command.
    ///
    /// A command that stopped for the terminal (SIGTTIN, SIGTTOU) while our group has it is
    /// not suspended: the shell made us the foreground job (`fg` of a job running in the
    /// background, which sends no signal), so the terminal goes on to the command at once.
    pub fn on_command_stopped(&mut self, signal: i32) {
        let Some(terminal) = &self.terminal else {
            return;
        };
        let for_the_terminal = signal == libc::SIGTTIN || signal == libc::SIGTTOU;
        if !(for_the_terminal && terminal.is_ours()) {
            // Only from the command: one stopped in the background (SIGTTIN after `bg`) does
            // not have the terminal; the shell has it.
            if terminal.is_held_by(self.pgid) {
                terminal.take_back();
            }
            // SAFETY: kill(2) on our own process group. SIGTSTP stops us here (default
            // action); if our group is orphaned (no job control), the kernel discards it and
            // we go on.
            unsafe {
                libc::kill(0, libc::SIGTSTP);
            }
        }
        if terminal.is_ours() {
            terminal.give_to(self.pgid);
        }
        self.signal(libc::SIGCONT);
    }

    /// Waits for the command, reaps it, gives the terminal back and returns its status.
    pub fn reap(mut self) -> io::Result<ExitStatus> {
        let mut status = 0;
        let result = loop {
            // SAFETY: waitpid on our own child, which nothing else reaps.
            if unsafe { libc::waitpid(self.pgid, &mut status, 0) } >= 0 {
                break Ok(ExitStatus::from_raw(status));
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                break Err(error);
            }
        };
        self.restore_terminal();
        result
    }

    fn restore_terminal(&mut self) {
        if let Some(terminal) = self.terminal.take() {
            terminal.restore();
        }
    }
}

/// What [`Running::next_event`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The command exited (not reaped yet).
    Exited,
    /// The command was suspended by job control, by this signal.
    Stopped(i32),
}

/// Resolves, with the signal that stopped it, when child `pid` has stopped; never without a
/// SIGCHLD stream.
async fn stopped(sigchld: Option<&mut Signal>, pid: libc::pid_t) -> i32 {
    let Some(sigchld) = sigchld else {
        return std::future::pending().await;
    };
    loop {
        if sigchld.recv().await.is_none() {
            return std::future::pending().await;
        }
        // SAFETY: waitid on our own child; WSTOPPED without WEXITED never reaps it, and
        // WNOHANG returns at once. The zeroed siginfo reads si_pid 0 when nothing stopped.
        let stopped_by = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let rc = libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WSTOPPED | libc::WNOHANG,
            );
            (rc == 0 && info.si_pid() == pid).then(|| info.si_status())
        };
        if let Some(signal) = stopped_by {
            return signal;
        }
    }
}

/// The exit code distlock reports for a command's status: its code, or 128 + the signal.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signo)) => crate::exit::signal(signo),
        (None, None) => crate::exit::UNAVAILABLE,
    }
}

/// Learns when the child exits without reaping it: a pidfd where the kernel has them
/// (Linux ≥ 5.3), else a thread blocked in `waitid(WNOWAIT)`.
enum ExitWatch {
    Pidfd(AsyncFd<OwnedFd>),
    Thread(oneshot::Receiver<()>),
    Done,
}

impl ExitWatch {
    fn new(pid: libc::pid_t) -> io::Result<ExitWatch> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd >= 0 {
            // SAFETY: the descriptor was just returned to us and nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            // `with_interest` is deprecated in newer Tokio for types whose descriptor can change
            // under it; an OwnedFd's cannot, and the replacement needs Tokio ≥ 1.54 while the
            // workspace allows 1.48.
            #[allow(deprecated)]
            let registered = AsyncFd::with_interest(fd, tokio::io::Interest::READABLE);
            if let Ok(fd) = registered {
                return Ok(ExitWatch::Pidfd(fd));
            }
        }
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("distlock-waitid".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                loop {
                    // SAFETY: waitid fills the zeroed siginfo; WNOWAIT leaves the child
                    // unreaped.
                    let rc = unsafe {
                        let mut info: libc::siginfo_t = std::mem::zeroed();
                        libc::waitid(
                            libc::P_PID,
                            pid as libc::id_t,
                            &mut info,
                            libc::WEXITED | libc::WNOWAIT,
                        )
                    };
                    if rc == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                        break;
                    }
                }
                let _ = tx.send(());
            })?;
        Ok(ExitWatch::Thread(rx))
    }

    async fn wait(&mut self) {
        match self {
            ExitWatch::Pidfd(fd) => {
                // A pidfd becomes readable when the process exits, and stays so: keep the
                // readiness, later calls return at once.
                if let Ok(guard) = fd.readable().await {
                    drop(guard);
                }
            }
            ExitWatch::Thread(rx) => {
                let _ = rx.await;
                *self = ExitWatch::Done;
            }
            ExitWatch::Done => {}
        }
    }
}

/// The terminal distlock was in the foreground of, while the command has it.
struct Terminal {
    fd: i32,
    our_group: libc::pid_t,
}

impl Terminal {
    /// Some when one of stdin, stdout, stderr is a terminal whose foreground process group is
    /// ours (we are not a background job).
    fn foreground() -> Option<Terminal> {
        // SAFETY: plain queries on the standard descriptors.
        unsafe {
            let our_group = libc::getpgrp();
            [libc::STDIN_FILENO, libc::STDERR_FILENO, libc::STDOUT_FILENO]
                .into_iter()
                .find(|&fd| libc::isatty(fd) == 1 && libc::tcgetpgrp(fd) == our_group)
                .map(|fd| Terminal { fd, our_group })
        }
    }

    fn restore(self) {
        self.take_back();
    }

    /// Makes our process group the terminal's foreground group again.
    fn take_back(&self) {
        self.give_to(self.our_group);
    }

    /// Makes `group` the terminal's foreground group.
    fn give_to(&self, group: libc::pid_t) {
        // SAFETY: tcsetpgrp on a descriptor that is a terminal; SIGTTOU is blocked because we
        // may be in a background group at this point.
        unsafe {
            with_sigttou_blocked(|| {
                libc::tcsetpgrp(self.fd, group);
            });
        }
    }

    /// Whether `group` is the terminal's foreground group.
    fn is_held_by(&self, group: libc::pid_t) -> bool {
        // SAFETY: a query on a terminal descriptor.
        unsafe { libc::tcgetpgrp(self.fd) == group }
    }

    /// Whether our process group is the terminal's foreground group.
    fn is_ours(&self) -> bool {
        self.is_held_by(self.our_group)
    }
}

/// Runs `f` with SIGTTOU blocked in the calling thread, then restores the mask.
///
/// # Safety
///
/// Async-signal-safe (usable between fork and exec) as long as `f` is.
unsafe fn with_sigttou_blocked(f: impl FnOnce()) {
    // SAFETY: sigset manipulation on local values; pthread_sigmask only affects this thread.
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGTTOU);
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
        f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
}
