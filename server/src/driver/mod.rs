//! The driver: runs the core's ZEO [`Server`] state machine on a [`Net`] and on backends.
//!
//! One task (the one running [`Driver::run`]) owns the `Server`. It waits for the next event
//! (a connection accepted, bytes read, a disconnect, a backend outcome, the `poll_timeout`
//! timer, the shutdown signal), feeds it to the server, then drains every action: frames go to
//! the connection's writer task, closes to the writer (which writes what was queued before,
//! then shuts the socket down), backend requests to the storage's backend. Events already
//! queued are taken in a batch (`try_recv`) before sleeping again, so that a burst is handled
//! in one wake-up and the writers coalesce the frames it produces.
//!
//! I/O errors never panic: a failed read or write is a disconnect, a failed accept is logged.
//!
//! # Shutdown
//! When `shutdown` resolves: the listeners are dropped (unix socket files removed),
//! [`Server::begin_shutdown`] lets the commit in progress finish (or aborts it after
//! `grace`), and the loop runs on until [`Server::is_shut_down`] or until `grace` plus
//! [`SHUTDOWN_MARGIN`] has passed. The writers then get up to [`conn::CLOSE_FLUSH`] to send
//! their last frames, and the backends are handed back to the caller to be closed (synced).

mod conn;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use zeoraid_core::ids::ConnId;
use zeoraid_core::zeo::backend::{BackendOutcome, BackendReqId, BackendRequest};
use zeoraid_core::zeo::events::{Action, Now, ServerConfig, StorageIdx};
use zeoraid_core::zeo::server::Server;

use crate::backend::local::LocalBackend;
use crate::backend::Sink;
use crate::net::Net;
use conn::{ConnHandle, Out};

/// How long past the shutdown grace the driver waits for the server to finish.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(2);
/// Events handled at most per wake-up before the timers and the shutdown signal are looked at.
const EVENT_BATCH: usize = 1024;

/// Where the driver sends a storage's requests.
pub trait Backend: Send + 'static {
    /// Queues `request`; its outcome comes back through the sink the backend was given.
    fn submit(&self, id: BackendReqId, request: BackendRequest);
}

impl Backend for LocalBackend {
    fn submit(&self, id: BackendReqId, request: BackendRequest) {
        LocalBackend::submit(self, id, request);
    }
}

/// An input of the driver loop.
#[derive(Debug)]
pub(crate) enum Event {
    /// A connection was accepted (sent before any of its bytes).
    Connected {
        /// Its id.
        conn: ConnId,
        /// Its peer, for logs.
        peer: String,
        /// Its writer and reader controls.
        handle: ConnHandle,
    },
    /// Bytes arrived.
    Bytes {
        /// Connection.
        conn: ConnId,
        /// What was read.
        data: Bytes,
    },
    /// The connection is gone (end of stream, I/O error, or closed after `Action::Close`).
    /// May come twice (reader and writer); the second is ignored.
    Closed {
        /// Connection.
        conn: ConnId,
    },
    /// A backend answered.
    Backend {
        /// Storage.
        storage: StorageIdx,
        /// Request.
        id: BackendReqId,
        /// Outcome.
        outcome: BackendOutcome,
    },
}

/// The driver, before it runs: create it first, so that backends can be given its sinks.
pub struct Driver<N: Net> {
    net: N,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    max_output: usize,
}

impl<N: Net> std::fmt::Debug for Driver<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

impl<N: Net> Driver<N> {
    /// A driver on `net`.
    pub fn new(net: N) -> Driver<N> {
        let (tx, rx) = mpsc::unbounded_channel();
        Driver { net, tx, rx, max_output: crate::config::DEFAULT_MAX_OUTPUT }
    }

    /// Bytes that may wait to be written to one client before it is closed (it does not read
    /// its replies); a single message larger than this still goes out whole.
    pub fn set_max_output(&mut self, bytes: usize) {
        self.max_output = bytes;
    }

    /// The network (to bind listeners with).
    pub fn net(&self) -> &N {
        &self.net
    }

    /// The sink the backend of `storage` delivers its outcomes to (callable from any thread).
    pub fn sink(&self, storage: StorageIdx) -> Sink {
        let tx = self.tx.clone();
        Arc::new(move |id, outcome| {
            // After the driver has returned nobody waits for outcomes: dropping them is right.
            let _ = tx.send(Event::Backend { storage, id, outcome });
        })
    }

