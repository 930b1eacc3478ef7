//! Private PostgreSQL clusters on free ports, from the locally installed binaries.
//!
//! Each [`PostgresServer`] runs `initdb` in a temp dir and starts `postgres` on a free port of
//! 127.0.0.1, in its own process group so that [`kill`](PostgresServer::kill),
//! [`pause`](PostgresServer::pause) and [`resume`](PostgresServer::resume) reach the postmaster
//! and every backend at once. When the tests run as root, `initdb` and `postgres` run as the
//! `postgres` OS user (initdb refuses root).
//!
//! Authentication: the superuser [`SUPERUSER`] connects without a password (`trust`); the role
//! [`PASSWORD_USER`] must give [`PASSWORD`] (`scram-sha-256`), for wrong-password tests.
//! Binaries are looked up in `$DISTLOCK_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`,
//! else `$PATH`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::datadir::{
    as_owner, chown_tree, copy_template, os_user_if_root, port_open, template, wait_started,
};
use crate::{Process, free_port};

/// How long a cluster gets to start answering before the test fails loudly.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The superuser, authenticated by `trust`.
pub const SUPERUSER: &str = "distlock";
/// A role that must authenticate with [`PASSWORD`].
pub const PASSWORD_USER: &str = "app";
/// The password of [`PASSWORD_USER`].
pub const PASSWORD: &str = "s3cret-app-pw";
/// The database created for tests (owned by the superuser, usable by [`PASSWORD_USER`]).
pub const DATABASE: &str = "distlock";
/// Server settings that skip flushing commits to disk: tests and benchmarks run faster, and a
/// killed server loses nothing (its writes are in the OS page cache); only a machine crash
/// would. A server with default settings also waits for a WAL flush at every commit.
pub const UNFLUSHED_COMMITS: [&str; 2] = ["fsync=off", "full_page_writes=off"];

/// One private PostgreSQL cluster, stopped (SIGKILL of its process group) when dropped.
pub struct PostgresServer {
    port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    process: Option<Process>,
}

impl std::fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresServer")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish()
    }
}

fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("DISTLOCK_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| PathBuf::from(""))
}

impl PostgresServer {
    /// Creates and starts a cluster. Panics with the reason if it cannot.
    ///
    /// The first call in a machine runs `initdb` into a template directory under the temp dir
    /// (reused by later runs); each server starts from a copy of it.
    pub fn start() -> PostgresServer {
        let bin = pg_bin();
        let owner = os_user_if_root("postgres");
        let template = template("pg", &bin, |dir| Self::build(&bin, dir, owner).keep());
        let dir = copy_template("pg", &template, owner);
        let mut server = PostgresServer {
            port: free_port(),
            dir,
            bin,
            owner,
            process: None,
        };
        server.launch();
        server
    }

