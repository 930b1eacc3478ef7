//! A hand-written parser for the everyday shapes of `distlock run`, tried before clap.
//!
//! Building and running clap's parser costs more than a tenth of a millisecond on a cold start,
//! a large share of what `distlock run x -- true` may cost next to `flock(1)`. This parser
//! accepts only argument lists it fully understands, with every option written as a separate
//! word (`--ttl 10s`, `--ttl=10s`, `-w 5s`), each at most once, all values valid; for anything
//! else — help, errors, conflicts, bundled or attached short options — it returns `None` and
//! clap parses (and reports) as usual. A unit test checks that whenever this parser answers,
//! clap answers the same.

use std::ffi::OsString;
use std::time::Duration;

use crate::cli::{self, Cli, Command, RunArgs};
use crate::exit;

/// The parsed command line, or `None` to let clap handle it. `args` excludes the program name.
pub fn parse(args: &[OsString]) -> Option<Cli> {
    let mut words = args.iter().peekable();
    let mut url: Option<String> = None;
    // Global options, then the subcommand.
    loop {
        let word = words.next()?.to_str()?;
        match option(word) {
            ("--url", inline) => set(&mut url, value(inline, &mut words)?.to_owned())?,
            ("run", None) => break,
            _ => return None,
        }
    }
    let mut run = Partial::default();
    let mut name: Option<String> = None;
    let command: Vec<OsString> = loop {
        let Some(arg) = words.next() else {
            return None; // no command: clap explains
        };
        if arg == "--" {
            // Only after NAME; before it clap would take the next word as NAME.
            name.as_ref()?;
            break words.cloned().collect();
        }
        let word = arg.to_str();
        match word {
            Some(word) if word.starts_with('-') && word != "-" => {
                let (flag, inline) = option(word);
                run.flag(flag, inline, &mut words)?;
            }
            _ if name.is_none() => name = Some(word?.to_owned()),
            // The first word after NAME that is not an option starts the command.
            _ => break std::iter::once(arg).chain(words).cloned().collect(),
        }
    };
    if command.is_empty() {
        return None;
    }
    let (run, run_url) = run.finish(name?, command)?;
    let url = match (url, run_url) {
        (Some(_), Some(_)) => return None, // given twice: clap objects
        (before, after) => after.or(before),
    };
    Some(Cli {
        url,
        command: Command::Run(run),
    })
}

/// Splits `--flag=value` into the flag and the inline value.
fn option(word: &str) -> (&str, Option<&str>) {
    match word
        .strip_prefix("--")
        .and_then(|rest| rest.split_once('='))
    {
        Some((flag, value)) => (&word[..flag.len() + 2], Some(value)),
        None => (word, None),
    }
}

/// The option's value: inline after `=`, else the next word, which must not look like an
/// option (clap would refuse it).
fn value<'a>(
    inline: Option<&'a str>,
    words: &mut std::iter::Peekable<std::slice::Iter<'a, OsString>>,
) -> Option<&'a str> {
    match inline {
        Some(value) => Some(value),
        None => {
            let next = words.next()?.to_str()?;
            (!next.starts_with('-')).then_some(next)
        }
    }
}

/// Sets an option given at most once.
fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// `run`'s options as seen so far.
#[derive(Default)]
struct Partial {
    wait: Option<Duration>,
    no_wait: Option<()>,
    ttl: Option<Duration>,
    shared: Option<()>,
    permits: Option<u32>,
    weight: Option<u32>,
    priority: Option<i32>,
    conflict_exit_code: Option<u8>,
    kill_grace: Option<Duration>,
    description: Option<String>,
    verbose: Option<()>,
    url: Option<String>,
}

