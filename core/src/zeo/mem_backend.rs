//! An in-memory storage backend: a small MVCC model answering [`BackendRequest`]s.
//!
//! Pure and deterministic; used by the server state machine's tests and by the simulation.
//! Committed revisions become visible at `Finish`; reads answer as of their `snapshot`. A `Vote`
//! replays the buffered operations against the committed state: a store whose read serial is
//! not current gives a conflict map (`Conflicts`, nothing left open), a failed
//! `checkCurrentSerialInTransaction` a `ReadConflictError`, a stale delete a `ConflictError`.
//! Undo is simple: the undone transaction's oids must still be current in it, and get the
//! data they had before it. Blobs are kept whole and streamed in [`MemBackend::chunk_size`]
//! pieces. Pack only reports the size.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::ids::{Oid, Tid};
use crate::wire::error::{ConflictDetails, PosKeyDetails, UndoError, ZeoError};
use crate::wire::reply::{
    DataRecord, HistoryEntry, LoadBeforeResult, RecordIternextResult, TxnHeader, UndoEntry, VoteItem,
};
use crate::wire::types::{Extension, TxnStatus, UndoId};
use crate::wire::value::Text;

use super::backend::{
    BackendError, BackendIterId, BackendOutcome, BackendRequest, Culprit, StorageSize, TxnOp, UploadId,
    VoteRequest, WholeTxn,
};

/// One committed transaction.
#[derive(Debug, Clone)]
struct TxnRecord {
    tid: Tid,
    status: TxnStatus,
    user: Bytes,
    description: Bytes,
    extension: Extension,
    /// Records it wrote, in order (`None` data: deleted / undone creation).
    records: Vec<(Oid, Option<Bytes>)>,
}

/// A voted, not yet finished transaction.
#[derive(Debug, Clone)]
struct Voted {
    req: VoteRequest,
    writes: Vec<(Oid, Option<Bytes>)>,
    blobs: Vec<(Oid, Bytes)>,
}

#[derive(Debug, Clone)]
enum IterPos {
    Txns { next: usize, stop: Option<Tid> },
    Records { records: Vec<DataRecord>, next: usize },
}

/// The in-memory backend of one storage.
#[derive(Debug, Clone, Default)]
pub struct MemBackend {
    /// Revisions per object, oldest first.
    objects: BTreeMap<Oid, Vec<(Tid, Option<Bytes>)>>,
    txns: Vec<TxnRecord>,
    next_oid: u64,
    voted: Option<Voted>,
    uploads: BTreeMap<UploadId, Vec<u8>>,
    blobs: BTreeMap<(Oid, Tid), Bytes>,
    iters: BTreeMap<BackendIterId, IterPos>,
    /// Size of the `BlobChunk`s of `SendBlob` (at least 1).
    pub chunk_size: usize,
    /// Answer `Finish` as a group-committing backend does: `Committed`, then `Finished`.
    pub group_commit: bool,
    /// The storage a rebuild replaces (between `RebuildBegin` and `RebuildCommit`/`Abort`).
    replaced: Option<Box<MemBackend>>,
}

fn client(error: ZeoError) -> BackendOutcome {
    BackendOutcome::Failed(BackendError { error, culprit: Culprit::Client })
}

fn conflict(oid: Oid, committed: Tid, read: Tid) -> ConflictDetails {
    ConflictDetails {
        message: Text::from_static("database conflict error"),
        oid: Some(oid),
        class_name: None,
        serials: Some((committed, read)),
        extra: Vec::new(),
    }
}

impl MemBackend {
    /// An empty storage.
    pub fn new() -> MemBackend {
        MemBackend { chunk_size: 4, ..MemBackend::default() }
    }

    /// The newest committed tid.
    pub fn last_tid(&self) -> Tid {
        self.txns.last().map_or(Tid::ZERO, |t| t.tid)
    }

    /// Object count and total size of current records.
    pub fn size(&self) -> StorageSize {
        let mut s = StorageSize::default();
        for revs in self.objects.values() {
            if let Some((_, Some(d))) = revs.last() {
                s.length += 1;
                s.size += d.len() as u64;
            }
        }
        s
    }

