//! Requests → ZEO calls (`zeo-protocol.md` §4.2, §6.3, §8 item 17).

use bytes::Bytes;

use super::{backend_failure, ClientError, Expect, IterSlot, Txn, ZeoClient, BLOB_CHUNK};
use crate::wire::request::Request;
use crate::wire::types::{IterId, TxnId};
use crate::wire::value::Value;
use crate::zeo::backend::{BackendIterId, BackendOutcome, BackendReqId, BackendRequest, TxnOp, VoteRequest};

impl ZeoClient {
    /// Sends the calls for one request (the client is `Ready`).
    ///
    /// * `LoadBefore{oid, before, snapshot}` → `loadBefore(oid, min(before, snapshot+1))`; an `end`
    ///   after `snapshot` is reported as `None`. `GetTid{oid, snapshot}` → `loadBefore(oid,
    ///   snapshot+1)`, answering its `start` (no revision → `POSKeyError`).
    /// * `LoadSerial`, `History`, `RecordIternext`, `NewOids`, `UndoLog`, `UndoInfo` → the call
    ///   of the same name.
    /// * Iterators: `IterStart` → `iterator_start`, `IterRecordStart` → `iterator_record_start`
    ///   (the server's ids are mapped to the core's handles; a request for an iterator whose start
    ///   is unanswered waits for it), `IterNext`/`IterRecordNext` → `iterator_next`/
    ///   `iterator_record_next`, `IterDrop` → async `iterator_gc`, answered `Nil` at once.
    ///   `IterNextWhole` → `iterator_next`, `iterator_record_start`, `iterator_record_next` until
    ///   the end, answered as one outcome; from its first `IterNextWhole` on, the iterator is
    ///   read ahead (`whole`).
    /// * `SendBlob` → `sendBlob`: `receiveBlobChunk` pushes become `BlobChunk`s.
    /// * Uploads are kept here until a `Vote` replays them as `storea` + `storeBlobStart`,
    ///   `storeBlobChunk`×n, `storeBlobEnd` (what the stock `ClientStorage` sends).
    /// * `Vote` → async `tpc_begin(txid, …, tid, status)` and the ops, then `vote(txid)`.
    ///   `Finish` → `tpc_finish`, `Abort` → `tpc_abort`, `Pack` → `pack(t, True)` + `get_info`.
    pub(super) fn start(&mut self, id: BackendReqId, req: BackendRequest) -> Result<(), ClientError> {
        let plain = Expect::Plain { id };
        match req {
            BackendRequest::LoadBefore { oid, before, snapshot } => {
                let bound = snapshot.checked_next().map_or(before, |s| before.min(s));
                self.load_before(oid, bound, Expect::Load { id, snapshot })?;
            }
            BackendRequest::GetTid { oid, snapshot } => {
                let bound = snapshot.checked_next().unwrap_or(snapshot);
                self.load_before(oid, bound, Expect::GetTid { id, oid })?;
            }
            BackendRequest::LoadSerial { oid, serial } => {
                self.call(Request::LoadSerial { oid, serial }, plain)?
            }
            BackendRequest::History { oid, size } => {
                let size = i64::try_from(size).unwrap_or(i64::MAX);
                self.call(Request::History { oid, size }, plain)?;
            }
            BackendRequest::RecordIternext { next } => self.call(Request::RecordIternext { next }, plain)?,
            BackendRequest::NewOids { n } => {
                let n = i64::try_from(n).unwrap_or(100);
                self.call(Request::NewOids { n: Some(n) }, plain)?;
            }
            BackendRequest::UndoLog { first, last } => self.call(Request::UndoLog { first, last }, plain)?,
            BackendRequest::UndoInfo { first, last, spec } => {
                self.call(Request::UndoInfo { first, last, spec }, plain)?;
            }
            BackendRequest::IterStart { iter, start, stop } => {
                if self.iters.contains_key(&iter) {
                    self.answer(id, backend_failure(format!("iterator {} is already open", iter.0)));
                    return Ok(());
                }
                // What the iterator surely returns (whole: read-ahead).
                let last = self.known_last;
                let bound = stop.is_none_or(|s| s >= last).then_some(last);
                self.iters.insert(iter, IterSlot::Opening { waiting: Vec::new(), dropped: false, bound });
                self.call(Request::IteratorStart { start, stop }, Expect::IterOpen { id, iter })?;
            }
            BackendRequest::IterRecordStart { iter, txn_iter, tid } => {
                let Some(txn_iid) = self.iter_or_wait(id, txn_iter, &req_record_start(iter, txn_iter, tid))
                else {
                    return Ok(());
                };
                if self.iters.contains_key(&iter) {
                    self.answer(id, backend_failure(format!("iterator {} is already open", iter.0)));
                    return Ok(());
                }
                self.iters
                    .insert(iter, IterSlot::Opening { waiting: Vec::new(), dropped: false, bound: None });
                self.call(Request::IteratorRecordStart { txn_iid, tid }, Expect::IterOpen { id, iter })?;
            }
            BackendRequest::IterNext { iter } => {
                if let Some(iid) = self.iter_or_wait(id, iter, &BackendRequest::IterNext { iter }) {
                    self.call(Request::IteratorNext { iid }, Expect::IterStep { id, iter })?;
                }
            }
            BackendRequest::IterNextWhole { iter } => self.start_whole(id, iter)?,
            BackendRequest::IterRecordNext { iter } => {
                if let Some(riid) = self.iter_or_wait(id, iter, &BackendRequest::IterRecordNext { iter }) {
                    self.call(Request::IteratorRecordNext { riid }, Expect::IterStep { id, iter })?;
                }
            }
            BackendRequest::IterDrop { iters } => {
                let mut gc = Vec::new();
                for iter in iters {
                    match self.iters.get_mut(&iter) {
                        Some(IterSlot::Open { iid, .. }) => {
                            gc.push(*iid);
                            self.iters.remove(&iter);
                        }
                        Some(IterSlot::Ahead(key)) => {
                            let key = *key;
                            self.iters.remove(&iter);
                            self.drop_ahead(key, &mut gc);
                        }
                        Some(IterSlot::Opening { dropped, .. }) => *dropped = true,
                        None => {}
                    }
                }
                if !gc.is_empty() {
                    self.cast(Request::IteratorGc { iids: gc })?;
                }
                self.answer(id, BackendOutcome::Nil);
            }
            BackendRequest::SendBlob { oid, serial } => {
                self.blob_reads.push((oid, serial, id));
                self.call(Request::SendBlob { oid, serial }, Expect::SendBlob { id, oid, serial })?;
            }
            BackendRequest::BlobUploadStart { upload } => {
                self.uploads.insert(upload, Vec::new());
                self.answer(id, BackendOutcome::Nil);
            }
            BackendRequest::BlobUploadChunk { upload, chunk } => match self.uploads.get_mut(&upload) {
                Some(chunks) => {
                    chunks.push(chunk);
                    self.answer(id, BackendOutcome::Nil);
                }
                None => self.answer(id, backend_failure(format!("no blob upload {}", upload.0))),
            },
            BackendRequest::BlobUploadDrop { upload } => {
                self.uploads.remove(&upload);
                self.answer(id, BackendOutcome::Nil);
            }
            BackendRequest::Vote(vote) => self.vote(id, *vote)?,
            // A stock server syncs every finish itself.
            BackendRequest::Sync => self.answer(id, BackendOutcome::Nil),
            BackendRequest::RebuildBegin | BackendRequest::RebuildCommit | BackendRequest::RebuildAbort => {
                self.answer(id, backend_failure("a remote backend cannot be rebuilt in place".to_string()))
            }
            BackendRequest::Finish { tid } => match &self.txn {
                Some(t) if t.voted && t.tid == tid => {
                    let txn = TxnId(Value::Int(i128::from(t.txid)));
                    self.call(Request::TpcFinish { txn }, Expect::Finish { id, tid })?;
                }
                _ => self.answer(id, backend_failure(format!("finish of {tid}: no such voted transaction"))),
            },
            BackendRequest::Abort { tid } => match self.txn.take() {
                Some(t) if t.tid == tid => {
                    for u in &t.uploads {
                        self.uploads.remove(u);
                    }
                    let txn = TxnId(Value::Int(i128::from(t.txid)));
                    self.call(Request::TpcAbort { txn }, Expect::Abort { id })?;
                }
                other => {
                    // Nothing open (a failed vote already aborted it): nothing to do.
                    self.txn = other;
                    self.answer(id, BackendOutcome::Nil);
                }
            },
            BackendRequest::Pack { time } => {
                self.call(Request::Pack { time, wait: true }, Expect::Pack { id })?
            }
        }
        Ok(())
    }

