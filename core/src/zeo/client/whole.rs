//! `IterNextWhole`: a transaction and all its records as one outcome, read ahead.
//!
//! ZEO has no call that returns a transaction with its records: each one takes
//! `iterator_next(iid)`, `iterator_record_start(iid, tid)` and `iterator_record_next(riid)` until
//! `None`, each a round trip. To keep the recovery (the only user of `IterNextWhole`) from
//! paying all of them in series, a transaction iterator becomes *read ahead* by its first
//! `IterNextWhole`: the client fetches the next transactions while the core waits for or works on
//! the current one, and answers from its buffer, whole and strictly in iteration order.
//!
//! # Facts of the server this relies on (stock ZEO 6.2 `StorageServer`)
//! * The calls of one connection are handled one after the other, in the order sent.
//! * `iterator_record_start(iid, tid)` is valid only for the transaction the *last*
//!   `iterator_next(iid)` returned; the record iterator it opens stays valid when the
//!   transaction iterator moves on.
//! * `iterator_next` answering `None` frees the transaction iterator, `iterator_record_next`
//!   answering `None` frees the record iterator; `iterator_gc` frees any other. A call on a freed
//!   iid is an error the server logs: no call is ever sent that can hit one.
//! * A FileStorage transaction iterator sees the file as it was when it was created, and its end
//!   (or its `iterator_gc`) *closes the file its record iterators read*. So a call that may end
//!   the iteration must reach the server only when no record iterator of it is still in use.
//!   The client knows a tid that was committed before the iterator was created (`bound`, the
//!   newest of `lastTransaction` at registration and of its own finished commits, when
//!   `iterator_start` was sent, unless its `stop` is below it): after a transaction before
//!   `bound`, `iterator_next` returns a transaction for sure, so it may overlap record reads;
//!   after that, it waits until every record read is done.
//!
//! # The pipeline of one iterator ([`Ahead`])
//! ```text
//!  core: IterNextWhole ──▶ answered from the front of `txns` when it is Done/Failed
//!                          (or None/an error when `txns` is empty and `next` is Ended/Failed)
//!
//!  next: Idle ──iterator_next sent──▶ InFlight ──header i──▶ Idle  (+ txn i: Starting)
//!          ▲                            │ None ──▶ Ended (the server freed the iterator)
//!          └── error delivered ── Failed ◀── error
//!
//!  txn i:  Starting ──riid──▶ Reading(riid) ──record──▶ Reading(riid) ──None──▶ Done
//!   (record_start sent)          (record_next sent)          │ error: iterator_gc([riid])
//!       │ error ────────────────────────────────────────────▶ Failed ◀┘
//! ```
//! When header *i* arrives, `iterator_record_start(iid, tid_i)` is sent at once, and after it,
//! in the same batch, `iterator_next(iid)` for *i+1* if (a) fewer than [`READ_AHEAD_TXNS`]
//! transactions are buffered or being read and fewer than [`READ_AHEAD_BYTES`] bytes of record
//! data are buffered, and (b) `tid_i < bound` or no transaction is `Starting`/`Reading`.
//! Otherwise `iterator_next` goes out when the core takes a transaction or a record read ends
//! and (a) and (b) then hold. Each transaction's record chain runs on its own, concurrently with
//! the others.
//!
//! Invariants:
//! * at most one `iterator_next` of an iterator is in flight, and none after `Ended` (or while
//!   `Failed` waits to be delivered, or once the core dropped the iterator);
//! * `iterator_record_start` for *i* is sent before `iterator_next` for *i+1*;
//! * each `Starting`/`Reading` transaction has exactly one call in flight (`in_flight` counts
//!   them all, with the `iterator_next`); `Done`/`Failed` ones have none and no open record
//!   iterator;
//! * `txns` is in iteration order; the core gets each transaction once, in that order; an
//!   error fails the one answer at its place (a failed `iterator_next` the answer after the
//!   buffered transactions, after which reading resumes as today: the next request sends
//!   `iterator_next` again);
//! * every waiting request is answered exactly once: from the buffer, by `IterDrop` (failed),
//!   or by `fail_all`.
//!
//! # Freeing
//! The server frees the transaction iterator at its end and each record iterator at its end;
//! a record iterator whose read failed is freed with `iterator_gc` at once. On `IterDrop` the
//! waiting requests are failed, nothing more is sent for the iterator, and once the calls in
//! flight are answered (their replies are only used to learn which iids are still open) one
//! `iterator_gc` frees the transaction iterator (unless it ended) and every record iterator
//! left open. `fail_all` discards everything: the server frees a closed connection's iterators.
//! The plain `IterNext`/`IterRecordStart` on an iterator being read ahead fails.

