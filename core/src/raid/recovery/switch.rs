//! The switch: catching up with the live commits, holding the commit lock for the last
//! transactions, making the target optimal; and the front's blob uploads mirrored onto the
//! target meanwhile (so that a vote after the switch finds its upload there). Rules in the
//! parent module's doc.

use crate::ids::Tid;
use crate::zeo::backend::{BackendReqId, BackendRequest, UploadId};

use super::{RecOp, IDLE_RETRY, LIVE_WINDOW};
use crate::raid::types::{BackendState, RecoveryEnd, RecoveryPhase};
use crate::raid::{Owner, Raid};

impl Raid {
    /// After a copied transaction: is the target caught up, and can it switch?
    pub(super) fn caught_up_step(&mut self) {
        let Some(r) = self.recovery.as_ref() else { return };
        let Some(src) = r.src.as_ref() else { return };
        if !(src.ended && src.idle() && src.queue.is_empty() && !r.writer.busy()) || src.restart_at.is_some()
        {
            return;
        }
        if r.switch_deadline.is_some() {
            // Under the lock, everything is copied: make it durable, then optimal.
            if r.done_tid < self.held_tid {
                self.start_copy(); // committed meanwhile? (cannot be under the lock) read again
                return;
            }
            let target = r.target;
            let request = if r.rebuilding { BackendRequest::RebuildCommit } else { BackendRequest::Sync };
            let id = self.rec_id();
            if let Some(r) = self.recovery.as_mut() {
                r.finalizing = true;
            }
            self.submit(target, Owner::Recovery { rec: id, op: RecOp::Final }, request);
            return;
        }
        let lag = r.finished.iter().filter(|&&t| t > r.done_tid).count() as u64;
        let in_flight = self.txn.is_some()
            || self.fans.values().any(|j| {
                matches!(
                    j.kind,
                    crate::raid::writes::FanKind::Vote { .. } | crate::raid::writes::FanKind::Finish { .. }
                )
            });
        let missing = self.uploads.open.iter().any(|u| !r.mirrored.contains(u));
        if lag <= self.cfg.switch_max_lag && !in_flight && !missing && r.done_tid >= self.held_tid {
            let deadline = self.now.mono + self.cfg.switch_timeout;
            let name = self.member_name(r.target);
            if let Some(r) = self.recovery.as_mut() {
                r.switch_deadline = Some(deadline);
                r.phase = RecoveryPhase::Switching;
                r.switch_attempts += 1;
            }
            tracing::info!(storage = %self.cfg.name, backend = %name, "recovery: caught up; holding the commit lock to switch");
            self.start_copy();
            return;
        }
        // Not yet: read again (at once if the source has more, after a pause otherwise).
        let more = r.done_tid < self.held_tid || lag > 0;
        let at = if more { self.now.mono } else { self.now.mono + IDLE_RETRY };
        if let Some(r) = self.recovery.as_mut() {
            if let Some(src) = r.src.as_mut() {
                // It re-opens after the last transaction it read (see `read_more`).
                src.restart_at = Some(at);
            }
            r.wake = Some(r.wake.map_or(at, |w| w.min(at)));
        }
    }

    /// The switch is done: the target becomes optimal, held votes go on.
    pub(super) fn promote(&mut self) {
        let Some(r) = self.recovery.take() else { return };
        let name = self.member_name(r.target);
        if let Some(m) = self.members.get_mut(&r.target) {
            m.state = BackendState::Optimal;
            if let Some(i) = m.info.as_mut() {
                i.last_tid = r.done_tid;
            }
        }
        let secs = (self.now.unix_f64() - r.started).max(0.0);
        tracing::info!(
            storage = %self.cfg.name,
            backend = %name,
            verified = r.txns_verified,
            copied = r.txns_copied,
            bytes = r.bytes_copied,
            seconds = format!("{secs:.1}"),
            "recovery done: backend recovering → optimal"
        );
        self.last_recovery = Some(RecoveryEnd {
            target: name,
            failure: None,
            at: self.now.unix_f64(),
            txns_copied: r.txns_copied,
            bytes_copied: r.bytes_copied,
        });
        self.persist();
        for (front, req) in r.held_votes {
            self.start_fan(front, req);
        }
    }

    /// A vote while the switch holds the commit lock waits.
    pub(in crate::raid) fn rec_hold_vote(
        &mut self,
        front: BackendReqId,
        request: BackendRequest,
    ) -> Option<BackendRequest> {
        match self.recovery.as_mut() {
            Some(r) if r.switch_deadline.is_some() && matches!(request, BackendRequest::Vote(_)) => {
                r.held_votes.push_back((front, request));
                None
            }
            _ => Some(request),
        }
    }

    /// A fan-out settled: note live commits and let a waiting switch go on.
    pub(in crate::raid) fn rec_after_settle(&mut self, finished: Option<(Tid, u64)>) {
        let now = self.now.mono;
        let Some(r) = self.recovery.as_mut() else { return };
        if let Some((tid, bytes)) = finished {
            r.live.push_back((now, bytes));
            r.finished.push_back(tid);
            while r.live.front().is_some_and(|(t, _)| now.saturating_sub(*t) > LIVE_WINDOW) {
                r.live.pop_front();
            }
            let done = r.done_tid;
            while r.finished.front().is_some_and(|t| *t <= done) {
                r.finished.pop_front();
            }
        }
        self.rec_drive();
    }

    /// Mirrors the front's blob upload requests onto the recovering target, and tracks open
    /// uploads.
    pub(in crate::raid) fn rec_track_upload(&mut self, request: &BackendRequest) {
        match request {
            BackendRequest::BlobUploadStart { upload } => {
                self.uploads.open.insert(*upload);
            }
            BackendRequest::BlobUploadDrop { upload } => {
                self.uploads.open.remove(upload);
            }
            _ => {}
        }
        let Some(r) = self.recovery.as_ref() else { return };
        let (target, id) = (r.target, r.id);
        if !self.members.get(&target).is_some_and(|m| m.connected) {
            return;
        }
        let send = match request {
            BackendRequest::BlobUploadStart { upload } => {
                if let Some(r) = self.recovery.as_mut() {
                    r.mirrored.insert(*upload);
                }
                true
            }
            BackendRequest::BlobUploadChunk { upload, .. } => r.mirrored.contains(upload),
            BackendRequest::BlobUploadDrop { upload } => {
                self.recovery.as_mut().is_some_and(|r| r.mirrored.remove(upload))
            }
            _ => false,
        };
        if send {
            self.submit(target, Owner::Recovery { rec: id, op: RecOp::Mirror }, request.clone());
        }
    }

    /// Uploads consumed by a vote, finish or abort: no longer open; their mirrors on the
    /// target are dropped.
    pub(in crate::raid) fn rec_uploads_consumed(&mut self, uploads: &[UploadId]) {
        for u in uploads {
            self.uploads.open.remove(u);
            let Some(r) = self.recovery.as_mut() else { continue };
            if r.mirrored.remove(u) {
                let (target, id) = (r.target, r.id);
                self.submit(
                    target,
                    Owner::Recovery { rec: id, op: RecOp::Mirror },
                    BackendRequest::BlobUploadDrop { upload: *u },
                );
            }
        }
    }
}
