//! The simulated machines' disks: each backend host's storage and the RAID host's state live in
//! a crashable in-memory directory ([`MemDir`]) that outlives the host's software.
//!
//! A host *crash* (power cut, the nemesis' `crash-backend`/`crash-raid`) replaces the directory
//! with what a disk holds after it: [`CrashMode::DropUnsynced`] (writes not yet fsynced are
//! lost). A process *restart* (`bounce` without a crash) keeps everything, as the OS page cache
//! would. The next incarnation of the host opens whatever the directory holds then.
//!
//! Backend hosts serve the production local backend ([`LocalBackend`]) over their directory,
//! run inline on the host's task ([`Exec::Inline`]: no OS thread escapes the simulation) with
//! fsync on (group commit): what a backend answered `Finished` survives its host's crash.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use zeoraid_core::zeo::backend::{BackendIterId, BackendOutcome, BackendReqId, BackendRequest, WholeTxn};
use zeoraid_server::backend::local::{Exec, LocalBackend, LocalConfig};
use zeoraid_server::backend::Sink;
use zeoraid_server::storage::{CrashMode, MemDir};

/// One machine's disk, surviving its crashes (clones share it).
#[derive(Debug, Clone, Default)]
pub struct Disk(Arc<Mutex<MemDir>>);

impl Disk {
    fn lock(&self) -> MutexGuard<'_, MemDir> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The directory as it is now (what the next incarnation of the host opens).
    pub fn current(&self) -> MemDir {
        self.lock().clone()
    }

    /// The operator replaces the storage with an empty one (a new disk).
    pub fn wipe(&self) {
        *self.lock() = MemDir::new();
    }

    /// A power cut: only what was synced survives.
    pub fn crash(&self) {
        let mut dir = self.lock();
        let after = dir.crash(CrashMode::DropUnsynced);
        *dir = after;
    }
}

/// The local storage settings of a backend host: `Data.fs` in its disk, fsync on, no blobs.
pub fn backend_config() -> LocalConfig {
    LocalConfig::in_dir(true, false)
}

/// Opens the backend host's storage over `disk`, delivering to `sink`.
pub fn open_backend(name: &str, disk: &Disk, sink: Sink) -> Result<LocalBackend<MemDir>, String> {
    LocalBackend::open_in(name, disk.current(), &backend_config(), sink, Exec::Inline)
        .map(|(b, _report)| b)
        .map_err(|e| format!("{name}: cannot open the storage: {e}"))
}

/// The whole committed history of the storage on `disk`, oldest first (read after the run,
/// with the production backend's own iterator).
pub fn history(name: &str, disk: &Disk) -> Result<Vec<WholeTxn>, String> {
    let got: Arc<Mutex<Vec<BackendOutcome>>> = Arc::default();
    let sink: Sink = {
        let got = Arc::clone(&got);
        Arc::new(move |_, outcome| got.lock().unwrap_or_else(PoisonError::into_inner).push(outcome))
    };
    let backend = open_backend(name, disk, sink)?;
    let take = || got.lock().unwrap_or_else(PoisonError::into_inner).pop();
    let iter = BackendIterId(1);
    backend.submit(BackendReqId(1), BackendRequest::IterStart { iter, start: None, stop: None });
    match take() {
        Some(BackendOutcome::Nil) => {}
        other => return Err(format!("{name}: iterator start answered {other:?}")),
    }
    let mut all = Vec::new();
    for n in 2.. {
        backend.submit(BackendReqId(n), BackendRequest::IterNextWhole { iter });
        match take() {
            Some(BackendOutcome::WholeTxn(Some(t))) => all.push(*t),
            Some(BackendOutcome::WholeTxn(None)) => break,
            other => return Err(format!("{name}: iteration answered {other:?}")),
        }
    }
    backend.close().map_err(|e| format!("{name}: close: {e}"))?;
    Ok(all)
}
