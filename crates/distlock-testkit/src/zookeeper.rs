//! Real ZooKeeper servers on free ports (Debian's `zookeeper` package on Java): standalone,
//! or a 3-node ensemble whose nodes can be killed, paused and restarted one at a time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Process, free_port};

/// How long a server gets to answer `ruok` before the test fails loudly (the JVM is slow).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The tick: sessions may last 2 to 20 ticks (0.5 s to 5 s), so expiry tests stay short.
const TICK_MS: u64 = 250;

/// One ZooKeeper node.
pub struct ZkNode {
    id: usize,
    client_port: u16,
    dir: PathBuf,
    process: Option<Process>,
}

impl std::fmt::Debug for ZkNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkNode")
            .field("id", &self.id)
            .field("client_port", &self.client_port)
            .field("running", &self.process.is_some())
            .finish()
    }
}

impl ZkNode {
    fn launch(&mut self) {
        let mut command = Command::new(java_binary());
        command
            .arg("-cp")
            .arg(classpath())
            .args([
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Dzookeeper.admin.enableServer=false",
                "-Dzookeeper.4lw.commands.whitelist=ruok,srvr",
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            ])
            .arg(self.dir.join("zoo.cfg"));
        self.process = Some(Process::spawn("zookeeper", command).expect("java starts zookeeper"));
    }

    /// `127.0.0.1:<client port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Whether the node serves clients (`srvr` answers with a mode, not "not currently
    /// serving").
    pub fn serving(&self) -> bool {
        four_letter(self.client_port, "srvr").is_some_and(|s| s.contains("Mode:"))
    }

