//! The storage object: its state, opening (with recovery of a torn tail), and reads.
//!
//! # States and invariants
//! * `committed.end` is the length of the committed prefix of `Data.fs`: it always sits just
//!   after a complete transaction whose status is not `'c'`. Readers never look past it.
//! * `committed.index` maps every object to the position of its newest committed record, which
//!   lies before `committed.end`. `committed.last_tid` is the tid of the transaction ending at
//!   `committed.end` (or [`Tid::ZERO`] for an empty storage); tids strictly increase through
//!   the file.
//! * Only the writer (one transaction at a time, see `txn.rs`) writes, and only past
//!   `committed.end`. It publishes a transaction by updating `committed` under the write lock
//!   after the transaction's status byte is durable, so a reader sees all of a transaction or
//!   nothing of it.

use super::blob::{BlobRecovery, BlobStore};
use super::cache;
use super::error::{OpenError, Result, StorageError};
use super::file::{OpenMode, RealDir, StorageDir, StorageFile};
use super::format::{
    be64, show_status, DataHeaderRec, TxnHeaderRec, DATA_HEADER_LEN, MAGIC, MAGIC_LEN, MAGIC_PY2,
    STATUS_CHECKPOINT, STATUS_NORMAL, STATUS_PACKED, STATUS_UNDONE, TXN_HEADER_LEN,
};
use super::index::Index;
use super::lock::{lock_storage, DirLock};
use super::pack::{self, PackState, SwapFile};
use super::txn::Writer;
use bytes::Bytes;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::reply::{HistoryEntry, LoadBeforeResult, RecordIternextResult};
use zeoraid_core::wire::types::Extension;
use zeoraid_core::wire::value::{Limits, Value};

/// How to open a storage.
#[derive(Debug, Clone)]
pub struct Options {
    /// fsync `Data.fs` twice per commit: at vote (the transaction's records, still marked
    /// `'c'`) and at finish (the status byte that commits it). When `finish` returns, the
    /// transaction survives a power cut. Turning this off keeps crash *consistency* (a torn
    /// tail is cut back at the next open) but not durability of the last commits.
    /// Default: on.
    pub fsync: bool,
    /// Refuse every write; never modify the files (a torn tail is ignored, not cut).
    pub read_only: bool,
    /// Create `Data.fs` when it is missing. Default: on.
    pub create: bool,
    /// Use (and maintain) zeoraid's index cache file next to `Data.fs`. Default: on.
    pub index_cache: bool,
    /// Before cutting a torn or uncommitted tail, save its bytes to `Data.fs.tr<N>` as
    /// FileStorage does. Default: on.
    pub save_tail: bool,
    /// Also open files with the Python 2 magic `FS21` (the layout is the same, the pickles are
    /// protocol 2). Default: off, as Python 3's FileStorage refuses them: serving one to
    /// Python 3 clients hands them Python 2 pickles.
    pub allow_python2_magic: bool,
    /// The blob directory (ZODB's layout; relative paths are relative to the directory of
    /// `Data.fs`), created when missing unless read-only. `None`: no blobs. Default: `None`.
    pub blob_dir: Option<PathBuf>,
    /// Group commit (with [`Options::fsync`]): [`Storage::vote`] does not sync, and
    /// [`Storage::finish_deferred`] publishes a transaction without waiting for the disk, so
    /// that the next one can be written meanwhile; [`Storage::sync_pending`] then makes every
    /// transaction finished so far durable with two syncs in all (records, then status bytes).
    /// [`Storage::finish`] still returns only once its transaction is durable. Default: off.
    pub group_commit: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            fsync: true,
            read_only: false,
            create: true,
            index_cache: true,
            save_tail: true,
            allow_python2_magic: false,
            blob_dir: None,
            group_commit: false,
        }
    }
}

/// Where the index came from at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexSource {
    /// A new, empty storage.
    Created,
    /// Scanned from the start of the file (no usable cache).
    Scan,
    /// Loaded from the cache, then `scanned_from` onwards was scanned (equal to the file's
    /// committed end when the cache was up to date).
    Cache {
        /// Where the cache ended and the scan began.
        scanned_from: u64,
    },
}

/// Why a tail was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailReason {
    /// A transaction still marked `'c'`: it was voted but never finished.
    Uncommitted,
    /// An incomplete transaction (a crash while it was being written).
    Torn {
        /// The first violation found, e.g. "transaction of 120 bytes".
        detail: String,
    },
}

