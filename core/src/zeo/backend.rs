//! The backend interface: what the ZEO front asks of a storage, and what comes back.
//!
//! DESIGN.md: *one storage is a RAID of one backend*. The ZEO server state machine
//! ([`super::server`]) reaches a storage only through these typed requests, emitted as actions
//! and answered by events. The driver runs them against a local FileStorage engine (a dedicated
//! thread in production, a simulated task in the simulation) or, later, a remote ZEO server;
//! the RAID fans the very same requests out over several backends.
//!
//! # Contract
//! * Every request carries a [`BackendReqId`] chosen by the core; the backend answers each one
//!   exactly once with a final [`BackendOutcome`], in any order, except [`BackendRequest::SendBlob`]
//!   which may first answer any number of [`BackendOutcome::BlobChunk`]s (in file order), and
//!   [`BackendRequest::Finish`], which may first answer [`BackendOutcome::Committed`] (group
//!   commit: the commit lock can pass on before the transaction is durable).
//! * Write requests of one storage form one sequence:
//!   `Vote` → (`Finish` | `Abort`), one transaction at a time (the core holds the commit lock).
//!   A `Vote` that fails or returns conflicts leaves no transaction open in the backend.
//! * Reads carry the `snapshot` the core has made visible to clients: the backend answers as
//!   if no transaction after `snapshot` existed (a load never returns, nor reports as `end`, a
//!   revision the core has not yet announced). This, plus the per-connection outbox of the core,
//!   keeps the ordering rule of `zeo-protocol.md` §6.4 when reads run concurrently with commits.
//! * Blob uploads (`BlobUpload*`) are independent of transactions: the data arrives before
//!   `vote`, and a `Vote` names the finished upload in [`TxnOp::StoreBlob`]. A `Vote` that
//!   answers `Conflicts` keeps its uploads (the client re-votes and the same ops are replayed);
//!   `Finish`, `Abort` and a failed `Vote` consume them (committed or discarded).
//! * [`BackendRequest::IterNextWhole`] is the recovery's read: the next transaction of a
//!   transaction iterator with all its records, in one request (what `IterNext`, then
//!   `IterRecordStart` and `IterRecordNext` until the end would give). Only the RAID's recovery
//!   readers send it; the ZEO front never does, so the RAID's read routing never sees it.
//! * Iterator handles ([`BackendIterId`]) and upload handles ([`UploadId`]) are chosen by the
//!   core, unique per storage; the backend frees them on `IterDrop`/`BlobUploadDrop`, at the end
//!   of an iteration, and when the upload is consumed by a `Vote`.

use bytes::Bytes;

use crate::ids::{Oid, Tid};
use crate::wire::error::ZeoError;
use crate::wire::reply::{
    DataRecord, HistoryEntry, LoadBeforeResult, RecordIternextResult, TxnHeader, UndoEntry, VoteItem,
};
use crate::wire::types::{Extension, TxnStatus, UndoId};
use crate::wire::value::Value;

/// Identifies one request to a backend; its outcome carries the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendReqId(pub u64);

/// A transaction or record iterator held by a backend, named by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendIterId(pub u64);

/// A blob upload in progress on a backend, named by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UploadId(pub u64);

/// One buffered operation of a transaction, replayed by the backend at vote in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub enum TxnOp {
    /// `storea`: a new revision; `serial` is the revision the client read.
    Store {
        /// Object.
        oid: Oid,
        /// Serial read (`Tid::ZERO` for a new object).
        serial: Tid,
        /// Data record.
        data: Bytes,
    },
    /// `storeBlobEnd`: a store whose blob file is the finished upload `upload`.
    StoreBlob {
        /// Object.
        oid: Oid,
        /// Serial read.
        serial: Tid,
        /// Data record.
        data: Bytes,
        /// The upload holding the blob file.
        upload: UploadId,
    },
    /// `checkCurrentSerialInTransaction`.
    CheckCurrent {
        /// Object.
        oid: Oid,
        /// The serial that must be current.
        serial: Tid,
    },
    /// `deleteObject`.
    Delete {
        /// Object.
        oid: Oid,
        /// Current serial.
        serial: Tid,
    },
    /// `restorea`.
    Restore {
        /// Object.
        oid: Oid,
        /// The tid that originally wrote the record.
        serial: Tid,
        /// Data, or `None` for a record without data.
        data: Option<Bytes>,
        /// Back-pointer to the transaction whose data is reused.
        prev_txn: Option<Tid>,
    },
    /// A restore whose record has a blob: the recovery's copy of a blob record, with its
    /// original tid, data and back-pointer, the blob file being the finished upload `upload`.
    /// Backends that can restore a blob (local storages: ZODB's `restoreBlob`) write exactly
    /// that. ZEO's protocol has no `restoreBlob`, so a remote backend sends it as a blob store
    /// (`storeBlobEnd(oid, current, data)`): the record gets the data and the blob, but no
    /// back-pointer (README, known gaps).
    RestoreBlob {
        /// Object.
        oid: Oid,
        /// The tid that originally wrote the record.
        serial: Tid,
        /// Data record.
        data: Bytes,
        /// Back-pointer to the transaction whose data is reused.
        prev_txn: Option<Tid>,
        /// The upload holding the blob file.
        upload: UploadId,
        /// The object's current serial on the target before this transaction (`Tid::ZERO` for a
        /// new object): the serial a remote backend's blob store is checked against.
        current: Tid,
    },
    /// `undoa`.
    Undo {
        /// Undo id from `undoLog`/`undoInfo`.
        undo_id: UndoId,
    },
}

