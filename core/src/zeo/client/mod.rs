//! The client side of ZEO as a backend: a sans-IO state machine that carries out
//! [`BackendRequest`]s over one connection to a ZEO server (stock Python ZEO 6.2 or zeoraid).
//!
//! The driver feeds it the bytes it reads ([`ZeoClient::handle_bytes`]), hands it requests
//! ([`ZeoClient::submit`]), writes what [`ZeoClient::poll_transmit`] returns and delivers what
//! [`ZeoClient::poll_event`] returns. A protocol error ([`ClientError`], always the server's
//! fault) means the connection must be dropped; the driver then calls [`ZeoClient::fail_all`],
//! which answers every request in flight with a `Failed` outcome of culprit `Backend`. One
//! `ZeoClient` serves one connection: a reconnect starts a fresh one.
//!
//! The mapping of each request to ZEO calls is described on [`ZeoClient::submit`]
//! (`zeo-protocol.md` §4.2, §6 and §8 item 17).

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use crate::ids::{Oid, Tid};
use crate::wire::codec::{Codec, CodecError};
use crate::wire::error::ZeoError;
use crate::wire::frame::{frame_header, FrameDecoder, FrameError};
use crate::wire::handshake::{client_reply, parse_server_announcement, HandshakeError};
use crate::wire::message::{ClientMessage, MsgId};
use crate::wire::request::{Method, Request};
use crate::wire::types::{IterId, TypedError};
use crate::wire::value::{Text, Value};
use crate::zeo::backend::{
    BackendError, BackendInfo, BackendIterId, BackendOutcome, BackendReqId, BackendRequest, Culprit,
    StorageSize, UploadId,
};

mod calls;
mod probe;
mod replies;
mod whole;
pub use replies::culprit_of;
pub use whole::{READ_AHEAD_BYTES, READ_AHEAD_TXNS};
#[cfg(test)]
mod tests;

/// Blob upload chunk size, as the stock client sends it (§6.10).
pub const BLOB_CHUNK: usize = 59_000;

/// How the client registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The storage name on the server (`"1"` by default in ZEO).
    pub storage: String,
    /// Register read-only.
    pub read_only: bool,
    /// Largest frame accepted from the server.
    pub max_frame: u32,
}

/// What the client reports to its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// Registered: requests are sent from now on.
    Ready(BackendInfo),
    /// An outcome for a submitted request (partial ones, `BlobChunk`, may come first).
    Outcome {
        /// The request.
        id: BackendReqId,
        /// Its outcome.
        outcome: BackendOutcome,
    },
    /// The server announced a transaction committed by another of its clients
    /// (`invalidateTransaction`): the storage holds `tid` now.
    ForeignCommit {
        /// The transaction's tid.
        tid: Tid,
    },
}