/// A tail cut back at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedTail {
    /// Where the dropped bytes started (the new end of the file).
    pub offset: u64,
    /// How many bytes were dropped.
    pub bytes: u64,
    /// Why.
    pub reason: TailReason,
    /// The file the dropped bytes were saved to, if any.
    pub saved_to: Option<String>,
}

/// How [`Storage::open`] found the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Where the index came from.
    pub index: IndexSource,
    /// Transactions read by the scan.
    pub scanned_transactions: u64,
    /// The tail that was cut back (or, read-only, ignored), if any.
    pub dropped_tail: Option<DroppedTail>,
    /// What was found in the blob directory's `tmp/` (all zero without blobs).
    pub blobs: BlobRecovery,
}

/// The published state readers see.
#[derive(Debug)]
pub(crate) struct Committed {
    pub(crate) index: Index,
    /// End of the last finished transaction (records of finished transactions are below it).
    pub(crate) end: u64,
    pub(crate) last_tid: Tid,
    /// End and tid of the last transaction whose commit is durable: equal to `end` and
    /// `last_tid` except with [`Options::group_commit`], between a transaction's
    /// [`Storage::finish_deferred`] and the [`Storage::sync_pending`] that makes it durable.
    /// Everything that walks transactions (iteration, the undo log, invalidations, pack)
    /// stops here, as the status bytes of later transactions are still `'c'` in the file.
    pub(crate) durable_end: u64,
    pub(crate) durable_tid: Tid,
}

impl Committed {
    pub(crate) fn new(index: Index, end: u64, last_tid: Tid) -> Committed {
        Committed { index, end, last_tid, durable_end: end, durable_tid: last_tid }
    }
}

/// A FileStorage (`Data.fs`), open for reads from any thread and writes from one at a time.
pub struct Storage<D: StorageDir = RealDir> {
    pub(crate) dir: D,
    pub(crate) name: String,
    pub(crate) path: String,
    /// `Data.fs`; a pack replaces it (see `pack.rs`).
    pub(crate) file: SwapFile<D::File>,
    pub(crate) opts: Options,
    pub(crate) committed: RwLock<Committed>,
    pub(crate) writer: Mutex<Writer>,
    /// The largest oid handed out or stored (FileStorage's `_oid`).
    pub(crate) oid_counter: Mutex<u64>,
    /// The blob directory, if any (see `blob.rs`).
    pub(crate) blobs: Option<BlobStore<D::Blobs>>,
    pub(crate) pack: PackState,
    /// Transactions finished but not yet durable (group commit, see `group.rs`).
    pub(crate) group: super::group::GroupState,
    /// `<name>.lock`, held while open for writing (`None` read-only); declared last so that it
    /// is released after everything else is closed.
    pub(crate) _lock: Option<DirLock>,
}

impl<D: StorageDir> std::fmt::Debug for Storage<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("path", &self.path).finish_non_exhaustive()
    }
}

/// A data record header with its position and back-pointer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DataRec {
    pub(crate) pos: u64,
    pub(crate) h: DataHeaderRec,
    /// The back-pointer when `plen == 0` (0: no data), else 0.
    pub(crate) back: u64,
}

impl Storage<RealDir> {
    /// Opens (or creates) the FileStorage at `path` on the real file system.
    pub fn open_path(
        path: impl AsRef<Path>,
        opts: Options,
    ) -> Result<(Storage<RealDir>, OpenReport), OpenError> {
        let path = path.as_ref();
        let (dir, name) =
            RealDir::split(path).ok_or_else(|| OpenError::Missing { path: path.display().to_string() })?;
        Storage::open(dir, &name, opts)
    }
}

impl<D: StorageDir> Storage<D> {
    /// Opens the FileStorage `name` in `dir`.
    ///
    /// The index comes from the cache when it is valid for this file, otherwise from a scan
    /// of every transaction. A torn or uncommitted tail is cut back to the end of the last
    /// complete committed transaction (saving the bytes to `name.tr<N>` first), with a warning.
    /// A file that is not a FileStorage, or that is damaged before a later committed
    /// transaction, is refused with the offset of the damage.
    pub fn open(dir: D, name: &str, opts: Options) -> Result<(Storage<D>, OpenReport), OpenError> {
        let path = dir.display(name);
        let io_err = |op: &'static str| {
            let path = path.clone();
            move |source: io::Error| OpenError::Io { op, path, source }
        };
        let exists = dir.exists(name).map_err(io_err("stat"))?;
        if !exists && (opts.read_only || !opts.create) {
            return Err(OpenError::Missing { path });
        }
        // Before anything reads or repairs the file, as FileStorage does; read-only opens take
        // no lock, as in Python.
        let lock = if opts.read_only { None } else { Some(lock_storage(&dir, name)?) };
        if !opts.read_only {
            pack::remove_leftover(&dir, name);
        }
        let mode = if opts.read_only { OpenMode::Read } else { OpenMode::Create };
        let file = dir.open(name, mode).map_err(io_err("open"))?;
        let len = file.len().map_err(io_err("stat"))?;