    /// Number of open iterators and uploads (for leak checks in tests).
    pub fn open_handles(&self) -> (usize, usize) {
        (self.iters.len(), self.uploads.len())
    }

    /// Whether a voted transaction is open.
    pub fn has_voted(&self) -> bool {
        self.voted.is_some()
    }

    /// The revision of `oid` current as of `snapshot` (committed state only).
    fn current(&self, oid: Oid, snapshot: Tid) -> Option<&(Tid, Option<Bytes>)> {
        self.objects.get(&oid)?.iter().rev().find(|(t, _)| *t <= snapshot)
    }

    fn serial_now(&self, oid: Oid) -> Tid {
        self.current(oid, Tid::MAX).map_or(Tid::ZERO, |r| r.0)
    }

    /// Answers one request: zero or more partial outcomes, then the final one (last).
    pub fn handle(&mut self, req: BackendRequest) -> Vec<BackendOutcome> {
        use BackendOutcome as O;
        let one = match req {
            BackendRequest::LoadBefore { oid, before, snapshot } => {
                let Some(revs) = self.objects.get(&oid) else { return vec![client(ZeoError::pos_key(oid))] };
                let visible: Vec<&(Tid, Option<Bytes>)> =
                    revs.iter().filter(|(t, _)| *t <= snapshot).collect();
                if visible.is_empty() {
                    return vec![client(ZeoError::pos_key(oid))];
                }
                if let Some((_, None)) = visible.last() {
                    return vec![client(ZeoError::pos_key(oid))];
                }
                match visible.iter().rposition(|(t, _)| *t < before) {
                    None => O::LoadBefore(None),
                    Some(i) => match &visible[i].1 {
                        None => O::LoadBefore(None),
                        Some(d) => O::LoadBefore(Some(LoadBeforeResult {
                            data: d.clone(),
                            start: visible[i].0,
                            end: visible.get(i + 1).map(|r| r.0),
                        })),
                    },
                }
            }
            BackendRequest::LoadSerial { oid, serial } => {
                match self.objects.get(&oid).and_then(|r| r.iter().find(|(t, _)| *t == serial)) {
                    Some((_, Some(d))) => O::Data(d.clone()),
                    _ => client(ZeoError::pos_key(oid)),
                }
            }
            BackendRequest::GetTid { oid, snapshot } => match self.current(oid, snapshot) {
                Some((t, Some(_))) => O::Tid(*t),
                _ => client(ZeoError::pos_key(oid)),
            },
            BackendRequest::History { oid, size } => match self.objects.get(&oid) {
                None => client(ZeoError::pos_key(oid)),
                Some(revs) => O::History(
                    revs.iter()
                        .rev()
                        .take(size.max(1))
                        .map(|(tid, d)| {
                            let t = self.txns.iter().find(|t| t.tid == *tid);
                            HistoryEntry {
                                time: tid.to_unix_f64(),
                                user_name: t.map(|t| t.user.clone()).unwrap_or_default(),
                                description: t.map(|t| t.description.clone()).unwrap_or_default(),
                                tid: *tid,
                                size: d.as_ref().map_or(0, |d| d.len() as i64),
                                extension: t.map(|t| t.extension.clone()).unwrap_or_default(),
                            }
                        })
                        .collect(),
                ),
            },
            BackendRequest::RecordIternext { next } => {
                let start = next.unwrap_or(Oid::ROOT);
                let mut live = self.objects.range(start..).filter_map(|(oid, revs)| match revs.last() {
                    Some((t, Some(d))) => Some((*oid, *t, d.clone())),
                    _ => None,
                });
                match live.next() {
                    None => client(ZeoError::pos_key(start)),
                    Some((oid, tid, data)) => {
                        let next = live.next().map(|r| r.0);
                        O::RecordIternext(RecordIternextResult { oid, tid, data, next })
                    }
                }
            }
            BackendRequest::NewOids { n } => {
                let mut v = Vec::new();
                for _ in 0..n {
                    self.next_oid += 1;
                    v.push(Oid::new(self.next_oid));
                }
                O::NewOids(v)
            }
            BackendRequest::UndoLog { first, last } | BackendRequest::UndoInfo { first, last, .. } => {
                let all: Vec<UndoEntry> = self
                    .txns
                    .iter()
                    .rev()
                    .map(|t| UndoEntry {
                        id: UndoId(Bytes::copy_from_slice(&t.tid.to_bytes())),
                        time: t.tid.to_unix_f64(),
                        user_name: t.user.clone(),
                        size: None,
                        description: t.description.clone(),
                        extension: t.extension.clone(),
                    })
                    .collect();
                let first = usize::try_from(first.max(0)).unwrap_or(0);
                let end = if last < 0 {
                    first.saturating_add(usize::try_from(last.unsigned_abs()).unwrap_or(usize::MAX))
                } else {
                    usize::try_from(last).unwrap_or(usize::MAX)
                };
                O::UndoLog(all.into_iter().skip(first).take(end.saturating_sub(first)).collect())
            }
            BackendRequest::IterStart { iter, start, stop } => {
                let next = self
                    .txns
                    .iter()
                    .position(|t| start.is_none_or(|s| t.tid >= s))
                    .unwrap_or(self.txns.len());
                self.iters.insert(iter, IterPos::Txns { next, stop });
                O::Nil
            }
            BackendRequest::IterNext { iter } => {
                let Some(IterPos::Txns { next, stop }) = self.iters.get_mut(&iter) else {
                    return vec![client(ZeoError::Exception(Text::from_static("no such iterator")))];
                };
                match self.txns.get(*next).filter(|t| stop.is_none_or(|s| t.tid <= s)) {
                    Some(t) => {
                        *next += 1;
                        O::Txn(Some(TxnHeader {
                            tid: t.tid,
                            status: t.status,
                            user: t.user.clone(),
                            description: t.description.clone(),
                            extension: t.extension.clone(),
                        }))
                    }
                    None => {
                        self.iters.remove(&iter);
                        O::Txn(None)
                    }
                }
            }
            BackendRequest::IterNextWhole { iter } => {
                let Some(IterPos::Txns { next, stop }) = self.iters.get_mut(&iter) else {
                    return vec![client(ZeoError::Exception(Text::from_static("no such iterator")))];
                };
                match self.txns.get(*next).filter(|t| stop.is_none_or(|s| t.tid <= s)) {
                    Some(t) => {
                        *next += 1;
                        let header = TxnHeader {
                            tid: t.tid,
                            status: t.status,
                            user: t.user.clone(),
                            description: t.description.clone(),
                            extension: t.extension.clone(),
                        };
                        let records = t
                            .records
                            .iter()
                            .map(|(oid, d)| DataRecord {
                                oid: *oid,
                                tid: t.tid,
                                data: d.clone(),
                                data_txn: None,
                            })
                            .collect();
                        O::WholeTxn(Some(Box::new(WholeTxn { header, records })))
                    }
                    None => {
                        self.iters.remove(&iter);
                        O::WholeTxn(None)
                    }
                }
            }
            BackendRequest::IterRecordStart { iter, tid, .. } => {
                let records = self
                    .txns
                    .iter()
                    .find(|t| t.tid == tid)
                    .map(|t| {
                        t.records
                            .iter()
                            .map(|(oid, d)| DataRecord { oid: *oid, tid, data: d.clone(), data_txn: None })
                            .collect()
                    })
                    .unwrap_or_default();
                self.iters.insert(iter, IterPos::Records { records, next: 0 });
                O::Nil
            }
            BackendRequest::IterRecordNext { iter } => {
                let Some(IterPos::Records { records, next }) = self.iters.get_mut(&iter) else {
                    return vec![client(ZeoError::Exception(Text::from_static("no such iterator")))];
                };
                match records.get(*next).cloned() {
                    Some(r) => {
                        *next += 1;
                        O::Record(Some(r))
                    }
                    None => {
                        self.iters.remove(&iter);
                        O::Record(None)
                    }
                }
            }
            BackendRequest::IterDrop { iters } => {
                for i in iters {
                    self.iters.remove(&i);
                }
                O::Nil
            }
            BackendRequest::SendBlob { oid, serial } => {
                let Some(blob) = self.blobs.get(&(oid, serial)) else {
                    return vec![client(ZeoError::PosKey(PosKeyDetails::Blob {
                        message: Text::from_static("No blob file"),
                        oid,
                        serial,
                    }))];
                };
                let mut out: Vec<O> = blob
                    .chunks(self.chunk_size.max(1))
                    .map(|c| O::BlobChunk(Bytes::copy_from_slice(c)))
                    .collect();
                out.push(O::Nil);
                return out;
            }
            BackendRequest::BlobUploadStart { upload } => {
                self.uploads.insert(upload, Vec::new());
                O::Nil
            }
            BackendRequest::BlobUploadChunk { upload, chunk } => match self.uploads.get_mut(&upload) {
                Some(u) => {
                    u.extend_from_slice(&chunk);
                    O::Nil
                }
                None => client(ZeoError::Exception(Text::from_static("no such upload"))),
            },
            BackendRequest::BlobUploadDrop { upload } => {
                self.uploads.remove(&upload);
                O::Nil
            }
            BackendRequest::Vote(v) => self.vote(*v),
            BackendRequest::Finish { tid } => {
                let done = self.finish(tid);
                if self.group_commit && matches!(done, O::Finished { .. }) {
                    return vec![O::Committed { tid }, done];
                }
                done
            }
            BackendRequest::Abort { tid } => {
                if let Some(v) = self.voted.take_if(|v| v.req.tid == tid) {
                    for op in &v.req.ops {
                        if let TxnOp::StoreBlob { upload, .. } | TxnOp::RestoreBlob { upload, .. } = op {
                            self.uploads.remove(upload);
                        }
                    }
                }
                O::Nil
            }
            BackendRequest::Pack { .. } => O::Packed { size: self.size() },
            BackendRequest::Sync => O::Nil,
            BackendRequest::RebuildBegin => {
                let fresh = MemBackend {
                    chunk_size: self.chunk_size,
                    group_commit: self.group_commit,
                    ..MemBackend::default()
                };
                let mut old = std::mem::replace(self, fresh);
                // A leftover rebuild is discarded: the storage it replaces is the one kept.
                if let Some(older) = old.replaced.take() {
                    old = *older;
                }
                self.replaced = Some(Box::new(old));
                O::Nil
            }
            BackendRequest::RebuildCommit => {
                self.replaced = None;
                O::Nil
            }
            BackendRequest::RebuildAbort => {
                if let Some(old) = self.replaced.take() {
                    *self = *old;
                }
                O::Nil
            }
        };
        vec![one]
    }

