//! Transactional undo, as FileStorage does it (`_txn_undo_write`, `_transactionalUndoRecord`).
//!
//! Undoing transaction U writes, inside the current transaction, one record per record of U.
//! Each new record normally holds no data but a back-pointer to the revision before U's (or 0
//! when U created the object, which undoes the creation). That is only allowed when U's record
//! is still current, or when the current data equals U's data (a later transaction, typically
//! an undo, restored it). Otherwise FileStorage would try application-level conflict
//! resolution, which zeoraid cannot run, so the object blocks the undo.
//!
//! The plan for every record is made first and written only if no object blocks, so a failed
//! undo leaves the transaction as it was. (FileStorage's own state is equally untouched: it
//! keeps the new records in a local index until all succeed.)

use super::engine::{Committed, Storage};
use super::error::{Result, StorageError, UndoFailure};
use super::file::StorageDir;
use super::format::{parse_undo_id, STATUS_CHECKPOINT, STATUS_NORMAL, STATUS_PACKED};
use super::txn::Txn;
use bytes::Bytes;
use zeoraid_core::ids::{Oid, Tid};

/// What to write for one undone record: `data`, or a back-pointer `back`; `prev` is the
/// object's current committed record.
struct Plan {
    oid: Oid,
    data: Option<Bytes>,
    back: u64,
    prev: u64,
}

impl<D: StorageDir> Storage<D> {
    /// Undoes the transaction named by `undo_id` (from [`Storage::undo_log`]) inside the
    /// transaction in progress, and returns the objects it changes (which the caller must
    /// invalidate). An unknown id or a non-undoable transaction gives
    /// [`StorageError::Undo`]; objects changed since give [`StorageError::MultipleUndo`]
    /// listing every one of them. Either way nothing is written.
    pub fn undo(&self, undo_id: &[u8]) -> Result<Vec<Oid>> {
        let invalid = || StorageError::Undo { reason: "Invalid transaction id".into(), oid: None };
        let tid = parse_undo_id(undo_id).ok_or_else(invalid)?;
        self.with_txn(|s, txn| {
            let plans = {
                let c = s.committed();
                let tpos = s.find_undoable_txn(&c, tid)?.ok_or_else(invalid)?;
                s.plan_undo(&c, txn, tpos)?
            };
            // The new revisions of blobs get the blob of the revision they go back to.
            let backs: Vec<(Oid, u64)> =
                plans.iter().filter(|p| p.data.is_none() && p.back != 0).map(|p| (p.oid, p.back)).collect();
            s.stage_undo_blobs(txn.tid, &backs)?;
            let mut oids = Vec::new();
            let tid = txn.tid;
            for p in plans {
                s.write_record(txn, p.oid, tid, p.prev, p.data.as_deref(), p.back)?;
                if !oids.contains(&p.oid) {
                    oids.push(p.oid);
                }
            }
            Ok(oids)
        })
    }

    /// The position of transaction `tid`, searching back from the end and stopping at a packed
    /// transaction (its history before is gone) or at an older tid.
    fn find_undoable_txn(&self, c: &Committed, tid: Tid) -> Result<Option<u64>> {
        let mut p = c.end;
        while let Some((tpos, h)) = self.prev_txn(p, c.end)? {
            if h.tid == tid {
                return Ok(Some(tpos));
            }
            if h.tid < tid || h.status == STATUS_PACKED {
                return Ok(None);
            }
            p = tpos;
        }
        Ok(None)
    }

    fn plan_undo(&self, c: &Committed, txn: &Txn, tpos: u64) -> Result<Vec<Plan>> {
        let th = self.read_txn_header(tpos, c.end)?;
        // A transaction finished under group commit and not yet durable is still 'c' in the file.
        let status = match th.status {
            STATUS_CHECKPOINT => self.group.pending_status(tpos).unwrap_or(STATUS_CHECKPOINT),
            s => s,
        };
        if status != STATUS_NORMAL {
            return Err(StorageError::Undo { reason: "non-undoable transaction".into(), oid: None });
        }
        let tend = tpos + th.tlen;
        let mut pos = tpos + th.header_len();
        let mut plans = Vec::new();
        // Insertion-ordered; a later record of the same object gets a second chance.
        let mut failures: Vec<UndoFailure> = Vec::new();
        while pos < tend {
            let r = self.read_data_header(pos, tend, None)?;
            failures.retain(|f| f.oid != r.h.oid);
            match self.undo_record(c, txn, r.h.oid, pos, r.h.prev)? {
                Ok(plan) => plans.push(plan),
                Err(reason) => failures.push(UndoFailure { oid: r.h.oid, reason: reason.to_owned() }),
            }
            pos += r.h.record_len().unwrap_or(u64::MAX);
        }
        if !failures.is_empty() {
            return Err(StorageError::MultipleUndo(failures));
        }
        Ok(plans)
    }

    /// How to undo `oid`'s record at `pos` whose previous record is `pre`; `Err(reason)` when
    /// the object blocks the undo.
    fn undo_record(
        &self,
        c: &Committed,
        txn: &Txn,
        oid: Oid,
        pos: u64,
        pre: u64,
    ) -> Result<std::result::Result<Plan, &'static str>> {
        let in_txn = txn.tindex.get(&oid).copied();
        let ipos = c.index.get(oid).unwrap_or(0);
        let current = in_txn.unwrap_or(ipos);
        let mut copy = true;
        if current != pos {
            // Where the current revision's data lives, and the data if it is inline.
            let (cdataptr, cdata) = match in_txn {
                Some(tp) => {
                    let (r, d) = self.read_txn_record(txn, tp, oid)?;
                    if d.is_some() {
                        (tp, d)
                    } else {
                        (r.back, None)
                    }
                }
                None => {
                    let r = self.read_data_header(ipos, c.end, Some(oid))?;
                    if r.h.plen != 0 {
                        (ipos, Some(self.read_pickle(&r, c.end)?))
                    } else {
                        (r.back, None)
                    }
                }
            };
            if cdataptr != pos {
                let Some((undone, _)) = self.load_back(oid, pos, c.end)? else {
                    return Ok(Err("_loadBack() failed"));
                };
                let cdata = match cdata {
                    Some(d) => d,
                    None => match self.load_back(oid, cdataptr, c.end)? {
                        Some((d, _)) => d,
                        None => return Ok(Err("_loadBack() failed")),
                    },
                };
                if undone != cdata {
                    copy = false;
                    if pre == 0 {
                        return Ok(Err(
                            "Can't undo an add transaction followed by conflicting transactions.",
                        ));
                    }
                }
            }
        }
        if pre == 0 || copy {
            return Ok(Ok(Plan { oid, data: None, back: pre, prev: ipos }));
        }
        Ok(Err("Some data were modified by a later transaction"))
    }
}
