//! The RAID-1 state machine: one storage mirrored over several backends (pure, sans-IO).
//!
//! The ZEO front ([`crate::zeo::server::Server`]) sends its [`BackendRequest`]s for a storage to
//! that storage's [`Raid`] (the driver routes `Action::Backend` to [`Raid::handle_request`]). To
//! the front, a RAID is one backend: every request gets one combined answer
//! ([`RaidAction::Answer`]). Behind it:
//!
//! * **Writes** (`Vote`, `Finish`, `Abort`, `Pack`, blob uploads) go to every optimal backend in
//!   parallel (the front serialises transactions under its commit lock and has chosen the tid,
//!   so every backend commits the same transaction with the same tid). The answer comes when all
//!   of them answered (or failed, or timed out); see [`writes`] for the rules.
//! * **Reads** go to one optimal backend, the one with the fewest requests in flight; a backend
//!   failure or timeout degrades it and the read is retried on another (see [`reads`]).
//! * **New oids** are allocated by the RAID itself, above a persisted high-water mark and above
//!   every backend's own counter (probed at start-up), so backends never disagree on them.
//!
//! # Degradation rules
//! * A backend that fails a request with a backend fault (I/O error, corruption, protocol
//!   error), does not answer within its deadline, or disconnects is degraded, with the reason.
//! * A client's own error (conflict, read conflict, POSKeyError, read-only, wrong call order) is
//!   answered to the client and degrades nobody.
//! * When optimal backends answer a write differently, there is no majority to trust with two of
//!   them, so the rule is: the answer of the first optimal backend in configuration order (the
//!   *reference*) is taken, and every backend that answered differently is degraded (and its
//!   transaction aborted). This is safe because every backend that stays optimal gave the same
//!   answer, so the optimal ones keep identical histories, the client is answered with what they
//!   hold, and a degraded one is rebuilt from them by recovery. It never degrades the last
//!   optimal backend (the reference stays).
//! * A backend that fails during `Finish` is degraded; whether it committed is settled by
//!   recovery. The commit is acknowledged if any backend finished it.
//! * With no optimal backend left the RAID is failed: every request is refused with a
//!   `StorageSystemError` saying so.
//! * Every state change is persisted (`SaveState`), and no commit is acknowledged to a client
//!   (the `Finished` answer) before the state that excludes the backends which missed it is
//!   durable: a restart then never takes a backend that missed acknowledged commits for optimal.

mod check;
mod compare;
mod last_optimal;
mod reads;
mod recovery;
mod startup;
mod types;
mod writes;

#[cfg(test)]
pub(crate) mod harness;
#[cfg(test)]
mod last_optimal_tests;
#[cfg(all(test, feature = "mutations"))]
mod mutation_tests;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

pub use types::*;

use crate::ids::{BackendId, Oid, Tid};
use crate::mutation::{self, Mutation};
use crate::zeo::backend::{
    BackendError, BackendEvent, BackendInfo, BackendIterId, BackendOutcome, BackendReqId, BackendRequest,
    Culprit, StorageSize,
};
use crate::zeo::events::Now;

use reads::{IterRoute, ReadJob};
use writes::{FanJob, TxnState};

/// One backend as the RAID tracks it.
#[derive(Debug, Clone)]
struct Member {
    spec: BackendSpec,
    state: BackendState,
    info: Option<BackendInfo>,
    connected: bool,
    outstanding: usize,
}

/// Who is waiting for a backend request's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// A read (or a step of its resume chain) answering the front's request.
    Read(BackendReqId),
    /// One leg of a fan-out answering the front's request.
    Fan(BackendReqId),
    /// The start-up probe of the backend's oid counter.
    Probe,
    /// Nobody (an abort or iterator drop sent for cleanliness).
    Forget,
    /// A step of recovery `rec`.
    Recovery {
        /// Which recovery (outcomes of an ended one are ignored).
        rec: u32,
        /// What the request was for.
        op: recovery::RecOp,
    },
}

/// A request in flight on one backend.
#[derive(Debug, Clone)]
struct Sub {
    backend: BackendId,
    owner: Owner,
    deadline: Duration,
    /// What it was, for timeout reasons.
    what: &'static str,
}

