//! Blobs, kept in ZODB's blob directory layout next to `Data.fs`, so that Python's
//! `FileStorage(path, blob_dir=...)` reads what zeoraid wrote and the other way round.
//!
//! # The directory
//! `.layout` names the layout (see [`layout`] for the exact facts checked against ZODB 6.4);
//! committed blob files are `<oid dir>/<tid_repr>.blob`, read-only; `tmp/` holds temporary
//! files. A new blob directory is created `bushy`, with `.layout` written (durably, through a
//! temporary name) before `tmp/`, so that a crash never leaves a marker-less directory that
//! ZODB's heuristic would take for `lawn`. An existing directory without `.layout` gets the
//! layout ZODB would pick (`bushy` when it holds only hidden entries, `lawn` otherwise), and
//! a writable open writes the marker, as ZODB does. An unknown layout is refused.
//!
//! # Life of a blob
//! 1. **Upload** ([`BlobStore::begin_upload`], [`BlobStore::append`]): the ZEO
//!    `storeBlobStart`/`storeBlobChunk` stream goes into `tmp/upload-<n>.tmp`, outside any
//!    transaction (ZEO buffers the stores of a commit until vote).
//! 2. **Store** ([`Storage::store_blob`](crate::storage::Storage::store_blob), [`Storage::restore_blob`](crate::storage::Storage::restore_blob)): inside the
//!    transaction, the data record is written as by `store`/`restore`, and the upload is renamed
//!    to its *staged* name `tmp/<oid:016x>-<tid:016x>.staged`. A later blob store of the same
//!    object in the same transaction replaces it. Undoing a transaction that changed a blob
//!    stages, for the new revision, a hard link to (or, where links fail, a copy of) the blob of
//!    the revision the undo goes back to, as FileStorage does.
//! 3. **Vote**: with fsync on, the staged files and `tmp/` are synced before `Data.fs` is.
//! 4. **Finish**: after the status byte that commits the transaction is durable, each staged
//!    file is sealed (read-only) and renamed to `<oid dir>/<tid>.blob` (directories created as
//!    needed), and the new directory entries are synced; only then is the transaction
//!    published to readers. A failure here leaves the storage broken until reopened, like any
//!    failure after the status byte.
//! 5. **Abort** removes the transaction's staged files.
//!
//! # Crash semantics (with fsync on)
//! * A transaction whose finish returned has all its blob files in place.
//! * A transaction that committed in `Data.fs` (its status byte reached the disk) but whose
//!   blobs were not all moved into place still has them staged in `tmp/`: the next open finds
//!   that `Data.fs` holds a blob record for the staged (oid, tid) and completes the move
//!   ([`BlobRecovery::completed`]). Read-only, it serves them from `tmp/` instead.
//! * Staged files of transactions that did not commit, and every other file in `tmp/`
//!   (uploads), are removed at the next writable open, with a warning
//!   ([`BlobRecovery::discarded`], [`BlobRecovery::tmp_removed`]).
//! * A committed-looking file `<oid dir>/<tid>.blob` with no committed transaction can only
//!   come from a crash with fsync off, or from Python's FileStorage, which moves blobs into
//!   place at store time. Open does not walk the tree to find such files: they are ignored.
//!   No record names them, [`Storage::blob_path`](crate::storage::Storage::blob_path) refuses tids above the last committed one,
//!   and a later restore of the same revision replaces them.
//!
//! With fsync off, crash consistency of `Data.fs` holds, but the blob of one of the last
//! transactions may be missing or incomplete after a power cut (never after a process crash).
//!
//! # For pack
//! [`BlobStore::revisions`] lists the blob revisions of an object and
//! [`BlobStore::remove_revision`] removes one (pruning directories left empty, serialised with
//! commits that create them); [`BlobStore::list`] walks every committed blob file.

//!
//! # Files
//! * `blob.rs` (this file): the store, its opening (layout and marker), reads of committed
//!   files ([`BlobReader`]) and the operations for pack.
//! * `blob/commit.rs`: uploads, staging in a transaction, and the commit (vote, finish, abort)
//!   that moves staged files into place.
//! * `blob/storage_ops.rs`: the [`Storage`](crate::storage::Storage) side: its blob calls and the hooks of the
//!   transaction, undo and open code.
//! * `blob/layout.rs`, `blob/fs.rs`: the directory layouts and file names, and the file system.

mod commit;
mod fs;
pub mod layout;
mod storage_ops;

