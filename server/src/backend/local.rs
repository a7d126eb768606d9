//! A local FileStorage, served by dedicated threads ([`Exec::Threads`], production) or on the
//! caller's thread ([`Exec::Inline`], the deterministic simulation), over any [`StorageDir`].
//!
//! ```text
//!   submit(id, request) ──▶ write queue ──▶ writer thread   Vote, Finish, Abort, BlobUpload*
//!                      │                          │ Finish (group commit): Committed at once,
//!                      │                          ▼ then to the sync thread
//!                      │                     sync thread     one round per batch → Finished
//!                      ├──▶ (cached current loadBefore: answered on the caller's thread with
//!                      │     non-blocking reads, `Storage::load_before_nowait`)
//!                      ├──▶ read queue  ──▶ N reader threads every other read, SendBlob, NewOids
//!                      └──▶ one thread per Pack (the engine packs while commits go on)
//!   every outcome ──▶ sink
//! ```
//!
//! With fsync on, the storage runs in group commit (`Options::group_commit`): a `Finish`
//! publishes the transaction in the engine and answers `Committed` at once, so the core passes
//! the commit lock on; the sync thread makes every transaction finished meanwhile durable with one
//! round (two syncs in all) and answers `Finished` for each, in commit order.
//!
//! The writer thread is the only one that writes, so the requests of the write sequence
//! (`Vote` → `Finish`/`Abort`) run in the order the core sent them. Reads run concurrently
//! with it and with each other (the engine's reads are `&self` and `Sync`) and answer as of the
//! `snapshot` the request carries (see `zeoraid_core::zeo::backend`).
//!
//! A transaction voted with `deferred_sync` (the recovery's bulk copy) is answered `Finished`
//! at once by the writer when its `Finish` publishes it: no `Committed`, no trip through the sync
//! thread, no fsync, also with blobs ([`Storage::defer_sync`]). `Sync` (on the write queue, so after every `Finish` before it) runs one
//! group-commit round, which makes them all durable; so does the round of any later live
//! `Finish`, which therefore is never answered before the deferred ones before it are durable.
//!
//! `RebuildBegin`/`RebuildCommit`/`RebuildAbort` (on the write queue) switch the storage that
//! serves every request: see [`Serving`] and `rebuild.rs` for the files and the crash safety.
//!
//! With [`Exec::Inline`] there is no thread: `submit` carries the request out at once (the
//! write sequence, then for a `Finish` its own group-commit round; reads; pack; `SendBlob`) and
//! delivers every outcome through the sink before it returns, in the order the threads keep
//! (`Committed` then `Finished`; a deferred-sync `Finished` at once; `Sync` a round). Both
//! executors call the same per-request functions (`write_step`, `read`, `sync_batch`, `run_pack`);
//! the write sequence's state (the voted transaction) is in [`Shared`], under a lock only the
//! writer takes.
//!
//! The storage is a `Storage<D>` for any [`StorageDir`] `D` (`RealDir` in production, the
//! crashable `MemDir` in the simulation, see [`LocalBackend::open_in`]). Only a backend opened by
//! [`LocalBackend::open`]/[`LocalBackend::open_exec`] (a `RealDir` at the configured path) can be
//! rebuilt (`rebuild.rs` works on real files); any other reports `rebuildable: false` and fails
//! the rebuild requests with a backend error.
//!
//! Invariants: every submitted request gets exactly one final outcome, also when the engine
//! fails (its error is mapped to a [`BackendError`] by [`map_error`]); after [`LocalBackend::close`]
//! no thread is left and the storage is closed (index cache saved).

use std::any::Any;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::error::{ConflictDetails, PosKeyDetails, StorageTxnDetails, UndoError, ZeoError};
use zeoraid_core::wire::reply::VoteItem;
use zeoraid_core::wire::value::{Text, Value};
use zeoraid_core::zeo::backend::{
    BackendError, BackendInfo, BackendIterId, BackendOutcome, BackendReqId, BackendRequest, Culprit,
    StorageSize, TxnOp, UploadId, VoteRequest, WholeTxn,
};
use zeoraid_core::zeo::events::StorageSeed;

use super::rebuild::{RebuildFiles, Settled};
use super::Sink;
use crate::storage::{
    BeginTid, OpenError, OpenReport, Options, RealDir, RecordCursor, Storage, StorageDir, StorageError,
    TxnCursor, TxnMeta, TxnRecord, UploadId as EngineUpload, BLOB_CHUNK,
};

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

