//! Private MariaDB servers on free ports, from the locally installed `mariadbd`.
//!
//! Each [`MariaDbServer`] runs `mariadb-install-db` in a temp dir and starts `mariadbd` on a
//! free port of 127.0.0.1 (as the `mysql` OS user when the tests run as root), with the
//! `metadata_lock_info` plugin loaded when it is installed.
//!
//! Accounts: [`SUPERUSER`]`@'%'` with every privilege and no password; [`PASSWORD_USER`]`@'%'`
//! with [`PASSWORD`] and every privilege on [`DATABASE`] only.
//! Binaries: `$DISTLOCK_MARIADBD` / `$DISTLOCK_MARIADB_INSTALL_DB`, else `/usr/sbin/mariadbd`
//! and `mariadb-install-db` on `$PATH`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::datadir::{
    as_owner, chown_tree, copy_template, os_user_if_root, port_open, template, wait_started,
};
use crate::{Process, free_port};

/// How long a server gets to start answering before the test fails loudly.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The account with every privilege and no password.
pub const SUPERUSER: &str = "distlock";
/// An account that must authenticate with [`PASSWORD`].
pub const PASSWORD_USER: &str = "app";
/// The password of [`PASSWORD_USER`].
pub const PASSWORD: &str = "s3cret-app-pw";
/// The database created for tests.
pub const DATABASE: &str = "distlock";
/// Server settings that skip flushing commits to disk: tests and benchmarks run faster, and a
/// killed server loses nothing (its writes are in the OS page cache); only a machine crash
/// would. A server with default settings (`innodb_flush_log_at_trx_commit=1`) also waits for
/// a redo log flush at every commit.
pub const UNFLUSHED_COMMITS: [&str; 1] = ["innodb_flush_log_at_trx_commit=2"];

/// One private `mariadbd`, SIGKILLed when dropped.
pub struct MariaDbServer {
    port: u16,
    dir: tempfile::TempDir,
    mariadbd: PathBuf,
    owner: Option<(u32, u32)>,
    plugin: bool,
    process: Option<Process>,
}

impl std::fmt::Debug for MariaDbServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDbServer")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish()
    }
}

fn plugin_installed() -> bool {
    ["/usr/lib/mysql/plugin", "/usr/lib/mariadb/plugin"]
        .iter()
        .any(|d| Path::new(d).join("metadata_lock_info.so").exists())
}

