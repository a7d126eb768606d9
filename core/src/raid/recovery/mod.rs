//! Online recovery: rebuilds a degraded, disabled or new backend (the *target*) from an optimal
//! one (the *source*) while the RAID keeps serving reads and commits.
//!
//! ```text
//!  recover ──▶ Verifying ──target is a prefix of the source──▶ Copying ──caught up──▶ Switching
//!                 │                                              ▲  ▲                  │   │
//!                 │ diverged, local target: RebuildBegin         │  └── lock held too ─┘   │
//!                 └──────────────────────────────▶ Rebuilding ───┘      long (retry)       │
//!                 │ diverged, remote target: fails with the first differing transaction    │
//!  any phase: target fault/timeout/disconnect → target degraded, recovery ends            ▼
//!             source leaves the RAID → another optimal source, or the recovery ends   Optimal
//! ```
//!
//! * **Verify.** Both histories are walked with transaction and record iterators, side by side:
//!   tid, status, user, description, extension, and every record's oid, data and back-pointer
//!   must be equal. A target that ends first is a verified prefix: only the rest is copied. A
//!   target that differs, or holds a transaction the source lacks, has diverged: a local target
//!   is rebuilt into a new storage that replaces the old one only when complete
//!   (`RebuildBegin`…`RebuildCommit`); a remote one cannot be truncated, so the recovery stops
//!   naming the first differing transaction.
//! * **Copy.** Each source transaction is voted on the target with its original tid, status and
//!   metadata, each record as a `Restore` (data and back-pointer) or, with its blob (streamed
//!   from the source's `SendBlob` into a target upload), a `RestoreBlob`. Reading runs ahead of
//!   writing (at most [`READ_AHEAD_TXNS`] transactions / [`READ_AHEAD_BYTES`]). Copies are voted
//!   with `deferred_sync`; a `Sync` every [`SYNC_EVERY`] makes them durable, and only then is
//!   the progress (`PersistedRecovery::done_tid`) persisted.
//! * **Rate limit and convergence.** Reading is paced so that bytes and transactions read since
//!   the pace started stay under the limit. The effective limit is never below
//!   [`CONVERGENCE_FACTOR`] × the live commit rate over the last [`LIVE_WINDOW`]; so whatever the
//!   limit, the copy gains on the live commits and always catches up.
//! * **Switch.** When the source iterator ends, the target lags by at most
//!   `RaidConfig::switch_max_lag` transactions, no transaction is between vote and finish and
//!   the target holds every open blob upload, the RAID takes its commit lock (new votes are
//!   held), copies the last transactions unthrottled, syncs (or commits the rebuild) and makes
//!   the target optimal, then releases the held votes, which now include the target. The lock
//!   is held at most `RaidConfig::switch_timeout`: past it the held votes are released and the
//!   recovery catches up again before it retries. While a recovery runs, the front's blob
//!   uploads are mirrored onto the target, so that a vote after the switch finds its upload.
//! * **Persistence.** The recovery is part of the persisted RAID state. After a restart it
//!   resumes: verification restarts at the last durable copied transaction (a rebuild restarts
//!   from scratch); if the target or every source is unreachable at start-up, the target is
//!   degraded with that reason. A backend is never left recovering without a recovery.
//! * **Exclusion.** One recovery at a time; a pack is refused while one runs, and a recovery
//!   while a pack runs.

mod progress;
mod reader;
mod switch;
mod writer;

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use crate::ids::{BackendId, Oid, Tid};
use crate::mutation::{self, Mutation};
use crate::zeo::backend::{BackendIterId, BackendOutcome, BackendReqId, BackendRequest, UploadId};
use crate::zeo::events::Now;

use super::types::{AdminError, BackendState, PersistedRecovery, RateLimit, RecoveryEnd, RecoveryPhase};
use super::{Owner, Raid};

use progress::sample;
pub(crate) use reader::{Reader, Side};
pub(crate) use writer::Writer;