impl TxnOp {
    /// The object the operation writes, if it writes one (undo names its oids at vote).
    pub fn written_oid(&self) -> Option<Oid> {
        match self {
            TxnOp::Store { oid, .. }
            | TxnOp::StoreBlob { oid, .. }
            | TxnOp::Delete { oid, .. }
            | TxnOp::Restore { oid, .. }
            | TxnOp::RestoreBlob { oid, .. } => Some(*oid),
            TxnOp::CheckCurrent { .. } | TxnOp::Undo { .. } => None,
        }
    }
}

/// The order in which a backend applies a transaction's operations, as stock ZEO's server does
/// at vote: every operation in arrival order except the blob stores, then the blob stores in
/// reverse arrival order (ZEO keeps them in a separate log that it pops from the end). Local
/// backends follow it so that a RAID's local and stock backends write their records in the
/// same order; a remote backend sends the operations in arrival order and its server applies
/// this order itself.
pub fn zeo_apply_order(ops: &[TxnOp]) -> Vec<&TxnOp> {
    let mut order: Vec<&TxnOp> = ops.iter().filter(|op| !matches!(op, TxnOp::StoreBlob { .. })).collect();
    order.extend(ops.iter().rev().filter(|op| matches!(op, TxnOp::StoreBlob { .. })));
    // (RestoreBlob ops keep their place: only the recovery sends them, and in record order.)
    order
}

/// What the backend needs to begin, replay and vote a transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct VoteRequest {
    /// The tid, chosen by the core (strictly above the storage's last tid).
    pub tid: Tid,
    /// Transaction status (`' '`, or e.g. `'p'` when copying).
    pub status: TxnStatus,
    /// `user` metadata.
    pub user: Bytes,
    /// `description` metadata.
    pub description: Bytes,
    /// Extension dict.
    pub extension: Extension,
    /// Operations in arrival order.
    pub ops: Vec<TxnOp>,
    /// Whether the backend may answer this transaction's `Finish` with `Finished` before the
    /// transaction is durable (the recovery's bulk copy onto a non-optimal target, which asks
    /// for [`BackendRequest::Sync`] before it counts anything as done). `false` for every
    /// transaction of the live RAID. Backends that always sync ignore it.
    pub deferred_sync: bool,
}

/// A transaction with all its records, as [`BackendRequest::IterNextWhole`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct WholeTxn {
    /// The transaction's header.
    pub header: TxnHeader,
    /// Its records, in iteration order.
    pub records: Vec<DataRecord>,
}