/// A protocol error: the server broke the protocol, the connection must be dropped.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Bad framing (e.g. a frame above `max_frame`).
    #[error("framing: {0}")]
    Frame(#[from] FrameError),
    /// The server's announcement was not acceptable.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// A frame did not decode as a ZEO message.
    #[error("decoding: {0}")]
    Codec(#[from] CodecError),
    /// A reply did not have the type its call returns.
    #[error("reply to {method}: {error}")]
    ReplyType {
        /// The call's method.
        method: &'static str,
        /// What was wrong.
        error: TypedError,
    },
    /// A reply whose msgid names no call in flight.
    #[error("reply with unknown msgid {0:?}")]
    UnknownMsgId(Value),
    /// A reply of a type its call does not return, or one that makes no sense now.
    #[error("unexpected reply: {0}")]
    Unexpected(String),
    /// A push that no call asked for, or that makes no sense here.
    #[error("unexpected push: {0}")]
    UnexpectedPush(String),
    /// `register` (or the calls after it) failed: the storage cannot be used.
    #[error("registering storage {storage:?} failed: {error:?}")]
    Register {
        /// Storage name.
        storage: String,
        /// The server's error.
        error: Box<ZeoError>,
    },
    /// A message could not be encoded (a value the encoding cannot carry).
    #[error("encoding a call: {0}")]
    Encode(String),
    /// The connection was already failed.
    #[error("the connection has failed: {0}")]
    Failed(String),
}

/// The connection's phase.
///
/// ```text
///  AwaitingAnnouncement ──"Z5"/"M5": letter copied, register sent──▶ Registering
///          │                                                            │ register answered:
///          │                                                            ▼ get_info + lastTransaction
///          │                                                       FetchingInfo
///          │                                                            │ both answered: the last
///          │                                                            ▼ tid checked (`probe`)
///          │                                                        Checking
///          │                                                            │ checked: Ready(info),
///          │                                                            ▼ queued requests sent
///          └──── protocol error (then fail_all) / fail_all ──▶ Closed ◀── Ready
/// ```
///
/// Invariants ([`ZeoClient::check`], with those of the read-ahead pipelines, `whole`):
/// * the codec is known in every state after `AwaitingAnnouncement`;
/// * requests wait in `queued` only before `Ready`, and nothing of theirs is in flight;
/// * an open transaction exists only in `Ready`;
/// * in `Closed` nothing is in flight, queued, open or waiting (everything was answered);
/// * the check of the last tid exists exactly in `Checking`, with one call in flight (`probe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the server's first frame.
    AwaitingAnnouncement,
    /// `register` sent, its reply awaited.
    Registering,
    /// `get_info` and `lastTransaction` sent, replies awaited.
    FetchingInfo,
    /// Checking that the server holds the last transaction it named (`probe`).
    Checking,
    /// Registered: requests go out as they come.
    Ready,
    /// Failed or closed: every request is answered `Failed` at once.
    Closed,
}

/// What a reply in flight answers.
#[derive(Debug, Clone)]
enum Expect {
    /// `register` during set-up.
    Register,
    /// `get_info` during set-up.
    SetupInfo,
    /// `lastTransaction` during set-up.
    SetupLast,
    /// A call of the check of the last tid (`probe`).
    Probe(probe::ProbeCall),
    /// `loadBefore` for a `LoadBefore`.
    Load { id: BackendReqId, snapshot: Tid },
    /// `loadBefore` for a `GetTid`.
    GetTid { id: BackendReqId, oid: Oid },
    /// A call whose typed reply maps directly to an outcome.
    Plain { id: BackendReqId },
    /// `iterator_start` / `iterator_record_start`: the reply names the server's iterator.
    IterOpen { id: BackendReqId, iter: BackendIterId },
    /// `iterator_next` / `iterator_record_next`: a `None` reply frees the iterator.
    IterStep { id: BackendReqId, iter: BackendIterId },
    /// A call of the read-ahead pipeline `key` of `IterNextWhole` (see `whole`); the requests
    /// it answers wait in the pipeline.
    Ahead { key: u64, call: whole::AheadCall },
    /// `sendBlob`.
    SendBlob { id: BackendReqId, oid: Oid, serial: Tid },
    /// `vote`.
    Vote { id: BackendReqId },
    /// `tpc_finish`.
    Finish { id: BackendReqId, tid: Tid },
    /// `tpc_abort` for an `Abort` request.
    Abort { id: BackendReqId },
    /// `tpc_abort` sent on our own after a failed vote: nobody waits for it.
    Cleanup,
    /// `pack`, then `get_info` for the size.
    Pack { id: BackendReqId },
    /// `get_info` after a pack.
    PackInfo { id: BackendReqId },
}

/// An iterator of the core, as the server knows it.
///
/// ```text
///  Opening ──reply──▶ Open ──first IterNextWhole──▶ Ahead ──end / IterDrop──▶ (gone)
///     │ dropped: iterator_gc on the reply  │ end / IterDrop ──▶ (gone)
/// ```
#[derive(Debug)]
enum IterSlot {
    /// `iterator_start`/`iterator_record_start` sent; requests for it wait here. `bound`: see
    /// `Open`.
    Opening { waiting: Vec<(BackendReqId, BackendRequest)>, dropped: bool, bound: Option<Tid> },
    /// Open on the server under `iid`. `bound` (transaction iterators only): a tid known
    /// committed when `iterator_start` was sent and not above its `stop` (see `whole`).
    Open { iid: IterId, bound: Option<Tid> },
    /// Read ahead by `IterNextWhole`: the pipeline is `aheads[key]`.
    Ahead(u64),
}