/// Transactions read ahead of the writer, at most.
pub(crate) const READ_AHEAD_TXNS: usize = 32;
/// Bytes read ahead of the writer, at most.
pub(crate) const READ_AHEAD_BYTES: u64 = 8 << 20;
/// How often copied transactions are made durable (and the progress persisted).
pub(crate) const SYNC_EVERY: Duration = Duration::from_secs(2);
/// The effective rate is at least this multiple of the live commit rate.
pub(crate) const CONVERGENCE_FACTOR: f64 = 2.0;
/// The window over which the live commit rate is measured.
pub(crate) const LIVE_WINDOW: Duration = Duration::from_secs(10);
/// Pause before re-reading when the source had nothing new.
const IDLE_RETRY: Duration = Duration::from_millis(50);
/// Ids of the recovery's own iterators and uploads (the front's count up from 1).
const REC_ID_BASE: u64 = 1 << 62;

/// What a recovery request to a backend was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecOp {
    /// A step of a reader (source or target side) of reader generation `gen`.
    Read { side: Side, gen: u32, iter: BackendIterId },
    /// A `SendBlob` on the source, streamed into `upload` on the target.
    Blob { gen: u32, upload: UploadId },
    /// An upload start/chunk on the target (the reader's blob copies).
    Upload,
    /// A front blob upload mirrored onto the target.
    Mirror,
    /// `GetTid` on the target (the serial a remote blob store is checked against).
    Serial { oid: Oid },
    /// The target's vote of a copied transaction.
    Vote,
    /// The target's finish of a copied transaction.
    Finish,
    /// A `Sync` of everything copied up to `upto`.
    Sync { upto: Tid },
    /// `RebuildBegin` on the target.
    RebuildBegin,
    /// The final `Sync` or `RebuildCommit` of the switch.
    Final,
}

/// A running recovery (at most one per RAID).
#[derive(Debug)]
pub(crate) struct Recovery {
    /// Distinguishes recoveries: outcomes of an ended one are ignored.
    pub id: u32,
    pub target: BackendId,
    pub source: BackendId,
    pub phase: RecoveryPhase,
    pub limit: RateLimit,
    pub started: f64,
    /// The target is being rebuilt into a new storage (`RebuildBegin` answered).
    pub rebuilding: bool,
    /// Waiting for `RebuildBegin`.
    pub beginning_rebuild: bool,
    /// Newest transaction verified on, or finished on, the target.
    pub done_tid: Tid,
    /// Newest transaction known durable on the target (what is persisted).
    pub durable_tid: Tid,
    /// The source reader, and in `Verifying` the target reader.
    pub src: Option<Reader>,
    pub tgt: Option<Reader>,
    pub writer: Writer,
    pub gen: u32,
    pub txns_verified: u64,
    pub txns_copied: u64,
    pub bytes_copied: u64,
    /// First transaction this recovery saw (for the estimates).
    pub first_tid: Option<Tid>,
    /// Whether it started at the beginning of the source's history (not resumed).
    pub from_start: bool,
    /// About how much of the source's file the verified and copied transactions take.
    pub consumed: u64,
    /// Pacing: since when, and what was read since.
    pub pace_since: Duration,
    pub pace_bytes: u64,
    pub pace_txns: u64,
    /// Rate samples (time, transactions done, bytes done) for progress.
    pub samples: VecDeque<(Duration, u64, u64)>,
    /// Live commits (time, bytes) over the last `LIVE_WINDOW`.
    pub live: VecDeque<(Duration, u64)>,
    /// Tids the RAID finished after `done_tid` (the lag).
    pub finished: VecDeque<Tid>,
    /// When the reader may go on (pacing, idle retry).
    pub wake: Option<Duration>,
    /// The switch: when the commit lock must be released at the latest.
    pub switch_deadline: Option<Duration>,
    /// Whether the final `Sync`/`RebuildCommit` is in flight.
    pub finalizing: bool,
    pub held_votes: VecDeque<(BackendReqId, BackendRequest)>,
    /// Front uploads mirrored onto the target.
    pub mirrored: BTreeSet<UploadId>,
    pub sync_in_flight: bool,
    pub last_sync: Duration,
    pub last_persist: Duration,
    pub switch_attempts: u32,
}

