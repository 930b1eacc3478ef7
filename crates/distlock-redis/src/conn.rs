//! Connections: one multiplexed RESP3 connection per node, shared by every lock and waiter of
//! a backend, carrying both the scripts and the pub/sub notifications (push messages).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use distlock_core::{Error, ErrorKind, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, PushInfo, RedisError, Script, ToRedisArgs, Value};

use crate::BACKEND;
use crate::config::{RedisConfig, Topology};

/// One logical connection: a single server or a whole cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// One `EVALSHA` of a script, its keys and arguments written straight into the command's
/// buffer: redis-rs' `ScriptInvocation` allocates each argument on its own and then copies them
/// all, on every lock operation.
pub(crate) struct ScriptCall<'a> {
    script: &'a Script,
    cmd: Cmd,
}

impl<'a> ScriptCall<'a> {
    /// A call of `script` with `keys` (`KEYS[1..]`); arguments follow with [`arg`](Self::arg).
    pub(crate) fn new<K: AsRef<str>>(script: &'a Script, keys: &[K]) -> Self {
        // Room for the keys and the largest argument list (the acquire script's five, whose
        // owner record is a few hundred bytes), so the buffers are not grown and copied on
        // the way.
        let key_bytes: usize = keys.iter().map(|k| k.as_ref().len()).sum();
        let mut cmd = Cmd::with_capacity(3 + keys.len() + 5, 64 + key_bytes + 512);
        cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys.len());
        for key in keys {
            cmd.arg(key.as_ref());
        }
        ScriptCall { script, cmd }
    }

    /// Appends an argument (`ARGV[n]`).
    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.cmd.arg(arg);
        self
    }
}

impl Conn {
    /// Runs a script call, loading the script and sending the call again on `NOSCRIPT` (a
    /// server restarted, or its script cache flushed).
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        call: &ScriptCall<'_>,
    ) -> redis::RedisResult<T> {
        self.invoke_with(call, false).await
    }

    /// As [`invoke`](Self::invoke), but on a single server with a `PING` ahead of the call in
    /// the same write, so that the hand-off notifications the script publishes are sent before
    /// this call's reply. Redis writes out the clients with new output last in, first out; the
    /// PING's reply enters this connection in that list before the script runs, so the waiter
    /// the lock goes to is written to (and woken) first, instead of after the releasing
    /// process, which on a busy machine may take the CPU the waiter needs. Costs one PING, so
    /// it is meant for releases that likely hand off.
    pub(crate) async fn invoke_waking_first<T: FromRedisValue>(
        &self,
        call: &ScriptCall<'_>,
    ) -> redis::RedisResult<T> {
        self.invoke_with(call, true).await
    }

    async fn invoke_with<T: FromRedisValue>(
        &self,
        call: &ScriptCall<'_>,
        ping_first: bool,
    ) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => invoke_on(&mut c.clone(), call, ping_first).await,
            // A cluster pipeline would route the key-less PING on its own.
            Conn::Cluster(c) => invoke_on(&mut c.clone(), call, false).await,
        }
    }

    /// Every key matching `pattern`, from every master.
    pub(crate) async fn scan(&self, pattern: &str) -> redis::RedisResult<Vec<String>> {
        match self {
            Conn::Single(c) => scan_one(&mut c.clone(), pattern).await,
            Conn::Cluster(c) => {
                use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                let mut conn = c.clone();
                let slots: Value = conn
                    .route_command(
                        redis::cmd("CLUSTER").arg("SLOTS").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    )
                    .await?;
                let mut masters: Vec<(String, u16)> = Vec::new();
                if let Value::Array(ranges) = slots {
                    for range in ranges {
                        if let Value::Array(fields) = range
                            && let Some(Value::Array(master)) = fields.get(2)
                            && let (Some(host), Some(port)) = (master.first(), master.get(1))
                        {
                            let host = String::from_redis_value(host.clone())?;
                            let port = u16::from_redis_value(port.clone())?;
                            if !masters.contains(&(host.clone(), port)) {
                                masters.push((host, port));
                            }
                        }
                    }
                }
                let mut keys = Vec::new();
                for (host, port) in masters {
                    let mut cursor: u64 = 0;
                    loop {
                        let reply: (u64, Vec<String>) = redis::FromRedisValue::from_redis_value(
                            conn.route_command(
                                redis::cmd("SCAN")
                                    .arg(cursor)
                                    .arg("MATCH")
                                    .arg(pattern)
                                    .arg("COUNT")
                                    .arg(1000)
                                    .clone(),
                                RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                                    host: host.clone(),
                                    port,
                                }),
                            )
                            .await?,
                        )?;
                        keys.extend(reply.1);
                        cursor = reply.0;
                        if cursor == 0 {
                            break;
                        }
                    }
                }
                Ok(keys)
            }
        }
    }
}