        let mut head = [0u8; 4];
        let have = len.min(MAGIC_LEN) as usize;
        file.read_at(&mut head[..have], 0).map_err(io_err("read"))?;
        let created = len < MAGIC_LEN && head[..have] == MAGIC[..have];
        if created {
            // Empty, or a creation torn before its magic was complete.
            if !opts.read_only {
                file.write_at(MAGIC, 0).map_err(io_err("write"))?;
                file.sync().map_err(io_err("sync"))?;
                dir.sync().map_err(io_err("sync directory of"))?;
            }
        } else if &head != MAGIC && !(opts.allow_python2_magic && &head == MAGIC_PY2) {
            return Err(OpenError::NotFileStorage {
                path,
                found: format!("{:?}", Bytes::copy_from_slice(&head[..have])),
            });
        }

        let blobs = match &opts.blob_dir {
            Some(p) => Some(BlobStore::open(dir.blobs_at(p), opts.read_only, opts.fsync)?),
            None => None,
        };
        let storage = Storage {
            dir,
            name: name.to_owned(),
            path: path.clone(),
            file: SwapFile::new(file),
            opts,
            committed: RwLock::new(Committed::new(Index::new(), MAGIC_LEN, Tid::ZERO)),
            writer: Mutex::new(Writer::default()),
            oid_counter: Mutex::new(0),
            blobs,
            pack: PackState::default(),
            group: Default::default(),
            _lock: lock,
        };
        let len = if created { MAGIC_LEN } else { len };
        let mut report = storage.recover(len, created).map_err(|e| OpenError::from_storage(e, &path))?;
        report.blobs = storage.recover_blobs().map_err(|e| OpenError::from_storage(e, &path))?;
        Ok((storage, report))
    }

    /// Builds the index (cache, then scan) and cuts the tail.
    fn recover(&self, len: u64, created: bool) -> Result<OpenReport> {
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

    /// Writes the index cache now (it is also written at open after a scan and by
    /// [`Storage::close`]). Opening reads it to skip the scan of everything it covers.
    pub fn save_index_cache(&self) -> Result<()> {
        if self.opts.read_only || !self.opts.index_cache {
            return Ok(());
        }
        cache::save(self)
    }

    /// Closes the storage, aborting any transaction, dropping blob uploads and saving the
    /// index cache.
    pub fn close(self) -> Result<()> {
        self.abort()?;
        self.sync_pending()?;
        if let Some(b) = &self.blobs {
            b.abandon_all();
        }
        self.save_index_cache()
    }

    // ---- low-level reads -------------------------------------------------------------------

    pub(crate) fn io(&self, op: &'static str, source: io::Error) -> StorageError {
        StorageError::Io { op, path: self.path.clone(), source }
    }

    pub(crate) fn read_exact(&self, buf: &mut [u8], at: u64) -> Result<()> {
        self.file.read_at(buf, at).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                StorageError::corrupt(at, format!("{} bytes", buf.len()), "end of file")
            } else {
                self.io("read", e)
            }
        })
    }

    /// Reads `len` bytes at `at`, which must end by `limit`.
    pub(crate) fn read_bytes(&self, at: u64, len: u64, limit: u64, what: &str) -> Result<Vec<u8>> {
        if at.checked_add(len).is_none_or(|e| e > limit) {
            return Err(StorageError::corrupt(
                at,
                format!("{what} of {len} bytes"),
                format!("data ending at {limit}"),
            ));
        }
        let n = usize::try_from(len)
            .map_err(|_| StorageError::corrupt(at, "an addressable length", len.to_string()))?;
        let mut v = vec![0u8; n];
        self.read_exact(&mut v, at)?;
        Ok(v)
    }

    /// Reads a transaction header at `at`, checking it fits before `limit`.
    pub(crate) fn read_txn_header(&self, at: u64, limit: u64) -> Result<TxnHeaderRec> {
        let b = self.read_bytes(at, TXN_HEADER_LEN, limit, "a transaction header")?;
        let mut a = [0u8; 23];
        a.copy_from_slice(&b);
        let h = TxnHeaderRec::decode(&a);
        if h.tlen < h.header_len() || at.checked_add(h.tlen).is_none_or(|e| e > limit) {
            return Err(StorageError::corrupt(
                at,
                format!("a transaction length between {} and {}", h.header_len(), limit - at),
                h.tlen.to_string(),
            ));
        }
        Ok(h)
    }

    /// Reads the data record header at `at` (and its back-pointer), checking that it belongs
    /// to `oid` when given, that it fits before `limit`, and that a back-pointer points back.
    pub(crate) fn read_data_header(&self, at: u64, limit: u64, oid: Option<Oid>) -> Result<DataRec> {
        // Header and back-pointer in one read (the back-pointer's bytes, when there is none,
        // belong to the pickle and are ignored).
        let mut buf = [0u8; DATA_HEADER_LEN as usize + 8];
        let n = self.read_record_start(at, limit, &mut buf)?;
        self.decode_data_record(at, limit, oid, &buf[..n])
    }

    /// Reads the data record at `at` as [`Storage::read_data_header`] does, and its pickle when
    /// it holds one (`None` for a back-pointer). A single read covers the header and a pickle
    /// of up to [`RECORD_PROBE`] bytes in all: most records cost one system call.
    pub(crate) fn read_data_record(
        &self,
        at: u64,
        limit: u64,
        oid: Option<Oid>,
    ) -> Result<(DataRec, Option<Bytes>)> {
        let mut buf = [0u8; RECORD_PROBE];
        let n = self.read_record_start(at, limit, &mut buf)?;
        let r = self.decode_data_record(at, limit, oid, &buf[..n])?;
        if r.h.plen == 0 {
            return Ok((r, None));
        }
        // decode_data_record checked that the pickle ends by `limit`.
        let plen = usize::try_from(r.h.plen)
            .map_err(|_| StorageError::corrupt(at + 34, "an addressable length", r.h.plen.to_string()))?;
        let head = DATA_HEADER_LEN as usize;
        if head + plen <= n {
            return Ok((r, Some(Bytes::copy_from_slice(&buf[head..head + plen]))));
        }
        let mut data = vec![0u8; plen];
        data[..n - head].copy_from_slice(&buf[head..n]);
        self.read_exact(&mut data[n - head..], at + n as u64)?;
        Ok((r, Some(Bytes::from(data))))
    }

    /// Reads the first bytes of the record at `at` into `buf`, as many as fit before `limit`;
    /// `Corrupt` when not even a header does. Returns how many were read.
    fn read_record_start(&self, at: u64, limit: u64, buf: &mut [u8]) -> Result<usize> {
        let avail = limit.saturating_sub(at);
        if at.checked_add(DATA_HEADER_LEN).is_none_or(|e| e > limit) {
            return Err(StorageError::corrupt(
                at,
                format!("a data record header of {DATA_HEADER_LEN} bytes"),
                format!("data ending at {limit}"),
            ));
        }
        let n = usize::try_from(avail).unwrap_or(usize::MAX).min(buf.len());
        self.read_exact(&mut buf[..n], at)?;
        Ok(n)
    }

    /// Checks the record whose first bytes (at least its header) are `b`.
    fn decode_data_record(&self, at: u64, limit: u64, oid: Option<Oid>, b: &[u8]) -> Result<DataRec> {
        let mut a = [0u8; DATA_HEADER_LEN as usize];
        a.copy_from_slice(&b[..DATA_HEADER_LEN as usize]);
        let h = DataHeaderRec::decode(&a);
        check_data_header(&h, at, limit, oid)?;
        let mut back = 0;
        if h.plen == 0 {
            // check_data_header verified that the 8 bytes of the back-pointer end by `limit`,
            // so they were read.
            let mut p = [0u8; 8];
            p.copy_from_slice(&b[DATA_HEADER_LEN as usize..DATA_HEADER_LEN as usize + 8]);
            back = u64::from_be_bytes(p);
            if back >= at {
                return Err(StorageError::corrupt(
                    at + DATA_HEADER_LEN,
                    format!("a back-pointer below {at}"),
                    back.to_string(),
                ));
            }
        }
        Ok(DataRec { pos: at, h, back })
    }

    /// The pickle of a record with data.
    pub(crate) fn read_pickle(&self, r: &DataRec, limit: u64) -> Result<Bytes> {
        self.read_bytes(r.pos + DATA_HEADER_LEN, r.h.plen, limit, "a pickle").map(Bytes::from)
    }

    /// Follows back-pointers from `back` to the record holding the data: (data, that
    /// record's position). `None` when the chain ends in 0 (no data).
    pub(crate) fn load_back(&self, oid: Oid, mut back: u64, limit: u64) -> Result<Option<(Bytes, DataRec)>> {
        // Each step goes strictly backwards (checked in read_data_header), so this ends.
        while back != 0 {
            let (r, data) = self.read_data_record(back, limit, Some(oid))?;
            if let Some(data) = data {
                return Ok(Some((data, r)));
            }
            back = r.back;
        }
        Ok(None)
    }

    /// The data of record `r`, following back-pointers; `None` for no data.
    pub(crate) fn record_data(&self, r: &DataRec, limit: u64) -> Result<Option<Bytes>> {
        if r.h.plen != 0 {
            return self.read_pickle(r, limit).map(Some);
        }
        Ok(self.load_back(r.h.oid, r.back, limit)?.map(|(d, _)| d))
    }

    pub(crate) fn committed(&self) -> RwLockReadGuard<'_, Committed> {
        self.committed.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn committed_mut(&self) -> RwLockWriteGuard<'_, Committed> {
        self.committed.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The extension dict of a transaction, from its raw pickle. An extension that does not
    /// decode to a dict is reported as empty, with a warning (the raw bytes stay available
    /// through iteration).
    pub(crate) fn decode_extension(&self, raw: &Bytes, tpos: u64) -> Extension {
        if raw.is_empty() {
            return Extension::default();
        }
        match zeoraid_core::wire::pickle::decode(raw, &Limits::default()) {
            Ok(Value::Map(items)) => Extension(items),
            Ok(other) => {
                tracing::warn!(path = %self.path, tpos, "transaction extension is a {}, not a dict", other.type_name());
                Extension::default()
            }
            Err(e) => {
                tracing::warn!(path = %self.path, tpos, error = %e, "transaction extension does not unpickle");
                Extension::default()
            }
        }
    }

    /// User, description and raw extension of the transaction at `tpos`.
    pub(crate) fn read_txn_meta(
        &self,
        tpos: u64,
        h: &TxnHeaderRec,
        limit: u64,
    ) -> Result<(Bytes, Bytes, Bytes)> {
        let len = u64::from(h.ulen) + u64::from(h.dlen) + u64::from(h.elen);
        let b = Bytes::from(self.read_bytes(tpos + TXN_HEADER_LEN, len, limit, "transaction metadata")?);
        let u = usize::from(h.ulen);
        let d = u + usize::from(h.dlen);
        Ok((b.slice(..u), b.slice(u..d), b.slice(d..)))
    }

    // ---- reads ------------------------------------------------------------------------------

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