impl Recovery {
    fn readers(&self) -> impl Iterator<Item = &Reader> {
        self.src.iter().chain(self.tgt.iter())
    }

    /// Takes both readers out (to discard them).
    fn take_readers(&mut self) -> Vec<Reader> {
        self.src.take().into_iter().chain(self.tgt.take()).collect()
    }
}

/// What the RAID tracks of the front's blob uploads (needed for mirroring them).
#[derive(Debug, Default)]
pub(crate) struct UploadTrack {
    /// Open uploads (started, not yet consumed or dropped).
    pub open: BTreeSet<UploadId>,
    /// Uploads named by the last vote that answered conflicts (kept for its re-vote).
    pub conflicted: Vec<UploadId>,
}

impl Raid {
    /// `zeoraid recover NAME`: starts rebuilding a degraded, disabled or new backend from an
    /// optimal one, with `limit` (or the configured default). See the module doc.
    pub fn recover(&mut self, now: Now, name: &str, limit: Option<RateLimit>) -> Result<(), AdminError> {
        self.now = now;
        let target = self.backend_id(name).ok_or_else(|| AdminError::UnknownBackend(name.to_string()))?;
        if let Some(r) = self.recovery.as_ref().filter(|_| !mutation::active(Mutation::SecondRecovery)) {
            return Err(AdminError::RecoveryRunning(self.member_name(r.target)));
        }
        if self.fans.values().any(|j| j.kind == crate::raid::writes::FanKind::Pack) {
            return Err(AdminError::PackRunning);
        }
        let m = self.members.get(&target).ok_or_else(|| AdminError::UnknownBackend(name.to_string()))?;
        if m.state.is_optimal() {
            return Err(AdminError::WrongState {
                name: name.to_string(),
                state: m.state.word(),
                what: "nothing to recover".to_string(),
            });
        }
        let connected = m.connected;
        // The RAID has failed: only its last optimal backend can bring it back (no copy).
        if let Some(done) = self.recover_failed_raid(target) {
            return done;
        }
        if !connected {
            return Err(AdminError::NotConnected(name.to_string()));
        }
        let source = self
            .pick_source(target)
            .ok_or_else(|| AdminError::NoSource { hint: "no optimal backend is connected".to_string() })?;
        let limit = limit.unwrap_or(self.cfg.recovery_rate);
        self.start_recovery(target, source, limit, now.unix_f64(), Tid::ZERO);
        self.pump();
        Ok(())
    }

    /// How the last recovery ended.
    pub fn last_recovery(&self) -> Option<&RecoveryEnd> {
        self.last_recovery.as_ref()
    }

    /// The persisted form of the running recovery.
    pub(super) fn persisted_recovery(&self) -> Option<PersistedRecovery> {
        self.recovery.as_ref().map(|r| PersistedRecovery {
            target: self.member_name(r.target),
            done_tid: r.durable_tid,
            rebuilding: r.rebuilding,
            limit: r.limit,
            started: r.started,
        })
    }

    /// At start-up: resumes the persisted recovery `p` (the start-up rule kept its target
    /// recovering), or ends it with the reason when it cannot go on.
    pub(super) fn resume_recovery(&mut self, p: PersistedRecovery) {
        let Some(target) = self.backend_id(&p.target) else { return };
        if !matches!(self.members.get(&target).map(|m| &m.state), Some(BackendState::Recovering { .. })) {
            return;
        }
        let target_up = self.members.get(&target).and_then(|m| m.info.as_ref()).map(|i| i.last_tid);
        let source = self.pick_source(target);
        match (target_up, source) {
            (Some(target_last), Some(source)) => {
                // A rebuild in progress was discarded by the backend at open: start afresh.
                let from = if p.rebuilding { Tid::ZERO } else { p.done_tid.min(target_last) };
                tracing::info!(storage = %self.cfg.name, backend = %p.target, from = %from, "resuming the recovery interrupted by a restart");
                self.start_recovery(target, source, p.limit, p.started, from);
            }
            (None, _) => self.end_at_startup(target, "the target is unreachable at start-up"),
            (_, None) => self.end_at_startup(target, "no optimal source at start-up"),
        }
    }

