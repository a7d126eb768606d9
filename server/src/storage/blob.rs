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
//! 2. **Store** ([`Storage::store_blob`], [`Storage::restore_blob`]): inside the
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
//!   No record names them, [`Storage::blob_path`] refuses tids above the last committed one,
//!   and a later restore of the same revision replaces them.
//!
//! With fsync off, crash consistency of `Data.fs` holds, but the blob of one of the last
//! transactions may be missing or incomplete after a power cut (never after a process crash).
//!
//! # For pack
//! [`BlobStore::revisions`] lists the blob revisions of an object and
//! [`BlobStore::remove_revision`] removes one (pruning directories left empty, serialised with
//! commits that create them); [`BlobStore::list`] walks every committed blob file.

mod fs;
pub mod layout;

pub use fs::{BlobFs, EntryKind, RealBlobFs};
pub use layout::{is_blob_record, Layout};

use super::engine::Storage;
use super::error::{OpenError, Result, StorageError};
use super::file::{StorageDir, StorageFile};
use bytes::Bytes;
use layout::{blob_file_name, parse_blob_file_name, LAYOUT_MARKER, TMP_DIR};
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
    /// writable. Does not look into `tmp/`: [`Storage::open`] does that once `Data.fs` is
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

    // ---- uploads --------------------------------------------------------------------------

    /// Starts an upload: an empty temporary file in `tmp/`.
    pub fn begin_upload(&self) -> Result<UploadId> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        let mut u = lock(&self.uploads);
        loop {
            let n = u.0;
            u.0 += 1;
            let rel = format!("{TMP_DIR}/upload-{n}.tmp");
            match self.fs.create_file(&rel) {
                Ok(file) => {
                    u.1.insert(n, Arc::new(Mutex::new(Upload { rel, file, len: 0 })));
                    return Ok(UploadId(n));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(self.io("create", &rel, e)),
            }
        }
    }

    fn upload(&self, id: UploadId) -> Result<Arc<Mutex<Upload<B::File>>>> {
        lock(&self.uploads).1.get(&id.0).cloned().ok_or(StorageError::UnknownUpload(id.0))
    }

    /// Appends a chunk to an upload.
    pub fn append(&self, id: UploadId, chunk: &[u8]) -> Result<()> {
        let up = self.upload(id)?;
        let mut up = lock(&up);
        if !chunk.is_empty() {
            up.file.write_at(chunk, up.len).map_err(|e| self.io("write", &up.rel, e))?;
            up.len += chunk.len() as u64;
        }
        Ok(())
    }

    /// Bytes uploaded so far.
    pub fn upload_len(&self, id: UploadId) -> Result<u64> {
        let up = self.upload(id)?;
        let len = lock(&up).len;
        Ok(len)
    }

    /// Drops an upload and its file.
    pub fn abandon(&self, id: UploadId) -> Result<()> {
        let up = lock(&self.uploads).1.remove(&id.0).ok_or(StorageError::UnknownUpload(id.0))?;
        let rel = lock(&up).rel.clone();
        self.fs.remove_file(&rel).map_err(|e| self.io("remove", &rel, e))
    }

    /// Drops every upload (at close).
    pub fn abandon_all(&self) {
        let ids: Vec<u64> = lock(&self.uploads).1.keys().copied().collect();
        for id in ids {
            if let Err(e) = self.abandon(UploadId(id)) {
                tracing::warn!(error = %e, "could not remove an abandoned blob upload");
            }
        }
    }

    fn take_upload(&self, id: UploadId) -> Result<Upload<B::File>> {
        let up = lock(&self.uploads).1.remove(&id.0).ok_or(StorageError::UnknownUpload(id.0))?;
        match Arc::try_unwrap(up) {
            Ok(m) => Ok(m.into_inner().unwrap_or_else(|p| p.into_inner())),
            Err(shared) => {
                // An append is still running on another thread: wait for it, then copy out.
                let g = lock(&shared);
                let file = self.fs.open_file(&g.rel).map_err(|e| self.io("open", &g.rel, e))?;
                Ok(Upload { rel: g.rel.clone(), file, len: g.len })
            }
        }
    }

    // ---- staging (the writer lock is held) --------------------------------------------------

    fn staged_for(&self, tid: Tid) -> MutexGuard<'_, Staged<B::File>> {
        let mut s = lock(&self.staged);
        if s.tid != Some(tid) {
            s.tid = Some(tid);
            s.files.clear();
        }
        s
    }

    /// Whether transaction `tid` has staged blob files.
    pub(crate) fn has_staged(&self, tid: Tid) -> bool {
        let s = lock(&self.staged);
        s.tid == Some(tid) && !s.files.is_empty()
    }

    /// Stages upload `id` as the blob of revision `tid` of `oid`.
    fn stage_upload(&self, tid: Tid, oid: Oid, id: UploadId) -> Result<()> {
        let up = self.take_upload(id)?;
        let to = staged_name(oid, tid);
        if let Err(e) = self.fs.rename(&up.rel, &to) {
            let _ = self.fs.remove_file(&up.rel);
            return Err(self.io("rename", &up.rel, e));
        }
        self.staged_for(tid).files.insert(oid, Some(up.file));
        Ok(())
    }

    /// Stages, as the blob of revision `tid` of `oid`, the committed blob of revision `from`:
    /// a hard link, or a copy where linking fails.
    fn stage_copy(&self, tid: Tid, oid: Oid, from: Tid) -> Result<()> {
        let src = self.layout.blob_file(oid, from);
        let to = staged_name(oid, tid);
        self.fs.remove_file(&to).map_err(|e| self.io("remove", &to, e))?;
        let file = match self.fs.hard_link(&src, &to) {
            Ok(()) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(self.missing(oid, from)),
            Err(e) => {
                tracing::debug!(error = %e, from = %src, "hard link failed; copying the blob");
                Some(self.copy(&src, &to)?)
            }
        };
        self.staged_for(tid).files.insert(oid, file);
        Ok(())
    }

    fn copy(&self, from: &str, to: &str) -> Result<B::File> {
        let src = self.fs.open_file(from).map_err(|e| self.io("open", from, e))?;
        let len = src.len().map_err(|e| self.io("stat", from, e))?;
        let dst = self.fs.create_file(to).map_err(|e| self.io("create", to, e))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(buf.len() as u64) as usize;
            src.read_at(&mut buf[..n], at).map_err(|e| self.io("read", from, e))?;
            dst.write_at(&buf[..n], at).map_err(|e| self.io("write", to, e))?;
            at += n as u64;
        }
        Ok(dst)
    }

    /// Vote: makes the staged files and their names durable.
    fn vote(&self, tid: Tid) -> Result<()> {
        let s = lock(&self.staged);
        if !self.fsync || s.tid != Some(tid) || s.files.is_empty() {
            return Ok(());
        }
        for (&oid, f) in &s.files {
            if let Some(f) = f {
                f.sync().map_err(|e| self.io("sync", &staged_name(oid, tid), e))?;
            }
        }
        self.fs.sync_dir(TMP_DIR).map_err(|e| self.io("sync", TMP_DIR, e))
    }

    /// Finish (after the commit is durable in `Data.fs`): moves the staged blobs into place.
    fn finish(&self, tid: Tid) -> Result<()> {
        let oids: Vec<Oid> = {
            let mut s = lock(&self.staged);
            if s.tid != Some(tid) {
                return Ok(());
            }
            s.tid = None;
            std::mem::take(&mut s.files).into_keys().collect()
        };
        for oid in oids {
            self.install(oid, tid, &staged_name(oid, tid))?;
        }
        Ok(())
    }

    /// Abort: removes the staged blobs (best effort: leftovers are cleaned at the next open).
    fn abort(&self) {
        let (tid, oids): (Option<Tid>, Vec<Oid>) = {
            let mut s = lock(&self.staged);
            (s.tid.take(), std::mem::take(&mut s.files).into_keys().collect())
        };
        let Some(tid) = tid else { return };
        for oid in oids {
            let rel = staged_name(oid, tid);
            if let Err(e) = self.fs.remove_file(&rel) {
                tracing::warn!(path = %self.fs.path(&rel).display(), error = %e, "could not remove the staged blob of an aborted transaction");
            }
        }
    }

    /// Finish of a transaction with a deferred sync (see [`Storage::defer_sync`]), before its
    /// commit is durable: moves the staged blobs into place without syncing anything, and
    /// returns what the round that makes the transaction durable must sync first: the blob
    /// files, then the directories whose entries changed (deepest first).
    fn finish_unsynced(&self, tid: Tid) -> Result<BlobSyncs> {
        let oids: Vec<Oid> = {
            let mut s = lock(&self.staged);
            if s.tid != Some(tid) {
                return Ok(BlobSyncs::default());
            }
            s.tid = None;
            std::mem::take(&mut s.files).into_keys().collect()
        };
        let mut out = BlobSyncs::default();
        for oid in oids {
            let (file, dirs) = self.install_with(oid, tid, &staged_name(oid, tid), false)?;
            out.files.push(file);
            out.dirs.extend(dirs);
        }
        Ok(out)
    }

    /// Syncs what [`BlobStore::finish_unsynced`] left (with fsync; a round calls it before it
    /// writes the status bytes).
    pub(crate) fn sync_installed(&self, syncs: &BlobSyncs) -> Result<()> {
        if !self.fsync {
            return Ok(());
        }
        for f in &syncs.files {
            self.fs.open_file(f).and_then(|h| h.sync()).map_err(|e| self.io("sync", f, e))?;
        }
        let mut done = std::collections::BTreeSet::new();
        for d in &syncs.dirs {
            if done.insert(d.as_str()) {
                self.fs.sync_dir(d).map_err(|e| self.io("sync", d, e))?;
            }
        }
        Ok(())
    }

    /// Moves `staged` to the committed blob file of (`oid`, `tid`), creating directories, and
    /// (with fsync) makes every new entry durable.
    fn install(&self, oid: Oid, tid: Tid, staged: &str) -> Result<()> {
        self.install_with(oid, tid, staged, self.fsync).map(drop)
    }

    /// [`BlobStore::install`], syncing the new entries only if `sync`; returns the blob file and
    /// the directories to sync (deepest first) for a caller that syncs later.
    fn install_with(&self, oid: Oid, tid: Tid, staged: &str, sync: bool) -> Result<(String, Vec<String>)> {
        let _g = lock(&self.dirs);
        let mut dir = String::new();
        let mut to_sync = Vec::new();
        for part in self.layout.oid_dir_parts(oid) {
            let parent = dir.clone();
            dir = join(&dir, &part);
            match self.fs.stat(&dir).map_err(|e| self.io("stat", &dir, e))? {
                Some(EntryKind::Dir) => {}
                Some(EntryKind::File) => {
                    return Err(self.io("create", &dir, io::Error::from(io::ErrorKind::NotADirectory)))
                }
                None => {
                    match self.fs.create_dir(&dir) {
                        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                            return Err(self.io("create", &dir, e))
                        }
                        _ => {}
                    }
                    to_sync.push(parent);
                }
            }
        }
        let target = join(&dir, &blob_file_name(tid));
        self.fs.seal(staged).map_err(|e| self.io("chmod", staged, e))?;
        self.fs.rename(staged, &target).map_err(|e| self.io("rename", staged, e))?;
        to_sync.push(dir);
        to_sync.reverse();
        if sync {
            for d in &to_sync {
                self.fs.sync_dir(d).map_err(|e| self.io("sync", d, e))?;
            }
        }
        Ok((target, to_sync))
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