/// The RAID of one storage. See the module doc.
#[derive(Debug)]
pub struct Raid {
    cfg: RaidConfig,
    members: BTreeMap<BackendId, Member>,
    /// The newest tid handed out or taken over (from a backend that came back holding more):
    /// new tids go above it and the front shows it. Never goes back.
    last_tid: Tid,
    /// The newest tid every optimal backend holds (as they reported or finished it): a recovery
    /// copies up to it. Below `last_tid` only when the last optimal backend came back holding
    /// less than it had once reported (its extra transactions were never acknowledged).
    held_tid: Tid,
    /// The newest tid acknowledged to a client as committed: a backend behind it lost
    /// acknowledged commits (see [`last_optimal`]). Never goes back.
    acked_tid: Tid,
    size: StorageSize,
    /// Next id for backend requests.
    next_sub: u64,
    subs: BTreeMap<BackendReqId, Sub>,
    deadlines: BTreeSet<(Duration, BackendReqId)>,
    reads: BTreeMap<BackendReqId, ReadJob>,
    fans: BTreeMap<BackendReqId, FanJob>,
    iters: BTreeMap<BackendIterId, IterRoute>,
    txn: Option<TxnState>,
    /// Outcomes to process after the current step (failures of a degraded backend's requests).
    backlog: VecDeque<(BackendId, BackendReqId, BackendOutcome)>,
    actions: VecDeque<RaidAction>,
    /// Answers waiting until the state version they need is durable.
    held: VecDeque<(u64, RaidAction)>,
    /// The first commit acknowledged before the state it needed was durable (the rule of the
    /// module doc, broken: [`Raid::check`] reports it).
    early_ack: Option<String>,
    version: u64,
    saved: u64,
    must_save: u64,
    /// Next oid to hand out; every oid below `reserved` may have been handed out.
    next_oid: Oid,
    reserved: Oid,
    /// Backends whose oid counter is still being probed; `NewOids` waits for them.
    probing: BTreeSet<BackendId>,
    waiting_oids: VecDeque<(BackendReqId, usize)>,
    /// Tie-breaker for read routing.
    rr: u32,
    now: Now,
    /// The running recovery (at most one).
    recovery: Option<Box<recovery::Recovery>>,
    next_rec: u32,
    next_rec_id: u64,
    last_recovery: Option<RecoveryEnd>,
    /// The front's open blob uploads.
    uploads: recovery::UploadTrack,
    /// Per backend, a transaction voted on it and not known to be finished or aborted.
    voted_on: BTreeMap<BackendId, Tid>,
    /// While no backend is optimal: the one that left last (see [`last_optimal`]).
    last_optimal: Option<BackendId>,
}

impl Raid {
    /// A RAID over `specs` (backend ids are their indexes), started from the persisted state
    /// (`None` on first start) and what each backend reported when it came up (`None` for a
    /// backend that could not be reached within the connect deadline). Decides which
    /// backends are optimal (see [`startup`]), queues a first `SaveState` and the probes of the
    /// backends' oid counters.
    pub fn new(
        cfg: RaidConfig,
        specs: Vec<BackendSpec>,
        persisted: Option<PersistedRaid>,
        infos: Vec<Option<BackendInfo>>,
        now: Now,
    ) -> Raid {
        let decision = startup::decide(&specs, persisted.as_ref(), &infos, now.unix_f64());
        let reserved = persisted.as_ref().map_or(Oid::ROOT, |p| p.oid_hwm);
        let persisted_recovery = persisted.as_ref().and_then(|p| p.recovery.clone());
        let mut members = BTreeMap::new();
        let mut size = None;
        for (i, (spec, state)) in specs.into_iter().zip(decision.states).enumerate() {
            let info = infos.get(i).cloned().flatten();
            if state.is_optimal() && size.is_none() {
                size = info.as_ref().map(|i| i.size);
            }
            match &state {
                BackendState::Optimal => {
                    tracing::info!(storage = %cfg.name, backend = %spec.name, "optimal at start-up")
                }
                BackendState::Degraded { reason, .. } => {
                    tracing::warn!(storage = %cfg.name, backend = %spec.name, %reason, "degraded at start-up")
                }
                other => {
                    tracing::info!(storage = %cfg.name, backend = %spec.name, state = other.word(), "at start-up")
                }
            }
            let connected = info.is_some();
            members.insert(BackendId(i as u32), Member { spec, state, info, connected, outstanding: 0 });
        }
        let mut raid = Raid {
            cfg,
            members,
            last_tid: decision.last_tid,
            held_tid: decision.held_tid,
            acked_tid: decision.acked_tid,
            size: size.unwrap_or_default(),
            next_sub: 1,
            subs: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            reads: BTreeMap::new(),
            fans: BTreeMap::new(),
            iters: BTreeMap::new(),
            txn: None,
            backlog: VecDeque::new(),
            actions: VecDeque::new(),
            held: VecDeque::new(),
            early_ack: None,
            version: 0,
            saved: 0,
            must_save: 0,
            next_oid: reserved,
            reserved,
            probing: BTreeSet::new(),
            waiting_oids: VecDeque::new(),
            rr: 0,
            now,
            recovery: None,
            next_rec: 0,
            next_rec_id: 0,
            last_recovery: None,
            uploads: recovery::UploadTrack::default(),
            voted_on: BTreeMap::new(),
            last_optimal: decision.last_optimal.map(|i| BackendId(i as u32)),
        };
        raid.persist();
        if let Some(p) = persisted_recovery {
            raid.resume_recovery(p);
        }
        for b in raid.optimal() {
            raid.probing.insert(b);
            raid.submit(b, Owner::Probe, BackendRequest::NewOids { n: 1 });
        }
        raid
    }

