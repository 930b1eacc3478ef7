//! Real `etcd` servers on free ports: one member, or a 3-member cluster whose members can be
//! killed, paused and restarted one at a time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Process, free_port};

/// How long a member gets to become healthy before the test fails loudly.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One etcd member: its ports, data directory and process (killed when dropped).
pub struct EtcdMember {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    initial_cluster: String,
    cluster_token: String,
    process: Option<Process>,
}

impl std::fmt::Debug for EtcdMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdMember")
            .field("name", &self.name)
            .field("client_port", &self.client_port)
            .field("running", &self.process.is_some())
            .finish()
    }
}

impl EtcdMember {
    fn launch(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new(etcd_binary());
        command
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.cluster_token])
            // Fast elections keep failover tests short; the minimum lease TTL follows
            // (1.5 × election timeout).
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "error", "--logger", "zap"]);
        // etcd logs to stderr, which the test output shows on failure.
        self.process = Some(Process::spawn("etcd", command).expect("etcd starts"));
    }

    /// `http://127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Whether the member answers `/health` with `true`.
    pub fn healthy(&self) -> bool {
        http_get(self.client_port, "/health").is_some_and(|body| body.contains("\"true\""))
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.healthy() {
            if let Some(status) = self
                .process
                .as_mut()
                .and_then(|p| p.wait_exit(Duration::ZERO))
            {
                panic!(
                    "etcd member {} exited ({status}) before becoming healthy on port {}",
                    self.name, self.client_port
                );
            }
            assert!(
                Instant::now() < deadline,
                "etcd member {} did not become healthy on port {} within {START_TIMEOUT:?}",
                self.name,
                self.client_port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A single etcd server or a cluster of members on 127.0.0.1, killed when dropped.
#[derive(Debug)]
pub struct Etcd {
    members: Vec<EtcdMember>,
    _dir: tempfile::TempDir,
}

/// One etcd server (a one-member cluster).
pub type EtcdServer = Etcd;

/// A 3-member etcd cluster.
pub type EtcdCluster = Etcd;

impl Etcd {
    /// Starts one etcd server. Panics with the reason if it cannot start.
    pub fn start() -> Etcd {
        Self::start_members(1)
    }

    /// Starts a 3-member cluster and waits until every member is healthy.
    pub fn start_cluster() -> Etcd {
        Self::start_members(3)
    }

    /// Starts `count` members forming one cluster.
    pub fn start_members(count: usize) -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        let ports: Vec<(u16, u16)> = (0..count).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<EtcdMember> = ports
            .iter()
            .enumerate()
            .map(|(i, &(client_port, peer_port))| EtcdMember {
                name: format!("m{i}"),
                client_port,
                peer_port,
                data_dir: dir.path().join(format!("m{i}")),
                initial_cluster: initial_cluster.clone(),
                cluster_token: format!("distlock-{}", ports[0].1),
                process: None,
            })
            .collect();
        for member in &mut members {
            member.launch();
        }
        for member in &mut members {
            member.wait_ready();
        }
        Etcd { members, _dir: dir }
    }

    /// `127.0.0.1:p1,127.0.0.1:p2,...`: every member's client address.
    pub fn hosts(&self) -> String {
        self.members
            .iter()
            .map(EtcdMember::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `etcd://<hosts>/`: a distlock URL for this server or cluster.
    pub fn url(&self) -> String {
        format!("etcd://{}/", self.hosts())
    }

    /// `http://127.0.0.1:p1,...`: the `--endpoints` value for `etcdctl`.
    pub fn etcdctl_endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://{}", m.endpoint()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The members.
    pub fn members(&self) -> &[EtcdMember] {
        &self.members
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.members[i].process.take() {
            process.kill();
        }
    }

    /// SIGSTOPs member `i`.
    pub fn pause(&self, i: usize) {
        if let Some(process) = &self.members[i].process {
            process.pause().expect("SIGSTOP etcd");
        }
    }

    /// SIGCONTs member `i` after [`pause`](Self::pause).
    pub fn resume(&self, i: usize) {
        if let Some(process) = &self.members[i].process {
            process.resume().expect("SIGCONT etcd");
        }
    }

    /// Kills member `i` if it runs, starts it again on the same ports and data directory,
    /// and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.members[i].launch();
        self.members[i].wait_ready();
    }

    /// Runs `etcdctl` against this cluster with `args`; returns its output (stdout + stderr).
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.etcdctl_endpoints())
            .args(args)
            .output()
            .expect("etcdctl runs")
    }
}

fn etcd_binary() -> String {
    std::env::var("DISTLOCK_ETCD").unwrap_or_else(|_| "etcd".to_owned())
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

impl EtcdMember {
    /// Whether this member is the cluster's leader right now (its `/metrics` report
    /// `etcd_server_is_leader 1`); `false` when it does not answer.
    pub fn is_leader(&self) -> bool {
        http_get(self.client_port, "/metrics")
            .is_some_and(|body| body.lines().any(|l| l.trim() == "etcd_server_is_leader 1"))
    }
}
