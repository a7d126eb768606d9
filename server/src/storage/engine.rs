//! The storage object: its state, opening and closing, and the locks on its state.
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
//!
//! # Files
//! * `engine/recover.rs`: building the index at open (cache, then scan) and cutting a torn or
//!   uncommitted tail.
//! * `engine/records.rs`: low-level reads of transaction and data records.
//! * `engine/reads.rs`: the public reads (`load_before`, `load`, `history`, ...).
//! * `engine/check.rs`: the checks of a scanned transaction and the read-ahead window scans use.

mod check;
mod reads;
mod records;
mod recover;

pub(crate) use check::{check_data_header, data_header, Window};
pub(crate) use records::RECORD_PROBE;

use super::blob::{BlobRecovery, BlobStore};
use super::cache;
use super::error::{OpenError, Result};
use super::file::{OpenMode, RealDir, StorageDir, StorageFile};
use super::format::{DataHeaderRec, MAGIC, MAGIC_LEN, MAGIC_PY2};
use super::index::Index;
use super::lock::{lock_storage, DirLock};
use super::pack::{self, PackState, SwapFile};
use super::txn::Writer;
use bytes::Bytes;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use zeoraid_core::ids::Tid;

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

    pub(crate) fn committed(&self) -> RwLockReadGuard<'_, Committed> {
        self.committed.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn committed_mut(&self) -> RwLockWriteGuard<'_, Committed> {
        self.committed.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}