use std::collections::VecDeque;

use super::{backend_failure, ClientError, Expect, IterSlot, ZeoClient};
use crate::ids::Tid;
use crate::wire::error::ZeoError;
use crate::wire::reply::Reply;
use crate::wire::request::Request;
use crate::wire::types::IterId;
use crate::zeo::backend::{BackendIterId, BackendOutcome, BackendReqId, WholeTxn};

/// Transactions an iterator reads ahead at most: buffered, being read, or being fetched (one
/// `iterator_next`). 16 keeps 16 round trips' worth of work in flight on a slow link, a small
/// part of what the recovery itself queues.
pub const READ_AHEAD_TXNS: usize = 16;
/// Record data bytes buffered or being read, above which no further transaction is fetched
/// (transactions already being read are read to their end).
pub const READ_AHEAD_BYTES: u64 = 4 << 20;

/// A call of a read-ahead pipeline; `seq` names the transaction in [`Ahead::txns`].
#[derive(Debug, Clone)]
pub(super) enum AheadCall {
    /// `iterator_next(iid)`.
    Next,
    /// `iterator_record_start(iid, tid)` for transaction `seq`.
    RecordStart { seq: u64 },
    /// `iterator_record_next(riid)` for transaction `seq`.
    RecordNext { seq: u64, riid: IterId },
}

/// Where the read of one transaction is (see the module documentation).
#[derive(Debug)]
enum TxnRead {
    Starting,
    Reading,
    Done,
    Failed(ZeoError),
}

/// A transaction of the read-ahead buffer.
#[derive(Debug)]
struct Buffered {
    seq: u64,
    txn: Box<WholeTxn>,
    read: TxnRead,
    /// Record data bytes of `txn`.
    bytes: u64,
}

/// The `iterator_next` side of the pipeline.
#[derive(Debug)]
enum NextState {
    Idle,
    InFlight,
    Ended,
    Failed(ZeoError),
}

/// The read-ahead state of one transaction iterator (see the module documentation).
#[derive(Debug)]
pub(super) struct Ahead {
    /// The core's handle; `None` once the core dropped it (then only draining replies).
    iter: Option<BackendIterId>,
    /// The transaction iterator on the server.
    iid: IterId,
    /// `iterator_next` overlaps record reads only after a transaction before this tid.
    bound: Option<Tid>,
    txns: VecDeque<Buffered>,
    next: NextState,
    /// The tid of the newest header received.
    last: Option<Tid>,
    next_seq: u64,
    /// `IterNextWhole` requests waiting for an answer, oldest first.
    waiting: VecDeque<BackendReqId>,
    /// Record data bytes in `txns`.
    bytes: u64,
    /// Calls of this pipeline awaiting their reply.
    in_flight: usize,
    /// After the drop: record iterators that replies showed to be open.
    orphans: Vec<IterId>,
    /// A failed `iterator_next` was delivered: the next one goes out only for a waiting
    /// request (the iterator may be gone on the server), until a header arrives.
    halted: bool,
}

impl Ahead {
    fn reading(&self) -> bool {
        self.txns.iter().any(|b| matches!(b.read, TxnRead::Starting | TxnRead::Reading))
    }