/// A request to a backend.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendRequest {
    /// `loadBefore`, answered as of `snapshot` → [`BackendOutcome::LoadBefore`].
    LoadBefore {
        /// Object.
        oid: Oid,
        /// Exclusive upper bound.
        before: Tid,
        /// The newest tid the core has made visible.
        snapshot: Tid,
    },
    /// `loadSerial` → [`BackendOutcome::Data`].
    LoadSerial {
        /// Object.
        oid: Oid,
        /// Exact revision.
        serial: Tid,
    },
    /// `getTid` as of `snapshot` → [`BackendOutcome::Tid`].
    GetTid {
        /// Object.
        oid: Oid,
        /// The newest tid the core has made visible.
        snapshot: Tid,
    },
    /// `history` → [`BackendOutcome::History`].
    History {
        /// Object.
        oid: Oid,
        /// Most entries (≥ 1).
        size: usize,
    },
    /// `record_iternext` → [`BackendOutcome::RecordIternext`].
    RecordIternext {
        /// Where to continue.
        next: Option<Oid>,
    },
    /// `new_oids` → [`BackendOutcome::NewOids`].
    NewOids {
        /// How many (1..=100).
        n: usize,
    },
    /// `undoLog` → [`BackendOutcome::UndoLog`].
    UndoLog {
        /// First index.
        first: i64,
        /// End index or negative count.
        last: i64,
    },
    /// `undoInfo` → [`BackendOutcome::UndoLog`].
    UndoInfo {
        /// First index.
        first: i64,
        /// End index or negative count.
        last: i64,
        /// Filter map, or `None`.
        spec: Option<Value>,
    },
    /// Open a transaction iterator → [`BackendOutcome::Nil`].
    IterStart {
        /// The handle the core gives it.
        iter: BackendIterId,
        /// First tid, inclusive.
        start: Option<Tid>,
        /// Last tid, inclusive.
        stop: Option<Tid>,
    },
    /// Next transaction → [`BackendOutcome::Txn`] (`None` at the end; the handle is then freed).
    IterNext {
        /// Transaction iterator.
        iter: BackendIterId,
    },
    /// Next transaction with all its records (the recovery's readers only, see the module
    /// contract) → [`BackendOutcome::WholeTxn`] (`None` at the end; the handle is then freed).
    /// An unknown handle fails as `IterNext` does.
    IterNextWhole {
        /// Transaction iterator.
        iter: BackendIterId,
    },
    /// Open a record iterator over the transaction `txn_iter` last returned (`tid`)
    /// → [`BackendOutcome::Nil`].
    IterRecordStart {
        /// The handle the core gives the record iterator.
        iter: BackendIterId,
        /// The transaction iterator.
        txn_iter: BackendIterId,
        /// The transaction's tid.
        tid: Tid,
    },
    /// Next record → [`BackendOutcome::Record`] (`None` at the end; the handle is then freed).
    IterRecordNext {
        /// Record iterator.
        iter: BackendIterId,
    },
    /// Forget iterators (unknown handles are ignored) → [`BackendOutcome::Nil`].
    IterDrop {
        /// Handles.
        iters: Vec<BackendIterId>,
    },
    /// Stream a blob file: [`BackendOutcome::BlobChunk`]s, then [`BackendOutcome::Nil`].
    SendBlob {
        /// Object.
        oid: Oid,
        /// Revision.
        serial: Tid,
    },
    /// Open an upload → [`BackendOutcome::Nil`].
    BlobUploadStart {
        /// The handle the core gives it.
        upload: UploadId,
    },
    /// Append to an upload → [`BackendOutcome::Nil`].
    BlobUploadChunk {
        /// Upload.
        upload: UploadId,
        /// Bytes to append.
        chunk: Bytes,
    },
    /// Discard an upload that no vote consumed → [`BackendOutcome::Nil`].
    BlobUploadDrop {
        /// Upload.
        upload: UploadId,
    },
    /// Begin the transaction with the given tid, replay its operations, vote
    /// → [`BackendOutcome::Voted`] or [`BackendOutcome::Conflicts`] (nothing left open) or
    /// [`BackendOutcome::Failed`] (nothing left open).
    Vote(Box<VoteRequest>),
    /// Make the voted transaction durable and visible → [`BackendOutcome::Finished`].
    Finish {
        /// The voted tid.
        tid: Tid,
    },
    /// Abort the voted transaction → [`BackendOutcome::Nil`].
    Abort {
        /// The voted tid.
        tid: Tid,
    },
    /// Pack without GC to `time` (epoch seconds) → [`BackendOutcome::Packed`].
    Pack {
        /// Pack time.
        time: f64,
    },
    /// Make every finished transaction durable (those finished with `deferred_sync`)
    /// → [`BackendOutcome::Nil`].
    Sync,
    /// Recovery of a diverged local target: start a new, empty storage beside the old one
    /// (`Data.fs.rebuild` and its blob directory), and from now on serve every request from
    /// it; the old one stays untouched on disk until [`BackendRequest::RebuildCommit`]. A
    /// leftover rebuild from an earlier attempt is discarded first. → [`BackendOutcome::Nil`].
    /// Only for backends whose [`BackendInfo::rebuildable`] is true (others fail it).
    RebuildBegin,
    /// Make the rebuilt storage durable and let it replace the old one (atomically, as far as
    /// the file system allows: a crash at any point leaves either the old storage or the new
    /// one, complete, and the next open settles which) → [`BackendOutcome::Nil`].
    RebuildCommit,
    /// Throw the rebuild away and serve the old storage again → [`BackendOutcome::Nil`].
    RebuildAbort,
}

impl BackendRequest {
    /// Whether this request belongs to the storage's write sequence (see the module contract).
    pub fn is_write(&self) -> bool {
        matches!(self, BackendRequest::Vote(_) | BackendRequest::Finish { .. } | BackendRequest::Abort { .. })
    }
}

/// Object count and size of a storage, as `get_info`/`info` report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageSize {
    /// Number of objects.
    pub length: u64,
    /// Size in bytes.
    pub size: u64,
}

