//! Writes: fanned out to every optimal backend, answered once all of them have.
//!
//! ```text
//!   Vote ──▶ every optimal backend ──all answered──▶ compare ──▶ answer the reference's outcome
//!                                                      │ differing backends: degraded (+ abort)
//!   Finish/Abort ──▶ the backends that voted (and are still optimal)
//!        Finish: Committed forwarded once every leg committed (group commit), Finished once
//!        every leg finished; a leg that fails is degraded and left to recovery; the answer is
//!        held until the RAID state that records the degradation is durable.
//!   Pack, blob upload start/chunk/drop ──▶ every optimal backend, compared like a vote
//! ```
//!
//! Invariants: a fan-out waits only for optimal backends (a leg whose backend leaves counts as
//! failed at once); every transaction voted on a backend is finished or aborted on it, or the
//! backend is out of the RAID (and told to abort).

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{BackendId, Oid, Tid};
use crate::mutation::{self, Mutation};
use crate::zeo::backend::{
    BackendError, BackendOutcome, BackendReqId, BackendRequest, Culprit, TxnOp, UploadId,
};

use super::compare::{same_outcome, summary};
use super::{failed_raid, Owner, Raid};

/// The voted transaction, between `Vote` and `Finish`/`Abort`.
#[derive(Debug, Clone)]
pub(crate) struct TxnState {
    /// Its tid.
    pub tid: Tid,
    /// The backends that voted it.
    pub voted: Vec<BackendId>,
    /// The blob uploads its vote consumes.
    pub uploads: Vec<UploadId>,
    /// Its data bytes (the live commit rate the recovery keeps ahead of).
    pub bytes: u64,
}

/// What a fan-out is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FanKind {
    Vote { tid: Tid, max_oid: Option<Oid> },
    Finish { tid: Tid },
    Abort,
    Pack,
    Other,
}

/// A fan-out in progress.
#[derive(Debug, Clone)]
pub(crate) struct FanJob {
    pub kind: FanKind,
    /// Legs still out, by backend.
    pub waiting: BTreeMap<BackendId, BackendReqId>,
    /// Final outcomes by backend.
    pub results: BTreeMap<BackendId, BackendOutcome>,
    /// Legs that answered `Committed` (group commit).
    pub committed: BTreeSet<BackendId>,
    pub committed_sent: bool,
    /// Blob uploads a vote names, or a finish/abort consumes.
    pub uploads: Vec<UploadId>,
    /// A vote's data bytes.
    pub bytes: u64,
}

/// Whether a request is fanned out to every optimal backend.
pub(crate) fn is_fanned(r: &BackendRequest) -> bool {
    matches!(
        r,
        BackendRequest::Vote(_)
            | BackendRequest::Finish { .. }
            | BackendRequest::Abort { .. }
            | BackendRequest::Pack { .. }
            | BackendRequest::BlobUploadStart { .. }
            | BackendRequest::BlobUploadChunk { .. }
            | BackendRequest::BlobUploadDrop { .. }
    )
}