pub use fs::{BlobFs, EntryKind, RealBlobFs};
pub use layout::{is_blob_record, Layout};

use super::error::{OpenError, Result, StorageError};
use super::file::StorageFile;
use bytes::Bytes;
use layout::{parse_blob_file_name, LAYOUT_MARKER, TMP_DIR};
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use zeoraid_core::ids::{Oid, Tid};

/// Blob files moved into place by a deferred-sync transaction and the directories whose
/// entries changed (deepest first), to sync before its commit is made durable.
#[derive(Debug, Default, Clone)]
pub(crate) struct BlobSyncs {
    pub(crate) files: Vec<String>,
    pub(crate) dirs: Vec<String>,
}

/// The chunk size of ZEO's `sendBlob` (`receiveBlobChunk`) and `storeBlobChunk` streams.
pub const BLOB_CHUNK: usize = 59_000;

/// An upload in progress, from [`BlobStore::begin_upload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UploadId(u64);

impl UploadId {
    /// The number behind the id.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// What the open did to the blob directory's `tmp/`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobRecovery {
    /// Staged blobs of a committed transaction moved into place (or, read-only, served from
    /// `tmp/`).
    pub completed: usize,
    /// Staged blobs of transactions that did not commit, removed.
    pub discarded: usize,
    /// Other leftovers (abandoned uploads) removed.
    pub tmp_removed: usize,
}

struct Upload<F> {
    rel: String,
    file: F,
    len: u64,
}

/// The uploads in progress by number, and the next number.
type Uploads<F> = (u64, BTreeMap<u64, Arc<Mutex<Upload<F>>>>);

/// The blobs staged by the transaction in progress: oid → the staged file, if this process
/// wrote it (uploads and copies must be synced at vote; links need not be).
struct Staged<F> {
    tid: Option<Tid>,
    files: BTreeMap<Oid, Option<F>>,
}

/// A blob directory in ZODB's layout.
pub struct BlobStore<B: BlobFs> {
    fs: B,
    layout: Layout,
    read_only: bool,
    fsync: bool,
    uploads: Mutex<Uploads<B::File>>,
    staged: Mutex<Staged<B::File>>,
    /// Serialises the creation of oid directories (commits) with their pruning (pack).
    dirs: Mutex<()>,
    /// Read-only: staged blobs of committed transactions, served from `tmp/`.
    pending: Mutex<BTreeMap<(Oid, Tid), String>>,
}

impl<B: BlobFs> std::fmt::Debug for BlobStore<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("path", &self.fs.path(""))
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// The staged name of revision `tid` of `oid`.
fn staged_name(oid: Oid, tid: Tid) -> String {
    format!("{TMP_DIR}/{:016x}-{:016x}.staged", oid.get(), tid.get())
}