/// What a backend reports about itself when it comes up (connected and registered, or opened),
/// for the RAID's start-up decision and for `details`.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendInfo {
    /// Its newest committed tid (`Tid::ZERO` when empty).
    pub last_tid: Tid,
    /// Object count and size.
    pub size: StorageSize,
    /// Whether it keeps blobs (`IBlobStorage`).
    pub blobs: bool,
    /// Whether it supports undo.
    pub supports_undo: bool,
    /// A name for `get_info` (FileStorage: the path of `Data.fs`; remote: the address).
    pub info_name: String,
    /// Whether it refuses writes.
    pub read_only: bool,
    /// Whether it can be rebuilt from scratch in place (`RebuildBegin`): local storages can,
    /// remote ones cannot.
    pub rebuildable: bool,
}

/// A change in a backend's connection, reported by its driver-side connector.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendEvent {
    /// Connected (or opened) and ready for requests.
    Up(BackendInfo),
    /// The connection is gone: every request in flight has been (or will be) answered with a
    /// `Failed` outcome of culprit `Backend`; the connector reconnects with backoff.
    Down {
        /// Why, for logs and `details`.
        reason: String,
    },
    /// Another client of a remote backend committed `tid` there (a ZEO `invalidateTransaction`
    /// on the RAID's connection): the backend holds a transaction the RAID did not write, and
    /// no tid of the RAID's may now be at or below it there.
    ForeignCommit {
        /// The transaction's tid.
        tid: Tid,
    },
}

/// Who is to blame for a failed request (rustls style): the client's usage, or the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Culprit {
    /// The request itself was wrong for the data (conflict, unknown oid, impossible undo,
    /// read-only): answered to the client, never a reason to degrade a backend.
    Client,
    /// The backend failed (I/O error, full disk, corruption, timeout, disconnect).
    Backend,
}

/// A failed request: the error to send to the client, and whose fault it was.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendError {
    /// What the client is told.
    pub error: ZeoError,
    /// Whose fault.
    pub culprit: Culprit,
}

impl BackendError {
    /// A backend fault, told to the client as `ZODB.POSException.StorageSystemError(message)`.
    pub fn backend(message: impl Into<String>) -> BackendError {
        BackendError {
            error: ZeoError::Other {
                class_path: crate::wire::value::Text::from_static("ZODB.POSException.StorageSystemError"),
                payload: Value::list(vec![Value::Str(crate::wire::value::Text::from(message.into()))]),
            },
            culprit: Culprit::Backend,
        }
    }
}

/// The answer to a [`BackendRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum BackendOutcome {
    /// No result.
    Nil,
    /// `loadBefore`.
    LoadBefore(Option<LoadBeforeResult>),
    /// `loadSerial`.
    Data(Bytes),
    /// `getTid`.
    Tid(Tid),
    /// `history`.
    History(Vec<HistoryEntry>),
    /// `record_iternext`.
    RecordIternext(RecordIternextResult),
    /// `new_oids`.
    NewOids(Vec<Oid>),
    /// `undoLog`/`undoInfo`.
    UndoLog(Vec<UndoEntry>),
    /// `iterator_next`.
    Txn(Option<TxnHeader>),
    /// `iterator_record_next`.
    Record(Option<DataRecord>),
    /// [`BackendRequest::IterNextWhole`]: a transaction and its records in iteration order, or
    /// `None` at the end.
    WholeTxn(Option<Box<WholeTxn>>),
    /// One piece of a `SendBlob` (not final: more outcomes follow for the same id).
    BlobChunk(Bytes),
    /// The vote succeeded; the oids whose data the backend changed (undone), for the vote reply.
    Voted {
        /// Oids to list in the vote reply (the client must not cache what it sent for them).
        changed: Vec<Oid>,
        /// Every oid the transaction writes, for the invalidations (stores, deletes, restores,
        /// undone oids), in first-write order without duplicates.
        invalidated: Vec<Oid>,
    },
    /// Write conflicts (client-conflict-resolution mode, §6.6.2); the transaction was aborted.
    Conflicts(Vec<VoteItem>),
    /// Group commit: the finishing transaction is committed in the backend (the next
    /// transaction may vote, and its serial checks see this one) but not yet durable. Not final:
    /// `Finished` (or `Failed`) follows for the same request once it is durable. Until then the
    /// core must not announce it (no reply, no invalidations, reads stay before it).
    Committed {
        /// Its tid.
        tid: Tid,
    },
    /// The transaction is durable and visible.
    Finished {
        /// Its tid.
        tid: Tid,
        /// Object count and size afterwards.
        size: StorageSize,
    },
    /// The pack is done.
    Packed {
        /// Object count and size afterwards.
        size: StorageSize,
    },
    /// The request failed.
    Failed(BackendError),
}

impl BackendOutcome {
    /// Whether more outcomes follow for the same request.
    pub fn is_partial(&self) -> bool {
        matches!(self, BackendOutcome::BlobChunk(_) | BackendOutcome::Committed { .. })
    }
}