    /// The storage name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The newest tid handed out or taken over (seeds the front's `last_tid`; new tids go
    /// above it).
    pub fn last_tid(&self) -> Tid {
        self.last_tid
    }

    /// Object count and size (as the reference backend last reported them).
    pub fn size(&self) -> StorageSize {
        self.size
    }

    /// Whether every optimal backend keeps blobs.
    pub fn blobs(&self) -> bool {
        let mut optimal = self.members.values().filter(|m| m.state.is_optimal()).peekable();
        optimal.peek().is_some() && optimal.all(|m| m.info.as_ref().is_some_and(|i| i.blobs))
    }

    /// A request from the front.
    pub fn handle_request(&mut self, now: Now, id: BackendReqId, request: BackendRequest) {
        self.now = now;
        match request {
            BackendRequest::NewOids { n } => self.new_oids(id, n),
            r if writes::is_fanned(&r) => {
                if let Some(r) = self.rec_hold_vote(id, r) {
                    self.start_fan(id, r);
                }
            }
            BackendRequest::IterDrop { iters } => self.drop_iters(id, iters),
            // The recovery's own request (zeo::backend contract): never routed for the front.
            BackendRequest::IterNextWhole { .. } => {
                let error = BackendError {
                    error: crate::wire::error::ZeoError::Exception(crate::wire::value::Text::from_static(
                        "iterator_next_whole is not a front request",
                    )),
                    culprit: Culprit::Client,
                };
                self.answer(id, BackendOutcome::Failed(error), false);
            }
            r => self.start_read(id, r),
        }
        self.pump();
    }

    /// An outcome from `backend` for the RAID's request `id`.
    pub fn handle_outcome(
        &mut self,
        now: Now,
        backend: BackendId,
        id: BackendReqId,
        outcome: BackendOutcome,
    ) {
        self.now = now;
        self.backlog.push_back((backend, id, outcome));
        self.pump();
    }

    /// A backend's connection came up or went down.
    pub fn handle_event(&mut self, now: Now, backend: BackendId, event: BackendEvent) {
        self.now = now;
        let Some(m) = self.members.get_mut(&backend) else { return };
        match event {
            BackendEvent::Up(info) => {
                tracing::info!(storage = %self.cfg.name, backend = %m.spec.name, last_tid = %info.last_tid, state = m.state.word(), "backend up");
                m.connected = true;
                m.info = Some(info);
                self.last_optimal_up(backend);
            }
            BackendEvent::Down { reason } => {
                m.connected = false;
                self.degrade(backend, format!("disconnected: {reason}"));
            }
            BackendEvent::ForeignCommit { tid } => {
                // The RAID's own tids must go above it, or that backend refuses every one of
                // them (a restarted RAID whose previous run's last finish landed late, or
                // another writer). What it holds beyond the others is found by recovery.
                if tid > self.last_tid {
                    tracing::warn!(
                        storage = %self.cfg.name,
                        backend = %m.spec.name,
                        "{} holds transaction {tid}, which the RAID did not write; new tids go on above it",
                        m.spec.name
                    );
                    self.last_tid = tid;
                }
            }
        }
        self.pump();
    }

