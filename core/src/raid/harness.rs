//! Test harness: a [`Raid`] over in-memory backends with injected faults.
//!
//! Every backend is a [`MemBackend`]; a fault rule makes a backend fail, hang on, or drop its
//! connection at a chosen request kind. The harness drives the RAID like the driver does (drain
//! every action, answer backend requests, acknowledge state saves) and calls `Raid::check` after
//! every input.

use std::time::Duration;

use bytes::Bytes;

use crate::ids::{BackendId, Oid, Tid};
use crate::wire::types::{Extension, TxnStatus};
use crate::zeo::backend::{
    BackendError, BackendEvent, BackendInfo, BackendOutcome, BackendReqId, BackendRequest, TxnOp, VoteRequest,
};
use crate::zeo::events::Now;
use crate::zeo::mem_backend::MemBackend;

use super::{BackendSpec, PersistedRaid, Raid, RaidAction, RaidConfig};

/// What a faulty backend does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Answers `Failed` with culprit backend.
    Fail,
    /// Never answers.
    Hang,
    /// Its connection drops when the request arrives.
    Down,
}

/// A fault at the first request whose wire name is `at` (see `request_name`).
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) backend: BackendId,
    pub(crate) at: &'static str,
    pub(crate) fault: Fault,
}

pub(crate) struct Harness {
    pub(crate) raid: Raid,
    pub(crate) backends: Vec<MemBackend>,
    pub(crate) now: Now,
    pub(crate) rules: Vec<Rule>,
    /// Answers to the front, in order.
    pub(crate) answers: Vec<(BackendReqId, BackendOutcome)>,
    /// States saved, newest last.
    pub(crate) saved: Vec<PersistedRaid>,
    /// Acknowledge saves at once.
    pub(crate) auto_save: bool,
    /// Whether every step runs `Raid::check` and panics on a broken invariant (a test of a
    /// mutation that breaks one turns it off and looks itself).
    pub(crate) checking: bool,
    pub(crate) pending_saves: Vec<u64>,
    pub(crate) disconnects: Vec<BackendId>,
    /// Every `HistoryMovedOn` the RAID emitted, in order.
    pub(crate) moved_on: Vec<Tid>,
    /// Requests the backends hang on.
    pub(crate) hung: Vec<(BackendId, BackendReqId)>,
    /// Every request a backend received.
    pub(crate) received: Vec<(BackendId, BackendRequest)>,
    next_front: u64,
    pub(crate) cfg: RaidConfig,
    /// Queue backend requests (delivered by [`Harness::deliver_next`]) instead of answering
    /// them at once.
    pub(crate) queued: bool,
    pub(crate) queues: Vec<std::collections::VecDeque<(BackendReqId, BackendRequest)>>,
}

pub(crate) fn info(b: &MemBackend) -> BackendInfo {
    BackendInfo {
        last_tid: b.last_tid(),
        size: b.size(),
        blobs: true,
        supports_undo: true,
        info_name: "mem".into(),
        read_only: false,
        rebuildable: true,
    }
}

pub(crate) fn specs(n: usize) -> Vec<BackendSpec> {
    (0..n).map(|i| BackendSpec { name: format!("b{i}"), label: format!("mem {i}") }).collect()
}

impl Harness {
    pub(crate) fn new(n: usize) -> Harness {
        Harness::with(vec![MemBackend::new(); n], None)
    }

    pub(crate) fn with(backends: Vec<MemBackend>, persisted: Option<PersistedRaid>) -> Harness {
        let reachable = vec![true; backends.len()];
        Harness::with_reachable(backends, persisted, &reachable)
    }

