//! Test harness: a [`Server`] with in-memory backends and clients that speak real frames.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::ids::{ConnId, Oid, Tid};
use crate::wire::codec::Codec;
use crate::wire::error::{StorageTxnDetails, ZeoError};
use crate::wire::frame::{encode_frame, FrameDecoder};
use crate::wire::message::{ClientMessage, MsgId, ServerMessage};
use crate::wire::push::Push;
use crate::wire::request::Request;
use crate::wire::types::TxnId;
use crate::wire::value::{Text, Value};
use crate::wire::Encoding;
use crate::zeo::backend::{BackendReqId, BackendRequest, StorageSize};
use crate::zeo::events::{Action, Now, ServerConfig, StorageIdx, StorageSeed};
use crate::zeo::mem_backend::MemBackend;

use super::Server;

/// A client's view of one connection.
#[derive(Debug, Default)]
pub(crate) struct Client {
    codec: Option<Codec>,
    dec: Option<FrameDecoder>,
    /// Frames received before the handshake (the announcement) or for `ruok`.
    pub(crate) raw: Vec<Bytes>,
    /// Decoded messages not yet taken.
    pub(crate) inbox: Vec<ServerMessage>,
    pub(crate) closed: Option<String>,
}

pub(crate) struct Harness {
    pub(crate) srv: Server,
    pub(crate) backends: Vec<TestBackend>,
    pub(crate) now: Now,
    /// Emitted, unanswered backend requests in emission order.
    pub(crate) inflight: Vec<(StorageIdx, BackendReqId, BackendRequest)>,
    pub(crate) clients: BTreeMap<u64, Client>,
    /// Answer backend requests as soon as they are emitted.
    pub(crate) auto: bool,
    /// Every action seen, for order checks.
    pub(crate) log: Vec<Action>,
    /// Hold back the final outcome that follows a `Committed` (group commit: durability
    /// comes later), until [`Harness::release_held`].
    pub(crate) hold_durable: bool,
    pub(crate) held: Vec<(StorageIdx, BackendReqId, crate::zeo::backend::BackendOutcome)>,
}

/// What answers a storage's requests in the harness: one in-memory backend, or a RAID of them.
#[allow(clippy::large_enum_variant)] // test-only; a handful of values
pub(crate) enum TestBackend {
    Mem(MemBackend),
    Raid(Box<crate::raid::harness::Harness>),
}

impl TestBackend {
    /// A RAID of `n` in-memory backends.
    pub(crate) fn raid(n: usize) -> TestBackend {
        TestBackend::Raid(Box::new(crate::raid::harness::Harness::new(n)))
    }

    pub(crate) fn handle(&mut self, req: BackendRequest) -> Vec<crate::zeo::backend::BackendOutcome> {
        match self {
            TestBackend::Mem(m) => m.handle(req),
            TestBackend::Raid(r) => r.request(req),
        }
    }

    pub(crate) fn last_tid(&self) -> Tid {
        match self {
            TestBackend::Mem(m) => m.last_tid(),
            TestBackend::Raid(r) => r.backends.iter().map(MemBackend::last_tid).max().unwrap_or(Tid::ZERO),
        }
    }

    pub(crate) fn has_voted(&self) -> bool {
        match self {
            TestBackend::Mem(m) => m.has_voted(),
            TestBackend::Raid(r) => r.backends.iter().any(MemBackend::has_voted),
        }
    }

    pub(crate) fn open_handles(&self) -> (usize, usize) {
        match self {
            TestBackend::Mem(m) => m.open_handles(),
            TestBackend::Raid(r) => {
                r.backends.iter().map(MemBackend::open_handles).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
            }
        }
    }

    pub(crate) fn set_group_commit(&mut self, on: bool) {
        match self {
            TestBackend::Mem(m) => m.group_commit = on,
            TestBackend::Raid(r) => r.backends.iter_mut().for_each(|m| m.group_commit = on),
        }
    }
}

pub(crate) fn seed(name: &str, read_only: bool) -> StorageSeed {
    StorageSeed {
        name: name.to_owned(),
        read_only,
        last_tid: Tid::ZERO,
        recent: Vec::new(),
        size: StorageSize::default(),
        info_name: format!("/data/{name}/Data.fs"),
        blobs: true,
    }
}