    fn end_at_startup(&mut self, target: BackendId, why: &str) {
        let reason = format!("recovery interrupted by a restart: {why}");
        self.last_recovery = Some(RecoveryEnd {
            target: self.member_name(target),
            failure: Some(reason.clone()),
            at: self.now.unix_f64(),
            txns_copied: 0,
            bytes_copied: 0,
        });
        self.set_state(
            target,
            BackendState::Degraded { reason: reason.clone(), since: self.now.unix_f64() },
            &reason,
        );
    }

    /// The first connected optimal backend other than `target`.
    fn pick_source(&self, target: BackendId) -> Option<BackendId> {
        self.members
            .iter()
            .find(|(&b, m)| b != target && m.state.is_optimal() && m.connected)
            .map(|(&b, _)| b)
    }

    fn start_recovery(
        &mut self,
        target: BackendId,
        source: BackendId,
        limit: RateLimit,
        started: f64,
        from: Tid,
    ) {
        self.next_rec += 1;
        let now = self.now.mono;
        self.recovery = Some(Box::new(Recovery {
            id: self.next_rec,
            target,
            source,
            phase: RecoveryPhase::Verifying,
            limit,
            started,
            rebuilding: false,
            beginning_rebuild: false,
            done_tid: from,
            durable_tid: from,
            src: None,
            tgt: None,
            writer: Writer::default(),
            gen: 0,
            txns_verified: 0,
            txns_copied: 0,
            bytes_copied: 0,
            first_tid: None,
            from_start: from == Tid::ZERO,
            consumed: 0,
            pace_since: now,
            pace_bytes: 0,
            pace_txns: 0,
            samples: VecDeque::new(),
            live: VecDeque::new(),
            finished: VecDeque::new(),
            wake: None,
            switch_deadline: None,
            finalizing: false,
            held_votes: VecDeque::new(),
            mirrored: BTreeSet::new(),
            sync_in_flight: false,
            last_sync: now,
            last_persist: now,
            switch_attempts: 0,
        }));
        tracing::info!(
            storage = %self.cfg.name,
            backend = %self.member_name(target),
            source = %self.member_name(source),
            %limit,
            "recovery started"
        );
        // A transaction the RAID left voted on the target (it left the RAID between vote and
        // finish) is aborted before anything is copied.
        if let Some(&tid) = self.voted_on.get(&target) {
            self.submit(target, Owner::Forget, BackendRequest::Abort { tid });
        }
        let since = self.now.unix_f64();
        if matches!(self.members.get(&target).map(|m| &m.state), Some(BackendState::Recovering { .. })) {
            self.persist();
        } else {
            self.set_state(target, BackendState::Recovering { since }, "recovery started");
        }
        self.start_verify();
    }

    /// Starts (or restarts) verification from the recovery's `done_tid` (inclusive).
    fn start_verify(&mut self) {
        let Some(r) = self.recovery.as_mut() else { return };
        r.phase = RecoveryPhase::Verifying;
        r.gen += 1;
        let start = (r.done_tid != Tid::ZERO).then_some(r.done_tid);
        let (gen, source, target) = (r.gen, r.source, r.target);
        let old = r.take_readers();
        self.discard_readers(old, target);
        let src = Reader::new(source, gen, start, false, self.rec_ids(2));
        let tgt = Reader::new(target, gen, start, false, self.rec_ids(2));
        if let Some(r) = self.recovery.as_mut() {
            r.src = Some(src);
            r.tgt = Some(tgt);
        }
        self.rec_drive();
    }

