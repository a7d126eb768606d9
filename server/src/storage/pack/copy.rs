//! The pack's copy phase: the plan (the current record of every object at the pack time) and
//! `Data.fs.pack` being written: the transactions before the pack time as packed ones, then
//! those after it as they are, with previous-record and back-pointers re-aimed.

use super::PackReport;
use crate::storage::engine::{data_header, Storage, Window};
use crate::storage::error::{Result, StorageError};
use crate::storage::file::{StorageDir, StorageFile};
use crate::storage::format::{
    show_status, DataHeaderRec, TxnHeaderRec, DATA_HEADER_LEN, MAGIC_LEN, STATUS_NORMAL, STATUS_PACKED,
    STATUS_UNDONE, TXN_HEADER_LEN,
};
use crate::storage::index::{Index, MAX_POS};
use crate::storage::txn::FLUSH_AT;
use std::io;
use zeoraid_core::ids::Tid;

// ---- the packed file being written -----------------------------------------------------------

/// `Data.fs.pack` being written, with what is known of its records.
pub(super) struct Copier<F> {
    pub(super) file: F,
    pub(super) path: String,
    /// Bytes not yet written, which start at `flushed`.
    pub(super) buf: Vec<u8>,
    pub(super) flushed: u64,
    /// oid → position of its newest record in the new file (the index readers get).
    pub(super) index: Index,
    /// (old position, new position) of each kept record before the pack time, sorted.
    pub(super) kept: Vec<(u64, u64)>,
    /// Where the part at or after the pack time starts in the old file.
    pub(super) packpos: u64,
    /// (old position from which it applies, new − old) for the part after `packpos`, sorted:
    /// a new entry starts after each record whose size changed.
    pub(super) shifts: Vec<(u64, i64)>,
    pub(super) last_tid: Tid,
}

impl<F: StorageFile> Copier<F> {
    pub(super) fn io(&self, op: &'static str) -> impl FnOnce(io::Error) -> StorageError + '_ {
        move |source| StorageError::Io { op, path: self.path.clone(), source }
    }

    pub(super) fn pos(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    pub(super) fn put(&mut self, b: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    pub(super) fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.file.write_at(&self.buf, self.flushed).map_err(self.io("write"))?;
            self.flushed += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Overwrites the 8 bytes at `at` (already put) with `v`.
    pub(super) fn patch_u64(&mut self, at: u64, v: u64) -> Result<()> {
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
    pub(super) fn put_data_header(&mut self, h: &DataHeaderRec) -> Result<u64> {
        let here = self.pos();
        let len = h.record_len().unwrap_or(u64::MAX);
        if here.checked_add(len + 8).is_none_or(|e| e > MAX_POS) {
            return Err(self.io("write")(io::Error::other("the packed file would exceed 2^48 bytes")));
        }
        self.put(&h.encode())?;
        Ok(here)
    }

    /// The new position of the old record at `old`, if it was kept.
    pub(super) fn map(&self, old: u64) -> Option<u64> {
        if old >= self.packpos {
            let i = self.shifts.partition_point(|&(from, _)| from <= old).checked_sub(1)?;
            return u64::try_from(old as i64 + self.shifts[i].1).ok();
        }
        self.kept.binary_search_by_key(&old, |&(o, _)| o).ok().map(|i| self.kept[i].1)
    }
}

/// What the scan before the pack time found.
pub(super) struct Plan {
    /// Position of the first transaction at or after the pack time.
    pub(super) packpos: u64,
    /// oid → position of its current record at the pack time; 0 when that record holds no
    /// data (the object is dropped).
    pub(super) current: Index,
    /// Transactions before the pack time.
    pub(super) txns: u64,
    /// Data records before the pack time.
    pub(super) records: u64,
    /// Transactions before the pack time with the obsolete status `'u'` (dropped).
    pub(super) undone: u64,
    /// Whether anything but current records and one record per transaction is there (a
    /// superseded or data-less record, an empty or undone transaction, a back-pointer to
    /// resolve): if not, packing changes nothing.
    pub(super) changes: bool,
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

impl<D: StorageDir> Storage<D> {
    /// Finds the current record of every object at the pack time.
    pub(super) fn plan_pack(&self, end: u64, pack_time: Tid) -> Result<Plan> {
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

    /// Copies the transactions before the pack time that hold current records, as packed
    /// transactions; records the kept records' new positions.
    pub(super) fn copy_packed(
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
    pub(super) fn copy_rest(
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
