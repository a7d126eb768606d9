//! The rebuild transitions of a local backend (`RebuildBegin`, `RebuildCommit`,
//! `RebuildAbort`; see [`Serving`] for the state diagram), run on the writer thread under the
//! write lock of `Shared::serving`, so that no request is served while the storage changes.
//! The files and the crash-safety argument are in `rebuild.rs`.

use super::*;

/// How long a transition waits for the requests still using a storage it closes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

fn files(s: &Shared) -> RebuildFiles {
    RebuildFiles::new(&s.cfg.path, s.cfg.blob_dir.as_deref())
}

/// Ends what the writer and the handle maps hold in the storage being left: the voted
/// transaction is aborted, uploads are abandoned, iterators forgotten (the recovery drops its
/// own; a later request for one of them finds nothing).
fn forget_open(s: &Shared, st: &St, voted: &mut Option<Voted>) {
    if voted.take().is_some() {
        let _ = st.abort();
    }
    let uploads = std::mem::take(&mut *lock(&s.uploads));
    for u in uploads.into_values() {
        let _ = st.abandon_upload(u);
    }
    lock(&s.iters).clear();
}

/// The storage itself, once the requests in flight that use it are done (no new one can take
/// it: the caller holds the write lock of `serving`). `Err` after [`DRAIN_TIMEOUT`].
fn unique(mut st: Arc<St>) -> Result<St, Arc<St>> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        match Arc::try_unwrap(st) {
            Ok(s) => return Ok(s),
            Err(back) if Instant::now() >= deadline => return Err(back),
            Err(back) => {
                st = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Discards any earlier rebuild and opens a new, empty one.
fn open_rebuild(s: &Shared) -> Result<St, String> {
    let files = files(s);
    files.discard().map_err(|e| e.to_string())?;
    let opts = Options { blob_dir: files.rebuild_blob_dir(), ..options(&s.cfg) };
    Storage::open_path(files.rebuild_path(), opts).map(|(st, _)| st).map_err(|e| e.to_string())
}

/// `RebuildBegin`: a new, empty storage serves every request from now on.
pub(super) fn rebuild_begin(s: &Shared, voted: &mut Option<Voted>) -> BackendOutcome {
    if s.cfg.read_only {
        return failed(StorageError::ReadOnly);
    }
    let mut serving = s.serving_mut();
    if s.packs_running.load(Ordering::SeqCst) > 0 {
        return backend_fault("cannot begin a rebuild while a pack runs".to_owned());
    }
    let placeholder = Serving::Broken("a rebuild is beginning".to_owned());
    let old = match std::mem::replace(&mut *serving, placeholder) {
        Serving::Normal(old) => {
            forget_open(s, &old, voted);
            old
        }
        Serving::Rebuild { old, new } => {
            tracing::info!(storage = %s.name, "discarding the open rebuild to begin afresh");
            forget_open(s, &new, voted);
            old
        }
        Serving::Broken(why) => {
            *serving = Serving::Broken(why.clone());
            return failed(StorageError::Broken(why));
        }
    };
    match open_rebuild(s) {
        Ok(new) => {
            tracing::info!(storage = %s.name, path = %new.path(), "rebuild begun: the new storage serves every request");
            *serving = Serving::Rebuild { old, new: Arc::new(new) };
            BackendOutcome::Nil
        }
        Err(e) => {
            *serving = Serving::Normal(old);
            tracing::warn!(storage = %s.name, error = %e, "cannot begin a rebuild");
            backend_fault(format!("cannot begin a rebuild: {e}"))
        }
    }
}

/// `RebuildCommit`: the rebuilt storage, made durable, replaces the old one on disk and serves.
pub(super) fn rebuild_commit(s: &Shared, voted: &mut Option<Voted>) -> BackendOutcome {
    let mut serving = s.serving_mut();
    let placeholder = Serving::Broken("a rebuild is being committed".to_owned());
    let (old, new) = match std::mem::replace(&mut *serving, placeholder) {
        Serving::Rebuild { old, new } => (old, new),
        other => {
            *serving = other;
            return backend_fault("RebuildCommit without a rebuild in progress".to_owned());
        }
    };
    forget_open(s, &new, voted);
    let new = match unique(new) {
        Ok(new) => new,
        Err(new) => {
            *serving = Serving::Rebuild { old, new };
            return backend_fault("cannot commit the rebuild: requests in flight still use it".to_owned());
        }
    };
    let old = match unique(old) {
        Ok(old) => old,
        Err(old) => {
            *serving = Serving::Rebuild { old, new: Arc::new(new) };
            return backend_fault(
                "cannot commit the rebuild: requests in flight still use the old storage".to_owned(),
            );
        }
    };
    let files = files(s);
    // Durable (its pending transactions synced) and closed, its index cache saved.
    if let Err(e) = new.close() {
        tracing::warn!(storage = %s.name, error = %e, "cannot close the rebuilt storage; keeping the old one");
        if let Err(e) = files.discard() {
            tracing::warn!(storage = %s.name, error = %e, "cannot remove the rebuild (the next open will)");
        }
        *serving = Serving::Normal(Arc::new(old));
        return backend_fault(format!("cannot commit the rebuild: {e}"));
    }
    // Its index cache is written and then removed by the swap: harmless, and its lock released.
    if let Err(e) = old.close() {
        tracing::warn!(storage = %s.name, error = %e, "closing the replaced storage failed");
    }
    let swapped = crate::storage::lock_path(&s.cfg.path)
        .map_err(|e| e.to_string())
        .and_then(|held| files.swap(!s.cfg.fsync).map_err(|e| e.to_string()).map(|()| drop(held)));
    // The open settles whatever a failed swap left: the old storage (marker not written) or the
    // new one (marker written).
    match open_storage(&s.cfg) {
        Ok((st, _)) => {
            let last = st.last_transaction();
            *serving = Serving::Normal(Arc::new(st));
            match swapped {
                Ok(()) => {
                    tracing::info!(storage = %s.name, last_tid = %last, "rebuild committed: the rebuilt storage replaced the old one");
                    BackendOutcome::Nil
                }
                Err(e) => {
                    tracing::warn!(storage = %s.name, error = %e, last_tid = %last, "the swap of the rebuilt storage failed");
                    backend_fault(format!("the swap of the rebuilt storage failed: {e}"))
                }
            }
        }
        Err(e) => {
            let why = format!("cannot reopen the storage after its rebuild: {e}");
            tracing::warn!(storage = %s.name, "{why}; the backend is broken until restarted");
            *serving = Serving::Broken(why.clone());
            backend_fault(why)
        }
    }
}

/// `RebuildAbort`: the rebuild is thrown away and the old storage serves again. Without a
/// rebuild in progress it does nothing.
pub(super) fn rebuild_abort(s: &Shared, voted: &mut Option<Voted>) -> BackendOutcome {
    let mut serving = s.serving_mut();
    let placeholder = Serving::Broken("a rebuild is being aborted".to_owned());
    match std::mem::replace(&mut *serving, placeholder) {
        Serving::Rebuild { old, new } => {
            forget_open(s, &new, voted);
            *serving = Serving::Normal(old);
            drop(serving);
            // Requests still reading it keep their open files; nothing writes it any more.
            drop(new);
            if let Err(e) = files(s).discard() {
                tracing::warn!(storage = %s.name, error = %e, "cannot remove the aborted rebuild (the next open will)");
            }
            tracing::info!(storage = %s.name, "rebuild aborted: the old storage serves again");
            BackendOutcome::Nil
        }
        other => {
            *serving = other;
            BackendOutcome::Nil
        }
    }
}
