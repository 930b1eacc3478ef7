//! Acquiring the lock for `distlock run`: one no-wait attempt, then, if the lock is held and
//! waiting is allowed, a waiting attempt with a spinner on a terminal, interruptible by
//! signals.

use std::io::IsTerminal;
use std::pin::pin;
use std::time::{Duration, Instant, SystemTime};

use distlock::{Error, Lease, LockBuilder, LockInfo, LockName, Locks};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::RunArgs;
use crate::output::{clean, short_duration};
use crate::signals::Signals;

/// How acquisition ended.
pub enum Outcome {
    /// The lock is ours.
    Acquired(Lease),
    /// A signal arrived while waiting (the signal number); nothing is held or queued.
    Interrupted(i32),
    /// Not acquired (held, timed out) or another error.
    Failed(Error),
}

/// The lock builder `args` describe.
pub fn builder(locks: &Locks, name: &LockName, args: &RunArgs, description: String) -> LockBuilder {
    let builder = match (args.permits, args.shared) {
        (Some(limit), _) => locks
            .semaphore(name, limit)
            .permits(args.weight.unwrap_or(1)),
        (None, true) => locks.rwlock(name).read(),
        (None, false) => locks.mutex(name),
    };
    builder
        .ttl(args.ttl)
        .priority(args.priority)
        .description(description)
}

/// Acquires the lock, honouring `-n` and the overall `-w` bound.
pub async fn acquire(
    locks: &Locks,
    name: &LockName,
    builder: LockBuilder,
    args: &RunArgs,
    signals: &mut Signals,
) -> Outcome {
    let started = Instant::now();
    let first = tokio::select! {
        biased;
        signo = signals.recv() => return Outcome::Interrupted(signo),
        result = builder.clone().no_wait().acquire() => result,
    };
    let error = match first {
        Ok(lease) => return acquired(lease, args, None),
        Err(error) => error,
    };
    if !error.is_would_block() || args.no_wait || args.wait == Some(Duration::ZERO) {
        return Outcome::Failed(error);
    }
    let waiting = match args.wait {
        Some(bound) => builder.wait(bound.saturating_sub(started.elapsed())),
        None => builder.wait_forever(),
    };
    let spinner = if std::io::stderr().is_terminal() {
        Some(Spinner::start(name))
    } else {
        if args.verbose {
            let holder = locks.inspect(name).await.ok();
            eprintln!("distlock: {}", waiting_message(name, holder.as_ref()));
        }
        None
    };
    let refresh = async {
        let Some(spinner) = &spinner else {
            return std::future::pending().await;
        };
        loop {
            let info = locks.inspect(name).await.ok();
            spinner
                .bar
                .set_message(waiting_message(name, info.as_ref()));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let outcome = {
        let mut attempt = pin!(waiting.acquire());
        let mut refresh = pin!(refresh);
        tokio::select! {
            biased;
            result = &mut attempt => match result {
                Ok(lease) => acquired(lease, args, Some(started.elapsed())),
                Err(error) => Outcome::Failed(error),
            },
            signo = signals.recv() => Outcome::Interrupted(signo),
            () = &mut refresh => unreachable!("the spinner refresh never ends"),
        }
    };
    if let Some(spinner) = spinner {
        spinner.bar.finish_and_clear();
    }
    outcome
}

fn acquired(lease: Lease, args: &RunArgs, waited: Option<Duration>) -> Outcome {
    if args.verbose {
        let waited = waited
            .map(|w| format!(" after waiting {}", short_duration(w)))
            .unwrap_or_default();
        eprintln!(
            "distlock: acquired lock {:?} (token {}){waited}",
            lease.name(),
            lease.token()
        );
    }
    Outcome::Acquired(lease)
}

/// "waiting for lock NAME — held by pid 1234 on host (description) for 12s".
pub fn waiting_message(name: &LockName, info: Option<&LockInfo>) -> String {
    let mut message = format!("waiting for lock {name:?}");
    let Some(info) = info else {
        return message;
    };
    if let Some(holder) = info.holders.first() {
        let owner = &holder.owner;
        message.push_str(&format!(
            " — held by pid {} on {}",
            owner.pid,
            clean(&owner.host)
        ));
        if let Some(description) = &owner.description {
            message.push_str(&format!(" ({})", clean(description)));
        }
        let held_for = SystemTime::now()
            .duration_since(owner.since)
            .unwrap_or_default();
        message.push_str(&format!(" for {}", short_duration(held_for)));
        if info.holders.len() > 1 {
            message.push_str(&format!(" and {} more", info.holders.len() - 1));
        }
    }
    // Our own wait is among the waiters on backends that list them; count the others.
    let me = std::process::id();
    let others = info.waiters.iter().filter(|w| w.owner.pid != me).count();
    match others {
        0 => {}
        1 => message.push_str("; 1 other waiting"),
        n => message.push_str(&format!("; {n} others waiting")),
    }
    message
}

struct Spinner {
    bar: ProgressBar,
}

impl Spinner {
    fn start(name: &LockName) -> Spinner {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(waiting_message(name, None));
        bar.enable_steady_tick(Duration::from_millis(120));
        Spinner { bar }
    }
}