async fn invoke_on<C, T>(
    conn: &mut C,
    call: &ScriptCall<'_>,
    ping_first: bool,
) -> redis::RedisResult<T>
where
    C: redis::aio::ConnectionLike + Send,
    T: FromRedisValue,
{
    match send(conn, call, ping_first).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            call.script.load_async(conn).await?;
            send(conn, call, ping_first).await
        }
        other => other,
    }
}

/// Sends `call`, behind a `PING` whose reply is dropped when `ping_first`.
async fn send<C, T>(conn: &mut C, call: &ScriptCall<'_>, ping_first: bool) -> redis::RedisResult<T>
where
    C: redis::aio::ConnectionLike + Send,
    T: FromRedisValue,
{
    if !ping_first {
        return call.cmd.query_async(conn).await;
    }
    let (reply,): (T,) = redis::pipe()
        .cmd("PING")
        .ignore()
        .add_command(call.cmd.clone())
        .query_async(conn)
        .await?;
    Ok(reply)
}

async fn scan_one(conn: &mut ConnectionManager, pattern: &str) -> redis::RedisResult<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            return Ok(keys);
        }
    }
}

/// Where the connections deliver push messages (with the node index), called on the
/// connection's own task so a hand-off wakes its waiter without a further task hop. Set once
/// the backend that handles them exists; pushes before that (no waiters yet) are dropped.
pub(crate) type PushSink = Arc<OnceLock<Box<dyn Fn(usize, PushInfo) + Send + Sync>>>;

/// Connects to every node of `config`, subscribes each connection to `channel` and checks the
/// user may run scripts.
pub(crate) async fn connect(
    config: &RedisConfig,
    channel: &str,
    sink: &PushSink,
) -> Result<Vec<Conn>> {
    let tx = sink;
    #[cfg(feature = "tls")]
    distlock_core::install_rustls_provider();
    let mut nodes = Vec::new();
    match config.topology {
        Topology::Single | Topology::Redlock => {
            for (index, url) in config.node_urls.iter().enumerate() {
                nodes.push(connect_single(config, url, index, tx).await?);
            }
        }
        Topology::Cluster => nodes.push(connect_cluster(config, tx).await?),
    }
    for node in &mut nodes {
        subscribe(node, channel)
            .await
            .map_err(|e| map_error(config, "subscribing to notifications", e))?;
        let scripts = crate::scripts::scripts();
        let _: i64 = node
            .invoke(&ScriptCall::new::<&str>(&scripts.probe, &[]))
            .await
            .map_err(|e| map_error(config, "checking that scripts may run", e))?;
        // Load the scripts now so the first acquire is one EVALSHA, not EVALSHA + NOSCRIPT +
        // SCRIPT LOAD + EVALSHA. (EVALSHA still reloads them after a server restart.)
        for script in [
            &scripts.acquire,
            &scripts.extend,
            &scripts.release,
            &scripts.inspect,
        ] {
            let loaded = match node {
                Conn::Single(c) => script.load_async(&mut c.clone()).await,
                Conn::Cluster(c) => script.load_async(&mut c.clone()).await,
            };
            loaded.map_err(|e| map_error(config, "loading scripts", e))?;
        }
    }
    Ok(nodes)
}

