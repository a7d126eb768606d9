//! Reads: one optimal backend answers, chosen by the fewest requests in flight.
//!
//! A read that fails with a backend fault, times out, or whose backend leaves the RAID is
//! retried on another optimal backend (each at most once); the client sees the failure only
//! when no optimal backend is left. A client's error (POSKeyError, KeyError…) is answered as is.
//!
//! Iterators live on one backend. The RAID remembers where each one is (its range, the last
//! transaction it returned; for a record iterator its transaction and how many records it
//! returned), so that when its backend leaves, the next call re-opens it on another backend at
//! the same position (a *resume chain* of requests whose answers are checked and dropped)
//! before running the call itself. A `sendBlob` that has already streamed chunks cannot be
//! retried (the client has them): its failure is answered.

use std::collections::VecDeque;

use crate::ids::{BackendId, Tid};
use crate::zeo::backend::{
    BackendError, BackendIterId, BackendOutcome, BackendReqId, BackendRequest, Culprit,
};

use super::{failed_raid, Owner, Raid};

/// A read in progress.
#[derive(Debug, Clone)]
pub(crate) struct ReadJob {
    /// The front's request.
    request: BackendRequest,
    /// Resume steps still to run on `backend` before `request`.
    chain: VecDeque<BackendRequest>,
    /// Where it runs now.
    backend: BackendId,
    /// The backend request in flight.
    sub: BackendReqId,
    /// Backends tried (and failed) already.
    tried: Vec<BackendId>,
    /// Whether blob chunks have been passed on to the front.
    streamed: bool,
}

/// Where an iterator lives, and enough of its position to re-open it elsewhere.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum IterRoute {
    /// A transaction iterator.
    Txn {
        /// Its backend.
        backend: BackendId,
        /// First tid (inclusive).
        start: Option<Tid>,
        /// Last tid (inclusive).
        stop: Option<Tid>,
        /// The last transaction it returned.
        last: Option<Tid>,
    },
    /// A record iterator over one transaction.
    Record {
        /// Its backend.
        backend: BackendId,
        /// The transaction iterator it was opened from.
        txn_iter: BackendIterId,
        /// The transaction.
        tid: Tid,
        /// The transaction iterator's stop.
        stop: Option<Tid>,
        /// Records returned so far.
        returned: u64,
    },
}

impl IterRoute {
    fn backend(&self) -> BackendId {
        match self {
            IterRoute::Txn { backend, .. } | IterRoute::Record { backend, .. } => *backend,
        }
    }

    fn set_backend(&mut self, b: BackendId) {
        match self {
            IterRoute::Txn { backend, .. } | IterRoute::Record { backend, .. } => *backend = b,
        }
    }
}

/// The iterator a request is bound to, if any.
fn bound_iter(r: &BackendRequest) -> Option<BackendIterId> {
    match r {
        BackendRequest::IterNext { iter } | BackendRequest::IterRecordNext { iter } => Some(*iter),
        BackendRequest::IterRecordStart { txn_iter, .. } => Some(*txn_iter),
        _ => None,
    }
}

impl Raid {
    /// Least-loaded optimal backend not in `tried` (ties rotate).
    fn choose(&mut self, tried: &[BackendId]) -> Option<BackendId> {
        let candidates: Vec<(BackendId, usize)> = self
            .members
            .iter()
            .filter(|(b, m)| m.state.is_optimal() && !tried.contains(b))
            .map(|(&b, m)| (b, m.outstanding))
            .collect();
        let least = candidates.iter().map(|&(_, n)| n).min()?;
        let ties: Vec<BackendId> = candidates.iter().filter(|&&(_, n)| n == least).map(|&(b, _)| b).collect();
        let pick = ties.iter().copied().find(|b| b.0 > self.rr).or_else(|| ties.first().copied())?;
        self.rr = pick.0;
        Some(pick)
    }

    pub(super) fn start_read(&mut self, front: BackendReqId, request: BackendRequest) {
        let bound = bound_iter(&request).and_then(|i| self.iters.get(&i)).map(IterRoute::backend);
        let target = match bound {
            Some(b) if self.is_optimal(b) => Some(b),
            _ => self.choose(&[]),
        };
        let Some(b) = target else {
            self.answer(front, failed_raid(), false);
            return;
        };
        let chain = if bound.is_some_and(|x| x != b) { self.resume_chain(&request) } else { VecDeque::new() };
        let job =
            ReadJob { request, chain, backend: b, sub: BackendReqId(0), tried: Vec::new(), streamed: false };
        self.reads.insert(front, job);
        self.send_read(front, b);
    }