pub(crate) fn config() -> ServerConfig {
    ServerConfig {
        announce: Encoding::Pickle,
        max_frame: 1 << 20,
        read_only: false,
        transaction_timeout: None,
        invalidation_queue_size: 100,
        storages: vec![seed("1", false), seed("ro", true)],
    }
}

pub(crate) fn txn(n: i64) -> TxnId {
    TxnId(Value::Int(i128::from(n)))
}

pub(crate) fn begin(n: i64) -> Request {
    Request::TpcBegin {
        txn: txn(n),
        user: Bytes::from_static(b"u"),
        description: Bytes::from_static(b"d"),
        extension: Default::default(),
        tid: None,
        status: crate::wire::types::TxnStatus::NORMAL,
    }
}

pub(crate) fn store(oid: Oid, serial: Tid, data: &'static [u8], n: i64) -> Request {
    Request::Storea { oid, serial, data: Bytes::from_static(data), txn: txn(n) }
}

impl Harness {
    pub(crate) fn new(cfg: ServerConfig) -> Harness {
        let now = Now { mono: Duration::from_secs(100), wall: Duration::from_secs(1_700_000_000) };
        let backends = cfg.storages.iter().map(|_| TestBackend::Mem(MemBackend::new())).collect();
        Harness {
            srv: Server::new(cfg, now),
            backends,
            now,
            inflight: Vec::new(),
            clients: BTreeMap::new(),
            auto: true,
            log: Vec::new(),
            hold_durable: false,
            held: Vec::new(),
        }
    }

    pub(crate) fn tick(&mut self, secs: u64) {
        self.now.mono += Duration::from_secs(secs);
        self.now.wall += Duration::from_secs(secs);
    }

    /// Drains actions; answers backends in auto mode; checks invariants.
    pub(crate) fn drain(&mut self) {
        loop {
            while let Some(a) = self.srv.poll_action() {
                self.log.push(a.clone());
                match a {
                    Action::Send { conn, bytes } => {
                        let c = self.clients.entry(conn.0).or_default();
                        assert!(c.closed.is_none(), "send after close to {conn}");
                        match (c.codec, c.dec.as_mut()) {
                            (Some(codec), Some(dec)) => {
                                dec.push(&bytes);
                                while let Some(f) = dec.next_frame().expect("server frames are well-formed") {
                                    c.inbox.push(codec.decode_server(&f).expect("server messages decode"));
                                }
                            }
                            _ => {
                                let mut d = FrameDecoder::new(u32::MAX);
                                d.push(&bytes);
                                while let Some(f) = d.next_frame().expect("frame") {
                                    c.raw.push(f);
                                }
                            }
                        }
                    }
                    Action::Close { conn, reason } => {
                        let c = self.clients.entry(conn.0).or_default();
                        c.closed = Some(reason.0);
                    }
                    Action::Backend { storage, id, request } => self.inflight.push((storage, id, request)),
                }
            }
            self.srv.check().expect("invariants");
            if !self.auto || self.inflight.is_empty() {
                break;
            }
            self.deliver(0);
        }
    }

    /// Answers the `i`th in-flight request, after every earlier request of the same storage
    /// that touches the same upload, iterator or write sequence (a backend applies those in
    /// emission order; everything else may be answered in any order).
    pub(crate) fn deliver(&mut self, i: usize) {
        let (s0, _, r0) = &self.inflight[i];
        let mine = handles(r0);
        let earlier = self.inflight[..i]
            .iter()
            .position(|(s, _, r)| s == s0 && handles(r).iter().any(|h| mine.contains(h)));
        if let Some(j) = earlier {
            self.deliver(j);
            let i = i - 1;
            return self.deliver(i);
        }
        let (s, id, req) = self.inflight.remove(i);
        let outcomes = self.backends[s.0].handle(req);
        let mut after_committed = false;
        for o in outcomes {
            if after_committed && self.hold_durable {
                self.held.push((s, id, o));
                continue;
            }
            after_committed = matches!(o, crate::zeo::backend::BackendOutcome::Committed { .. });
            self.srv.handle_backend(self.now, s, id, o);
        }
        self.srv.check().expect("invariants");
        self.drain();
    }

