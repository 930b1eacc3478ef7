//! The signals `distlock run` catches: while waiting they interrupt the wait, while the command
//! runs they are forwarded to its process group.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Signals forwarded to the command, in the order they are polled.
pub const FORWARDED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Handlers for [`FORWARDED`]. Once created, these signals no longer kill distlock: they are
/// delivered through [`recv`](Self::recv).
pub struct Signals {
    streams: Vec<(i32, Signal)>,
}

impl Signals {
    /// Installs the handlers. Needs a Tokio runtime with the I/O driver.
    ///
    /// A signal distlock was started with ignored (`nohup` ignores SIGHUP) is left ignored,
    /// so the command inherits it ignored too, as it would without distlock in between.
    pub fn install() -> io::Result<Signals> {
        let streams = FORWARDED
            .iter()
            .filter(|&&signo| !is_ignored(signo))
            .map(|&signo| Ok((signo, signal(SignalKind::from_raw(signo))?)))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Signals { streams })
    }

    /// The next signal received.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a signal is only consumed when this returns it.
    pub async fn recv(&mut self) -> i32 {
        std::future::poll_fn(|cx| {
            for (signo, stream) in &mut self.streams {
                if let std::task::Poll::Ready(Some(())) = stream.poll_recv(cx) {
                    return std::task::Poll::Ready(*signo);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// A signal that has already arrived, if any, without waiting.
    pub fn try_recv(&mut self) -> Option<i32> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        for (signo, stream) in &mut self.streams {
            if let std::task::Poll::Ready(Some(())) = stream.poll_recv(&mut cx) {
                return Some(*signo);
            }
        }
        None
    }
}

/// Whether `signo`'s disposition is SIG_IGN.
fn is_ignored(signo: i32) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signo, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// The signal's name (`SIGTERM`), for messages.
pub fn name(signo: i32) -> String {
    match signo {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGUSR1 => "SIGUSR1".into(),
        libc::SIGUSR2 => "SIGUSR2".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGPIPE => "SIGPIPE".into(),
        other => format!("signal {other}"),
    }
}