    /// Sends the next step of `front`'s read to `b`.
    fn send_read(&mut self, front: BackendReqId, b: BackendId) {
        let Some(job) = self.reads.get(&front) else { return };
        let (req, last_step) = match job.chain.front() {
            Some(step) => (step.clone(), false),
            None => (job.request.clone(), true),
        };
        if last_step {
            self.rebase_iters(&req, b);
        }
        let sub = self.submit(b, Owner::Read(front), req);
        if let Some(job) = self.reads.get_mut(&front) {
            job.backend = b;
            job.sub = sub;
        }
    }

    /// The steps that re-open on another backend the iterator(s) `request` needs.
    fn resume_chain(&self, request: &BackendRequest) -> VecDeque<BackendRequest> {
        let mut chain = VecDeque::new();
        let reopen_txn =
            |chain: &mut VecDeque<BackendRequest>, iter: BackendIterId, at: Tid, stop: Option<Tid>| {
                chain.push_back(BackendRequest::IterStart { iter, start: Some(at), stop });
                chain.push_back(BackendRequest::IterNext { iter });
            };
        match request {
            BackendRequest::IterNext { iter } => {
                if let Some(IterRoute::Txn { start, stop, last, .. }) = self.iters.get(iter) {
                    match last {
                        Some(t) => reopen_txn(&mut chain, *iter, *t, *stop),
                        None => chain.push_back(BackendRequest::IterStart {
                            iter: *iter,
                            start: *start,
                            stop: *stop,
                        }),
                    }
                }
            }
            BackendRequest::IterRecordStart { txn_iter, tid, .. } => {
                if let Some(IterRoute::Txn { stop, .. }) = self.iters.get(txn_iter) {
                    reopen_txn(&mut chain, *txn_iter, *tid, *stop);
                }
            }
            BackendRequest::IterRecordNext { iter } => {
                if let Some(IterRoute::Record { txn_iter, tid, stop, returned, .. }) = self.iters.get(iter) {
                    reopen_txn(&mut chain, *txn_iter, *tid, *stop);
                    chain.push_back(BackendRequest::IterRecordStart {
                        iter: *iter,
                        txn_iter: *txn_iter,
                        tid: *tid,
                    });
                    for _ in 0..*returned {
                        chain.push_back(BackendRequest::IterRecordNext { iter: *iter });
                    }
                }
            }
            _ => {}
        }
        chain
    }

    /// Once a resume chain has run on `b`, the iterators it re-opened live there.
    fn rebase_iters(&mut self, req: &BackendRequest, b: BackendId) {
        let mut moved = Vec::new();
        match req {
            BackendRequest::IterNext { iter } => moved.push(*iter),
            BackendRequest::IterRecordStart { txn_iter, .. } => moved.push(*txn_iter),
            BackendRequest::IterRecordNext { iter } => {
                moved.push(*iter);
                if let Some(IterRoute::Record { txn_iter, .. }) = self.iters.get(iter) {
                    moved.push(*txn_iter);
                }
            }
            _ => {}
        }
        for i in moved {
            if let Some(r) = self.iters.get_mut(&i) {
                r.set_backend(b);
            }
        }
    }

    pub(super) fn read_outcome(
        &mut self,
        front: BackendReqId,
        b: BackendId,
        sub: BackendReqId,
        outcome: BackendOutcome,
    ) {
        let Some(job) = self.reads.get(&front) else { return };
        if job.sub != sub {
            return;
        }
        let in_chain = !job.chain.is_empty();
        let streamed = job.streamed;
        let backend_fault = matches!(&outcome, BackendOutcome::Failed(e) if e.culprit == Culprit::Backend);
        if in_chain && !backend_fault {
            if chain_step_ok(&outcome) {
                if let Some(job) = self.reads.get_mut(&front) {
                    job.chain.pop_front();
                }
                self.send_read(front, b);
                return;
            }
            // The backend cannot re-create the iterator's position: it disagrees.
            self.degrade(b, format!("could not resume an iterator: {}", super::compare::summary(&outcome)));
            self.pump_later_retry(front, b);
            return;
        }
        if backend_fault {
            if streamed {
                self.reads.remove(&front);
                self.answer(front, outcome, false);
            } else {
                self.pump_later_retry(front, b);
            }
            return;
        }
        if let BackendOutcome::BlobChunk(_) = outcome {
            if let Some(job) = self.reads.get_mut(&front) {
                job.streamed = true;
            }
            self.answer(front, outcome, false);
            return;
        }
        let Some(job) = self.reads.remove(&front) else { return };
        self.track_iters(&job.request, b, &outcome);
        self.answer(front, outcome, false);
    }

