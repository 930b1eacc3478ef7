//! `distlock run`: acquire, run the command in its own process group, forward signals, watch
//! the lease, release, and exit with the command's status.

use std::ffi::OsString;
use std::io;
use std::pin::pin;
use std::time::Duration;

use distlock::{Error, Lease, LockName, Locks};

use crate::acquire::{self, Outcome};
use crate::child::{self, Event, Running, Spec};
use crate::cli::RunArgs;
use crate::exit;
use crate::signals::{self, Signals};

/// The longest default description, in characters.
const DESCRIPTION_CHARS: usize = 100;

/// The longest default command line, in bytes: with the prefix it stays within the core's
/// limit of 256 bytes whatever the script.
const DESCRIPTION_BYTES: usize = 200;

/// Runs `distlock run` and returns the exit code.
pub async fn run(locks: Locks, args: RunArgs) -> u8 {
    let not_acquired = args.conflict_exit_code;
    let name = match locks.name(&args.name) {
        Ok(name) => name,
        Err(error) => return exit::report(&error, not_acquired),
    };
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("distlock: cannot install signal handlers: {error}");
            return exit::OS_ERROR;
        }
    };
    let description = args
        .description
        .clone()
        .unwrap_or_else(|| default_description(&args.command));
    let builder = acquire::builder(&locks, &name, &args, description);
    let lease = match acquire::acquire(&locks, &name, builder, &args, &mut signals).await {
        Outcome::Acquired(lease) => lease,
        Outcome::Interrupted(signo) => {
            eprintln!(
                "distlock: interrupted while waiting for lock {name:?} ({})",
                signals::name(signo)
            );
            return exit::signal(signo);
        }
        Outcome::Failed(error) => return exit::report(&error, not_acquired),
    };
    // A signal that arrived while acquiring: do not start the command at all.
    if let Some(signo) = signals.try_recv() {
        release_quietly(&lease).await;
        eprintln!(
            "distlock: interrupted ({}) before starting the command; lock {name:?} released",
            signals::name(signo)
        );
        return exit::signal(signo);
    }
    let env = [
        ("DISTLOCK_NAME", name.as_str().to_owned()),
        ("DISTLOCK_TOKEN", lease.token().to_string()),
    ];
    let spec = Spec {
        argv: &args.command,
        env: &env,
    };
    let running = match child::spawn(&spec) {
        Ok(running) => running,
        Err(error) => {
            release_quietly(&lease).await;
            return spawn_failed(&args.command[0], &error);
        }
    };
    supervise(running, lease, &name, &mut signals, args.kill_grace).await
}

/// Waits for the command while forwarding signals and watching the lease.
async fn supervise(
    mut running: Running,
    lease: Lease,
    name: &LockName,
    signals: &mut Signals,
    kill_grace: Duration,
) -> u8 {
    let mut lost = pin!(lease.lost());
    loop {
        tokio::select! {
            biased;
            event = running.next_event() => match event {
                Event::Exited => break,
                Event::Stopped(signal) => running.on_command_stopped(signal),
            },
            error = &mut lost => {
                return terminate_after_loss(running, &lease, name, &error, signals, kill_grace)
                    .await;
            }
            signo = signals.recv() => running.signal(signo),
        }
    }
    let status = match running.reap() {
        Ok(status) => status,
        Err(error) => {
            eprintln!("distlock: could not collect the command's exit status: {error}");
            release_quietly(&lease).await;
            return exit::OS_ERROR;
        }
    };
    let code = child::exit_code(status);
    match lease.release().await {
        Ok(()) => code,
        Err(error) if error.is_lost() => {
            eprintln!(
                "distlock: lock {name:?} was lost before the command finished (it exited with \
                 code {code}); the end of its run may not have been protected by the lock: {error}"
            );
            exit::LOST
        }
        Err(error) => {
            // The command ran under the lock; the lease runs out by itself.
            eprintln!("distlock: warning: releasing after the command finished failed: {error}");
            code
        }
    }
}