impl Raid {
    pub(super) fn start_fan(&mut self, front: BackendReqId, request: BackendRequest) {
        let optimal = self.optimal();
        let mut uploads = Vec::new();
        let mut bytes = 0;
        let (kind, targets) = match &request {
            BackendRequest::Vote(v) => {
                let max_oid = v.ops.iter().filter_map(|op| op.written_oid()).max();
                for op in &v.ops {
                    match op {
                        TxnOp::StoreBlob { upload, data, .. } | TxnOp::RestoreBlob { upload, data, .. } => {
                            uploads.push(*upload);
                            bytes += data.len() as u64;
                        }
                        TxnOp::Store { data, .. } => bytes += data.len() as u64,
                        TxnOp::Restore { data, .. } => bytes += data.as_ref().map_or(0, |d| d.len() as u64),
                        _ => {}
                    }
                }
                (FanKind::Vote { tid: v.tid, max_oid }, optimal)
            }
            BackendRequest::Pack { .. } => {
                if let Some(r) =
                    self.recovery.as_ref().filter(|_| !mutation::active(Mutation::PackDuringRecovery))
                {
                    let msg = format!(
                        "zeoraid: a recovery of backend {} is running; pack refused until it is done",
                        self.member_name(r.target)
                    );
                    let error = BackendError {
                        error: crate::wire::error::ZeoError::Other {
                            class_path: crate::wire::value::Text::from_static(
                                "ZODB.POSException.StorageError",
                            ),
                            payload: crate::wire::value::Value::list(vec![crate::wire::value::Value::Str(
                                crate::wire::value::Text::from(msg),
                            )]),
                        },
                        culprit: Culprit::Client,
                    };
                    self.answer(front, BackendOutcome::Failed(error), false);
                    return;
                }
                (FanKind::Pack, optimal)
            }
            BackendRequest::Finish { tid } | BackendRequest::Abort { tid } => {
                let voted = match self.txn.take() {
                    Some(t) if t.tid == *tid => {
                        uploads = t.uploads;
                        bytes = t.bytes;
                        t.voted
                    }
                    other => {
                        self.txn = other;
                        optimal.clone()
                    }
                };
                // An abort after a vote that answered conflicts consumes that vote's uploads.
                uploads.extend(std::mem::take(&mut self.uploads.conflicted));
                // Backends that voted but left the RAID since: tell them to abort.
                for &b in voted.iter().filter(|b| !optimal.contains(b)) {
                    if self.members.contains_key(&b) {
                        self.submit(b, Owner::Forget, BackendRequest::Abort { tid: *tid });
                    }
                }
                let targets: Vec<BackendId> = voted.into_iter().filter(|b| optimal.contains(b)).collect();
                let kind = if matches!(request, BackendRequest::Finish { .. }) {
                    FanKind::Finish { tid: *tid }
                } else {
                    FanKind::Abort
                };
                (kind, targets)
            }
            _ => (FanKind::Other, optimal),
        };
        if targets.is_empty() {
            let outcome = if kind == FanKind::Abort { BackendOutcome::Nil } else { failed_raid() };
            self.answer(front, outcome, false);
            return;
        }
        let mut job = FanJob {
            kind,
            waiting: BTreeMap::new(),
            results: BTreeMap::new(),
            committed: BTreeSet::new(),
            committed_sent: false,
            uploads,
            bytes,
        };
        for b in targets {
            let id = self.submit(b, Owner::Fan(front), request.clone());
            job.waiting.insert(b, id);
        }
        self.fans.insert(front, job);
        // The recovering target gets the front's blob uploads too (see `recovery`).
        self.rec_track_upload(&request);
    }

    pub(super) fn fan_outcome(&mut self, front: BackendReqId, b: BackendId, outcome: BackendOutcome) {
        let Some(job) = self.fans.get_mut(&front) else { return };
        if !job.waiting.contains_key(&b) {
            return;
        }
        let first_ends = match (job.kind, &outcome) {
            (FanKind::Vote { .. }, BackendOutcome::Voted { .. }) => {
                mutation::active(Mutation::VoteBeforeAllVoted)
            }
            (FanKind::Finish { .. }, BackendOutcome::Finished { .. }) => {
                mutation::active(Mutation::FinishBeforeAllFinished)
            }
            _ => false,
        };
        if let BackendOutcome::Committed { .. } = outcome {
            job.committed.insert(b);
        } else {
            job.waiting.remove(&b);
            job.results.insert(b, outcome);
        }
        if first_ends {
            job.waiting.clear(); // mutation: settled on this leg alone, the others are ignored
        }
        if job.waiting.is_empty() {
            if let Some(job) = self.fans.remove(&front) {
                self.settle(front, job);
            }
            return;
        }
        // Group commit: the lock passes on once every remaining leg has committed.
        if let FanKind::Finish { tid } = job.kind {
            let all_committed = job.waiting.keys().all(|b| job.committed.contains(b));
            let any_ok = job.results.values().any(|o| matches!(o, BackendOutcome::Finished { .. }))
                || !job.committed.is_empty();
            if all_committed && any_ok && !job.committed_sent {
                job.committed_sent = true;
                self.answer(front, BackendOutcome::Committed { tid }, false);
            }
        }
    }