impl LocalConfig {
    /// A storage `Data.fs` inside a directory given to [`LocalBackend::open_in`] (e.g. a
    /// `MemDir`), with its blob directory `blobs` there too when `blobs`.
    pub fn in_dir(fsync: bool, blobs: bool) -> LocalConfig {
        LocalConfig {
            path: PathBuf::from("Data.fs"),
            blob_dir: blobs.then(|| PathBuf::from("blobs")),
            read_only: false,
            fsync,
            read_threads: 1,
        }
    }
}

/// How a local backend carries out its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Exec {
    /// Dedicated OS threads: a writer, a sync thread (group commit), readers, one per pack.
    #[default]
    Threads,
    /// On the caller's thread, inside [`LocalBackend::submit`], every outcome delivered before
    /// it returns: no thread, no blocking hand-off (for a single-threaded simulation).
    Inline,
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
    /// A storage thread panicked.
    #[error("a storage thread of {0} panicked")]
    Panicked(String),
}

type Job = (BackendReqId, BackendRequest);

#[path = "local_commit.rs"]
mod commit;
#[path = "local_reads.rs"]
mod reads;
#[path = "local_steps.rs"]
mod steps;
#[path = "local_rebuild.rs"]
mod transitions;
use commit::{abort, finish, vote};
use reads::{pack, read};
use steps::{
    read_step, reader_loop, run_pack, sync_batch, sync_loop, write_step, writer_loop, Step, SyncJob, Voted,
};
use transitions::{rebuild_abort, rebuild_begin, rebuild_commit};

type St<D = RealDir> = Storage<D>;

/// Which storage serves the requests.
///
/// ```text
///   Normal(s) ──RebuildBegin──▶ Rebuild { old: s, new } ──RebuildCommit──▶ Normal(new, reopened
///       ▲                         │  │                                       at the configured path)
///       └──────RebuildAbort───────┘  └─RebuildBegin: `new` discarded, a fresh one started
///   Rebuild ──commit failed after the old storage was closed──▶ Broken(why)
/// ```
///
/// Invariants: in `Rebuild`, every request is served by `new` and `old` is neither read nor
/// written (its files stay as they are on disk); `Broken` fails every request (the backend is
/// reopened by restarting it). Transitions run on the writer thread under the write lock of
/// [`Shared::serving`]; a request takes the storage it is served by once, at its start.
enum Serving<D: StorageDir = RealDir> {
    Normal(Arc<St<D>>),
    Rebuild { old: Arc<St<D>>, new: Arc<St<D>> },
    Broken(String),
}

impl<D: StorageDir> Serving<D> {
    fn active(&self) -> Option<&Arc<St<D>>> {
        match self {
            Serving::Normal(s) | Serving::Rebuild { new: s, .. } => Some(s),
            Serving::Broken(_) => None,
        }
    }
}

/// What the threads share.
struct Shared<D: StorageDir = RealDir> {
    name: String,
    cfg: LocalConfig,
    /// Opened at `cfg.path` on the real file system: `rebuild.rs` can rebuild it.
    rebuildable: bool,
    serving: RwLock<Serving<D>>,
    /// The transaction voted and not yet finished or aborted; only the writer (the writer thread,
    /// or `submit` inline) takes this lock, for a whole write request.
    voted: Mutex<Option<Voted>>,
    /// Packs running (a rebuild does not begin while one runs; counted under `serving`'s lock).
    packs_running: AtomicUsize,
    sink: Sink,
    /// Core upload handle → engine upload.
    uploads: Mutex<BTreeMap<UploadId, EngineUpload>>,
    /// Open iterators; each has its own lock, held while it reads (an `IterDrop` meanwhile just
    /// forgets it).
    iters: Mutex<BTreeMap<BackendIterId, Arc<Mutex<IterState>>>>,
    /// Pack threads started (joined at close).
    packs: Mutex<Vec<JoinHandle<()>>>,
    /// [`Exec::Inline`]: packs submitted while a transaction was voted, counted in
    /// `packs_running`, run once it ends (the engine's pack waits for the transaction in
    /// progress; inline, only a later request can end it).
    waiting_packs: Mutex<Vec<WaitingPack<D>>>,
}

/// A pack waiting for the voted transaction to end: its request, pack time and storage.
type WaitingPack<D> = (BackendReqId, f64, Arc<St<D>>);

