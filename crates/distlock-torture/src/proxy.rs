//! A userspace TCP proxy on 127.0.0.1, one per client and server, so the controller can
//! partition one client from its server without nftables.
//!
//! A partition is a blackhole: while it lasts, bytes already in flight stay queued in the
//! proxy and new connections are accepted but not forwarded; when it heals, everything queued
//! is delivered late — as TCP retransmission delivers it after a real partition heals.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;

/// One listening proxy to one upstream address.
pub struct Proxy {
    port: u16,
    blackhole: Arc<AtomicBool>,
    heal: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream`.
    pub fn start(runtime: &Handle, upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let port = listener.local_addr()?.port();
        let blackhole = Arc::new(AtomicBool::new(false));
        let (heal, healed) = watch::channel(false);
        let flag = Arc::clone(&blackhole);
        let task = runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let flag = Arc::clone(&flag);
                let healed = healed.clone();
                tokio::spawn(async move {
                    wait_open(&flag, healed.clone()).await;
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = pump(cr, sw, Arc::clone(&flag), healed.clone());
                    let down = pump(sr, cw, flag, healed);
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
            }
        });
        Ok(Proxy {
            port,
            blackhole,
            heal,
            task,
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts (`true`) or heals (`false`) the partition.
    pub fn set_partitioned(&self, partitioned: bool) {
        self.blackhole.store(partitioned, Ordering::SeqCst);
        let _ = self.heal.send(partitioned);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_open(flag: &AtomicBool, mut healed: watch::Receiver<bool>) {
    while flag.load(Ordering::SeqCst) {
        let _ = tokio::time::timeout(Duration::from_millis(50), healed.changed()).await;
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    flag: Arc<AtomicBool>,
    healed: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // While partitioned, stop reading: what the peer sends waits (as unacknowledged
        // segments would) and arrives after the heal.
        wait_open(&flag, healed.clone()).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        wait_open(&flag, healed.clone()).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
