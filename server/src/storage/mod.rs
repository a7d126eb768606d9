//! The local storage engine: a ZODB FileStorage (`Data.fs`, magic `FS30`, the magic ZODB 5/6
//! write on Python 3; the Python 2 magic `FS21` is accepted on request).
//!
//! The file is byte-compatible with ZODB's `FileStorage` (see [`format`]): Python can open
//! what this engine writes and the engine opens what Python wrote. zeoraid keeps its own index
//! cache (`Data.fs.zr-index`) instead of Python's `Data.fs.index`, which it neither reads nor
//! writes.
//!
//! # Use
//! ```no_run
//! # use zeoraid_server::storage::*;
//! # use zeoraid_core::ids::{Oid, Tid};
//! # use zeoraid_core::wire::types::TxnStatus;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (s, report) = Storage::open_path("/var/lib/zeoraid/Data.fs", Options::default())?;
//! s.begin(TxnMeta::default(), BeginTid::from_clock(), TxnStatus::NORMAL)?;
//! s.store(Oid::ROOT, Tid::ZERO, b"root pickle")?;
//! s.vote()?;
//! let tid = s.finish()?;
//! assert_eq!(s.load_before(Oid::ROOT, Tid::MAX)?.map(|r| r.start), Some(tid));
//! # Ok(()) }
//! ```
//!
//! # Threads
//! [`Storage`] is `Sync`. Reads take `&self` and run concurrently; writes also take `&self` but
//! are serialised on an internal lock, one transaction at a time (the caller holds the commit
//! lock of the ZEO layer around `begin`…`finish`). A reader never sees part of a transaction:
//! see the invariants in `engine.rs`.
//!
//! # One writer per file
//! An open for writing locks `Data.fs.lock` exactly as Python's FileStorage does (`flock`, the
//! holder's pid written inside), until the storage is dropped: zeoraid and Python exclude each
//! other, and a second open fails with [`OpenError::Locked`]. Read-only opens take no lock. See
//! `lock.rs`.
//!
//! # Durability
//! With [`Options::fsync`] (the default) a transaction whose [`Storage::finish`] returned
//! survives a crash; one that did not may or may not (it does only if its status byte reached
//! the disk). Whatever the crash, the next open finds a consistent file: a torn or uncommitted
//! tail is cut back to the last committed transaction.
//!
//! # Pack
//! [`Storage::pack`] packs without garbage collection while reads and commits go on: it copies
//! the records current at the pack time and every later transaction into `Data.fs.pack`
//! through the same [`file::StorageDir`], fsyncs it, then, under the writer lock, copies the
//! transactions committed meanwhile, renames it over `Data.fs`, swaps the file handle and the
//! index, and bumps a file generation that cursors check. Semantics, the differences from
//! FileStorage's pack, and the crash-safety argument are in `pack.rs`.
//!
//! # Blobs
//! Blobs are built (see [`blob`], with [`Options::blob_dir`]): ZODB's blob directory layout,
//! uploads into `tmp/`, staged in the transaction, renamed into place at finish after the
//! `Data.fs` commit, completed or discarded at the next open after a crash. After a pack has
//! replaced `Data.fs`, the blob files of the revisions it dropped are removed
//! ([`BlobStore::remove_revision`]).

pub mod blob;
#[cfg(test)]
mod blob_tests;
mod cache;
mod engine;
#[cfg(test)]
mod engine_tests;
mod error;
pub mod file;
pub mod format;
mod group;
mod index;
mod iter;
mod lock;
mod pack;
mod stats;
mod txn;
mod undo;

pub use blob::{
    is_blob_record, BlobFs, BlobReader, BlobRecovery, BlobStore, Layout, RealBlobFs, UploadId, BLOB_CHUNK,
};
pub use engine::{DroppedTail, IndexSource, OpenReport, Options, Storage, TailReason};
pub use error::{Culprit, OpenError, Result, StorageError, UndoFailure};
pub use file::{CrashMode, MemBlobFs, MemDir, MemFile, OpenMode, RealDir, RealFile, StorageDir, StorageFile};
pub use index::{Index, MAX_POS};
pub use iter::{RecordCursor, TxnCursor, TxnIter, TxnRecord};
pub use lock::{DirLock, LockError};
pub use pack::{PackOutcome, PackPhase, PackReport};
pub use txn::{BeginTid, TxnMeta, FLUSH_AT};

/// The name of zeoraid's index cache file for a `Data.fs` named `name`.
pub fn index_cache_name(name: &str) -> String {
    cache::file_name(name)
}

/// Takes the writer's lock of the FileStorage at `path` (`<path>.lock`, as an open for writing
/// does), for work on its files outside an open storage (settling an interrupted rebuild).
/// Dropping the lock releases it.
pub fn lock_path(path: &std::path::Path) -> Result<DirLock, OpenError> {
    let (dir, name) =
        RealDir::split(path).ok_or_else(|| OpenError::Missing { path: path.display().to_string() })?;
    lock::lock_storage(&dir, &name)
}
