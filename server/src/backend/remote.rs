//! A remote ZEO server as a backend: stock Python ZEO 6.2 (`runzeo`) or another zeoraid.
//!
//! [`RemoteBackend::spawn`] starts one connector task per backend, which owns the connection
//! and the sans-IO [`ZeoClient`] (`zeoraid_core::zeo::client`) that speaks ZEO on it:
//!
//! ```text
//!            spawn
//!              │
//!              ▼            connected, registered (all within connect_timeout)
//!   ┌──▶ Connecting ───────────────────────────────────────▶ Up ── events(Up(info))
//!   │          │ refused / timeout / protocol error            │ read/write error, EOF,
//!   │          ▼                                               │ protocol error, disconnect()
//!   └─── Backoff ◀── events(Down{reason}) ─────────────────────┘ (in flight: Failed/Backend)
//!    (0.2 s, doubling to 10 s;           close() from any state ──▶ Closed
//!     reset after an Up)
//! ```
//!
//! Invariants: every submitted request gets exactly one final outcome through the [`Sink`]
//! (requests submitted while not `Up` are answered at once with `Failed`, culprit `Backend`,
//! "not connected"); `Down` is reported after every `Up` that ends and once for the first failed
//! attempt after start-up or after an `Up` (not again for each failed retry); a connection never
//! outlives its `ZeoClient`, so iterators and transactions never span two connections.
//!
//! Per-call deadlines are the caller's: after a call timeout it calls
//! [`RemoteBackend::disconnect`], which drops the connection (failing everything in flight) and
//! reconnects after the backoff.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};
use zeoraid_core::zeo::backend::{BackendEvent, BackendReqId, BackendRequest};
use zeoraid_core::zeo::client::{backend_failure, ClientConfig, ClientEvent, ZeoClient};

use super::Sink;
use crate::net::Net;

/// First pause before reconnecting.
const BACKOFF_START: Duration = Duration::from_millis(200);
/// Longest pause before reconnecting.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Bytes read at most per read.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes coalesced at most into one write.
const WRITE_BATCH: usize = 1024 * 1024;

/// Where a remote backend listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteAddr {
    /// TCP, `host:port`.
    Tcp(SocketAddr),
    /// A unix-domain socket, written `unix:PATH`.
    Unix(PathBuf),
}

/// A remote address that does not parse (or whose host name does not resolve).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a backend address: expected HOST:PORT (e.g. 127.0.0.1:8100) or unix:PATH")]
pub struct BadRemoteAddr(pub String);

impl FromStr for RemoteAddr {
    type Err = BadRemoteAddr;

    /// `unix:PATH`, `IP:PORT`, or `NAME:PORT` (resolved now, first address).
    fn from_str(s: &str) -> Result<RemoteAddr, BadRemoteAddr> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(BadRemoteAddr(s.to_string()));
            }
            return Ok(RemoteAddr::Unix(PathBuf::from(path)));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(RemoteAddr::Tcp(a));
        }
        s.to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .map(RemoteAddr::Tcp)
            .ok_or_else(|| BadRemoteAddr(s.to_string()))
    }
}

impl fmt::Display for RemoteAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteAddr::Tcp(a) => write!(f, "{a}"),
            RemoteAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// How to reach and use a remote backend.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteConfig {
    /// The backend's name, for logs (`backend{name=…}` span).
    pub name: String,
    /// Where the server listens.
    pub address: RemoteAddr,
    /// The storage name on that server.
    pub storage: String,
    /// Register read-only.
    pub read_only: bool,
    /// Deadline for connecting, the handshake and registering.
    pub connect_timeout: Duration,
    /// Largest frame accepted from the server.
    pub max_frame: u32,
}

/// Where a remote backend reports that it came up or went down (called from its task).
pub type EventSink = Arc<dyn Fn(BackendEvent) + Send + Sync>;

/// What the handle asks of the connector task.
#[derive(Debug)]
enum Cmd {
    Submit(BackendReqId, BackendRequest),
    Disconnect,
    Close,
}

/// The handle of a remote backend; see the module documentation.
pub struct RemoteBackend {
    tx: mpsc::UnboundedSender<Cmd>,
    task: JoinHandle<()>,
    sink: Sink,
}

impl fmt::Debug for RemoteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteBackend").finish_non_exhaustive()
    }
}