    /// The server's id of `iter`; `None` when the request was parked behind an unanswered start
    /// or answered with a failure (unknown iterator).
    pub(super) fn iter_or_wait(
        &mut self,
        id: BackendReqId,
        iter: BackendIterId,
        req: &BackendRequest,
    ) -> Option<IterId> {
        match self.iters.get_mut(&iter) {
            Some(IterSlot::Open { iid, .. }) => Some(*iid),
            Some(IterSlot::Ahead(_)) => {
                // Its server iterator is ahead of what the core saw: the plain calls would
                // not fit (whole: read-ahead).
                self.answer(id, backend_failure(format!("iterator {} is read by IterNextWhole", iter.0)));
                None
            }
            Some(IterSlot::Opening { waiting, .. }) => {
                waiting.push((id, req.clone()));
                None
            }
            None => {
                self.answer(
                    id,
                    backend_failure(format!("iterator {} is not open on this connection", iter.0)),
                );
                None
            }
        }
    }

    /// Begins, replays and votes a transaction.
    fn vote(&mut self, id: BackendReqId, v: VoteRequest) -> Result<(), ClientError> {
        if let Some(t) = &self.txn {
            let open = t.tid;
            self.answer(id, backend_failure(format!("vote of {} while {open} is open", v.tid)));
            return Ok(());
        }
        let mut uploads = Vec::new();
        for op in &v.ops {
            if let TxnOp::StoreBlob { upload, .. } | TxnOp::RestoreBlob { upload, .. } = op {
                if !self.uploads.contains_key(upload) {
                    self.answer(
                        id,
                        backend_failure(format!("vote of {}: no blob upload {}", v.tid, upload.0)),
                    );
                    return Ok(());
                }
                uploads.push(*upload);
            }
        }
        let mut written = Vec::new();
        for oid in v.ops.iter().filter_map(TxnOp::written_oid) {
            if !written.contains(&oid) {
                written.push(oid);
            }
        }
        let txid = self.next_txid;
        self.next_txid += 1;
        let txn = || TxnId(Value::Int(i128::from(txid)));
        self.cast(Request::TpcBegin {
            txn: txn(),
            user: v.user,
            description: v.description,
            extension: v.extension,
            tid: Some(v.tid),
            status: v.status,
        })?;
        for op in v.ops {
            match op {
                TxnOp::Store { oid, serial, data } => {
                    self.cast(Request::Storea { oid, serial, data, txn: txn() })?
                }
                TxnOp::StoreBlob { oid, serial, data, upload }
                // ZEO has no `restoreBlob`: a blob store against the target's current serial
                // (the record gets no back-pointer; README, known gaps).
                | TxnOp::RestoreBlob { oid, current: serial, data, upload, .. } => {
                    // The consecutive stream only: a plain `storea` the client sent for the
                    // same oid is an op of its own, so the backend gets what the client sent
                    // (an extra store here gave the stock server a second record per blob).
                    self.cast(Request::StoreBlobStart)?;
                    let chunks: Vec<Bytes> = self.uploads.get(&upload).cloned().unwrap_or_default();
                    for chunk in chunks {
                        let mut rest = chunk;
                        while !rest.is_empty() {
                            let piece = rest.split_to(rest.len().min(BLOB_CHUNK));
                            self.cast(Request::StoreBlobChunk { chunk: piece })?;
                        }
                    }
                    self.cast(Request::StoreBlobEnd { oid, serial, data, txn: txn() })?;
                }
                TxnOp::CheckCurrent { oid, serial } => {
                    self.cast(Request::CheckCurrentSerialInTransaction { oid, serial, txn: txn() })?;
                }
                TxnOp::Delete { oid, serial } => {
                    self.cast(Request::DeleteObject { oid, serial, txn: txn() })?
                }
                TxnOp::Restore { oid, serial, data, prev_txn } => {
                    self.cast(Request::Restorea { oid, serial, data, prev_txn, txn: txn() })?;
                }
                TxnOp::Undo { undo_id } => self.cast(Request::Undoa { undo_id, txn: txn() })?,
            }
        }
        self.call(Request::Vote { txn: txn() }, Expect::Vote { id })?;
        self.txn = Some(Txn { txid, tid: v.tid, uploads, voted: false, written });
        Ok(())
    }
}

fn req_record_start(iter: BackendIterId, txn_iter: BackendIterId, tid: crate::ids::Tid) -> BackendRequest {
    BackendRequest::IterRecordStart { iter, txn_iter, tid }
}