    /// Starts (or restarts) the source reader for copying after what the writer has.
    fn start_copy(&mut self) {
        let blobs = self
            .recovery
            .as_ref()
            .and_then(|r| self.members.get(&r.source))
            .and_then(|m| m.info.as_ref())
            .is_some_and(|i| i.blobs);
        let Some(r) = self.recovery.as_mut() else { return };
        if r.phase == RecoveryPhase::Verifying {
            r.phase = if r.rebuilding { RecoveryPhase::Rebuilding } else { RecoveryPhase::Copying };
            tracing::info!(storage = %self.cfg.name, backend = %r.target, phase = r.phase.word(), from = %r.done_tid, "recovery: copying");
        }
        r.gen += 1;
        let after = r.writer.handed.max(r.done_tid);
        let start = if after == Tid::ZERO { None } else { after.checked_next() };
        let (gen, source, target) = (r.gen, r.source, r.target);
        let old = r.take_readers();
        self.discard_readers(old, target);
        let src = Reader::new(source, gen, start, blobs, self.rec_ids(2));
        if let Some(r) = self.recovery.as_mut() {
            r.src = Some(src);
        }
        self.rec_drive();
    }

    /// Fresh ids for the recovery's iterators and uploads.
    pub(super) fn rec_ids(&mut self, n: u64) -> u64 {
        let first = REC_ID_BASE + self.next_rec_id;
        self.next_rec_id += n;
        first
    }

    /// Forgets readers: their iterators are dropped, the uploads of their unwritten
    /// transactions discarded on `target`.
    fn discard_readers(&mut self, readers: Vec<Reader>, target: BackendId) {
        let up = |raid: &Raid, b: BackendId| raid.members.get(&b).is_some_and(|m| m.connected);
        for rd in readers {
            let iters = rd.open_iters();
            if !iters.is_empty() && up(self, rd.backend) {
                self.submit(rd.backend, Owner::Forget, BackendRequest::IterDrop { iters });
            }
            if up(self, target) {
                for u in rd.uploads() {
                    self.submit(target, Owner::Forget, BackendRequest::BlobUploadDrop { upload: u });
                }
            }
        }
    }

    /// Runs the recovery as far as it can go without an outcome: readers, verification,
    /// writer, switch.
    pub(super) fn rec_drive(&mut self) {
        for _ in 0..64 {
            let Some(r) = self.recovery.as_ref() else { return };
            if r.beginning_rebuild || r.finalizing {
                return;
            }
            let before = self.rec_fingerprint();
            self.read_more(Side::Source);
            self.read_more(Side::Target);
            let phase = self.recovery.as_ref().map(|r| r.phase);
            if phase == Some(RecoveryPhase::Verifying) {
                self.verify_step();
            } else {
                self.write_step();
                self.caught_up_step();
            }
            if self.rec_fingerprint() == before {
                return;
            }
        }
    }

    fn rec_fingerprint(&self) -> (usize, u64, u32, bool) {
        match &self.recovery {
            None => (0, 0, 0, false),
            Some(r) => (self.actions.len(), r.done_tid.get(), r.gen, r.writer.busy()),
        }
    }

