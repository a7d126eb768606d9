//! The write path: one transaction at a time, FileStorage's two-phase commit.
//!
//! # Life of a transaction
//! 1. [`Storage::begin`] fixes the tid and the metadata. Nothing is written yet.
//! 2. `store`, `delete`, `restore`, `undo` append data records to an in-memory buffer that
//!    starts at the transaction's final position (`tpos` = the committed end). A buffer past
//!    [`FLUSH_AT`] bytes is written to the file (past the committed end, where no reader looks),
//!    preceded by a header whose status is `'c'`.
//! 3. [`Storage::vote`] writes the rest: the header with its final length and status `'c'`,
//!    the records and the redundant length; then fsyncs. The transaction is on disk but not
//!    committed: an open after a crash cuts it back.
//! 4. [`Storage::finish`] overwrites the status byte with `' '` (or `'p'`), fsyncs, and only
//!    then publishes the new index entries, end and last tid to readers.
//!
//! [`Storage::abort`] truncates the file back to `tpos`. If an I/O error strikes after the
//! status byte may have reached the disk, the storage is *broken*: every later write is
//! refused until it is reopened, which recovers whatever the disk holds.
//!
//! Everything a later pack or blob support needs is here as separate steps: `write_record`
//! appends one record of any kind, and the header/commit sequence does not care where the
//! records came from.

use super::engine::{DataRec, Storage};
use super::error::{Result, StorageError};
use super::file::{StorageDir, StorageFile};
use super::format::{
    DataHeaderRec, TxnHeaderRec, DATA_HEADER_LEN, STATUS_CHECKPOINT, STATUS_NORMAL, STATUS_OFFSET,
    STATUS_PACKED, TXN_HEADER_LEN,
};
use super::index::MAX_POS;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::io;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::types::{Extension, TxnStatus};
use zeoraid_core::wire::value::Value;

/// Buffered record bytes above which they are written to the file before vote.
pub const FLUSH_AT: usize = 1 << 20;

/// A transaction's metadata as FileStorage stores it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnMeta {
    /// User name (bytes, as ZEO sends it).
    pub user: Bytes,
    /// Description.
    pub description: Bytes,
    /// The extension pickle, or empty for an empty extension.
    pub extension: Bytes,
}

impl TxnMeta {
    /// Metadata with the extension dict pickled as ZODB does (protocol 3; empty for `{}`).
    pub fn new(user: Bytes, description: Bytes, extension: &Extension) -> Result<TxnMeta> {
        let mut ext = Vec::new();
        if !extension.0.is_empty() {
            zeoraid_core::wire::pickle::encode(&Value::Map(extension.0.clone()), &mut ext)
                .map_err(|e| StorageError::BadExtension(e.to_string()))?;
        }
        Ok(TxnMeta { user, description, extension: Bytes::from(ext) })
    }

    /// Metadata with an already pickled extension (copied verbatim from another storage).
    pub fn with_raw_extension(user: Bytes, description: Bytes, extension: Bytes) -> TxnMeta {
        TxnMeta { user, description, extension }
    }
}

/// How [`Storage::begin`] picks the tid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginTid {
    /// Exactly this tid, which must be above the last one (copying, RAID fan-out).
    Exactly(Tid),
    /// `max(now, last + 1)`, with `now` from the caller's clock.
    Now(Tid),
}

impl BeginTid {
    /// [`BeginTid::Now`] from the system clock.
    pub fn from_clock() -> BeginTid {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        BeginTid::Now(Tid::from_unix(d.as_secs(), d.subsec_nanos()).unwrap_or(Tid::ZERO))
    }
}

/// The writer's state.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) txn: Option<Txn>,
    /// Set when a commit failed half-way; refuses writes until reopened.
    pub(crate) broken: Option<String>,
}

