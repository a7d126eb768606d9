//! Server frames → outcomes: replies matched to their calls, and pushes.

use bytes::Bytes;

use super::{ClientError, ClientEvent, Expect, IterSlot, Phase, ZeoClient};
use crate::ids::{Oid, Tid};
use crate::wire::error::ZeoError;
use crate::wire::message::{MsgId, ServerMessage};
use crate::wire::push::Push;
use crate::wire::reply::{Reply, StorageInfo, VoteItem};
use crate::wire::request::{Method, Request};
use crate::wire::types::TxnId;
use crate::wire::value::Value;
use crate::zeo::backend::{BackendError, BackendInfo, BackendOutcome, BackendReqId, Culprit, StorageSize};

/// Whose fault an error reply is: the client's (the request was wrong for the data: conflicts,
/// unknown oids, impossible undo, read-only, wrong transaction use) or the backend's (anything
/// else, e.g. an I/O error or an exception the server did not expect).
pub fn culprit_of(e: &ZeoError) -> Culprit {
    match e {
        ZeoError::Conflict(_)
        | ZeoError::ReadConflict(_)
        | ZeoError::BTreesConflict { .. }
        | ZeoError::PosKey(_)
        | ZeoError::ReadOnly
        | ZeoError::StorageTransaction(_)
        | ZeoError::Undo(_)
        | ZeoError::MultipleUndo(_)
        | ZeoError::KeyError(_) => Culprit::Client,
        _ => Culprit::Backend,
    }
}

pub(super) fn failed(error: ZeoError) -> BackendOutcome {
    let culprit = culprit_of(&error);
    BackendOutcome::Failed(BackendError { error, culprit })
}

fn size_of(info: &StorageInfo, old: StorageSize) -> StorageSize {
    StorageSize {
        length: info.length.and_then(|l| u64::try_from(l).ok()).unwrap_or(old.length),
        size: info.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(old.size),
    }
}

impl ZeoClient {
    pub(super) fn handle_frame(&mut self, frame: &Bytes) -> Result<(), ClientError> {
        match self.codec()?.decode_server(frame)? {
            ServerMessage::Push(p) => self.on_push(p),
            ServerMessage::Reply { msgid, result } => {
                let (method, expect) = self.take_expect(&msgid)?;
                let reply = Reply::from_value(method, &result)
                    .map_err(|error| ClientError::ReplyType { method: method.name(), error });
                match reply {
                    Ok(reply) => self.on_reply_answering(expect, Ok(reply)),
                    Err(e) => {
                        // The call is no longer in flight: answer it here, fail_all cannot.
                        if let Some(id) = expect.request_id() {
                            self.answer(id, super::backend_failure(e.to_string()));
                        }
                        Err(e)
                    }
                }
            }
            ServerMessage::Error { msgid, error } => {
                let (_, expect) = self.take_expect(&msgid)?;
                self.on_reply_answering(expect, Err(error))
            }
        }
    }

    /// [`ZeoClient::on_reply`], making sure that the request is answered when the reply turns
    /// out to be a protocol error (the call has left the calls in flight, so `fail_all` would
    /// not answer it).
    fn on_reply_answering(
        &mut self,
        expect: Expect,
        reply: Result<Reply, ZeoError>,
    ) -> Result<(), ClientError> {
        let id = expect.request_id();
        let before = self.events.len();
        let r = self.on_reply(expect, reply);
        if let (Err(e), Some(id)) = (&r, id) {
            let answered = self.events.iter().skip(before).any(
                |ev| matches!(ev, ClientEvent::Outcome { id: i, outcome } if *i == id && !outcome.is_partial()),
            );
            if !answered {
                self.answer(id, super::backend_failure(e.to_string()));
            }
        }
        r
    }

