//! How a local backend carries out its requests: the per-request steps both executors call
//! (`write_step`, `read_step`, `sync_batch`, `run_pack`), and the loops of the threads of
//! [`Exec::Threads`] (with [`Exec::Inline`], `LocalBackend::submit` calls the steps itself).

use super::*;

/// A finished transaction waiting for its round: the request, its tid, and the storage it was
/// committed in (a rebuild may switch storages meanwhile).
pub(super) type SyncJob<D> = (BackendReqId, Tid, Arc<St<D>>);

/// The transaction voted and not yet finished or aborted (in [`Shared::voted`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Voted {
    pub(super) tid: Tid,
    /// `VoteRequest::deferred_sync`: answer `Finished` without waiting for the disk.
    pub(super) deferred: bool,
}

/// What a write request came to.
pub(super) enum Step<D: StorageDir> {
    /// Its final outcome.
    Done(BackendOutcome),
    /// `Committed` (deliver it first), then `Finished` once a round made the job durable.
    Committed(BackendOutcome, SyncJob<D>),
}

/// One request of the write sequence, under the writer's lock of [`Shared::voted`].
pub(super) fn write_step<D: StorageDir + 'static>(
    s: &Shared<D>,
    id: BackendReqId,
    req: BackendRequest,
) -> Step<D> {
    let mut voted = lock(&s.voted);
    match req {
        req @ (BackendRequest::RebuildBegin
        | BackendRequest::RebuildCommit
        | BackendRequest::RebuildAbort) => Step::Done(transition(s, &mut voted, &req)),
        req => match s.current() {
            Ok(st) => write(s, &st, &mut voted, id, req),
            Err(e) => Step::Done(failed(e)),
        },
    }
}

/// A rebuild transition: only for a backend opened on the real file system at its configured
/// path (see `rebuild.rs`); any other answers a backend error.
fn transition<D: StorageDir + 'static>(
    s: &Shared<D>,
    voted: &mut Option<Voted>,
    req: &BackendRequest,
) -> BackendOutcome {
    let real = if s.rebuildable { (s as &dyn Any).downcast_ref::<Shared<RealDir>>() } else { None };
    let Some(real) = real else {
        return backend_fault(format!(
            "storage {} cannot be rebuilt (it is not a read-write storage on the real file system)",
            s.name
        ));
    };
    match req {
        BackendRequest::RebuildBegin => rebuild_begin(real, voted),
        BackendRequest::RebuildCommit => rebuild_commit(real, voted),
        _ => rebuild_abort(real, voted),
    }
}

/// One request of the write queue (not a rebuild transition).
fn write<D: StorageDir>(
    s: &Shared<D>,
    st: &Arc<St<D>>,
    voted: &mut Option<Voted>,
    id: BackendReqId,
    req: BackendRequest,
) -> Step<D> {
    Step::Done(match req {
        BackendRequest::Vote(v) => vote(s, st, voted, *v),
        BackendRequest::Finish { tid } => match finish(s, st, voted, tid) {
            // Durable later: a round answers `Finished`.
            out @ BackendOutcome::Committed { .. } => return Step::Committed(out, (id, tid, Arc::clone(st))),
            out => out,
        },
        BackendRequest::Abort { tid } => abort(st, voted, tid),
        BackendRequest::Sync => st.sync_pending().map_or_else(failed, |_| BackendOutcome::Nil),
        BackendRequest::BlobUploadStart { upload } => match st.begin_upload() {
            Ok(u) => {
                lock(&s.uploads).insert(upload, u);
                BackendOutcome::Nil
            }
            Err(e) => failed(e),
        },
        BackendRequest::BlobUploadChunk { upload, chunk } => engine_upload(s, upload)
            .and_then(|u| st.append_upload(u, &chunk))
            .map_or_else(failed, |()| BackendOutcome::Nil),
        BackendRequest::BlobUploadDrop { upload } => {
            if let Some(u) = lock(&s.uploads).remove(&upload) {
                let _ = st.abandon_upload(u);
            }
            BackendOutcome::Nil
        }
        other => read(s, st, id, other),
    })
}

