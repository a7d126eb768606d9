//! Pack without garbage collection, while reads and commits go on.
//!
//! # Semantics
//! [`Storage::pack`]`(pack_time)` rewrites `Data.fs` so that:
//! * every transaction with a tid at or after the pack time is kept as it is (same tid, status,
//!   metadata and records; only file positions inside it change);
//! * of the transactions before the pack time, only the records *current at the pack time* are
//!   kept: for each object, its newest record with a tid below the pack time. Unreachable
//!   objects are kept too (there is no garbage collection). A transaction that keeps at least
//!   one record is written with status `'p'`, its original tid and metadata, and its records
//!   keep their tids but hold their data inline (back-pointers resolved) with no previous
//!   record; the other transactions before the pack time disappear;
//! * an object whose current record at the pack time holds no data (a delete, or an undone
//!   creation) is dropped with all its history before the pack time, as FileStorage's pack
//!   drops it: it is then unknown unless a later transaction writes it again;
//! * a back-pointer of a kept transaction into the history before the pack time is re-aimed at
//!   the kept copy of its target, or, when its target was removed, replaced by the data itself;
//!   so no record points into removed history;
//! * transactions with the obsolete status `'u'` (whose records every reader skips) are dropped
//!   before the pack time, with a warning, and copied byte for byte after it.
//!
//! Afterwards `load_before(oid, t)` for every `t` at or after the pack time answers exactly as
//! before the pack, with one exception inherited from FileStorage: for a dropped object that a
//! later transaction wrote again, a `t` from the pack time up to that later revision answers
//! "no revision" instead of POSKeyError. The undo log stops at the packed transactions (as
//! before, at the first `'p'`).
//!
//! ## Compared with ZODB's FileStorage (`fspack.py`, `gc=False`)
//! * FileStorage packs the transactions with `tid <= stop` where `stop` is the pack time
//!   converted to a tid; here the bound is exclusive (`tid < pack_time`), so Python's pack to
//!   `stop` is this pack to `stop + 1`. The resulting files are byte for byte the same.
//! * FileStorage packs every transaction, the last one included, when the pack time is later
//!   than the last transaction; here the pack time is lowered to the last tid, so the last
//!   transaction always survives as it is and the storage's last tid never goes back (a packed
//!   file whose last transaction disappeared would reopen with an older last tid).
//! * When the copy before the pack time would be exactly as long as the original, FileStorage
//!   changes nothing (it "didn't free any data"); so does this pack ([`PackOutcome::NothingToRemove`]).
//! * FileStorage fails (`PackError` or an assertion) when a back-pointer after the pack time
//!   points at a removed record; here the data is copied in instead.
//! * FileStorage renames `Data.fs` away before renaming the packed file into place and does not
//!   fsync; here the packed file is fsynced and renamed over `Data.fs` atomically.
//!
//! # Concurrency
//! Only one pack runs at a time ([`StorageError::PackInProgress`] for a second). The pack reads
//! the committed part of the old file and writes `Data.fs.pack` without any lock, in rounds
//! that catch up with the transactions committed meanwhile, and fsyncs it. Then it takes the
//! writer lock, waiting for the transaction in progress (if any) to finish or abort; `begin`
//! waits while the pack holds it. Under the lock it copies the last commits, fsyncs, removes
//! the (now stale) index cache, renames `Data.fs.pack` over `Data.fs`, swaps the file handle
//! and the index for readers in one step (under the committed-state lock, which every read
//! holds while it reads), and syncs the directory; if that sync fails the storage is broken
//! (writes refused) until reopened, since commits to the new file could be lost with an
//! undurable rename. It writes a fresh index cache afterwards, outside the lock.
//!
//! Each swap bumps the *file generation*. A read that holds no state between calls (loads,
//! history, undo log, invalidations) simply reads the new file. A cursor from
//! [`Storage::txn_cursor`] or [`TxnRecord::records`](super::TxnRecord::records) remembers the
//! generation it was made in and, once the file was replaced, fails with
//! [`StorageError::FileReplaced`]: positions in the old file mean nothing in the new one.
//!
//! # Crash safety
//! `Data.fs` is not written by the pack until the rename, and the file renamed over it was
//! fsynced first, so a crash at any point leaves either the old file or the complete new one.
//! The index cache is removed (durably) before the rename, so it never describes the wrong
//! file. A `Data.fs.pack` left by a crash is removed at open, with a warning. The pack fsyncs
//! whatever [`Options::fsync`](super::Options) says: replacing the whole file without it could
//! lose every transaction, not only the last ones.

