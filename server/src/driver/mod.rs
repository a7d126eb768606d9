//! The driver: runs the core's ZEO [`Server`] state machine and one RAID ([`Raid`]) per
//! storage on a [`Net`] and on backends.
//!
//! One task (the one running [`Driver::run`]) owns the `Server` and the RAIDs. It waits for the next event
//! (a connection accepted, bytes read, a disconnect, a backend outcome, the `poll_timeout`
//! timer, the shutdown signal), feeds it to the server, then drains every action: frames go to
//! the connection's writer task, closes to the writer (which writes what was queued before,
//! then shuts the socket down), the front's backend requests to the storage's RAID, whose
//! actions go on: `Submit` to one of its backends (whose outcomes come back tagged with the
//! storage and the backend), `Answer` to the front, `SaveState` to the storage's saver task
//! ([`saver`]: only the newest pending state is written; `StateSaved` comes back when it is
//! durable), `Disconnect` to the backend. Draining goes on until neither the front nor any RAID
//! has an action left. The wake-up is the earliest `poll_timeout` of the front and the RAIDs.
//! Admin requests ([`crate::admin`]) are handled here too, since the RAIDs live here. Events already
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
//! their last frames, the savers finish their last write, and the storages (RAIDs and
//! backends) are handed back to the caller, which closes the backends, then saves each RAID's
//! newest state.

mod conn;
mod progress;
mod raids;
mod saver;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use zeoraid_core::ids::{BackendId, ConnId};
use zeoraid_core::zeo::backend::{BackendEvent, BackendOutcome, BackendReqId, BackendRequest};
use zeoraid_core::zeo::events::{Action, Now, ServerConfig, StorageIdx};
use zeoraid_core::zeo::server::Server;

use crate::admin::{AdminReply, AdminRequest};
use crate::backend::local::LocalBackend;
use crate::backend::Sink;
use crate::net::Net;
use crate::storage::StorageDir;
use conn::{ConnHandle, Out};
pub use raids::{BackendSlot, Opened, Opener, StorageUnit};

/// How long past the shutdown grace the driver waits for the server to finish.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(2);
/// Events handled at most per wake-up before the timers and the shutdown signal are looked at.
const EVENT_BATCH: usize = 1024;

/// Where a backend reports its connection coming up or going down (callable from any thread).
pub type EventSink = Arc<dyn Fn(BackendEvent) + Send + Sync>;

/// One backend of a RAID, as the driver uses it.
pub trait Backend: Send + 'static {
    /// Queues `request`; its outcome comes back through the sink the backend was given.
    fn submit(&self, id: BackendReqId, request: BackendRequest);
    /// Drops the connection (a remote reconnects with backoff; a local backend has none).
    fn disconnect(&self) {}
}

impl<D: StorageDir + 'static> Backend for LocalBackend<D> {
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
        /// Backend.
        backend: BackendId,
        /// Request.
        id: BackendReqId,
        /// Outcome.
        outcome: BackendOutcome,
    },
    /// A backend's connection came up or went down.
    Connection {
        /// Storage.
        storage: StorageIdx,
        /// Backend.
        backend: BackendId,
        /// What happened.
        event: BackendEvent,
    },
    /// A storage's state `version` is durable.
    StateSaved {
        /// Storage.
        storage: StorageIdx,
        /// The version written.
        version: u64,
    },
    /// An admin request, answered through `reply`.
    Admin {
        /// The request.
        request: AdminRequest,
        /// Where the answer goes.
        reply: tokio::sync::oneshot::Sender<AdminReply>,
    },
}

