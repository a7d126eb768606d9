//! Backend outcomes: replies for reads, the commit path's progress, packs.

use crate::ids::ConnId;
use crate::wire::error::ZeoError;
use crate::wire::message::{MsgId, ServerMessage};
use crate::wire::push::Push;
use crate::wire::reply::{Reply, VoteItem};
use crate::wire::types::IterId;
use crate::wire::value::{Text, Value};
use crate::zeo::backend::{BackendOutcome, BackendReqId, TxnOp};
use crate::zeo::events::{Now, StorageIdx};

use super::conn::{Iter, Phase};
use super::{IterReq, Pending, Server};

/// The reply (or error reply) a read outcome stands for.
fn read_message(msgid: MsgId, outcome: BackendOutcome) -> ServerMessage {
    let reply = match outcome {
        BackendOutcome::Nil => Reply::Nil,
        BackendOutcome::LoadBefore(r) => Reply::LoadBefore(r),
        BackendOutcome::Data(d) => Reply::LoadSerial(d),
        BackendOutcome::Tid(t) => Reply::GetTid(t),
        BackendOutcome::History(h) => Reply::History(h),
        BackendOutcome::RecordIternext(r) => Reply::RecordIternext(r),
        BackendOutcome::NewOids(o) => Reply::NewOids(o),
        BackendOutcome::UndoLog(u) => Reply::UndoLog(u),
        BackendOutcome::Txn(t) => Reply::IteratorNext(t),
        BackendOutcome::Record(r) => Reply::IteratorRecordNext(r),
        other => return ServerMessage::Error { msgid, error: outcome_error(other) },
    };
    ServerMessage::reply(msgid, &reply)
}

/// The error to send for a failed (or unexpected) outcome.
fn outcome_error(outcome: BackendOutcome) -> ZeoError {
    match outcome {
        BackendOutcome::Failed(e) => e.error,
        other => {
            tracing::warn!(outcome = ?other, "unexpected backend outcome");
            ZeoError::Exception(Text::from_static("unexpected backend outcome"))
        }
    }
}