use super::cache;
use super::engine::{check_data_header, Storage, Window};
use super::error::{Result, StorageError};
use super::file::{OpenMode, StorageDir, StorageFile};
use super::format::{
    show_status, DataHeaderRec, TxnHeaderRec, DATA_HEADER_LEN, MAGIC_LEN, STATUS_NORMAL, STATUS_PACKED,
    STATUS_UNDONE, TXN_HEADER_LEN,
};
use super::index::{Index, MAX_POS};
use super::txn::{Writer, FLUSH_AT};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};
use zeoraid_core::ids::{Oid, Tid};

/// How many catch-up rounds run without the writer lock before the last one takes it.
const CATCH_UP_ROUNDS: usize = 8;
/// Bytes of new commits small enough to copy under the writer lock.
const CATCH_UP_LOCKED: u64 = 1 << 20;

/// What a pack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackOutcome {
    /// The file was rewritten and replaced.
    Packed,
    /// The storage holds no transaction: nothing to do.
    Empty,
    /// The pack time is at or before the oldest transaction: nothing is before it.
    BeforeFirstTransaction,
    /// Packing would free no bytes (every record before the pack time is current, or the file
    /// was already packed to this time): the file is left as it is, as FileStorage does.
    NothingToRemove,
}

/// What [`Storage::pack`] did, for logs and the admin interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackReport {
    /// Whether the file was replaced, or why not.
    pub outcome: PackOutcome,
    /// The pack time used: the one asked for, lowered to the last transaction's tid when it was
    /// later (so the last transaction, and any committed during the pack, is kept as it is).
    pub pack_time: Tid,
    /// Committed bytes of `Data.fs` before (when the file was replaced: at the swap).
    pub bytes_before: u64,
    /// Committed bytes of `Data.fs` after.
    pub bytes_after: u64,
    /// Transactions before the pack time that held no current record, removed.
    pub transactions_removed: u64,
    /// Transactions before the pack time that hold current records, kept with status `'p'`.
    pub transactions_packed: u64,
    /// Transactions at or after the pack time, kept as they are (commits during the pack
    /// included).
    pub transactions_kept: u64,
    /// Of those, the ones committed while the pack ran.
    pub transactions_committed_during_pack: u64,
    /// Data records removed (non-current revisions before the pack time, and the records of
    /// dropped objects).
    pub records_removed: u64,
    /// Objects dropped because their current record at the pack time held no data.
    pub objects_dropped: u64,
    /// Back-pointers after the pack time whose target was removed, replaced by their data.
    pub back_pointers_resolved: u64,
    /// Blob files removed because `Data.fs` no longer holds their revision.
    pub blob_files_removed: u64,
    /// Wall-clock time the pack took.
    pub duration: Duration,
}

/// Points of a pack at which [`Storage::pack_with_progress`] calls its observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackPhase {
    /// The records current at the pack time are known; nothing is written yet.
    Planned,
    /// The transactions before the pack time are copied into `Data.fs.pack`.
    CopiedToPackTime,
    /// Everything committed when the pack started is copied.
    CopiedSnapshot,
    /// Catching up is done (and fsynced); next the pack takes the writer lock.
    Finishing,
}

// ---- the swappable file ----------------------------------------------------------------------

/// The open `Data.fs`, replaceable by a pack, with the generation of the current file.
///
/// It implements [`StorageFile`] by delegating to the current file, so the engine reads and
/// writes through it unchanged. Invariant: the file is only replaced while the committed-state
/// write lock is held (and the writer lock, with no transaction in progress), so a reader that
/// holds the committed-state read lock reads one file throughout.
pub(crate) struct SwapFile<F> {
    current: RwLock<(F, u64)>,
}

impl<F: StorageFile> SwapFile<F> {
    pub(crate) fn new(file: F) -> SwapFile<F> {
        SwapFile { current: RwLock::new((file, 0)) }
    }

    fn get(&self) -> std::sync::RwLockReadGuard<'_, (F, u64)> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The generation of the current file: 0 at open, one more after each pack.
    pub(crate) fn generation(&self) -> u64 {
        self.get().1
    }

    /// Replaces the file; returns the new generation.
    fn replace(&self, file: F) -> u64 {
        let mut c = self.current.write().unwrap_or_else(PoisonError::into_inner);
        c.0 = file;
        c.1 += 1;
        c.1
    }
}

impl<F: StorageFile> StorageFile for SwapFile<F> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.get().0.read_at(buf, offset)
    }

    fn try_read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        self.get().0.try_read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.get().0.write_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        self.get().0.len()
    }

    fn sync(&self) -> io::Result<()> {
        self.get().0.sync()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.get().0.set_len(len)
    }
}

// ---- coordination with the writer ------------------------------------------------------------