impl RemoteBackend {
    /// Starts the connector task on the current tokio runtime: connect (deadline
    /// `connect_timeout`, handshake and registration included), on success `events(Up(info))`;
    /// on loss `events(Down{reason})`, every request in flight answered `Failed`/`Backend`, then
    /// reconnect with backoff (0.2 s doubling to 10 s).
    pub fn spawn<N: Net>(net: N, cfg: RemoteConfig, sink: Sink, events: EventSink) -> RemoteBackend {
        let (tx, rx) = mpsc::unbounded_channel();
        let span = info_span!("backend", name = %cfg.name);
        let connector = Connector { net, cfg, sink: Arc::clone(&sink), events, rx };
        let task = N::spawn(connector.run().instrument(span));
        RemoteBackend { tx, task, sink }
    }

    /// Sends a request; while the backend is down it is answered at once with `Failed`
    /// (culprit `Backend`, "not connected").
    pub fn submit(&self, id: BackendReqId, request: BackendRequest) {
        if let Err(mpsc::error::SendError(Cmd::Submit(id, _))) = self.tx.send(Cmd::Submit(id, request)) {
            (self.sink)(id, backend_failure("not connected: the backend is closed"));
        }
    }

    /// Drops the current connection now (e.g. after a call timeout); everything in flight is
    /// answered `Failed`, and the backend reconnects after the backoff.
    pub fn disconnect(&self) {
        let _ = self.tx.send(Cmd::Disconnect);
    }

    /// Stops the backend: drops the connection, answers pending requests `Failed`, and waits for
    /// the connector task to end.
    pub async fn close(self) {
        let _ = self.tx.send(Cmd::Close);
        if let Err(e) = self.task.await {
            warn!("the backend task ended abnormally: {e}");
        }
    }
}

/// How a connection attempt or a connection ended.
enum End {
    /// Lost (or never made): reconnect.
    Lost { reason: String, was_up: bool },
    /// `close()` or every handle dropped: stop.
    Closed,
}

/// The connector task's state.
struct Connector<N: Net> {
    net: N,
    cfg: RemoteConfig,
    sink: Sink,
    events: EventSink,
    rx: mpsc::UnboundedReceiver<Cmd>,
}