    /// The call a reply answers, removed from the calls in flight.
    fn take_expect(&mut self, msgid: &MsgId) -> Result<(Method, Expect), ClientError> {
        if let Some(n) = msgid.as_int().and_then(|n| i64::try_from(n).ok()) {
            if let Some(found) = self.pending.remove(&n) {
                return Ok(found);
            }
        }
        if let Some([o, t]) = msgid.0.as_seq() {
            let key = o
                .as_bytes()
                .and_then(|b| Oid::from_slice(b))
                .zip(t.as_bytes().and_then(|b| Tid::from_slice(b)));
            if let Some(key) = key {
                if let Some(q) = self.loads.get_mut(&key) {
                    let expect = q.pop_front();
                    if q.is_empty() {
                        self.loads.remove(&key);
                    }
                    if let Some(expect) = expect {
                        return Ok((Method::LoadBefore, expect));
                    }
                }
            }
        }
        Err(ClientError::UnknownMsgId(msgid.0.clone()))
    }

    fn on_reply(&mut self, expect: Expect, reply: Result<Reply, ZeoError>) -> Result<(), ClientError> {
        let storage = || self.cfg.storage.clone();
        match (expect, reply) {
            (Expect::Register, Ok(_)) => {
                self.phase = Phase::FetchingInfo;
                self.call(Request::GetInfo, Expect::SetupInfo)?;
                self.call(Request::LastTransaction, Expect::SetupLast)?;
            }
            (Expect::Register | Expect::SetupInfo | Expect::SetupLast, Err(error)) => {
                return Err(ClientError::Register { storage: storage(), error: Box::new(error) });
            }
            (Expect::SetupInfo, Ok(Reply::GetInfo(info))) => {
                self.size = size_of(&info, self.size);
                self.setup_info = Some(info);
                self.maybe_ready()?;
            }
            (Expect::SetupLast, Ok(Reply::LastTransaction(tid))) => {
                self.setup_last = Some(tid);
                self.maybe_ready()?;
            }
            (Expect::Probe(call), reply) => self.on_probe_reply(call, reply)?,
            (Expect::Load { id, snapshot }, Ok(Reply::LoadBefore(r))) => {
                let r = r.map(|mut r| {
                    if r.end.is_some_and(|end| end > snapshot) {
                        r.end = None; // current as of the snapshot
                    }
                    r
                });
                self.answer(id, BackendOutcome::LoadBefore(r));
            }
            (Expect::GetTid { id, oid }, Ok(Reply::LoadBefore(r))) => {
                let outcome = match r {
                    Some(r) => BackendOutcome::Tid(r.start),
                    None => failed(ZeoError::pos_key(oid)),
                };
                self.answer(id, outcome);
            }
            (Expect::Plain { id }, Ok(reply)) => {
                let outcome = match reply {
                    Reply::LoadSerial(d) => BackendOutcome::Data(d),
                    Reply::History(h) => BackendOutcome::History(h),
                    Reply::RecordIternext(r) => BackendOutcome::RecordIternext(r),
                    Reply::NewOids(o) => BackendOutcome::NewOids(o),
                    Reply::UndoLog(u) => BackendOutcome::UndoLog(u),
                    other => return Err(unexpected("a plain call", &other)),
                };
                self.answer(id, outcome);
            }
            (Expect::IterOpen { id, iter }, Ok(Reply::IterId(iid))) => {
                match self.iters.remove(&iter) {
                    Some(IterSlot::Opening { waiting, dropped: false, bound }) => {
                        self.iters.insert(iter, IterSlot::Open { iid, bound });
                        self.answer(id, BackendOutcome::Nil);
                        for (wid, req) in waiting {
                            self.start(wid, req)?;
                        }
                    }
                    Some(IterSlot::Opening { waiting, dropped: true, .. }) => {
                        self.cast(Request::IteratorGc { iids: vec![iid] })?;
                        self.answer(id, BackendOutcome::Nil);
                        for (wid, _) in waiting {
                            self.answer(
                                wid,
                                super::backend_failure(format!("iterator {} was dropped", iter.0)),
                            );
                        }
                    }
                    other => {
                        // Cannot happen: the slot is created with the call and only this reply
                        // moves it out of `Opening`.
                        if let Some(slot) = other {
                            self.iters.insert(iter, slot);
                        }
                        self.answer(id, BackendOutcome::Nil);
                    }
                }
            }
            (Expect::IterOpen { id, iter }, Err(error)) => {
                let waiting = match self.iters.remove(&iter) {
                    Some(IterSlot::Opening { waiting, .. }) => waiting,
                    _ => Vec::new(),
                };
                for (wid, _) in waiting {
                    self.answer(wid, failed(error.clone()));
                }
                self.answer(id, failed(error));
            }
            (Expect::IterStep { id, iter }, Ok(Reply::IteratorNext(h))) => {
                if h.is_none() {
                    self.iters.remove(&iter); // the server freed it
                }
                self.answer(id, BackendOutcome::Txn(h));
            }
            (Expect::IterStep { id, iter }, Ok(Reply::IteratorRecordNext(r))) => {
                if r.is_none() {
                    self.iters.remove(&iter);
                }
                self.answer(id, BackendOutcome::Record(r));
            }
            (Expect::Ahead { key, call }, reply) => self.on_ahead_reply(key, call, reply)?,
            (Expect::SendBlob { id, oid, serial }, reply) => {
                if let Some(at) = self.blob_reads.iter().position(|&(o, s, i)| (o, s, i) == (oid, serial, id))
                {
                    self.blob_reads.remove(at);
                }
                let outcome = match reply {
                    Ok(Reply::Nil) => BackendOutcome::Nil,
                    Ok(other) => return Err(unexpected("sendBlob", &other)),
                    Err(e) => failed(e),
                };
                self.answer(id, outcome);
            }
            (Expect::Vote { id }, Ok(Reply::Vote(items))) => self.on_voted(id, items)?,
            (Expect::Vote { id }, Err(error)) => {
                // The server already dropped the transaction; tpc_abort is a harmless no-op
                // that makes sure (§8 item 17).
                if let Some(t) = self.txn.take() {
                    for u in &t.uploads {
                        self.uploads.remove(u);
                    }
                    self.call(Request::TpcAbort { txn: txid(t.txid) }, Expect::Cleanup)?;
                }
                self.answer(id, failed(error));
            }
            (Expect::Finish { id, tid }, reply) => {
                if let Some(t) = self.txn.take() {
                    for u in &t.uploads {
                        self.uploads.remove(u);
                    }
                }
                let outcome = match reply {
                    Ok(Reply::TpcFinish(Some(t))) if t == tid => {
                        self.known_last = self.known_last.max(t);
                        BackendOutcome::Finished { tid, size: self.size }
                    }
                    Ok(Reply::TpcFinish(Some(t))) => {
                        super::backend_failure(format!("the transaction finished as {t}, expected {tid}"))
                    }
                    Ok(Reply::TpcFinish(None)) => {
                        super::backend_failure(format!("tpc_finish of {tid}: the server had no transaction"))
                    }
                    Ok(other) => return Err(unexpected("tpc_finish", &other)),
                    Err(error) => BackendOutcome::Failed(BackendError { error, culprit: Culprit::Backend }),
                };
                self.answer(id, outcome);
            }
            (Expect::Abort { id }, reply) => {
                let outcome = match reply {
                    Ok(_) => BackendOutcome::Nil,
                    Err(e) => failed(e),
                };
                self.answer(id, outcome);
            }
            (Expect::Cleanup, _) => {}
            (Expect::Pack { id }, Ok(_)) => self.call(Request::GetInfo, Expect::PackInfo { id })?,
            (Expect::Pack { id }, Err(e)) => self.answer(id, failed(e)),
            (Expect::PackInfo { id }, Ok(Reply::GetInfo(info))) => {
                self.size = size_of(&info, self.size);
                self.answer(id, BackendOutcome::Packed { size: self.size });
            }
            (
                Expect::Load { id, .. }
                | Expect::GetTid { id, .. }
                | Expect::Plain { id }
                | Expect::IterStep { id, .. }
                | Expect::PackInfo { id },
                Err(e),
            ) => self.answer(id, failed(e)),
            (expect, Ok(other)) => return Err(unexpected(&format!("{expect:?}"), &other)),
        }
        Ok(())
    }

