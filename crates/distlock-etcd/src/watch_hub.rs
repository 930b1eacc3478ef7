//! One watch stream per backend, shared by every waiter of the process.
//!
//! `Client::watch` opens a gRPC stream per call: with thousands of waiters that is thousands
//! of HTTP/2 streams on the connection, each with its own server-side state. Here each waiter
//! adds a watch, with an id of its own, to one stream that etcd multiplexes (client-chosen
//! watch ids: etcd 3.4 or newer); one reader task routes each answer to its waiter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use distlock_core::{Error, ErrorKind, Result};
use etcd_client::{Client, EventType, WatchOptions, WatchRequestSender, WatchResponseStream};
use tokio::sync::{mpsc, oneshot};

use crate::BACKEND;
use crate::backend::map_error;

/// Routes watches of many waiters over one stream, opened on first use and again after it
/// fails.
pub(crate) struct WatchHub {
    client: Client,
    open_timeout: Duration,
    next_id: AtomicI64,
    /// The current stream; replaced under this lock once it has failed.
    current: tokio::sync::Mutex<Option<HubStream>>,
}

/// One open stream: where to send requests, and who waits for what on it.
#[derive(Clone)]
struct HubStream {
    requests: mpsc::UnboundedSender<Request>,
    routes: Arc<StdMutex<Routes>>,
}

#[derive(Default)]
struct Routes {
    /// Set when the stream failed; nothing is added after that.
    failed: bool,
    /// Watch id → the waiter to wake.
    waiting: HashMap<i64, Route>,
}

/// How the reader tells one waiter that its watch is in place, and that it fired.
struct Route {
    established: Option<oneshot::Sender<()>>,
    fired: oneshot::Sender<Result<()>>,
}

enum Request {
    Add(String, WatchOptions),
    Cancel(i64),
}

/// A watch added to the hub; dropping it cancels the watch.
pub(crate) struct Subscription {
    id: i64,
    established: Option<oneshot::Receiver<()>>,
    fired: oneshot::Receiver<Result<()>>,
    stream: HubStream,
}

impl Subscription {
    /// Waits until etcd confirmed the watch: every event after this point will be seen.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub(crate) async fn established(&mut self) -> Result<()> {
        let Some(established) = self.established.as_mut() else {
            return Ok(());
        };
        match established.await {
            Ok(()) => {
                self.established = None;
                Ok(())
            }
            // The stream failed before confirming; `fired` carries why.
            Err(_) => self.fired().await.and(Err(stream_failed(
                "the watch stream closed before the watch was set up",
            ))),
        }
    }

    /// Waits until a delete under the watch happened (or etcd ended the watch, which also
    /// means "read again"); an error when the stream failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the subscription cancels the server-side watch.
    pub(crate) async fn fired(&mut self) -> Result<()> {
        match (&mut self.fired).await {
            Ok(outcome) => outcome,
            Err(_) => Err(stream_failed("the watch hub stopped")),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let still_waiting = self
            .stream
            .routes
            .lock()
            .unwrap()
            .waiting
            .remove(&self.id)
            .is_some();
        if still_waiting {
            let _ = self.stream.requests.send(Request::Cancel(self.id));
        }
    }
}

impl WatchHub {
    pub(crate) fn new(client: Client, open_timeout: Duration) -> Self {
        WatchHub {
            client,
            open_timeout,
            next_id: AtomicI64::new(1),
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// Adds a watch (`options` say the key or prefix, the start revision and the filters).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a watch added just before the future is dropped is cancelled by the
    /// reader when its answer comes (it has no route).
    pub(crate) async fn subscribe(&self, key: &str, options: WatchOptions) -> Result<Subscription> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let options = options.with_watch_id(id);
        let (wake, fired) = oneshot::channel();
        let (confirm, established) = oneshot::channel();
        let route = Route {
            established: Some(confirm),
            fired: wake,
        };
        let established = Some(established);
        let mut current = self.current.lock().await;
        if let Some(stream) = current.as_ref() {
            let mut routes = stream.routes.lock().unwrap();
            if !routes.failed {
                routes.waiting.insert(id, route);
                drop(routes);
                let stream = stream.clone();
                // A send error means the stream's sender task ended: the stream failed, and
                // the reader wakes this waiter with the error.
                let _ = stream.requests.send(Request::Add(key.to_owned(), options));
                return Ok(Subscription {
                    id,
                    established,
                    fired,
                    stream,
                });
            }
        }
        let stream = self.open(key, options, id, route).await?;
        *current = Some(stream.clone());
        Ok(Subscription {
            id,
            established,
            fired,
            stream,
        })
    }

    /// Opens a stream whose first watch is `first`, and starts its sender and reader tasks.
    async fn open(
        &self,
        key: &str,
        first: WatchOptions,
        id: i64,
        route: Route,
    ) -> Result<HubStream> {
        let mut client = self.client.clone();
        let opened = tokio::time::timeout(self.open_timeout, client.watch(key, Some(first)))
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Connection,
                    BACKEND,
                    format!(
                        "opening a watch stream: no answer within {:?}",
                        self.open_timeout
                    ),
                )
            })?
            .map_err(|error| map_error(error, "opening a watch stream"))?;
        let (sender, responses) = opened.split();
        let (requests, pending) = mpsc::unbounded_channel();
        let routes = Arc::new(StdMutex::new(Routes::default()));
        routes.lock().unwrap().waiting.insert(id, route);
        tokio::spawn(send_requests(sender, pending));
        tokio::spawn(read_responses(
            responses,
            Arc::clone(&routes),
            requests.clone(),
        ));
        Ok(HubStream { requests, routes })
    }
}

/// Sends the hub's requests in order, in a task of its own so that reading answers never
/// waits for a send.
async fn send_requests(
    mut sender: WatchRequestSender,
    mut pending: mpsc::UnboundedReceiver<Request>,
) {
    while let Some(request) = pending.recv().await {
        let sent = match request {
            Request::Add(key, options) => sender.watch(key, Some(options)).await,
            Request::Cancel(id) => sender.cancel(id).await,
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Routes answers to waiters until the stream ends, then fails everyone still waiting.
async fn read_responses(
    mut responses: WatchResponseStream,
    routes: Arc<StdMutex<Routes>>,
    requests: mpsc::UnboundedSender<Request>,
) {
    let why = loop {
        let response = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => break "the watch stream closed".to_owned(),
            Err(error) => break format!("the watch stream failed: {error}"),
        };
        let id = response.watch_id();
        if response.created() {
            let mut routes = routes.lock().unwrap();
            if let Some(confirm) = routes
                .waiting
                .get_mut(&id)
                .and_then(|r| r.established.take())
            {
                let _ = confirm.send(());
            }
        }
        let deleted = response
            .events()
            .iter()
            .any(|e| e.event_type() == EventType::Delete);
        if !(deleted || response.canceled()) {
            continue;
        }
        let route = routes.lock().unwrap().waiting.remove(&id);
        if !response.canceled() {
            // Fired, or abandoned by its waiter: either way the server may drop it.
            let _ = requests.send(Request::Cancel(id));
        }
        if let Some(route) = route {
            let _ = route.fired.send(Ok(()));
        }
    };
    let waiting = {
        let mut routes = routes.lock().unwrap();
        routes.failed = true;
        std::mem::take(&mut routes.waiting)
    };
    for (_, route) in waiting {
        let _ = route.fired.send(Err(stream_failed(&why)));
    }
}

fn stream_failed(why: &str) -> Error {
    Error::new(ErrorKind::Connection, BACKEND, why.to_owned())
}
