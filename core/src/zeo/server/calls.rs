//! Client frames: handshake, `register`, and every registered method (§2, §4).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::ids::{ConnId, Tid};
use crate::wire::codec::Codec;
use crate::wire::error::{StorageTxnDetails, ZeoError};
use crate::wire::frame::encode_frame;
use crate::wire::handshake::{parse_client_handshake, ClientHello};
use crate::wire::message::{ClientMessage, MsgId};
use crate::wire::reply::{Invalidations, Reply};
use crate::wire::request::Request;
use crate::wire::types::{IterId, TxnId};
use crate::wire::value::{Text, Value};
use crate::zeo::backend::{BackendRequest, TxnOp};
use crate::zeo::events::{Action, Now, StorageIdx};

use super::conn::{ConnState, Iter, IterOp, Phase, Reg, Txn};
use super::{IterReq, Pending, PendingEntry, Server};

/// How a call was made: sync calls get replies, async errors close the connection.
#[derive(Debug, Clone)]
pub(crate) struct CallCtx {
    pub(crate) conn: ConnId,
    pub(crate) msgid: MsgId,
    pub(crate) is_async: bool,
}

impl Server {
    /// One frame from `conn`.
    pub(super) fn handle_frame(&mut self, now: Now, conn: ConnId, frame: Bytes) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let Some(codec) = c.codec else {
            match parse_client_handshake(&frame) {
                Ok(ClientHello::Protocol(enc)) => {
                    c.codec = Some(Codec::new(enc));
                    c.state = ConnState::AwaitingRegister;
                }
                Ok(ClientHello::Ruok) => {
                    let mut out = Vec::new();
                    if let Some(json) = self.ruok() {
                        if encode_frame(&json, &mut out).is_ok() {
                            self.actions.push_back(Action::Send { conn, bytes: Bytes::from(out) });
                        }
                    }
                    self.close(conn, "ruok answered");
                }
                Err(e) => self.close(conn, &format!("bad handshake: {e}")),
            }
            return;
        };
        let msg = match codec.decode_client(&frame) {
            Ok(m) => m,
            Err(e) => {
                tracing::info!(conn = conn.0, error = %e, "undecodable message");
                self.close(conn, &format!("undecodable message: {e}"));
                return;
            }
        };
        let (ctx, request) = match msg {
            ClientMessage::Heartbeat => return,
            ClientMessage::Call { msgid, request } => (CallCtx { conn, msgid, is_async: false }, request),
            ClientMessage::Async { msgid, request } => (CallCtx { conn, msgid, is_async: true }, request),
            ClientMessage::BadCall { msgid, is_async, name, error, .. } => {
                let registered = self.conns.get(&conn).is_some_and(|c| c.reg().is_some());
                if is_async || (!registered && name != "register") {
                    self.close(conn, &format!("bad call to {name}: {error}"));
                } else {
                    self.error(conn, msgid, ZeoError::TypeError(Text::from(error.to_string())));
                }
                return;
            }
        };
        let registered = self.conns.get(&conn).is_some_and(|c| c.reg().is_some());
        match (registered, request) {
            (false, Request::Register { storage, read_only }) => self.register(&ctx, &storage, read_only),
            (false, r) => self.close(conn, &format!("{} called before register", r.name())),
            (true, Request::Register { .. }) => self.close(conn, "register called twice"),
            (true, r) => self.call(now, &ctx, r),
        }
    }

    /// Answers a call: replies when sync, closes on an error when async.
    pub(super) fn answer(&mut self, ctx: &CallCtx, result: Result<Reply, ZeoError>) {
        match (result, ctx.is_async) {
            (Ok(r), false) => self.reply(ctx.conn, ctx.msgid.clone(), &r),
            (Ok(_), true) => {}
            (Err(e), false) => self.error(ctx.conn, ctx.msgid.clone(), e),
            (Err(e), true) => {
                tracing::info!(conn = ctx.conn.0, error = ?e, "async call failed");
                self.close(ctx.conn, &format!("async call failed: {}", e.class_path()));
            }
        }
    }

    fn register(&mut self, ctx: &CallCtx, name: &Text, read_only: bool) {
        let Some(idx) = self.fronts.iter().position(|f| f.seed.name == name.as_str()) else {
            let e = ZeoError::ValueError(Text::from(format!("unknown storage: {name}")));
            return self.answer(ctx, Err(e));
        };
        let f = &self.fronts[idx];
        if !read_only && (self.cfg.read_only || f.seed.read_only) {
            return self.answer(ctx, Err(ZeoError::ReadOnly));
        }
        let last = f.last_tid;
        tracing::info!(conn = ctx.conn.0, storage = %name, read_only, "registered");
        if let Some(c) = self.conns.get_mut(&ctx.conn) {
            c.state = ConnState::Registered(Box::new(Reg {
                storage: StorageIdx(idx),
                read_only: read_only || self.cfg.read_only || self.fronts[idx].seed.read_only,
                txn: None,
                upload: None,
                iters: BTreeMap::new(),
                next_iid: 0,
            }));
        }
        self.answer(ctx, Ok(Reply::Register(Some(last))));
    }

    pub(super) fn reg(&self, conn: ConnId) -> Option<&Reg> {
        self.conns.get(&conn).and_then(|c| c.reg())
    }

    pub(super) fn reg_mut(&mut self, conn: ConnId) -> Option<&mut Reg> {
        self.conns.get_mut(&conn).and_then(|c| c.reg_mut())
    }

    /// Issues a read that reserves an outbox slot.
    fn read(&mut self, ctx: &CallCtx, storage: StorageIdx, request: BackendRequest) {
        let one_oid = false;
        let req = self.request(
            storage,
            request,
            Pending::Read { conn: ctx.conn, msgid: ctx.msgid.clone(), one_oid },
        );
        if let Some(c) = self.conns.get_mut(&ctx.conn) {
            c.outbox.reserve(req);
        }
    }

    /// A call on a registered connection.
    fn call(&mut self, now: Now, ctx: &CallCtx, request: Request) {
        let Some(reg) = self.reg(ctx.conn) else { return };
        let (s, ro) = (reg.storage, reg.read_only);
        let snapshot = self.fronts[s.0].last_tid;
        match request {
            Request::Register { .. } => self.close(ctx.conn, "register called twice"),
            Request::GetInfo => {
                let info = self.fronts[s.0].info();
                self.answer(ctx, Ok(Reply::GetInfo(info)));
            }
            Request::LastTransaction => self.answer(ctx, Ok(Reply::LastTransaction(snapshot))),
            Request::GetInvalidations { tid } => {
                let inv = self.fronts[s.0].invq.since(tid).map(|(tid, oids)| Invalidations { tid, oids });
                self.answer(ctx, Ok(Reply::GetInvalidations(inv)));
            }
            Request::NewOids { n } => {
                if ro {
                    return self.answer(ctx, Err(ZeoError::ReadOnly));
                }
                let n = n.unwrap_or(100).clamp(1, 100) as usize;
                self.read(ctx, s, BackendRequest::NewOids { n });
            }
            Request::NewOid => {
                if ro {
                    return self.answer(ctx, Err(ZeoError::ReadOnly));
                }
                let what = Pending::Read { conn: ctx.conn, msgid: ctx.msgid.clone(), one_oid: true };
                let req = self.request(s, BackendRequest::NewOids { n: 1 }, what);
                if let Some(c) = self.conns.get_mut(&ctx.conn) {
                    c.outbox.reserve(req);
                }
            }
            Request::Ping => self.answer(ctx, Ok(Reply::Nil)),
            Request::SetClientLabel { label } => {
                if let Some(c) = self.conns.get_mut(&ctx.conn) {
                    c.label = label.to_string();
                }
                self.answer(ctx, Ok(Reply::Nil));
            }
            Request::ServerStatus => match self.status(s) {
                Some(st) => self.answer(ctx, Ok(Reply::ServerStatus(Box::new(st)))),
                None => self.answer(ctx, Err(ZeoError::Exception(Text::from_static("no such storage")))),
            },
            Request::LoadBefore { oid, before } => {
                self.fronts[s.0].loads += 1;
                self.read(ctx, s, BackendRequest::LoadBefore { oid, before, snapshot });
            }
            Request::LoadSerial { oid, serial } => {
                self.fronts[s.0].loads += 1;
                self.read(ctx, s, BackendRequest::LoadSerial { oid, serial });
            }
            Request::GetTid { oid } => self.read(ctx, s, BackendRequest::GetTid { oid, snapshot }),
            Request::History { oid, size } => {
                let size = usize::try_from(size.max(1)).unwrap_or(1);
                self.read(ctx, s, BackendRequest::History { oid, size });
            }
            Request::RecordIternext { next } => self.read(ctx, s, BackendRequest::RecordIternext { next }),
            Request::UndoLog { first, last } => self.read(ctx, s, BackendRequest::UndoLog { first, last }),
            Request::UndoInfo { first, last, spec } => {
                self.read(ctx, s, BackendRequest::UndoInfo { first, last, spec })
            }
            Request::SendBlob { oid, serial } => {
                let what = Pending::SendBlob {
                    conn: ctx.conn,
                    msgid: ctx.msgid.clone(),
                    oid,
                    serial,
                    started: false,
                };
                let req = self.request(s, BackendRequest::SendBlob { oid, serial }, what);
                if let Some(c) = self.conns.get_mut(&ctx.conn) {
                    c.outbox.reserve(req);
                }
            }
            Request::Pack { time, wait } => {
                if self.fronts[s.0].pack.is_some() {
                    return self.answer(ctx, Err(ZeoError::Exception(Text::from_static("Already packing"))));
                }
                let msgid = (wait && !ctx.is_async).then(|| ctx.msgid.clone());
                let req =
                    self.request(s, BackendRequest::Pack { time }, Pending::Pack { conn: ctx.conn, msgid });
                self.fronts[s.0].pack = Some(super::front::PackState { req });
                if !wait {
                    self.answer(ctx, Ok(Reply::Nil));
                }
            }
            Request::IteratorStart { start, stop } => self.iterator_start(ctx, s, start, stop),
            Request::IteratorNext { iid } => self.iter_call(ctx, iid, IterOp::Next, false),
            Request::IteratorRecordNext { riid } => self.iter_call(ctx, riid, IterOp::Next, true),
            Request::IteratorRecordStart { txn_iid, tid } => {
                self.iter_call(ctx, txn_iid, IterOp::RecordStart(tid), false)
            }
            Request::IteratorGc { iids } => {
                for IterId(iid) in iids {
                    self.remove_iter(ctx.conn, iid, true);
                }
                self.answer(ctx, Ok(Reply::Nil));
            }
            Request::TpcBegin { txn, user, description, extension, tid, status } => {
                if ro {
                    return self.answer(ctx, Err(ZeoError::ReadOnly));
                }
                let Some(reg) = self.reg_mut(ctx.conn) else { return };
                match &reg.txn {
                    Some(t) if t.id == txn => self.answer(ctx, Ok(Reply::Nil)),
                    Some(_) => self.answer(
                        ctx,
                        Err(ZeoError::StorageTransaction(StorageTxnDetails::Message(Text::from_static(
                            "Multiple simultaneous tpc_begin requests from one client.",
                        )))),
                    ),
                    None => {
                        reg.txn = Some(Txn {
                            id: txn,
                            user,
                            description,
                            extension,
                            tid,
                            status,
                            ops: Vec::new(),
                            phase: Phase::Open,
                        });
                        self.answer(ctx, Ok(Reply::Nil));
                    }
                }
            }
            Request::Storea { oid, serial, data, txn } => {
                self.fronts[s.0].stores += 1;
                self.buffer(ctx, &txn, TxnOp::Store { oid, serial, data });
            }
            Request::CheckCurrentSerialInTransaction { oid, serial, txn } => {
                self.buffer(ctx, &txn, TxnOp::CheckCurrent { oid, serial });
            }
            Request::DeleteObject { oid, serial, txn } => {
                self.fronts[s.0].stores += 1;
                self.buffer(ctx, &txn, TxnOp::Delete { oid, serial });
            }
            Request::Restorea { oid, serial, data, prev_txn, txn } => {
                self.fronts[s.0].stores += 1;
                self.buffer(ctx, &txn, TxnOp::Restore { oid, serial, data, prev_txn });
            }
            Request::Undoa { undo_id, txn } => {
                self.buffer(ctx, &txn, TxnOp::Undo { undo_id });
            }
            Request::StoreBlobStart => {
                if let Some(old) = self.reg_mut(ctx.conn).and_then(|r| r.upload.take()) {
                    self.request(s, BackendRequest::BlobUploadDrop { upload: old }, Pending::Ignore);
                }
                let upload = self.fronts[s.0].new_upload();
                if let Some(r) = self.reg_mut(ctx.conn) {
                    r.upload = Some(upload);
                }
                self.request(
                    s,
                    BackendRequest::BlobUploadStart { upload },
                    Pending::Upload { conn: ctx.conn },
                );
                self.answer(ctx, Ok(Reply::Nil));
            }
            Request::StoreBlobChunk { chunk } => {
                let Some(upload) = self.reg(ctx.conn).and_then(|r| r.upload) else {
                    let e = ZeoError::Exception(Text::from_static("storeBlobChunk without storeBlobStart"));
                    return self.answer(ctx, Err(e));
                };
                self.request(
                    s,
                    BackendRequest::BlobUploadChunk { upload, chunk },
                    Pending::Upload { conn: ctx.conn },
                );
                self.answer(ctx, Ok(Reply::Nil));
            }
            Request::StoreBlobEnd { oid, serial, data, txn } => {
                let Some(upload) = self.reg(ctx.conn).and_then(|r| r.upload) else {
                    let e = ZeoError::Exception(Text::from_static("storeBlobEnd without storeBlobStart"));
                    return self.answer(ctx, Err(e));
                };
                self.fronts[s.0].stores += 1;
                if self.buffer(ctx, &txn, TxnOp::StoreBlob { oid, serial, data, upload }) {
                    if let Some(r) = self.reg_mut(ctx.conn) {
                        r.upload = None;
                    }
                }
            }
            Request::StoreBlobShared { .. } => {
                tracing::info!(conn = ctx.conn.0, "storeBlobShared refused: no shared blob directory");
                let e = ZeoError::ValueError(Text::from_static("this server has no shared blob directory"));
                self.answer(ctx, Err(e));
            }
            Request::Vote { txn } => self.vote(now, ctx, &txn),
            Request::TpcFinish { txn } => self.tpc_finish(ctx, &txn),
            Request::TpcAbort { txn } => self.tpc_abort(now, ctx, &txn),
            Request::Unknown { name, .. } => self.close(ctx.conn, &format!("unknown method {name}")),
        }
    }

    /// The `StorageTransactionError([current, given])` for a call naming `given`.
    pub(super) fn txn_mismatch(&self, conn: ConnId, given: &TxnId) -> Option<ZeoError> {
        let current = self.reg(conn).and_then(|r| r.txn.as_ref()).map(|t| &t.id);
        if current == Some(given) {
            return None;
        }
        Some(ZeoError::StorageTransaction(StorageTxnDetails::Mismatch {
            current: current.cloned(),
            given: given.clone(),
        }))
    }

    /// Buffers an operation in the open transaction; true when it was buffered.
    fn buffer(&mut self, ctx: &CallCtx, txn: &TxnId, op: TxnOp) -> bool {
        if let Some(e) = self.txn_mismatch(ctx.conn, txn) {
            self.answer(ctx, Err(e));
            return false;
        }
        let Some(t) = self.reg_mut(ctx.conn).and_then(|r| r.txn.as_mut()) else { return false };
        if !matches!(t.phase, Phase::Open) {
            let msg = format!("transaction is {}: no more operations", t.phase.name());
            self.answer(ctx, Err(ZeoError::StorageTransaction(StorageTxnDetails::Message(Text::from(msg)))));
            return false;
        }
        t.ops.push(op);
        self.answer(ctx, Ok(Reply::Nil));
        true
    }

    // -----------------------------------------------------------------------------------------
    // Iterators
    // -----------------------------------------------------------------------------------------

    fn iterator_start(&mut self, ctx: &CallCtx, s: StorageIdx, start: Option<Tid>, stop: Option<Tid>) {
        let iter = self.fronts[s.0].new_iter();
        let Some(reg) = self.reg_mut(ctx.conn) else { return };
        let iid = reg.next_iid;
        reg.next_iid += 1;
        let what = Pending::Iter { conn: ctx.conn, iid, msgid: ctx.msgid.clone(), op: IterReq::Start };
        let req = self.request(s, BackendRequest::IterStart { iter, start, stop }, what);
        let Some(c) = self.conns.get_mut(&ctx.conn) else { return };
        c.outbox.reserve(req);
        if let Some(reg) = c.reg_mut() {
            reg.iters.insert(
                iid,
                Iter {
                    backend: iter,
                    records: false,
                    last_txn: None,
                    in_flight: Some(req),
                    queue: VecDeque::new(),
                },
            );
        }
    }

    /// `iterator_next` / `iterator_record_next` / `iterator_record_start` on iterator `iid`.
    fn iter_call(&mut self, ctx: &CallCtx, iid: IterId, op: IterOp, records: bool) {
        let Some(reg) = self.reg(ctx.conn) else { return };
        let s = reg.storage;
        let fits = reg.iters.get(&iid.0).is_some_and(|it| it.records == records);
        if !fits {
            let key = Value::tuple(vec![Value::Int(i128::from(iid.0))]);
            return self.answer(ctx, Err(ZeoError::KeyError(key)));
        }
        let req = self.new_req();
        let what = Pending::Iter { conn: ctx.conn, iid: iid.0, msgid: ctx.msgid.clone(), op: IterReq::Next };
        self.pending.insert(req, PendingEntry { storage: s, what, emitted: false });
        let Some(c) = self.conns.get_mut(&ctx.conn) else { return };
        c.outbox.reserve(req);
        if let Some(it) = c.reg_mut().and_then(|r| r.iters.get_mut(&iid.0)) {
            it.queue.push_back((req, ctx.msgid.clone(), op));
        }
        self.pump_iter(ctx.conn, iid.0);
    }

    /// Emits the next queued call of iterator `iid` if nothing is in flight.
    pub(super) fn pump_iter(&mut self, conn: ConnId, iid: i64) {
        loop {
            let Some(reg) = self.reg_mut(conn) else { return };
            let s = reg.storage;
            let Some(it) = reg.iters.get_mut(&iid) else { return };
            if it.in_flight.is_some() {
                return;
            }
            let Some((req, msgid, op)) = it.queue.pop_front() else { return };
            let (backend, records, last) = (it.backend, it.records, it.last_txn);
            let (request, iop) = match op {
                IterOp::Next if records => (BackendRequest::IterRecordNext { iter: backend }, IterReq::Next),
                IterOp::Next => (BackendRequest::IterNext { iter: backend }, IterReq::Next),
                IterOp::RecordStart(tid) => {
                    if last != Some(tid) {
                        self.pending.remove(&req);
                        let e = ZeoError::Exception(Text::from(format!(
                            "iterator_record_start: {tid} is not the transaction the iterator returned last"
                        )));
                        self.fill(conn, req, &crate::wire::message::ServerMessage::Error { msgid, error: e });
                        continue;
                    }
                    let riid = reg.next_iid;
                    reg.next_iid += 1;
                    let rb = self.fronts[s.0].new_iter();
                    (
                        BackendRequest::IterRecordStart { iter: rb, txn_iter: backend, tid },
                        IterReq::RecordStart { riid, backend: rb },
                    )
                }
            };
            if let Some(it) = self.reg_mut(conn).and_then(|r| r.iters.get_mut(&iid)) {
                it.in_flight = Some(req);
            }
            if let Some(p) = self.pending.get_mut(&req) {
                p.emitted = true;
                p.what = Pending::Iter { conn, iid, msgid, op: iop };
            }
            self.actions.push_back(Action::Backend { storage: s, id: req, request });
            return;
        }
    }

    /// Forgets iterator `iid`: queued calls get `KeyError`; `drop` tells the backend.
    pub(super) fn remove_iter(&mut self, conn: ConnId, iid: i64, drop: bool) {
        let Some(reg) = self.reg_mut(conn) else { return };
        let s = reg.storage;
        let Some(it) = reg.iters.remove(&iid) else { return };
        for (req, msgid, _) in it.queue {
            self.pending.remove(&req);
            let key = Value::tuple(vec![Value::Int(i128::from(iid))]);
            self.fill(
                conn,
                req,
                &crate::wire::message::ServerMessage::Error { msgid, error: ZeoError::KeyError(key) },
            );
        }
        if drop {
            self.request(s, BackendRequest::IterDrop { iters: vec![it.backend] }, Pending::Ignore);
        }
    }
}