/// The driver, before it runs: create it first, so that backends can be given its sinks.
pub struct Driver<N: Net> {
    net: N,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    max_output: usize,
    check_invariants: bool,
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
        Driver { net, tx, rx, max_output: crate::config::DEFAULT_MAX_OUTPUT, check_invariants: false }
    }

    /// Bytes that may wait to be written to one client before it is closed (it does not read
    /// its replies); a single message larger than this still goes out whole.
    pub fn set_max_output(&mut self, bytes: usize) {
        self.max_output = bytes;
    }

    /// Runs each RAID's invariant checker (`Raid::check`) after every step that gave actions;
    /// the first invariant found broken is logged at error and reported by `details` from then
    /// on. It costs CPU on every step: for tests and the simulation, off in production (where
    /// `details` runs the checker when asked).
    pub fn set_check_invariants(&mut self, on: bool) {
        self.check_invariants = on;
    }

    /// The network (to bind listeners with).
    pub fn net(&self) -> &N {
        &self.net
    }

    /// The sink backend `backend` of `storage` delivers its outcomes to (callable from any
    /// thread).
    pub fn sink(&self, storage: StorageIdx, backend: BackendId) -> Sink {
        sink(&self.tx, storage, backend)
    }

    /// Where backend `backend` of `storage` reports its connection events.
    pub fn event_sink(&self, storage: StorageIdx, backend: BackendId) -> EventSink {
        event_sink(&self.tx, storage, backend)
    }

    /// Where the admin endpoint sends its requests (answered by the running driver).
    pub fn admin_sender(&self) -> AdminSender {
        AdminSender(self.tx.clone())
    }

    /// Serves `listeners` until `shutdown` resolves and the shutdown completes (see the module
    /// doc); returns the storages, whose backends the caller closes (see [`raids::finish`]).
    ///
    /// `storages[i]` is the storage `StorageIdx(i)` of `cfg`; its RAID was created `start`
    /// ago (the driver's monotonic clock starts there, as the RAID's `Now::mono` did).
    /// `opener` opens the backends a `reload` adds.
    #[allow(clippy::too_many_arguments)]
    pub async fn run<B: Backend, O: Opener<B>>(
        self,
        cfg: ServerConfig,
        listeners: Vec<N::Listener>,
        storages: Vec<StorageUnit<B>>,
        opener: O,
        start: Instant,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> Vec<StorageUnit<B>> {
        let Driver { net, tx, mut rx, max_output, check_invariants } = self;
        let now = || Now { mono: start.elapsed(), wall: net.wall_clock() };
        let savers = storages
            .iter()
            .enumerate()
            .map(|(i, u)| saver::spawn::<N>(StorageIdx(i), &u.raid_name(), u.state_file.clone(), tx.clone()))
            .collect();
        let watches = storages.iter().map(progress::RecoveryWatch::new).collect();
        let mut state = Loop {
            server: Server::new(cfg, now()),
            watches,
            conns: BTreeMap::new(),
            storages,
            savers,
            opener,
            tx: tx.clone(),
            shutting_down: false,
            max_output,
            check_invariants,
            overflowed: Vec::new(),
        };
        let ids = Arc::new(AtomicU64::new(1));
        let mut acceptors: Vec<_> = listeners
            .into_iter()
            .map(|l| N::spawn(conn::accept_loop::<N>(l, tx.clone(), ids.clone())))
            .collect();
        drop(tx);
        tokio::pin!(shutdown);
        let mut deadline: Option<Instant> = None;
        let mut next_watch = Instant::now() + progress::WATCH_EVERY;
        loop {
            state.drain_actions(now());
            if Instant::now() >= next_watch {
                // Looked at here, not in the select: a busy event queue must not starve it.
                let at = Instant::now();
                for (u, w) in state.storages.iter().zip(&mut state.watches) {
                    w.look(u, at);
                }
                next_watch = at + progress::WATCH_EVERY;
            }
            while !state.overflowed.is_empty() {
                for conn in std::mem::take(&mut state.overflowed) {
                    state.server.handle_disconnect(now(), conn);
                }
                state.drain_actions(now());
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
            let wake = state.poll_timeout().map(|t| start + t);
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
                        state.drain_actions(now());
                        state.handle(now(), ev);
                    }
                }
                () = sleep_until(wake) => state.handle_timeout(now()),
                () = tokio::time::sleep_until(next_watch) => {}
                () = sleep_until(deadline) => {}
            }
        }
        stop_accepting(&mut acceptors).await;
        // The front's recent commits, for the next start's getInvalidations (crate::recent).
        for (i, unit) in state.storages.iter().enumerate() {
            if let Some(file) = &unit.state_file {
                let recent = crate::recent::file_for(file);
                if let Err(e) = crate::recent::save(&recent, &state.server.recent_commits(StorageIdx(i))) {
                    warn!("cannot save the recent commits to {}: {e}", recent.display());
                }
            }
        }
        state.finish_connections().await;
        drop(state.tx);
        for (saver_tx, saver) in std::mem::take(&mut state.savers) {
            drop(saver_tx);
            let _ = saver.await; // its last write finishes; the caller saves the newest state last
        }
        state.storages
    }
}

/// See [`Driver::sink`].
pub(crate) fn sink(tx: &mpsc::UnboundedSender<Event>, storage: StorageIdx, backend: BackendId) -> Sink {
    let tx = tx.clone();
    Arc::new(move |id, outcome| {
        // After the driver has returned nobody waits for outcomes: dropping them is right.
        let _ = tx.send(Event::Backend { storage, backend, id, outcome });
    })
}

/// See [`Driver::event_sink`].
pub(crate) fn event_sink(
    tx: &mpsc::UnboundedSender<Event>,
    storage: StorageIdx,
    backend: BackendId,
) -> EventSink {
    let tx = tx.clone();
    Arc::new(move |event| {
        let _ = tx.send(Event::Connection { storage, backend, event });
    })
}

/// Sends admin requests to the running driver (cloneable, for the admin endpoint's tasks).
#[derive(Clone)]
pub struct AdminSender(mpsc::UnboundedSender<Event>);