    /// Verification: compares the transactions both readers have read.
    fn verify_step(&mut self) {
        loop {
            let Some(r) = self.recovery.as_mut() else { return };
            let (Some(src), Some(tgt)) = (r.src.as_mut(), r.tgt.as_mut()) else { return };
            match (src.queue.front(), tgt.queue.front()) {
                (Some(a), Some(b)) => {
                    if let Some(diff) = reader::difference(a, b) {
                        let tid = b.header.tid.min(a.header.tid);
                        self.diverged(tid, diff);
                        return;
                    }
                    let (Some(a), Some(_)) = (src.queue.pop_front(), tgt.queue.pop_front()) else { return };
                    src.queued_bytes = src.queued_bytes.saturating_sub(a.bytes);
                    tgt.queued_bytes = tgt.queued_bytes.saturating_sub(a.bytes);
                    r.done_tid = a.header.tid;
                    r.durable_tid = a.header.tid;
                    r.txns_verified += 1;
                    r.consumed += a.file_bytes;
                    r.first_tid.get_or_insert(a.header.tid);
                    let (m, t) = (self.now.mono, (r.txns_verified, r.bytes_copied));
                    sample(&mut r.samples, m, t.0 + r.txns_copied, t.1);
                }
                (None, Some(b)) if src.ended => {
                    let (tid, what) =
                        (b.header.tid, "the target has a transaction the source lacks".to_string());
                    self.diverged(tid, what);
                    return;
                }
                (_, None) if tgt.ended => {
                    tracing::info!(storage = %self.cfg.name, verified = r.txns_verified, upto = %r.done_tid, "recovery: the target's history is a verified prefix of the source's");
                    self.start_copy();
                    return;
                }
                _ => return,
            }
        }
    }

    /// The target's history differs from the source's at `tid`.
    fn diverged(&mut self, tid: Tid, what: String) {
        let Some(r) = self.recovery.as_ref() else { return };
        let rebuildable =
            self.members.get(&r.target).and_then(|m| m.info.as_ref()).is_some_and(|i| i.rebuildable);
        let (target, name) = (r.target, self.member_name(r.target));
        if !rebuildable {
            self.fail_recovery(format!(
                "the target's history diverges from the source's at transaction {tid} ({what}); a remote \
                 backend cannot be truncated from here: empty its storage (or replace it with a copy of \
                 the source) and run recover again"
            ));
            return;
        }
        tracing::warn!(storage = %self.cfg.name, backend = %name, %tid, %what, "recovery: the target diverges; rebuilding it from scratch into a new storage");
        let old = self.recovery.as_mut().map(|r| r.take_readers()).unwrap_or_default();
        self.discard_readers(old, target);
        if let Some(r) = self.recovery.as_mut() {
            r.beginning_rebuild = true;
            r.done_tid = Tid::ZERO;
            r.durable_tid = Tid::ZERO;
            r.writer = Writer::default();
        }
        let id = self.rec_id();
        self.submit(
            target,
            Owner::Recovery { rec: id, op: RecOp::RebuildBegin },
            BackendRequest::RebuildBegin,
        );
    }

    fn rec_id(&self) -> u32 {
        self.recovery.as_ref().map_or(0, |r| r.id)
    }

    /// Ends the recovery with `reason`: the target is degraded.
    pub(super) fn fail_recovery(&mut self, reason: String) {
        let Some(mut r) = self.recovery.take() else { return };
        let name = self.member_name(r.target);
        tracing::warn!(storage = %self.cfg.name, backend = %name, %reason, "recovery failed");
        let readers = r.take_readers();
        self.discard_readers(readers, r.target);
        if self.members.get(&r.target).is_some_and(|m| m.connected) {
            // A copied transaction left voted on the target is aborted.
            if let Some(tid) = r.writer.open_tid() {
                self.submit(r.target, Owner::Forget, BackendRequest::Abort { tid });
            }
            for u in std::mem::take(&mut r.mirrored) {
                self.submit(r.target, Owner::Forget, BackendRequest::BlobUploadDrop { upload: u });
            }
            if r.rebuilding || r.beginning_rebuild {
                self.submit(r.target, Owner::Forget, BackendRequest::RebuildAbort);
            }
        }
        self.last_recovery = Some(RecoveryEnd {
            target: name,
            failure: Some(reason.clone()),
            at: self.now.unix_f64(),
            txns_copied: r.txns_copied,
            bytes_copied: r.bytes_copied,
        });
        let reason = format!("recovery failed: {reason}");
        if matches!(self.members.get(&r.target).map(|m| &m.state), Some(BackendState::Recovering { .. })) {
            let since = self.now.unix_f64();
            self.set_state(r.target, BackendState::Degraded { reason: reason.clone(), since }, &reason);
        } else {
            self.persist();
        }
        for (front, req) in r.held_votes {
            self.start_fan(front, req);
        }
    }