/// The transaction in progress.
#[derive(Debug)]
pub(crate) struct Txn {
    pub(crate) tid: Tid,
    status: u8,
    meta: TxnMeta,
    /// Where the transaction starts (the committed end when it began).
    pub(crate) tpos: u64,
    /// Bytes `[flushed, next)` not yet written to the file.
    buf: Vec<u8>,
    flushed: u64,
    /// Where the next record goes.
    pub(crate) next: u64,
    /// Newest record of each object written by this transaction.
    pub(crate) tindex: BTreeMap<Oid, u64>,
    voted: bool,
    /// [`Storage::defer_sync`] was called.
    deferred: bool,
}

impl Txn {
    fn header(&self, tlen: u64, status: u8) -> TxnHeaderRec {
        TxnHeaderRec {
            tid: self.tid,
            tlen,
            status,
            ulen: self.meta.user.len() as u16,
            dlen: self.meta.description.len() as u16,
            elen: self.meta.extension.len() as u16,
        }
    }

    fn header_len(&self) -> u64 {
        TXN_HEADER_LEN
            + (self.meta.user.len() + self.meta.description.len() + self.meta.extension.len()) as u64
    }
}

impl<D: StorageDir> Storage<D> {
    fn check_writable(&self, w: &Writer) -> Result<()> {
        if self.opts.read_only {
            return Err(StorageError::ReadOnly);
        }
        if let Some(why) = &w.broken {
            return Err(StorageError::Broken(why.clone()));
        }
        if let Some(why) = self.group.failed() {
            return Err(StorageError::Broken(why));
        }
        Ok(())
    }

    /// Starts a transaction. Its records stay invisible to readers until [`Storage::finish`].
    pub fn begin(&self, meta: TxnMeta, tid: BeginTid, status: TxnStatus) -> Result<Tid> {
        let mut w = self.pack.admit(self.writer());
        self.check_writable(&w)?;
        if w.txn.is_some() {
            return Err(StorageError::WrongTransaction("a transaction is already in progress"));
        }
        let status = match status.0 {
            ' ' => STATUS_NORMAL,
            'p' => STATUS_PACKED,
            other => return Err(StorageError::BadStatus(other)),
        };
        for (field, len) in [
            ("user", meta.user.len()),
            ("description", meta.description.len()),
            ("extension", meta.extension.len()),
        ] {
            if len > usize::from(u16::MAX) {
                return Err(StorageError::MetadataTooLong { field, len });
            }
        }
        let (last, tpos) = {
            let c = self.committed();
            (c.last_tid, c.end)
        };
        let tid = match tid {
            BeginTid::Exactly(t) if t <= last => {
                return Err(StorageError::TidNotAfterLast { given: t, last })
            }
            BeginTid::Exactly(t) => t,
            BeginTid::Now(now) => Tid::later_than(now, last).ok_or(StorageError::TidsExhausted { last })?,
        };
        let mut txn = Txn {
            tid,
            status,
            meta,
            tpos,
            buf: Vec::new(),
            flushed: tpos,
            next: 0,
            tindex: BTreeMap::new(),
            voted: false,
            deferred: false,
        };
        // The header goes first with status 'c' and no length yet; vote fills the length in.
        let h = txn.header(0, STATUS_CHECKPOINT);
        txn.buf.extend_from_slice(&h.encode());
        txn.buf.extend_from_slice(&txn.meta.user);
        txn.buf.extend_from_slice(&txn.meta.description);
        txn.buf.extend_from_slice(&txn.meta.extension);
        txn.next = tpos + txn.header_len();
        w.txn = Some(txn);
        Ok(tid)
    }

    /// Lets the open transaction become durable later, with group commit
    /// ([`Options::group_commit`](super::Options)), also when it has blobs: its vote syncs nothing
    /// and [`Storage::finish_deferred`] publishes it (blob files moved into place) without
    /// waiting for the disk; the next [`Storage::sync_pending`] makes it durable, blobs first
    /// (see `group.rs`). For copying many transactions that are synced at the end. Without group
    /// commit it changes nothing.
    pub fn defer_sync(&self) -> Result<()> {
        self.with_txn(|_, txn| {
            txn.deferred = true;
            Ok(())
        })
    }