/// A read (anything not on the write queue but a pack) against the storage that serves now.
pub(super) fn read_step<D: StorageDir>(
    s: &Shared<D>,
    id: BackendReqId,
    req: BackendRequest,
) -> BackendOutcome {
    match s.current() {
        Ok(st) => read(s, &st, id, req),
        Err(e) => failed(e),
    }
}

/// The newest durable tid after a round, or why the round failed.
type RoundResult = Result<Tid, BackendError>;

/// Makes a batch of finished transactions durable (one round per storage of the batch: two
/// only around a rebuild's transitions) and answers `Finished` for each, in order.
pub(super) fn sync_batch<D: StorageDir>(batch: Vec<SyncJob<D>>, sink: &Sink) {
    // The storage of the last round, and what it came to.
    let mut round: Option<(Arc<St<D>>, RoundResult)> = None;
    for (id, tid, st) in batch {
        let r = match &round {
            Some((done, r)) if Arc::ptr_eq(done, &st) => r.clone(),
            _ => {
                let r = st.sync_pending().map_err(|e| map_error_ref(&e));
                round = Some((Arc::clone(&st), r.clone()));
                r
            }
        };
        let out = match r {
            Ok(durable) if durable >= tid => BackendOutcome::Finished { tid, size: size_of(&st) },
            Ok(durable) => {
                backend_fault(format!("transaction {tid} not durable after a round (durable: {durable})"))
            }
            Err(e) => BackendOutcome::Failed(e),
        };
        sink(id, out);
    }
}

/// A pack counted in `packs_running` by the caller, and its outcome.
pub(super) fn run_pack<D: StorageDir>(s: &Shared<D>, storage: Arc<St<D>>, id: BackendReqId, time: f64) {
    let out = pack(s, &storage, time);
    drop(storage);
    s.packs_running.fetch_sub(1, Ordering::SeqCst);
    (s.sink)(id, out);
}

// ---- the threads (Exec::Threads) ----------------------------------------------------------------

pub(super) fn writer_loop<D: StorageDir + 'static>(
    s: &Shared<D>,
    rx: Receiver<Job>,
    sync: &Sender<SyncJob<D>>,
) {
    while let Ok((id, req)) = rx.recv() {
        match write_step(s, id, req) {
            Step::Done(out) => (s.sink)(id, out),
            Step::Committed(out, job) => {
                (s.sink)(id, out);
                if sync.send(job).is_err() {
                    (s.sink)(id, backend_fault("the storage's sync thread is gone".to_owned()));
                }
            }
        }
    }
}

/// Makes the transactions the writer finished durable, a batch per round.
pub(super) fn sync_loop<D: StorageDir>(rx: &Receiver<SyncJob<D>>, sink: &Sink) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        sync_batch(batch, sink);
    }
}

/// Most jobs a reader takes at once: under load, one wake-up serves several requests.
const READ_BATCH: usize = 16;

pub(super) fn reader_loop<D: StorageDir>(s: &Shared<D>, rx: &Mutex<Receiver<Job>>) {
    let mut jobs = Vec::with_capacity(READ_BATCH);
    loop {
        {
            let rx = lock(rx);
            let Ok(first) = rx.recv() else { return };
            jobs.push(first);
            jobs.extend(rx.try_iter().take(READ_BATCH - 1));
        }
        for (id, req) in jobs.drain(..) {
            (s.sink)(id, read_step(s, id, req));
        }
    }
}

fn engine_upload<D: StorageDir>(s: &Shared<D>, upload: UploadId) -> Result<EngineUpload, StorageError> {
    lock(&s.uploads).get(&upload).copied().ok_or(StorageError::UnknownUpload(upload.0))
}