/// The pack's shared state inside a [`Storage`].
#[derive(Debug, Default)]
pub(crate) struct PackState {
    /// A pack is running (at most one).
    running: AtomicBool,
    /// The pack wants, or holds, the writer with no transaction in progress: `begin` waits.
    /// Only changed while the writer lock is held.
    draining: AtomicBool,
    /// Signalled (with the writer lock) when a transaction ends or the pack stops draining.
    idle: Condvar,
    /// Serialises index cache writes with the file swap, so no cache of the old file is
    /// written after the pack removed it.
    cache_lock: Mutex<()>,
}

impl PackState {
    /// Waits (releasing the writer lock meanwhile) while a pack is finishing; `begin` calls it.
    pub(crate) fn admit<'a>(&self, mut w: MutexGuard<'a, Writer>) -> MutexGuard<'a, Writer> {
        while self.draining.load(Ordering::Acquire) {
            w = self.idle.wait(w).unwrap_or_else(PoisonError::into_inner);
        }
        w
    }

    /// Tells a waiting pack that the transaction ended; called with the writer lock held.
    pub(crate) fn writer_idle(&self) {
        self.idle.notify_all();
    }

    /// Held while the index cache file is written or replaced.
    pub(crate) fn cache_lock(&self) -> MutexGuard<'_, ()> {
        self.cache_lock.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Clears `running` when the pack ends, however it ends.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Holds back `begin` while alive; dropped (even by a panic) before the writer lock is
/// released, it lets the waiting `begin`s go on.
struct Draining<'a>(&'a PackState);

impl<'a> Draining<'a> {
    fn start(p: &'a PackState) -> Draining<'a> {
        p.draining.store(true, Ordering::Release);
        Draining(p)
    }
}

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        self.0.draining.store(false, Ordering::Release);
        self.0.idle.notify_all();
    }
}

/// The name of the file a pack of `name` writes.
pub(crate) fn pack_file_name(name: &str) -> String {
    format!("{name}.pack")
}

/// Removes a `Data.fs.pack` left by a pack that died (called at open, unless read-only).
pub(crate) fn remove_leftover<D: StorageDir>(dir: &D, name: &str) {
    let p = pack_file_name(name);
    match dir.exists(&p) {
        Ok(false) => {}
        Ok(true) => match dir.remove(&p) {
            Ok(()) => tracing::warn!(
                path = %dir.display(&p),
                "removed the file of an unfinished pack (a pack was interrupted; Data.fs is unchanged)"
            ),
            Err(e) => {
                tracing::warn!(path = %dir.display(&p), error = %e, "cannot remove the file of an unfinished pack")
            }
        },
        Err(e) => {
            tracing::warn!(path = %dir.display(&p), error = %e, "cannot stat the file of an unfinished pack")
        }
    }
}

// ---- the packed file being written -----------------------------------------------------------

/// `Data.fs.pack` being written, with what is known of its records.
struct Copier<F> {
    file: F,
    path: String,
    /// Bytes not yet written, which start at `flushed`.
    buf: Vec<u8>,
    flushed: u64,
    /// oid → position of its newest record in the new file (the index readers get).
    index: Index,
    /// (old position, new position) of each kept record before the pack time, sorted.
    kept: Vec<(u64, u64)>,
    /// Where the part at or after the pack time starts in the old file.
    packpos: u64,
    /// (old position from which it applies, new − old) for the part after `packpos`, sorted:
    /// a new entry starts after each record whose size changed.
    shifts: Vec<(u64, i64)>,
    last_tid: Tid,
}

