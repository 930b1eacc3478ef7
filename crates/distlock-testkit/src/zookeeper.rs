//! Real ZooKeeper servers on free ports (Debian's `zookeeper` package on Java): standalone,
//! or a 3-node ensemble whose nodes can be killed, paused and restarted one at a time, and a
//! standalone server with a TLS client port ([`ZooKeeper::start_tls`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
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
    /// Whether the node serves TLS (Netty, with the extra Netty jars on the classpath).
    tls: bool,
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
    /// The classpath this node runs with: TLS needs extra jars.
    fn classpath(&self) -> String {
        if self.tls {
            tls_classpath()
        } else {
            classpath()
        }
    }

    fn launch(&mut self) {
        let mut command = Command::new(java_binary());
        command
            .arg("-cp")
            .arg(self.classpath())
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

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.serving() {
            // A JVM that cannot start (no zookeeper.jar) exits at once: say so now, not after
            // the whole start timeout.
            if let Some(status) = self
                .process
                .as_mut()
                .and_then(|p| p.wait_exit(Duration::ZERO))
            {
                panic!(
                    "zookeeper node {} exited ({status}) before serving (is the `zookeeper` \
                     package installed? classpath {:?})",
                    self.id,
                    self.classpath()
                );
            }
            assert!(
                Instant::now() < deadline,
                "zookeeper node {} did not serve on port {} within {START_TIMEOUT:?} \
                 (is the `zookeeper` package installed? java at {:?}, classpath {:?})",
                self.id,
                self.client_port,
                java_binary(),
                self.classpath()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A standalone ZooKeeper server or an ensemble on 127.0.0.1, killed when dropped.
#[derive(Debug)]
pub struct ZooKeeper {
    nodes: Vec<ZkNode>,
    tls: Option<TlsFiles>,
    dir: Option<tempfile::TempDir>,
}

/// The TLS side of a server from [`ZooKeeper::start_tls`]: its port and the PEM files made
/// for it.
#[derive(Debug, Clone)]
struct TlsFiles {
    secure_port: u16,
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
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

    /// Starts a standalone server that also serves TLS on a second client port (Netty,
    /// `secureClientPort`), with a throwaway CA and a server certificate for `127.0.0.1` and
    /// `localhost` made by the `openssl` command in its directory. Clients need no
    /// certificate. Panics with the reason if it cannot start.
    pub fn start_tls() -> ZooKeeper {
        Self::start_tls_server(false)
    }

    /// [`start_tls`](Self::start_tls), but the server requires a client certificate signed
    /// by the same CA: use [`client_cert`](Self::client_cert) and
    /// [`client_key`](Self::client_key).
    pub fn start_tls_client_auth() -> ZooKeeper {
        Self::start_tls_server(true)
    }

    fn start_tls_server(client_auth: bool) -> ZooKeeper {
        let dir = tempfile::tempdir().expect("temp dir for zookeeper");
        let certs = dir.path().join("certs");
        std::fs::create_dir_all(&certs).expect("zookeeper certs dir");
        make_certificates(&certs);
        let tls = TlsFiles {
            secure_port: free_port(),
            ca: certs.join("ca.pem"),
            client_cert: certs.join("client.pem"),
            client_key: certs.join("client.key"),
        };
        let extra = format!(
            "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n\
             secureClientPort={}\nsecureClientPortAddress=127.0.0.1\n\
             ssl.keyStore.location={}\nssl.keyStore.type=PEM\n\
             ssl.trustStore.location={}\nssl.trustStore.type=PEM\n\
             ssl.clientAuth={}\n",
            tls.secure_port,
            certs.join("server-keystore.pem").display(),
            tls.ca.display(),
            if client_auth { "need" } else { "none" },
        );
        let mut zookeeper = Self::start_in(dir, 1, Some(&extra));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", tls.secure_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "zookeeper serves plaintext on port {} but not TLS on port {} within \
                 {START_TIMEOUT:?} (Netty jars on the classpath {:?}?)",
                zookeeper.nodes[0].client_port,
                tls.secure_port,
                tls_classpath()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        zookeeper.tls = Some(tls);
        zookeeper
    }

    fn start_nodes(count: usize) -> ZooKeeper {
        let dir = tempfile::tempdir().expect("temp dir for zookeeper");
        Self::start_in(dir, count, None)
    }

    /// Starts `count` nodes in `dir`; `tls` is extra `zoo.cfg` text that makes them serve TLS.
    fn start_in(dir: tempfile::TempDir, count: usize, tls: Option<&str>) -> ZooKeeper {
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
            if let Some(extra) = tls {
                cfg.push_str(extra);
            }
            std::fs::write(node_dir.join("zoo.cfg"), cfg).expect("zoo.cfg");
            nodes.push(ZkNode {
                id,
                client_port,
                dir: node_dir,
                tls: tls.is_some(),
                process: None,
            });
        }
        for node in &mut nodes {
            node.launch();
        }
        for node in &mut nodes {
            node.wait_ready();
        }
        ZooKeeper {
            nodes,
            tls: None,
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

    fn tls(&self) -> &TlsFiles {
        self.tls
            .as_ref()
            .expect("a server from ZooKeeper::start_tls or start_tls_client_auth")
    }

    /// `127.0.0.1:<TLS client port>` of a server from [`start_tls`](Self::start_tls). Panics
    /// for a server without TLS.
    pub fn tls_hosts(&self) -> String {
        format!("127.0.0.1:{}", self.tls().secure_port)
    }

    /// The PEM file of the CA that signed the server certificate (and the client
    /// certificate). Panics for a server without TLS.
    pub fn ca_path(&self) -> &Path {
        &self.tls().ca
    }

    /// A PEM client certificate signed by the CA, for
    /// [`start_tls_client_auth`](Self::start_tls_client_auth). Panics for a server without TLS.
    pub fn client_cert(&self) -> &Path {
        &self.tls().client_cert
    }

    /// The PEM (PKCS#8) private key of [`client_cert`](Self::client_cert).
    pub fn client_key(&self) -> &Path {
        &self.tls().client_key
    }

    /// `zks://127.0.0.1:<TLS port>/?ca=<CA file>`: a distlock URL that trusts this server's
    /// CA. Panics for a server without TLS.
    pub fn tls_url(&self) -> String {
        format!(
            "zks://{}/?ca={}",
            self.tls_hosts(),
            self.ca_path().display()
        )
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

/// [`classpath`] and the Netty jars that TLS needs but `zookeeper.jar`'s manifest does not
/// name (`SslHandler` lives in netty-codec). `DISTLOCK_ZOOKEEPER_CLASSPATH` overrides it too.
fn tls_classpath() -> String {
    std::env::var("DISTLOCK_ZOOKEEPER_CLASSPATH").unwrap_or_else(|_| {
        let mut path = classpath();
        for jar in [
            "netty-codec",
            "netty-resolver",
            "netty-transport-native-unix-common",
        ] {
            path.push_str(&format!(":/usr/share/java/{jar}.jar"));
        }
        path
    })
}

/// Makes, in `dir`, with the `openssl` command: a CA (`ca.pem`), a server certificate for
/// IP 127.0.0.1 and DNS localhost with its key (`server-keystore.pem`, key then chain, as
/// ZooKeeper's PEM key store takes it), and a client certificate (`client.pem`,
/// `client.key`). Panics with openssl's output if it fails.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run openssl ({e}); it makes the TLS test certificates")
            });
        assert!(
            out.status.success(),
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let rsa = ["-newkey", "rsa:2048", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &rsa,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=distlock test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!(
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n\
                 basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
            ),
        )
        .expect("openssl extensions file");
        let (key, csr, pem, ext, subject) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
            format!("/CN=distlock test {name}"),
        );
        openssl(
            &[
                &["req"][..],
                &rsa,
                &["-keyout", &key, "-out", &csr, "-subj", &subject],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
    let key = std::fs::read_to_string(dir.join("server.key")).expect("server key");
    let cert = std::fs::read_to_string(dir.join("server.pem")).expect("server certificate");
    std::fs::write(dir.join("server-keystore.pem"), key + &cert).expect("server key store");
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