// ---- the storage's blob operations ------------------------------------------------------------

impl<D: StorageDir> Storage<D> {
    /// The blob store, if the storage was opened with a blob directory.
    pub fn blob_store(&self) -> Option<&BlobStore<D::Blobs>> {
        self.blobs.as_ref()
    }

    fn blobs(&self) -> Result<&BlobStore<D::Blobs>> {
        self.blobs.as_ref().ok_or(StorageError::NoBlobs)
    }

    /// Whether the storage keeps blobs (ZEO's `IBlobStorage`).
    pub fn has_blobs(&self) -> bool {
        self.blobs.is_some()
    }

    /// Starts a blob upload (ZEO's `storeBlobStart`); see [`BlobStore::begin_upload`].
    pub fn begin_upload(&self) -> Result<UploadId> {
        if self.opts.read_only {
            return Err(StorageError::ReadOnly);
        }
        self.blobs()?.begin_upload()
    }

    /// Appends to a blob upload (ZEO's `storeBlobChunk`).
    pub fn append_upload(&self, id: UploadId, chunk: &[u8]) -> Result<()> {
        self.blobs()?.append(id, chunk)
    }

    /// Drops a blob upload.
    pub fn abandon_upload(&self, id: UploadId) -> Result<()> {
        self.blobs()?.abandon(id)
    }