    /// A backend's state changed: the recovery loses its target or its source.
    pub(super) fn rec_state_changed(&mut self, b: BackendId) {
        let Some(r) = self.recovery.as_ref() else { return };
        let state = self.members.get(&b).map(|m| m.state.clone());
        if b == r.target && !matches!(state, Some(BackendState::Recovering { .. })) {
            let why = match state {
                Some(BackendState::Degraded { reason, .. }) => format!("the target failed: {reason}"),
                Some(s) => format!("the target became {}", s.word()),
                None => "the target was removed".to_string(),
            };
            self.fail_recovery(why);
        } else if b == r.source && !state.as_ref().is_some_and(|s| s.is_optimal()) {
            let old = self.member_name(b);
            match self.pick_source(r.target) {
                Some(next) => {
                    tracing::warn!(storage = %self.cfg.name, from = %old, to = %self.member_name(next), "recovery: the source left the RAID; continuing from another optimal backend");
                    let verifying = r.phase == RecoveryPhase::Verifying;
                    if let Some(r) = self.recovery.as_mut() {
                        r.source = next;
                    }
                    if verifying {
                        self.start_verify();
                    } else {
                        self.start_copy();
                    }
                }
                None => self.fail_recovery(format!(
                    "the source {old} left the RAID and no other optimal backend is left"
                )),
            }
        }
    }

    /// An outcome for a recovery request.
    pub(super) fn rec_outcome(&mut self, rec: u32, b: BackendId, op: RecOp, outcome: BackendOutcome) {
        let current = self.recovery.as_ref().filter(|r| r.id == rec).map(|r| r.gen);
        if let RecOp::Read { gen: g, iter, .. } = op {
            if current != Some(g) {
                // A discarded reader's request: its iterator was left alone while the request
                // was in flight (dropping it then races the read on a stock server, which
                // fails it); drop it now if the answer left it open.
                let open = matches!(outcome, BackendOutcome::Nil | BackendOutcome::WholeTxn(Some(_)));
                if open && self.members.get(&b).is_some_and(|m| m.connected) {
                    self.submit(b, Owner::Forget, BackendRequest::IterDrop { iters: vec![iter] });
                }
                return;
            }
        }
        let Some(gen) = current else { return };
        match op {
            RecOp::Read { side, .. } => self.reader_outcome(side, outcome),
            RecOp::Blob { gen: g, upload } => {
                if g == gen {
                    self.blob_outcome(upload, outcome);
                }
            }
            RecOp::Upload | RecOp::Mirror => {
                if let BackendOutcome::Failed(e) = outcome {
                    let what = if op == RecOp::Upload { "a blob upload" } else { "a mirrored client upload" };
                    self.fail_recovery(format!(
                        "{what} failed on the target: {}",
                        super::error_text(&e.error)
                    ));
                }
            }
            RecOp::Serial { oid } => self.serial_outcome(oid, outcome),
            RecOp::Vote | RecOp::Finish => self.writer_outcome(op, outcome),
            RecOp::Sync { upto } => self.sync_outcome(upto, outcome),
            RecOp::RebuildBegin => match outcome {
                BackendOutcome::Nil => {
                    if let Some(r) = self.recovery.as_mut() {
                        r.beginning_rebuild = false;
                        r.rebuilding = true;
                        r.phase = RecoveryPhase::Rebuilding;
                    }
                    self.persist();
                    self.start_copy();
                }
                other => self
                    .fail_recovery(format!("the target could not start a rebuild: {}", outcome_text(&other))),
            },
            RecOp::Final => match outcome {
                BackendOutcome::Nil => {
                    let late = self.recovery.as_ref().is_some_and(|r| r.switch_deadline.is_none());
                    if late {
                        // The lock was given up meanwhile: not optimal yet; catch up again.
                        if let Some(r) = self.recovery.as_mut() {
                            r.finalizing = false;
                            r.rebuilding = false;
                        }
                        self.start_copy();
                    } else {
                        self.promote();
                    }
                }
                other => {
                    self.fail_recovery(format!("the target's final sync failed: {}", outcome_text(&other)))
                }
            },
        }
        let _ = b;
        self.rec_drive();
        self.rec_maybe_persist();
    }