    fn on_voted(&mut self, id: BackendReqId, items: Vec<VoteItem>) -> Result<(), ClientError> {
        let Some(txn) = self.txn.as_mut() else {
            // The core aborted while the vote was in flight (outside the contract): the server
            // has processed our tpc_abort after this vote, so nothing is open.
            self.answer(id, super::backend_failure("the transaction was aborted during its vote"));
            return Ok(());
        };
        if items.iter().any(|i| matches!(i, VoteItem::Conflict { .. })) {
            // Client-conflict-resolution mode: the server keeps the ZEO transaction; abort it so
            // that nothing stays open (the contract of `Vote`). The uploads stay for the re-vote.
            let t = txid(txn.txid);
            self.txn = None;
            self.call(Request::TpcAbort { txn: t }, Expect::Cleanup)?;
            self.answer(id, BackendOutcome::Conflicts(items));
            return Ok(());
        }
        let changed: Vec<Oid> = items
            .into_iter()
            .filter_map(|i| match i {
                VoteItem::Oid(o) => Some(o),
                VoteItem::Conflict { .. } => None,
            })
            .collect();
        let mut invalidated = txn.written.clone();
        for o in &changed {
            if !invalidated.contains(o) {
                invalidated.push(*o);
            }
        }
        txn.voted = true;
        self.answer(id, BackendOutcome::Voted { changed, invalidated });
        Ok(())
    }