enum IterState {
    /// A transaction iterator and the transaction it returned last.
    Txns { cursor: TxnCursor, last: Option<TxnRecord> },
    /// A record iterator.
    Records(RecordCursor),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking thread cannot leave these maps half-updated (single inserts/removes).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<D: StorageDir> Shared<D> {
    fn serving(&self) -> RwLockReadGuard<'_, Serving<D>> {
        self.serving.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn serving_mut(&self) -> RwLockWriteGuard<'_, Serving<D>> {
        self.serving.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The storage serving requests now.
    fn current(&self) -> Result<Arc<St<D>>, StorageError> {
        match &*self.serving() {
            Serving::Broken(why) => Err(StorageError::Broken(why.clone())),
            other => other.active().cloned().ok_or_else(|| StorageError::Broken("no storage".to_owned())),
        }
    }
}

/// The engine options of a local storage.
fn options(cfg: &LocalConfig) -> Options {
    Options {
        fsync: cfg.fsync,
        group_commit: cfg.fsync,
        read_only: cfg.read_only,
        blob_dir: cfg.blob_dir.clone(),
        ..Options::default()
    }
}

/// Opens the configured storage, after settling what an interrupted rebuild left (under the
/// storage's lock; read-only opens leave the files alone).
fn open_storage(cfg: &LocalConfig) -> Result<(St, OpenReport), OpenError> {
    if !cfg.read_only {
        let files = RebuildFiles::new(&cfg.path, cfg.blob_dir.as_deref());
        let lock = crate::storage::lock_path(&cfg.path)?;
        let settled = files.settle().map_err(|source| OpenError::Io {
            op: "settle the rebuild of",
            path: cfg.path.display().to_string(),
            source,
        })?;
        if settled != Settled::Nothing {
            tracing::info!(path = %cfg.path.display(), ?settled, "settled an interrupted rebuild");
        }
        drop(lock);
    }
    Storage::open_path(&cfg.path, options(cfg))
}

/// A local storage and what serves it (its threads, or nothing with [`Exec::Inline`]).
pub struct LocalBackend<D: StorageDir + 'static = RealDir> {
    shared: Arc<Shared<D>>,
    exec: Exec,
    /// `None` with [`Exec::Inline`] (and once closing).
    write_tx: Option<Sender<Job>>,
    read_tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl<D: StorageDir + 'static> std::fmt::Debug for LocalBackend<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("name", &self.shared.name)
            .field("exec", &self.exec)
            .finish_non_exhaustive()
    }
}

impl LocalBackend<RealDir> {
    /// Opens the storage `name` at the configured path and starts its threads; outcomes go to
    /// `sink`.
    pub fn open(
        name: &str,
        cfg: &LocalConfig,
        sink: Sink,
    ) -> Result<(LocalBackend, OpenReport), LocalBackendError> {
        LocalBackend::open_exec(name, cfg, sink, Exec::Threads)
    }

    /// [`LocalBackend::open`] with the executor `exec`. The backend can be rebuilt.
    pub fn open_exec(
        name: &str,
        cfg: &LocalConfig,
        sink: Sink,
        exec: Exec,
    ) -> Result<(LocalBackend, OpenReport), LocalBackendError> {
        let (storage, report) = open_storage(cfg)?;
        Ok((LocalBackend::start(name, cfg, storage, true, sink, exec)?, report))
    }
}