fn env_or(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

impl MariaDbServer {
    /// Creates and starts a server. Panics with the reason if it cannot.
    ///
    /// The first call in a machine runs `mariadb-install-db` into a template directory under
    /// the temp dir (reused by later runs); each server starts from a copy of it.
    pub fn start() -> MariaDbServer {
        let owner = os_user_if_root("mysql");
        let mariadbd = env_or("DISTLOCK_MARIADBD", "/usr/sbin/mariadbd");
        let template = template("mariadb", &mariadbd, |dir| {
            Self::build(&mariadbd, dir, owner)
        });
        let dir = copy_template("mariadb", &template, owner);
        let mut server = MariaDbServer {
            port: free_port(),
            dir,
            mariadbd,
            owner,
            plugin: plugin_installed(),
            process: None,
        };
        server.launch();
        server
    }

    /// Installs a data directory in `dir`, creates the accounts and stops the server.
    fn build(mariadbd: &Path, dir: tempfile::TempDir, owner: Option<(u32, u32)>) -> PathBuf {
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        chown_tree(dir.path(), owner);
        let mut install = Command::new(env_or("DISTLOCK_MARIADB_INSTALL_DB", "mariadb-install-db"));
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, _)) = owner {
            install.arg(format!("--user={uid}"));
        }
        as_owner(&mut install, owner);
        let out = install
            .output()
            .unwrap_or_else(|e| panic!("could not run mariadb-install-db: {e}"));
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = MariaDbServer {
            port: free_port(),
            dir,
            mariadbd: mariadbd.to_owned(),
            owner,
            plugin: plugin_installed(),
            process: None,
        };
        server.launch();
        server.sql(&format!(
            "CREATE DATABASE {DATABASE}; \
             CREATE USER '{SUPERUSER}'@'%'; \
             GRANT ALL PRIVILEGES ON *.* TO '{SUPERUSER}'@'%' WITH GRANT OPTION; \
             CREATE USER '{PASSWORD_USER}'@'%' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL PRIVILEGES ON {DATABASE}.* TO '{PASSWORD_USER}'@'%';"
        ));
        server.stop();
        let path = server.dir.path().to_owned();
        let MariaDbServer { ref mut dir, .. } = server;
        let dir = std::mem::replace(dir, tempfile::tempdir().expect("temp dir"));
        let kept = dir.keep();
        assert_eq!(kept, path);
        kept
    }

    /// Clean shutdown (SIGTERM), waiting for the server to exit.
    fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.resume();
            let _ = process.signal(libc::SIGTERM);
            if process.wait_exit(Duration::from_secs(30)).is_none() {
                process.kill();
            }
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    fn launch(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        // A temporary directory of its own: a starting server deletes every `#sql*` file in
        // its tmpdir, which in a shared /tmp are other servers' temporary tables in use.
        let tmp = self.dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("tmp dir");
        chown_tree(&tmp, self.owner);
        loop {
            use std::os::unix::process::CommandExt;
            let mut command = Command::new(&self.mariadbd);
            command
                .arg("--no-defaults")
                .arg(format!(
                    "--datadir={}",
                    self.dir.path().join("data").display()
                ))
                .arg(format!("--port={}", self.port))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--socket={}", self.socket().display()))
                .arg(format!("--tmpdir={}", tmp.display()))
                .arg(format!(
                    "--pid-file={}",
                    self.dir.path().join("mysqld.pid").display()
                ))
                .arg(format!(
                    "--log-error={}",
                    self.dir.path().join("error.log").display()
                ))
                .args(["--skip-name-resolve", "--skip-log-bin", "--log-warnings=0"])
                .args(
                    UNFLUSHED_COMMITS
                        .iter()
                        .map(|setting| format!("--{setting}")),
                )
                .arg("--innodb-buffer-pool-size=16M")
                .arg("--max-connections=300")
                .process_group(0);
            if self.plugin {
                command.arg("--plugin-load-add=metadata_lock_info");
            }
            if let Some((uid, _)) = self.owner {
                command.arg(format!("--user={uid}"));
            }
            as_owner(&mut command, self.owner);
            let mut process = Process::spawn("mariadbd", command).expect("spawn mariadbd");
            if wait_started(&mut process, Duration::from_secs(30), || {
                port_open(self.port) && self.ping()
            }) {
                self.process = Some(process);
                return;
            }
            if Instant::now() >= deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "mariadbd on port {} did not start within {START_TIMEOUT:?} (dir {}); \
                     its log ends:\n{}",
                    self.port,
                    self.dir.path().display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn client(&self) -> Command {
        let mut command = Command::new("mariadb");
        command
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root", "--batch", "--skip-column-names"]);
        command
    }

    fn ping(&self) -> bool {
        self.client()
            .args(["-e", "SELECT 1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Runs SQL as root over the server's Unix socket; panics on failure. Returns the output
    /// (tab-separated, no column names).
    pub fn sql(&self, sql: &str) -> String {
        let out = self
            .client()
            .args(["-e", sql])
            .output()
            .expect("mariadb client runs");
        assert!(
            out.status.success(),
            "mariadb failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Whether the `metadata_lock_info` plugin was loaded.
    pub fn has_metadata_lock_info(&self) -> bool {
        self.plugin
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://distlock@127.0.0.1:<port>/distlock` (no password).
    pub fn url(&self) -> String {
        format!("mysql://{SUPERUSER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The URL of [`PASSWORD_USER`] with `password` (right or wrong).
    pub fn url_with_password(&self, password: &str) -> String {
        format!(
            "mysql://{PASSWORD_USER}:{password}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// SIGKILL (a crash); [`start_again`](Self::start_again) brings it back on the same port.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.resume();
            process.kill();
        }
        crate::wait_until(Duration::from_secs(10), || !port_open(self.port));
    }

    /// SIGSTOP: the server stops answering.
    pub fn pause(&self) {
        if let Some(process) = &self.process {
            let _ = process.pause();
        }
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        if let Some(process) = &self.process {
            let _ = process.resume();
        }
    }

    /// Clean shutdown (SIGTERM) and start again on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Starts the server again after [`kill`](Self::kill) (crash recovery runs).
    pub fn start_again(&mut self) {
        assert!(self.process.is_none(), "the server is running");
        self.launch();
    }
}