    fn sync_outcome(&mut self, upto: Tid, outcome: BackendOutcome) {
        match outcome {
            BackendOutcome::Nil => {
                if let Some(r) = self.recovery.as_mut() {
                    r.sync_in_flight = false;
                    r.durable_tid = r.durable_tid.max(upto);
                }
                self.persist_progress();
            }
            other => self.fail_recovery(format!("sync failed on the target: {}", outcome_text(&other))),
        }
    }

    /// Time has passed: pacing waits and the switch deadline.
    pub(super) fn rec_timeout(&mut self) {
        let now = self.now.mono;
        let Some(r) = self.recovery.as_mut() else { return };
        if r.switch_deadline.is_some_and(|d| d <= now) {
            r.switch_deadline = None;
            r.phase = if r.rebuilding { RecoveryPhase::Rebuilding } else { RecoveryPhase::Copying };
            let held = std::mem::take(&mut r.held_votes);
            let secs = self.cfg.switch_timeout.as_secs_f64();
            tracing::warn!(storage = %self.cfg.name, "recovery: the switch did not finish within {secs:.1}s; releasing the commit lock and catching up again");
            for (front, req) in held {
                self.start_fan(front, req);
            }
        }
        let Some(r) = self.recovery.as_mut() else { return };
        if r.wake.is_some_and(|w| w <= now) {
            r.wake = None;
            self.rec_drive();
        }
    }

    /// When the recovery wants to be woken.
    pub(super) fn rec_poll_timeout(&self) -> Option<Duration> {
        let r = self.recovery.as_ref()?;
        match (r.wake, r.switch_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Checks the recovery's invariants (part of `Raid::check`).
    pub(super) fn check_recovery(&self) -> Result<(), String> {
        let Some(r) = &self.recovery else {
            if let Some((b, _)) =
                self.members.iter().find(|(_, m)| matches!(m.state, BackendState::Recovering { .. }))
            {
                return Err(format!("{b} is recovering without a recovery"));
            }
            return Ok(());
        };
        if !matches!(self.members.get(&r.target).map(|m| &m.state), Some(BackendState::Recovering { .. })) {
            return Err("the recovery's target is not recovering".into());
        }
        if self.members.iter().filter(|(_, m)| matches!(m.state, BackendState::Recovering { .. })).count()
            != 1
        {
            return Err("more than one backend recovering".into());
        }
        if !self.is_optimal(r.source) {
            return Err("the recovery's source is not optimal".into());
        }
        if self.fans.values().any(|j| j.kind == crate::raid::writes::FanKind::Pack) {
            return Err("a pack runs during a recovery".into());
        }
        if r.durable_tid > r.done_tid {
            return Err("durable progress ahead of done".into());
        }
        if r.switch_deadline.is_none() && !r.held_votes.is_empty() {
            return Err("votes held without a switch".into());
        }
        if r.readers().any(|rd| rd.gen > r.gen) {
            return Err("a reader from the future".into());
        }
        Ok(())
    }
}

/// A non-`Nil` outcome as text for a reason.
pub(crate) fn outcome_text(o: &BackendOutcome) -> String {
    match o {
        BackendOutcome::Failed(e) => super::error_text(&e.error),
        other => super::compare::summary(other),
    }
}

#[cfg(test)]
mod tests;
