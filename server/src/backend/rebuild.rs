//! The files of a local storage's rebuild (`RebuildBegin` … `RebuildCommit`), and how a
//! commit replaces the old storage so that a crash at any point leaves a complete one.
//!
//! # Layout
//! Beside the configured `Data.fs` and blob directory `blobs`:
//!
//! ```text
//!   Data.fs.rebuild          the new storage being written (with its own .lock, .zr-index, …)
//!   blobs.rebuild/           its blob directory
//!   Data.fs.rebuild-commit   marker: the rebuild is complete and durable; the swap is under way
//!   blobs.old/               the old blob directory, moved aside during the swap
//! ```
//!
//! # The swap (commit), and what an open finds after a crash
//! A file and a directory cannot be replaced together in one rename, so the commit is made
//! atomic by the marker, written (and synced) once the new storage is closed and durable:
//!
//! 1. `Data.fs.rebuild` and its blobs are durable (the storage was closed, `Data.fs.rebuild`
//!    fsynced; with fsync off the blob tree is synced too); write and sync the marker.
//! 2. Remove the old index cache `Data.fs.zr-index` (it must never describe the new file).
//! 3. Move `blobs` to `blobs.old`, `blobs.rebuild` to `blobs`.
//! 4. Rename `Data.fs.rebuild` over `Data.fs`, its index cache to `Data.fs.zr-index`; sync the
//!    directories.
//! 5. Remove the marker, then `blobs.old` and the rebuild's other files.
//!
//! Every step after 1 is idempotent and checks what is there ([`RebuildFiles::roll_forward`]).
//! An open ([`RebuildFiles::settle`], under the storage's lock) finds either
//! * the marker: the new storage is complete, so the swap is finished (roll forward); or
//! * no marker: any rebuild files are leftovers of a rebuild that never committed (or of a swap
//!   whose step 5 was cut short): they are removed, `Data.fs` and `blobs` are the old storage,
//!   untouched (or already the new one, complete).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Suffix of the storage being rebuilt and of its blob directory.
const REBUILD: &str = ".rebuild";
/// Suffix of the commit marker (beside `Data.fs`).
const MARKER: &str = ".rebuild-commit";
/// Suffix of the old blob directory during a swap.
const OLD: &str = ".old";

/// What an open found of an earlier rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Nothing: no rebuild was under way.
    Nothing,
    /// The leftovers of an unfinished rebuild were removed; the old storage stays.
    Discarded,
    /// A swap interrupted after its marker was finished: the new storage is in place.
    Completed,
}

/// The paths of a storage and of its rebuild.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildFiles {
    /// `Data.fs`.
    path: PathBuf,
    /// The blob directory, resolved against the directory of `Data.fs` when relative.
    blob_dir: Option<PathBuf>,
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn ctx<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |e| io::Error::new(e.kind(), format!("cannot {op} {}: {e}", path.display()))
}

fn exists(p: &Path) -> io::Result<bool> {
    p.try_exists().map_err(ctx("stat", p))
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir).and_then(|f| f.sync_all()).map_err(ctx("sync directory", dir))
}

fn sync_file(p: &Path) -> io::Result<()> {
    fs::File::open(p).and_then(|f| f.sync_all()).map_err(ctx("sync", p))
}

/// Syncs every file and directory under `dir` (and `dir`).
fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir).map_err(ctx("list", dir))? {
        let entry = entry.map_err(ctx("list", dir))?;
        let p = entry.path();
        if entry.file_type().map_err(ctx("stat", &p))?.is_dir() {
            sync_tree(&p)?;
        } else {
            sync_file(&p)?;
        }
    }
    sync_dir(dir)
}

fn remove_dir_if_any(p: &Path) -> io::Result<bool> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ctx("remove", p)(e)),
    }
}

fn remove_file_if_any(p: &Path) -> io::Result<bool> {
    match fs::remove_file(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ctx("remove", p)(e)),
    }
}

fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot rename {} to {}: {e}", from.display(), to.display()))
    })
}

impl RebuildFiles {
    /// The rebuild paths of the storage at `path` with blob directory `blob_dir`.
    pub fn new(path: &Path, blob_dir: Option<&Path>) -> RebuildFiles {
        let blob_dir = blob_dir.map(|b| if b.is_relative() { parent(path).join(b) } else { b.to_path_buf() });
        RebuildFiles { path: path.to_path_buf(), blob_dir }
    }

    /// `Data.fs.rebuild`.
    pub fn rebuild_path(&self) -> PathBuf {
        with_suffix(&self.path, REBUILD)
    }

    /// `blobs.rebuild`, when the storage keeps blobs.
    pub fn rebuild_blob_dir(&self) -> Option<PathBuf> {
        self.blob_dir.as_deref().map(|b| with_suffix(trim(b), REBUILD))
    }