async fn subscribe(node: &mut Conn, channel: &str) -> redis::RedisResult<()> {
    match node {
        Conn::Single(c) => c.subscribe(channel).await,
        Conn::Cluster(c) => c.subscribe(channel).await,
    }
}

/// Hands one node's pushes to the sink, tagged with the node index.
struct Tagged {
    index: usize,
    sink: PushSink,
}

impl redis::aio::AsyncPushSender for Tagged {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        if let Some(handle) = self.sink.get() {
            handle(self.index, info);
        }
        Ok(())
    }
}

async fn connect_single(
    config: &RedisConfig,
    url: &str,
    index: usize,
    sink: &PushSink,
) -> Result<Conn> {
    let client = redis::Client::open(url).map_err(|e| {
        Error::new(
            ErrorKind::InvalidUrl,
            BACKEND,
            format!(
                "invalid URL {:?}: {}",
                config.display_url,
                e.detail().unwrap_or("unparseable")
            ),
        )
    })?;
    let manager_config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(config.response_timeout))
        .set_connection_timeout(Some(config.connect_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
        .set_push_sender(Tagged {
            index,
            sink: Arc::clone(sink),
        })
        .set_automatic_resubscription();
    // The manager retries a failed connect; bound the whole attempt so a server that is down
    // at start fails fast.
    let bound = config.connect_timeout * 2 + Duration::from_millis(500);
    match tokio::time::timeout(
        bound,
        ConnectionManager::new_with_config(client, manager_config),
    )
    .await
    {
        Ok(Ok(manager)) => Ok(Conn::Single(manager)),
        Ok(Err(e)) => Err(map_error(config, "connecting", e)),
        Err(_) => Err(Error::new(
            ErrorKind::Connection,
            BACKEND,
            format!(
                "connecting to {}: no answer within {}",
                config.display_url,
                humantime::format_duration(bound)
            ),
        )),
    }
}

async fn connect_cluster(config: &RedisConfig, sink: &PushSink) -> Result<Conn> {
    let client = ClusterClient::builder(config.node_urls.iter().map(String::as_str))
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(Tagged {
            index: 0,
            sink: Arc::clone(sink),
        })
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.response_timeout)
        .retries(2)
        .build()
        .map_err(|e| map_error(config, "configuring the cluster client", e))?;
    let bound = config.connect_timeout * 2 + Duration::from_millis(500);
    match tokio::time::timeout(bound, client.get_async_connection()).await {
        Ok(Ok(conn)) => Ok(Conn::Cluster(conn)),
        Ok(Err(e)) => Err(map_error(config, "connecting to the cluster", e)),
        Err(_) => Err(Error::new(
            ErrorKind::Connection,
            BACKEND,
            format!(
                "connecting to the cluster {}: no answer within {}",
                config.display_url,
                humantime::format_duration(bound)
            ),
        )),
    }
}

/// Turns a redis-rs error into distlock's, naming what was being done and the (redacted) URL.
pub(crate) fn map_error(config: &RedisConfig, doing: &str, error: RedisError) -> Error {
    let url = &config.display_url;
    if error.code() == Some("NOPERM") {
        return Error::new(
            ErrorKind::Backend,
            BACKEND,
            format!(
                "{doing} on {url}: permission denied; distlock runs Lua scripts and needs \
                 the EVAL and EVALSHA commands, plus the commands its scripts call on \
                 `distlock:*` keys and channels, for example `ACL SETUSER <user> +@scripting \
                 +@read +@write +publish +subscribe +time ~distlock:* &distlock:*`. \
                 Server said: {}",
                error.detail().unwrap_or("NOPERM")
            ),
        );
    }
    let kind = if error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_timeout()
        || error.is_unrecoverable_error()
        || error.is_cluster_error()
        || matches!(
            error.code(),
            Some(
                "LOADING"
                    | "TRYAGAIN"
                    | "CLUSTERDOWN"
                    | "MASTERDOWN"
                    | "READONLY"
                    | "WRONGPASS"
                    | "NOAUTH"
            )
        ) {
        ErrorKind::Connection
    } else {
        ErrorKind::Backend
    };
    Error::new(kind, BACKEND, format!("{doing} on {url}: {error}"))
}
