//! End-to-end tests of the `distlock` binary: real processes, each test with its own lock
//! directory (`--url file:///<tempdir>`). Children are killed by guards even when a test fails.
//! Timing is only asserted as generous upper bounds.

mod common;

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{BIN, Output, PATIENCE, Proc, output, wait_until};

/// A lock directory of its own.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    /// `distlock --url <ours> ARGS...`, with a clean environment for distlock's variables.
    fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        common::cmd(&self.url(), args)
    }

    /// Runs to completion (bounded) and returns status, stdout, stderr.
    fn output<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        output(self.cmd(args))
    }

    /// Starts `distlock` in the background with piped output.
    fn spawn<I, S>(&self, args: I) -> Proc
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Proc::spawn(self.cmd(args))
    }

    fn status_json(&self, name: &str) -> Value {
        let out = self.output(["status", name, "--json"]);
        assert_eq!(out.code, Some(0), "status --json: {out:?}");
        serde_json::from_str(&out.stdout).expect("status --json is JSON")
    }
}

/// Whether process `pid` is gone (or a zombie nobody reaps, e.g. without an init in a
/// container).
fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// Starts a holder of `name` running `sh -c 'echo $$; exec sleep 30'` and returns it with the
/// command's pid, once the command runs.
fn hold(env: &Env, name: &str, extra: &[&str]) -> (Proc, i32) {
    let mut args = vec!["run", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", "echo $$; exec sleep 30"]);
    let mut holder = env.spawn(args);
    let pid: i32 = holder
        .stdout_line()
        .trim()
        .parse()
        .expect("the command prints its pid");
    holder.also_kill.push(pid);
    (holder, pid)
}

#[test]
fn concurrent_runs_take_turns_with_increasing_tokens() {
    let env = Env::new();
    let script = "echo start $DISTLOCK_NAME $DISTLOCK_TOKEN $(date +%s%N); sleep 1; \
                  echo end $(date +%s%N)";
    let mut runs: Vec<Proc> = (0..2)
        .map(|_| env.spawn(["run", "demo", "--", "sh", "-c", script]))
        .collect();
    let mut intervals = Vec::new();
    for run in &mut runs {
        let status = run.wait(PATIENCE);
        let (stdout, stderr) = run.drain();
        assert_eq!(
            status.code(),
            Some(0),
            "stdout {stdout:?} stderr {stderr:?}"
        );
        let words: Vec<&str> = stdout.split_whitespace().collect();
        assert_eq!(words.len(), 6, "{stdout:?}");
        assert_eq!((words[0], words[1], words[4]), ("start", "demo", "end"));
        let token: u64 = words[2].parse().unwrap();
        let start: u128 = words[3].parse().unwrap();
        let end: u128 = words[5].parse().unwrap();
        intervals.push((start, end, token));
    }
    intervals.sort();
    let (first, second) = (intervals[0], intervals[1]);
    assert!(
        first.1 <= second.0,
        "the runs overlapped: {intervals:?} (start, end, token)"
    );
    assert!(first.2 < second.2, "tokens must increase: {intervals:?}");
}

#[test]
fn not_acquired_exits_75_or_the_chosen_code() {
    let env = Env::new();
    let (_holder, _) = hold(&env, "busy", &[]);
    let out = env.output(["run", "busy", "-n", "--", "true"]);
    assert_eq!(out.code, Some(75), "{out:?}");
    assert!(out.stderr.starts_with("distlock: "), "{out:?}");
    let out = env.output(["run", "busy", "-E", "3", "-n", "--", "true"]);
    assert_eq!(out.code, Some(3), "{out:?}");
    let started = Instant::now();
    let out = env.output(["run", "busy", "-w", "300ms", "--", "true"]);
    assert_eq!(out.code, Some(75), "{out:?}");
    assert!(started.elapsed() >= Duration::from_millis(300), "{out:?}");
    let out = env.output(["run", "busy", "-w", "0", "--", "true"]);
    assert_eq!(out.code, Some(75), "{out:?}");
}

#[test]
fn exit_codes_pass_through() {
    let env = Env::new();
    let out = env.output(["run", "x", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.code, Some(7), "{out:?}");
    let out = env.output(["run", "x", "--", "true"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = env.output(["run", "x", "--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(out.code, Some(128 + libc::SIGKILL), "{out:?}");
    let out = env.output(["run", "x", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.code, Some(128 + libc::SIGTERM), "{out:?}");
    // The lock is free after each run.
    let out = env.output(["run", "x", "-n", "--", "true"]);
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[test]
fn usage_errors_exit_64() {
    let env = Env::new();
    let out = env.output(["run", "", "--", "true"]);
    assert_eq!(out.code, Some(64), "{out:?}");
    assert!(out.stderr.contains("must not be empty"), "{out:?}");
    let out = env.output(["run", "a\nb", "--", "true"]);
    assert_eq!(out.code, Some(64), "{out:?}");
    assert!(out.stderr.contains("control characters"), "{out:?}");
    let out = env.output(["status", "a\nb"]);
    assert_eq!(out.code, Some(64), "{out:?}");
    for args in [
        &["run", "x", "--permits", "0", "--", "true"][..],
        &["run", "x", "--ttl", "0s", "--", "true"],
        &["run", "x", "--ttl", "banana", "--", "true"],
        &["run", "x", "-n", "-w", "1s", "--", "true"],
        &["run", "x", "--weight", "2", "--", "true"],
        &["run", "x"],
        &["run", "x", "--bogus", "--", "true"],
        &["release", "x"],
        &["frobnicate"],
        &[],
    ] {
        let out = env.output(args);
        assert_eq!(out.code, Some(64), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: {out:?}");
    }
    // Values the core rejects: a TTL under its minimum, a weight above the limit.
    let out = env.output(["run", "x", "--ttl", "1ms", "--", "true"]);
    assert_eq!(out.code, Some(64), "{out:?}");
    let out = env.output(["run", "x", "--permits", "2", "--weight", "3", "--", "true"]);
    assert_eq!(out.code, Some(64), "{out:?}");
    // The file backend has no priority queues: Unsupported, named.
    let out = env.output(["run", "x", "--priority", "5", "--", "true"]);
    assert_eq!(out.code, Some(64), "{out:?}");
    assert!(out.stderr.contains("priorit"), "{out:?}");
    // Help and version are not errors.
    assert_eq!(env.output(["--help"]).code, Some(0));
    assert_eq!(env.output(["run", "--help"]).code, Some(0));
    assert_eq!(env.output(["--version"]).code, Some(0));
}

#[test]
fn bad_urls_exit_64() {
    for url in ["gopher://example.org/x", "file:relative/dir", "nonsense"] {
        let out = output({
            let mut cmd = Command::new(BIN);
            cmd.args(["--url", url, "run", "x", "--", "true"]);
            cmd
        });
        assert_eq!(out.code, Some(64), "{url}: {out:?}");
        assert!(out.stderr.contains("invalid URL"), "{url}: {out:?}");
    }
    // From the environment too, and without showing the password.
    let out = output({
        let mut cmd = Command::new(BIN);
        cmd.env("DISTLOCK_URL", "gopher://user:hunter2@host/x")
            .args(["status", "x"]);
        cmd
    });
    assert_eq!(out.code, Some(64), "{out:?}");
    assert!(!out.stderr.contains("hunter2"), "{out:?}");
}

#[test]
fn symlinked_lock_directory_exits_69() {
    let env = Env::new();
    let real = env.dir.path().join("real");
    let link = env.dir.path().join("link");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = output({
        let mut cmd = Command::new(BIN);
        cmd.arg("--url")
            .arg(format!("file://{}", link.display()))
            .args(["run", "x", "--", "true"]);
        cmd
    });
    assert_eq!(out.code, Some(69), "{out:?}");
    assert!(out.stderr.starts_with("distlock: "), "{out:?}");
}

#[test]
fn missing_or_unexecutable_command_releases_the_lock() {
    let env = Env::new();
    let out = env.output(["run", "x", "--", "/nonexistent/distlock-test-command"]);
    assert_eq!(out.code, Some(127), "{out:?}");
    assert!(out.stderr.contains("command not found"), "{out:?}");
    let out = env.output(["run", "x", "--", "distlock-test-no-such-command-anywhere"]);
    assert_eq!(out.code, Some(127), "{out:?}");
    let out = env.output(["run", "x", "-n", "--", "true"]);
    assert_eq!(out.code, Some(0), "the lock must be free again: {out:?}");

    let script = env.dir.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let out = env.output([
        "run".as_ref(),
        "x".as_ref(),
        "--".as_ref(),
        script.as_os_str(),
    ]);
    assert_eq!(out.code, Some(126), "{out:?}");
    let out = env.output(["run", "x", "-n", "--", "true"]);
    assert_eq!(out.code, Some(0), "the lock must be free again: {out:?}");
    assert!(
        env.status_json("x")["holders"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn lock_lost_while_running_terminates_the_command_and_exits_74() {
    let env = Env::new();
    let (mut holder, pid) = hold(&env, "lossy", &["--ttl", "300ms"]);
    let out = env.output(["release", "lossy", "--force"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("revoked 1 holder"), "{out:?}");
    let status = holder.wait(PATIENCE);
    let (_, stderr) = holder.drain();
    assert_eq!(status.code(), Some(74), "{stderr}");
    assert!(stderr.contains("lost lock"), "{stderr}");
    assert!(process_gone(pid), "the command (pid {pid}) survived");
    // Free again.
    let out = env.output(["run", "lossy", "-n", "--", "true"]);
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[test]
fn lock_lost_kills_a_command_that_ignores_sigterm_after_the_grace_period() {
    let env = Env::new();
    let mut holder = env.spawn([
        "run",
        "stubborn",
        "--ttl",
        "300ms",
        "--kill-grace",
        "200ms",
        "--",
        "sh",
        "-c",
        "trap '' TERM; echo $$; while :; do sleep 0.05; done",
    ]);
    let pid: i32 = holder.stdout_line().trim().parse().unwrap();
    holder.also_kill.push(pid);
    assert_eq!(env.output(["release", "stubborn", "--force"]).code, Some(0));
    let status = holder.wait(PATIENCE);
    let (_, stderr) = holder.drain();
    assert_eq!(status.code(), Some(74), "{stderr}");
    assert!(stderr.contains("SIGKILL"), "{stderr}");
    assert!(process_gone(pid), "the command (pid {pid}) survived");
}

#[test]
fn sigkill_of_distlock_kills_the_command_and_frees_the_lock() {
    let env = Env::new();
    let (mut holder, pid) = hold(&env, "doomed", &[]);
    holder.signal(libc::SIGKILL);
    holder.wait(PATIENCE);
    wait_until("the command dies with distlock (PDEATHSIG)", || {
        process_gone(pid)
    });
    wait_until("the lock is free", || {
        env.output(["run", "doomed", "-n", "--", "true"]).code == Some(0)
    });
}

#[test]
fn sigterm_is_forwarded_to_the_command() {
    let env = Env::new();
    let mut run = env.spawn([
        "run",
        "fwd",
        "--",
        "sh",
        "-c",
        // `ready` only once the background sleep has exec'd, so the SIGTERM forwarded to the
        // group reaches it (a forked shell that has not exec'd yet would swallow it in its trap).
        "trap 'echo got-term; exit 3' TERM; sleep 30 & \
         until [ \"$(cat /proc/$!/comm)\" = sleep ]; do :; done; echo ready; wait",
    ]);
    assert_eq!(run.stdout_line(), "ready");
    run.signal(libc::SIGTERM);
    let status = run.wait(PATIENCE);
    let (stdout, stderr) = run.drain();
    assert_eq!(
        status.code(),
        Some(3),
        "stdout {stdout:?} stderr {stderr:?}"
    );
    assert!(stdout.contains("got-term"), "{stdout:?}");
    assert!(
        env.status_json("fwd")["holders"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn other_signals_are_forwarded_too() {
    let env = Env::new();
    let mut run = env.spawn([
        "run",
        "fwd2",
        "--",
        "sh",
        "-c",
        "trap 'echo got-usr1' USR1; trap 'echo got-hup; exit 5' HUP; echo ready; \
         while :; do sleep 0.05; done",
    ]);
    assert_eq!(run.stdout_line(), "ready");
    run.signal(libc::SIGUSR1);
    assert_eq!(run.stdout_line(), "got-usr1");
    run.signal(libc::SIGHUP);
    let status = run.wait(PATIENCE);
    let (stdout, stderr) = run.drain();
    assert_eq!(
        status.code(),
        Some(5),
        "stdout {stdout:?} stderr {stderr:?}"
    );
    assert!(stdout.contains("got-hup"), "{stdout:?}");
}

#[test]
fn sigint_while_waiting_exits_130_and_leaves_no_waiter() {
    let env = Env::new();
    let (holder, _) = hold(&env, "queue", &[]);
    let mut waiter = env.spawn(["run", "queue", "-v", "--", "true"]);
    waiter.stderr_until("waiting for lock");
    // Give the waiting acquisition a moment to register (not required for correctness).
    thread::sleep(Duration::from_millis(100));
    waiter.signal(libc::SIGINT);
    let status = waiter.wait(PATIENCE);
    let (_, stderr) = waiter.drain();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted while waiting for lock"),
        "{stderr}"
    );
    let info = env.status_json("queue");
    let holders = info["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 1, "{info}");
    assert_eq!(holders[0]["pid"], holder.pid(), "{info}");
    assert!(info["waiters"].as_array().unwrap().is_empty(), "{info}");
}

#[test]
fn status_and_list_show_the_holder() {
    let env = Env::new();
    let out = env.output(["status", "jobs/report"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("is free"), "{out:?}");

    let (holder, _) = hold(&env, "jobs/report", &["--description", "nightly report"]);
    let info = env.status_json("jobs/report");
    assert_eq!(info["name"], "jobs/report", "{info}");
    assert_eq!(info["backend"], "file", "{info}");
    let holders = info["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 1, "{info}");
    let h = &holders[0];
    assert_eq!(h["pid"], holder.pid(), "{info}");
    assert_eq!(h["description"], "nightly report", "{info}");
    assert_eq!(h["mode"], "exclusive", "{info}");
    assert!(h["token"].as_u64().unwrap() >= 1, "{info}");
    assert_eq!(h["owner"].as_str().unwrap().len(), 32, "{info}");
    assert!(h["since"].as_str().unwrap().ends_with('Z'), "{info}");

    let out = env.output(["status", "jobs/report"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("MODE"), "{out:?}");
    assert!(out.stdout.contains("nightly report"), "{out:?}");
    assert!(out.stdout.contains(&holder.pid().to_string()), "{out:?}");

    let out = env.output(["list", "--json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let all: Value = serde_json::from_str(&out.stdout).unwrap();
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["jobs/report"], "{all}");
    let out = env.output(["list", "jobs/", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap()[0]["name"],
        "jobs/report"
    );
    let out = env.output(["list", "other/", "--json"]);
    assert_eq!(out.stdout.trim(), "[]", "{out:?}");
    let out = env.output(["list"]);
    assert!(out.stdout.contains("\"jobs/report\""), "{out:?}");
    assert!(out.stdout.contains("nightly report"), "{out:?}");
}

#[test]
fn default_description_is_the_command_line() {
    let env = Env::new();
    let (_holder, _) = hold(&env, "d", &[]);
    let info = env.status_json("d");
    assert_eq!(
        info["holders"][0]["description"], "distlock run: sh -c 'echo $$; exec sleep 30'",
        "{info}"
    );
}

#[test]
fn semaphore_admits_n_and_shared_locks_coexist() {
    let env = Env::new();
    let (_a, _) = hold(&env, "gpu", &["--permits", "2"]);
    let (_b, _) = hold(&env, "gpu", &["--permits", "2"]);
    let out = env.output(["run", "gpu", "--permits", "2", "-n", "--", "true"]);
    assert_eq!(out.code, Some(75), "{out:?}");
    assert_eq!(
        env.status_json("gpu")["holders"].as_array().unwrap().len(),
        2
    );

    let (_r1, _) = hold(&env, "config", &["-s"]);
    let out = env.output(["run", "config", "-s", "-n", "--", "true"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = env.output(["run", "config", "-n", "--", "true"]);
    assert_eq!(out.code, Some(75), "{out:?}");
}

#[test]
fn release_without_holders_and_completions() {
    let env = Env::new();
    let out = env.output(["release", "nobody", "--force"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("no holders"), "{out:?}");
    let out = env.output(["completions", "bash"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("_distlock"), "{out:?}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = env.output(["completions", shell]);
        assert_eq!(out.code, Some(0), "{shell}: {out:?}");
        assert!(!out.stdout.is_empty(), "{shell}");
    }
}

#[test]
fn url_comes_from_the_environment() {
    let env = Env::new();
    let (holder, _) = hold(&env, "envy", &[]);
    let mut cmd = Command::new(BIN);
    cmd.env("DISTLOCK_URL", env.url())
        .args(["status", "envy", "--json"]);
    let out = output(cmd);
    assert_eq!(out.code, Some(0), "{out:?}");
    let info: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(info["holders"][0]["pid"], holder.pid());
}

/// A tmux server on its own socket with one bash session, killed on drop. Tests the terminal
/// behaviour: the spinner, interactive commands (the command's process group gets the
/// terminal), Ctrl-C and Ctrl-Z with `fg`.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(env: &Env) -> Tmux {
        let found = Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "these tests drive a terminal with tmux; install it (apt-get install -y tmux)"
        );
        let socket = format!("distlock-test-{}-{:?}", std::process::id(), Instant::now());
        let socket: String = socket
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let tmux = Tmux { socket };
        let status = Command::new("tmux")
            .args(["-L", &tmux.socket, "-f", "/dev/null"])
            .args(["new-session", "-d", "-s", "t", "-x", "200", "-y", "30"])
            .args([
                "env",
                "-i",
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "TERM=xterm",
            ])
            .arg(format!("DISTLOCK_URL={}", env.url()))
            .args(["PS1=$ ", "bash", "--norc", "--noprofile", "-i"])
            .status()
            .expect("start tmux");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "t"])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    /// Types a line and presses Enter.
    fn line(&self, text: &str) {
        self.keys(&["-l", text]);
        self.keys(&["Enter"]);
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "t"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen contains `needle`; returns the screen.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {needle:?}; it shows:\n{screen}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn terminal_interactive_command_spinner_ctrl_c_and_ctrl_z() {
    let env = Env::new();
    let tmux = Tmux::start(&env);
    tmux.wait_for("$");
    let bin = BIN;
    // Exit codes are echoed as `EXIT:n`, typed as `EX""IT:$?` so that the typed line itself
    // never matches.

    // An interactive command reads the terminal: its process group is in the foreground.
    tmux.line(&format!(
        "{bin} run tty -- sh -c 'read line; echo got:$line'; echo EX\"\"IT:$?"
    ));
    thread::sleep(Duration::from_millis(300));
    tmux.line("hello");
    let screen = tmux.wait_for("EXIT:");
    assert!(
        screen.contains("got:hello") && screen.contains("EXIT:0"),
        "{screen}"
    );
    tmux.line("clear");

    // Ctrl-C reaches the command (not distlock, which is not the foreground group now).
    tmux.line(&format!("{bin} run tty -- sleep 30; echo EX\"\"IT:$?"));
    wait_until("the command runs", || {
        env.status_json("tty")["holders"]
            .as_array()
            .is_some_and(|h| !h.is_empty())
    });
    tmux.keys(&["C-c"]);
    let screen = tmux.wait_for("EXIT:");
    assert!(screen.contains("EXIT:130"), "{screen}");
    tmux.line("clear");

    // The spinner names the holder while waiting.
    let (mut holder, _) = hold(&env, "busy", &["--description", "the holder"]);
    tmux.line(&format!(
        "{bin} run busy -- echo acquired-busy; echo EX\"\"IT:$?"
    ));
    let screen = tmux.wait_for(&format!("held by pid {}", holder.pid()));
    assert!(
        screen.contains("waiting for lock \"busy\"") && screen.contains("(the holder)"),
        "{screen}"
    );
    holder.signal(libc::SIGTERM);
    holder.wait(PATIENCE);
    let screen = tmux.wait_for("EXIT:");
    assert!(
        screen.contains("acquired-busy") && screen.contains("EXIT:0"),
        "{screen}"
    );
    tmux.line("clear");

    // Starts a command that reads a line, suspends it with Ctrl-Z, types `resume` at the
    // shell and then `input`, which the command must read.
    let suspend_then = |before_read: &str, resume: &[&str], input: &str| {
        tmux.line(&format!(
            "{bin} run tty -- sh -c 'echo st\"\"arted; {before_read}read line; echo got:$line'"
        ));
        tmux.wait_for("started");
        tmux.keys(&["C-z"]);
        tmux.wait_for("Stopped");
        for line in resume {
            tmux.line(line);
        }
        thread::sleep(Duration::from_millis(300));
        tmux.line(input);
        tmux.wait_for(&format!("got:{input}"));
        tmux.line("echo EX\"\"IT:$?");
        let screen = tmux.wait_for("EXIT:");
        assert!(screen.contains("EXIT:0"), "{screen}");
        tmux.line("clear");
    };
    // Ctrl-Z suspends the command and distlock; `fg` resumes both with the terminal.
    suspend_then("", &["fg"], "again");
    // `bg`, then `fg` before the command reads: the shell gives distlock's group the terminal
    // (with no signal, the job was running), and distlock passes it on when the command stops
    // for it.
    suspend_then("sleep 2; ", &["bg", "fg"], "later");
}

const STORM_BIN: &str = "DISTLOCK_TEST_STORM_BIN";
const STORM_RUNS: &str = "DISTLOCK_TEST_STORM_RUNS";

/// Helper for `ctrl_z_as_the_command_starts_never_hangs`: a job-control shell, run as the
/// leader of a session whose controlling terminal is a pty. It runs `distlock run storm --
/// true` in the foreground again and again, and resumes the job whenever it stops, as `fg`
/// would. Every run must exit 0.
#[test]
#[ignore = "helper: run in a child process by ctrl_z_as_the_command_starts_never_hangs"]
fn job_control_shell_child() {
    use std::os::unix::process::CommandExt;

    let (Ok(bin), Ok(runs)) = (std::env::var(STORM_BIN), std::env::var(STORM_RUNS)) else {
        panic!("run by ctrl_z_as_the_command_starts_never_hangs, not directly");
    };
    const STOPS: [i32; 3] = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];
    // SAFETY: signal(2) and terminal calls on this process and its children's groups.
    unsafe {
        for signo in STOPS {
            libc::signal(signo, libc::SIG_IGN);
        }
        let shell_group = libc::getpgrp();
        for run in 0..runs.parse::<u32>().unwrap() {
            let mut command = Command::new(&bin);
            command.args(["run", "storm", "--", "true"]);
            command.pre_exec(move || {
                // What a shell does for a foreground job.
                libc::setpgid(0, 0);
                libc::tcsetpgrp(0, libc::getpid());
                for signo in STOPS {
                    libc::signal(signo, libc::SIG_DFL);
                }
                Ok(())
            });
            let pid = command.spawn().unwrap().id() as i32;
            let mut status = 0;
            loop {
                assert_eq!(libc::waitpid(pid, &mut status, libc::WUNTRACED), pid);
                if !libc::WIFSTOPPED(status) {
                    break;
                }
                // The job stopped: take the terminal, then give it back and resume (`fg`).
                libc::tcsetpgrp(0, shell_group);
                libc::tcsetpgrp(0, pid);
                libc::kill(-pid, libc::SIGCONT);
            }
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "run {run}: distlock ended with wait status {status:#x}"
            );
        }
    }
}

/// Ctrl-Z can come at any moment, including while distlock starts the command: before the
/// command has left distlock's process group, or after it took the terminal but before it
/// exec'd. Every stop must reach the shell, and every run must finish once resumed.
#[test]
fn ctrl_z_as_the_command_starts_never_hangs() {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    use std::sync::{Arc, Mutex};

    let env = Env::new();
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two descriptors, owned below.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut shell = Command::new(std::env::current_exe().unwrap());
    shell
        .args([
            "--exact",
            "job_control_shell_child",
            "--ignored",
            "--nocapture",
        ])
        .env("DISTLOCK_URL", env.url())
        .env(STORM_BIN, BIN)
        .env(STORM_RUNS, "150")
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: setsid and ioctl between fork and exec: a new session whose controlling
    // terminal is the pty (stdin by now).
    unsafe {
        shell.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = shell.spawn().unwrap();
    // The pty reads end (EIO) once the shell and its children are gone: no copy of the
    // terminal side may stay open here.
    drop(shell);
    drop(slave);
    let mut shell = child;
    let shell_pid = shell.id() as i32;
    // Keep the pty drained so that nothing writing to it blocks; keep what it shows.
    let output = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let output = Arc::clone(&output);
        let mut master = std::fs::File::from(master.try_clone().unwrap());
        thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = master.read(&mut buf) {
                output.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let distlock = std::fs::canonicalize(BIN).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut presses, mut random) = (0u32, 0x9e37_79b9u32);
    let finished = loop {
        if let Some(status) = shell.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        // SAFETY: a query on the pty, and SIGTSTP to its foreground group.
        let foreground = unsafe { libc::tcgetpgrp(master.as_raw_fd()) };
        // Only distlock's groups, as a terminal's Ctrl-Z would reach them: the shell's own
        // children before their exec (still this test binary) are left alone.
        let is_distlock =
            std::fs::read_link(format!("/proc/{foreground}/exe")).is_ok_and(|exe| exe == distlock);
        if foreground > 0 && foreground != shell_pid && is_distlock {
            unsafe {
                libc::kill(-foreground, libc::SIGTSTP);
            }
            presses += 1;
        }
        random ^= random << 13;
        random ^= random >> 17;
        random ^= random << 5;
        thread::sleep(Duration::from_micros(u64::from(random % 3000)));
    };
    if finished.is_none() {
        let processes = Command::new("ps")
            .args([
                "-o",
                "pid,pgid,stat,wchan:24,args",
                "-s",
                &shell_pid.to_string(),
            ])
            .output()
            .unwrap();
        let _ = Command::new("pkill")
            .args(["-KILL", "-s", &shell_pid.to_string()])
            .status();
        let _ = shell.wait();
        panic!(
            "the runs never finished ({presses} stops sent); the session's processes:\n{}",
            String::from_utf8_lossy(&processes.stdout)
        );
    }
    let status = finished.unwrap();
    reader.join().unwrap();
    let shown = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    assert!(status.success(), "{status}; the terminal showed:\n{shown}");
    assert!(presses > 0, "no stop was sent");
}

/// The command's ignored-signal mask, from `/proc/self/status` of `grep` run under distlock.
fn ignored_signals_of_command(cmd: Command) -> u64 {
    let out = output(cmd);
    assert_eq!(out.code, Some(0), "{out:?}");
    let hex = out
        .stdout
        .trim()
        .strip_prefix("SigIgn:")
        .unwrap_or_else(|| panic!("{out:?}"))
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

#[test]
fn command_gets_default_signal_dispositions_except_inherited_ignores() {
    use std::os::unix::process::CommandExt;

    let env = Env::new();
    let bit = |signo: i32| 1u64 << (signo - 1);
    let args = ["run", "sig", "--", "grep", "SigIgn", "/proc/self/status"];
    // Rust ignores SIGPIPE and distlock catches SIGHUP; the command sees neither.
    let mask = ignored_signals_of_command(env.cmd(args));
    assert_eq!(mask & bit(libc::SIGPIPE), 0, "SIGPIPE ignored: {mask:x}");
    assert_eq!(mask & bit(libc::SIGHUP), 0, "SIGHUP ignored: {mask:x}");
    // The stop signals, which the command's setup catches until its exec, end up default.
    for stop in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        assert_eq!(mask & bit(stop), 0, "signal {stop} ignored: {mask:x}");
    }
    // Started the way nohup starts it, SIGHUP stays ignored for the command; so does a stop
    // signal ignored the same way.
    let mut nohup = env.cmd(args);
    // SAFETY: signal(2) between fork and exec of the test's child.
    unsafe {
        nohup.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            libc::signal(libc::SIGTSTP, libc::SIG_IGN);
            Ok(())
        });
    }
    let mask = ignored_signals_of_command(nohup);
    assert_ne!(mask & bit(libc::SIGHUP), 0, "SIGHUP not ignored: {mask:x}");
    assert_ne!(
        mask & bit(libc::SIGTSTP),
        0,
        "SIGTSTP not ignored: {mask:x}"
    );
}

#[test]
fn commands_are_found_like_execvp_does() {
    use std::os::unix::fs::PermissionsExt;

    let env = Env::new();
    let bin = env.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // A script without `#!` runs under /bin/sh, as execvp does it.
    let script = bin.join("no-shebang");
    std::fs::write(&script, "echo from-script \"$@\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = env.cmd(["run", "p", "--", "no-shebang", "a b"]);
    cmd.env(
        "PATH",
        format!("/nonexistent:{}:/usr/bin:/bin", bin.display()),
    );
    let out = output(cmd);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "from-script a b\n", "{out:?}");
}

/// The build script links the binary position-dependent on Linux for its start-up cost (see
/// build.rs); an ELF header's `e_type` says which kind the linker produced: 2 for a
/// position-dependent executable, 3 for a position-independent one.
#[cfg(target_os = "linux")]
#[test]
fn the_binary_is_linked_as_the_build_script_chose() {
    let header = std::fs::read(BIN).expect("read the distlock binary");
    assert_eq!(&header[..4], b"\x7fELF", "not an ELF file");
    let e_type = u16::from_ne_bytes([header[16], header[17]]);
    let expected = if option_env!("DISTLOCK_LINKED_NO_PIE").is_some() {
        2
    } else {
        3
    };
    assert_eq!(e_type, expected, "e_type of {BIN}");
}
