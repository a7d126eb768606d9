//! The checks a scan makes of each transaction (what `fstest` checks, plus back-pointers),
//! and the read-ahead [`Window`] scans read through.

use crate::storage::error::{Result, StorageError};
use crate::storage::file::StorageFile;
use crate::storage::format::{
    be64, show_status, DataHeaderRec, TxnHeaderRec, DATA_HEADER_LEN, STATUS_CHECKPOINT, STATUS_NORMAL,
    STATUS_PACKED, STATUS_UNDONE, TXN_HEADER_LEN,
};
use zeoraid_core::ids::{Oid, Tid};

/// Checks a data header's own fields against its position and the data limit.
pub(crate) fn check_data_header(h: &DataHeaderRec, at: u64, limit: u64, oid: Option<Oid>) -> Result<()> {
    if let Some(oid) = oid {
        if h.oid != oid {
            return Err(StorageError::corrupt(
                at,
                format!("a data record of oid {oid}"),
                format!("oid {}", h.oid),
            ));
        }
    }
    if h.vlen != 0 {
        return Err(StorageError::corrupt(at + 32, "version length 0", h.vlen.to_string()));
    }
    if h.record_len().and_then(|l| at.checked_add(l)).is_none_or(|e| e > limit) {
        return Err(StorageError::corrupt(
            at + 34,
            format!("a data length that fits before offset {limit}"),
            h.plen.to_string(),
        ));
    }
    if h.prev >= at {
        return Err(StorageError::corrupt(
            at + 16,
            format!("a previous-record pointer below {at}"),
            h.prev.to_string(),
        ));
    }
    if h.tloc >= at {
        return Err(StorageError::corrupt(
            at + 24,
            format!("a transaction position below {at}"),
            h.tloc.to_string(),
        ));
    }
    Ok(())
}

/// A read-ahead window over a file, for scans.
pub(crate) struct Window<'a, F> {
    file: &'a F,
    path: &'a str,
    pub(crate) limit: u64,
    start: u64,
    buf: Vec<u8>,
}

const WINDOW: u64 = 1 << 20;

impl<'a, F: StorageFile> Window<'a, F> {
    pub(crate) fn new(file: &'a F, path: &'a str, limit: u64) -> Window<'a, F> {
        Window { file, path, limit, start: 0, buf: Vec::new() }
    }

    /// `len` bytes at `at`, or `Corrupt` if they run past the limit.
    pub(crate) fn get(&mut self, at: u64, len: u64, what: &str) -> Result<&[u8]> {
        let end = at.checked_add(len).filter(|&e| e <= self.limit).ok_or_else(|| {
            StorageError::corrupt(
                at,
                format!("{what} of {len} bytes"),
                format!("end of file at {}", self.limit),
            )
        })?;
        if at < self.start || end > self.start + self.buf.len() as u64 {
            let n = (self.limit - at).min(len.max(WINDOW));
            let n = usize::try_from(n)
                .map_err(|_| StorageError::corrupt(at, "an addressable length", n.to_string()))?;
            self.buf.resize(n, 0);
            self.file.read_at(&mut self.buf, at).map_err(|e| StorageError::Io {
                op: "read",
                path: self.path.to_owned(),
                source: e,
            })?;
            self.start = at;
        }
        let off = (at - self.start) as usize;
        Ok(&self.buf[off..off + len as usize])
    }

    pub(crate) fn u64_at(&mut self, at: u64, what: &str) -> Result<u64> {
        Ok(be64(self.get(at, 8, what)?))
    }
}

/// A transaction that passed every check of the scan.
pub(crate) struct ScannedTxn {
    pub(crate) tid: Tid,
    pub(crate) end: u64,
    pub(crate) records: Vec<(Oid, u64)>,
}

/// Checks the whole transaction at `pos` (what `fstest` checks, plus back-pointers) and lists
/// its records. Every violation is a `Corrupt` naming its offset.
pub(crate) fn check_txn<F: StorageFile>(
    w: &mut Window<'_, F>,
    pos: u64,
    last_tid: Tid,
) -> Result<ScannedTxn> {
    let mut a = [0u8; 23];
    a.copy_from_slice(w.get(pos, TXN_HEADER_LEN, "a transaction header")?);
    let h = TxnHeaderRec::decode(&a);
    if h.status == STATUS_CHECKPOINT {
        return Err(StorageError::corrupt(
            pos + 16,
            "a committed transaction",
            "status 'c' (voted, never finished)",
        ));
    }
    if !matches!(h.status, STATUS_NORMAL | STATUS_PACKED | STATUS_UNDONE) {
        return Err(StorageError::corrupt(pos + 16, "status ' ', 'p' or 'u'", show_status(h.status)));
    }
    let tend = pos.checked_add(h.tlen).filter(|_| h.tlen >= h.header_len()).ok_or_else(|| {
        StorageError::corrupt(
            pos + 8,
            format!("a transaction length of at least {}", h.header_len()),
            h.tlen.to_string(),
        )
    })?;
    if tend.checked_add(8).is_none_or(|e| e > w.limit) {
        return Err(StorageError::corrupt(
            pos + 8,
            format!("a transaction length that fits in the file ({} bytes left)", w.limit - pos),
            h.tlen.to_string(),
        ));
    }
    let trailer = w.u64_at(tend, "the transaction's redundant length")?;
    if h.tid <= last_tid {
        return Err(StorageError::corrupt(pos, format!("a tid after {last_tid}"), h.tid.to_string()));
    }
    let mut records = Vec::new();
    if h.status != STATUS_UNDONE {
        let mut p = pos + h.header_len();
        while p < tend {
            let (dh, _) = data_header(w, p, pos, tend)?;
            records.push((dh.oid, p));
            // check_data_header verified that the record ends by tend.
            p += dh.record_len().unwrap_or(u64::MAX);
        }
    }
    if trailer != h.tlen {
        return Err(StorageError::corrupt(
            tend,
            format!("redundant transaction length {}", h.tlen),
            trailer.to_string(),
        ));
    }
    Ok(ScannedTxn { tid: h.tid, end: tend + 8, records })
}

/// Reads and checks the data record header at `pos` of the transaction at `tpos` (ending at
/// `tend`): its fields, its transaction position, and its back-pointer (0 unless `plen` is 0),
/// which must point below it.
pub(crate) fn data_header<F: StorageFile>(
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