    /// The driver has made `SaveState { version }` durable.
    pub fn handle_state_saved(&mut self, now: Now, version: u64) {
        self.now = now;
        self.saved = self.saved.max(version);
        while let Some((need, _)) = self.held.front() {
            if *need > self.saved {
                break;
            }
            if let Some((_, a)) = self.held.pop_front() {
                self.actions.push_back(a);
            }
        }
    }

    /// Time has passed (call at or after `poll_timeout`).
    pub fn handle_timeout(&mut self, now: Now) {
        self.now = now;
        while let Some(&(at, sub)) = self.deadlines.first() {
            if at > now.mono {
                break;
            }
            self.deadlines.pop_first();
            let Some(s) = self.subs.get(&sub) else { continue };
            let (b, what) = (s.backend, s.what);
            let secs = self.timeout_for(what).as_secs_f64();
            tracing::warn!(storage = %self.cfg.name, backend = %self.member_name(b), "no answer to {what} within {secs:.1}s");
            self.actions.push_back(RaidAction::Disconnect { backend: b });
            let reason = format!("no answer to {what} within {secs:.1}s");
            self.degrade(b, reason.clone());
            // Also when `b` was out already (an abort sent for cleanliness): settle the request.
            self.backlog.push_back((b, sub, BackendOutcome::Failed(BackendError::backend(reason))));
            self.pump();
        }
        self.rec_timeout();
        self.pump();
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<RaidAction> {
        self.actions.pop_front()
    }

    /// When to call `handle_timeout` next (monotonic time, as `Now::mono`).
    pub fn poll_timeout(&self) -> Option<Duration> {
        let calls = self.deadlines.first().map(|&(at, _)| at);
        match (calls, self.rec_poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The RAID's status.
    pub fn status(&self) -> RaidStatus {
        let optimal = self.members.values().filter(|m| m.state.is_optimal()).count();
        if optimal == 0 {
            RaidStatus::Failed
        } else if optimal == self.members.len() {
            RaidStatus::Optimal
        } else if self.members.values().any(|m| matches!(m.state, BackendState::Recovering { .. })) {
            RaidStatus::Recovering
        } else {
            RaidStatus::Degraded
        }
    }

    /// One row per backend, in id order.
    pub fn details(&self) -> Vec<BackendDetails> {
        self.members
            .values()
            .map(|m| BackendDetails {
                name: m.spec.name.clone(),
                label: m.spec.label.clone(),
                state: m.state.clone(),
                connected: m.connected,
                last_tid: m.info.as_ref().map(|i| {
                    if m.state.is_optimal() {
                        i.last_tid.max(self.held_tid)
                    } else {
                        i.last_tid
                    }
                }),
                outstanding: m.outstanding,
            })
            .collect()
    }

    /// The backend named `name`.
    pub fn backend_id(&self, name: &str) -> Option<BackendId> {
        self.members.iter().find(|(_, m)| m.spec.name == name).map(|(&b, _)| b)
    }

    /// `zeoraid disable NAME`: takes the backend out (refused for the last optimal one).
    pub fn disable(&mut self, now: Now, name: &str) -> Result<(), AdminError> {
        self.now = now;
        let b = self.backend_id(name).ok_or_else(|| AdminError::UnknownBackend(name.to_string()))?;
        let state = self.members.get(&b).map(|m| m.state.clone());
        match state {
            Some(BackendState::Disabled { .. }) => return Ok(()),
            Some(BackendState::Optimal) if self.optimal().len() == 1 => {
                return Err(AdminError::LastOptimal(name.to_string()))
            }
            _ => {}
        }
        let since = now.unix_f64();
        self.set_state(b, BackendState::Disabled { since }, "disabled by the operator");
        self.pump();
        Ok(())
    }

    /// `reload` adds a backend: it joins degraded ("new, not yet recovered").
    pub fn add_backend(&mut self, now: Now, spec: BackendSpec) -> Result<BackendId, AdminError> {
        self.now = now;
        if self.backend_id(&spec.name).is_some() {
            return Err(AdminError::DuplicateBackend(spec.name));
        }
        let b = BackendId(self.members.keys().next_back().map_or(0, |b| b.0 + 1));
        tracing::info!(storage = %self.cfg.name, backend = %spec.name, "backend added (degraded until recovered)");
        let state = BackendState::Degraded {
            reason: "new backend, not yet recovered".to_string(),
            since: now.unix_f64(),
        };
        self.members.insert(b, Member { spec, state, info: None, connected: false, outstanding: 0 });
        self.persist();
        Ok(b)
    }

    /// `reload` removes a backend (refused for the last optimal one); the driver then closes it.
    pub fn remove_backend(&mut self, now: Now, name: &str) -> Result<BackendId, AdminError> {
        self.now = now;
        let b = self.backend_id(name).ok_or_else(|| AdminError::UnknownBackend(name.to_string()))?;
        if self.is_optimal(b) && self.optimal().len() == 1 {
            return Err(AdminError::LastOptimal(name.to_string()));
        }
        self.set_state(b, BackendState::Disabled { since: now.unix_f64() }, "removed from the configuration");
        self.pump();
        self.last_optimal_removed(b);
        self.members.remove(&b);
        tracing::info!(storage = %self.cfg.name, backend = %name, "backend removed");
        self.persist();
        Ok(b)
    }

    // ---- internals shared by reads and writes -------------------------------------------------

    fn member_name(&self, b: BackendId) -> String {
        self.members.get(&b).map_or_else(|| b.to_string(), |m| m.spec.name.clone())
    }

    fn is_optimal(&self, b: BackendId) -> bool {
        self.members.get(&b).is_some_and(|m| m.state.is_optimal())
    }

    /// The optimal backends, in id (configuration) order.
    fn optimal(&self) -> Vec<BackendId> {
        self.members.iter().filter(|(_, m)| m.state.is_optimal()).map(|(&b, _)| b).collect()
    }

    fn timeout_for(&self, what: &str) -> Duration {
        match what {
            "vote" | "finish" | "abort" => self.cfg.write_timeout,
            "pack" => self.cfg.pack_timeout,
            _ => self.cfg.call_timeout,
        }
    }

    /// Sends `request` to `b` on behalf of `owner`; returns the backend request id.
    fn submit(&mut self, b: BackendId, owner: Owner, request: BackendRequest) -> BackendReqId {
        let id = BackendReqId(self.next_sub);
        self.next_sub += 1;
        let what = request_name(&request);
        let deadline = self.now.mono + self.timeout_for(what);
        self.subs.insert(id, Sub { backend: b, owner, deadline, what });
        self.deadlines.insert((deadline, id));
        if let Some(m) = self.members.get_mut(&b) {
            m.outstanding += 1;
        }
        if let BackendRequest::Vote(v) = &request {
            self.voted_on.insert(b, v.tid);
        }
        self.actions.push_back(RaidAction::Submit { backend: b, id, request });
        id
    }

    /// Answers the front, at once or (for `hold`) once the current state is durable.
    fn answer(&mut self, id: BackendReqId, outcome: BackendOutcome, hold: bool) {
        let finished = matches!(outcome, BackendOutcome::Finished { .. });
        let action = RaidAction::Answer { id, outcome };
        if hold && (self.must_save > self.saved || !self.held.is_empty()) {
            self.held.push_back((self.must_save, action));
        } else {
            if finished && self.must_save > self.saved && self.early_ack.is_none() {
                self.early_ack = Some(format!(
                    "a finish (request {}) was acknowledged before state version {} was durable (saved: {})",
                    id.0, self.must_save, self.saved
                ));
            }
            self.actions.push_back(action);
        }
    }

    /// Queues a save of the current state; answers held after this wait for it.
    fn persist(&mut self) {
        self.version += 1;
        self.must_save = self.version;
        let state = PersistedRaid {
            backends: self
                .members
                .values()
                .map(|m| PersistedBackend { name: m.spec.name.clone(), state: m.state.clone() })
                .collect(),
            last_tid: self.last_tid,
            acked_tid: self.acked_tid,
            oid_hwm: self.reserved,
            recovery: self.persisted_recovery(),
            last_optimal: self.last_optimal.map(|b| self.member_name(b)),
        };
        self.actions.push_back(RaidAction::SaveState { version: self.version, state });
    }

    /// Takes an optimal (or recovering) backend out with `reason`.
    fn degrade(&mut self, b: BackendId, reason: String) {
        let Some(m) = self.members.get(&b) else { return };
        if !matches!(m.state, BackendState::Optimal | BackendState::Recovering { .. }) {
            return;
        }
        let since = self.now.unix_f64();
        self.set_state(b, BackendState::Degraded { reason: reason.clone(), since }, &reason);
    }

    /// Changes `b`'s state, persists it, and fails every request in flight on it (reads move
    /// to another backend, fan-out legs count as failed).
    fn set_state(&mut self, b: BackendId, state: BackendState, reason: &str) {
        let Some(m) = self.members.get_mut(&b) else { return };
        let was = m.state.word();
        m.state = state;
        let now_word = m.state.word();
        if now_word == "degraded" {
            tracing::warn!(storage = %self.cfg.name, backend = %m.spec.name, %reason, "backend {was} → degraded");
        } else {
            tracing::info!(storage = %self.cfg.name, backend = %m.spec.name, %reason, "backend {was} → {now_word}");
        }
        self.track_last_optimal(b, was == "optimal");
        self.persist();
        if self.optimal().is_empty() && self.last_optimal.is_none() {
            tracing::error!(storage = %self.cfg.name, "RAID failed: no optimal backend left");
        }
        let mine: Vec<BackendReqId> =
            self.subs.iter().filter(|(_, s)| s.backend == b).map(|(&id, _)| id).collect();
        for id in mine {
            let fail = BackendOutcome::Failed(BackendError::backend(format!(
                "backend {} left the RAID: {reason}",
                self.member_name(b)
            )));
            self.backlog.push_back((b, id, fail));
        }
        self.rec_state_changed(b);
    }

    /// Processes queued outcomes until none is left.
    fn pump(&mut self) {
        while let Some((b, id, outcome)) = self.backlog.pop_front() {
            self.outcome(b, id, outcome);
        }
    }

    fn outcome(&mut self, b: BackendId, id: BackendReqId, outcome: BackendOutcome) {
        let Some(sub) = self.subs.get(&id) else {
            return; // settled already (timed out, or its backend left): a late answer
        };
        if sub.backend != b {
            tracing::warn!(storage = %self.cfg.name, "outcome for request {} from the wrong backend {b}", id.0);
            return;
        }
        let owner = sub.owner;
        let what = sub.what;
        let partial = outcome.is_partial();
        // What may be left voted on the backend (aborted before a recovery copies onto it).
        match (what, &outcome) {
            ("finish", BackendOutcome::Finished { .. } | BackendOutcome::Committed { .. })
            | ("vote", BackendOutcome::Conflicts(_))
            | ("abort", BackendOutcome::Nil) => {
                self.voted_on.remove(&b);
            }
            ("vote", BackendOutcome::Failed(e)) if e.culprit == Culprit::Client => {
                self.voted_on.remove(&b);
            }
            _ => {}
        }
        if partial {
            // More comes for the same request: its deadline starts again.
            let deadline = self.now.mono + self.timeout_for(sub.what);
            let old = sub.deadline;
            self.deadlines.remove(&(old, id));
            self.deadlines.insert((deadline, id));
            if let Some(s) = self.subs.get_mut(&id) {
                s.deadline = deadline;
            }
        } else if let Some(s) = self.subs.remove(&id) {
            self.deadlines.remove(&(s.deadline, id));
            if let Some(m) = self.members.get_mut(&b) {
                m.outstanding = m.outstanding.saturating_sub(1);
            }
        }
        // A backend's own fault degrades it (a client's error does not).
        if let BackendOutcome::Failed(BackendError { culprit: Culprit::Backend, error }) = &outcome {
            if self.is_optimal(b) && !(what == "vote" && mutation::active(Mutation::NoDegradeOnError)) {
                let reason = format!("{what} failed: {}", error_text(error));
                self.degrade(b, reason);
            }
        }
        match owner {
            Owner::Read(front) => self.read_outcome(front, b, id, outcome),
            Owner::Fan(front) => self.fan_outcome(front, b, outcome),
            Owner::Probe => self.probe_outcome(b, outcome),
            Owner::Recovery { rec, op } => self.rec_outcome(rec, b, op, outcome),
            Owner::Forget => {}
        }
    }

    // ---- oids ---------------------------------------------------------------------------------

    fn new_oids(&mut self, front: BackendReqId, n: usize) {
        if !self.probing.is_empty() {
            self.waiting_oids.push_back((front, n));
            return;
        }
        if self.optimal().is_empty() {
            self.answer(front, failed_raid(), false);
            return;
        }
        let n = n.clamp(1, 100) as u64;
        let first = self.next_oid.get();
        let Some(end) = first.checked_add(n) else {
            self.answer(front, BackendOutcome::Failed(BackendError::backend("oid space exhausted")), false);
            return;
        };
        let oids = (first..end).map(Oid::new).collect();
        self.next_oid = Oid::new(end);
        let hold = self.reserve_oids();
        self.answer(front, BackendOutcome::NewOids(oids), hold);
    }

    /// Moves the persisted high-water mark past `next_oid` when needed; returns whether a save
    /// was queued (answers handing out oids must then wait for it).
    fn reserve_oids(&mut self) -> bool {
        if self.next_oid <= self.reserved {
            return false;
        }
        self.reserved = Oid::new(self.next_oid.get().saturating_add(self.cfg.oid_reserve));
        self.persist();
        true
    }

    fn probe_outcome(&mut self, b: BackendId, outcome: BackendOutcome) {
        if let BackendOutcome::NewOids(oids) = &outcome {
            if let Some(max) = oids.iter().max() {
                let above = Oid::new(max.get().saturating_add(1));
                self.next_oid = self.next_oid.max(above);
                self.reserve_oids();
            }
        }
        self.probing.remove(&b);
        if self.probing.is_empty() {
            for (front, n) in std::mem::take(&mut self.waiting_oids) {
                self.new_oids(front, n);
            }
        }
    }
}

/// The answer when no backend is optimal.
fn failed_raid() -> BackendOutcome {
    BackendOutcome::Failed(BackendError::backend("zeoraid: the RAID has failed (no optimal backend)"))
}

/// A backend's error as a reason: the class and, when the payload is a message (or a list of
/// them), the message text.
fn error_text(e: &crate::wire::error::ZeoError) -> String {
    match e {
        crate::wire::error::ZeoError::Other { class_path, payload } => {
            let texts: Vec<&str> = match payload.as_seq() {
                Some(items) => items.iter().filter_map(|v| v.as_str()).collect(),
                None => payload.as_str().into_iter().collect(),
            };
            if texts.is_empty() {
                format!("{class_path}: {payload:?}")
            } else {
                format!("{class_path}: {}", texts.join(" "))
            }
        }
        other => format!("{other:?}"),
    }
    .chars()
    .take(200)
    .collect()
}

/// The wire name of a request, for logs and reasons.
fn request_name(r: &BackendRequest) -> &'static str {
    match r {
        BackendRequest::LoadBefore { .. } => "loadBefore",
        BackendRequest::LoadSerial { .. } => "loadSerial",
        BackendRequest::GetTid { .. } => "getTid",
        BackendRequest::History { .. } => "history",
        BackendRequest::RecordIternext { .. } => "record_iternext",
        BackendRequest::NewOids { .. } => "new_oids",
        BackendRequest::UndoLog { .. } => "undoLog",
        BackendRequest::UndoInfo { .. } => "undoInfo",
        BackendRequest::IterStart { .. } => "iterator_start",
        BackendRequest::IterNext { .. } => "iterator_next",
        BackendRequest::IterNextWhole { .. } => "iterator_next_whole",
        BackendRequest::IterRecordStart { .. } => "iterator_record_start",
        BackendRequest::IterRecordNext { .. } => "iterator_record_next",
        BackendRequest::IterDrop { .. } => "iterator_gc",
        BackendRequest::SendBlob { .. } => "sendBlob",
        BackendRequest::BlobUploadStart { .. } => "blob upload start",
        BackendRequest::BlobUploadChunk { .. } => "blob upload chunk",
        BackendRequest::BlobUploadDrop { .. } => "blob upload drop",
        BackendRequest::Vote(_) => "vote",
        BackendRequest::Finish { .. } => "finish",
        BackendRequest::Abort { .. } => "abort",
        BackendRequest::Pack { .. } => "pack",
        BackendRequest::Sync => "sync",
        BackendRequest::RebuildBegin => "rebuild begin",
        BackendRequest::RebuildCommit => "rebuild commit",
        BackendRequest::RebuildAbort => "rebuild abort",
    }
}