    /// Whether `iterator_next` should go out now.
    fn wants_next(&self) -> bool {
        let overlap_ok = match (self.last, self.bound) {
            (Some(last), Some(bound)) => last < bound,
            _ => false,
        };
        self.iter.is_some()
            && matches!(self.next, NextState::Idle)
            && (!self.halted || !self.waiting.is_empty())
            && self.txns.len() < READ_AHEAD_TXNS
            && self.bytes < READ_AHEAD_BYTES
            && (overlap_ok || !self.reading())
    }

    fn slot(&mut self, seq: u64) -> Option<&mut Buffered> {
        self.txns.iter_mut().find(|b| b.seq == seq)
    }
}

impl ZeoClient {
    /// `IterNextWhole { iter }` (the client is `Ready`).
    pub(super) fn start_whole(&mut self, id: BackendReqId, iter: BackendIterId) -> Result<(), ClientError> {
        let key = match self.iters.get_mut(&iter) {
            Some(IterSlot::Ahead(key)) => *key,
            Some(IterSlot::Open { iid, bound }) => {
                let (iid, bound) = (*iid, *bound);
                let key = self.next_ahead;
                self.next_ahead += 1;
                self.iters.insert(iter, IterSlot::Ahead(key));
                self.aheads.insert(
                    key,
                    Ahead {
                        iter: Some(iter),
                        iid,
                        bound,
                        txns: VecDeque::new(),
                        next: NextState::Idle,
                        last: None,
                        next_seq: 0,
                        waiting: VecDeque::new(),
                        bytes: 0,
                        in_flight: 0,
                        orphans: Vec::new(),
                        halted: false,
                    },
                );
                key
            }
            Some(IterSlot::Opening { waiting, .. }) => {
                waiting.push((id, crate::zeo::backend::BackendRequest::IterNextWhole { iter }));
                return Ok(());
            }
            None => {
                self.answer(id, not_open(iter));
                return Ok(());
            }
        };
        if let Some(a) = self.aheads.get_mut(&key) {
            a.waiting.push_back(id);
        }
        self.deliver_ahead(key)
    }

    /// Answers the waiting requests the buffer can answer, then fetches more if it may.
    fn deliver_ahead(&mut self, key: u64) -> Result<(), ClientError> {
        let Some(a) = self.aheads.get_mut(&key) else { return Ok(()) };
        let mut answers = Vec::new();
        let mut ended = false;
        while let Some(&id) = a.waiting.front() {
            let outcome = match a.txns.front().map(|b| &b.read) {
                Some(TxnRead::Done | TxnRead::Failed(_)) => {
                    let Some(b) = a.txns.pop_front() else { break };
                    a.bytes -= b.bytes;
                    match b.read {
                        TxnRead::Failed(e) => super::replies::failed(e),
                        _ => BackendOutcome::WholeTxn(Some(b.txn)),
                    }
                }
                Some(TxnRead::Starting | TxnRead::Reading) => break,
                None => match std::mem::replace(&mut a.next, NextState::Idle) {
                    NextState::Ended => {
                        ended = true;
                        BackendOutcome::WholeTxn(None)
                    }
                    NextState::Failed(e) => {
                        a.halted = true;
                        super::replies::failed(e)
                    }
                    other => {
                        a.next = other;
                        break;
                    }
                },
            };
            a.waiting.pop_front();
            answers.push((id, outcome));
            if ended {
                break;
            }
        }
        if ended {
            // The server freed the iterator: later requests find it unknown, as after IterNext.
            if let Some(a) = self.aheads.remove(&key) {
                if let Some(iter) = a.iter {
                    self.iters.remove(&iter);
                    answers.extend(a.waiting.into_iter().map(|id| (id, not_open(iter))));
                }
            }
        }
        for (id, outcome) in answers {
            self.answer(id, outcome);
        }
        self.pump_ahead(key)
    }

    /// Sends `iterator_next` if the pipeline may (see [`Ahead::wants_next`]).
    fn pump_ahead(&mut self, key: u64) -> Result<(), ClientError> {
        let Some(a) = self.aheads.get_mut(&key) else { return Ok(()) };
        if !a.wants_next() {
            return Ok(());
        }
        a.next = NextState::InFlight;
        a.in_flight += 1;
        let iid = a.iid;
        self.call(Request::IteratorNext { iid }, Expect::Ahead { key, call: AheadCall::Next })
    }