    /// Stores a new revision of `oid` whose blob is the upload `upload`, like
    /// [`Storage::store`] (same serial check). The blob becomes the committed file of the new
    /// revision at finish. The upload is used up whatever the outcome (a conflict drops it).
    pub fn store_blob(&self, oid: Oid, serial: Tid, data: &[u8], upload: UploadId) -> Result<()> {
        let b = self.blobs()?;
        if data.is_empty() {
            let _ = b.abandon(upload);
            return Err(StorageError::EmptyData { oid });
        }
        let r = self.with_txn(|s, txn| {
            s.store_in(txn, oid, serial, data)?;
            b.stage_upload(txn.tid, oid, upload)
        });
        if r.is_err() {
            // Not staged: drop the upload (already gone if staging itself failed).
            let _ = b.abandon(upload);
        }
        r
    }

    /// Restores a revision with a blob (copying from another storage): [`Storage::restore`]
    /// with `data`, and the upload as the blob of revision `serial`. The upload is used up
    /// whatever the outcome.
    pub fn restore_blob(
        &self,
        oid: Oid,
        serial: Tid,
        data: &[u8],
        prev_txn: Option<Tid>,
        upload: UploadId,
    ) -> Result<()> {
        let b = self.blobs()?;
        if data.is_empty() {
            let _ = b.abandon(upload);
            return Err(StorageError::EmptyData { oid });
        }
        let r = self.with_txn(|s, txn| {
            s.restore_in(txn, oid, serial, Some(data), prev_txn)?;
            b.stage_upload(txn.tid, oid, upload)
        });
        if r.is_err() {
            let _ = b.abandon(upload);
        }
        r
    }