/// Bytes [`Storage::read_data_record`] reads at once: a record header and a pickle of up to
/// 2 KiB − 42 bytes, which covers most ZODB objects; a longer pickle costs a second read of its
/// remainder. Reading more is not free: the bytes come from DRAM (the page cache), not from
/// the CPU's caches. With 1,110-byte pickles, a 4 KiB probe measured 1.8–2.3 µs per
/// `load_before`, 2 KiB 1.6–1.75 µs (on-CPU time; two reads: 2.3–2.7 µs).
pub(crate) const RECORD_PROBE: usize = 2048;

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
            let mut d = [0u8; 42];
            d.copy_from_slice(w.get(p, DATA_HEADER_LEN, "a data record header")?);
            let dh = DataHeaderRec::decode(&d);
            check_data_header(&dh, p, tend, None)?;
            if dh.tloc != pos {
                return Err(StorageError::corrupt(
                    p + 24,
                    format!("transaction position {pos}"),
                    dh.tloc.to_string(),
                ));
            }
            if dh.plen == 0 {
                let back = w.u64_at(p + DATA_HEADER_LEN, "a back-pointer")?;
                if back >= p {
                    return Err(StorageError::corrupt(
                        p + DATA_HEADER_LEN,
                        format!("a back-pointer below {p}"),
                        back.to_string(),
                    ));
                }
            }
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
