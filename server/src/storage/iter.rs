//! Reading the file transaction by transaction: iteration (forwards, for copying and
//! recovery), the undo log and invalidations (backwards, from the end).
//!
//! Cursors are plain data so that a ZEO connection can keep them between calls. They stay
//! valid while the storage only grows. A pack replaces the file: each cursor remembers the
//! file generation it was made in and, used after a pack, fails with
//! [`StorageError::FileReplaced`] (see `pack.rs`). Every call here reads under the
//! committed-state lock, so a single call never straddles a pack's swap.

use super::engine::{Storage, Window};
use super::error::{Result, StorageError};
use super::file::StorageDir;
use super::format::{
    undo_id, TxnHeaderRec, MAGIC_LEN, STATUS_NORMAL, STATUS_PACKED, STATUS_UNDONE, TXN_HEADER_LEN,
};
use bytes::Bytes;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::reply::{DataRecord, TxnHeader, UndoEntry};
use zeoraid_core::wire::types::{TxnStatus, UndoId};

/// One committed transaction as iteration yields it.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnRecord {
    /// Tid, status, user, description and the decoded extension.
    pub header: TxnHeader,
    /// The extension exactly as stored (copy this to preserve it byte for byte).
    pub raw_extension: Bytes,
    /// Position of the transaction in `Data.fs`.
    pub pos: u64,
    /// Its length without the redundant trailing copy (FileStorage's `tlen`; `undoLog` size).
    pub tlen: u64,
    /// The file generation `pos` belongs to.
    generation: u64,
}

impl TxnRecord {
    /// Where the records of this transaction are read from.
    pub fn records(&self) -> RecordCursor {
        let hl = TXN_HEADER_LEN
            + (self.header.user.len() + self.header.description.len() + self.raw_extension.len()) as u64;
        RecordCursor {
            next: self.pos + hl,
            tpos: self.pos,
            tend: self.pos + self.tlen,
            generation: self.generation,
        }
    }
}

/// A position in transaction iteration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnCursor {
    next: u64,
    stop: Option<Tid>,
    done: bool,
    generation: u64,
}

/// A position among one transaction's data records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordCursor {
    next: u64,
    tpos: u64,
    tend: u64,
    generation: u64,
}

impl<D: StorageDir> Storage<D> {
    /// The transaction before position `p` (which must be a transaction boundary), using the
    /// redundant length; `None` at the start of the file.
    pub(crate) fn prev_txn(&self, p: u64, limit: u64) -> Result<Option<(u64, TxnHeaderRec)>> {
        if p <= MAGIC_LEN {
            return Ok(None);
        }
        let mut b = [0u8; 8];
        self.read_exact(&mut b, p - 8)?;
        let tlen = u64::from_be_bytes(b);
        let tpos = (p - 8).checked_sub(tlen).filter(|&t| t >= MAGIC_LEN).ok_or_else(|| {
            StorageError::corrupt(
                p - 8,
                format!("a transaction length of at most {}", p - 8 - MAGIC_LEN),
                tlen.to_string(),
            )
        })?;
        let h = self.read_txn_header(tpos, limit)?;
        if h.tlen != tlen {
            return Err(StorageError::corrupt(
                tpos + 8,
                format!("transaction length {tlen}"),
                h.tlen.to_string(),
            ));
        }
        Ok(Some((tpos, h)))
    }

    /// [`StorageError::FileReplaced`] unless `generation` is the current file's; call it with
    /// the committed-state lock held.
    fn check_generation(&self, generation: u64) -> Result<()> {
        let current = self.file.generation();
        if generation != current {
            return Err(StorageError::FileReplaced { cursor: generation, current });
        }
        Ok(())
    }

    /// A cursor over committed transactions with `start <= tid <= stop` (both optional).
    pub fn txn_cursor(&self, start: Option<Tid>, stop: Option<Tid>) -> Result<TxnCursor> {
        let c = self.committed();
        let end = c.durable_end;
        let generation = self.file.generation();
        let mut next = MAGIC_LEN;
        if let Some(start) = start.filter(|&s| s > Tid::ZERO) {
            let last = c.durable_tid;
            if start > last {
                next = end;
            } else {
                // Walk from whichever end is closer in time; both stop at the first tid >= start.
                let first = if end > MAGIC_LEN { self.read_txn_header(MAGIC_LEN, end)?.tid } else { last };
                if start.get() - first.get().min(start.get()) <= last.get() - start.get() {
                    let mut w = Window::new(&self.file, &self.path, end);
                    while next < end {
                        let mut a = [0u8; 23];
                        a.copy_from_slice(w.get(next, TXN_HEADER_LEN, "a transaction header")?);
                        let h = TxnHeaderRec::decode(&a);
                        if h.tid >= start {
                            break;
                        }
                        next = next
                            .checked_add(h.tlen)
                            .and_then(|e| e.checked_add(8))
                            .filter(|&e| e <= end && h.tlen >= h.header_len())
                            .ok_or_else(|| {
                                StorageError::corrupt(
                                    next + 8,
                                    "a transaction length within the file",
                                    h.tlen.to_string(),
                                )
                            })?;
                    }
                } else {
                    next = end;
                    while let Some((tpos, h)) = self.prev_txn(next, end)? {
                        if h.tid < start {
                            break;
                        }
                        next = tpos;
                    }
                }
            }
        }
        Ok(TxnCursor { next, stop, done: false, generation })
    }

