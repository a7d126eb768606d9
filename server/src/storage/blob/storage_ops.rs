//! The storage's blob operations: uploads, blob stores in a transaction, reads of committed
//! blobs, the hooks the transaction and undo code call, and the recovery of `tmp/` at open.

use super::layout::TMP_DIR;
use super::{
    is_blob_record, join, lock, parse_staged, BlobFs, BlobReader, BlobRecovery, BlobStore, BlobSyncs,
    EntryKind, UploadId,
};
use crate::storage::engine::Storage;
use crate::storage::error::{Result, StorageError};
use crate::storage::file::{StorageDir, StorageFile};
use std::io;
use std::path::PathBuf;
use zeoraid_core::ids::{Oid, Tid};

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
    /// `openCommittedBlobFile`; ZEO's `sendBlob` streams it in [`BLOB_CHUNK`](super::BLOB_CHUNK)s).
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
