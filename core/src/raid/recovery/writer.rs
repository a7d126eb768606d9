//! The recovery's writer: votes and finishes the source's transactions on the target, one at a
//! time, in tid order.
//!
//! ```text
//!  Idle ──txn complete──▶ (Serials: remote target with blobs) ──▶ Voting ──▶ Finishing ──▶ Idle
//! ```
//! Invariant: `handed` is the newest tid taken from the reader; at most one transaction is
//! between vote and finish on the target.

use std::collections::BTreeMap;

use crate::ids::{Oid, Tid};
use crate::zeo::backend::{BackendOutcome, BackendRequest, Culprit, TxnOp, VoteRequest};

use super::progress::sample;
use super::reader::{BlobFetch, ReadTxn};
use super::{outcome_text, RecOp, SYNC_EVERY};
use crate::raid::{Owner, Raid};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum WState {
    #[default]
    Idle,
    Serials,
    Voting,
    Finishing,
}

/// The writer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    state: WState,
    txn: Option<ReadTxn>,
    serials: BTreeMap<Oid, Tid>,
    waiting: usize,
    /// The newest transaction taken from the reader.
    pub handed: Tid,
}

impl Writer {
    /// Whether a transaction is being written.
    pub(crate) fn busy(&self) -> bool {
        self.state != WState::Idle
    }

    /// The transaction that may be voted on the target and not finished.
    pub(crate) fn open_tid(&self) -> Option<Tid> {
        match self.state {
            WState::Voting | WState::Finishing => self.txn.as_ref().map(|t| t.header.tid),
            _ => None,
        }
    }
}

impl Raid {
    /// Takes the next complete transaction from the source reader and starts writing it.
    pub(super) fn write_step(&mut self) {
        let rec = self.recovery.as_ref().map_or(0, |r| r.id);
        let Some(r) = self.recovery.as_mut() else { return };
        if r.writer.busy() || r.beginning_rebuild {
            return;
        }
        let Some(src) = r.src.as_mut() else { return };
        if !src.queue.front().is_some_and(|t| t.complete()) {
            return;
        }
        let Some(txn) = src.queue.pop_front() else { return };
        src.queued_bytes = src.queued_bytes.saturating_sub(txn.bytes);
        let target = r.target;
        r.writer.handed = txn.header.tid;
        let remote = !self.members.get(&target).and_then(|m| m.info.as_ref()).is_some_and(|i| i.rebuildable);
        let mut oids: Vec<Oid> = txn
            .blobs
            .iter()
            .filter(|(_, (_, f))| *f == BlobFetch::Ready)
            .filter_map(|(&i, _)| txn.records.get(i).map(|rec| rec.oid))
            .collect();
        oids.sort();
        oids.dedup();
        let Some(r) = self.recovery.as_mut() else { return };
        r.writer.txn = Some(txn);
        r.writer.serials.clear();
        if remote && !oids.is_empty() {
            r.writer.state = WState::Serials;
            r.writer.waiting = oids.len();
            for oid in oids {
                let owner = Owner::Recovery { rec, op: RecOp::Serial { oid } };
                self.submit(target, owner, BackendRequest::GetTid { oid, snapshot: Tid::MAX });
            }
        } else {
            self.submit_vote();
        }
    }