    /// Delivers the held-back outcomes (group commit: the batch became durable), in order.
    pub(crate) fn release_held(&mut self) {
        for (s, id, o) in std::mem::take(&mut self.held) {
            self.srv.handle_backend(self.now, s, id, o);
            self.srv.check().expect("invariants");
        }
        self.drain();
    }

    /// Answers the first in-flight request matching `pred` with `outcome` instead of the backend.
    pub(crate) fn answer_where(
        &mut self,
        pred: impl Fn(&BackendRequest) -> bool,
        outcome: crate::zeo::backend::BackendOutcome,
    ) {
        let i = self.inflight.iter().position(|(_, _, r)| pred(r)).expect("such a request in flight");
        let (s, id, _) = self.inflight.remove(i);
        self.srv.handle_backend(self.now, s, id, outcome);
        self.drain();
    }

    /// Answers the first in-flight request matching `pred`.
    pub(crate) fn deliver_where(&mut self, pred: impl Fn(&BackendRequest) -> bool) {
        let i = self.inflight.iter().position(|(_, _, r)| pred(r)).expect("such a request in flight");
        self.deliver(i);
    }

    pub(crate) fn deliver_all(&mut self) {
        while !self.inflight.is_empty() {
            self.deliver(0);
        }
    }

    pub(crate) fn connect_raw(&mut self, id: u64) {
        self.clients.insert(id, Client::default());
        self.srv.handle_connect(self.now, ConnId(id), "peer");
        self.drain();
    }

    pub(crate) fn send_frame(&mut self, id: u64, payload: &[u8]) {
        let mut out = Vec::new();
        encode_frame(payload, &mut out).expect("frame");
        self.srv.handle_bytes(self.now, ConnId(id), &out);
        self.drain();
    }

    /// Connects and answers the handshake with `enc`'s letter.
    pub(crate) fn connect(&mut self, id: u64, enc: Encoding) {
        self.connect_raw(id);
        let c = self.clients.entry(id).or_default();
        c.codec = Some(Codec::new(enc));
        c.dec = Some(FrameDecoder::new(u32::MAX));
        self.send_frame(id, &[enc.letter(), b'5']);
    }

    pub(crate) fn send_msg(&mut self, id: u64, msg: &ClientMessage) {
        let codec = self.clients.get(&id).and_then(|c| c.codec).expect("handshake done");
        let mut payload = Vec::new();
        codec.encode_client(msg, &mut payload).expect("encode");
        self.send_frame(id, &payload);
    }

    pub(crate) fn call(&mut self, id: u64, msgid: i64, r: Request) {
        self.send_msg(id, &ClientMessage::Call { msgid: MsgId::int(msgid), request: r });
    }

    pub(crate) fn cast(&mut self, id: u64, r: Request) {
        self.send_msg(id, &ClientMessage::Async { msgid: MsgId::int(0), request: r });
    }

    pub(crate) fn take(&mut self, id: u64) -> Vec<ServerMessage> {
        std::mem::take(&mut self.clients.entry(id).or_default().inbox)
    }

    pub(crate) fn closed(&self, id: u64) -> bool {
        self.clients.get(&id).is_some_and(|c| c.closed.is_some())
    }

    pub(crate) fn disconnect(&mut self, id: u64) {
        self.srv.handle_disconnect(self.now, ConnId(id));
        self.drain();
    }

    /// Connects with `enc` and registers to storage `"1"`.
    pub(crate) fn client(&mut self, id: u64, enc: Encoding) {
        self.connect(id, enc);
        self.call(id, 1, Request::Register { storage: Text::from_static("1"), read_only: false });
        let got = self.take(id);
        assert!(matches!(got.as_slice(), [ServerMessage::Reply { .. }]), "register: {got:?}");
    }