    /// The next committed transaction, or `None` at the end (or past `stop`). Transactions
    /// with the obsolete status `'u'` are skipped, as FileStorage's index skips them.
    pub fn next_txn(&self, cur: &mut TxnCursor) -> Result<Option<TxnRecord>> {
        let c = self.committed();
        if !cur.done {
            self.check_generation(cur.generation)?;
        }
        let end = c.durable_end;
        while !cur.done && cur.next < end {
            let pos = cur.next;
            let h = self.read_txn_header(pos, end)?;
            if cur.stop.is_some_and(|s| h.tid > s) {
                break;
            }
            cur.next = pos + h.tlen + 8;
            if h.status == STATUS_UNDONE {
                continue;
            }
            let (user, description, raw_extension) = self.read_txn_meta(pos, &h, end)?;
            let extension = self.decode_extension(&raw_extension, pos);
            let header = TxnHeader {
                tid: h.tid,
                status: TxnStatus(char::from(h.status)),
                user,
                description,
                extension,
            };
            return Ok(Some(TxnRecord {
                header,
                raw_extension,
                pos,
                tlen: h.tlen,
                generation: cur.generation,
            }));
        }
        cur.done = true;
        Ok(None)
    }

    /// The next data record of a transaction, or `None` after its last. `data` follows
    /// back-pointers (`None`: no data, i.e. a delete or an undone creation); `data_txn` is the
    /// tid of the record a back-pointer points to, as FileStorage's iterator gives it.
    pub fn next_record(&self, cur: &mut RecordCursor) -> Result<Option<DataRecord>> {
        if cur.next >= cur.tend {
            return Ok(None);
        }
        let c = self.committed();
        self.check_generation(cur.generation)?;
        let end = c.end;
        let r = self.read_data_header(cur.next, cur.tend, None)?;
        if r.h.tloc != cur.tpos {
            return Err(StorageError::corrupt(
                cur.next + 24,
                format!("transaction position {}", cur.tpos),
                r.h.tloc.to_string(),
            ));
        }
        cur.next += r.h.record_len().unwrap_or(u64::MAX);
        let (data, data_txn) = if r.h.plen != 0 {
            (Some(self.read_pickle(&r, end)?), None)
        } else if r.back == 0 {
            (None, None)
        } else {
            let first = self.read_data_header(r.back, end, Some(r.h.oid))?;
            (self.load_back(r.h.oid, r.back, end)?.map(|(d, _)| d), Some(first.h.tid))
        };
        Ok(Some(DataRecord { oid: r.h.oid, tid: r.h.tid, data, data_txn }))
    }

