//! Group commit: many transactions made durable by one pair of syncs.
//!
//! With [`Options::group_commit`](super::Options) a commit goes
//!
//! ```text
//!   vote             records written with status 'c' (no sync)
//!   finish_deferred  published to the index (loads and serial checks see it), queued as pending;
//!                    the writer is free for the next transaction at once
//!   sync_pending     one round for every pending transaction:
//!                    sync (their records) → status bytes written → sync → durable
//! ```
//!
//! The order on disk is what the crash-safety argument of `txn.rs` needs, for a whole batch at
//! a time: a status byte is written only after a sync that covered its transaction's records,
//! so a committed status never lies over records that may not be there. Within a round the status
//! bytes may reach the disk in any order, so a crash can leave a later transaction of the batch
//! marked committed after an earlier one still marked `'c'`: recovery cuts the file at the first
//! `'c'` (`classify_tail`), dropping the whole batch, none of which was acknowledged (a round
//! acknowledges its batch only after its second sync).
//!
//! Until its round is done a pending transaction is visible to loads but not to anything that
//! walks transactions (iteration, the undo log, invalidations, pack), which stop at
//! [`Committed::durable_end`](super::engine::Committed): their status bytes are still `'c'`.
//! The ZEO front only announces a transaction, and only lets clients read it, once it is durable.
//!
//! A transaction with blobs is made durable inside its own `finish_deferred`, with every
//! transaction pending before it (its blob files move into place only after that) — unless it
//! was begun with a deferred sync ([`Storage::defer_sync`], the recovery's bulk copy): then its
//! vote syncs nothing, `finish_deferred` moves its blob files into place unsynced and queues it,
//! and the round syncs those files and their directories before its first `Data.fs` sync. A
//! crash before the round leaves blob files whose transaction is cut at the next open: files no
//! record names, which `blob.rs` already tolerates (ignored; a later restore of the same
//! revision replaces them).
//!
//! Invariants: `durable_end <= end` and `durable_tid <= last_tid`; pending transactions are
//! exactly those between them, in file order; a failed round leaves the storage refusing writes
//! until it is reopened (`failed`), as a failed finish does.
//!
//! Locks: a round holds `round` (one round at a time, and a pack's swap holds it so that the file
//! is not replaced under a round); it never takes the writer lock, so the writer can write the next
//! transaction while a round syncs. Order where both are taken: writer, then `round`.

use std::sync::{Mutex, MutexGuard};

use zeoraid_core::ids::Tid;

use super::blob::BlobSyncs;
use super::engine::Storage;
use super::error::{Result, StorageError};
use super::file::{StorageDir, StorageFile};
use super::format::STATUS_OFFSET;

/// One transaction finished but not yet durable.
#[derive(Debug, Clone)]
struct Pending {
    tid: Tid,
    tpos: u64,
    status: u8,
    end: u64,
    /// Its blobs, already in place but not synced (a deferred-sync transaction).
    blobs: BlobSyncs,
}

/// The group-commit state of a storage.
#[derive(Debug, Default)]
pub(crate) struct GroupState {
    pending: Mutex<Vec<Pending>>,
    round: Mutex<()>,
    failed: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GroupState {
    /// Why the storage refuses writes, if a round failed.
    pub(crate) fn failed(&self) -> Option<String> {
        lock(&self.failed).clone()
    }

    /// Holds off rounds (a pack's swap).
    pub(crate) fn hold(&self) -> MutexGuard<'_, ()> {
        lock(&self.round)
    }

    /// The status a pending transaction at `tpos` will have (its byte in the file is still `'c'`).
    pub(crate) fn pending_status(&self, tpos: u64) -> Option<u8> {
        lock(&self.pending).iter().find(|p| p.tpos == tpos).map(|p| p.status)
    }

    pub(crate) fn push(&self, tid: Tid, tpos: u64, status: u8, end: u64, blobs: BlobSyncs) {
        lock(&self.pending).push(Pending { tid, tpos, status, end, blobs });
    }
}

impl<D: StorageDir> Storage<D> {
    /// Makes every transaction finished so far durable (group commit; without it there is never
    /// anything pending). Returns the newest durable tid.
    pub fn sync_pending(&self) -> Result<Tid> {
        let _round = self.group.hold();
        self.sync_round_held()
    }

    /// The newest transaction whose commit is durable (equal to [`Storage::last_transaction`]
    /// except between [`Storage::finish_deferred`] and [`Storage::sync_pending`]).
    pub fn durable_tid(&self) -> Tid {
        self.committed().durable_tid
    }

