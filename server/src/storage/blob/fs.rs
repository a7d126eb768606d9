//! The blob store's only way to the disk: a small directory-tree trait ([`BlobFs`]) with the
//! real implementation ([`RealBlobFs`]); the in-memory one that can crash is
//! [`MemBlobFs`](crate::storage::MemBlobFs), which shares its operation counter and crash
//! snapshot with a [`MemDir`](crate::storage::MemDir).
//!
//! Paths are relative to the blob directory, with `/` between components; `""` is the blob
//! directory itself.

use super::super::file::StorageFile;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file (or anything else that is not a directory).
    File,
}

/// A directory tree holding a blob directory.
pub trait BlobFs: Send + Sync {
    /// Its files.
    type File: StorageFile;
    /// Creates the blob directory itself (and missing parents), durably. Existing is fine.
    fn create_root(&self) -> io::Result<()>;
    /// What `rel` is, or `None` when it does not exist.
    fn stat(&self, rel: &str) -> io::Result<Option<EntryKind>>;
    /// The entries of directory `rel`, in no particular order.
    fn list(&self, rel: &str) -> io::Result<Vec<(String, EntryKind)>>;
    /// Creates directory `rel` (its parent must exist); [`io::ErrorKind::AlreadyExists`] if
    /// it does.
    fn create_dir(&self, rel: &str) -> io::Result<()>;
    /// Creates the new, empty file `rel` for reading and writing;
    /// [`io::ErrorKind::AlreadyExists`] if it exists.
    fn create_file(&self, rel: &str) -> io::Result<Self::File>;
    /// Opens the existing file `rel` for reading.
    fn open_file(&self, rel: &str) -> io::Result<Self::File>;
    /// Renames file `from` to `to`, atomically replacing `to`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes `to` a second name of file `from`; may fail where hard links are not supported
    /// (the caller then copies).
    fn hard_link(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes file `rel`; a missing file is not an error.
    fn remove_file(&self, rel: &str) -> io::Result<()>;
    /// Removes the empty directory `rel`.
    fn remove_dir(&self, rel: &str) -> io::Result<()>;
    /// Makes the creations, renames and removals of entries of directory `rel` durable.
    fn sync_dir(&self, rel: &str) -> io::Result<()>;
    /// Makes committed file `rel` read-only, as ZODB does with committed blobs.
    fn seal(&self, rel: &str) -> io::Result<()>;
    /// The path of `rel`, as it is shown (and, for real files, opened by other programs).
    fn path(&self, rel: &str) -> PathBuf;
}

/// A blob directory on the real file system.
#[derive(Debug, Clone)]
pub struct RealBlobFs {
    root: PathBuf,
}

impl RealBlobFs {
    /// The blob directory at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> RealBlobFs {
        RealBlobFs { root: root.into() }
    }

    fn join(&self, rel: &str) -> PathBuf {
        let mut p = self.root.clone();
        for c in rel.split('/').filter(|c| !c.is_empty()) {
            p.push(c);
        }
        p
    }
}

#[cfg(unix)]
fn sync_dir_path(p: &Path) -> io::Result<()> {
    fs::File::open(p)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir_path(_p: &Path) -> io::Result<()> {
    // Windows cannot open a directory for syncing; NTFS journals directory changes itself.
    Ok(())
}

fn kind(m: &fs::Metadata) -> EntryKind {
    if m.is_dir() {
        EntryKind::Dir
    } else {
        EntryKind::File
    }
}

impl BlobFs for RealBlobFs {
    type File = super::super::file::RealFile;

    fn create_root(&self) -> io::Result<()> {
        if self.root.is_dir() {
            return Ok(());
        }
        // Create the missing ancestors one by one, syncing each new entry's parent.
        let mut missing = Vec::new();
        let mut p = self.root.as_path();
        while !p.as_os_str().is_empty() && !p.exists() {
            missing.push(p.to_path_buf());
            match p.parent() {
                Some(q) => p = q,
                None => break,
            }
        }
        for d in missing.iter().rev() {
            match fs::create_dir(d) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
            if let Some(parent) = d.parent().filter(|q| !q.as_os_str().is_empty()) {
                sync_dir_path(parent)?;
            }
        }
        Ok(())
    }

    fn stat(&self, rel: &str) -> io::Result<Option<EntryKind>> {
        match fs::symlink_metadata(self.join(rel)) {
            Ok(m) => Ok(Some(kind(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, rel: &str) -> io::Result<Vec<(String, EntryKind)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.join(rel))? {
            let e = e?;
            // Names that are not UTF-8 are no blob files of ZODB's; skip them.
            if let Some(name) = e.file_name().to_str() {
                out.push((name.to_owned(), kind(&e.metadata()?)));
            }
        }
        Ok(out)
    }

    fn create_dir(&self, rel: &str) -> io::Result<()> {
        fs::create_dir(self.join(rel))
    }

    fn create_file(&self, rel: &str) -> io::Result<Self::File> {
        let f = fs::OpenOptions::new().read(true).write(true).create_new(true).open(self.join(rel))?;
        Ok(super::super::file::RealFile::from_std(f))
    }

    fn open_file(&self, rel: &str) -> io::Result<Self::File> {
        Ok(super::super::file::RealFile::from_std(fs::File::open(self.join(rel))?))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let to = self.join(to);
        #[cfg(windows)]
        if to.exists() {
            // A committed (read-only) target cannot be replaced on Windows until writable.
            let mut p = fs::metadata(&to)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            p.set_readonly(false);
            fs::set_permissions(&to, p)?;
        }
        fs::rename(self.join(from), to)
    }

    fn hard_link(&self, from: &str, to: &str) -> io::Result<()> {
        fs::hard_link(self.join(from), self.join(to))
    }

    fn remove_file(&self, rel: &str) -> io::Result<()> {
        let p = self.join(rel);
        #[cfg(windows)]
        if let Ok(m) = fs::metadata(&p) {
            let mut perm = m.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            let _ = fs::set_permissions(&p, perm);
        }
        match fs::remove_file(p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn remove_dir(&self, rel: &str) -> io::Result<()> {
        fs::remove_dir(self.join(rel))
    }

    fn sync_dir(&self, rel: &str) -> io::Result<()> {
        sync_dir_path(&self.join(rel))
    }

    fn seal(&self, rel: &str) -> io::Result<()> {
        let p = self.join(rel);
        let mut perm = fs::metadata(&p)?.permissions();
        if !perm.readonly() {
            perm.set_readonly(true);
            fs::set_permissions(&p, perm)?;
        }
        Ok(())
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.join(rel)
    }
}
