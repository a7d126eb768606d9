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
//!
//! # Files
//! * `pack.rs` (this file): the reports, the entry points ([`Storage::pack`]) and the phases
//!   in order (plan, copy, catch up, swap), the removal of blob files, and of a leftover
//!   `Data.fs.pack` at open.
//! * `pack/copy.rs`: the copy phase: the plan (the current records at the pack time) and the
//!   writing of `Data.fs.pack` (packed transactions, then the rest as it is).
//! * `pack/swap.rs`: the swappable file handle, the coordination with the writer, and the swap
//!   of the packed file into place under the writer lock.

mod copy;
mod swap;

use copy::{Copier, Plan};
use swap::{Draining, Running};
pub(crate) use swap::{PackState, SwapFile};

use super::cache;
use super::engine::Storage;
use super::error::{Result, StorageError};
use super::file::{OpenMode, StorageDir, StorageFile};
use super::format::MAGIC_LEN;
use super::index::Index;
use super::txn::FLUSH_AT;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;
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
}

#[cfg(test)]
#[path = "pack_tests.rs"]
mod tests;