    /// The node's role as `srvr` reports it (`standalone`, `leader`, `follower`), or `None`
    /// while it does not serve.
    pub fn mode(&self) -> Option<String> {
        let answer = four_letter(self.client_port, "srvr")?;
        let line = answer.lines().find_map(|l| l.strip_prefix("Mode:"))?;
        Some(line.trim().to_owned())
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.serving() {
            assert!(
                Instant::now() < deadline,
                "zookeeper node {} did not serve on port {} within {START_TIMEOUT:?} \
                 (is the `zookeeper` package installed? java at {:?}, classpath {:?})",
                self.id,
                self.client_port,
                java_binary(),
                classpath()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A standalone ZooKeeper server or an ensemble on 127.0.0.1, killed when dropped.
#[derive(Debug)]
pub struct ZooKeeper {
    nodes: Vec<ZkNode>,
    dir: Option<tempfile::TempDir>,
}

impl ZooKeeper {
    /// Starts a standalone server. Panics with the reason if it cannot start.
    pub fn start() -> ZooKeeper {
        Self::start_nodes(1)
    }

    /// Starts a 3-node ensemble and waits until every node serves.
    pub fn start_ensemble() -> ZooKeeper {
        Self::start_nodes(3)
    }

    fn start_nodes(count: usize) -> ZooKeeper {
        let dir = tempfile::tempdir().expect("temp dir for zookeeper");
        let ports: Vec<(u16, u16, u16)> = (0..count)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut nodes = Vec::new();
        for (i, &(client_port, _, _)) in ports.iter().enumerate() {
            let id = i + 1;
            let node_dir = dir.path().join(format!("node{id}"));
            std::fs::create_dir_all(node_dir.join("data")).expect("zookeeper data dir");
            let mut cfg = format!(
                "tickTime={TICK_MS}\ninitLimit=40\nsyncLimit=10\nmaxSessionTimeout={}\nmaxClientCnxns=0\n\
                 dataDir={}\nclientPort={client_port}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr\n",
                TICK_MS * 20,
                node_dir.join("data").display()
            );
            if count > 1 {
                std::fs::write(node_dir.join("data").join("myid"), format!("{id}\n"))
                    .expect("myid");
                for (j, &(_, quorum, election)) in ports.iter().enumerate() {
                    cfg.push_str(&format!("server.{}=127.0.0.1:{quorum}:{election}\n", j + 1));
                }
            }
            std::fs::write(node_dir.join("zoo.cfg"), cfg).expect("zoo.cfg");
            nodes.push(ZkNode {
                id,
                client_port,
                dir: node_dir,
                process: None,
            });
        }
        for node in &mut nodes {
            node.launch();
        }
        for node in &nodes {
            node.wait_ready();
        }
        ZooKeeper {
            nodes,
            dir: Some(dir),
        }
    }

    /// `127.0.0.1:p1,127.0.0.1:p2,...`: the connect string.
    pub fn hosts(&self) -> String {
        self.nodes
            .iter()
            .map(ZkNode::address)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `zk://<hosts>/`: a distlock URL for this server or ensemble.
    pub fn url(&self) -> String {
        format!("zk://{}/", self.hosts())
    }

    /// The nodes.
    pub fn nodes(&self) -> &[ZkNode] {
        &self.nodes
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.nodes[i].process.take() {
            process.kill();
        }
    }

    /// SIGSTOPs node `i`.
    pub fn pause(&self, i: usize) {
        if let Some(process) = &self.nodes[i].process {
            process.pause().expect("SIGSTOP zookeeper");
        }
    }

    /// SIGCONTs node `i` after [`pause`](Self::pause).
    pub fn resume(&self, i: usize) {
        if let Some(process) = &self.nodes[i].process {
            process.resume().expect("SIGCONT zookeeper");
        }
    }

    /// Kills every node and removes the data directories, for a server kept in a `static`
    /// (which is never dropped): call it from an exit hook. Idempotent.
    pub fn shutdown(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        drop(self.dir.take());
    }

    /// Kills node `i` if it runs, starts it again with the same configuration and data, and
    /// waits until it serves.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.nodes[i].launch();
        self.nodes[i].wait_ready();
    }
}

fn java_binary() -> String {
    std::env::var("DISTLOCK_JAVA").unwrap_or_else(|_| "java".to_owned())
}

/// Debian's zookeeper.jar names its dependencies in its manifest's Class-Path.
fn classpath() -> String {
    std::env::var("DISTLOCK_ZOOKEEPER_CLASSPATH")
        .unwrap_or_else(|_| "/usr/share/java/zookeeper.jar".to_owned())
}

fn four_letter(port: u16, word: &str) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(word.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// The classpath of Apache Curator as Debian packages it (`libcurator-recipes-java`) with what
/// it needs; `DISTLOCK_CURATOR_CLASSPATH` overrides it.
pub fn curator_classpath() -> String {
    std::env::var("DISTLOCK_CURATOR_CLASSPATH").unwrap_or_else(|_| {
        [
            "curator-recipes",
            "curator-framework",
            "curator-client",
            "zookeeper",
            "zookeeper-jute",
            "guava",
            "slf4j-api",
            "slf4j-nop",
        ]
        .map(|jar| format!("/usr/share/java/{jar}.jar"))
        .join(":")
    })
}

/// Compiles one Java source against [`curator_classpath`] into a new temporary directory.
/// Returns the directory (the classes live as long as it does) and the classpath to run the
/// program with. `Err` says why `javac` failed.
pub fn compile_curator_program(
    source: &std::path::Path,
) -> Result<(tempfile::TempDir, String), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
    let out = Command::new("javac")
        .arg("-cp")
        .arg(curator_classpath())
        .arg("-d")
        .arg(dir.path())
        .arg(source)
        .output()
        .map_err(|e| {
            format!("cannot run javac ({e}); scripts/install-test-deps installs a JDK and Curator")
        })?;
    if !out.status.success() {
        return Err(format!(
            "javac {} failed (is libcurator-recipes-java installed?): {}",
            source.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let classpath = format!("{}:{}", dir.path().display(), curator_classpath());
    Ok((dir, classpath))
}