    fn old_blob_dir(&self) -> Option<PathBuf> {
        self.blob_dir.as_deref().map(|b| with_suffix(trim(b), OLD))
    }

    fn marker(&self) -> PathBuf {
        with_suffix(&self.path, MARKER)
    }

    fn dir(&self) -> PathBuf {
        parent(&self.path)
    }

    /// The files of the rebuilt storage in the directory of `Data.fs`: `Data.fs.rebuild` and
    /// every `Data.fs.rebuild.*` (its lock, index cache, saved tails, pack file).
    fn rebuild_storage_files(&self) -> io::Result<Vec<PathBuf>> {
        let Some(name) = self.rebuild_path().file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            return Ok(Vec::new());
        };
        let dir = self.dir();
        let dotted = format!("{name}.");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(ctx("list", &dir))? {
            let entry = entry.map_err(ctx("list", &dir))?;
            let n = entry.file_name();
            if n.to_str().is_some_and(|n| n == name || n.starts_with(&dotted)) {
                out.push(entry.path());
            }
        }
        Ok(out)
    }

    /// Removes an unfinished rebuild (`Data.fs.rebuild*`, `blobs.rebuild`) and a leftover
    /// `blobs.old`. Returns whether there was anything to remove. Never touches the marker.
    pub fn discard(&self) -> io::Result<bool> {
        let mut any = false;
        for p in self.rebuild_storage_files()? {
            any |= remove_file_if_any(&p)?;
        }
        for d in [self.rebuild_blob_dir(), self.old_blob_dir()].into_iter().flatten() {
            any |= remove_dir_if_any(&d)?;
        }
        if any {
            sync_dir(&self.dir())?;
        }
        Ok(any)
    }

    /// Replaces the storage by the rebuilt one (closed: `Data.fs.rebuild` and its blob
    /// directory complete). Steps 1–5 of the module documentation; the caller holds the
    /// storage's lock. `sync_blobs`: sync the new blob tree first (fsync off: its files were
    /// never synced).
    pub fn swap(&self, sync_blobs: bool) -> io::Result<()> {
        let new = self.rebuild_path();
        sync_file(&new)?;
        if let Some(b) = self.rebuild_blob_dir() {
            if sync_blobs && exists(&b)? {
                sync_tree(&b)?;
            }
        }
        let marker = self.marker();
        let f = fs::File::create(&marker).map_err(ctx("create", &marker))?;
        f.sync_all().map_err(ctx("sync", &marker))?;
        drop(f);
        sync_dir(&self.dir())?;
        self.roll_forward()
    }

    /// Steps 2–5, each skipped when already done.
    fn roll_forward(&self) -> io::Result<()> {
        let dir = self.dir();
        let new = self.rebuild_path();
        let cache = PathBuf::from(format!("{}.zr-index", self.path.display()));
        let new_cache = PathBuf::from(format!("{}.zr-index", new.display()));
        let new_there = exists(&new)?;
        if new_there && remove_file_if_any(&cache)? {
            sync_dir(&dir)?;
        }
        if let (Some(blobs), Some(rebuilt), Some(old)) =
            (self.blob_dir.as_deref(), self.rebuild_blob_dir(), self.old_blob_dir())
        {
            if exists(&rebuilt)? {
                if exists(blobs)? {
                    remove_dir_if_any(&old)?;
                    rename(blobs, &old)?;
                }
                rename(&rebuilt, blobs)?;
                sync_dir(&parent(blobs))?;
            }
        }
        if new_there {
            rename(&new, &self.path)?;
        }
        if exists(&new_cache)? && !exists(&new)? {
            rename(&new_cache, &cache)?;
        }
        sync_dir(&dir)?;
        remove_file_if_any(&self.marker())?;
        sync_dir(&dir)?;
        self.discard()?;
        Ok(())
    }

    /// At open, under the storage's lock: finishes an interrupted swap or removes the leftovers
    /// of an unfinished rebuild (see the module documentation).
    pub fn settle(&self) -> io::Result<Settled> {
        if exists(&self.marker())? {
            self.roll_forward()?;
            tracing::warn!(path = %self.path.display(), "finished the swap of a rebuilt storage interrupted by a crash");
            return Ok(Settled::Completed);
        }
        if self.discard()? {
            tracing::warn!(path = %self.path.display(), "removed the files of an unfinished rebuild (the storage is unchanged)");
            return Ok(Settled::Discarded);
        }
        Ok(Settled::Nothing)
    }
}

/// `blobs/` → `blobs` (a trailing separator would put the suffix inside the directory).
fn trim(p: &Path) -> &Path {
    p.components().as_path()
}