    fn maybe_ready(&mut self) -> Result<(), ClientError> {
        match (self.phase, &self.setup_info, self.setup_last) {
            (Phase::FetchingInfo, Some(_), Some(last)) => self.begin_check(last),
            _ => Ok(()),
        }
    }

    /// The set-up is complete: `last` is the last tid reported to the driver, `bound` the one
    /// the read-ahead may count on (see `probe`).
    pub(super) fn become_ready(&mut self, last: Tid, bound: Tid) -> Result<(), ClientError> {
        let Some(info) = &self.setup_info else {
            return Err(ClientError::Failed("ready without get_info".into()));
        };
        let blobs = info.interfaces.as_ref().is_some_and(|ifs| {
            ifs.iter().any(|(m, n)| m.as_str() == "ZODB.interfaces" && n.as_str() == "IBlobStorage")
        });
        let ready = BackendInfo {
            last_tid: last,
            size: self.size,
            blobs,
            supports_undo: info.supports_undo.unwrap_or(false),
            info_name: info.name.as_ref().map(|n| n.as_str().to_owned()).unwrap_or_default(),
            read_only: self.cfg.read_only,
            rebuildable: false,
        };
        self.known_last = self.known_last.max(bound);
        self.phase = Phase::Ready;
        self.events.push_back(ClientEvent::Ready(ready));
        while let Some((id, req)) = self.queued.pop_front() {
            self.start(id, req)?;
        }
        Ok(())
    }

    fn on_push(&mut self, push: Push) -> Result<(), ClientError> {
        match push {
            Push::InvalidateTransaction { tid, .. } => {
                // Finished on the server: an iterator opened from now on returns it.
                self.known_last = self.known_last.max(tid);
                self.events.push_back(ClientEvent::ForeignCommit { tid });
                if !self.warned_invalidation {
                    self.warned_invalidation = true;
                    tracing::warn!(
                        "someone else writes to this backend (invalidation for {tid}); \
                         its data may disagree with the other backends"
                    );
                }
            }
            Push::Info(info) => self.size = size_of(&info, self.size),
            Push::ReceiveBlobStart { oid, serial } | Push::ReceiveBlobStop { oid, serial } => {
                if !self.blob_reads.iter().any(|&(o, s, _)| (o, s) == (oid, serial)) {
                    return Err(ClientError::UnexpectedPush(format!(
                        "blob push for {oid}@{serial} nobody asked for"
                    )));
                }
            }
            Push::ReceiveBlobChunk { oid, serial, chunk } => {
                let Some(&(_, _, id)) = self.blob_reads.iter().find(|&&(o, s, _)| (o, s) == (oid, serial))
                else {
                    return Err(ClientError::UnexpectedPush(format!(
                        "blob chunk for {oid}@{serial} nobody asked for"
                    )));
                };
                self.answer(id, BackendOutcome::BlobChunk(chunk));
            }
            Push::Unknown { name, .. } => {
                tracing::debug!("ignoring an unknown push {:?}", name.as_str());
            }
        }
        Ok(())
    }
}

fn txid(n: i64) -> TxnId {
    TxnId(Value::Int(i128::from(n)))
}

pub(super) fn unexpected(what: &str, reply: &Reply) -> ClientError {
    ClientError::Unexpected(format!("reply to {what} of an unexpected type: {reply:?}"))
}