impl<F: StorageFile> Copier<F> {
    fn io(&self, op: &'static str) -> impl FnOnce(io::Error) -> StorageError + '_ {
        move |source| StorageError::Io { op, path: self.path.clone(), source }
    }

    fn pos(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.file.write_at(&self.buf, self.flushed).map_err(self.io("write"))?;
            self.flushed += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Overwrites the 8 bytes at `at` (already put) with `v`.
    fn patch_u64(&mut self, at: u64, v: u64) -> Result<()> {
        let b = v.to_be_bytes();
        if at >= self.flushed {
            let i = (at - self.flushed) as usize;
            self.buf[i..i + 8].copy_from_slice(&b);
        } else if at + 8 <= self.flushed {
            self.file.write_at(&b, at).map_err(self.io("write"))?;
        } else {
            // A flush fell inside the field.
            let n = (self.flushed - at) as usize;
            self.file.write_at(&b[..n], at).map_err(self.io("write"))?;
            self.buf[..8 - n].copy_from_slice(&b[n..]);
        }
        Ok(())
    }

    /// Puts a data record header, checking the new file stays addressable.
    fn put_data_header(&mut self, h: &DataHeaderRec) -> Result<u64> {
        let here = self.pos();
        let len = h.record_len().unwrap_or(u64::MAX);
        if here.checked_add(len + 8).is_none_or(|e| e > MAX_POS) {
            return Err(self.io("write")(io::Error::other("the packed file would exceed 2^48 bytes")));
        }
        self.put(&h.encode())?;
        Ok(here)
    }

    /// The new position of the old record at `old`, if it was kept.
    fn map(&self, old: u64) -> Option<u64> {
        if old >= self.packpos {
            let i = self.shifts.partition_point(|&(from, _)| from <= old).checked_sub(1)?;
            return u64::try_from(old as i64 + self.shifts[i].1).ok();
        }
        self.kept.binary_search_by_key(&old, |&(o, _)| o).ok().map(|i| self.kept[i].1)
    }
}

/// What the scan before the pack time found.
struct Plan {
    /// Position of the first transaction at or after the pack time.
    packpos: u64,
    /// oid → position of its current record at the pack time; 0 when that record holds no
    /// data (the object is dropped).
    current: Index,
    /// Transactions before the pack time.
    txns: u64,
    /// Data records before the pack time.
    records: u64,
    /// Transactions before the pack time with the obsolete status `'u'` (dropped).
    undone: u64,
    /// Whether anything but current records and one record per transaction is there (a
    /// superseded or data-less record, an empty or undone transaction, a back-pointer to
    /// resolve): if not, packing changes nothing.
    changes: bool,
}

/// A transaction header read during a pack, checked against the region it lies in.
fn txn_header<F: StorageFile>(w: &mut Window<'_, F>, pos: u64) -> Result<TxnHeaderRec> {
    let mut a = [0u8; 23];
    a.copy_from_slice(w.get(pos, TXN_HEADER_LEN, "a transaction header")?);
    let h = TxnHeaderRec::decode(&a);
    if !matches!(h.status, STATUS_NORMAL | STATUS_PACKED | STATUS_UNDONE) {
        return Err(StorageError::corrupt(pos + 16, "a committed transaction", show_status(h.status)));
    }
    if h.tlen < h.header_len()
        || h.tlen.checked_add(8).and_then(|l| pos.checked_add(l)).is_none_or(|e| e > w.limit)
    {
        return Err(StorageError::corrupt(
            pos + 8,
            "a transaction length within the file",
            h.tlen.to_string(),
        ));
    }
    Ok(h)
}

/// A data record header and its back-pointer (0 unless `plen` is 0).
fn data_header<F: StorageFile>(
    w: &mut Window<'_, F>,
    pos: u64,
    tpos: u64,
    tend: u64,
) -> Result<(DataHeaderRec, u64)> {
    let mut a = [0u8; 42];
    a.copy_from_slice(w.get(pos, DATA_HEADER_LEN, "a data record header")?);
    let h = DataHeaderRec::decode(&a);
    check_data_header(&h, pos, tend, None)?;
    if h.tloc != tpos {
        return Err(StorageError::corrupt(
            pos + 24,
            format!("transaction position {tpos}"),
            h.tloc.to_string(),
        ));
    }
    let back = if h.plen == 0 { w.u64_at(pos + DATA_HEADER_LEN, "a back-pointer")? } else { 0 };
    if back >= pos {
        return Err(StorageError::corrupt(
            pos + DATA_HEADER_LEN,
            format!("a back-pointer below {pos}"),
            back.to_string(),
        ));
    }
    Ok((h, back))
}

impl<D: StorageDir> Storage<D> {
    /// Packs the storage to `pack_time` without garbage collection: see the module
    /// documentation of `pack.rs` for what is kept. Reads and commits go on meanwhile; the
    /// call returns when the packed file has replaced `Data.fs` (or nothing had to change).
    ///
    /// A pack time after the last transaction is lowered to the last transaction's tid: every
    /// transaction but the last is packed, and the last one (whose tid is the storage's last
    /// tid, which must never go back) is kept as it is, as are commits made during the pack.
    /// A pack time at or before the first transaction changes nothing. The caller must not hold a
    /// transaction open on the calling thread: the pack waits for it.
    pub fn pack(&self, pack_time: Tid) -> Result<PackReport> {
        self.pack_with_progress(pack_time, |_| {})
    }

    /// [`Storage::pack`], calling `progress` at each [`PackPhase`] on the packing thread with no
    /// lock held (it may read or even commit, but must finish any transaction it begins).
    pub fn pack_with_progress(
        &self,
        pack_time: Tid,
        mut progress: impl FnMut(PackPhase),
    ) -> Result<PackReport> {
        let started = Instant::now();
        if self.opts.read_only {
            return Err(StorageError::ReadOnly);
        }
        if self.pack.running.swap(true, Ordering::AcqRel) {
            return Err(StorageError::PackInProgress);
        }
        let _running = Running(&self.pack.running);
        if let Some(why) = self.writer().broken.clone().or_else(|| self.group.failed()) {
            return Err(StorageError::Broken(why));
        }
        // Only durable transactions: the status bytes of pending ones (group commit) are still
        // 'c'; the swap makes them durable and copies them.
        let (end, last) = {
            let c = self.committed();
            (c.durable_end, c.durable_tid)
        };
        let pack_time = pack_time.min(last);
        let mut report = PackReport {
            outcome: PackOutcome::Packed,
            pack_time,
            bytes_before: end,
            bytes_after: end,
            transactions_removed: 0,
            transactions_packed: 0,
            transactions_kept: 0,
            transactions_committed_during_pack: 0,
            records_removed: 0,
            objects_dropped: 0,
            back_pointers_resolved: 0,
            blob_files_removed: 0,
            duration: Duration::ZERO,
        };
        tracing::info!(path = %self.path, %pack_time, bytes = end, "pack started");
        let outcome = if end <= MAGIC_LEN {
            Some(PackOutcome::Empty)
        } else if self.read_txn_header(MAGIC_LEN, end)?.tid >= pack_time {
            Some(PackOutcome::BeforeFirstTransaction)
        } else {
            None
        };
        if let Some(outcome) = outcome {
            return Ok(self.finish_report(report, outcome, started));
        }

        let plan = self.plan_pack(end, pack_time)?;
        progress(PackPhase::Planned);
        if !plan.changes {
            // A pack that crashed after its rename may have left blob files behind.
            report.blob_files_removed = self.prune_blobs(pack_time);
            return Ok(self.finish_report(report, PackOutcome::NothingToRemove, started));
        }
        let pack_name = pack_file_name(&self.name);
        let shown = self.dir.display(&pack_name);
        let file = self.dir.open(&pack_name, OpenMode::Truncate).map_err(|source| StorageError::Io {
            op: "create",
            path: shown.clone(),
            source,
        })?;
        let mut cp = Copier {
            file,
            path: shown,
            buf: Vec::with_capacity(FLUSH_AT + (64 << 10)),
            flushed: 0,
            index: Index::new(),
            kept: Vec::new(),
            packpos: plan.packpos,
            shifts: Vec::new(),
            last_tid: Tid::ZERO,
        };
        let r = self.pack_into(&mut cp, &plan, end, &mut report, &mut progress);
        match r {
            Ok(true) => {
                report.blob_files_removed = self.prune_blobs(pack_time);
                Ok(self.finish_report(report, PackOutcome::Packed, started))
            }
            Ok(false) => {
                self.discard(cp, &pack_name);
                // A pack that crashed after its rename may have left blob files behind.
                report.blob_files_removed = self.prune_blobs(pack_time);
                Ok(self.finish_report(report, PackOutcome::NothingToRemove, started))
            }
            Err(e) => {
                if self.dir.exists(&pack_name).unwrap_or(true) {
                    self.discard(cp, &pack_name);
                }
                tracing::warn!(path = %self.path, error = %e, "pack failed");
                Err(e)
            }
        }
    }

    /// Removes the blob files of revisions before `pack_time` that `Data.fs` no longer holds,
    /// once the packed file is in place. The rule needs no record of what the pack dropped: a
    /// revision before the pack time keeps its blob exactly when `Data.fs` still has a record
    /// of it, so running it again after a crash finishes the job, and it can never remove the
    /// blob of a revision a reader can still load. Commits in flight have tids above the pack
    /// time and are not looked at. A failure is logged and leaves files behind, which is
    /// harmless: the pack itself has succeeded.
    fn prune_blobs(&self, pack_time: Tid) -> u64 {
        let Some(blobs) = self.blobs.as_ref() else { return 0 };
        let mut removed = 0;
        let result = (|| -> Result<()> {
            for (oid, tid) in blobs.list()? {
                if tid >= pack_time {
                    continue;
                }
                match self.load_serial(oid, tid) {
                    Ok(_) => {}
                    Err(StorageError::PosKey { .. }) => {
                        if blobs.remove_revision(oid, tid)? {
                            removed += 1;
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(path = %self.path, error = %e, removed, "pack: could not remove every blob file of removed revisions");
        }
        removed
    }

    fn finish_report(&self, mut r: PackReport, outcome: PackOutcome, started: Instant) -> PackReport {
        r.outcome = outcome;
        r.duration = started.elapsed();
        if outcome != PackOutcome::Packed {
            r.transactions_removed = 0;
            r.transactions_packed = 0;
            r.records_removed = 0;
            r.objects_dropped = 0;
            r.back_pointers_resolved = 0;
            r.transactions_kept = 0;
            r.transactions_committed_during_pack = 0;
        }
        tracing::info!(
            path = %self.path,
            outcome = ?r.outcome,
            pack_time = %r.pack_time,
            bytes_before = r.bytes_before,
            bytes_after = r.bytes_after,
            transactions_removed = r.transactions_removed,
            transactions_packed = r.transactions_packed,
            transactions_kept = r.transactions_kept,
            records_removed = r.records_removed,
            blob_files_removed = r.blob_files_removed,
            duration_ms = r.duration.as_millis() as u64,
            "pack ended"
        );
        r
    }

    /// Removes an unused `Data.fs.pack` (best effort: a leftover is removed at the next open).
    fn discard(&self, cp: Copier<D::File>, pack_name: &str) {
        drop(cp);
        if let Err(e) = self.dir.remove(pack_name) {
            tracing::warn!(path = %self.dir.display(pack_name), error = %e, "cannot remove the unused pack file");
        }
    }

    /// Finds the current record of every object at the pack time.
    fn plan_pack(&self, end: u64, pack_time: Tid) -> Result<Plan> {
        let mut w = Window::new(&self.file, &self.path, end);
        let mut plan = Plan {
            packpos: MAGIC_LEN,
            current: Index::new(),
            txns: 0,
            records: 0,
            undone: 0,
            changes: false,
        };
        let mut pos = MAGIC_LEN;
        while pos < end {
            let h = txn_header(&mut w, pos)?;
            if h.tid >= pack_time {
                break;
            }
            plan.txns += 1;
            let tend = pos + h.tlen;
            let mut p = pos + h.header_len();
            if h.status == STATUS_UNDONE || p == tend {
                plan.changes = true;
                plan.undone += u64::from(h.status == STATUS_UNDONE);
                p = tend;
            }
            while p < tend {
                let (dh, back) = data_header(&mut w, p, pos, tend)?;
                let at = if dh.plen != 0 || back != 0 { p } else { 0 };
                if at == 0 || back != 0 || plan.current.get(dh.oid).is_some() {
                    plan.changes = true;
                }
                if !plan.current.insert(dh.oid, at) {
                    return Err(StorageError::corrupt(p, "a position below 2^48", p.to_string()));
                }
                plan.records += 1;
                p += dh.record_len().unwrap_or(u64::MAX);
            }
            pos = tend + 8;
        }
        plan.packpos = pos;
        Ok(plan)
    }

    /// Writes the packed file and puts it in place. `Ok(false)`: it would free nothing.
    fn pack_into(
        &self,
        cp: &mut Copier<D::File>,
        plan: &Plan,
        end: u64,
        report: &mut PackReport,
        progress: &mut impl FnMut(PackPhase),
    ) -> Result<bool> {
        let mut magic = [0u8; MAGIC_LEN as usize];
        self.read_exact(&mut magic, 0)?;
        cp.put(&magic)?;
        self.copy_packed(cp, plan, end, report)?;
        debug_assert_eq!(report.transactions_removed + report.transactions_packed, plan.txns);
        if cp.pos() == plan.packpos {
            return Ok(false);
        }
        let dropped: Vec<Oid> = plan.current.iter().filter(|&(_, p)| p == 0).map(|(o, _)| o).collect();
        report.objects_dropped = dropped.len() as u64;
        if !dropped.is_empty() {
            tracing::warn!(
                path = %self.path,
                objects = dropped.len(),
                first = ?&dropped[..dropped.len().min(10)],
                "pack drops objects whose current revision at the pack time is a delete or an undone creation"
            );
        }
        if plan.undone > 0 {
            tracing::warn!(
                path = %self.path,
                transactions = plan.undone,
                "pack drops obsolete transactions with status 'u' before the pack time"
            );
        }
        progress(PackPhase::CopiedToPackTime);
        cp.shifts.push((plan.packpos, cp.pos() as i64 - plan.packpos as i64));
        report.transactions_kept += self.copy_rest(cp, plan.packpos, end, report)?;
        progress(PackPhase::CopiedSnapshot);

        // Catch up with the commits made meanwhile, without the writer lock.
        let mut copied = end;
        for _ in 0..CATCH_UP_ROUNDS {
            let now = self.size();
            if now - copied <= CATCH_UP_LOCKED {
                break;
            }
            let n = self.copy_rest(cp, copied, now, report)?;
            report.transactions_kept += n;
            report.transactions_committed_during_pack += n;
            copied = now;
        }
        cp.flush()?;
        cp.file.sync().map_err(cp.io("sync"))?;
        progress(PackPhase::Finishing);

        let mut w = self.writer();
        let draining = Draining::start(&self.pack);
        while w.txn.is_some() {
            w = self.pack.idle.wait(w).unwrap_or_else(PoisonError::into_inner);
        }
        let r = self.swap_in(&mut w, cp, copied, report);
        drop(draining);
        drop(w);
        r?;
        if self.opts.index_cache {
            if let Err(e) = cache::save(self) {
                tracing::warn!(path = %self.path, error = %e, "could not write the index cache after the pack");
            }
        }
        Ok(true)
    }

    /// Under the writer lock with no transaction in progress: copies the last commits, then
    /// replaces `Data.fs` and the readers' state.
    fn swap_in(
        &self,
        w: &mut Writer,
        cp: &mut Copier<D::File>,
        copied: u64,
        report: &mut PackReport,
    ) -> Result<()> {
        if let Some(why) = &w.broken {
            return Err(StorageError::Broken(why.clone()));
        }
        // No round may write status bytes into the old file once it is replaced; and every
        // transaction pending now is made durable first, so that the copy holds its status.
        let _round = self.group.hold();
        self.sync_round_held()?;
        let (end, last) = {
            let c = self.committed();
            (c.end, c.last_tid)
        };
        let n = self.copy_rest(cp, copied, end, report)?;
        report.transactions_kept += n;
        report.transactions_committed_during_pack += n;
        if cp.last_tid != last {
            return Err(StorageError::corrupt(
                end,
                format!("last transaction {last} in the packed copy"),
                cp.last_tid.to_string(),
            ));
        }
        cp.flush()?;
        cp.file.sync().map_err(cp.io("sync"))?;
        let new_end = cp.pos();
        let pack_name = pack_file_name(&self.name);
        let cache_name = cache::file_name(&self.name);
        let dir_io = |op: &'static str, name: &str| {
            let path = self.dir.display(name);
            move |source| StorageError::Io { op, path, source }
        };
        let _cache = self.pack.cache_lock();
        // The cache describes the old file: it must be gone before the new file has the name.
        self.dir.remove(&cache_name).map_err(dir_io("remove", &cache_name))?;
        self.dir.sync().map_err(dir_io("sync directory of", &cache_name))?;
        self.dir.rename(&pack_name, &self.name).map_err(dir_io("rename", &pack_name))?;
        // The point of no return: the name is the new file's (or will be after a crash, or
        // the old file, which holds the same transactions).
        let new_file = self.dir.open(&self.name, OpenMode::Write);
        let new_file = match new_file {
            Ok(f) => f,
            Err(e) => {
                let why = format!("the packed file could not be reopened after the rename: {e}");
                tracing::warn!(path = %self.path, error = %e, "pack: cannot reopen the renamed file; storage is broken until reopened");
                w.broken = Some(why.clone());
                return Err(StorageError::Broken(why));
            }
        };
        {
            let mut c = self.committed_mut();
            report.bytes_before = c.end;
            self.file.replace(new_file);
            c.index = std::mem::take(&mut cp.index);
            c.end = new_end;
            c.durable_end = new_end;
        }
        report.bytes_after = new_end;
        if let Err(e) = self.dir.sync() {
            // Commits now go to the new file; if the rename is lost in a crash they would be
            // lost with it. Refuse them until a reopen settles which file is Data.fs.
            tracing::warn!(path = %self.path, error = %e, "pack: cannot sync the directory after the rename; storage is broken until reopened");
            let why = format!("directory sync after the pack's rename failed: {e}");
            w.broken = Some(why.clone());
            return Err(StorageError::Broken(why));
        }
        Ok(())
    }

    /// Copies the transactions before the pack time that hold current records, as packed
    /// transactions; records the kept records' new positions.
    fn copy_packed(
        &self,
        cp: &mut Copier<D::File>,
        plan: &Plan,
        end: u64,
        report: &mut PackReport,
    ) -> Result<()> {
        let mut w = Window::new(&self.file, &self.path, end);
        let mut pos = MAGIC_LEN;
        let mut kept_records = 0;
        while pos < plan.packpos {
            let h = txn_header(&mut w, pos)?;
            let tend = pos + h.tlen;
            let mut new_tpos = None;
            let mut p = pos + h.header_len();
            if h.status == STATUS_UNDONE {
                p = tend;
            }
            while p < tend {
                let (dh, back) = data_header(&mut w, p, pos, tend)?;
                let next = p + dh.record_len().unwrap_or(u64::MAX);
                if p != 0 && plan.current.get(dh.oid) == Some(p) {
                    let tpos = match new_tpos {
                        Some(t) => t,
                        None => {
                            let t = cp.pos();
                            let hdr = TxnHeaderRec { status: STATUS_PACKED, ..h };
                            cp.put(&hdr.encode())?;
                            let meta = w.get(
                                pos + TXN_HEADER_LEN,
                                h.header_len() - TXN_HEADER_LEN,
                                "transaction metadata",
                            )?;
                            cp.put(meta)?;
                            new_tpos = Some(t);
                            t
                        }
                    };
                    let here = if dh.plen != 0 {
                        let here = cp.put_data_header(&DataHeaderRec { prev: 0, tloc: tpos, ..dh })?;
                        cp.put(w.get(p + DATA_HEADER_LEN, dh.plen, "a pickle")?)?;
                        here
                    } else {
                        let data = self.load_back(dh.oid, back, end)?;
                        let plen = data.as_ref().map_or(0, |(d, _)| d.len() as u64);
                        let here = cp.put_data_header(&DataHeaderRec { prev: 0, tloc: tpos, plen, ..dh })?;
                        match data {
                            Some((d, _)) => cp.put(&d)?,
                            None => cp.put(&0u64.to_be_bytes())?,
                        }
                        here
                    };
                    cp.kept.push((p, here));
                    if !cp.index.insert(dh.oid, here) {
                        return Err(StorageError::corrupt(here, "a position below 2^48", here.to_string()));
                    }
                    kept_records += 1;
                }
                p = next;
            }
            match new_tpos {
                Some(t) => {
                    let tlen = cp.pos() - t;
                    cp.patch_u64(t + 8, tlen)?;
                    cp.put(&tlen.to_be_bytes())?;
                    cp.last_tid = h.tid;
                    report.transactions_packed += 1;
                }
                None => report.transactions_removed += 1,
            }
            pos = tend + 8;
        }
        report.records_removed = plan.records - kept_records;
        Ok(())
    }

    /// Copies the transactions in `[from, to)` of the old file (all at or after the pack
    /// time) as they are, re-aiming previous-record and back-pointers. Returns how many.
    fn copy_rest(
        &self,
        cp: &mut Copier<D::File>,
        from: u64,
        to: u64,
        report: &mut PackReport,
    ) -> Result<u64> {
        let mut w = Window::new(&self.file, &self.path, to);
        let mut pos = from;
        let mut n = 0;
        let mut tindex = Vec::new();
        while pos < to {
            let h = txn_header(&mut w, pos)?;
            if h.tid <= cp.last_tid {
                return Err(StorageError::corrupt(
                    pos,
                    format!("a tid after {}", cp.last_tid),
                    h.tid.to_string(),
                ));
            }
            let tend = pos + h.tlen;
            n += 1;
            cp.last_tid = h.tid;
            if h.status == STATUS_UNDONE {
                // Obsolete ("undone") transactions are invisible to every reader; they are
                // copied byte for byte and their records are never looked at.
                cp.put(w.get(pos, h.tlen + 8, "an undone transaction")?)?;
                pos = tend + 8;
                continue;
            }
            let new_tpos = cp.pos();
            cp.put(w.get(pos, h.header_len(), "a transaction header")?)?;
            let mut p = pos + h.header_len();
            tindex.clear();
            while p < tend {
                let (dh, back) = data_header(&mut w, p, pos, tend)?;
                let prev = cp.index.get(dh.oid).unwrap_or(0);
                let base = DataHeaderRec { prev, tloc: new_tpos, ..dh };
                let here = if dh.plen != 0 {
                    let here = cp.put_data_header(&base)?;
                    cp.put(w.get(p + DATA_HEADER_LEN, dh.plen, "a pickle")?)?;
                    here
                } else if back == 0 {
                    let here = cp.put_data_header(&base)?;
                    cp.put(&0u64.to_be_bytes())?;
                    here
                } else if let Some(nb) = cp.map(back) {
                    let here = cp.put_data_header(&base)?;
                    cp.put(&nb.to_be_bytes())?;
                    here
                } else {
                    // The target was removed: copy its data in (or no data, if it had none).
                    report.back_pointers_resolved += 1;
                    let data = self.load_back(dh.oid, back, to)?;
                    let plen = data.as_ref().map_or(0, |(d, _)| d.len() as u64);
                    let here = cp.put_data_header(&DataHeaderRec { plen, ..base })?;
                    match data {
                        Some((d, _)) => cp.put(&d)?,
                        None => cp.put(&0u64.to_be_bytes())?,
                    }
                    here
                };
                tindex.push((dh.oid, here));
                p += dh.record_len().unwrap_or(u64::MAX);
                let delta = cp.pos() as i64 - p as i64;
                if cp.shifts.last().is_none_or(|&(_, d)| d != delta) {
                    cp.shifts.push((p, delta));
                }
            }
            let tlen = cp.pos() - new_tpos;
            if tlen != h.tlen {
                cp.patch_u64(new_tpos + 8, tlen)?;
            }
            cp.put(&tlen.to_be_bytes())?;
            for &(oid, here) in &tindex {
                if !cp.index.insert(oid, here) {
                    return Err(StorageError::corrupt(here, "a position below 2^48", here.to_string()));
                }
            }
            pos = tend + 8;
        }
        Ok(n)
    }
}

#[cfg(test)]
#[path = "pack_tests.rs"]
mod tests;