impl std::fmt::Debug for AdminSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSender").finish_non_exhaustive()
    }
}

impl AdminSender {
    /// Has the driver answer `request`; `None` when the driver is gone (shutting down).
    pub async fn ask(&self, request: AdminRequest) -> Option<AdminReply> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.0.send(Event::Admin { request, reply }).ok()?;
        rx.await.ok()
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
struct Loop<B, O> {
    server: Server,
    conns: BTreeMap<ConnId, ConnHandle>,
    /// One per storage, by `StorageIdx`.
    storages: Vec<StorageUnit<B>>,
    /// What was last logged of each storage's recovery.
    watches: Vec<progress::RecoveryWatch>,
    /// Each storage's saver: where its newest state goes, and its task.
    savers: Vec<(saver::SaverTx, tokio::task::JoinHandle<()>)>,
    /// Opens the backends a reload adds.
    opener: O,
    /// For the sinks of backends a reload adds.
    tx: mpsc::UnboundedSender<Event>,
    shutting_down: bool,
    /// See [`Driver::set_max_output`].
    max_output: usize,
    /// See [`Driver::set_check_invariants`].
    check_invariants: bool,
    /// Connections closed because their output piled up, to report to the server.
    overflowed: Vec<ConnId>,
}

impl<B: Backend, O: Opener<B>> Loop<B, O> {
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
            Event::Backend { storage, backend, id, outcome } => match self.storages.get_mut(storage.0) {
                Some(u) => u.raid.handle_outcome(now, backend, id, outcome),
                None => error!("an outcome for storage {storage:?}, which does not exist (a driver bug)"),
            },
            Event::Connection { storage, backend, event } => match self.storages.get_mut(storage.0) {
                Some(u) => u.handle_event(now, backend, event),
                None => error!("an event for storage {storage:?}, which does not exist (a driver bug)"),
            },
            Event::StateSaved { storage, version } => {
                if let Some(u) = self.storages.get_mut(storage.0) {
                    u.saved = u.saved.max(version);
                    u.raid.handle_state_saved(now, version);
                }
            }
            Event::Admin { request, reply } => {
                let answer = self.admin(now, request);
                let _ = reply.send(answer);
            }
        }
    }

    /// The earliest `poll_timeout` of the front and the RAIDs.
    fn poll_timeout(&self) -> Option<Duration> {
        let raids = self.storages.iter().filter_map(|u| u.raid.poll_timeout());
        self.server.poll_timeout().into_iter().chain(raids).min()
    }

    /// The timer fired: every state machine whose time has come handles it.
    fn handle_timeout(&mut self, now: Now) {
        if self.server.poll_timeout().is_some_and(|t| t <= now.mono) {
            self.server.handle_timeout(now);
        }
        for u in &mut self.storages {
            if u.raid.poll_timeout().is_some_and(|t| t <= now.mono) {
                u.raid.handle_timeout(now);
            }
        }
    }

    /// Carries out every action of the front and the RAIDs, until none has one left.
    fn drain_actions(&mut self, now: Now) {
        loop {
            let mut any = self.drain_server(now);
            for i in 0..self.storages.len() {
                any |= self.drain_raid(now, i);
                // New tids above every tid the RAID has agreed on (it may raise it itself).
                self.server.raise_tid_floor(StorageIdx(i), self.storages[i].raid.last_tid());
            }
            if !any {
                break;
            }
        }
    }

    /// Carries out the RAID actions of storage `i`; whether there were any.
    fn drain_raid(&mut self, now: Now, i: usize) -> bool {
        let mut any = false;
        while let Some(action) = self.storages[i].raid.poll_action() {
            any = true;
            match self.storages[i].carry_out(now, action) {
                Some(raids::Forward::Answer { id, outcome }) => {
                    self.server.handle_backend(now, StorageIdx(i), id, outcome)
                }
                Some(raids::Forward::MovedOn { last_tid }) => {
                    self.server.history_moved_on(StorageIdx(i), last_tid)
                }
                Some(raids::Forward::Save { version, state }) => match self.savers.get(i) {
                    Some((tx, _)) => tx.save(version, state),
                    None => error!("storage {i} has no saver (a driver bug)"),
                },
                None => {}
            }
        }
        if any && self.check_invariants {
            if let Some(unit) = self.storages.get_mut(i) {
                unit.check_invariants();
            }
        }
        any
    }

    /// Carries out every action the front has queued (its backend requests go to the RAIDs);
    /// whether there were any.
    fn drain_server(&mut self, now: Now) -> bool {
        let mut any = false;
        while let Some(action) = self.server.poll_action() {
            any = true;
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
                Action::Backend { storage, id, request } => match self.storages.get_mut(storage.0) {
                    Some(u) => u.raid.handle_request(now, id, request),
                    None => {
                        error!("request {id:?} for storage {storage:?}, which does not exist (a core bug)")
                    }
                },
            }
        }
        any
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