    /// Starts a RAID where backend `i` is reachable at start-up iff `reachable[i]`.
    pub(crate) fn with_reachable(
        backends: Vec<MemBackend>,
        persisted: Option<PersistedRaid>,
        reachable: &[bool],
    ) -> Harness {
        let now = Now { mono: Duration::from_secs(1), wall: Duration::from_secs(1_790_000_000) };
        let mut cfg = RaidConfig::new("1");
        cfg.call_timeout = Duration::from_secs(2);
        cfg.write_timeout = Duration::from_secs(3);
        let infos = backends
            .iter()
            .enumerate()
            .map(|(i, b)| reachable.get(i).copied().unwrap_or(true).then(|| info(b)))
            .collect();
        let raid = Raid::new(cfg.clone(), specs(backends.len()), persisted, infos, now);
        let mut h = Harness {
            raid,
            backends,
            now,
            rules: Vec::new(),
            answers: Vec::new(),
            saved: Vec::new(),
            auto_save: true,
            checking: true,
            pending_saves: Vec::new(),
            disconnects: Vec::new(),
            moved_on: Vec::new(),
            hung: Vec::new(),
            received: Vec::new(),
            next_front: 1,
            cfg,
            queued: false,
            queues: Vec::new(),
        };
        h.queues = vec![std::collections::VecDeque::new(); h.backends.len()];
        h.run();
        h
    }

    pub(crate) fn fault(&mut self, backend: u32, at: &'static str, fault: Fault) {
        self.rules.push(Rule { backend: BackendId(backend), at, fault });
    }

    fn check(&self) {
        if !self.checking {
            return;
        }
        if let Err(e) = self.raid.check() {
            panic!("RAID invariant broken: {e}");
        }
    }

    /// Drains every action until the RAID is quiet.
    pub(crate) fn run(&mut self) {
        loop {
            self.check();
            let Some(a) = self.raid.poll_action() else { break };
            match a {
                RaidAction::Submit { backend, id, request } if self.queued => {
                    self.queues[backend.0 as usize].push_back((id, request));
                }
                RaidAction::Submit { backend, id, request } => self.deliver(backend, id, request),
                RaidAction::Answer { id, outcome } => self.answers.push((id, outcome)),
                RaidAction::SaveState { version, state } => {
                    self.saved.push(state);
                    if self.auto_save {
                        self.raid.handle_state_saved(self.now, version);
                    } else {
                        self.pending_saves.push(version);
                    }
                }
                RaidAction::Disconnect { backend } => self.disconnects.push(backend),
                RaidAction::HistoryMovedOn { last_tid } => self.moved_on.push(last_tid),
            }
        }
        self.check();
    }

    fn deliver(&mut self, b: BackendId, id: BackendReqId, request: BackendRequest) {
        self.received.push((b, request.clone()));
        let name = super::request_name(&request);
        if let Some(pos) = self.rules.iter().position(|r| r.backend == b && r.at == name) {
            let rule = self.rules.remove(pos);
            match rule.fault {
                Fault::Fail => {
                    let out =
                        BackendOutcome::Failed(BackendError::backend(format!("injected failure at {name}")));
                    self.raid.handle_outcome(self.now, b, id, out);
                }
                Fault::Hang => self.hung.push((b, id)),
                Fault::Down => {
                    self.raid.handle_event(
                        self.now,
                        b,
                        BackendEvent::Down { reason: format!("injected at {name}") },
                    );
                    self.raid.handle_outcome(
                        self.now,
                        b,
                        id,
                        BackendOutcome::Failed(BackendError::backend("connection lost")),
                    );
                }
            }
            return;
        }
        let outcomes = self.backends[b.0 as usize].handle(request);
        for o in outcomes {
            self.raid.handle_outcome(self.now, b, id, o);
        }
    }

    /// Delivers the oldest queued request of backend `b` (each backend takes its requests in
    /// order, backends interleave freely).
    pub(crate) fn deliver_next(&mut self, b: usize) {
        if let Some((id, request)) = self.queues[b].pop_front() {
            self.deliver(BackendId(b as u32), id, request);
            self.run();
        }
    }

    /// Sends a front request without running it to the end; returns its id.
    pub(crate) fn send(&mut self, request: BackendRequest) -> BackendReqId {
        let id = BackendReqId(self.next_front);
        self.next_front += 1;
        self.raid.handle_request(self.now, id, request);
        self.run();
        id
    }

    /// Sends a front request and runs; returns the answers it got (partial ones included).
    pub(crate) fn request(&mut self, request: BackendRequest) -> Vec<BackendOutcome> {
        let id = BackendReqId(self.next_front);
        self.next_front += 1;
        let before = self.answers.len();
        self.raid.handle_request(self.now, id, request);
        self.run();
        let got: Vec<BackendOutcome> =
            self.answers[before..].iter().filter(|(i, _)| *i == id).map(|(_, o)| o.clone()).collect();
        got
    }

