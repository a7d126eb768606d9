//! The RAID's last optimal backend: how a failed RAID serves again after a transient fault.
//!
//! A fault (disconnect, timeout, error) degrades the last optimal backend like any other; the
//! RAID then has no optimal backend and fails: clients get errors while it is away. But that
//! backend holds every acknowledged commit: a commit is acknowledged only once every optimal
//! backend finished it, and it was one of them until it left, last. So the RAID remembers it
//! (`Raid::last_optimal`, persisted as `PersistedRaid::last_optimal`) and takes it back, with no
//! copy, as soon as it is reachable again and holds every acknowledged commit:
//!
//! ```text
//!  last optimal leaves ──▶ failed, last_optimal = it (persisted)
//!      │ Up, degraded, last tid ≥ acked           ──▶ optimal, last tid raised to its last tid
//!      │ Up, last tid < acked                     ──▶ stays degraded (warn: lost acknowledged commits)
//!      │ Up, disabled                             ──▶ stays disabled (info: `recover` brings it back)
//!      │ recover it (degraded or disabled, connected, last tid ≥ acked) ──▶ optimal
//!      │ restart                                  ──▶ a start-up candidate (see `startup`)
//!      └ any backend optimal again                ──▶ last_optimal = None
//!
//!  failed, no last optimal (a first start that reached none, or it was removed)
//!      │ nothing ever acknowledged: recover any connected backend ──▶ optimal
//!      └ else: recover refused (no backend is known to hold every acknowledged commit)
//! ```
//!
//! Its extra transactions (finished on it but never acknowledged: it left before the answer)
//! are kept, and the RAID's last tid is raised to its last tid (tids never go back). It is
//! judged against the newest *acknowledged* tid, not the RAID's last tid: that one may have been
//! raised to what it reported when it came back before, transactions it may no longer hold
//! (they were never acknowledged; a backend whose answer was wrong, or whose unsynced writes
//! were lost). Judged against the raised tid, it would be refused for ever. The optimal
//! backends then hold less than the RAID's last tid (`Raid::held_tid`): a recovery copies up to
//! what they hold, and the next commit's tid is above both.
//!
//! Invariant (`Raid::check`): `last_optimal` is set only while no backend is optimal, and names
//! a backend of the RAID.

use crate::ids::{BackendId, Tid};
use crate::zeo::backend::{BackendError, BackendOutcome, BackendReqId, BackendRequest};

use super::types::{AdminError, BackendState, RaidAction};
use super::{Owner, Raid};

impl Raid {
    /// While no backend is optimal (the RAID has failed): the backend that was optimal last,
    /// which becomes optimal again when it is back (see [`BackendState`]).
    pub fn last_optimal(&self) -> Option<&str> {
        self.last_optimal.and_then(|b| self.members.get(&b)).map(|m| m.spec.name.as_str())
    }

    /// After `b`'s state changed (`was_optimal`: it was optimal before): remembers it when it
    /// was the last optimal backend, forgets the last one once a backend is optimal again.
    pub(super) fn track_last_optimal(&mut self, b: BackendId, was_optimal: bool) {
        if was_optimal {
            // It finished every commit the optimal backends hold.
            let held = self.held_tid;
            if let Some(info) = self.members.get_mut(&b).and_then(|m| m.info.as_mut()) {
                info.last_tid = info.last_tid.max(held);
            }
        }
        if !self.optimal().is_empty() {
            self.last_optimal = None;
        } else if was_optimal {
            self.last_optimal = Some(b);
            let name = self.member_name(b);
            tracing::error!(
                storage = %self.cfg.name,
                backend = %name,
                "RAID failed: {name} was its last optimal backend; the RAID serves again when {name} is back"
            );
        }
    }