impl<D: StorageDir + 'static> LocalBackend<D> {
    /// Opens the storage `name` inside `dir`: the file named by the last component of
    /// `cfg.path` (`Data.fs` with [`LocalConfig::in_dir`]), its blob directory at `cfg.blob_dir`
    /// relative to `dir`. With fsync on it runs in group commit as [`LocalBackend::open`] does:
    /// a transaction answered `Finished` is durable in `dir`. Such a backend is not rebuildable.
    pub fn open_in(
        name: &str,
        dir: D,
        cfg: &LocalConfig,
        sink: Sink,
        exec: Exec,
    ) -> Result<(LocalBackend<D>, OpenReport), LocalBackendError> {
        let file = cfg
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| OpenError::Missing { path: cfg.path.display().to_string() })?;
        let (storage, report) = Storage::open(dir, file, options(cfg))?;
        Ok((LocalBackend::start(name, cfg, storage, false, sink, exec)?, report))
    }

    fn start(
        name: &str,
        cfg: &LocalConfig,
        storage: St<D>,
        rebuildable: bool,
        sink: Sink,
        exec: Exec,
    ) -> Result<LocalBackend<D>, LocalBackendError> {
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            cfg: cfg.clone(),
            rebuildable: rebuildable && !cfg.read_only,
            serving: RwLock::new(Serving::Normal(Arc::new(storage))),
            voted: Mutex::new(None),
            packs_running: AtomicUsize::new(0),
            sink,
            uploads: Mutex::new(BTreeMap::new()),
            iters: Mutex::new(BTreeMap::new()),
            packs: Mutex::new(Vec::new()),
            waiting_packs: Mutex::new(Vec::new()),
        });
        let mut backend = LocalBackend { shared, exec, write_tx: None, read_tx: None, threads: Vec::new() };
        if exec == Exec::Inline {
            return Ok(backend);
        }
        let (write_tx, write_rx) = channel::<Job>();
        let (read_tx, read_rx) = channel::<Job>();
        let (sync_tx, sync_rx) = channel::<SyncJob<D>>();
        let read_rx = Arc::new(Mutex::new(read_rx));
        backend.write_tx = Some(write_tx);
        backend.read_tx = Some(read_tx);
        let s = Arc::clone(&backend.shared);
        backend.spawn(format!("zr-{name}-write"), move || writer_loop(&s, write_rx, &sync_tx))?;
        let s = Arc::clone(&backend.shared);
        backend.spawn(format!("zr-{name}-sync"), move || sync_loop(&sync_rx, &s.sink))?;
        for i in 0..cfg.read_threads.max(1) {
            let s = Arc::clone(&backend.shared);
            let rx = Arc::clone(&read_rx);
            backend.spawn(format!("zr-{name}-read{i}"), move || reader_loop(&s, &rx))?;
        }
        Ok(backend)
    }

    fn spawn(&mut self, name: String, f: impl FnOnce() + Send + 'static) -> Result<(), LocalBackendError> {
        let h = std::thread::Builder::new().name(name).spawn(f).map_err(LocalBackendError::Thread)?;
        self.threads.push(h);
        Ok(())
    }

    /// How this backend carries out its requests.
    pub fn exec(&self) -> Exec {
        self.exec
    }

    /// What the ZEO front needs to start (last tid, the newest `queue` commits, size, …).
    pub fn seed(&self, queue: usize) -> Result<StorageSeed, LocalBackendError> {
        let s = self.shared.current()?;
        Ok(StorageSeed {
            name: self.shared.name.clone(),
            read_only: s.is_read_only(),
            last_tid: s.last_transaction(),
            recent: s.last_invalidations(queue)?,
            size: size_of(&s),
            info_name: s.path().to_owned(),
            blobs: s.has_blobs(),
        })
    }

    /// What the RAID needs to know about it (last tid, size, blobs, …). A backend broken by a
    /// failed rebuild reports itself empty and read-only.
    pub fn info(&self) -> BackendInfo {
        let rebuildable = self.shared.rebuildable;
        let Ok(s) = self.shared.current() else {
            return BackendInfo {
                last_tid: Tid::ZERO,
                size: StorageSize::default(),
                blobs: self.shared.cfg.blob_dir.is_some(),
                supports_undo: true,
                info_name: self.shared.cfg.path.display().to_string(),
                read_only: true,
                rebuildable,
            };
        };
        BackendInfo {
            last_tid: s.last_transaction(),
            size: size_of(&s),
            blobs: s.has_blobs(),
            supports_undo: true,
            info_name: s.path().to_owned(),
            read_only: s.is_read_only(),
            rebuildable,
        }
    }

    /// Queues a request; its outcome goes to the sink (with [`Exec::Inline`]: carries it out
    /// and delivers its outcomes before returning).
    ///
    /// A `loadBefore` of a current revision whose bytes are in memory (the page cache) is
    /// answered at once, on the caller's thread: it cannot wait for the disk
    /// ([`Storage::load_before_nowait`]), and it saves two thread hand-offs. Anything else goes
    /// to the threads.
    pub fn submit(&self, id: BackendReqId, request: BackendRequest) {
        if let BackendRequest::LoadBefore { oid, before, snapshot } = &request {
            let limit = snapshot.checked_next().map_or(*before, |n| n.min(*before));
            // The read lock of `serving` is held only for this call (no `Arc` clone); it is
            // contended only by a rebuild's transitions.
            let answer = self.shared.serving().active().and_then(|s| s.load_before_nowait(*oid, limit));
            if let Some(r) = answer {
                let out = r.map_or_else(failed, BackendOutcome::LoadBefore);
                (self.shared.sink)(id, out);
                return;
            }
        }
        if let BackendRequest::Pack { time } = &request {
            self.start_pack(id, *time);
            return;
        }
        let writes = is_write(&request);
        if self.exec == Exec::Inline {
            let s = &*self.shared;
            if writes {
                match write_step(s, id, request) {
                    Step::Done(out) => (s.sink)(id, out),
                    Step::Committed(out, job) => {
                        (s.sink)(id, out);
                        sync_batch(vec![job], &s.sink);
                    }
                }
                if lock(&s.voted).is_none() {
                    let waiting = std::mem::take(&mut *lock(&s.waiting_packs));
                    for (id, time, storage) in waiting {
                        run_pack(s, storage, id, time);
                    }
                }
            } else {
                (s.sink)(id, read_step(s, id, request));
            }
            return;
        }
        let queue = if writes { &self.write_tx } else { &self.read_tx };
        let sent = queue.as_ref().map(|q| q.send((id, request)));
        if !matches!(sent, Some(Ok(()))) {
            (self.shared.sink)(id, backend_fault("the storage is closing".to_owned()));
        }
    }

    /// Runs a pack (on its own thread, or inline: at once, or after the voted transaction ends);
    /// refused while a rebuild is open (the storage being rebuilt must not be packed, nor the one
    /// it replaces).
    fn start_pack(&self, id: BackendReqId, time: f64) {
        let storage = match &*self.shared.serving() {
            Serving::Normal(s) => {
                // Counted under the lock: a `RebuildBegin` (write lock) sees this pack.
                self.shared.packs_running.fetch_add(1, Ordering::SeqCst);
                Arc::clone(s)
            }
            Serving::Rebuild { .. } => {
                let why = "cannot pack: the storage is being rebuilt (recovery in progress)";
                (self.shared.sink)(id, backend_fault(why.to_owned()));
                return;
            }
            Serving::Broken(why) => {
                (self.shared.sink)(id, failed(StorageError::Broken(why.clone())));
                return;
            }
        };
        if self.exec == Exec::Inline {
            if lock(&self.shared.voted).is_some() {
                lock(&self.shared.waiting_packs).push((id, time, storage));
            } else {
                run_pack(&self.shared, storage, id, time);
            }
            return;
        }
        let s = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name(format!("zr-{}-pack", self.shared.name))
            .spawn(move || run_pack(&s, storage, id, time));
        match spawned {
            Ok(h) => lock(&self.shared.packs).push(h),
            Err(e) => {
                self.shared.packs_running.fetch_sub(1, Ordering::SeqCst);
                (self.shared.sink)(id, backend_fault(format!("cannot start a pack thread: {e}")))
            }
        }
    }

    /// Stops the threads (after the requests already queued), saves the index cache and
    /// closes the storage. An open rebuild is left on disk for the next open to discard.
    pub fn close(self) -> Result<(), LocalBackendError> {
        let LocalBackend { shared, write_tx, read_tx, threads, exec: _ } = self;
        drop((write_tx, read_tx));
        let waiting = std::mem::take(&mut *lock(&shared.waiting_packs));
        for (id, _, storage) in waiting {
            drop(storage);
            shared.packs_running.fetch_sub(1, Ordering::SeqCst);
            (shared.sink)(id, backend_fault("the storage is closing".to_owned()));
        }
        let mut panicked = false;
        for h in threads {
            panicked |= h.join().is_err();
        }
        let packs: Vec<_> = lock(&shared.packs).drain(..).collect();
        for h in packs {
            panicked |= h.join().is_err();
        }
        let name = shared.name.clone();
        if panicked {
            return Err(LocalBackendError::Panicked(name));
        }
        // The core never leaves a voted transaction behind at shutdown; if it did, abort it.
        if lock(&shared.voted).take().is_some() {
            if let Ok(st) = shared.current() {
                let _ = st.abort();
            }
        }
        let serving = match Arc::try_unwrap(shared) {
            Ok(shared) => shared.serving.into_inner().unwrap_or_else(PoisonError::into_inner),
            // Every thread holding a reference has been joined.
            Err(_) => return Err(LocalBackendError::Panicked(name)),
        };
        let storage = match serving {
            Serving::Normal(s) => s,
            Serving::Rebuild { old, new } => {
                drop(new);
                old
            }
            Serving::Broken(_) => return Ok(()),
        };
        match Arc::try_unwrap(storage) {
            Ok(s) => Ok(s.close()?),
            Err(_) => Err(LocalBackendError::Panicked(name)),
        }
    }
}