    /// A fresh cluster built from scratch with initdb in `dir`, prepared and stopped.
    fn build(bin: &Path, dir: tempfile::TempDir, owner: Option<(u32, u32)>) -> tempfile::TempDir {
        chown_tree(dir.path(), owner);
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "--auth=trust", "--no-sync", "-E", "UTF8"])
            .args(["--locale=C"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_owner(&mut initdb, owner);
        let out = initdb
            .output()
            .unwrap_or_else(|e| panic!("could not run {}/initdb: {e}", bin.display()));
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\n\
                 host all {SUPERUSER} 127.0.0.1/32 trust\n\
                 host all all 127.0.0.1/32 scram-sha-256\n"
            ),
        )
        .expect("write pg_hba.conf");
        chown_tree(&data, owner);
        let mut server = PostgresServer {
            port: free_port(),
            dir,
            bin: bin.to_owned(),
            owner,
            process: None,
        };
        server.launch();
        server.psql(&format!("CREATE DATABASE {DATABASE}"));
        server.psql(&format!(
            "CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}'"
        ));
        server.psql_db(
            DATABASE,
            &format!("GRANT ALL ON SCHEMA public TO {PASSWORD_USER};"),
        );
        server.stop();
        let PostgresServer { ref mut dir, .. } = server;
        std::mem::replace(dir, tempfile::tempdir().expect("temp dir"))
    }

    /// Fast shutdown, waiting for the postmaster to exit.
    fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.signal(libc::SIGINT);
            if process.wait_exit(Duration::from_secs(30)).is_none() {
                self.process = Some(process);
                self.kill();
            }
        }
    }

    fn launch(&mut self) {
        use std::os::unix::process::CommandExt;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut command = Command::new(self.bin.join("postgres"));
            command
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-p", &self.port.to_string()])
                .arg("-k")
                .arg(self.dir.path())
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(UNFLUSHED_COMMITS.iter().flat_map(|setting| ["-c", setting]))
                .args(["-c", "max_connections=300", "-c", "shared_buffers=32MB"])
                .args(["-c", "log_min_messages=panic"])
                .process_group(0);
            as_owner(&mut command, self.owner);
            let mut process = Process::spawn("postgres", command).expect("spawn postgres");
            if wait_started(&mut process, Duration::from_secs(20), || self.pg_isready()) {
                self.process = Some(process);
                return;
            }
            // An old backend may still hold the shared memory of a killed cluster: retry.
            assert!(
                Instant::now() < deadline,
                "postgres on port {} did not start within {START_TIMEOUT:?} (data dir {})",
                self.port,
                self.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn pg_isready(&self) -> bool {
        if !port_open(self.port) {
            return false;
        }
        Command::new(self.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", SUPERUSER, "-d", "postgres", "-t", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Runs SQL through `psql` as the superuser in the `postgres` database; panics on failure.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db("postgres", sql)
    }

    /// Runs SQL through `psql` as the superuser in `database`; panics on failure. Returns the
    /// unaligned, tuples-only output.
    pub fn psql_db(&self, database: &str, sql: &str) -> String {
        let psql = if self.bin.join("psql").exists() {
            self.bin.join("psql")
        } else {
            PathBuf::from("psql")
        };
        let out = Command::new(psql)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", SUPERUSER, "-d", database])
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://distlock@127.0.0.1:<port>/distlock` (the trusted superuser).
    pub fn url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The URL of [`PASSWORD_USER`] with `password` (right or wrong).
    pub fn url_with_password(&self, password: &str) -> String {
        format!(
            "postgres://{PASSWORD_USER}:{password}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    /// The postmaster's process id (also the process group of every backend).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    fn signal_group(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: killpg has no memory-safety preconditions.
            unsafe { libc::killpg(pid as libc::pid_t, signal) };
        }
    }

    /// SIGKILL of the postmaster and every backend (a crash); [`start_again`](Self::start_again)
    /// brings the same cluster back on the same port.
    pub fn kill(&mut self) {
        self.signal_group(libc::SIGCONT);
        self.signal_group(libc::SIGKILL);
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
        // Wait for every backend of the group to be gone, so the port and shared memory free.
        crate::wait_until(Duration::from_secs(10), || !port_open(self.port));
    }

    /// SIGSTOP of the postmaster and every backend: the server stops answering.
    pub fn pause(&self) {
        self.signal_group(libc::SIGSTOP);
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal_group(libc::SIGCONT);
    }

    /// Fast shutdown (SIGINT: sessions are terminated, a shutdown checkpoint is written) and
    /// start again on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Starts the cluster again after [`kill`](Self::kill) (crash recovery runs).
    pub fn start_again(&mut self) {
        assert!(self.process.is_none(), "the server is running");
        self.launch();
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.signal_group(libc::SIGCONT);
        self.signal_group(libc::SIGKILL);
    }
}

/// A private PgBouncer in **transaction pooling** mode in front of a [`PostgresServer`], on a
/// free port of 127.0.0.1 (as the `postgres` OS user when the tests run as root). It serves the
/// database [`DATABASE`] to [`SUPERUSER`] without a password, with a pool of
/// [`PgBouncer::POOL_SIZE`] server connections. Binary: `$DISTLOCK_PGBOUNCER`, else
/// `/usr/sbin/pgbouncer`. Stopped (SIGKILL) when dropped.
pub struct PgBouncer {
    port: u16,
    _dir: tempfile::TempDir,
    process: Option<Process>,
}

impl std::fmt::Debug for PgBouncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBouncer")
            .field("port", &self.port)
            .finish()
    }
}

impl PgBouncer {
    /// Server connections per pool.
    pub const POOL_SIZE: u32 = 4;

    /// Whether a PgBouncer binary is installed.
    pub fn available() -> bool {
        Self::binary().exists()
    }

    fn binary() -> PathBuf {
        std::env::var_os("DISTLOCK_PGBOUNCER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/pgbouncer"))
    }

    /// Starts PgBouncer in front of `server`. Panics with the reason if it cannot.
    pub fn start(server: &PostgresServer) -> PgBouncer {
        let owner = os_user_if_root("postgres");
        let dir = tempfile::Builder::new()
            .prefix("distlock-pgbouncer-")
            .tempdir()
            .expect("temp dir for pgbouncer");
        let port = free_port();
        let path = dir.path();
        std::fs::write(path.join("userlist.txt"), format!("\"{SUPERUSER}\" \"\"\n"))
            .expect("write userlist");
        std::fs::write(
            path.join("pgbouncer.ini"),
            format!(
                "[databases]\n\
                 {DATABASE} = host=127.0.0.1 port={} dbname={DATABASE} user={SUPERUSER}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {}\n\
                 max_client_conn = 500\n\
                 logfile = {}\n\
                 ignore_startup_parameters = extra_float_digits\n",
                server.port(),
                path.join("userlist.txt").display(),
                Self::POOL_SIZE,
                path.join("pgbouncer.log").display(),
            ),
        )
        .expect("write pgbouncer.ini");
        chown_tree(path, owner);
        let mut command = Command::new(Self::binary());
        // -q: log to the log file only, not to the test's stderr.
        command.arg("-q").arg(path.join("pgbouncer.ini"));
        as_owner(&mut command, owner);
        let mut process = Process::spawn("pgbouncer", command).expect("spawn pgbouncer");
        let ready = wait_started(&mut process, Duration::from_secs(20), || port_open(port));
        let log = || std::fs::read_to_string(path.join("pgbouncer.log")).unwrap_or_default();
        assert!(
            ready,
            "pgbouncer on port {port} did not start; its log:\n{}",
            log()
        );
        PgBouncer {
            port,
            _dir: dir,
            process: Some(process),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://distlock@127.0.0.1:<port>/distlock`, through PgBouncer.
    pub fn url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{DATABASE}", self.port)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }
}
