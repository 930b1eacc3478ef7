//! `status`, `list`, `release` and `completions`.

use std::time::SystemTime;

use clap::CommandFactory;
use distlock::Locks;

use crate::cli::{Cli, CompletionsArgs, ListArgs, ReleaseArgs, StatusArgs};
use crate::exit;
use crate::output;

/// `distlock status NAME [--json]`.
pub async fn status(locks: Locks, args: StatusArgs) -> u8 {
    match locks.inspect(&args.name).await {
        Ok(info) if args.json => {
            output::print(&output::json(&info));
            exit::OK
        }
        Ok(info) => {
            output::print(&output::status(&info, SystemTime::now()));
            exit::OK
        }
        Err(error) => exit::report(&error, exit::UNAVAILABLE),
    }
}

/// `distlock list [PREFIX] [--json]`.
pub async fn list(locks: Locks, args: ListArgs) -> u8 {
    match locks.list(&args.prefix).await {
        Ok(infos) if args.json => {
            output::print(&output::json(&infos));
            exit::OK
        }
        Ok(infos) => {
            output::print(&output::list(&infos));
            exit::OK
        }
        Err(error) => exit::report(&error, exit::UNAVAILABLE),
    }
}

/// `distlock release NAME --force`.
pub async fn release(locks: Locks, args: ReleaseArgs) -> u8 {
    match locks.force_release(&args.name).await {
        Ok(0) => {
            output::print(&format!("lock {:?} had no holders\n", args.name));
            exit::OK
        }
        Ok(revoked) => {
            let holders = if revoked == 1 {
                "1 holder".to_owned()
            } else {
                format!("{revoked} holders")
            };
            output::print(&format!(
                "revoked {holders} of lock {:?}; a holder gives the lock up at its next renewal \
                 (within a third of its TTL), and `distlock run` then stops its command and \
                 exits 74\n",
                args.name
            ));
            exit::OK
        }
        Err(error) => exit::report(&error, exit::UNAVAILABLE),
    }
}

/// The message for `release` without `--force`.
pub const RELEASE_NEEDS_FORCE: &str = "\
release takes the lock away from its current holders while they may still be working; \
they stop at their next renewal (within a third of their TTL). Pass --force if that is \
what you want.";

/// `distlock completions SHELL`.
pub fn completions(args: &CompletionsArgs) -> u8 {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "distlock", &mut script);
    output::print(&String::from_utf8_lossy(&script));
    exit::OK
}