    /// `reload` removes `b` (called before it is removed).
    pub(super) fn last_optimal_removed(&mut self, b: BackendId) {
        if self.last_optimal == Some(b) {
            self.last_optimal = None;
            tracing::warn!(
                storage = %self.cfg.name,
                backend = %self.member_name(b),
                "the RAID's last optimal backend was removed: no backend is known to hold every acknowledged commit"
            );
        }
    }

    /// Why `b` cannot serve as the last optimal backend now (`None`: it can): not connected,
    /// or behind the newest acknowledged tid.
    fn cannot_serve(&self, b: BackendId) -> Option<String> {
        let m = self.members.get(&b)?;
        if !m.connected {
            return Some("it is not connected".to_string());
        }
        match m.info.as_ref().map(|i| i.last_tid) {
            None => Some("its last tid is unknown".to_string()),
            Some(t) if t < self.acked_tid => Some(format!(
                "its last tid {t} is before the newest acknowledged {} (it lost acknowledged commits)",
                self.acked_tid
            )),
            Some(_) => None,
        }
    }

    /// `b` came up: the last optimal backend, degraded and not behind, serves again.
    pub(super) fn last_optimal_up(&mut self, b: BackendId) {
        if self.last_optimal != Some(b) {
            return;
        }
        let Some(m) = self.members.get(&b) else { return };
        let name = m.spec.name.clone();
        match &m.state {
            BackendState::Degraded { .. } => {}
            BackendState::Disabled { .. } => {
                tracing::info!(
                    storage = %self.cfg.name,
                    backend = %name,
                    "last optimal backend {name} is back but disabled: `recover {name}` makes the RAID serve again"
                );
                return;
            }
            _ => return,
        }
        match self.cannot_serve(b) {
            Some(why) => tracing::warn!(
                storage = %self.cfg.name,
                backend = %name,
                reason = %why,
                "last optimal backend {name} is back but stays degraded: {why}"
            ),
            None => self.promote_last_optimal(b, "the last optimal backend is back"),
        }
    }

    /// `recover NAME` while no backend is optimal (`None` when one is: a normal recovery).
    /// The last optimal backend, degraded or disabled, connected and not behind, is promoted at
    /// once (no copy); anything else is refused saying what would help.
    pub(super) fn recover_failed_raid(&mut self, target: BackendId) -> Option<Result<(), AdminError>> {
        if !self.optimal().is_empty() {
            return None;
        }
        let name = self.member_name(target);
        let Some(last) = self.last_optimal else {
            if self.acked_tid == Tid::ZERO {
                return Some(self.recover_never_acknowledged(target));
            }
            return Some(Err(AdminError::NoSource {
                hint: "the RAID has failed and no backend is known to hold every acknowledged commit"
                    .to_string(),
            }));
        };
        let last_name = self.member_name(last);
        if last != target {
            return Some(Err(AdminError::NoSource {
                hint: format!(
                    "the RAID has failed; its last optimal backend is {last_name}, which holds every \
                     acknowledged commit: bring {last_name} back (it serves again when it reconnects; \
                     `recover {last_name}` if it is disabled or failed while connected), then recover \
                     {name} from it"
                ),
            }));
        }
        if let Some(why) = self.cannot_serve(target) {
            let help = if why.contains("not connected") {
                format!("it serves again as soon as it reconnects, or `recover {name}` once it is up")
            } else {
                "restore its storage so that it holds every acknowledged commit".to_string()
            };
            return Some(Err(AdminError::NoSource {
                hint: format!("{name} is the RAID's last optimal backend but {why}: {help}"),
            }));
        }
        tracing::info!(
            storage = %self.cfg.name,
            backend = %name,
            "recover {name}: the RAID's last optimal backend holds every acknowledged commit; promoted without a copy"
        );
        self.promote_last_optimal(target, "recovered by the operator: it is the last optimal backend");
        self.pump();
        Some(Ok(()))
    }

