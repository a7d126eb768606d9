//! Uploads (`tmp/upload-<n>.tmp`), staging in a transaction (the writer lock is held), and
//! the commit of staged blob files: synced at vote, moved into place at finish, removed at
//! abort (see "Life of a blob" in `blob.rs`).

use super::layout::{blob_file_name, TMP_DIR};
use super::{join, lock, staged_name, BlobFs, BlobStore, BlobSyncs, EntryKind, Staged, Upload, UploadId};
use crate::storage::error::{Result, StorageError};
use crate::storage::file::StorageFile;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use zeoraid_core::ids::{Oid, Tid};

impl<B: BlobFs> BlobStore<B> {
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
    pub(super) fn stage_upload(&self, tid: Tid, oid: Oid, id: UploadId) -> Result<()> {
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
    pub(super) fn stage_copy(&self, tid: Tid, oid: Oid, from: Tid) -> Result<()> {
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
    pub(super) fn vote(&self, tid: Tid) -> Result<()> {
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
    pub(super) fn finish(&self, tid: Tid) -> Result<()> {
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
    pub(super) fn abort(&self) {
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

    /// Finish of a transaction with a deferred sync (see [`Storage::defer_sync`](crate::storage::Storage::defer_sync)), before its
    /// commit is durable: moves the staged blobs into place without syncing anything, and
    /// returns what the round that makes the transaction durable must sync first: the blob
    /// files, then the directories whose entries changed (deepest first).
    pub(super) fn finish_unsynced(&self, tid: Tid) -> Result<BlobSyncs> {
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
    pub(super) fn install(&self, oid: Oid, tid: Tid, staged: &str) -> Result<()> {
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
}