impl Server {
    pub(super) fn on_outcome(
        &mut self,
        now: Now,
        storage: StorageIdx,
        id: BackendReqId,
        outcome: BackendOutcome,
    ) {
        self.last_now = now;
        let Some(entry) = self.pending.get_mut(&id) else {
            tracing::warn!(storage = storage.0, req = id.0, "outcome for an unknown request");
            return;
        };
        if entry.storage != storage || !entry.emitted {
            tracing::warn!(storage = storage.0, req = id.0, "outcome from the wrong storage");
            return;
        }
        // Partial sendBlob outcomes keep the request pending.
        if let (Pending::SendBlob { conn, oid, serial, started, .. }, BackendOutcome::BlobChunk(chunk)) =
            (&mut entry.what, &outcome)
        {
            let (conn, oid, serial, first) = (*conn, *oid, *serial, !*started);
            *started = true;
            let mut bytes = Vec::new();
            if first {
                bytes.extend(self.encode(conn, &ServerMessage::Push(Push::ReceiveBlobStart { oid, serial })));
            }
            let push = Push::ReceiveBlobChunk { oid, serial, chunk: chunk.clone() };
            bytes.extend(self.encode(conn, &ServerMessage::Push(push)));
            if let Some(c) = self.conns.get_mut(&conn) {
                c.outbox.append(id, &bytes);
            }
            return;
        }
        // Group commit: the lock passes on, the Finish stays pending until durable.
        if let (Pending::Finish { conn, released, .. }, BackendOutcome::Committed { tid }) =
            (&mut entry.what, &outcome)
        {
            if *released {
                tracing::warn!(storage = storage.0, req = id.0, "a second Committed for one Finish");
                return;
            }
            *released = true;
            let (conn, tid) = (*conn, *tid);
            self.committed_early(now, storage, id, conn, tid);
            return;
        }
        let Some(entry) = self.pending.remove(&id) else { return };
        let s = entry.storage;
        match entry.what {
            Pending::Read { conn, msgid, one_oid: true } => {
                let msg = match outcome {
                    BackendOutcome::NewOids(oids) if oids.len() == 1 => {
                        let oid = oids
                            .into_iter()
                            .next()
                            .map_or(Value::None, |o| Value::bytes(o.to_bytes().to_vec()));
                        ServerMessage::reply(msgid, &Reply::Raw(oid))
                    }
                    other => read_message(msgid, other),
                };
                self.fill(conn, id, &msg);
            }
            Pending::Read { conn, msgid, one_oid: false } => {
                let msg = read_message(msgid, outcome);
                self.fill(conn, id, &msg);
            }
            Pending::SendBlob { conn, msgid, oid, serial, started } => {
                let mut bytes = Vec::new();
                let r = match outcome {
                    BackendOutcome::Nil => {
                        if !started {
                            bytes.extend(
                                self.encode(
                                    conn,
                                    &ServerMessage::Push(Push::ReceiveBlobStart { oid, serial }),
                                ),
                            );
                        }
                        bytes.extend(
                            self.encode(conn, &ServerMessage::Push(Push::ReceiveBlobStop { oid, serial })),
                        );
                        ServerMessage::reply(msgid, &Reply::Nil)
                    }
                    other => ServerMessage::Error { msgid, error: outcome_error(other) },
                };
                bytes.extend(self.encode(conn, &r));
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.outbox.fill(id, &bytes);
                    self.dirty.insert(conn);
                }
            }
            Pending::Iter { conn, iid, msgid, op } => self.iter_outcome(conn, id, iid, msgid, op, outcome),
            Pending::Upload { conn } => {
                if let BackendOutcome::Failed(e) = outcome {
                    tracing::warn!(conn = conn.0, storage = %self.storage_name(s), error = ?e.error, "blob upload failed");
                    self.close(conn, "blob upload failed");
                }
            }
            Pending::Vote { conn, msgid, tid, uploads } => {
                self.fronts[s.0].write = None;
                self.vote_outcome(now, s, id, conn, msgid, tid, uploads, outcome);
            }
            Pending::Finish { conn, msgid, tid: finishing, invalidated, released } => {
                let f = &mut self.fronts[s.0];
                if f.write == Some(id) {
                    f.write = None;
                }
                if released {
                    f.committing = f.committing.saturating_sub(1);
                }
                match outcome {
                    BackendOutcome::Finished { tid, size } => self.committed(
                        now,
                        s,
                        conn,
                        msgid,
                        super::commit::Commit { tid, size, invalidated },
                        released,
                    ),
                    other => {
                        let error = outcome_error(other);
                        tracing::warn!(conn = conn.0, storage = %self.storage_name(s), error = ?error, "finish failed");
                        // The outcome is in doubt: a backend may have committed it (a RAID leg
                        // that finished, then disconnected). Its tid is never chosen again, or a
                        // different transaction would share it with that commit.
                        let f = &mut self.fronts[s.0];
                        f.committed_tid = f.committed_tid.max(finishing);
                        if let Some(r) = self.reg_mut(conn) {
                            r.txn = None;
                        }
                        if self.conns.contains_key(&conn) {
                            self.error(conn, msgid, error);
                        }
                        if !released {
                            self.release_and_next(now, s, conn);
                        }
                    }
                }
            }
            Pending::Abort => {
                let f = &mut self.fronts[s.0];
                f.aborts_in_flight = f.aborts_in_flight.saturating_sub(1);
                if let BackendOutcome::Failed(e) = outcome {
                    tracing::warn!(storage = %f.seed.name, error = ?e.error, "abort failed");
                }
            }
            Pending::Pack { conn, msgid } => {
                self.fronts[s.0].pack = None;
                match outcome {
                    BackendOutcome::Packed { size } => {
                        self.fronts[s.0].size = size;
                        let info = self.fronts[s.0].size_info();
                        for c in self.conns_of(s) {
                            self.push(c, Push::Info(info.clone()));
                        }
                        if let Some(m) = msgid {
                            self.reply(conn, m, &Reply::Nil);
                        }
                    }
                    other => {
                        let error = outcome_error(other);
                        tracing::warn!(storage = %self.storage_name(s), error = ?error, "pack failed");
                        if let Some(m) = msgid {
                            if self.conns.contains_key(&conn) {
                                self.error(conn, m, error);
                            }
                        }
                    }
                }
            }
            Pending::Ignore => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn vote_outcome(
        &mut self,
        now: Now,
        s: StorageIdx,
        id: BackendReqId,
        conn: ConnId,
        msgid: MsgId,
        tid: crate::ids::Tid,
        uploads: Vec<crate::zeo::backend::UploadId>,
        outcome: BackendOutcome,
    ) {
        let live = self
            .reg_mut(conn)
            .and_then(|r| r.txn.as_ref())
            .is_some_and(|t| matches!(t.phase, Phase::Voting { req, abort: false } if req == id));
        if !live {
            // tpc_abort arrived while the vote was in flight: forget the transaction now.
            if let Some(r) = self.reg_mut(conn) {
                if r.txn.as_ref().is_some_and(|t| matches!(t.phase, Phase::Voting { req, .. } if req == id)) {
                    r.txn = None;
                    self.fronts[s.0].aborts += 1;
                }
            }
            match outcome {
                BackendOutcome::Voted { .. } => self.orphan_vote(now, s, conn, Some(tid)),
                BackendOutcome::Conflicts(_) => {
                    self.drop_uploads(s, &uploads);
                    self.orphan_vote(now, s, conn, None);
                }
                _ => self.orphan_vote(now, s, conn, None),
            }
            if self.conns.contains_key(&conn) {
                self.error(
                    conn,
                    msgid,
                    ZeoError::StorageTransaction(crate::wire::error::StorageTxnDetails::Message(
                        Text::from_static("transaction aborted"),
                    )),
                );
            }
            return;
        }
        match outcome {
            BackendOutcome::Voted { changed, invalidated } => {
                if crate::mutation::active(crate::mutation::Mutation::InvalidateBeforeFinish) {
                    self.invalidate_others(s, conn, tid, &invalidated);
                }
                if let Some(t) = self.reg_mut(conn).and_then(|r| r.txn.as_mut()) {
                    t.phase = Phase::Voted { tid, invalidated };
                }
                let items = changed.into_iter().map(VoteItem::Oid).collect();
                self.reply(conn, msgid, &Reply::Vote(items));
            }
            BackendOutcome::Conflicts(items) => {
                self.fronts[s.0].conflicts += items.len() as i64;
                let mut dropped = Vec::new();
                if let Some(t) = self.reg_mut(conn).and_then(|r| r.txn.as_mut()) {
                    t.phase = Phase::Open;
                    // The conflicting stores are replaced by the client's resolved ones.
                    t.ops.retain(|op| {
                        let (oid, serial, upload) = match op {
                            TxnOp::Store { oid, serial, .. } => (*oid, *serial, None),
                            TxnOp::StoreBlob { oid, serial, upload, .. } => (*oid, *serial, Some(*upload)),
                            _ => return true,
                        };
                        let hit = items.iter().any(|i| {
                            matches!(i, VoteItem::Conflict { oid: o, read, .. } if *o == oid && *read == serial)
                        });
                        if hit {
                            dropped.extend(upload);
                        }
                        !hit
                    });
                }
                self.drop_uploads(s, &dropped);
                self.reply(conn, msgid, &Reply::Vote(items));
                self.release_and_next(now, s, conn);
            }
            other => {
                let error = outcome_error(other);
                if let Some(r) = self.reg_mut(conn) {
                    r.txn = None;
                }
                self.error(conn, msgid, error);
                self.release_and_next(now, s, conn);
            }
        }
    }

    fn iter_outcome(
        &mut self,
        conn: ConnId,
        id: BackendReqId,
        iid: i64,
        msgid: MsgId,
        op: IterReq,
        outcome: BackendOutcome,
    ) {
        if let Some(it) = self.reg_mut(conn).and_then(|r| r.iters.get_mut(&iid)) {
            if it.in_flight == Some(id) {
                it.in_flight = None;
            }
        }
        let failed = matches!(outcome, BackendOutcome::Failed(_));
        let r = match (op, outcome) {
            (IterReq::Start, BackendOutcome::Nil) => Ok(Reply::IterId(IterId(iid))),
            (IterReq::RecordStart { riid, backend }, BackendOutcome::Nil) => {
                if let Some(reg) = self.reg_mut(conn) {
                    reg.iters.insert(
                        riid,
                        Iter {
                            backend,
                            records: true,
                            last_txn: None,
                            in_flight: None,
                            queue: Default::default(),
                        },
                    );
                }
                Ok(Reply::IterId(IterId(riid)))
            }
            (IterReq::Next, BackendOutcome::Txn(t)) => {
                let end = t.is_none();
                if let Some(it) = self.reg_mut(conn).and_then(|r| r.iters.get_mut(&iid)) {
                    it.last_txn = t.as_ref().map(|h| h.tid);
                }
                if end {
                    self.remove_iter(conn, iid, false);
                }
                Ok(Reply::IteratorNext(t))
            }
            (IterReq::Next, BackendOutcome::Record(r)) => {
                if r.is_none() {
                    self.remove_iter(conn, iid, false);
                }
                Ok(Reply::IteratorRecordNext(r))
            }
            (_, other) => Err(outcome_error(other)),
        };
        if failed && matches!(op, IterReq::Start) {
            self.remove_iter(conn, iid, false);
        }
        let msg = match r {
            Ok(reply) => ServerMessage::reply(msgid, &reply),
            Err(error) => ServerMessage::Error { msgid, error },
        };
        self.fill(conn, id, &msg);
        self.pump_iter(conn, iid);
    }
}