    /// A round, with `group.round` held by the caller.
    pub(crate) fn sync_round_held(&self) -> Result<Tid> {
        if let Some(why) = self.group.failed() {
            return Err(StorageError::Broken(why));
        }
        let batch = std::mem::take(&mut *lock(&self.group.pending));
        let Some(last) = batch.last().map(|p| (p.tid, p.end)) else {
            return Ok(self.committed().durable_tid);
        };
        let r = (|| {
            // Blobs of deferred-sync transactions first: a status byte never commits a record
            // whose blob file could still be lost.
            if let Some(b) = &self.blobs {
                for p in &batch {
                    b.sync_installed(&p.blobs)?;
                }
            }
            self.file.sync().map_err(|e| self.io("sync", e))?;
            for p in &batch {
                self.file.write_at(&[p.status], p.tpos + STATUS_OFFSET).map_err(|e| self.io("write", e))?;
            }
            self.file.sync().map_err(|e| self.io("sync", e))
        })();
        if let Err(e) = r {
            let why = format!("group commit of {} transactions up to {} failed: {e}", batch.len(), last.0);
            tracing::warn!(path = %self.path, error = %e, "{why}; storage is broken until reopened");
            *lock(&self.group.failed) = Some(why);
            return Err(e);
        }
        let mut c = self.committed_mut();
        c.durable_end = last.1;
        c.durable_tid = last.0;
        Ok(last.0)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use zeoraid_core::ids::{Oid, Tid};
    use zeoraid_core::wire::types::TxnStatus;

    use super::super::{BeginTid, MemDir, Options, Storage, TxnMeta};

    fn commit_deferred(s: &Storage<MemDir>, tid: u64, oid: u64, serial: u64) {
        let meta = TxnMeta::with_raw_extension(Bytes::from_static(b"u"), Bytes::new(), Bytes::new());
        s.begin(meta, BeginTid::Exactly(Tid::new(tid)), TxnStatus::NORMAL).expect("begin");
        s.store(Oid::new(oid), Tid::new(serial), b"data").expect("store");
        s.vote().expect("vote");
        assert_eq!(s.finish_deferred().expect("finish"), Tid::new(tid));
    }

    #[test]
    fn pending_transactions_are_loadable_but_not_iterated_until_a_round() {
        let s = Storage::open(MemDir::new(), "Data.fs", Options { group_commit: true, ..Options::default() })
            .expect("open")
            .0;
        commit_deferred(&s, 10, 1, 0);
        commit_deferred(&s, 20, 1, 10);
        assert_eq!((s.last_transaction(), s.durable_tid()), (Tid::new(20), Tid::ZERO));
        assert_eq!(s.load(Oid::new(1)).expect("load").1, Tid::new(20));
        assert_eq!(s.iterator(None, None).count(), 0, "iteration stops at the durable end");
        assert!(s.undo_log(0, 10).expect("undo log").is_empty());
        assert_eq!(s.sync_pending().expect("round"), Tid::new(20));
        assert_eq!(s.iterator(None, None).count(), 2);
        assert_eq!(s.sync_pending().expect("empty round"), Tid::new(20));
    }

    #[test]
    fn a_pack_makes_pending_transactions_durable_before_it_swaps_files() {
        let d = MemDir::new();
        let s = Storage::open(d.clone(), "Data.fs", Options { group_commit: true, ..Options::default() })
            .expect("open")
            .0;
        commit_deferred(&s, 10, 1, 0);
        commit_deferred(&s, 20, 1, 10);
        commit_deferred(&s, 25, 3, 0);
        s.sync_pending().expect("round");
        commit_deferred(&s, 30, 1, 20);
        commit_deferred(&s, 40, 2, 0);
        let report = s.pack(Tid::new(35)).expect("pack");
        assert_eq!(report.outcome, super::super::PackOutcome::Packed, "{report:?}");
        assert_eq!(s.durable_tid(), Tid::new(40));
        let tids: Vec<Tid> = s.iterator(None, None).map(|t| t.expect("txn").0.header.tid).collect();
        assert_eq!(tids.last(), Some(&Tid::new(40)));
        assert!(tids.contains(&Tid::new(30)), "{tids:?}");
        drop(s);
        let (s, report) = Storage::open(d, "Data.fs", Options::default()).expect("reopen");
        assert_eq!(report.dropped_tail, None);
        assert_eq!(s.last_transaction(), Tid::new(40));
    }
}
