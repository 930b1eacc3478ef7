//! Real `redis-server` instances on free ports: single, N independent masters (for Redlock),
//! and a 3-master cluster.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Process, free_port};

/// How long a server gets to start answering before the test fails loudly.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Persistence of a test server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing on disk: a restart loses every key.
    None,
    /// AOF with `appendfsync always`: a restart keeps every acknowledged write.
    AofAlways,
}

/// One `redis-server` process on 127.0.0.1, killed when dropped.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    persistence: Persistence,
    extra_args: Vec<String>,
    tls_port: Option<u16>,
    process: Option<Process>,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("persistence", &self.persistence)
            .finish()
    }
}

impl RedisServer {
    /// Starts a server without persistence. Panics with the reason if it cannot start.
    pub fn start() -> RedisServer {
        Self::start_with(Persistence::None, &[])
    }

    /// Starts a server with the given persistence and extra `redis-server` arguments.
    pub fn start_with(persistence: Persistence, extra_args: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir for redis"),
            persistence,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            tls_port: None,
            process: None,
        };
        server.launch();
        server
    }

    /// Starts a server that also listens with TLS on a second port, with a self-signed
    /// certificate made by `openssl` in its directory (clients need no certificate). The
    /// plain port stays open for [`command`](Self::command).
    pub fn start_tls() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(
            status.success(),
            "openssl could not make a test certificate"
        );
        let tls_port = free_port();
        let mut server = RedisServer {
            port: free_port(),
            dir,
            persistence: Persistence::None,
            extra_args: vec![
                "--tls-port".into(),
                tls_port.to_string(),
                "--tls-cert-file".into(),
                cert.display().to_string(),
                "--tls-key-file".into(),
                key.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            tls_port: Some(tls_port),
            process: None,
        };
        server.launch();
        server
    }

    /// `rediss://127.0.0.1:<tls port>/#insecure` for a server from [`start_tls`](Self::start_tls)
    /// (`#insecure`: the certificate is self-signed).
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("started with start_tls");
        format!("rediss://127.0.0.1:{port}/#insecure")
    }

    fn launch(&mut self) {
        let mut command = Command::new(redis_server_binary());
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--protected-mode",
                "no",
            ])
            .args(["--daemonize", "no", "--logfile", ""])
            .arg("--dir")
            .arg(self.dir.path());
        match self.persistence {
            Persistence::None => command.args(["--appendonly", "no"]),
            Persistence::AofAlways => {
                command.args(["--appendonly", "yes", "--appendfsync", "always"])
            }
        };
        command.args(&self.extra_args);
        // redis-server logs to stdout; keep it out of the test output unless it fails.
        let process = Process::spawn("redis-server", command).expect("redis-server starts");
        self.process = Some(process);
        wait_for_ping(self.port);
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's working directory (AOF and cluster files live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id of the running server.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("running").pid()
    }

    /// SIGKILL: the server dies without saving.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// SIGSTOP: the server freezes; connections stay open but nothing is answered.
    pub fn pause(&self) {
        self.process
            .as_ref()
            .expect("running")
            .pause()
            .expect("SIGSTOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.process
            .as_ref()
            .expect("running")
            .resume()
            .expect("SIGCONT");
    }

    /// Kills the server (if running) and starts it again on the same port and directory, so
    /// AOF persistence, when enabled, carries the data over.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Sends one command (inline protocol) and returns the raw reply, for test setup.
    pub fn command(&self, args: &[&str]) -> String {
        raw_command(self.port, args)
    }
}

/// `redis-server` from `$REDIS_SERVER`, else the PATH.
fn redis_server_binary() -> PathBuf {
    std::env::var_os("REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

fn wait_for_ping(port: u16) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        // A server with `requirepass` answers NOAUTH: it is up all the same.
        if let Ok(reply) = try_raw_command(port, &["PING"])
            && (reply.starts_with("+PONG") || reply.starts_with("-NOAUTH"))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server on port {port} did not answer PING within {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn raw_command(port: u16, args: &[&str]) -> String {
    try_raw_command(port, args).unwrap_or_else(|e| panic!("redis on port {port}: {e}"))
}

/// Sends a RESP array command and reads one reply (enough for test setup, not a client).
fn try_raw_command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        reply.extend_from_slice(&buf[..n]);
        if n == 0 || reply_complete(&reply) {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

fn reply_complete(reply: &[u8]) -> bool {
    match reply.first() {
        Some(b'$') => {
            let text = String::from_utf8_lossy(reply);
            let Some((header, body)) = text.split_once("\r\n") else {
                return false;
            };
            match header[1..].parse::<i64>() {
                Ok(len) if len < 0 => true,
                Ok(len) => body.len() >= len as usize + 2,
                Err(_) => true,
            }
        }
        Some(_) => reply.ends_with(b"\r\n"),
        None => false,
    }
}

/// N independent masters, as Redlock uses them.
#[derive(Debug)]
pub struct RedisMasters {
    /// The servers, each on its own port.
    pub servers: Vec<RedisServer>,
}

impl RedisMasters {
    /// Starts `n` independent servers without persistence.
    pub fn start(n: usize) -> RedisMasters {
        RedisMasters {
            servers: (0..n).map(|_| RedisServer::start()).collect(),
        }
    }

    /// The `host:port` of each master, comma-separated.
    pub fn hosts(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A Redis Cluster of 3 masters (no replicas) on free ports.
#[derive(Debug)]
pub struct RedisCluster {
    /// The masters.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts 3 cluster-enabled servers and joins them with `redis-cli --cluster create`,
    /// then waits for `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                // An explicit bus port: the default, port + 10000, is past 65535 (and the
                // server refuses to start) for a fifth of Linux's ephemeral range, and may be
                // taken.
                let bus = free_port().to_string();
                RedisServer::start_with(
                    Persistence::None,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        "2000",
                        "--cluster-port",
                        &bus,
                    ],
                )
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let output = create.output().expect("redis-cli runs");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let ready = crate::wait_until(START_TIMEOUT, || {
            nodes
                .iter()
                .all(|n| n.command(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
        assert!(ready, "the redis cluster never reached cluster_state:ok");
        RedisCluster { nodes }
    }

    /// The seed nodes, comma-separated `host:port`.
    pub fn hosts(&self) -> String {
        self.nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_server_restarts_with_aof_and_loses_data_without() {
        let mut plain = RedisServer::start();
        assert!(plain.command(&["SET", "k", "v"]).starts_with("+OK"));
        plain.restart();
        assert_eq!(plain.command(&["GET", "k"]), "$-1\r\n");

        let mut durable = RedisServer::start_with(Persistence::AofAlways, &[]);
        assert!(durable.command(&["SET", "k", "v"]).starts_with("+OK"));
        durable.restart();
        assert_eq!(durable.command(&["GET", "k"]), "$1\r\nv\r\n");
    }

    #[test]
    fn cluster_forms() {
        let cluster = RedisCluster::start();
        assert_eq!(cluster.nodes.len(), 3);
        assert!(
            cluster.nodes[0]
                .command(&["CLUSTER", "INFO"])
                .contains("cluster_known_nodes:3")
        );
    }
}