    /// Every leg has answered: compare, degrade the odd ones out, answer the front.
    fn settle(&mut self, front: BackendReqId, job: FanJob) {
        // Legs that failed with a backend fault were degraded already; the others decide.
        let ok: Vec<(BackendId, BackendOutcome)> = job
            .results
            .into_iter()
            .filter(|(b, o)| {
                self.is_optimal(*b)
                    && !matches!(o, BackendOutcome::Failed(e) if e.culprit == Culprit::Backend)
            })
            .collect();
        let what = match job.kind {
            FanKind::Vote { tid, .. } => format!("vote of {tid}"),
            FanKind::Finish { tid } => format!("finish of {tid}"),
            FanKind::Abort => "abort".to_string(),
            FanKind::Pack => "pack".to_string(),
            FanKind::Other => "a write".to_string(),
        };
        let Some((reference, answer)) = ok.first().cloned() else {
            let outcome = match job.kind {
                FanKind::Abort => BackendOutcome::Nil,
                _ => BackendOutcome::Failed(BackendError::backend(format!(
                    "zeoraid: {what} failed on every backend (the RAID has failed)"
                ))),
            };
            self.answer(front, outcome, false);
            self.rec_uploads_consumed(&job.uploads);
            self.rec_after_settle(None);
            return;
        };
        let ref_name = self.member_name(reference);
        let mut agree = vec![reference];
        for (b, o) in ok.iter().skip(1) {
            if same_outcome(&answer, o) {
                agree.push(*b);
                continue;
            }
            let reason =
                format!("disagreed with {ref_name} at {what}: {} vs {}", summary(o), summary(&answer));
            self.degrade(*b, reason);
            if let (BackendOutcome::Voted { .. }, FanKind::Vote { tid, .. }) = (o, job.kind) {
                self.submit(*b, Owner::Forget, BackendRequest::Abort { tid });
            }
        }
        let mut finished = None;
        match (job.kind, &answer) {
            (FanKind::Vote { .. }, BackendOutcome::Conflicts(_)) => {
                self.uploads.conflicted = job.uploads.clone();
                self.answer(front, answer, false);
            }
            (FanKind::Vote { .. }, BackendOutcome::Failed(_)) => {
                self.rec_uploads_consumed(&job.uploads);
                self.answer(front, answer, false);
            }
            (FanKind::Vote { tid, max_oid }, BackendOutcome::Voted { .. }) => {
                self.uploads.conflicted.clear();
                self.txn =
                    Some(TxnState { tid, voted: agree, uploads: job.uploads.clone(), bytes: job.bytes });
                if let Some(max) = max_oid {
                    self.next_oid = self.next_oid.max(Oid::new(max.get().saturating_add(1)));
                    self.reserve_oids();
                }
                self.answer(front, answer, false);
            }
            (FanKind::Finish { tid }, BackendOutcome::Finished { size, .. }) => {
                self.last_tid = self.last_tid.max(tid);
                self.held_tid = self.held_tid.max(tid);
                self.acked_tid = self.acked_tid.max(tid);
                self.size = *size;
                finished = Some((tid, job.bytes));
                // Acknowledged only once the state that excludes any backend that missed it is durable.
                self.answer(front, answer, !mutation::active(Mutation::FinishBeforeStateSaved));
            }
            (FanKind::Pack, BackendOutcome::Packed { size }) => {
                self.size = *size;
                self.answer(front, answer, false);
            }
            _ => self.answer(front, answer, false),
        }
        if matches!(job.kind, FanKind::Finish { .. } | FanKind::Abort) {
            self.rec_uploads_consumed(&job.uploads);
        }
        self.rec_after_settle(finished);
    }
}
