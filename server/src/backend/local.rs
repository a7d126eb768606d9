//! A local FileStorage served by dedicated threads. (API skeleton; being implemented.)

use std::path::PathBuf;

use zeoraid_core::zeo::backend::{BackendReqId, BackendRequest};
use zeoraid_core::zeo::events::StorageSeed;

use super::Sink;
use crate::storage::{OpenError, OpenReport, StorageError};

/// How to open a local storage.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalConfig {
    /// `Data.fs`.
    pub path: PathBuf,
    /// The blob directory, if blobs are kept.
    pub blob_dir: Option<PathBuf>,
    /// Refuse writes.
    pub read_only: bool,
    /// fsync at every commit.
    pub fsync: bool,
    /// Threads serving reads.
    pub read_threads: usize,
}

/// A local backend failed to start or stop.
#[derive(Debug, thiserror::Error)]
pub enum LocalBackendError {
    /// The storage could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Reading the storage's state failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A thread could not be started.
    #[error("cannot start a storage thread: {0}")]
    Thread(std::io::Error),
}

/// A local storage and the threads that serve it.
pub struct LocalBackend {
    _sink: Sink,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend").finish_non_exhaustive()
    }
}

impl LocalBackend {
    /// Opens the storage `name` and starts its threads; outcomes go to `sink`.
    pub fn open(
        name: &str,
        cfg: &LocalConfig,
        sink: Sink,
    ) -> Result<(LocalBackend, OpenReport), LocalBackendError> {
        let _ = (name, cfg, sink);
        Err(LocalBackendError::Thread(std::io::Error::other("not implemented yet")))
    }

    /// What the ZEO front needs to start (last tid, the newest `queue` commits, size, …).
    pub fn seed(&self, queue: usize) -> Result<StorageSeed, LocalBackendError> {
        let _ = queue;
        Err(LocalBackendError::Thread(std::io::Error::other("not implemented yet")))
    }

    /// Queues a request; its outcome goes to the sink.
    pub fn submit(&self, id: BackendReqId, request: BackendRequest) {
        let _ = (id, request);
    }

    /// Stops the threads (after the requests already queued), saves the index cache and
    /// closes the storage.
    pub fn close(self) -> Result<(), LocalBackendError> {
        Ok(())
    }
}
