//! The pack's swap: the `Data.fs` handle a pack replaces ([`SwapFile`]), the pack's shared
//! state that holds back `begin` while the pack finishes ([`PackState`]), and the swap itself,
//! under the writer lock (see the concurrency and crash-safety notes in `pack.rs`).

use super::copy::Copier;
use super::{pack_file_name, PackReport};
use crate::storage::cache;
use crate::storage::engine::Storage;
use crate::storage::error::{Result, StorageError};
use crate::storage::file::{OpenMode, StorageDir, StorageFile};
use crate::storage::txn::Writer;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, RwLock};

// ---- the swappable file ----------------------------------------------------------------------

/// The open `Data.fs`, replaceable by a pack, with the generation of the current file.
///
/// It implements [`StorageFile`] by delegating to the current file, so the engine reads and
/// writes through it unchanged. Invariant: the file is only replaced while the committed-state
/// write lock is held (and the writer lock, with no transaction in progress), so a reader that
/// holds the committed-state read lock reads one file throughout.
pub(crate) struct SwapFile<F> {
    current: RwLock<(F, u64)>,
}

impl<F: StorageFile> SwapFile<F> {
    pub(crate) fn new(file: F) -> SwapFile<F> {
        SwapFile { current: RwLock::new((file, 0)) }
    }

    fn get(&self) -> std::sync::RwLockReadGuard<'_, (F, u64)> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The generation of the current file: 0 at open, one more after each pack.
    pub(crate) fn generation(&self) -> u64 {
        self.get().1
    }

    /// Replaces the file; returns the new generation.
    fn replace(&self, file: F) -> u64 {
        let mut c = self.current.write().unwrap_or_else(PoisonError::into_inner);
        c.0 = file;
        c.1 += 1;
        c.1
    }
}

impl<F: StorageFile> StorageFile for SwapFile<F> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.get().0.read_at(buf, offset)
    }

    fn try_read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        self.get().0.try_read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.get().0.write_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        self.get().0.len()
    }

    fn sync(&self) -> io::Result<()> {
        self.get().0.sync()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.get().0.set_len(len)
    }
}

// ---- coordination with the writer ------------------------------------------------------------

/// The pack's shared state inside a [`Storage`].
#[derive(Debug, Default)]
pub(crate) struct PackState {
    /// A pack is running (at most one).
    pub(super) running: AtomicBool,
    /// The pack wants, or holds, the writer with no transaction in progress: `begin` waits.
    /// Only changed while the writer lock is held.
    draining: AtomicBool,
    /// Signalled (with the writer lock) when a transaction ends or the pack stops draining.
    pub(super) idle: Condvar,
    /// Serialises index cache writes with the file swap, so no cache of the old file is
    /// written after the pack removed it.
    cache_lock: Mutex<()>,
}

impl PackState {
    /// Waits (releasing the writer lock meanwhile) while a pack is finishing; `begin` calls it.
    pub(crate) fn admit<'a>(&self, mut w: MutexGuard<'a, Writer>) -> MutexGuard<'a, Writer> {
        while self.draining.load(Ordering::Acquire) {
            w = self.idle.wait(w).unwrap_or_else(PoisonError::into_inner);
        }
        w
    }

    /// Tells a waiting pack that the transaction ended; called with the writer lock held.
    pub(crate) fn writer_idle(&self) {
        self.idle.notify_all();
    }

    /// Held while the index cache file is written or replaced.
    pub(crate) fn cache_lock(&self) -> MutexGuard<'_, ()> {
        self.cache_lock.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Clears `running` when the pack ends, however it ends.
pub(super) struct Running<'a>(pub(super) &'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Holds back `begin` while alive; dropped (even by a panic) before the writer lock is
/// released, it lets the waiting `begin`s go on.
pub(super) struct Draining<'a>(&'a PackState);

impl<'a> Draining<'a> {
    pub(super) fn start(p: &'a PackState) -> Draining<'a> {
        p.draining.store(true, Ordering::Release);
        Draining(p)
    }
}

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        self.0.draining.store(false, Ordering::Release);
        self.0.idle.notify_all();
    }
}

impl<D: StorageDir> Storage<D> {
    /// Under the writer lock with no transaction in progress: copies the last commits, then
    /// replaces `Data.fs` and the readers' state.
    pub(super) fn swap_in(
        &self,
        w: &mut Writer,
        cp: &mut Copier<D::File>,
        copied: u64,
        report: &mut PackReport,
    ) -> Result<()> {
        if let Some(why) = &w.broken {
            return Err(StorageError::Broken(why.clone()));
        }
        // No round may write status bytes into the old file once it is replaced; and every
        // transaction pending now is made durable first, so that the copy holds its status.
        let _round = self.group.hold();
        self.sync_round_held()?;
        let (end, last) = {
            let c = self.committed();
            (c.end, c.last_tid)
        };
        let n = self.copy_rest(cp, copied, end, report)?;
        report.transactions_kept += n;
        report.transactions_committed_during_pack += n;
        if cp.last_tid != last {
            return Err(StorageError::corrupt(
                end,
                format!("last transaction {last} in the packed copy"),
                cp.last_tid.to_string(),
            ));
        }
        cp.flush()?;
        cp.file.sync().map_err(cp.io("sync"))?;
        let new_end = cp.pos();
        let pack_name = pack_file_name(&self.name);
        let cache_name = cache::file_name(&self.name);
        let dir_io = |op: &'static str, name: &str| {
            let path = self.dir.display(name);
            move |source| StorageError::Io { op, path, source }
        };
        let _cache = self.pack.cache_lock();
        // The cache describes the old file: it must be gone before the new file has the name.
        self.dir.remove(&cache_name).map_err(dir_io("remove", &cache_name))?;
        self.dir.sync().map_err(dir_io("sync directory of", &cache_name))?;
        self.dir.rename(&pack_name, &self.name).map_err(dir_io("rename", &pack_name))?;
        // The point of no return: the name is the new file's (or will be after a crash, or
        // the old file, which holds the same transactions).
        let new_file = self.dir.open(&self.name, OpenMode::Write);
        let new_file = match new_file {
            Ok(f) => f,
            Err(e) => {
                let why = format!("the packed file could not be reopened after the rename: {e}");
                tracing::warn!(path = %self.path, error = %e, "pack: cannot reopen the renamed file; storage is broken until reopened");
                w.broken = Some(why.clone());
                return Err(StorageError::Broken(why));
            }
        };
        {
            let mut c = self.committed_mut();
            report.bytes_before = c.end;
            self.file.replace(new_file);
            c.index = std::mem::take(&mut cp.index);
            c.end = new_end;
            c.durable_end = new_end;
        }
        report.bytes_after = new_end;
        if let Err(e) = self.dir.sync() {
            // Commits now go to the new file; if the rename is lost in a crash they would be
            // lost with it. Refuse them until a reopen settles which file is Data.fs.
            tracing::warn!(path = %self.path, error = %e, "pack: cannot sync the directory after the rename; storage is broken until reopened");
            let why = format!("directory sync after the pack's rename failed: {e}");
            w.broken = Some(why.clone());
            return Err(StorageError::Broken(why));
        }
        Ok(())
    }
}