    /// `recover NAME` of a failed RAID that never acknowledged a commit and knows no last
    /// optimal backend (its first start found none: unreachable, disabled): every backend holds
    /// every acknowledged commit, so the one the operator names serves, without a copy, if it is
    /// connected. (Without this, such a RAID stayed failed for good: simulation seed 1135.)
    fn recover_never_acknowledged(&mut self, target: BackendId) -> Result<(), AdminError> {
        let name = self.member_name(target);
        if let Some(why) = self.cannot_serve(target) {
            return Err(AdminError::NoSource {
                hint: format!(
                    "the RAID has failed and never acknowledged a commit, so any backend may serve, \
                     but {name}: {why}"
                ),
            });
        }
        tracing::info!(
            storage = %self.cfg.name,
            backend = %name,
            "recover {name}: the RAID never acknowledged a commit, so {name} holds every acknowledged one; promoted without a copy"
        );
        self.promote_last_optimal(target, "recovered by the operator: the RAID never acknowledged a commit");
        self.pump();
        Ok(())
    }

    /// Makes the last optimal backend `b` optimal again, with the RAID's last tid raised to its
    /// last tid (its extra transactions were never acknowledged; tids never go back); what the
    /// optimal backends hold is then what it holds.
    fn promote_last_optimal(&mut self, b: BackendId, reason: &str) {
        let name = self.member_name(b);
        // Requests still in flight on it (aborts sent while it was away) are settled now, as
        // failed, while it is still out: a late answer of its old connection is then ignored
        // instead of degrading it again.
        let stale: Vec<BackendReqId> =
            self.subs.iter().filter(|(_, s)| s.backend == b).map(|(&id, _)| id).collect();
        for id in stale {
            let fail = BackendOutcome::Failed(BackendError::backend(format!(
                "backend {name} came back: a request of its old connection is dropped"
            )));
            self.backlog.push_back((b, id, fail));
        }
        self.pump();
        let agreed = self.last_tid;
        let Some(m) = self.members.get_mut(&b) else { return };
        let was = m.state.word();
        m.state = BackendState::Optimal;
        if let Some(info) = m.info.as_ref() {
            if info.last_tid > agreed {
                tracing::info!(
                    storage = %self.cfg.name,
                    backend = %name,
                    "last tid raised from {agreed} to {} (transactions finished on {name} but never acknowledged)",
                    info.last_tid
                );
            } else if info.last_tid < agreed {
                tracing::warn!(
                    storage = %self.cfg.name,
                    backend = %name,
                    "{name} holds up to {}, below the RAID's last tid {agreed} (transactions reported before but never acknowledged); new tids go on above {agreed}",
                    info.last_tid
                );
            }
            self.last_tid = agreed.max(info.last_tid);
            self.held_tid = info.last_tid;
            self.size = info.size;
            if info.last_tid > agreed {
                self.actions.push_back(RaidAction::HistoryMovedOn { last_tid: info.last_tid });
            }
        }
        tracing::info!(storage = %self.cfg.name, backend = %name, %reason, "backend {was} → optimal");
        tracing::info!(
            storage = %self.cfg.name,
            backend = %name,
            "last optimal backend {name} is back: the RAID serves again"
        );
        self.last_optimal = None;
        self.persist();
        // A transaction voted on it before it left is aborted (its old connection may have kept
        // it), and the front's finish of it, if one comes, does not go to it.
        if let Some(&tid) = self.voted_on.get(&b) {
            self.submit(b, Owner::Forget, BackendRequest::Abort { tid });
        }
        if let Some(t) = self.txn.as_mut() {
            t.voted.retain(|&x| x != b);
        }
    }

    /// The invariant of the module doc.
    pub(super) fn check_last_optimal(&self) -> Result<(), String> {
        let Some(b) = self.last_optimal else { return Ok(()) };
        if !self.members.contains_key(&b) {
            return Err(format!("the last optimal backend {b} is not a backend of the RAID"));
        }
        if let Some(o) = self.optimal().first() {
            return Err(format!("last optimal backend {b} remembered while {o} is optimal"));
        }
        Ok(())
    }
}