fn size_of<D: StorageDir>(s: &Storage<D>) -> StorageSize {
    StorageSize { length: s.len() as u64, size: s.size() }
}

/// Whether `request` belongs to the write sequence (the writer carries it out, in order).
fn is_write(request: &BackendRequest) -> bool {
    matches!(
        request,
        BackendRequest::Vote(_)
            | BackendRequest::Finish { .. }
            | BackendRequest::Abort { .. }
            | BackendRequest::Sync
            | BackendRequest::RebuildBegin
            | BackendRequest::RebuildCommit
            | BackendRequest::RebuildAbort
            | BackendRequest::BlobUploadStart { .. }
            | BackendRequest::BlobUploadChunk { .. }
            | BackendRequest::BlobUploadDrop { .. }
    )
}

// ---- errors ------------------------------------------------------------------------------------

fn client_error(error: ZeoError) -> BackendOutcome {
    BackendOutcome::Failed(BackendError { error, culprit: Culprit::Client })
}

/// A `Failed` outcome blamed on the backend (`StorageSystemError` with `message`).
pub fn backend_fault(message: String) -> BackendOutcome {
    BackendOutcome::Failed(BackendError {
        error: ZeoError::Other {
            class_path: Text::from_static("ZODB.POSException.StorageSystemError"),
            payload: Value::list(vec![Value::Str(Text::from(message))]),
        },
        culprit: Culprit::Backend,
    })
}