    /// The committed blob file of revision `serial` of `oid` (ZODB's `loadBlob`), or
    /// [`StorageError::BlobMissing`] naming the path where it would be.
    pub fn blob_path(&self, oid: Oid, serial: Tid) -> Result<PathBuf> {
        let b = self.blobs()?;
        let rel = b.committed_file(oid, serial, self.last_transaction())?;
        Ok(b.fs.path(&rel))
    }

    /// Opens the committed blob of revision `serial` of `oid` for reading (ZODB's
    /// `openCommittedBlobFile`; ZEO's `sendBlob` streams it in [`BLOB_CHUNK`]s).
    pub fn open_blob(&self, oid: Oid, serial: Tid) -> Result<BlobReader<<D::Blobs as BlobFs>::File>> {
        let b = self.blobs()?;
        let rel = b.committed_file(oid, serial, self.last_transaction())?;
        let file = match b.fs.open_file(&rel) {
            Ok(f) => f,
            // Removed meanwhile (pack).
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(b.missing(oid, serial)),
            Err(e) => return Err(b.io("open", &rel, e)),
        };
        let len = file.len().map_err(|e| b.io("stat", &rel, e))?;
        Ok(BlobReader { file, len, path: b.fs.path(&rel) })
    }

    /// Whether revision `serial` of `oid` has a committed blob file.
    pub fn has_blob(&self, oid: Oid, serial: Tid) -> Result<bool> {
        match self.blob_path(oid, serial) {
            Ok(_) => Ok(true),
            Err(StorageError::BlobMissing { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether committed revision `tid` of `oid` is a blob record.
    fn is_blob_revision(&self, oid: Oid, tid: Tid) -> Result<bool> {
        let c = self.committed();
        let Some(r) = self.find_revision(&c, oid, tid)? else { return Ok(false) };
        Ok(self.record_data(&r, c.end)?.is_some_and(|d| is_blob_record(&d)))
    }

    // ---- hooks of the transaction and undo code ---------------------------------------------

    /// Undo: stages the blobs of the revisions that undo records of `tid` point back to
    /// (`(oid, back-pointer)` pairs), as FileStorage copies them. Every source file is checked
    /// before anything is staged, so a missing one fails the undo without side effects.
    pub(crate) fn stage_undo_blobs(&self, tid: Tid, backs: &[(Oid, u64)]) -> Result<()> {
        let Some(b) = &self.blobs else { return Ok(()) };
        let mut sources = Vec::new();
        {
            let c = self.committed();
            for &(oid, back) in backs {
                if let Some((data, r)) = self.load_back(oid, back, c.end)? {
                    if is_blob_record(&data) {
                        sources.push((oid, r.h.tid));
                    }
                }
            }
        }
        for &(oid, from) in &sources {
            let rel = b.layout.blob_file(oid, from);
            if b.fs.stat(&rel).map_err(|e| b.io("stat", &rel, e))?.is_none() {
                return Err(b.missing(oid, from));
            }
        }
        for (oid, from) in sources {
            b.stage_copy(tid, oid, from)?;
        }
        Ok(())
    }

    /// Vote: makes the staged blobs durable (before `Data.fs` is synced).
    pub(crate) fn vote_blobs(&self, tid: Tid) -> Result<()> {
        self.blobs.as_ref().map_or(Ok(()), |b| b.vote(tid))
    }

    /// Finish, once the commit is durable: moves the staged blobs into place.
    pub(crate) fn finish_blobs(&self, tid: Tid) -> Result<()> {
        self.blobs.as_ref().map_or(Ok(()), |b| b.finish(tid))
    }

    /// Finish of a deferred-sync transaction, before it is durable: moves the staged blobs
    /// into place unsynced; the round that commits it syncs what this returns first.
    pub(crate) fn finish_blobs_unsynced(&self, tid: Tid) -> Result<BlobSyncs> {
        self.blobs.as_ref().map_or(Ok(BlobSyncs::default()), |b| b.finish_unsynced(tid))
    }

    /// Abort: drops the staged blobs.
    pub(crate) fn abort_blobs(&self) {
        if let Some(b) = &self.blobs {
            b.abort();
        }
    }

    /// At open, after `Data.fs` is recovered: completes or discards staged blobs and removes
    /// other leftovers of `tmp/` (see the module documentation).
    pub(crate) fn recover_blobs(&self) -> Result<BlobRecovery> {
        let mut r = BlobRecovery::default();
        let Some(b) = &self.blobs else { return Ok(r) };
        if b.fs.stat(TMP_DIR).map_err(|e| b.io("stat", TMP_DIR, e))? != Some(EntryKind::Dir) {
            return Ok(r);
        }
        let mut entries = b.fs.list(TMP_DIR).map_err(|e| b.io("list", TMP_DIR, e))?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in entries {
            let rel = join(TMP_DIR, &name);
            if kind == EntryKind::Dir {
                tracing::warn!(path = %b.fs.path(&rel).display(), "unexpected directory in the blob directory's tmp/; left alone");
                continue;
            }
            match parse_staged(&name) {
                Some((oid, tid)) if self.is_blob_revision(oid, tid)? => {
                    r.completed += 1;
                    if b.read_only {
                        lock(&b.pending).insert((oid, tid), rel);
                        continue;
                    }
                    tracing::warn!(%oid, %tid, "completing the commit of a blob staged before a crash");
                    b.install(oid, tid, &rel)?;
                }
                staged => {
                    if b.read_only {
                        continue;
                    }
                    if staged.is_some() {
                        r.discarded += 1;
                        tracing::warn!(path = %b.fs.path(&rel).display(), "removing the staged blob of a transaction that did not commit");
                    } else {
                        r.tmp_removed += 1;
                        tracing::warn!(path = %b.fs.path(&rel).display(), "removing a leftover temporary blob file");
                    }
                    b.fs.remove_file(&rel).map_err(|e| b.io("remove", &rel, e))?;
                }
            }
        }
        if !b.read_only && b.fsync && r != BlobRecovery::default() {
            b.fs.sync_dir(TMP_DIR).map_err(|e| b.io("sync", TMP_DIR, e))?;
        }
        Ok(r)
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
