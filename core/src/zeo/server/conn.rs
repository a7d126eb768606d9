//! Per-connection state.
//!
//! ```text
//!  connect ──► AwaitingHandshake ──Z5/M5──► AwaitingRegister ──register ok──► Registered
//!                   │  ruok / bad frame            │  anything but register       │
//!                   └──────────────► Closed ◄──────┴──────────────────────────────┘
//! ```
//! A failed `register` (unknown storage, read-only) stays in `AwaitingRegister`. `Closed` is
//! not stored: a closed connection is removed from the server at once (its transaction aborted,
//! its uploads and iterators dropped), and later input for it is ignored.
//!
//! Invariants (checked by `Server::check`): a connection has at most one transaction and one
//! upload slot; a transaction waiting for the lock is in the lock's queue and only then; a
//! transaction in `Voting`/`Voted`/`Finishing` holds the lock; an iterator has at most one
//! backend request in flight, and queued calls only while one is in flight.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::ids::{Oid, Tid};
use crate::wire::codec::Codec;
use crate::wire::frame::FrameDecoder;
use crate::wire::message::MsgId;
use crate::wire::types::{Extension, TxnId, TxnStatus};
use crate::zeo::backend::{BackendIterId, BackendReqId, TxnOp, UploadId};
use crate::zeo::events::StorageIdx;

use super::outbox::Outbox;

/// Where a connection is in its life (see the module diagram).
#[derive(Debug)]
pub(crate) enum ConnState {
    /// Waiting for the client's `Z5`/`M5`/`ruok`.
    AwaitingHandshake,
    /// Handshake done; only `register` is allowed.
    AwaitingRegister,
    /// Attached to a storage.
    Registered(Box<Reg>),
}

/// One client connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) label: String,
    pub(crate) decoder: FrameDecoder,
    /// Set by the handshake.
    pub(crate) codec: Option<Codec>,
    pub(crate) state: ConnState,
    pub(crate) outbox: Outbox,
}

impl Conn {
    pub(crate) fn reg(&self) -> Option<&Reg> {
        match &self.state {
            ConnState::Registered(r) => Some(r),
            _ => None,
        }
    }

    pub(crate) fn reg_mut(&mut self) -> Option<&mut Reg> {
        match &mut self.state {
            ConnState::Registered(r) => Some(r),
            _ => None,
        }
    }
}

/// The state of a registered connection.
#[derive(Debug)]
pub(crate) struct Reg {
    pub(crate) storage: StorageIdx,
    pub(crate) read_only: bool,
    pub(crate) txn: Option<Txn>,
    /// The open blob upload (`storeBlobStart` … `storeBlobEnd`).
    pub(crate) upload: Option<UploadId>,
    pub(crate) iters: BTreeMap<i64, Iter>,
    pub(crate) next_iid: i64,
}

/// What a transaction iterator or record iterator is doing.
#[derive(Debug)]
pub(crate) struct Iter {
    pub(crate) backend: BackendIterId,
    pub(crate) records: bool,
    /// The last transaction a transaction iterator returned.
    pub(crate) last_txn: Option<Tid>,
    /// The request in flight (at most one).
    pub(crate) in_flight: Option<BackendReqId>,
    /// Calls waiting for it, with their reserved request ids.
    pub(crate) queue: VecDeque<(BackendReqId, MsgId, IterOp)>,
}

/// A queued iterator call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IterOp {
    /// `iterator_next` / `iterator_record_next`.
    Next,
    /// `iterator_record_start(this, tid)`.
    RecordStart(Tid),
}

/// A ZEO transaction buffered by the front.
///
/// ```text
///  tpc_begin ─► Open ──vote──► Waiting ──lock──► Voting ──Voted──► Voted ──tpc_finish──► Finishing
///                 ▲  (lock busy)  └──lock free──────┘  │                                 │
///                 └──────── Conflicts ─────────────────┘   Failed / abort / Finished ─► gone
///                                                         Committed (group commit) ─► Committed
///                                                         (lock passed on) ──Finished/Failed──► gone
/// ```
#[derive(Debug)]
pub(crate) struct Txn {
    pub(crate) id: TxnId,
    pub(crate) user: Bytes,
    pub(crate) description: Bytes,
    pub(crate) extension: Extension,
    pub(crate) tid: Option<Tid>,
    pub(crate) status: TxnStatus,
    pub(crate) ops: Vec<TxnOp>,
    pub(crate) phase: Phase,
}

impl Txn {
    /// The uploads its operations consume.
    pub(crate) fn uploads(&self) -> Vec<UploadId> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                TxnOp::StoreBlob { upload, .. } => Some(*upload),
                _ => None,
            })
            .collect()
    }
}

/// The phase of a [`Txn`].
#[derive(Debug)]
pub(crate) enum Phase {
    /// Buffering operations.
    Open,
    /// `vote` called, waiting in the lock queue.
    Waiting { msgid: MsgId },
    /// Holding the lock, `Vote` in flight; `abort` once `tpc_abort` asked for it (settled
    /// when the outcome arrives).
    Voting { req: BackendReqId, abort: bool },
    /// Voted (lock held), waiting for `tpc_finish`.
    Voted { tid: Tid, invalidated: Vec<Oid> },
    /// `Finish` in flight.
    Finishing { req: BackendReqId },
    /// The backend committed it (group commit) and the lock has passed on; `Finish` still in
    /// flight until the transaction is durable, when the client gets its reply.
    Committed { req: BackendReqId },
}

impl Phase {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Phase::Open => "open",
            Phase::Waiting { .. } => "waiting",
            Phase::Voting { .. } => "voting",
            Phase::Voted { .. } => "voted",
            Phase::Finishing { .. } => "finishing",
            Phase::Committed { .. } => "committed",
        }
    }

    /// Whether the lock is held in this phase.
    pub(crate) fn holds_lock(&self) -> bool {
        matches!(self, Phase::Voting { .. } | Phase::Voted { .. } | Phase::Finishing { .. })
    }
}