    /// The tid of the transaction in progress.
    pub fn current_tid(&self) -> Option<Tid> {
        self.writer().txn.as_ref().map(|t| t.tid)
    }

    /// Runs `f` on the open, unvoted transaction; on an I/O error the transaction is aborted.
    pub(crate) fn with_txn<T>(&self, f: impl FnOnce(&Self, &mut Txn) -> Result<T>) -> Result<T> {
        let mut w = self.writer();
        self.check_writable(&w)?;
        let txn = w.txn.as_mut().ok_or(StorageError::WrongTransaction("no transaction in progress"))?;
        if txn.voted {
            return Err(StorageError::WrongTransaction("the transaction has already voted"));
        }
        let r = f(self, txn);
        if let Err(e) = &r {
            if e.culprit() == super::error::Culprit::Storage {
                // The error being returned says more than a failed truncation would.
                let _ = self.abort_locked(&mut w);
            }
        }
        r
    }

    /// Appends one data record: `data` is the pickle, or `None` for a back-pointer `back`.
    pub(crate) fn write_record(
        &self,
        txn: &mut Txn,
        oid: Oid,
        tid: Tid,
        prev: u64,
        data: Option<&[u8]>,
        back: u64,
    ) -> Result<()> {
        let here = txn.next;
        let plen = data.map_or(0, |d| d.len() as u64);
        let h = DataHeaderRec { oid, tid, prev, tloc: txn.tpos, vlen: 0, plen };
        let len = h.record_len().unwrap_or(u64::MAX);
        if here.checked_add(len + 8).is_none_or(|e| e > MAX_POS) {
            return Err(self.io("write", io::Error::other("Data.fs would exceed 2^48 bytes")));
        }
        txn.buf.extend_from_slice(&h.encode());
        match data {
            Some(d) => txn.buf.extend_from_slice(d),
            None => txn.buf.extend_from_slice(&back.to_be_bytes()),
        }
        txn.next = here + len;
        txn.tindex.insert(oid, here);
        if txn.buf.len() >= FLUSH_AT {
            self.flush(txn)?;
        }
        Ok(())
    }

    fn flush(&self, txn: &mut Txn) -> Result<()> {
        if !txn.buf.is_empty() {
            self.file.write_at(&txn.buf, txn.flushed).map_err(|e| self.io("write", e))?;
            txn.flushed += txn.buf.len() as u64;
            txn.buf.clear();
        }
        Ok(())
    }

    /// Reads the header (and back-pointer) of a record written by `txn`.
    pub(crate) fn read_txn_record(&self, txn: &Txn, at: u64, oid: Oid) -> Result<(DataRec, Option<Bytes>)> {
        let mut b = vec![0u8; DATA_HEADER_LEN as usize];
        self.read_txn_bytes(txn, at, &mut b)?;
        let mut a = [0u8; 42];
        a.copy_from_slice(&b);
        let h = DataHeaderRec::decode(&a);
        super::engine::check_data_header(&h, at, txn.next, Some(oid))?;
        if h.plen == 0 {
            let mut p = [0u8; 8];
            self.read_txn_bytes(txn, at + DATA_HEADER_LEN, &mut p)?;
            return Ok((DataRec { pos: at, h, back: u64::from_be_bytes(p) }, None));
        }
        let mut d = vec![0u8; h.plen as usize];
        self.read_txn_bytes(txn, at + DATA_HEADER_LEN, &mut d)?;
        Ok((DataRec { pos: at, h, back: 0 }, Some(Bytes::from(d))))
    }