    /// The one reply to `msgid` among `msgs`, as a value or an error.
    #[allow(clippy::result_large_err)] // compared with typed errors in the tests
    pub(crate) fn result_of(msgs: &[ServerMessage], msgid: i64) -> Result<Value, ZeoError> {
        let want = MsgId::int(msgid);
        let found: Vec<_> = msgs
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Reply { msgid, result } if *msgid == want => Some(Ok(result.clone())),
                ServerMessage::Error { msgid, error } if *msgid == want => Some(Err(error.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(found.len(), 1, "one reply to {msgid} in {msgs:?}");
        found.into_iter().next().expect("one")
    }

    /// Commits `stores` from `id` (txn `n`, sync calls numbered from 100) with auto delivery.
    pub(crate) fn commit(&mut self, id: u64, n: i64, stores: &[(Oid, Tid, &'static [u8])]) -> Tid {
        self.cast(id, begin(n));
        for (oid, serial, data) in stores {
            self.cast(id, store(*oid, *serial, data, n));
        }
        self.call(id, 100, Request::Vote { txn: txn(n) });
        self.call(id, 101, Request::TpcFinish { txn: txn(n) });
        let got = self.take(id);
        let v = Harness::result_of(&got, 101).expect("finish ok");
        Tid::from_slice(v.as_bytes().expect("tid bytes")).expect("8 bytes")
    }
}

/// The invalidation pushes in `msgs`.
pub(crate) fn invalidations(msgs: &[ServerMessage]) -> Vec<(Tid, Vec<Oid>)> {
    msgs.iter()
        .filter_map(|m| match m {
            ServerMessage::Push(Push::InvalidateTransaction { tid, oids }) => Some((*tid, oids.clone())),
            _ => None,
        })
        .collect()
}

/// Both encodings.
pub(crate) const ENCS: [Encoding; 2] = [Encoding::Pickle, Encoding::Msgpack];

pub(crate) fn o(n: u64) -> Oid {
    Oid::new(n)
}

/// The message of a `StorageTransactionError` carrying one.
pub(crate) fn stx_msg(e: &ZeoError) -> Option<&str> {
    match e {
        ZeoError::StorageTransaction(StorageTxnDetails::Message(m)) => Some(m.as_str()),
        _ => None,
    }
}

/// Whether `r` is a vote reply without conflicts.
pub(crate) fn empty_vote(r: &Result<Value, ZeoError>) -> bool {
    r.as_ref().ok().and_then(Value::as_seq).is_some_and(<[Value]>::is_empty)
}

pub(crate) fn is_vote(r: &BackendRequest) -> bool {
    matches!(r, BackendRequest::Vote(_))
}

pub(crate) fn is_finish(r: &BackendRequest) -> bool {
    matches!(r, BackendRequest::Finish { .. })
}

/// What a request must stay ordered with.
#[derive(Debug, PartialEq)]
enum Handle {
    Upload(u64),
    Iter(u64),
    Write,
}

fn handles(r: &BackendRequest) -> Vec<Handle> {
    match r {
        BackendRequest::BlobUploadStart { upload }
        | BackendRequest::BlobUploadChunk { upload, .. }
        | BackendRequest::BlobUploadDrop { upload } => vec![Handle::Upload(upload.0)],
        BackendRequest::IterStart { iter, .. }
        | BackendRequest::IterNext { iter }
        | BackendRequest::IterRecordNext { iter } => vec![Handle::Iter(iter.0)],
        BackendRequest::IterRecordStart { iter, txn_iter, .. } => {
            vec![Handle::Iter(iter.0), Handle::Iter(txn_iter.0)]
        }
        BackendRequest::IterDrop { iters } => iters.iter().map(|i| Handle::Iter(i.0)).collect(),
        BackendRequest::Vote(v) => {
            let mut h = vec![Handle::Write];
            h.extend(v.ops.iter().filter_map(|op| match op {
                crate::zeo::backend::TxnOp::StoreBlob { upload, .. } => Some(Handle::Upload(upload.0)),
                _ => None,
            }));
            h
        }
        BackendRequest::Finish { .. } | BackendRequest::Abort { .. } => vec![Handle::Write],
        _ => Vec::new(),
    }
}
