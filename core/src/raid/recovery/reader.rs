//! The recovery's readers: a transaction iterator on one backend, reading whole transactions
//! ahead into a queue (on the source, with their blobs streamed into uploads on the target).
//! Each transaction comes with all its records in one request (`IterNextWhole`: one round trip
//! to the backend per transaction instead of one per record).
//!
//! ```text
//!  Idle ──IterStart──▶ Opening ──▶ Idle ──IterNextWhole──▶ Next ──txn: queued──▶ Idle
//!   ▲                                                        │ end
//!   │                                                        ▼
//!   └──────────── restart (caught up, not yet switched) ── Ended (Idle, `ended`)
//! ```
//! Invariant: at most one iterator request of a reader is in flight; the queue holds
//! transactions with all their records, in tid order (their blobs may still be arriving, see
//! [`ReadTxn::complete`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use crate::ids::{BackendId, Tid};
use crate::wire::reply::{DataRecord, TxnHeader};
use crate::zeo::backend::{BackendIterId, BackendOutcome, BackendRequest, Culprit, UploadId, WholeTxn};

use super::{outcome_text, RecOp, CONVERGENCE_FACTOR, LIVE_WINDOW, READ_AHEAD_BYTES, READ_AHEAD_TXNS};
use crate::raid::types::RecoveryPhase;
use crate::raid::{Owner, Raid};

/// Which backend a reader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The source.
    Source,
    /// The target (verification only).
    Target,
}

/// A blob being copied for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlobFetch {
    /// Chunks still coming.
    Fetching,
    /// Complete in the target upload.
    Ready,
    /// The source has no blob file for it: the record is restored without one.
    Absent,
}

/// One transaction as read.
#[derive(Debug, Clone)]
pub(crate) struct ReadTxn {
    pub header: TxnHeader,
    pub records: Vec<DataRecord>,
    /// Record index → its blob upload on the target.
    pub blobs: BTreeMap<usize, (UploadId, BlobFetch)>,
    /// Record data and blob bytes.
    pub bytes: u64,
    /// About what it takes in a FileStorage file (headers and data), for the estimates.
    pub file_bytes: u64,
}