    /// Iterates over committed transactions with `start <= tid <= stop`, each with its records.
    pub fn iterator(&self, start: Option<Tid>, stop: Option<Tid>) -> TxnIter<'_, D> {
        let cursor = self.txn_cursor(start, stop);
        TxnIter { storage: self, cursor: Some(cursor) }
    }

    /// Undoable transactions, newest first: FileStorage's `undoLog(first, last)`. With
    /// `last >= 0` this is the slice `first..last`; with `last < 0`, at most `-last` entries
    /// starting at `first`. The search stops at the first packed transaction.
    pub fn undo_log(&self, first: i64, last: i64) -> Result<Vec<UndoEntry>> {
        self.undo_info(first, last, |_| true)
    }

    /// [`Storage::undo_log`] keeping only entries `filter` accepts (counted after filtering).
    /// `filter` runs under the storage's committed-state lock: it must not call the storage.
    pub fn undo_info(
        &self,
        first: i64,
        last: i64,
        filter: impl Fn(&UndoEntry) -> bool,
    ) -> Result<Vec<UndoEntry>> {
        let last = if last < 0 { first.saturating_sub(last) } else { last };
        let c = self.committed();
        let end = c.durable_end;
        let mut out = Vec::new();
        let mut i: i64 = 0;
        let mut p = end;
        while i < last {
            let Some((tpos, h)) = self.prev_txn(p, end)? else { break };
            p = tpos;
            if h.status == STATUS_PACKED {
                break;
            }
            if h.status != STATUS_NORMAL {
                continue;
            }
            let (user_name, description, raw) = self.read_txn_meta(tpos, &h, end)?;
            let mut extension = self.decode_extension(&raw, tpos);
            // Python builds the entry and then update()s it with the extension: extension
            // keys win, so a clash replaces the standard value.
            let mut e = UndoEntry {
                id: UndoId(Bytes::from(undo_id(h.tid))),
                time: h.tid.to_unix_f64(),
                user_name,
                size: Some(i64::try_from(h.tlen).unwrap_or(i64::MAX)),
                description,
                extension: Default::default(),
            };
            override_standard_keys(&mut e, &mut extension.0);
            e.extension = extension;
            if filter(&e) {
                if i >= first {
                    out.push(e);
                }
                i += 1;
            }
        }
        Ok(out)
    }

    /// What changed after `tid`: the last tid and every oid written by the transactions after
    /// `tid` (deletes, restores and undos included), for ZEO's `getInvalidations`.
    /// `Some((last, []))` when `tid` is current or newer. `None` when more than `max_txns`
    /// transactions would have to be read: the client must then drop its cache.
    pub fn invalidations_since(&self, tid: Tid, max_txns: usize) -> Result<Option<(Tid, Vec<Oid>)>> {
        let c = self.committed();
        let (end, last) = (c.durable_end, c.durable_tid);
        let mut oids = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut p = end;
        let mut n = 0;
        while let Some((tpos, h)) = self.prev_txn(p, end)? {
            if h.tid <= tid {
                break;
            }
            n += 1;
            if n > max_txns {
                return Ok(None);
            }
            for oid in self.txn_oids(tpos, &h, end)? {
                if seen.insert(oid) {
                    oids.push(oid);
                }
            }
            p = tpos;
        }
        Ok(Some((last, oids)))
    }

    /// The last `count` transactions, oldest first, each with the oids it wrote
    /// (FileStorage's `lastInvalidations`, to seed an invalidation queue).
    pub fn last_invalidations(&self, count: usize) -> Result<Vec<(Tid, Vec<Oid>)>> {
        let c = self.committed();
        let end = c.durable_end;
        let mut out = Vec::new();
        let mut p = end;
        while out.len() < count {
            let Some((tpos, h)) = self.prev_txn(p, end)? else { break };
            let mut oids = Vec::new();
            for oid in self.txn_oids(tpos, &h, end)? {
                if !oids.contains(&oid) {
                    oids.push(oid);
                }
            }
            out.push((h.tid, oids));
            p = tpos;
        }
        out.reverse();
        Ok(out)
    }

    fn txn_oids(&self, tpos: u64, h: &TxnHeaderRec, limit: u64) -> Result<Vec<Oid>> {
        let mut out = Vec::new();
        if h.status == STATUS_UNDONE {
            return Ok(out);
        }
        let tend = tpos + h.tlen;
        let mut pos = tpos + h.header_len();
        while pos < tend {
            let r = self.read_data_header(pos, tend.min(limit), None)?;
            out.push(r.h.oid);
            pos += r.h.record_len().unwrap_or(u64::MAX);
        }
        Ok(out)
    }
}

/// Moves extension values for standard undo keys onto the entry (Python's `d.update(e)`).
fn override_standard_keys(
    e: &mut UndoEntry,
    ext: &mut Vec<(zeoraid_core::wire::value::Value, zeoraid_core::wire::value::Value)>,
) {
    use zeoraid_core::wire::value::Value;
    ext.retain(|(k, v)| {
        match (k.as_str(), v) {
            (Some("user_name"), Value::Bytes(b)) => e.user_name = b.clone(),
            (Some("description"), Value::Bytes(b)) => e.description = b.clone(),
            (Some("id"), Value::Bytes(b)) => e.id = UndoId(b.clone()),
            (Some("time"), Value::Float(f)) => e.time = *f,
            (Some("size"), Value::Int(i)) => e.size = i64::try_from(*i).ok(),
            _ => return true,
        }
        false
    });
}

/// Transactions with their records, from [`Storage::iterator`].
pub struct TxnIter<'a, D: StorageDir> {
    storage: &'a Storage<D>,
    cursor: Option<Result<TxnCursor>>,
}

impl<D: StorageDir> Iterator for TxnIter<'_, D> {
    type Item = Result<(TxnRecord, Vec<DataRecord>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut cur = match self.cursor.take()? {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        let t = match self.storage.next_txn(&mut cur) {
            Ok(Some(t)) => t,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        let mut rc = t.records();
        let mut recs = Vec::new();
        loop {
            match self.storage.next_record(&mut rc) {
                Ok(Some(r)) => recs.push(r),
                Ok(None) => break,
                Err(e) => return Some(Err(e)),
            }
        }
        self.cursor = Some(Ok(cur));
        Some(Ok((t, recs)))
    }
}