    /// `IterDrop` of an iterator being read ahead: fails its waiting requests; its iids go into
    /// `gc` now if nothing is in flight, else into one `iterator_gc` once the replies are in.
    pub(super) fn drop_ahead(&mut self, key: u64, gc: &mut Vec<IterId>) {
        let Some(a) = self.aheads.get_mut(&key) else { return };
        let Some(iter) = a.iter.take() else { return };
        let waiting: Vec<BackendReqId> = a.waiting.drain(..).collect();
        a.txns.clear();
        a.bytes = 0;
        if a.in_flight == 0 {
            if !matches!(a.next, NextState::Ended) {
                gc.push(a.iid);
            }
            self.aheads.remove(&key);
        }
        for id in waiting {
            self.answer(id, backend_failure(format!("iterator {} was dropped", iter.0)));
        }
    }

    /// A reply to a call of a read-ahead pipeline.
    pub(super) fn on_ahead_reply(
        &mut self,
        key: u64,
        call: AheadCall,
        reply: Result<Reply, ZeoError>,
    ) -> Result<(), ClientError> {
        let Some(a) = self.aheads.get_mut(&key) else {
            return Err(ClientError::Unexpected(format!("a reply for a forgotten read-ahead ({call:?})")));
        };
        a.in_flight = a.in_flight.saturating_sub(1);
        if a.iter.is_none() {
            return self.on_dropped_reply(key, call, reply);
        }
        match (call, reply) {
            (AheadCall::Next, Ok(Reply::IteratorNext(Some(header)))) => {
                let seq = a.next_seq;
                a.next_seq += 1;
                a.last = Some(header.tid);
                a.next = NextState::Idle;
                a.halted = false;
                let tid = header.tid;
                let txn = Box::new(WholeTxn { header, records: Vec::new() });
                a.txns.push_back(Buffered { seq, txn, read: TxnRead::Starting, bytes: 0 });
                a.in_flight += 1;
                let txn_iid = a.iid;
                // Before any further iterator_next (pump_ahead, below): only valid for the
                // transaction the last one returned.
                self.call(
                    Request::IteratorRecordStart { txn_iid, tid },
                    Expect::Ahead { key, call: AheadCall::RecordStart { seq } },
                )?;
                self.pump_ahead(key)
            }
            (AheadCall::Next, Ok(Reply::IteratorNext(None))) => {
                a.next = NextState::Ended;
                self.deliver_ahead(key)
            }
            (AheadCall::Next, Err(e)) => {
                a.next = NextState::Failed(e);
                self.deliver_ahead(key)
            }
            (AheadCall::RecordStart { seq }, Ok(Reply::IterId(riid))) => {
                let Some(b) = a.slot(seq) else { return Err(lost(seq)) };
                b.read = TxnRead::Reading;
                a.in_flight += 1;
                self.call(
                    Request::IteratorRecordNext { riid },
                    Expect::Ahead { key, call: AheadCall::RecordNext { seq, riid } },
                )
            }
            (AheadCall::RecordNext { seq, riid }, Ok(Reply::IteratorRecordNext(Some(r)))) => {
                let Some(b) = a.slot(seq) else { return Err(lost(seq)) };
                let n = r.data.as_ref().map_or(0, |d| d.len() as u64);
                b.txn.records.push(r);
                b.bytes += n;
                a.bytes += n;
                a.in_flight += 1;
                self.call(
                    Request::IteratorRecordNext { riid },
                    Expect::Ahead { key, call: AheadCall::RecordNext { seq, riid } },
                )
            }
            (AheadCall::RecordNext { seq, .. }, Ok(Reply::IteratorRecordNext(None))) => {
                let Some(b) = a.slot(seq) else { return Err(lost(seq)) };
                b.read = TxnRead::Done;
                self.deliver_ahead(key)
            }
            (AheadCall::RecordStart { seq }, Err(e)) => {
                fail_txn(a, seq, e)?;
                self.deliver_ahead(key)
            }
            (AheadCall::RecordNext { seq, riid }, Err(e)) => {
                fail_txn(a, seq, e)?;
                // The server keeps a record iterator whose read failed.
                self.cast(Request::IteratorGc { iids: vec![riid] })?;
                self.deliver_ahead(key)
            }
            (call, Ok(other)) => {
                Err(super::replies::unexpected(&format!("iterator_next_whole read-ahead ({call:?})"), &other))
            }
        }
    }