    /// The final answer to a request (panics if none came).
    pub(crate) fn one(&mut self, request: BackendRequest) -> BackendOutcome {
        let got = self.request(request);
        got.into_iter().rfind(|o| !o.is_partial()).unwrap_or_else(|| panic!("no final answer"))
    }

    /// Backend `b`'s connection drops (the driver's `Down`).
    pub(crate) fn down(&mut self, b: u32) {
        self.raid.handle_event(
            self.now,
            BackendId(b),
            BackendEvent::Down { reason: "test: link down".into() },
        );
        self.run();
    }

    /// Backend `b`'s connection is up again, reporting its backend's state (the driver's `Up`).
    pub(crate) fn up(&mut self, b: u32) {
        let i = info(&self.backends[b as usize]);
        self.raid.handle_event(self.now, BackendId(b), BackendEvent::Up(i));
        self.run();
    }

    /// Backend `b`'s connection is up again, reporting `last_tid` (a wrong answer, or data it
    /// reported before and lost since).
    pub(crate) fn up_reporting(&mut self, b: u32, last_tid: Tid) {
        let i = BackendInfo { last_tid, ..info(&self.backends[b as usize]) };
        self.raid.handle_event(self.now, BackendId(b), BackendEvent::Up(i));
        self.run();
    }

    /// Moves time on by `d` and lets timeouts fire.
    pub(crate) fn advance(&mut self, d: Duration) {
        self.now.mono += d;
        self.now.wall += d;
        self.raid.handle_timeout(self.now);
        self.run();
    }

    /// A transaction storing `(oid, serial, data)` items with a fresh tid.
    pub(crate) fn vote_request(&self, stores: &[(u64, Tid, &'static str)]) -> BackendRequest {
        let tid = self.next_tid();
        BackendRequest::Vote(Box::new(VoteRequest {
            tid,
            status: TxnStatus::NORMAL,
            user: Bytes::from_static(b"u"),
            description: Bytes::from_static(b"d"),
            extension: Extension::default(),
            ops: stores
                .iter()
                .map(|&(oid, serial, data)| TxnOp::Store {
                    oid: Oid::new(oid),
                    serial,
                    data: Bytes::from_static(data.as_bytes()),
                })
                .collect(),
            deferred_sync: false,
        }))
    }

    pub(crate) fn next_tid(&self) -> Tid {
        let last = self
            .raid
            .last_tid()
            .max(self.backends.iter().map(MemBackend::last_tid).max().unwrap_or(Tid::ZERO));
        Tid::new(last.get() + 1)
    }

    /// Votes and finishes; returns (vote answer, finish answer).
    pub(crate) fn commit(
        &mut self,
        stores: &[(u64, Tid, &'static str)],
    ) -> (BackendOutcome, Option<BackendOutcome>) {
        let v = self.vote_request(stores);
        let BackendRequest::Vote(req) = &v else { unreachable!() };
        let tid = req.tid;
        let voted = self.one(v);
        if !matches!(voted, BackendOutcome::Voted { .. }) {
            return (voted, None);
        }
        let fin = self.one(BackendRequest::Finish { tid });
        (voted, Some(fin))
    }

    pub(crate) fn state_word(&self, b: u32) -> &'static str {
        self.raid.details()[b as usize].state.word()
    }

    pub(crate) fn reason(&self, b: u32) -> String {
        match &self.raid.details()[b as usize].state {
            super::BackendState::Degraded { reason, .. } => reason.clone(),
            other => other.word().to_string(),
        }
    }

    /// The data of `oid` as of now on backend `b`.
    pub(crate) fn load(&mut self, b: usize, oid: u64) -> Option<Bytes> {
        let out = self.backends[b].handle(BackendRequest::LoadBefore {
            oid: Oid::new(oid),
            before: Tid::MAX,
            snapshot: Tid::MAX,
        });
        match out.into_iter().next() {
            Some(BackendOutcome::LoadBefore(Some(r))) => Some(r.data),
            _ => None,
        }
    }
}
