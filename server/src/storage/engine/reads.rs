//! The public reads: the last transaction, sizes, new oids, loads, history and
//! `record_iternext`, all from the committed state (see the invariants in `engine.rs`).

use super::{Committed, DataRec, Storage, RECORD_PROBE};
use crate::storage::error::{Result, StorageError};
use crate::storage::file::{StorageDir, StorageFile};
use crate::storage::format::DATA_HEADER_LEN;
use bytes::Bytes;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::reply::{HistoryEntry, LoadBeforeResult, RecordIternextResult};

impl<D: StorageDir> Storage<D> {
    /// The tid of the last committed transaction ([`Tid::ZERO`] when empty).
    pub fn last_transaction(&self) -> Tid {
        self.committed().last_tid
    }

    /// Number of objects in the index (deleted objects included, as FileStorage counts).
    pub fn len(&self) -> usize {
        self.committed().index.len()
    }

    /// Whether the storage holds no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of committed data in `Data.fs`.
    pub fn size(&self) -> u64 {
        self.committed().end
    }

    /// The path of `Data.fs`, for logs and `get_info`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.opts.read_only
    }

    /// `n` fresh oids, above every oid handed out or stored so far in this process and above
    /// every oid in the file.
    pub fn new_oids(&self, n: usize) -> Result<Vec<Oid>> {
        if self.opts.read_only {
            return Err(StorageError::ReadOnly);
        }
        let mut c = self.oid_counter.lock().unwrap_or_else(|p| p.into_inner());
        let last = c.checked_add(n as u64).ok_or(StorageError::OidsExhausted)?;
        let out = (*c + 1..=last).map(Oid::new).collect();
        *c = last;
        Ok(out)
    }

    /// Moves the oid counter up to `oid` (FileStorage's `set_max_oid`).
    pub(crate) fn saw_oid(&self, oid: Oid) {
        let mut c = self.oid_counter.lock().unwrap_or_else(|p| p.into_inner());
        *c = (*c).max(oid.get());
    }

    /// The newest revision of `oid` with a tid strictly below `before`: its data, its tid and
    /// the tid of the next revision (`None` if it is current). `Ok(None)` when the object has
    /// no revision before `before`; [`StorageError::PosKey`] when the object is unknown or that
    /// revision holds no data (a delete or an undone creation).
    pub fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<LoadBeforeResult>> {
        let c = self.committed();
        let mut pos = c.index.get(oid).ok_or(StorageError::PosKey { oid })?;
        let mut end = None;
        loop {
            let (r, data) = self.read_data_record(pos, c.end, Some(oid))?;
            if r.h.tid < before {
                let data = match data {
                    Some(d) => d,
                    None => self.load_back(oid, r.back, c.end)?.ok_or(StorageError::PosKey { oid })?.0,
                };
                return Ok(Some(LoadBeforeResult { data, start: r.h.tid, end }));
            }
            if r.h.prev == 0 {
                return Ok(None);
            }
            // `check_data_header` refused a `prev` at or after `pos`: the walk goes strictly back.
            end = Some(r.h.tid);
            pos = r.h.prev;
        }
    }

    /// [`Storage::load_before`] for the common case only, and only if it can be answered
    /// without waiting for the disk: the current revision is before `before`, holds its data
    /// (no back-pointer) and its bytes are in memory (see [`StorageFile::try_read_at`]).
    /// `None`: ask [`Storage::load_before`]. An answer is always the same as its answer.
    pub fn load_before_nowait(&self, oid: Oid, before: Tid) -> Option<Result<Option<LoadBeforeResult>>> {
        let c = self.committed();
        let Some(pos) = c.index.get(oid) else { return Some(Err(StorageError::PosKey { oid })) };
        let mut buf = [0u8; RECORD_PROBE];
        let n = usize::try_from(c.end.saturating_sub(pos)).unwrap_or(usize::MAX).min(buf.len());
        if (n as u64) < DATA_HEADER_LEN || !matches!(self.file.try_read_at(&mut buf[..n], pos), Ok(true)) {
            return None;
        }
        let r = self.decode_data_record(pos, c.end, Some(oid), &buf[..n]).ok()?;
        let plen = usize::try_from(r.h.plen).ok()?;
        let head = DATA_HEADER_LEN as usize;
        if r.h.tid >= before || plen == 0 || head + plen > n {
            return None;
        }
        let data = Bytes::copy_from_slice(&buf[head..head + plen]);
        Some(Ok(Some(LoadBeforeResult { data, start: r.h.tid, end: None })))
    }

    /// The current data and serial of `oid`; [`StorageError::PosKey`] when unknown or deleted.
    pub fn load(&self, oid: Oid) -> Result<(Bytes, Tid)> {
        let c = self.committed();
        let pos = c.index.get(oid).ok_or(StorageError::PosKey { oid })?;
        let (r, data) = self.read_data_record(pos, c.end, Some(oid))?;
        let data = match data {
            Some(d) => d,
            None => self.load_back(oid, r.back, c.end)?.ok_or(StorageError::PosKey { oid })?.0,
        };
        Ok((data, r.h.tid))
    }

    /// The current serial of `oid` (`getTid`); [`StorageError::PosKey`] when unknown or deleted.
    pub fn get_tid(&self, oid: Oid) -> Result<Tid> {
        let c = self.committed();
        self.current_serial(&c, oid)?.ok_or(StorageError::PosKey { oid })
    }

    /// The serial of `oid`'s current record: `None` if unknown or if that record holds no data.
    pub(crate) fn current_serial(&self, c: &Committed, oid: Oid) -> Result<Option<Tid>> {
        let Some(pos) = c.index.get(oid) else { return Ok(None) };
        let r = self.read_data_header(pos, c.end, Some(oid))?;
        Ok((r.h.plen != 0 || r.back != 0).then_some(r.h.tid))
    }

    /// The data of exactly revision `serial` of `oid`; [`StorageError::PosKey`] if there is no
    /// such revision or it holds no data.
    pub fn load_serial(&self, oid: Oid, serial: Tid) -> Result<Bytes> {
        let c = self.committed();
        let r = self.find_revision(&c, oid, serial)?.ok_or(StorageError::PosKey { oid })?;
        self.record_data(&r, c.end)?.ok_or(StorageError::PosKey { oid })
    }

    /// The record of revision `serial` of `oid` on its chain of committed records.
    pub(crate) fn find_revision(&self, c: &Committed, oid: Oid, serial: Tid) -> Result<Option<DataRec>> {
        let Some(mut pos) = c.index.get(oid) else { return Ok(None) };
        loop {
            let r = self.read_data_header(pos, c.end, Some(oid))?;
            if r.h.tid == serial {
                return Ok(Some(r));
            }
            if r.h.tid < serial || r.h.prev == 0 {
                return Ok(None);
            }
            // `check_data_header` refused a `prev` at or after `pos`: the walk goes strictly back.
            pos = r.h.prev;
        }
    }

    /// Up to `size` revisions of `oid`, newest first, delete records included (size 0), each
    /// with its transaction's metadata and extension keys.
    pub fn history(&self, oid: Oid, size: usize) -> Result<Vec<HistoryEntry>> {
        let c = self.committed();
        let mut pos = c.index.get(oid).ok_or(StorageError::PosKey { oid })?;
        let mut out = Vec::new();
        while out.len() < size {
            let r = self.read_data_header(pos, c.end, Some(oid))?;
            let th = self.read_txn_header(r.h.tloc, c.end)?;
            let (user, description, ext) = self.read_txn_meta(r.h.tloc, &th, c.end)?;
            let mut extension = self.decode_extension(&ext, r.h.tloc);
            // Python builds the entry as ext.update(standard keys): standard keys win.
            extension.0.retain(|(k, _)| {
                !matches!(k.as_str(), Some("time" | "user_name" | "description" | "tid" | "size"))
            });
            out.push(HistoryEntry {
                time: r.h.tid.to_unix_f64(),
                user_name: user,
                description,
                tid: r.h.tid,
                size: i64::try_from(r.h.plen).unwrap_or(i64::MAX),
                extension,
            });
            if r.h.prev == 0 {
                break;
            }
            // `check_data_header` refused a `prev` at or after `pos`: the walk goes strictly back.
            pos = r.h.prev;
        }
        Ok(out)
    }

    /// The current record of the first object at or after `next` (from the smallest oid when
    /// `None`), with the oid to continue from. `Ok(None)` when no object is at or after
    /// `next`. [`StorageError::PosKey`] when that object's current record is a delete, as
    /// FileStorage does.
    pub fn record_iternext(&self, next: Option<Oid>) -> Result<Option<RecordIternextResult>> {
        let (oid, following) = {
            let c = self.committed();
            let Some(oid) = c.index.first_at_or_after(next.unwrap_or(Oid::new(0))) else { return Ok(None) };
            let following = oid.checked_next().and_then(|n| c.index.first_at_or_after(n));
            (oid, following)
        };
        let (data, tid) = self.load(oid)?;
        Ok(Some(RecordIternextResult { oid, tid, data, next: following }))
    }
}