    fn consume_uploads(&mut self, ops: &[TxnOp]) -> Vec<(Oid, Bytes)> {
        let mut blobs = Vec::new();
        for op in ops {
            if let TxnOp::StoreBlob { oid, upload, .. } | TxnOp::RestoreBlob { oid, upload, .. } = op {
                if let Some(data) = self.uploads.remove(upload) {
                    blobs.push((*oid, Bytes::from(data)));
                }
            }
        }
        blobs
    }

    fn vote(&mut self, req: VoteRequest) -> BackendOutcome {
        if self.voted.is_some() {
            return BackendOutcome::Failed(BackendError {
                error: ZeoError::Exception(Text::from_static("a transaction is already voted")),
                culprit: Culprit::Backend,
            });
        }
        if req.tid <= self.last_tid() {
            self.consume_uploads(&req.ops);
            return client(ZeoError::Exception(Text::from_static("tid not after the last transaction")));
        }
        let mut writes: Vec<(Oid, Option<Bytes>)> = Vec::new();
        let mut changed = Vec::new();
        let mut conflicts = Vec::new();
        let mut failure = None;
        for op in super::backend::zeo_apply_order(&req.ops) {
            match op {
                TxnOp::Store { oid, serial, data } | TxnOp::StoreBlob { oid, serial, data, .. } => {
                    let now = self.serial_now(*oid);
                    if now != *serial {
                        conflicts.push(VoteItem::Conflict {
                            oid: *oid,
                            committed: now,
                            read: *serial,
                            data: data.clone(),
                        });
                    } else {
                        writes.push((*oid, Some(data.clone())));
                    }
                }
                TxnOp::CheckCurrent { oid, serial } => {
                    let now = self.serial_now(*oid);
                    if now != *serial {
                        failure.get_or_insert(ZeoError::ReadConflict(conflict(*oid, now, *serial)));
                    }
                }
                TxnOp::Delete { oid, serial } => {
                    let now = self.serial_now(*oid);
                    if now != *serial {
                        failure.get_or_insert(ZeoError::Conflict(conflict(*oid, now, *serial)));
                    } else {
                        writes.push((*oid, None));
                    }
                }
                TxnOp::Restore { oid, data, .. } => writes.push((*oid, data.clone())),
                TxnOp::RestoreBlob { oid, data, .. } => writes.push((*oid, Some(data.clone()))),
                TxnOp::Undo { undo_id } => {
                    let target = Tid::from_slice(&undo_id.0);
                    let Some(t) = self.txns.iter().find(|t| Some(t.tid) == target) else {
                        failure.get_or_insert(ZeoError::Undo(UndoError {
                            reason: Text::from_static("no such transaction"),
                            oid: None,
                        }));
                        continue;
                    };
                    for (oid, _) in &t.records {
                        if self.serial_now(*oid) != t.tid {
                            failure.get_or_insert(ZeoError::Undo(UndoError {
                                reason: Text::from_static("non-undoable transaction"),
                                oid: Some(*oid),
                            }));
                            continue;
                        }
                        let before = self
                            .objects
                            .get(oid)
                            .and_then(|revs| revs.iter().rev().find(|(r, _)| *r < t.tid))
                            .and_then(|r| r.1.clone());
                        writes.push((*oid, before));
                        changed.push(*oid);
                    }
                }
            }
        }
        if let Some(e) = failure {
            self.consume_uploads(&req.ops);
            return client(e);
        }
        if !conflicts.is_empty() {
            return BackendOutcome::Conflicts(conflicts);
        }
        let mut invalidated = Vec::new();
        let mut seen = BTreeSet::new();
        for (oid, _) in &writes {
            if seen.insert(*oid) {
                invalidated.push(*oid);
            }
        }
        let blobs = self.consume_uploads(&req.ops);
        self.voted = Some(Voted { req, writes, blobs });
        BackendOutcome::Voted { changed, invalidated }
    }