fn failed(e: StorageError) -> BackendOutcome {
    BackendOutcome::Failed(map_error(e))
}

/// [`map_error`] for an error the caller keeps (a round's error answers every transaction of its
/// batch).
fn map_error_ref(e: &StorageError) -> BackendError {
    match e {
        StorageError::Broken(why) => map_error(StorageError::Broken(why.clone())),
        other => map_error(StorageError::Broken(other.to_string())),
    }
}

/// The error a client is told for an engine error, and whose fault it is.
pub fn map_error(e: StorageError) -> BackendError {
    let text = |e: &StorageError| Text::from(e.to_string());
    let error = match &e {
        StorageError::PosKey { oid } => ZeoError::pos_key(*oid),
        StorageError::Conflict { oid, committed, read } => ZeoError::Conflict(ConflictDetails {
            message: Text::from_static("database conflict error"),
            oid: Some(*oid),
            class_name: None,
            serials: Some((*committed, *read)),
            extra: Vec::new(),
        }),
        StorageError::ReadConflict { oid, current, expected } => ZeoError::ReadConflict(ConflictDetails {
            message: Text::from_static("database read conflict error"),
            oid: Some(*oid),
            class_name: None,
            serials: Some((*current, *expected)),
            extra: Vec::new(),
        }),
        StorageError::Undo { reason, oid } => {
            let u = UndoError { reason: Text::from(reason.clone()), oid: *oid };
            match oid {
                Some(o) => ZeoError::MultipleUndo(vec![(*o, u)]),
                None => ZeoError::Undo(u),
            }
        }
        StorageError::MultipleUndo(fs) => ZeoError::MultipleUndo(
            fs.iter()
                .map(|f| (f.oid, UndoError { reason: Text::from(f.reason.clone()), oid: Some(f.oid) }))
                .collect(),
        ),
        StorageError::ReadOnly => ZeoError::ReadOnly,
        StorageError::BlobMissing { oid, serial, path } => ZeoError::PosKey(PosKeyDetails::Blob {
            message: Text::from(format!("No blob file at {path}")),
            oid: *oid,
            serial: *serial,
        }),
        StorageError::TidNotAfterLast { .. }
        | StorageError::TidsExhausted { .. }
        | StorageError::WrongTransaction(_)
        | StorageError::BadStatus(_)
        | StorageError::RestoreSerial { .. } => {
            ZeoError::StorageTransaction(StorageTxnDetails::Message(text(&e)))
        }
        StorageError::MetadataTooLong { .. }
        | StorageError::BadExtension(_)
        | StorageError::EmptyData { .. } => ZeoError::ValueError(text(&e)),
        StorageError::Io { .. } | StorageError::Corrupt { .. } | StorageError::Broken(_) => ZeoError::Other {
            class_path: Text::from_static("ZODB.POSException.StorageSystemError"),
            payload: Value::list(vec![Value::Str(text(&e))]),
        },
        _ => ZeoError::Exception(text(&e)),
    };
    let culprit = match e.culprit() {
        crate::storage::Culprit::Caller => Culprit::Client,
        crate::storage::Culprit::Storage => Culprit::Backend,
    };
    BackendError { error, culprit }
}