/// The transaction between `Vote` and `Finish`/`Abort`.
#[derive(Debug)]
struct Txn {
    /// Our transaction handle on this connection.
    txid: i64,
    /// The tid the core chose.
    tid: Tid,
    /// Uploads its `StoreBlob` ops use (consumed by finish/abort/a failed vote).
    uploads: Vec<UploadId>,
    /// Whether `vote` has been answered successfully.
    voted: bool,
    /// Every oid its ops write, in first-write order without duplicates.
    written: Vec<Oid>,
}

/// The ZEO client state machine of one connection; see the module documentation.
#[derive(Debug)]
pub struct ZeoClient {
    cfg: ClientConfig,
    phase: Phase,
    frames: FrameDecoder,
    codec: Option<Codec>,
    /// Framed bytes to write.
    out: BytesMut,
    events: VecDeque<ClientEvent>,
    /// Next int msgid (1, 2, …).
    next_msgid: i64,
    /// Next transaction handle.
    next_txid: i64,
    /// Calls with an int msgid awaiting their reply.
    pending: BTreeMap<i64, (Method, Expect)>,
    /// `loadBefore` calls by their `(oid, tid)` msgid; identical ones queue up in order.
    loads: BTreeMap<(Oid, Tid), VecDeque<Expect>>,
    /// `sendBlob` calls in flight, in order: chunk pushes go to the first match.
    blob_reads: Vec<(Oid, Tid, BackendReqId)>,
    /// Requests submitted before `Ready`.
    queued: VecDeque<(BackendReqId, BackendRequest)>,
    iters: BTreeMap<BackendIterId, IterSlot>,
    /// Read-ahead pipelines of `IterNextWhole` (also dropped ones still draining replies).
    aheads: BTreeMap<u64, whole::Ahead>,
    next_ahead: u64,
    /// The newest tid known committed on the server: `lastTransaction` at registration once
    /// checked (`probe`) and our own finished commits (read-ahead bounds, see `whole`).
    known_last: Tid,
    uploads: BTreeMap<UploadId, Vec<Bytes>>,
    txn: Option<Txn>,
    /// Set-up facts gathered before `Ready`.
    setup_info: Option<crate::wire::reply::StorageInfo>,
    setup_last: Option<Tid>,
    /// The check of the last tid, in `Checking`.
    probe: Option<probe::Probe>,
    /// The latest object count and size the server told.
    size: StorageSize,
    /// Whether the "someone else writes" warning was given on this connection.
    warned_invalidation: bool,
    /// The first protocol error, returned again by later calls.
    failed: Option<String>,
}

/// The error outcome for a request that could not be carried out because of the backend.
pub fn backend_failure(message: impl Into<String>) -> BackendOutcome {
    BackendOutcome::Failed(BackendError {
        error: ZeoError::Other {
            class_path: Text::from_static("ZODB.POSException.StorageSystemError"),
            payload: Value::list(vec![Value::Str(Text::from(message.into()))]),
        },
        culprit: Culprit::Backend,
    })
}