    fn finish(&mut self, tid: Tid) -> BackendOutcome {
        let Some(v) = self.voted.take_if(|v| v.req.tid == tid) else {
            return BackendOutcome::Failed(BackendError {
                error: ZeoError::Exception(Text::from_static("no voted transaction with that tid")),
                culprit: Culprit::Backend,
            });
        };
        // Later writes of an oid in one transaction replace earlier ones.
        let mut last: BTreeMap<Oid, Option<Bytes>> = BTreeMap::new();
        let mut order = Vec::new();
        for (oid, d) in v.writes {
            if last.insert(oid, d).is_none() {
                order.push(oid);
            }
        }
        let mut records = Vec::new();
        for oid in order {
            let d = last.remove(&oid).flatten();
            self.next_oid = self.next_oid.max(oid.get());
            self.objects.entry(oid).or_default().push((tid, d.clone()));
            records.push((oid, d));
        }
        for (oid, b) in v.blobs {
            self.blobs.insert((oid, tid), b);
        }
        self.txns.push(TxnRecord {
            tid,
            status: v.req.status,
            user: v.req.user,
            description: v.req.description,
            extension: v.req.extension,
            records,
        });
        BackendOutcome::Finished { tid, size: self.size() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(b: &mut MemBackend, tid: u64, ops: Vec<TxnOp>) {
        let vote = VoteRequest {
            tid: Tid::new(tid),
            status: TxnStatus::NORMAL,
            user: Bytes::from_static(b"u"),
            description: Bytes::from(format!("txn {tid}")),
            extension: Extension::default(),
            ops,
            deferred_sync: false,
        };
        assert!(matches!(
            b.handle(BackendRequest::Vote(Box::new(vote))).pop(),
            Some(BackendOutcome::Voted { .. })
        ));
        assert!(matches!(
            b.handle(BackendRequest::Finish { tid: Tid::new(tid) }).pop(),
            Some(BackendOutcome::Finished { .. })
        ));
    }

    fn store(oid: u64, data: &'static [u8]) -> TxnOp {
        TxnOp::Store { oid: Oid::new(oid), serial: Tid::ZERO, data: Bytes::from_static(data) }
    }

    /// What `IterNext`, `IterRecordStart` and `IterRecordNext` give for the next transaction.
    fn stepwise(b: &mut MemBackend, it: BackendIterId) -> Option<WholeTxn> {
        let Some(BackendOutcome::Txn(h)) = b.handle(BackendRequest::IterNext { iter: it }).pop() else {
            panic!("IterNext failed");
        };
        let header = h?;
        let ri = BackendIterId(it.0 + 1000);
        b.handle(BackendRequest::IterRecordStart { iter: ri, txn_iter: it, tid: header.tid });
        let mut records = Vec::new();
        while let Some(BackendOutcome::Record(Some(r))) =
            b.handle(BackendRequest::IterRecordNext { iter: ri }).pop()
        {
            records.push(r);
        }
        Some(WholeTxn { header, records })
    }

    #[test]
    fn iter_next_whole_gives_each_transaction_with_its_records() {
        let mut b = MemBackend::new();
        commit(&mut b, 10, vec![store(1, b"a"), store(2, b"bb"), store(3, b"ccc")]);
        commit(&mut b, 11, vec![]);
        commit(
            &mut b,
            12,
            vec![TxnOp::Store { oid: Oid::new(1), serial: Tid::new(10), data: Bytes::from_static(b"a2") }],
        );
        let (whole, step) = (BackendIterId(1), BackendIterId(2));
        b.handle(BackendRequest::IterStart { iter: whole, start: None, stop: None });
        b.handle(BackendRequest::IterStart { iter: step, start: None, stop: None });
        let mut got = Vec::new();
        loop {
            let Some(BackendOutcome::WholeTxn(t)) =
                b.handle(BackendRequest::IterNextWhole { iter: whole }).pop()
            else {
                panic!("IterNextWhole failed");
            };
            assert_eq!(t.as_deref(), stepwise(&mut b, step).as_ref());
            match t {
                Some(t) => got.push(*t),
                None => break,
            }
        }
        let shape: Vec<(u64, Vec<u64>)> = got
            .iter()
            .map(|t| (t.header.tid.get(), t.records.iter().map(|r| r.oid.get()).collect()))
            .collect();
        assert_eq!(shape, vec![(10, vec![1, 2, 3]), (11, vec![]), (12, vec![1])]);
        assert_eq!(got[0].records[1].data.as_deref(), Some(&b"bb"[..]));
        assert_eq!(got[1].header.description.as_ref(), b"txn 11");
        // The end freed the iterator: it is unknown now, and fails as IterNext does.
        assert_eq!(b.open_handles(), (0, 0));
        let again = b.handle(BackendRequest::IterNextWhole { iter: whole }).pop();
        let next = b.handle(BackendRequest::IterNext { iter: whole }).pop();
        let (Some(BackendOutcome::Failed(e1)), Some(BackendOutcome::Failed(e2))) = (again, next) else {
            panic!("an unknown iterator must fail");
        };
        assert_eq!(e1, e2);
        assert_eq!(e1.culprit, Culprit::Client);
    }
}