    /// Serves `listeners` until `shutdown` resolves and the shutdown completes (see the module
    /// doc); returns the backends, to be closed by the caller.
    pub async fn run<B: Backend>(
        self,
        cfg: ServerConfig,
        listeners: Vec<N::Listener>,
        backends: Vec<B>,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> Vec<B> {
        let Driver { net, tx, mut rx, max_output } = self;
        let start = Instant::now();
        let now = || Now { mono: start.elapsed(), wall: net.wall_clock() };
        let mut state = Loop {
            server: Server::new(cfg, now()),
            conns: BTreeMap::new(),
            backends,
            shutting_down: false,
            max_output,
            overflowed: Vec::new(),
        };
        let ids = Arc::new(AtomicU64::new(1));
        let mut acceptors: Vec<_> = listeners
            .into_iter()
            .map(|l| tokio::spawn(conn::accept_loop(l, tx.clone(), ids.clone())))
            .collect();
        drop(tx);
        tokio::pin!(shutdown);
        let mut deadline: Option<Instant> = None;
        loop {
            state.drain_actions();
            while !state.overflowed.is_empty() {
                for conn in std::mem::take(&mut state.overflowed) {
                    state.server.handle_disconnect(now(), conn);
                }
                state.drain_actions();
            }
            if let Some(d) = deadline {
                if state.server.is_shut_down() {
                    info!("shutdown complete");
                    break;
                }
                if Instant::now() >= d {
                    warn!(
                        "shutdown: grace passed with {} connection(s) left; closing them",
                        state.conns.len()
                    );
                    break;
                }
            }
            let wake = state.server.poll_timeout().map(|t| start + t);
            tokio::select! {
                biased;
                () = &mut shutdown, if deadline.is_none() => {
                    info!("shutting down: no new connections, {} open, grace {:.1}s", state.conns.len(), grace.as_secs_f64());
                    stop_accepting(&mut acceptors).await;
                    state.shutting_down = true;
                    state.server.begin_shutdown(now(), grace);
                    deadline = Some(Instant::now() + grace + SHUTDOWN_MARGIN);
                }
                ev = rx.recv() => {
                    let Some(ev) = ev else {
                        warn!("every event source is gone; stopping");
                        break;
                    };
                    state.handle(now(), ev);
                    for _ in 1..EVENT_BATCH {
                        let Ok(ev) = rx.try_recv() else { break };
                        state.drain_actions();
                        state.handle(now(), ev);
                    }
                }
                () = sleep_until(wake) => state.server.handle_timeout(now()),
                () = sleep_until(deadline) => {}
            }
        }
        stop_accepting(&mut acceptors).await;
        state.finish_connections().await;
        state.backends
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Stops the accept loops and waits for them, so that their listeners are dropped (and unix
/// socket files removed) before this returns.
async fn stop_accepting(acceptors: &mut Vec<tokio::task::JoinHandle<()>>) {
    for a in acceptors.iter() {
        a.abort();
    }
    for a in acceptors.drain(..) {
        let _ = a.await;
    }
}

/// The loop's state.
struct Loop<B> {
    server: Server,
    conns: BTreeMap<ConnId, ConnHandle>,
    backends: Vec<B>,
    shutting_down: bool,
    /// See [`Driver::set_max_output`].
    max_output: usize,
    /// Connections closed because their output piled up, to report to the server.
    overflowed: Vec<ConnId>,
}

impl<B: Backend> Loop<B> {
    fn handle(&mut self, now: Now, ev: Event) {
        match ev {
            Event::Connected { conn, peer, handle } => {
                let _g = handle.span.enter();
                if self.shutting_down {
                    debug!("accepted during shutdown; closed");
                    return; // dropping the handle ends both tasks
                }
                info!("connected");
                drop(_g);
                self.conns.insert(conn, handle);
                self.server.handle_connect(now, conn, &peer);
            }
            Event::Bytes { conn, data } => {
                if self.conns.contains_key(&conn) {
                    self.server.handle_bytes(now, conn, &data);
                }
            }
            Event::Closed { conn } => {
                if let Some(h) = self.conns.remove(&conn) {
                    h.span.in_scope(|| info!("disconnected"));
                    self.server.handle_disconnect(now, conn);
                }
            }
            Event::Backend { storage, id, outcome } => self.server.handle_backend(now, storage, id, outcome),
        }
    }

    /// Carries out every action the server has queued.
    fn drain_actions(&mut self) {
        while let Some(action) = self.server.poll_action() {
            match action {
                Action::Send { conn, bytes } => match self.conns.get(&conn) {
                    Some(h) => {
                        let before = h.queued.fetch_add(bytes.len(), Ordering::Relaxed);
                        if before > self.max_output {
                            // Its replies pile up unread: close it before it eats the memory.
                            if let Some(mut h) = self.conns.remove(&conn) {
                                h.span.in_scope(|| {
                                    warn!("closing: the client does not read its replies ({before} bytes waiting)")
                                });
                                h.stop = None;
                                h.writer_task.abort();
                                self.overflowed.push(conn);
                            }
                            continue;
                        }
                        let _ = h.writer.send(Out::Data(bytes));
                    }
                    None => debug!("{conn}: {} bytes for a connection that is gone", bytes.len()),
                },
                Action::Close { conn, reason } => match self.conns.get_mut(&conn) {
                    Some(h) => {
                        h.span.in_scope(|| info!("closing: {reason}"));
                        h.stop = None; // no more input
                        let _ = h.writer.send(Out::Close);
                    }
                    None => debug!("{conn}: close ({reason}) of a connection that is gone"),
                },
                Action::Backend { storage, id, request } => match self.backends.get(storage.0) {
                    Some(b) => b.submit(id, request),
                    None => {
                        error!("request {id:?} for storage {storage:?}, which does not exist (a core bug)")
                    }
                },
            }
        }
    }

    /// Closes what is left: every writer writes what was queued and shuts its socket down,
    /// within [`conn::CLOSE_FLUSH`] in all.
    async fn finish_connections(&mut self) {
        let writers: Vec<_> = std::mem::take(&mut self.conns)
            .into_values()
            .map(|h| {
                let _ = h.writer.send(Out::Close);
                h.writer_task
            })
            .collect();
        let all = async {
            for w in writers {
                let _ = w.await;
            }
        };
        if tokio::time::timeout(conn::CLOSE_FLUSH, all).await.is_err() {
            warn!("some connections did not take their last frames in time");
        }
    }
}

#[cfg(test)]
mod tests;