/// The lease is gone: SIGTERM to the group, SIGKILL after the grace period, reap, exit 74.
async fn terminate_after_loss(
    mut running: Running,
    lease: &Lease,
    name: &LockName,
    error: &Error,
    signals: &mut Signals,
    kill_grace: Duration,
) -> u8 {
    let pid = running.pid();
    eprintln!("distlock: lost lock {name:?} while the command was running: {error}");
    eprintln!(
        "distlock: sending SIGTERM to the command's process group {pid} (SIGKILL in {})",
        humantime::format_duration(kill_grace)
    );
    running.signal(libc::SIGTERM);
    // A suspended command would not see SIGTERM until resumed.
    running.signal(libc::SIGCONT);
    let mut grace = pin!(tokio::time::sleep(kill_grace));
    loop {
        tokio::select! {
            biased;
            () = running.exited() => break,
            () = &mut grace => {
                eprintln!(
                    "distlock: the command is still running after {}; sending SIGKILL",
                    humantime::format_duration(kill_grace)
                );
                running.signal(libc::SIGKILL);
                running.exited().await;
                break;
            }
            signo = signals.recv() => running.signal(signo),
        }
    }
    // Whatever the command left behind in its group must not go on working without the lock.
    // The leader is not reaped yet, so the group id cannot have been reused.
    running.signal(libc::SIGKILL);
    if let Err(reap_error) = running.reap() {
        eprintln!("distlock: could not collect the command's exit status: {reap_error}");
    }
    // Stops the renewal task; reports Lost, which we know.
    let _ = lease.release().await;
    exit::LOST
}

/// Releases the lease, printing (not returning) any error.
async fn release_quietly(lease: &Lease) {
    if let Err(error) = lease.release().await {
        eprintln!("distlock: {error}");
    }
}

/// Reports a command that could not be started: 127 not found, 126 not executable.
fn spawn_failed(program: &OsString, error: &io::Error) -> u8 {
    let program = program.to_string_lossy();
    match error.kind() {
        io::ErrorKind::NotFound => {
            eprintln!("distlock: {program}: command not found");
            exit::NOT_FOUND
        }
        io::ErrorKind::PermissionDenied => {
            eprintln!("distlock: {program}: permission denied");
            exit::NOT_EXECUTABLE
        }
        _ => match error.raw_os_error() {
            Some(libc::EAGAIN | libc::ENOMEM) | None => {
                eprintln!("distlock: cannot start {program}: {error}");
                exit::OS_ERROR
            }
            Some(_) => {
                eprintln!("distlock: {program}: cannot execute: {error}");
                exit::NOT_EXECUTABLE
            }
        },
    }
}

/// `distlock run: <command line>`, cut to about 100 characters, control characters as spaces.
pub fn default_description(command: &[OsString]) -> String {
    let line = command
        .iter()
        .map(|arg| quote(&arg.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut line: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() > DESCRIPTION_CHARS || line.len() > DESCRIPTION_BYTES {
        let mut cut = String::new();
        for c in line.chars().take(DESCRIPTION_CHARS - 1) {
            if cut.len() + c.len_utf8() > DESCRIPTION_BYTES - '…'.len_utf8() {
                break;
            }
            cut.push(c);
        }
        cut.push('…');
        line = cut;
    }
    format!("distlock run: {line}")
}

/// Single-quotes an argument the way a shell would need it, when it has to be.
fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_alphanumeric() || "-_./=:,+@%^".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distlock_max_description() -> usize {
        256
    }

    #[test]
    fn descriptions() {
        let cmd: Vec<OsString> = ["sh", "-c", "echo $X; sleep 1"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            default_description(&cmd),
            "distlock run: sh -c 'echo $X; sleep 1'"
        );
        let long: Vec<OsString> = vec!["x".repeat(300).into()];
        let d = default_description(&long);
        assert!(d.chars().count() <= "distlock run: ".len() + DESCRIPTION_CHARS);
        assert!(d.ends_with('…'));
        let wide: Vec<OsString> = vec!["日本".repeat(100).into()];
        assert!(default_description(&wide).len() <= distlock_max_description());
        let nl: Vec<OsString> = vec!["a\nb".into()];
        assert!(!default_description(&nl).contains('\n'));
    }
}
