//! `distlock`: run a command under a distributed lock (`flock(1)` for a whole fleet), and
//! inspect or revoke locks. The manual is `docs/cli.md`.

// The C `main` is ours, for a cheaper start-up: see `startup`.
#![cfg_attr(not(test), no_main)]
// Unit tests have the test harness's `main`, so the code behind ours is unreachable there.
#![cfg_attr(test, allow(dead_code))]

mod acquire;
mod admin;
mod child;
mod cli;
mod exit;
mod fastpath;
mod output;
mod run;
mod signals;
mod spawn;
mod startup;

use clap::Parser;

use crate::cli::{Cli, Command};

/// The environment variable that turns on diagnostics on stderr (a tracing filter).
const LOG_ENV: &str = "DISTLOCK_LOG";

/// The process entry point (see [`startup`]).
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    startup::run(real_main)
}

fn real_main() -> u8 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let parsed = match fastpath::parse(&args) {
        Some(cli) => Ok(cli),
        None => Cli::try_parse(),
    };
    let cli = match parsed {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // clap exits 2 on usage errors; distlock uses EX_USAGE. Help and version are not
            // errors.
            return if error.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    init_tracing();
    match &cli.command {
        Command::Completions(args) => return admin::completions(args),
        Command::Release(args) if !args.force => {
            eprintln!("distlock: {}", admin::RELEASE_NEEDS_FORCE);
            return exit::USAGE;
        }
        _ => {}
    }
    // One thread: the command must be forked from the thread that lives as long as distlock
    // (PR_SET_PDEATHSIG fires when the forking thread exits), and startup stays cheap.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("distlock: cannot start the async runtime: {error}");
            return exit::OS_ERROR;
        }
    };
    let code = runtime.block_on(dispatch(cli));
    // Not dropped: dropping would wait for blocking threads, such as a backend's waiter thread
    // still parked in the kernel after an interrupted wait. Everything is released by now.
    std::mem::forget(runtime);
    code
}

async fn dispatch(cli: Cli) -> u8 {
    let url = cli
        .url
        .filter(|url| !url.is_empty())
        .unwrap_or_else(distlock::default_url);
    let locks = match distlock::connect(&url).await {
        Ok(locks) => locks,
        Err(error) => return exit::report(&error, exit::UNAVAILABLE),
    };
    match cli.command {
        Command::Run(args) => run::run(locks, args).await,
        Command::Status(args) => admin::status(locks, args).await,
        Command::List(args) => admin::list(locks, args).await,
        Command::Release(args) => admin::release(locks, args).await,
        Command::Completions(args) => admin::completions(&args),
    }
}

/// Diagnostics on stderr when `DISTLOCK_LOG` is set (e.g. `debug`, `distlock=trace`); nothing
/// is initialised otherwise, to keep startup cheap.
fn init_tracing() {
    let Some(filter) = std::env::var_os(LOG_ENV) else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_new(filter.to_string_lossy())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