impl Partial {
    fn flag<'a>(
        &mut self,
        flag: &str,
        inline: Option<&'a str>,
        words: &mut std::iter::Peekable<std::slice::Iter<'a, OsString>>,
    ) -> Option<()> {
        let switch = |slot: &mut Option<()>| match inline {
            None => set(slot, ()),
            Some(_) => None,
        };
        match flag {
            "-n" | "--no-wait" => switch(&mut self.no_wait),
            "-s" | "--shared" => switch(&mut self.shared),
            "-v" | "--verbose" => switch(&mut self.verbose),
            "-w" | "--wait" => {
                let wait = cli::parse_duration(value(inline, words)?).ok()?;
                set(&mut self.wait, wait)
            }
            "--ttl" => {
                let ttl = cli::parse_positive_duration(value(inline, words)?).ok()?;
                set(&mut self.ttl, ttl)
            }
            "--kill-grace" => {
                let grace = cli::parse_duration(value(inline, words)?).ok()?;
                set(&mut self.kill_grace, grace)
            }
            "--permits" => {
                let n: u32 = value(inline, words)?.parse().ok()?;
                set(&mut self.permits, (n >= 1).then_some(n)?)
            }
            "--weight" => {
                let k: u32 = value(inline, words)?.parse().ok()?;
                set(&mut self.weight, (k >= 1).then_some(k)?)
            }
            "--priority" => {
                // Negative numbers are values here, as clap allows.
                let text = match inline {
                    Some(text) => text,
                    None => words.next()?.to_str()?,
                };
                set(&mut self.priority, text.parse().ok()?)
            }
            "-E" | "--conflict-exit-code" => {
                let code = value(inline, words)?.parse().ok()?;
                set(&mut self.conflict_exit_code, code)
            }
            "--description" => {
                let text = value(inline, words)?.to_owned();
                set(&mut self.description, text)
            }
            "--url" => {
                let url = value(inline, words)?.to_owned();
                set(&mut self.url, url)
            }
            _ => None,
        }
    }

    /// The arguments, or `None` where clap would report a conflict.
    fn finish(self, name: String, command: Vec<OsString>) -> Option<(RunArgs, Option<String>)> {
        let conflict = (self.no_wait.is_some() && self.wait.is_some())
            || (self.shared.is_some() && self.permits.is_some())
            || (self.weight.is_some() && self.permits.is_none());
        if conflict {
            return None;
        }
        Some((
            RunArgs {
                name,
                wait: self.wait,
                no_wait: self.no_wait.is_some(),
                ttl: self.ttl.unwrap_or(cli::DEFAULT_TTL),
                shared: self.shared.is_some(),
                permits: self.permits,
                weight: self.weight,
                priority: self.priority.unwrap_or(0),
                conflict_exit_code: self.conflict_exit_code.unwrap_or(exit::NOT_ACQUIRED),
                kill_grace: self.kill_grace.unwrap_or(cli::DEFAULT_KILL_GRACE),
                description: self.description,
                verbose: self.verbose.is_some(),
                command,
            },
            self.url,
        ))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    /// Whenever the fast path answers, clap gives the same answer.
    fn agrees(args: &[&str]) -> bool {
        let fast = parse(&os(args));
        let full = Cli::try_parse_from(std::iter::once("distlock").chain(args.iter().copied()));
        match (&fast, &full) {
            (Some(fast), Ok(full)) => {
                assert_eq!(format!("{fast:?}"), format!("{full:?}"), "{args:?}");
                true
            }
            (Some(fast), Err(error)) => panic!("{args:?}: fast path took {fast:?}, clap: {error}"),
            (None, _) => false,
        }
    }

    #[test]
    fn everyday_shapes_take_the_fast_path_and_match_clap() {
        for args in [
            &["run", "x", "--", "true"][..],
            &["run", "x", "true"],
            &["--url", "file:///tmp/d", "run", "bench", "--", "true"],
            &["--url=file:///tmp/d", "run", "bench", "--", "true"],
            &["run", "x", "--url", "file:///tmp/d", "--", "true"],
            &["run", "x", "-n", "--", "sh", "-c", "exit 3"],
            &["run", "-n", "x", "--", "ls", "-l", "-n"],
            &["run", "x", "echo", "-n", "--", "hi"],
            &[
                "run",
                "x",
                "-w",
                "300ms",
                "--ttl",
                "1m",
                "--kill-grace",
                "0",
                "--",
                "true",
            ],
            &["run", "x", "--wait=2s", "--ttl=10s", "--", "true"],
            &["run", "x", "-E", "3", "-n", "-v", "--", "true"],
            &[
                "run",
                "x",
                "--conflict-exit-code",
                "0",
                "--no-wait",
                "--",
                "true",
            ],
            &[
                "run",
                "gpu",
                "--permits",
                "4",
                "--weight",
                "2",
                "--",
                "train",
            ],
            &["run", "cfg", "-s", "--", "cat", "cfg"],
            &["run", "x", "--priority", "-5", "--", "true"],
            &["run", "x", "--priority", "7", "--", "true"],
            &["run", "x", "--description", "nightly backup", "--", "true"],
            &["run", "x", "--description=", "--", "true"],
            &["run", "-", "--", "true"],
            &["run", "", "--", "true"],
            &["run", "a\nb", "--", "true"],
            &["run", "x", "--", "--weird"],
            &["run", "x", "--", "--"],
        ] {
            assert!(agrees(args), "{args:?} should take the fast path");
        }
    }

    #[test]
    fn anything_else_falls_back_to_clap() {
        for args in [
            &[][..],
            &["--help"],
            &["-V"],
            &["status", "x"],
            &["run"],
            &["run", "x"],
            &["run", "x", "--"],
            &["run", "--", "x", "true"],
            &["run", "x", "--help"],
            &["run", "x", "-h", "--", "true"],
            &["run", "x", "-nv", "--", "true"],
            &["run", "x", "-w5s", "--", "true"],
            &["run", "x", "-n", "-w", "1s", "--", "true"],
            &["run", "x", "-n", "-n", "--", "true"],
            &["run", "x", "--ttl", "0s", "--", "true"],
            &["run", "x", "--ttl", "banana", "--", "true"],
            &["run", "x", "--permits", "0", "--", "true"],
            &["run", "x", "--weight", "2", "--", "true"],
            &["run", "x", "-s", "--permits", "2", "--", "true"],
            &["run", "x", "-E", "300", "--", "true"],
            &["run", "x", "--description", "--", "true"],
            &["run", "x", "--bogus", "--", "true"],
            &["run", "x", "--no-wait=1", "--", "true"],
            &["--url", "run", "x", "--", "true"],
            &[
                "--url",
                "file:///a",
                "run",
                "x",
                "--url",
                "file:///b",
                "--",
                "true",
            ],
        ] {
            assert!(!agrees(args), "{args:?} should fall back to clap");
        }
    }
}