fn parse_staged(name: &str) -> Option<(Oid, Tid)> {
    let (o, t) = name.strip_suffix(".staged")?.split_once('-')?;
    let hex16 = |s: &str| {
        (s.len() == 16 && s.bytes().all(|c| c.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
    };
    Some((Oid::new(hex16(o)?), Tid::new(hex16(t)?)))
}

impl<B: BlobFs> BlobStore<B> {
    /// Opens the blob directory of `fs`, creating it (bushy) when it is missing and the store is
    /// writable. Does not look into `tmp/`: [`Storage::open`](crate::storage::Storage::open) does that once `Data.fs` is
    /// recovered.
    pub fn open(fs: B, read_only: bool, fsync: bool) -> Result<BlobStore<B>, OpenError> {
        let shown = |rel: &str| fs.path(rel).display().to_string();
        let io_err = |op: &'static str, rel: &str| {
            let path = shown(rel);
            move |source: io::Error| OpenError::Io { op, path, source }
        };
        let layout = match fs.stat("").map_err(io_err("stat", ""))? {
            None if read_only => return Err(OpenError::Missing { path: shown("") }),
            None => {
                fs.create_root().map_err(io_err("create", ""))?;
                write_marker(&fs, Layout::Bushy, fsync).map_err(io_err("write", LAYOUT_MARKER))?;
                tracing::info!(path = %shown(""), "created the blob directory (layout bushy)");
                Layout::Bushy
            }
            Some(EntryKind::File) => {
                return Err(OpenError::Io {
                    op: "open",
                    path: shown(""),
                    source: io::Error::new(io::ErrorKind::NotADirectory, "the blob directory is a file"),
                })
            }
            Some(EntryKind::Dir) => match fs.stat(LAYOUT_MARKER).map_err(io_err("stat", LAYOUT_MARKER))? {
                Some(_) => {
                    let raw = read_all(&fs, LAYOUT_MARKER).map_err(io_err("read", LAYOUT_MARKER))?;
                    let text = String::from_utf8_lossy(&raw);
                    Layout::parse(&text).ok_or_else(|| OpenError::BlobLayout {
                        path: shown(LAYOUT_MARKER),
                        found: text.trim().to_owned(),
                    })?
                }
                None => {
                    // ZODB's auto_layout_select: only hidden entries (or none) means bushy.
                    let entries = fs.list("").map_err(io_err("list", ""))?;
                    let layout = if entries.iter().all(|(n, _)| n.starts_with('.')) {
                        Layout::Bushy
                    } else {
                        tracing::warn!(path = %shown(""), "blob directory without a .layout marker holds files: taking it for the lawn layout, as ZODB does");
                        Layout::Lawn
                    };
                    if !read_only {
                        write_marker(&fs, layout, fsync).map_err(io_err("write", LAYOUT_MARKER))?;
                    }
                    layout
                }
            },
        };
        if !read_only && fs.stat(TMP_DIR).map_err(io_err("stat", TMP_DIR))?.is_none() {
            fs.create_dir(TMP_DIR).map_err(io_err("create", TMP_DIR))?;
            if fsync {
                fs.sync_dir("").map_err(io_err("sync", ""))?;
            }
        }
        Ok(BlobStore {
            fs,
            layout,
            read_only,
            fsync,
            uploads: Mutex::new((0, BTreeMap::new())),
            staged: Mutex::new(Staged { tid: None, files: BTreeMap::new() }),
            dirs: Mutex::new(()),
            pending: Mutex::new(BTreeMap::new()),
        })
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The blob directory's path.
    pub fn path(&self) -> PathBuf {
        self.fs.path("")
    }

    /// The file system it lives on.
    pub fn fs(&self) -> &B {
        &self.fs
    }

    fn io(&self, op: &'static str, rel: &str, source: io::Error) -> StorageError {
        StorageError::Io { op, path: self.fs.path(rel).display().to_string(), source }
    }

    // ---- reads ------------------------------------------------------------------------------

    fn missing(&self, oid: Oid, serial: Tid) -> StorageError {
        StorageError::BlobMissing {
            oid,
            serial,
            path: self.fs.path(&self.layout.blob_file(oid, serial)).display().to_string(),
        }
    }

    /// The file holding the committed blob of (`oid`, `serial`), if any; `last` is the last
    /// committed tid.
    fn committed_file(&self, oid: Oid, serial: Tid, last: Tid) -> Result<String> {
        let rel = self.layout.blob_file(oid, serial);
        if serial <= last {
            if let Some(EntryKind::File) = self.fs.stat(&rel).map_err(|e| self.io("stat", &rel, e))? {
                return Ok(rel);
            }
            if let Some(p) = lock(&self.pending).get(&(oid, serial)) {
                return Ok(p.clone());
            }
        }
        Err(self.missing(oid, serial))
    }

    // ---- for pack ---------------------------------------------------------------------------

    /// The revisions of `oid` that have a committed blob file, oldest first.
    pub fn revisions(&self, oid: Oid) -> Result<Vec<Tid>> {
        let dir = self.layout.oid_dir(oid);
        if self.fs.stat(&dir).map_err(|e| self.io("stat", &dir, e))? != Some(EntryKind::Dir) {
            return Ok(Vec::new());
        }
        let mut out: Vec<Tid> = self
            .fs
            .list(&dir)
            .map_err(|e| self.io("list", &dir, e))?
            .into_iter()
            .filter(|(_, k)| *k == EntryKind::File)
            .filter_map(|(n, _)| parse_blob_file_name(&n))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Removes the blob file of revision `tid` of `oid` (pack), and the object's directories
    /// that this leaves empty. Returns whether there was a file.
    pub fn remove_revision(&self, oid: Oid, tid: Tid) -> Result<bool> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        let _g = lock(&self.dirs);
        let rel = self.layout.blob_file(oid, tid);
        if self.fs.stat(&rel).map_err(|e| self.io("stat", &rel, e))?.is_none() {
            return Ok(false);
        }
        self.fs.remove_file(&rel).map_err(|e| self.io("remove", &rel, e))?;
        let mut parts = self.layout.oid_dir_parts(oid);
        let mut synced = false;
        while !parts.is_empty() {
            let dir = parts.join("/");
            if !self.fs.list(&dir).map_err(|e| self.io("list", &dir, e))?.is_empty() {
                break;
            }
            self.fs.remove_dir(&dir).map_err(|e| self.io("remove", &dir, e))?;
            parts.pop();
            if self.fsync {
                let parent = parts.join("/");
                self.fs.sync_dir(&parent).map_err(|e| self.io("sync", &parent, e))?;
                synced = true;
            }
        }
        if self.fsync && !synced {
            let dir = self.layout.oid_dir(oid);
            self.fs.sync_dir(&dir).map_err(|e| self.io("sync", &dir, e))?;
        }
        Ok(true)
    }

    /// Every committed blob file, by (oid, tid). Entries outside the layout are skipped.
    pub fn list(&self) -> Result<Vec<(Oid, Tid)>> {
        let mut out = Vec::new();
        let mut todo: Vec<Vec<String>> = vec![Vec::new()];
        while let Some(parts) = todo.pop() {
            let dir = parts.join("/");
            for (name, kind) in self.fs.list(&dir).map_err(|e| self.io("list", &dir, e))? {
                if parts.len() < self.layout.depth() {
                    if kind == EntryKind::Dir && name.starts_with("0x") {
                        let mut p = parts.clone();
                        p.push(name);
                        todo.push(p);
                    }
                    continue;
                }
                let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                if let (Some(oid), Some(tid), EntryKind::File) =
                    (self.layout.parse_oid_dir(&refs), parse_blob_file_name(&name), kind)
                {
                    out.push((oid, tid));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

fn read_all<B: BlobFs>(fs: &B, rel: &str) -> io::Result<Vec<u8>> {
    let f = fs.open_file(rel)?;
    let len = usize::try_from(f.len()?).map_err(io::Error::other)?;
    let mut v = vec![0u8; len];
    f.read_at(&mut v, 0)?;
    Ok(v)
}

/// Writes `.layout` through a temporary name, durably.
fn write_marker<B: BlobFs>(fs: &B, layout: Layout, fsync: bool) -> io::Result<()> {
    let tmp = ".layout.tmp";
    fs.remove_file(tmp)?;
    let f = fs.create_file(tmp)?;
    f.write_at(layout.name().as_bytes(), 0)?;
    if fsync {
        f.sync()?;
    }
    fs.rename(tmp, LAYOUT_MARKER)?;
    if fsync {
        fs.sync_dir("")?;
    }
    Ok(())
}

/// A committed blob file opened for reading (what `sendBlob` streams).
#[derive(Debug)]
pub struct BlobReader<F> {
    file: F,
    len: u64,
    path: PathBuf,
}

impl<F: StorageFile> BlobReader<F> {
    /// The blob's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the blob is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Up to `max` bytes at `offset` (fewer at the end, none past it).
    pub fn read_at(&self, offset: u64, max: usize) -> Result<Bytes> {
        let n = self.len.saturating_sub(offset).min(max as u64) as usize;
        let mut v = vec![0u8; n];
        if n > 0 {
            self.file.read_at(&mut v, offset).map_err(|e| StorageError::Io {
                op: "read",
                path: self.path.display().to_string(),
                source: e,
            })?;
        }
        Ok(Bytes::from(v))
    }

    /// The whole blob.
    pub fn read_all(&self) -> Result<Bytes> {
        self.read_at(0, usize::try_from(self.len).unwrap_or(usize::MAX))
    }

    /// The blob in chunks of `size` bytes ([`BLOB_CHUNK`] for `sendBlob`); an empty blob gives
    /// no chunk.
    pub fn chunks(&self, size: usize) -> impl Iterator<Item = Result<Bytes>> + '_ {
        let size = size.max(1);
        (0..self.len.div_ceil(size as u64)).map(move |i| self.read_at(i * size as u64, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_names_round_trip() {
        let (o, t) = (Oid::new(0x0102), Tid::new(0x03ff_0000_0000_0001));
        let n = staged_name(o, t);
        assert_eq!(n, "tmp/0000000000000102-03ff000000000001.staged");
        assert_eq!(parse_staged(n.strip_prefix("tmp/").expect("tmp")), Some((o, t)));
        assert_eq!(parse_staged("upload-3.tmp"), None);
        assert_eq!(parse_staged("0102-0001.staged"), None);
    }
}