impl<N: Net> Connector<N> {
    async fn run(mut self) {
        let mut backoff = BACKOFF_START;
        // Whether Down has been reported since the last Up (or since start-up).
        let mut down_reported = false;
        loop {
            match self.connection().await {
                End::Closed => break,
                End::Lost { reason, was_up } => {
                    if was_up {
                        backoff = BACKOFF_START;
                        down_reported = false;
                    }
                    if down_reported {
                        debug!("still down: {reason}");
                    } else {
                        warn!("backend {} down: {reason}", self.cfg.address);
                        (self.events)(BackendEvent::Down { reason });
                        down_reported = true;
                    }
                }
            }
            let wake = Instant::now() + backoff;
            loop {
                tokio::select! {
                    biased;
                    _ = tokio::time::sleep_until(wake) => break,
                    cmd = self.rx.recv() => {
                        if self.while_down(cmd) {
                            self.finish();
                            return;
                        }
                    }
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        self.finish();
    }

    /// Handles a command while not connected; `true` means stop.
    fn while_down(&self, cmd: Option<Cmd>) -> bool {
        match cmd {
            None | Some(Cmd::Close) => true,
            Some(Cmd::Submit(id, _)) => {
                (self.sink)(id, backend_failure(format!("not connected to {}", self.cfg.address)));
                false
            }
            Some(Cmd::Disconnect) => false,
        }
    }

    /// Answers whatever is still queued, after the task decided to stop.
    fn finish(&mut self) {
        self.rx.close();
        while let Ok(cmd) = self.rx.try_recv() {
            if let Cmd::Submit(id, _) = cmd {
                (self.sink)(id, backend_failure("not connected: the backend is closed"));
            }
        }
        info!("backend {} closed", self.cfg.address);
    }

    /// One connection: connect, register, serve until it is lost.
    async fn connection(&mut self) -> End {
        let timeout = self.cfg.connect_timeout;
        let deadline = Instant::now() + timeout;
        let stream = {
            let connect = self.net.connect(&self.cfg.address);
            tokio::pin!(connect);
            loop {
                tokio::select! {
                    biased;
                    r = &mut connect => match r {
                        Ok(s) => break s,
                        Err(e) => return End::Lost { reason: e.to_string(), was_up: false },
                    },
                    _ = tokio::time::sleep_until(deadline) => {
                        let reason = format!("no connection to {} within {timeout:?}", self.cfg.address);
                        return End::Lost { reason, was_up: false };
                    }
                    cmd = self.rx.recv() => {
                        if self.while_down(cmd) {
                            return End::Closed;
                        }
                    }
                }
            }
        };
        debug!("connected to {}", self.cfg.address);
        self.serve(stream, deadline).await
    }

    async fn serve(&mut self, stream: N::Stream, deadline: Instant) -> End {
        let (mut rd, wr) = tokio::io::split(stream);
        let (wtx, wrx) = mpsc::unbounded_channel::<Bytes>();
        let (werr_tx, mut werr_rx) = oneshot::channel::<io::Error>();
        let writer = N::spawn(write_loop(wr, wrx, werr_tx).in_current_span());
        let mut client = ZeoClient::new(ClientConfig {
            storage: self.cfg.storage.clone(),
            read_only: self.cfg.read_only,
            max_frame: self.cfg.max_frame,
        });
        let mut up = false;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let ended = loop {
            buf.reserve(READ_CHUNK);
            let step: Result<(), Option<String>> = tokio::select! {
                biased;
                r = rd.read_buf(&mut buf) => match r {
                    Ok(0) => Err(Some("the server closed the connection".to_string())),
                    Ok(_) => client.handle_bytes(&buf.split()).map_err(|e| Some(format!("protocol error: {e}"))),
                    Err(e) => Err(Some(format!("read failed: {e}"))),
                },
                e = &mut werr_rx => Err(Some(match e {
                    Ok(e) => format!("write failed: {e}"),
                    Err(_) => "the writer stopped".to_string(),
                })),
                _ = tokio::time::sleep_until(deadline), if !up => {
                    Err(Some(format!("not registered with {} within {:?}", self.cfg.address, self.cfg.connect_timeout)))
                }
                cmd = self.rx.recv() => match cmd {
                    Some(Cmd::Submit(id, req)) => {
                        if up {
                            client.submit(id, req);
                        } else {
                            (self.sink)(id, backend_failure(format!("not connected to {} (registering)", self.cfg.address)));
                        }
                        Ok(())
                    }
                    Some(Cmd::Disconnect) => Err(Some("disconnected by the RAID (call timeout)".to_string())),
                    None | Some(Cmd::Close) => Err(None),
                },
            };
            while let Some(ev) = client.poll_event() {
                match ev {
                    ClientEvent::Ready(mut info) => {
                        up = true;
                        info!(
                            "backend {} up: storage {:?}, last tid {}, blobs {}",
                            self.cfg.address, self.cfg.storage, info.last_tid, info.blobs
                        );
                        info.info_name = self.cfg.address.to_string();
                        (self.events)(BackendEvent::Up(info));
                    }
                    ClientEvent::Outcome { id, outcome } => (self.sink)(id, outcome),
                    ClientEvent::ForeignCommit { tid } => (self.events)(BackendEvent::ForeignCommit { tid }),
                }
            }
            while let Some(bytes) = client.poll_transmit() {
                let _ = wtx.send(bytes);
            }
            if let Some(e) = client.error() {
                let e = format!("protocol error: {e}");
                break step.err().unwrap_or(Some(e));
            }
            if let Err(end) = step {
                break end;
            }
        };
        writer.abort();
        let reason = ended.clone().unwrap_or_else(|| "the backend is closed".to_string());
        client.fail_all(&reason);
        while let Some(ev) = client.poll_event() {
            if let ClientEvent::Outcome { id, outcome } = ev {
                (self.sink)(id, outcome);
            }
        }
        match ended {
            Some(reason) => End::Lost { reason, was_up: up },
            None => End::Closed,
        }
    }
}

/// Writes what the connection queues, coalescing small pieces; reports the first error.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    err: oneshot::Sender<io::Error>,
) {
    let mut all = BytesMut::new();
    while let Some(first) = rx.recv().await {
        let r = match rx.try_recv() {
            Err(_) => wr.write_all(&first).await,
            Ok(second) => {
                all.extend_from_slice(&first);
                all.extend_from_slice(&second);
                while all.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(more) => all.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                let r = wr.write_all(&all).await;
                all.clear();
                r
            }
        };
        if let Err(e) = match r {
            Ok(()) => wr.flush().await,
            Err(e) => Err(e),
        } {
            let _ = err.send(e);
            return;
        }
    }
}
