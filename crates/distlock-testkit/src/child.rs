//! A helper test of the current test binary, run in a child process that takes a lock and
//! holds it: the parent passes it a URL through the environment and reads back the token it
//! reports once it holds the lock, then can pause or kill it.

use std::fmt::Display;
use std::process::Command;
use std::time::Duration;

use crate::Process;

/// Environment variable carrying the URL from the parent to the child.
const URL_VAR: &str = "DISTLOCK_TESTKIT_CHILD_URL";
/// Start of the line the child prints once it holds the lock.
const HELD: &str = "HELD";

/// Parent side: runs the ignored test `test` of the current test binary in a child process,
/// with `url` for it to connect to (read with [`holder_url`]), and waits up to `timeout` for
/// the token it reports with [`report_held`]. Returns the child and that token.
pub fn spawn_holder(test: &str, url: &str, timeout: Duration) -> (Process, u64) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", test, "--ignored", "--nocapture"])
        .env(URL_VAR, url);
    let mut child = Process::spawn(test, command).unwrap();
    let token = child.wait_for_line(HELD, timeout).parse().unwrap();
    (child, token)
}

/// Child side: the URL passed by [`spawn_holder`]. Panics when not run by a parent test.
pub fn holder_url() -> String {
    std::env::var(URL_VAR).expect("run by the parent test")
}

/// Child side: tells the parent that the lock is held with `token`.
pub fn report_held(token: impl Display) {
    // libtest may have printed "test <name> ... " without a newline: start a line of our own.
    println!("\n{HELD} {token}");
}