impl ReadTxn {
    /// Whether every blob has arrived (or is known absent).
    pub(crate) fn complete(&self) -> bool {
        self.blobs.values().all(|(_, f)| *f != BlobFetch::Fetching)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RState {
    Idle,
    Opening,
    Next,
}

/// A reader of one backend's history.
#[derive(Debug)]
pub(crate) struct Reader {
    pub backend: BackendId,
    pub gen: u32,
    iter: BackendIterId,
    opened: bool,
    state: RState,
    pub queue: VecDeque<ReadTxn>,
    pub queued_bytes: u64,
    pub ended: bool,
    fetch_blobs: bool,
    start: Option<Tid>,
    last: Option<Tid>,
    pub restart_at: Option<Duration>,
}

impl Reader {
    /// A reader from `start` (inclusive; `None`: the beginning).
    pub(crate) fn new(
        backend: BackendId,
        gen: u32,
        start: Option<Tid>,
        fetch_blobs: bool,
        ids: u64,
    ) -> Reader {
        Reader {
            backend,
            gen,
            iter: BackendIterId(ids),
            opened: false,
            state: RState::Idle,
            queue: VecDeque::new(),
            queued_bytes: 0,
            ended: false,
            fetch_blobs,
            start,
            last: None,
            restart_at: None,
        }
    }

    /// No request in flight.
    pub(crate) fn idle(&self) -> bool {
        self.state == RState::Idle
    }

    /// Iterators to drop on the backend when the reader is discarded: its open iterator, unless
    /// a request on it is in flight (then its answer, stale by then, drops it: see
    /// `Raid::rec_outcome`).
    pub(crate) fn open_iters(&self) -> Vec<BackendIterId> {
        if self.opened && self.state == RState::Idle {
            vec![self.iter]
        } else {
            Vec::new()
        }
    }

    /// Target uploads of transactions read and not yet written.
    pub(crate) fn uploads(&self) -> Vec<UploadId> {
        self.queue.iter().flat_map(|t| t.blobs.values().map(|(u, _)| *u)).collect()
    }

    fn find_blob(&mut self, upload: UploadId) -> Option<(&mut ReadTxn, usize)> {
        for t in self.queue.iter_mut() {
            if let Some((&i, _)) = t.blobs.iter().find(|(_, (u, _))| *u == upload) {
                return Some((t, i));
            }
        }
        None
    }
}

/// How `a` (source) and `b` (target) differ, if they do.
pub(crate) fn difference(a: &ReadTxn, b: &ReadTxn) -> Option<String> {
    let (x, y) = (&a.header, &b.header);
    if x.tid != y.tid {
        return Some(format!("source has {} where the target has {}", x.tid, y.tid));
    }
    if x.status != y.status
        || x.user != y.user
        || x.description != y.description
        || x.extension != y.extension
    {
        return Some("the transaction metadata differ".to_string());
    }
    if a.records.len() != b.records.len() {
        return Some(format!("{} records on the source, {} on the target", a.records.len(), b.records.len()));
    }
    for (r, s) in a.records.iter().zip(&b.records) {
        if r != s {
            return Some(format!("the record of oid {} differs", r.oid));
        }
    }
    None
}

/// Whether a record's data may be a blob's (ZODB pickles the class `ZODB.blob.Blob`); the
/// source's `SendBlob` settles it.
fn maybe_blob(data: &Option<Bytes>) -> bool {
    data.as_ref().is_some_and(|d| d.windows(9).any(|w| w == b"ZODB.blob"))
}

impl Raid {
    fn reader_mut(&mut self, side: Side) -> Option<&mut Reader> {
        let r = self.recovery.as_mut()?;
        match side {
            Side::Source => r.src.as_mut(),
            Side::Target => r.tgt.as_mut(),
        }
    }

    /// When the source reader may read the next transaction (pacing).
    fn paced_until(&self) -> Option<Duration> {
        let r = self.recovery.as_ref()?;
        if r.phase == RecoveryPhase::Switching
            || r.phase == RecoveryPhase::Verifying && r.limit == Default::default()
        {
            return None;
        }
        let window = LIVE_WINDOW.as_secs_f64();
        let live_bytes = r.live.iter().map(|(_, b)| *b as f64).sum::<f64>() / window;
        let live_txns = r.live.len() as f64 / window;
        let secs_b = r
            .limit
            .bytes_per_sec
            .map(|b| r.pace_bytes as f64 / (b as f64).max(CONVERGENCE_FACTOR * live_bytes).max(1.0));
        let secs_t = r
            .limit
            .txns_per_sec
            .map(|t| r.pace_txns as f64 / (t as f64).max(CONVERGENCE_FACTOR * live_txns).max(1e-3));
        let secs = secs_b.into_iter().chain(secs_t).fold(0.0_f64, f64::max);
        let at = r.pace_since + Duration::from_secs_f64(secs.min(1e9));
        (at > self.now.mono).then_some(at)
    }

    /// Sends the reader's next request, if it may.
    pub(super) fn read_more(&mut self, side: Side) {
        let now = self.now.mono;
        let paced = if side == Side::Source { self.paced_until() } else { None };
        let rec = self.recovery.as_ref().map_or(0, |r| r.id);
        let Some(rd) = self.reader_mut(side) else { return };
        if rd.state != RState::Idle {
            return;
        }
        if rd.ended {
            match rd.restart_at {
                Some(at) if at <= now => {
                    rd.restart_at = None;
                    rd.ended = false;
                    if let Some(last) = rd.last {
                        rd.start = last.checked_next();
                    }
                }
                _ => return,
            }
        }
        let (backend, gen) = (rd.backend, rd.gen);
        if !rd.opened {
            let start = rd.start;
            rd.state = RState::Opening;
            let ids = self.rec_ids(1);
            if let Some(rd) = self.reader_mut(side) {
                rd.iter = BackendIterId(ids);
                let iter = rd.iter;
                let owner = Owner::Recovery { rec, op: RecOp::Read { side, gen, iter } };
                self.submit(backend, owner, BackendRequest::IterStart { iter, start, stop: None });
            }
            return;
        }
        if rd.queue.len() >= READ_AHEAD_TXNS || rd.queued_bytes >= READ_AHEAD_BYTES {
            return;
        }
        if let Some(at) = paced {
            if let Some(r) = self.recovery.as_mut() {
                r.wake = Some(r.wake.map_or(at, |w| w.min(at)));
            }
            return;
        }
        rd.state = RState::Next;
        let iter = rd.iter;
        let owner = Owner::Recovery { rec, op: RecOp::Read { side, gen, iter } };
        self.submit(backend, owner, BackendRequest::IterNextWhole { iter });
    }

    /// An outcome of a reader's iterator request.
    pub(super) fn reader_outcome(&mut self, side: Side, outcome: BackendOutcome) {
        let rec = self.recovery.as_ref().map_or(0, |r| r.id);
        let target = self.recovery.as_ref().map(|r| r.target);
        let Some(rd) = self.reader_mut(side) else { return };
        let (backend, gen) = (rd.backend, rd.gen);
        match (rd.state, outcome) {
            (RState::Opening, BackendOutcome::Nil) => {
                rd.opened = true;
                rd.state = RState::Idle;
            }
            (RState::Next, BackendOutcome::WholeTxn(Some(whole))) => {
                let WholeTxn { header, records } = *whole;
                rd.last = Some(header.tid);
                rd.state = RState::Idle;
                let fetch_blobs = rd.fetch_blobs;
                // A FileStorage transaction header (23 bytes), its metadata and its length
                // trailer; per record a data record header (42 bytes) and its data.
                let mut txn = ReadTxn { header, records, blobs: BTreeMap::new(), bytes: 0, file_bytes: 31 };
                txn.file_bytes += (txn.header.user.len() + txn.header.description.len()) as u64;
                let mut fetches = Vec::new();
                for (index, record) in txn.records.iter().enumerate() {
                    let data = record.data.as_ref().map_or(0, |d| d.len() as u64);
                    txn.bytes += data;
                    txn.file_bytes += 42 + data;
                    if fetch_blobs && maybe_blob(&record.data) {
                        fetches.push((index, record.oid, record.tid));
                    }
                }
                if let Some(target) = target {
                    for (index, oid, serial) in fetches {
                        let upload = UploadId(self.rec_ids(1));
                        txn.blobs.insert(index, (upload, BlobFetch::Fetching));
                        let up = Owner::Recovery { rec, op: RecOp::Upload };
                        self.submit(target, up, BackendRequest::BlobUploadStart { upload });
                        let blob = Owner::Recovery { rec, op: RecOp::Blob { gen, upload } };
                        self.submit(backend, blob, BackendRequest::SendBlob { oid, serial });
                    }
                }
                let bytes = txn.bytes;
                if let Some(rd) = self.reader_mut(side) {
                    rd.queued_bytes += bytes;
                    rd.queue.push_back(txn);
                }
                if side == Side::Source {
                    if let Some(r) = self.recovery.as_mut() {
                        r.pace_bytes += bytes;
                        r.pace_txns += 1;
                    }
                }
            }
            (RState::Next, BackendOutcome::WholeTxn(None)) => {
                rd.opened = false; // freed by the backend at its end
                rd.ended = true;
                rd.state = RState::Idle;
            }
            (_, other) => {
                let who = if side == Side::Source { "source" } else { "target" };
                let culprit = match &other {
                    BackendOutcome::Failed(e) => Some(e.culprit),
                    _ => None,
                };
                // A source fault degrades the source (and moves the recovery to another one)
                // before this arrives; anything else ends the recovery.
                if side == Side::Source && culprit == Some(Culprit::Backend) {
                    return;
                }
                self.fail_recovery(format!("reading the {who} failed: {}", outcome_text(&other)));
            }
        }
    }

    /// An outcome of a `SendBlob` on the source streamed into `upload`.
    pub(super) fn blob_outcome(&mut self, upload: UploadId, outcome: BackendOutcome) {
        let rec = self.recovery.as_ref().map_or(0, |r| r.id);
        let Some(target) = self.recovery.as_ref().map(|r| r.target) else { return };
        let Some(rd) = self.reader_mut(Side::Source) else { return };
        let Some((txn, i)) = rd.find_blob(upload) else { return };
        let up = Owner::Recovery { rec, op: RecOp::Upload };
        match outcome {
            BackendOutcome::BlobChunk(chunk) => {
                let n = chunk.len() as u64;
                txn.bytes += n;
                rd.queued_bytes += n;
                if let Some(r) = self.recovery.as_mut() {
                    r.pace_bytes += n;
                }
                self.submit(target, up, BackendRequest::BlobUploadChunk { upload, chunk });
            }
            BackendOutcome::Nil => {
                if let Some(b) = txn.blobs.get_mut(&i) {
                    b.1 = BlobFetch::Ready;
                }
            }
            BackendOutcome::Failed(e) if e.culprit == Culprit::Client => {
                // No blob file for this record on the source: restored without one.
                if let Some(b) = txn.blobs.get_mut(&i) {
                    b.1 = BlobFetch::Absent;
                }
                self.submit(target, up, BackendRequest::BlobUploadDrop { upload });
            }
            BackendOutcome::Failed(_) => {} // the source is degraded; the recovery moves on
            other => self.fail_recovery(format!("unexpected answer to sendBlob: {}", outcome_text(&other))),
        }
    }
}
