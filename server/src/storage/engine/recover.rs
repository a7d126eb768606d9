//! Opening's recovery: the index from the cache, then a scan of the transactions after it,
//! and the cut of a torn or uncommitted tail (saved to `<name>.tr<N>` first).

use super::check::check_txn;
use super::{Committed, DroppedTail, IndexSource, OpenReport, Storage, TailReason, Window};
use crate::storage::blob::BlobRecovery;
use crate::storage::cache;
use crate::storage::error::{Result, StorageError};
use crate::storage::file::{OpenMode, StorageDir, StorageFile};
use crate::storage::format::{
    TxnHeaderRec, MAGIC_LEN, STATUS_CHECKPOINT, STATUS_NORMAL, STATUS_PACKED, TXN_HEADER_LEN,
};
use crate::storage::index::Index;
use zeoraid_core::ids::{Oid, Tid};

impl<D: StorageDir> Storage<D> {
    /// Builds the index (cache, then scan) and cuts the tail.
    pub(super) fn recover(&self, len: u64, created: bool) -> Result<OpenReport> {
        let mut st = Committed::new(Index::new(), MAGIC_LEN, Tid::ZERO);
        let mut source = if created { IndexSource::Created } else { IndexSource::Scan };
        if self.opts.index_cache && !created {
            if let Some(c) = cache::load(self, len) {
                st = c;
                source = IndexSource::Cache { scanned_from: st.end };
            }
        }
        let (scanned, problem) = self.scan(&mut st, len)?;
        let mut dropped = None;
        if let Some(problem) = problem {
            let reason = self.classify_tail(&st, len, problem)?;
            let bytes = len - st.end;
            let saved_to = if self.opts.read_only { None } else { self.cut_tail(st.end, len)? };
            tracing::warn!(
                path = %self.path,
                offset = st.end,
                bytes,
                ?reason,
                read_only = self.opts.read_only,
                "dropped {bytes} bytes of torn or uncommitted data at the end of the file"
            );
            dropped = Some(DroppedTail { offset: st.end, bytes, reason, saved_to });
        }
        *self.oid_counter.lock().unwrap_or_else(|p| p.into_inner()) = st.index.max_oid().map_or(0, Oid::get);
        let write_cache = self.opts.index_cache
            && !self.opts.read_only
            && (scanned > 0 || dropped.is_some() || source == IndexSource::Scan);
        st.durable_end = st.end;
        st.durable_tid = st.last_tid;
        *self.committed_mut() = st;
        if write_cache {
            if let Err(e) = cache::save(self) {
                tracing::warn!(path = %self.path, error = %e, "could not write the index cache");
            }
        }
        Ok(OpenReport {
            index: source,
            scanned_transactions: scanned,
            dropped_tail: dropped,
            blobs: BlobRecovery::default(),
        })
    }

    /// Scans complete transactions from `st.end`, updating `st`. Returns how many were read
    /// and the first problem (a `Corrupt` error naming its offset), if the file does not end
    /// cleanly after the last one.
    fn scan(&self, st: &mut Committed, len: u64) -> Result<(u64, Option<StorageError>)> {
        let mut n = 0;
        let mut w = Window::new(&self.file, &self.path, len);
        while st.end < len {
            match check_txn(&mut w, st.end, st.last_tid) {
                Ok(t) => {
                    for (oid, pos) in t.records {
                        if !st.index.insert(oid, pos) {
                            return Err(StorageError::corrupt(pos, "a position below 2^48", pos.to_string()));
                        }
                    }
                    st.last_tid = t.tid;
                    st.end = t.end;
                    n += 1;
                }
                Err(e @ StorageError::Corrupt { .. }) => return Ok((n, Some(e))),
                Err(e) => return Err(e),
            }
        }
        Ok((n, None))
    }

    /// Decides whether the bytes after `st.end` are a tail to cut or damage to refuse: damage
    /// when a complete committed transaction still follows.
    fn classify_tail(&self, st: &Committed, len: u64, problem: StorageError) -> Result<TailReason> {
        let mut hdr = [0u8; 23];
        let uncommitted = len - st.end >= TXN_HEADER_LEN
            && self.read_exact(&mut hdr, st.end).is_ok()
            && TxnHeaderRec::decode(&hdr).status == STATUS_CHECKPOINT;
        // A transaction still marked 'c' was never acknowledged, and neither was anything after
        // it: with group commit (`Options::group_commit`) the status bytes of a batch are
        // written together after its records are durable, so a crash can leave a later
        // transaction of the batch marked committed after an earlier one still marked 'c'.
        if uncommitted {
            return Ok(TailReason::Uncommitted);
        }
        if self.committed_txn_ends_file(st, len)? {
            return Err(problem);
        }
        Ok(TailReason::Torn { detail: problem.to_string() })
    }

    /// Whether the file ends with what looks like a complete committed transaction that starts
    /// at or after `st.end` (its redundant length leads back to a header of the same length,
    /// with status `' '` or `'p'` and a tid after the last good one).
    fn committed_txn_ends_file(&self, st: &Committed, len: u64) -> Result<bool> {
        if len < st.end + TXN_HEADER_LEN + 8 {
            return Ok(false);
        }
        let mut b = [0u8; 8];
        self.read_exact(&mut b, len - 8)?;
        let tlen = u64::from_be_bytes(b);
        let Some(tpos) = (len - 8).checked_sub(tlen) else { return Ok(false) };
        if tpos < st.end || len - tpos < TXN_HEADER_LEN + 8 {
            return Ok(false);
        }
        let mut hdr = [0u8; 23];
        self.read_exact(&mut hdr, tpos)?;
        let h = TxnHeaderRec::decode(&hdr);
        Ok(h.tlen == tlen
            && matches!(h.status, STATUS_NORMAL | STATUS_PACKED)
            && h.tid > st.last_tid
            && h.header_len() <= tlen)
    }

    /// Saves `[end, len)` to `name.tr<N>` (if configured) and truncates the file to `end`.
    fn cut_tail(&self, end: u64, len: u64) -> Result<Option<String>> {
        let mut saved = None;
        if self.opts.save_tail {
            let mut i = 0;
            let tr = loop {
                let n = format!("{}.tr{i}", self.name);
                if !self.dir.exists(&n).map_err(|e| self.io("stat", e))? {
                    break n;
                }
                i += 1;
            };
            let mut buf = vec![0u8; usize::try_from(len - end).unwrap_or(usize::MAX).min(64 << 20)];
            let out = self.dir.open(&tr, OpenMode::Truncate).map_err(|e| self.io("create", e))?;
            let mut at = end;
            while at < len {
                let n = ((len - at) as usize).min(buf.len());
                self.read_exact(&mut buf[..n], at)?;
                out.write_at(&buf[..n], at - end).map_err(|e| self.io("write", e))?;
                at += n as u64;
            }
            out.sync().map_err(|e| self.io("sync", e))?;
            self.dir.sync().map_err(|e| self.io("sync directory of", e))?;
            saved = Some(self.dir.display(&tr));
        }
        self.file.set_len(end).map_err(|e| self.io("truncate", e))?;
        self.file.sync().map_err(|e| self.io("sync", e))?;
        Ok(saved)
    }
}