    /// Retries `front`'s read on another backend after `b` failed it.
    fn pump_later_retry(&mut self, front: BackendReqId, b: BackendId) {
        let Some(job) = self.reads.get_mut(&front) else { return };
        job.tried.push(b);
        let tried = job.tried.clone();
        let request = job.request.clone();
        let Some(next) = self.choose(&tried) else {
            self.reads.remove(&front);
            let err = BackendError::backend(format!(
                "zeoraid: no optimal backend could answer (tried {})",
                tried.iter().map(|b| self.member_name(*b)).collect::<Vec<_>>().join(", ")
            ));
            self.answer(front, BackendOutcome::Failed(err), false);
            return;
        };
        let chain =
            if bound_iter(&request).is_some() { self.resume_chain(&request) } else { VecDeque::new() };
        if let Some(job) = self.reads.get_mut(&front) {
            job.chain = chain;
        }
        self.send_read(front, next);
    }

    /// Follows iterator positions from the answers of the front's iterator calls.
    fn track_iters(&mut self, request: &BackendRequest, b: BackendId, outcome: &BackendOutcome) {
        match (request, outcome) {
            (BackendRequest::IterStart { iter, start, stop }, BackendOutcome::Nil) => {
                self.iters
                    .insert(*iter, IterRoute::Txn { backend: b, start: *start, stop: *stop, last: None });
            }
            (BackendRequest::IterNext { iter }, BackendOutcome::Txn(Some(h))) => {
                if let Some(IterRoute::Txn { last, .. }) = self.iters.get_mut(iter) {
                    *last = Some(h.tid);
                }
            }
            (BackendRequest::IterNext { iter }, BackendOutcome::Txn(None))
            | (BackendRequest::IterRecordNext { iter }, BackendOutcome::Record(None)) => {
                self.iters.remove(iter);
            }
            (BackendRequest::IterRecordStart { iter, txn_iter, tid }, BackendOutcome::Nil) => {
                let stop = match self.iters.get(txn_iter) {
                    Some(IterRoute::Txn { stop, .. }) => *stop,
                    _ => Some(*tid),
                };
                self.iters.insert(
                    *iter,
                    IterRoute::Record { backend: b, txn_iter: *txn_iter, tid: *tid, stop, returned: 0 },
                );
            }
            (BackendRequest::IterRecordNext { iter }, BackendOutcome::Record(Some(_))) => {
                if let Some(IterRoute::Record { returned, .. }) = self.iters.get_mut(iter) {
                    *returned += 1;
                }
            }
            _ => {}
        }
    }

    /// `iterator_gc`: forgets the iterators here and on their backends; answered at once.
    pub(super) fn drop_iters(&mut self, front: BackendReqId, iters: Vec<BackendIterId>) {
        let mut per_backend: std::collections::BTreeMap<BackendId, Vec<BackendIterId>> = Default::default();
        for i in iters {
            if let Some(r) = self.iters.remove(&i) {
                per_backend.entry(r.backend()).or_default().push(i);
            }
        }
        for (b, iters) in per_backend {
            if self.is_optimal(b) {
                self.submit(b, Owner::Forget, BackendRequest::IterDrop { iters });
            }
        }
        self.answer(front, BackendOutcome::Nil, false);
    }
}

/// Whether a resume step's answer is what re-opening an iterator gives.
fn chain_step_ok(o: &BackendOutcome) -> bool {
    matches!(o, BackendOutcome::Nil | BackendOutcome::Txn(Some(_)) | BackendOutcome::Record(Some(_)))
}