impl ZeoClient {
    /// A client for a fresh connection (nothing has been read or written yet).
    pub fn new(cfg: ClientConfig) -> ZeoClient {
        ZeoClient {
            frames: FrameDecoder::new(cfg.max_frame),
            cfg,
            phase: Phase::AwaitingAnnouncement,
            codec: None,
            out: BytesMut::new(),
            events: VecDeque::new(),
            next_msgid: 1,
            next_txid: 1,
            pending: BTreeMap::new(),
            loads: BTreeMap::new(),
            blob_reads: Vec::new(),
            queued: VecDeque::new(),
            iters: BTreeMap::new(),
            aheads: BTreeMap::new(),
            next_ahead: 0,
            known_last: Tid::ZERO,
            uploads: BTreeMap::new(),
            txn: None,
            setup_info: None,
            setup_last: None,
            probe: None,
            size: StorageSize::default(),
            warned_invalidation: false,
            failed: None,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Feeds bytes read from the socket. An error means the connection must be dropped (then
    /// call [`ZeoClient::fail_all`]); every later call returns an error too.
    pub fn handle_bytes(&mut self, data: &[u8]) -> Result<(), ClientError> {
        if let Some(why) = &self.failed {
            return Err(ClientError::Failed(why.clone()));
        }
        if self.phase == Phase::Closed {
            return Ok(());
        }
        self.frames.push(data);
        let r = self.drain_frames();
        if let Err(e) = &r {
            self.failed = Some(e.to_string());
        }
        r
    }

    fn drain_frames(&mut self) -> Result<(), ClientError> {
        while let Some(frame) = self.frames.next_frame()? {
            match self.phase {
                Phase::AwaitingAnnouncement => {
                    let enc = parse_server_announcement(&frame)?;
                    self.codec = Some(Codec::new(enc));
                    // Answer with the server's own letter (§2.1, §8 item 2).
                    let reply = client_reply(enc);
                    self.out.extend_from_slice(&frame_header(reply.len())?);
                    self.out.extend_from_slice(&reply);
                    self.phase = Phase::Registering;
                    let storage = Text::from(self.cfg.storage.as_str());
                    let read_only = self.cfg.read_only;
                    self.call(Request::Register { storage, read_only }, Expect::Register)?;
                }
                Phase::Closed => return Ok(()),
                _ => self.handle_frame(&frame)?,
            }
        }
        Ok(())
    }

    /// Hands a request to the client; its outcome comes as [`ClientEvent::Outcome`].
    pub fn submit(&mut self, id: BackendReqId, req: BackendRequest) {
        match self.phase {
            Phase::Ready => {
                if let Err(e) = self.start(id, req) {
                    // Only encoding failures end up here: the connection is unusable.
                    self.failed.get_or_insert_with(|| e.to_string());
                    self.answer(id, backend_failure(format!("cannot send the request: {e}")));
                }
            }
            Phase::Closed => self.answer(id, backend_failure("not connected")),
            Phase::AwaitingAnnouncement | Phase::Registering | Phase::FetchingInfo | Phase::Checking => {
                self.queued.push_back((id, req));
            }
        }
    }

    /// Framed bytes to write, if any (everything queued so far, in one piece).
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            None
        } else {
            Some(self.out.split().freeze())
        }
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Whether a protocol or encoding error has ended this connection.
    pub fn error(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The connection is lost (or being dropped): answers every request in flight, queued or
    /// waiting with `Failed` of culprit `Backend`, and closes. Unsent bytes are discarded.
    pub fn fail_all(&mut self, reason: &str) {
        let msg = format!("connection to the backend lost: {reason}");
        let mut ids: Vec<BackendReqId> = Vec::new();
        for (_, (_, expect)) in std::mem::take(&mut self.pending) {
            ids.extend(expect.request_id());
        }
        for (_, q) in std::mem::take(&mut self.loads) {
            ids.extend(q.into_iter().filter_map(|e| e.request_id()));
        }
        for (_, slot) in std::mem::take(&mut self.iters) {
            if let IterSlot::Opening { waiting, .. } = slot {
                ids.extend(waiting.into_iter().map(|(id, _)| id));
            }
        }
        ids.extend(self.take_ahead_waiting());
        ids.extend(std::mem::take(&mut self.queued).into_iter().map(|(id, _)| id));
        ids.sort();
        ids.dedup();
        for id in ids {
            self.answer(id, backend_failure(msg.clone()));
        }
        self.blob_reads.clear();
        self.uploads.clear();
        self.txn = None;
        self.probe = None;
        self.out.clear();
        self.phase = Phase::Closed;
    }

    /// Checks the invariants of [`Phase`]; `Err` names the first one broken.
    pub fn check(&self) -> Result<(), String> {
        if self.phase != Phase::AwaitingAnnouncement && self.phase != Phase::Closed && self.codec.is_none() {
            return Err(format!("{:?} without a codec", self.phase));
        }
        if self.phase == Phase::Ready && !self.queued.is_empty() {
            return Err("requests queued while ready".into());
        }
        if self.txn.is_some() && self.phase != Phase::Ready {
            return Err(format!("a transaction open in {:?}", self.phase));
        }
        if self.phase != Phase::Ready && self.phase != Phase::Closed && !self.loads.is_empty() {
            return Err("loads in flight before ready".into());
        }
        if self.phase == Phase::Closed
            && !(self.pending.is_empty()
                && self.loads.is_empty()
                && self.queued.is_empty()
                && self.iters.is_empty()
                && self.aheads.is_empty()
                && self.uploads.is_empty()
                && self.blob_reads.is_empty())
        {
            return Err("closed with requests unanswered".into());
        }
        if self.loads.values().any(VecDeque::is_empty) {
            return Err("an empty load queue is kept".into());
        }
        let probes = self.pending.values().filter(|(_, e)| matches!(e, Expect::Probe(_))).count();
        match (&self.probe, self.phase) {
            (Some(p), Phase::Checking) if probes == 1 => p.check()?,
            (None, phase) if phase != Phase::Checking && probes == 0 => {}
            (p, phase) => {
                return Err(format!("{phase:?} with check {p:?} and {probes} check call(s) in flight"))
            }
        }
        self.check_aheads()
    }

    fn answer(&mut self, id: BackendReqId, outcome: BackendOutcome) {
        self.events.push_back(ClientEvent::Outcome { id, outcome });
    }

    fn codec(&self) -> Result<Codec, ClientError> {
        self.codec.ok_or_else(|| ClientError::Failed("no codec before the announcement".into()))
    }

    /// Frames and queues one message.
    fn send(&mut self, msg: &ClientMessage) -> Result<(), ClientError> {
        let codec = self.codec()?;
        let mut payload = Vec::new();
        codec.encode_client(msg, &mut payload).map_err(|e| ClientError::Encode(e.to_string()))?;
        self.out.extend_from_slice(&frame_header(payload.len())?);
        self.out.extend_from_slice(&payload);
        Ok(())
    }

    /// Sends a synchronous call with a fresh int msgid.
    fn call(&mut self, request: Request, expect: Expect) -> Result<(), ClientError> {
        let method = request.method().ok_or_else(|| ClientError::Encode("unknown method".into()))?;
        let msgid = self.next_msgid;
        self.next_msgid += 1;
        self.send(&ClientMessage::Call { msgid: MsgId::int(msgid), request })?;
        self.pending.insert(msgid, (method, expect));
        Ok(())
    }

    /// Sends an asynchronous call (msgid 0, as the Python client does).
    fn cast(&mut self, request: Request) -> Result<(), ClientError> {
        self.send(&ClientMessage::Async { msgid: MsgId::int(0), request })
    }

    /// Sends `loadBefore(oid, before)` with its `(oid, before)` msgid.
    fn load_before(&mut self, oid: Oid, before: Tid, expect: Expect) -> Result<(), ClientError> {
        let msgid = MsgId::load_before(oid, before);
        self.send(&ClientMessage::Call { msgid, request: Request::LoadBefore { oid, before } })?;
        self.loads.entry((oid, before)).or_default().push_back(expect);
        Ok(())
    }
}

impl Expect {
    /// The core's request this reply answers, if any.
    fn request_id(&self) -> Option<BackendReqId> {
        match self {
            Expect::Register
            | Expect::SetupInfo
            | Expect::SetupLast
            | Expect::Probe(_)
            | Expect::Cleanup
            | Expect::Ahead { .. } => None,
            Expect::Load { id, .. }
            | Expect::GetTid { id, .. }
            | Expect::Plain { id }
            | Expect::IterOpen { id, .. }
            | Expect::IterStep { id, .. }
            | Expect::SendBlob { id, .. }
            | Expect::Vote { id }
            | Expect::Finish { id, .. }
            | Expect::Abort { id }
            | Expect::Pack { id }
            | Expect::PackInfo { id } => Some(*id),
        }
    }
}