    /// A late reply after `IterDrop`: notes which iids stay open; the last one sends the gc.
    fn on_dropped_reply(
        &mut self,
        key: u64,
        call: AheadCall,
        reply: Result<Reply, ZeoError>,
    ) -> Result<(), ClientError> {
        let Some(a) = self.aheads.get_mut(&key) else { return Ok(()) };
        match (call, reply) {
            (AheadCall::Next, Ok(Reply::IteratorNext(None))) => a.next = NextState::Ended,
            (AheadCall::RecordStart { .. }, Ok(Reply::IterId(riid)))
            | (AheadCall::RecordNext { riid, .. }, Ok(Reply::IteratorRecordNext(Some(_))) | Err(_)) => {
                a.orphans.push(riid)
            }
            _ => {}
        }
        if a.in_flight > 0 {
            return Ok(());
        }
        let Some(a) = self.aheads.remove(&key) else { return Ok(()) };
        let mut iids = a.orphans;
        if !matches!(a.next, NextState::Ended) {
            iids.insert(0, a.iid);
        }
        if iids.is_empty() {
            return Ok(());
        }
        self.cast(Request::IteratorGc { iids })
    }

    /// `fail_all`: every request waiting on a read-ahead, and forgets them all.
    pub(super) fn take_ahead_waiting(&mut self) -> Vec<BackendReqId> {
        std::mem::take(&mut self.aheads).into_values().flat_map(|a| a.waiting).collect()
    }

    /// Invariants of the read-ahead pipelines (see the module documentation).
    pub(super) fn check_aheads(&self) -> Result<(), String> {
        for (key, a) in &self.aheads {
            let reading = a.txns.iter().filter(|b| matches!(b.read, TxnRead::Starting | TxnRead::Reading));
            let expected = reading.count() + usize::from(matches!(a.next, NextState::InFlight));
            if a.iter.is_some() && a.in_flight != expected {
                return Err(format!(
                    "read-ahead {key}: {} calls in flight, {expected} expected",
                    a.in_flight
                ));
            }
            if a.iter.is_none() && (a.in_flight == 0 || !a.waiting.is_empty() || !a.txns.is_empty()) {
                return Err(format!("dropped read-ahead {key} kept with nothing to wait for"));
            }
            if a.txns.len() > READ_AHEAD_TXNS {
                return Err(format!("read-ahead {key} holds {} transactions", a.txns.len()));
            }
            if a.bytes != a.txns.iter().map(|b| b.bytes).sum::<u64>() {
                return Err(format!("read-ahead {key}: byte count off"));
            }
            if let Some(iter) = a.iter {
                if !matches!(self.iters.get(&iter), Some(IterSlot::Ahead(k)) if k == key) {
                    return Err(format!("read-ahead {key} is not the slot of iterator {}", iter.0));
                }
            }
        }
        Ok(())
    }
}

/// Transaction `seq` failed: its records are dropped, the error waits for its turn.
fn fail_txn(a: &mut Ahead, seq: u64, e: ZeoError) -> Result<(), ClientError> {
    let Some(b) = a.slot(seq) else { return Err(lost(seq)) };
    b.read = TxnRead::Failed(e);
    b.txn.records.clear();
    let freed = std::mem::take(&mut b.bytes);
    a.bytes -= freed;
    Ok(())
}

fn not_open(iter: BackendIterId) -> BackendOutcome {
    backend_failure(format!("iterator {} is not open on this connection", iter.0))
}

fn lost(seq: u64) -> ClientError {
    ClientError::Unexpected(format!("a reply for transaction {seq} the read-ahead no longer holds"))
}