    fn read_txn_bytes(&self, txn: &Txn, at: u64, out: &mut [u8]) -> Result<()> {
        if at >= txn.flushed {
            let off = (at - txn.flushed) as usize;
            let src = txn.buf.get(off..off + out.len()).ok_or_else(|| {
                StorageError::corrupt(at, "a record of the transaction in progress", "nothing buffered there")
            })?;
            out.copy_from_slice(src);
            Ok(())
        } else {
            self.read_exact(out, at)
        }
    }

    /// Stores a new revision of `oid`. `serial` is the revision the caller read ([`Tid::ZERO`]
    /// for a new object); if the object exists and its current serial differs, nothing is
    /// written and [`StorageError::Conflict`] is returned (the transaction stays open, so the
    /// caller can collect every conflict).
    pub fn store(&self, oid: Oid, serial: Tid, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Err(StorageError::EmptyData { oid });
        }
        self.with_txn(|s, txn| s.store_in(txn, oid, serial, data))
    }

    /// [`Storage::store`] inside `txn` (also used by `store_blob`).
    pub(crate) fn store_in(&self, txn: &mut Txn, oid: Oid, serial: Tid, data: &[u8]) -> Result<()> {
        self.saw_oid(oid);
        let old = {
            let c = self.committed();
            match c.index.get(oid) {
                Some(pos) => Some(self.read_data_header(pos, c.end, Some(oid))?),
                None => None,
            }
        };
        if let Some(r) = &old {
            if r.h.tid != serial {
                return Err(StorageError::Conflict { oid, committed: r.h.tid, read: serial });
            }
        }
        let tid = txn.tid;
        self.write_record(txn, oid, tid, old.map_or(0, |r| r.pos), Some(data), 0)
    }

    /// Checks that `serial` is still `oid`'s current serial ([`StorageError::ReadConflict`]
    /// otherwise, [`StorageError::PosKey`] for an unknown or deleted object). The check is done
    /// now: the transaction is the only writer, so its outcome holds until finish.
    pub fn check_current_serial(&self, oid: Oid, serial: Tid) -> Result<()> {
        self.with_txn(|s, _| {
            let c = s.committed();
            let current = s.current_serial(&c, oid)?.ok_or(StorageError::PosKey { oid })?;
            if current != serial {
                return Err(StorageError::ReadConflict { oid, current, expected: serial });
            }
            Ok(())
        })
    }

    /// Deletes `oid`, whose current serial must be `serial`: writes a record with no data.
    pub fn delete(&self, oid: Oid, serial: Tid) -> Result<()> {
        self.with_txn(|s, txn| {
            let old = {
                let c = s.committed();
                let pos = c.index.get(oid).ok_or(StorageError::PosKey { oid })?;
                s.read_data_header(pos, c.end, Some(oid))?
            };
            if old.h.tid != serial {
                return Err(StorageError::Conflict { oid, committed: old.h.tid, read: serial });
            }
            let tid = txn.tid;
            s.write_record(txn, oid, tid, old.pos, None, 0)
        })
    }

    /// Writes a revision copied from another storage, without conflict checks. `serial` must be
    /// the transaction's tid. `data = None` writes a no-data record (an undone creation). With
    /// `prev_txn`, the record is a back-pointer to `oid`'s record in that transaction when it
    /// exists here and holds the same data (FileStorage's `_data_find`); otherwise the data is
    /// written.
    pub fn restore(&self, oid: Oid, serial: Tid, data: Option<&[u8]>, prev_txn: Option<Tid>) -> Result<()> {
        if data.is_some_and(<[u8]>::is_empty) {
            return Err(StorageError::EmptyData { oid });
        }
        self.with_txn(|s, txn| s.restore_in(txn, oid, serial, data, prev_txn))
    }

    /// [`Storage::restore`] inside `txn` (also used by `restore_blob`).
    pub(crate) fn restore_in(
        &self,
        txn: &mut Txn,
        oid: Oid,
        serial: Tid,
        data: Option<&[u8]>,
        prev_txn: Option<Tid>,
    ) -> Result<()> {
        let s = self;
        if serial != txn.tid {
            return Err(StorageError::RestoreSerial { oid, serial, tid: txn.tid });
        }
        s.saw_oid(oid);
        let (old, back) = {
            let c = s.committed();
            let old = c.index.get(oid).unwrap_or(0);
            let mut back = 0;
            if let Some(ptid) = prev_txn {
                if let Some(r) = s.find_revision(&c, oid, ptid)? {
                    back = match data {
                        _ if r.h.plen == 0 => r.pos,
                        None => r.pos,
                        Some(d) if r.h.plen == d.len() as u64 && s.read_pickle(&r, c.end)? == d => r.pos,
                        Some(_) => 0,
                    };
                }
            }
            (old, back)
        };
        let tid = txn.tid;
        if back != 0 {
            s.write_record(txn, oid, tid, old, None, back)
        } else {
            s.write_record(txn, oid, tid, old, data, 0)
        }
    }

    /// First commit phase: writes the whole transaction with status `'c'` and (with
    /// [`Options::fsync`](super::Options)) makes it durable. On an I/O error the transaction
    /// is aborted.
    pub fn vote(&self) -> Result<()> {
        self.with_txn(|s, txn| {
            let tlen = txn.next - txn.tpos;
            let h = txn.header(tlen, STATUS_CHECKPOINT).encode();
            if txn.flushed == txn.tpos {
                txn.buf[..h.len()].copy_from_slice(&h);
            } else {
                s.file.write_at(&h, txn.tpos).map_err(|e| s.io("write", e))?;
            }
            txn.buf.extend_from_slice(&tlen.to_be_bytes());
            s.flush(txn)?;
            let grouped = s.grouped(txn);
            if !(grouped && txn.deferred) {
                s.vote_blobs(txn.tid)?;
            }
            // Group commit syncs the records in the round that commits them (`group.rs`).
            if s.opts.fsync && !grouped {
                s.file.sync().map_err(|e| s.io("sync", e))?;
            }
            txn.voted = true;
            Ok(())
        })
    }

    /// Whether a transaction is committed by group commit (see `group.rs`): with
    /// [`Options::group_commit`](super::Options) and fsync, unless it has blobs and no deferred
    /// sync.
    fn grouped(&self, txn: &Txn) -> bool {
        self.opts.group_commit
            && self.opts.fsync
            && (txn.deferred || !self.blobs.as_ref().is_some_and(|b| b.has_staged(txn.tid)))
    }

    /// Second commit phase: commits the voted transaction and publishes it to readers.
    /// When this returns (with [`Options::fsync`](super::Options)), the commit is durable.
    pub fn finish(&self) -> Result<Tid> {
        let tid = self.finish_deferred()?;
        if self.opts.group_commit {
            self.sync_pending()?;
        }
        Ok(tid)
    }

    /// [`Storage::finish`] without waiting for the disk under group commit: the transaction is
    /// published (loads and the next transaction's serial checks see it) and becomes durable at
    /// the next [`Storage::sync_pending`]. Without group commit, or for a transaction with
    /// blobs, this is [`Storage::finish`].
    pub fn finish_deferred(&self) -> Result<Tid> {
        let mut w = self.writer();
        self.check_writable(&w)?;
        let txn = w.txn.as_ref().ok_or(StorageError::WrongTransaction("no transaction in progress"))?;
        if !txn.voted {
            return Err(StorageError::WrongTransaction("finish before vote"));
        }
        let (tpos, status, tid) = (txn.tpos, txn.status, txn.tid);
        if self.grouped(txn) {
            // A deferred-sync transaction's blobs go into place now, unsynced (`group.rs`).
            let blobs = self.finish_blobs_unsynced(tid);
            let txn = w.txn.take().ok_or(StorageError::WrongTransaction("no transaction in progress"))?;
            self.pack.writer_idle();
            let blobs = match blobs {
                Ok(b) => b,
                Err(e) => {
                    // Some blobs may be in place, others not; the status byte is still 'c'.
                    tracing::warn!(path = %self.path, %tid, error = %e, "moving blobs into place failed; storage is broken until reopened");
                    w.broken = Some(format!("finish of {tid} failed: {e}"));
                    return Err(e);
                }
            };
            self.publish(&txn, false);
            self.group.push(tid, tpos, status, txn.next + 8, blobs);
            return Ok(tid);
        }
        // Synchronously. Under group commit (a transaction with blobs) the transactions pending
        // before it are made durable first, or its status byte could reach the disk before theirs.
        let round = self.opts.group_commit.then(|| self.group.hold());
        let mut r = match &round {
            Some(_) => self.sync_round_held().map(|_| ()),
            None => Ok(()),
        };
        if r.is_ok() {
            r = self.file.write_at(&[status], tpos + STATUS_OFFSET).map_err(|e| self.io("write", e));
        }
        if r.is_ok() && self.opts.fsync {
            r = self.file.sync().map_err(|e| self.io("sync", e));
        }
        if r.is_ok() {
            // Committed in Data.fs: the blobs must be in place before readers see it.
            r = self.finish_blobs(tid);
        }
        let txn = w.txn.take().ok_or(StorageError::WrongTransaction("no transaction in progress"))?;
        // A pack waiting for the writer wakes once this lock is released.
        self.pack.writer_idle();
        if let Err(e) = r {
            // The status byte may or may not be on disk: only a reopen can tell.
            tracing::warn!(path = %self.path, tid = %txn.tid, error = %e, "commit failed at finish; storage is broken until reopened");
            w.broken = Some(format!("finish of {} failed: {e}", txn.tid));
            return Err(e);
        }
        self.publish(&txn, true);
        drop(round);
        Ok(txn.tid)
    }

    /// Makes a finished transaction visible to loads (and, if `durable`, to everything).
    fn publish(&self, txn: &Txn, durable: bool) {
        let mut c = self.committed_mut();
        for (&oid, &pos) in &txn.tindex {
            // write_record kept every position below MAX_POS.
            let _ = c.index.insert(oid, pos);
        }
        c.end = txn.next + 8;
        c.last_tid = txn.tid;
        if durable {
            c.durable_end = c.end;
            c.durable_tid = c.last_tid;
        }
    }

    /// Abandons the transaction in progress (if any) and truncates what it wrote. Without a
    /// transaction this does nothing.
    pub fn abort(&self) -> Result<()> {
        let mut w = self.writer();
        self.abort_locked(&mut w)
    }

    fn abort_locked(&self, w: &mut Writer) -> Result<()> {
        let Some(txn) = w.txn.take() else { return Ok(()) };
        self.abort_blobs();
        self.pack.writer_idle();
        if txn.flushed > txn.tpos || txn.voted {
            if let Err(e) = self.file.set_len(txn.tpos) {
                // The next transaction would overwrite the leftover bytes only partly;
                // refuse writes until a reopen cuts them.
                tracing::warn!(path = %self.path, error = %e, "could not truncate an aborted transaction");
                let why = format!("abort of {} could not truncate: {e}", txn.tid);
                w.broken = Some(why.clone());
                return Err(StorageError::Broken(why));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{MemDir, Options, Storage};
    use super::*;

    fn open(d: &MemDir) -> Storage<MemDir> {
        Storage::open(d.clone(), "Data.fs", Options::default()).expect("open").0
    }

    fn meta() -> TxnMeta {
        TxnMeta::with_raw_extension(Bytes::from_static(b"u"), Bytes::from_static(b"d"), Bytes::new())
    }

    #[test]
    fn calls_out_of_sequence_are_the_callers_errors() {
        let s = open(&MemDir::new());
        assert!(matches!(s.store(Oid::new(1), Tid::ZERO, b"x"), Err(StorageError::WrongTransaction(_))));
        assert!(matches!(s.vote(), Err(StorageError::WrongTransaction(_))));
        assert!(matches!(s.finish(), Err(StorageError::WrongTransaction(_))));
        s.abort().expect("abort without a transaction is fine");
        s.begin(meta(), BeginTid::Now(Tid::new(10)), TxnStatus::NORMAL).expect("begin");
        assert!(matches!(
            s.begin(meta(), BeginTid::Now(Tid::new(10)), TxnStatus::NORMAL),
            Err(StorageError::WrongTransaction(_))
        ));
        assert!(matches!(s.finish(), Err(StorageError::WrongTransaction(_))));
        assert!(matches!(s.store(Oid::new(1), Tid::ZERO, b""), Err(StorageError::EmptyData { .. })));
        s.store(Oid::new(1), Tid::ZERO, b"x").expect("store");
        s.vote().expect("vote");
        assert!(matches!(s.store(Oid::new(2), Tid::ZERO, b"x"), Err(StorageError::WrongTransaction(_))));
        assert_eq!(s.finish().expect("finish"), Tid::new(10));
        assert!(matches!(
            s.begin(meta(), BeginTid::Exactly(Tid::new(10)), TxnStatus::NORMAL),
            Err(StorageError::TidNotAfterLast { given, last }) if given == Tid::new(10) && last == Tid::new(10)
        ));
        assert!(matches!(
            s.begin(meta(), BeginTid::Now(Tid::new(1)), TxnStatus('c')),
            Err(StorageError::BadStatus('c'))
        ));
        assert_eq!(
            s.begin(meta(), BeginTid::Now(Tid::new(1)), TxnStatus::NORMAL).expect("begin"),
            Tid::new(11)
        );
    }

    #[test]
    fn uncommitted_records_are_invisible_until_finish() {
        let s = open(&MemDir::new());
        s.begin(meta(), BeginTid::Now(Tid::new(10)), TxnStatus::NORMAL).expect("begin");
        s.store(Oid::new(0), Tid::ZERO, b"root").expect("store");
        assert!(matches!(s.load(Oid::new(0)), Err(StorageError::PosKey { .. })));
        s.vote().expect("vote");
        assert!(matches!(s.load(Oid::new(0)), Err(StorageError::PosKey { .. })));
        assert_eq!(s.last_transaction(), Tid::ZERO);
        s.finish().expect("finish");
        assert_eq!(s.load(Oid::new(0)).expect("load"), (Bytes::from_static(b"root"), Tid::new(10)));
    }

    #[test]
    fn large_transactions_flush_before_vote_and_abort_truncates() {
        let d = MemDir::new();
        let s = open(&d);
        let size = s.size();
        let big = vec![7u8; FLUSH_AT / 3];
        s.begin(meta(), BeginTid::Now(Tid::new(10)), TxnStatus::NORMAL).expect("begin");
        for i in 0..5 {
            s.store(Oid::new(i), Tid::ZERO, &big).expect("store");
        }
        assert!(d.contents("Data.fs").expect("file").len() as u64 > size, "flushed early");
        s.abort().expect("abort");
        assert_eq!(d.contents("Data.fs").expect("file").len() as u64, size);
        s.begin(meta(), BeginTid::Now(Tid::new(10)), TxnStatus::NORMAL).expect("begin");
        for i in 0..5 {
            s.store(Oid::new(i), Tid::ZERO, &big).expect("store");
        }
        s.store(Oid::new(2), Tid::ZERO, b"small").expect("second store of the same oid");
        s.vote().expect("vote");
        s.finish().expect("finish");
        drop(s);
        let s = open(&d);
        assert_eq!(s.load(Oid::new(4)).expect("load").0.len(), big.len());
        assert_eq!(s.load(Oid::new(2)).expect("load").0, Bytes::from_static(b"small"));
    }
}
