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
//! # Room left for pack and blobs (not built yet)
//! * **Pack without GC** will copy the current records as of the pack time and every later
//!   transaction into `Data.fs.pack` through the same [`file::StorageDir`] (reading with the
//!   iteration code, writing with the record writer of `txn.rs`), fsync it, then, under the
//!   writer lock, copy the transactions committed meanwhile, rename it over `Data.fs`, swap
//!   the file handle and index, and bump a file generation that cursors check.
//! * **Blobs** will live in ZODB's blob directory layout (`.layout` = `bushy`, one directory per
//!   oid byte, files `<tid>.blob`), keyed by (oid, serial). A store of a blob writes the file into
//!   a temporary name first and renames it into place at finish, after the `Data.fs` commit;
//!   abort removes it. The data record itself is an ordinary pickle, so nothing here changes.

mod cache;
mod engine;
#[cfg(test)]
mod engine_tests;
mod error;
pub mod file;
pub mod format;
mod index;
mod iter;
mod lock;
mod stats;
mod txn;
mod undo;

pub use engine::{DroppedTail, IndexSource, OpenReport, Options, Storage, TailReason};
pub use error::{Culprit, OpenError, Result, StorageError, UndoFailure};
pub use file::{CrashMode, MemDir, MemFile, OpenMode, RealDir, RealFile, StorageDir, StorageFile};
pub use index::{Index, MAX_POS};
pub use iter::{RecordCursor, TxnCursor, TxnIter, TxnRecord};
pub use lock::{DirLock, LockError};
pub use txn::{BeginTid, TxnMeta, FLUSH_AT};

/// The name of zeoraid's index cache file for a `Data.fs` named `name`.
pub fn index_cache_name(name: &str) -> String {
    cache::file_name(name)
}
