//! Command-line arguments (clap derive).

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::exit;

/// The lease length when `--ttl` is not given.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The time between SIGTERM and SIGKILL after a lost lock when `--kill-grace` is not given.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// Exit codes, shown at the end of `--help`.
const EXIT_CODES_HELP: &str = "\
Exit codes:
  N        run: the command's own exit code
  128+SIG  run: the command died of signal SIG; also distlock interrupted by SIG while waiting
  0        status, list, release, completions: success
  64       usage: bad flags, invalid lock name or URL, bad option values, unsupported capability
  69       backend unreachable or backend error
  70, 71   internal error; the operating system refused a resource (fork, pipe, thread)
  74       run: the lock was lost while the command ran (the command was terminated)
  75       run: lock not acquired (held, with -n; or the -w bound passed); see -E
  126      run: the command is not executable
  127      run: the command was not found

Environment:
  DISTLOCK_URL   backend URL when --url is not given (default: file backend, default directory)
  DISTLOCK_LOG   tracing filter for diagnostics on stderr, e.g. DISTLOCK_LOG=debug

See docs/cli.md for the full manual.";

/// Run commands under a distributed lock (flock(1) for a whole fleet), and inspect locks.
#[derive(Debug, Parser)]
#[command(name = "distlock", version, about, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Backend URL: file:///dir, redis://..., postgres://..., ... [default: the file backend's
    /// default directory, $XDG_RUNTIME_DIR/distlock or /tmp/distlock-<uid>]
    #[arg(long, global = true, env = distlock::URL_ENV, hide_env_values = true, value_name = "URL")]
    pub url: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run COMMAND while holding lock NAME; exit with the command's exit code.
    #[command(after_help = EXIT_CODES_HELP)]
    Run(RunArgs),
    /// Show the holders and waiters of lock NAME.
    Status(StatusArgs),
    /// List the locks that have holders or waiters.
    List(ListArgs),
    /// Take lock NAME away from its holders (operators only; needs --force).
    Release(ReleaseArgs),
    /// Print a shell completion script to stdout.
    Completions(CompletionsArgs),
}

/// `distlock run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The lock name (any UTF-8 text without control characters, at most 1024 bytes).
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Wait at most DUR for the lock (e.g. 10s, 500ms, 2m); 0 = do not wait. Default: wait
    /// forever.
    #[arg(short = 'w', long = "wait", value_name = "DUR", value_parser = parse_duration)]
    pub wait: Option<Duration>,

    /// Do not wait: fail with exit code 75 (or -E CODE) if the lock is held.
    #[arg(short = 'n', long = "no-wait", conflicts_with = "wait")]
    pub no_wait: bool,

    /// Lease length; renewed every TTL/3 while the command runs. A holder that stops renewing
    /// (paused, partitioned) loses the lock after at most TTL.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_positive_duration)]
    pub ttl: Duration,

    /// Take the lock shared (as a reader): any number of shared holders, no exclusive one.
    #[arg(short = 's', long = "shared", conflicts_with = "permits")]
    pub shared: bool,

    /// Treat NAME as a semaphore of N permits: at most N runs at once (each takes 1, or
    /// --weight K). Every user of one semaphore must pass the same N.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub permits: Option<u32>,

    /// Permits this run takes from the semaphore (with --permits).
    #[arg(long, value_name = "K", requires = "permits",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub weight: Option<u32>,

    /// Priority in the wait queue; higher is served first. Non-zero fails with exit code 64 on
    /// backends without priority queues (such as the file backend).
    #[arg(
        long,
        value_name = "P",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub priority: i32,

    /// Exit code to use when the lock is not acquired, instead of 75.
    #[arg(short = 'E', long = "conflict-exit-code", value_name = "CODE",
          default_value_t = exit::NOT_ACQUIRED)]
    pub conflict_exit_code: u8,

    /// After losing the lock, how long the command gets between SIGTERM and SIGKILL.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    pub kill_grace: Duration,

    /// Shown by `distlock status` [default: "distlock run: COMMAND LINE"] (at most 256 bytes).
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,

    /// Say on stderr when waiting starts and when the lock is acquired, even without a
    /// terminal.
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// The command to run and its arguments (after `--`).
    #[arg(value_name = "COMMAND", required = true, num_args = 1.., trailing_var_arg = true)]
    pub command: Vec<OsString>,
}

/// `distlock status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The lock name.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Print the lock's state as one JSON object (see docs/cli.md for the fields).
    #[arg(long)]
    pub json: bool,
}

/// `distlock list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only locks whose name starts with PREFIX.
    #[arg(value_name = "PREFIX", default_value = "")]
    pub prefix: String,

    /// Print a JSON array of lock states (see docs/cli.md for the fields).
    #[arg(long)]
    pub json: bool,
}

/// `distlock release`.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The lock name.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Confirm: the holders lose the lock at their next renewal (within TTL/3) and their
    /// `distlock run` terminates the command with exit code 74.
    #[arg(long)]
    pub force: bool,
}

/// `distlock completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// Parses a humantime duration such as `10s`, `500ms`, `1m 30s`; a bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (expected e.g. 10s, 500ms, 2m)"))
}

/// Like [`parse_duration`] but rejects zero.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("must be greater than zero".to_owned()),
        duration => Ok(duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("banana").is_err());
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(
            parse_positive_duration("1m").unwrap(),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn command_after_double_dash_keeps_its_flags() {
        let cli =
            Cli::try_parse_from(["distlock", "run", "x", "-n", "--", "ls", "-l", "-n"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!()
        };
        assert!(run.no_wait);
        assert_eq!(run.command, vec!["ls", "-l", "-n"]);
    }

    #[test]
    fn command_without_double_dash() {
        let cli = Cli::try_parse_from(["distlock", "run", "x", "echo", "-n", "hi"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!()
        };
        assert!(!run.no_wait);
        assert_eq!(run.command, vec!["echo", "-n", "hi"]);
    }

    #[test]
    fn unknown_flags_before_the_command_are_errors() {
        assert!(Cli::try_parse_from(["distlock", "run", "x", "--bogus", "--", "true"]).is_err());
        let cli = Cli::try_parse_from(["distlock", "run", "x", "--", "--weird-name"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!()
        };
        assert_eq!(run.command, vec!["--weird-name"]);
    }
}