    fn submit_vote(&mut self) {
        let rec = self.recovery.as_ref().map_or(0, |r| r.id);
        let Some(r) = self.recovery.as_mut() else { return };
        let Some(txn) = r.writer.txn.as_ref() else { return };
        let ops = txn
            .records
            .iter()
            .enumerate()
            .map(|(i, rec)| match txn.blobs.get(&i) {
                Some((upload, BlobFetch::Ready)) => TxnOp::RestoreBlob {
                    oid: rec.oid,
                    serial: rec.tid,
                    data: rec.data.clone().unwrap_or_default(),
                    prev_txn: rec.data_txn,
                    upload: *upload,
                    current: r.writer.serials.get(&rec.oid).copied().unwrap_or(Tid::ZERO),
                },
                _ => TxnOp::Restore {
                    oid: rec.oid,
                    serial: rec.tid,
                    data: rec.data.clone(),
                    prev_txn: rec.data_txn,
                },
            })
            .collect();
        let h = &txn.header;
        let vote = VoteRequest {
            tid: h.tid,
            status: h.status,
            user: h.user.clone(),
            description: h.description.clone(),
            extension: h.extension.clone(),
            ops,
            deferred_sync: true,
        };
        r.writer.state = WState::Voting;
        let target = r.target;
        self.submit(target, Owner::Recovery { rec, op: RecOp::Vote }, BackendRequest::Vote(Box::new(vote)));
    }

    /// The target's current serial of a blob's object (a remote target's blob store needs it).
    pub(super) fn serial_outcome(&mut self, oid: Oid, outcome: BackendOutcome) {
        let serial = match outcome {
            BackendOutcome::Tid(t) => t,
            BackendOutcome::Failed(e) if e.culprit == Culprit::Client => Tid::ZERO, // a new object
            other => {
                self.fail_recovery(format!("the target's serial of {oid}: {}", outcome_text(&other)));
                return;
            }
        };
        let Some(r) = self.recovery.as_mut() else { return };
        if r.writer.state != WState::Serials {
            return;
        }
        r.writer.serials.insert(oid, serial);
        r.writer.waiting = r.writer.waiting.saturating_sub(1);
        if r.writer.waiting == 0 {
            self.submit_vote();
        }
    }

    /// The target's answer to a copied transaction's vote or finish.
    pub(super) fn writer_outcome(&mut self, op: RecOp, outcome: BackendOutcome) {
        let rec = self.recovery.as_ref().map_or(0, |r| r.id);
        let Some(r) = self.recovery.as_mut() else { return };
        let tid = r.writer.txn.as_ref().map_or(Tid::ZERO, |t| t.header.tid);
        let target = r.target;
        match (op, r.writer.state, outcome) {
            (RecOp::Vote, WState::Voting, BackendOutcome::Voted { .. }) => {
                r.writer.state = WState::Finishing;
                self.submit(
                    target,
                    Owner::Recovery { rec, op: RecOp::Finish },
                    BackendRequest::Finish { tid },
                );
            }
            (RecOp::Finish, WState::Finishing, BackendOutcome::Committed { .. }) => {}
            (RecOp::Finish, WState::Finishing, BackendOutcome::Finished { tid: done, .. }) => {
                let (bytes, file_bytes) = r.writer.txn.take().map_or((0, 0), |t| (t.bytes, t.file_bytes));
                r.consumed += file_bytes;
                r.writer.state = WState::Idle;
                r.done_tid = r.done_tid.max(done);
                r.txns_copied += 1;
                r.bytes_copied += bytes;
                r.first_tid.get_or_insert(done);
                let now = self.now.mono;
                let (t, b) = (r.txns_verified + r.txns_copied, r.bytes_copied);
                sample(&mut r.samples, now, t, b);
                let d = r.done_tid;
                while r.finished.front().is_some_and(|t| *t <= d) {
                    r.finished.pop_front();
                }
                if !r.sync_in_flight && now.saturating_sub(r.last_sync) >= SYNC_EVERY {
                    r.sync_in_flight = true;
                    r.last_sync = now;
                    let upto = r.done_tid;
                    self.submit(
                        target,
                        Owner::Recovery { rec, op: RecOp::Sync { upto } },
                        BackendRequest::Sync,
                    );
                }
            }
            (_, _, other) => {
                let step = if op == RecOp::Vote { "vote" } else { "finish" };
                self.fail_recovery(format!(
                    "the target's {step} of copied transaction {tid} failed: {}",
                    outcome_text(&other)
                ));
            }
        }
    }
}
