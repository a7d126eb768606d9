//! The start-up rule: which backends are optimal when the RAID starts.
//!
//! Inputs: the persisted state (`None` on the very first start), and for each configured
//! backend what it reported when it came up (`None`: not reachable within the connect deadline,
//! or failed to open).
//!
//! 1. A backend the persisted state lists as degraded, disabled or recovering stays out (a
//!    recovering one stays recovering when the persisted state holds its recovery, which
//!    `Raid::new` then resumes; otherwise it is degraded). A backend the state does not know
//!    (added to the config since) joins degraded: it holds nothing we can vouch for.
//! 2. A candidate (optimal in the state, or any backend on the first start) that cannot be
//!    reached is degraded ("unreachable at start-up").
//! 3. A reachable candidate whose last tid is below the persisted acknowledged tid has lost
//!    acknowledged commits: degraded. (Not the persisted last tid: that one may have been
//!    raised to what a backend reported, transactions that were never acknowledged and that
//!    the backend may no longer hold.)
//! 4. Among the remaining candidates, those behind the newest one are degraded. The newest are
//!    kept, not blindly: they were optimal when the state was last written, and they are not
//!    behind the agreed tid. Their extra transactions (if the others lack them) were never
//!    acknowledged to a client (a commit is acknowledged only once every optimal backend has
//!    finished it), so keeping them loses nothing, and discarding them is impossible on a remote
//!    backend. Whether the lagging ones are a prefix of the newest is verified by recovery
//!    before it copies anything (the recovery issue).
//!
//! The RAID's last tid is then the newest candidate's, and never less than the persisted one
//! (tids never go back, also across restarts); the optimal backends hold the newest
//! candidate's.
//!
//! **A failed RAID.** When the persisted state has no optimal backend (the RAID had failed), its
//! *last optimal* backend (`PersistedRaid::last_optimal`, the one that left last: it holds every
//! acknowledged commit) is a candidate like an optimal one when it is persisted as degraded
//! (rules 2–4 apply to it); a disabled one stays disabled (the operator took it out: `recover`
//! brings it back). When the decision leaves no backend optimal, the RAID keeps a last optimal
//! backend so that it can come back later (its `Up`, or `recover`): the persisted one if it is
//! still configured, else the first candidate that was unreachable (a persisted optimal backend
//! that holds every acknowledged commit); none on a first start.

use crate::ids::Tid;
use crate::zeo::backend::BackendInfo;

use super::types::{BackendSpec, BackendState, PersistedRaid};

/// What the start-up rule decided.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    /// One state per configured backend, in config order.
    pub states: Vec<BackendState>,
    /// The tid the RAID continues from.
    pub last_tid: Tid,
    /// The newest tid the optimal backends hold (`last_tid` when none is optimal).
    pub held_tid: Tid,
    /// The newest tid known acknowledged.
    pub acked_tid: Tid,
    /// When no backend is optimal: the index of the RAID's last optimal backend.
    pub last_optimal: Option<usize>,
}

/// Applies the start-up rule (module doc).
pub(crate) fn decide(
    specs: &[BackendSpec],
    persisted: Option<&PersistedRaid>,
    infos: &[Option<BackendInfo>],
    since: f64,
) -> Decision {
    let degraded = |reason: String| BackendState::Degraded { reason, since };
    let agreed = persisted.map(|p| p.last_tid).unwrap_or(Tid::ZERO);
    let acked = persisted.map(|p| p.acked_tid.min(p.last_tid)).unwrap_or(Tid::ZERO);
    let mut states: Vec<Option<BackendState>> = vec![None; specs.len()];
    // The persisted last optimal backend counts only while no backend is optimal.
    let last_optimal = persisted
        .filter(|p| !p.backends.iter().any(|b| b.state.is_optimal()))
        .and_then(|p| p.last_optimal.as_deref());
    let mut candidates = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let before = persisted.map(|p| p.backends.iter().find(|b| b.name == spec.name).map(|b| &b.state));
        match before {
            Some(None) => states[i] = Some(degraded("new backend, not yet recovered".to_string())),
            Some(Some(BackendState::Optimal)) | None => candidates.push(i),
            Some(Some(BackendState::Degraded { .. })) if last_optimal == Some(spec.name.as_str()) => {
                candidates.push(i)
            }
            Some(Some(BackendState::Recovering { since })) => {
                // A persisted recovery of it resumes (`Raid::new`); otherwise it stays out.
                let resumes =
                    persisted.and_then(|p| p.recovery.as_ref()).is_some_and(|r| r.target == spec.name);
                states[i] = Some(if resumes {
                    BackendState::Recovering { since: *since }
                } else {
                    degraded("a recovery was interrupted by a restart".to_string())
                })
            }
            Some(Some(other)) => states[i] = Some(other.clone()),
        }
    }
    let mut reachable = Vec::new();
    let mut unreachable = Vec::new();
    for &i in &candidates {
        match infos.get(i).and_then(|x| x.as_ref()) {
            None => {
                unreachable.push(i);
                states[i] = Some(degraded("unreachable at start-up".to_string()))
            }
            Some(info) if info.last_tid < acked => {
                states[i] = Some(degraded(format!(
                "behind at start-up: last tid {} is before the newest acknowledged {acked} (lost acknowledged commits)",
                info.last_tid
            )))
            }
            Some(info) => reachable.push((i, info.last_tid)),
        }
    }
    let newest = reachable.iter().map(|&(_, t)| t).max();
    if let Some(newest) = newest {
        let leader = reachable.iter().find(|&&(_, t)| t == newest).map(|&(i, _)| specs[i].name.clone());
        for &(i, t) in &reachable {
            if t < newest {
                states[i] = Some(degraded(format!(
                    "behind at start-up: last tid {t}, {} has {newest}",
                    leader.as_deref().unwrap_or("?")
                )));
            } else {
                states[i] = Some(BackendState::Optimal);
            }
        }
    }
    let last_tid = newest.map_or(agreed, |n| n.max(agreed));
    let last_optimal = if newest.is_some() {
        None
    } else {
        last_optimal
            .and_then(|name| specs.iter().position(|s| s.name == name))
            .or_else(|| persisted.and(unreachable.first().copied()))
    };
    Decision {
        states: states.into_iter().map(|s| s.unwrap_or_else(|| degraded("unknown".into()))).collect(),
        last_tid,
        held_tid: newest.unwrap_or(last_tid),
        acked_tid: acked,
        last_optimal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Oid;
    use crate::raid::types::PersistedBackend;
    use crate::zeo::backend::StorageSize;

    fn specs(n: usize) -> Vec<BackendSpec> {
        (0..n).map(|i| BackendSpec { name: format!("b{i}"), label: String::new() }).collect()
    }

    fn info(t: u64) -> Option<BackendInfo> {
        Some(BackendInfo {
            last_tid: Tid::new(t),
            size: StorageSize::default(),
            blobs: true,
            supports_undo: true,
            info_name: String::new(),
            read_only: false,
            rebuildable: false,
        })
    }

    fn persisted(states: &[BackendState], last: u64) -> PersistedRaid {
        PersistedRaid {
            backends: states
                .iter()
                .enumerate()
                .map(|(i, s)| PersistedBackend { name: format!("b{i}"), state: s.clone() })
                .collect(),
            last_tid: Tid::new(last),
            acked_tid: Tid::new(last),
            oid_hwm: Oid::new(0),
            recovery: None,
            last_optimal: None,
        }
    }

    fn words(d: &Decision) -> Vec<&'static str> {
        d.states.iter().map(|s| s.word()).collect()
    }

    #[test]
    fn first_start_equal_backends_are_all_optimal() {
        let d = decide(&specs(2), None, &[info(0), info(0)], 1.0);
        assert_eq!(words(&d), ["optimal", "optimal"]);
        assert_eq!(d.last_tid, Tid::ZERO);
    }

    #[test]
    fn first_start_with_existing_data_keeps_the_longer_one() {
        let d = decide(&specs(2), None, &[info(0), info(9)], 1.0);
        assert_eq!(words(&d), ["degraded", "optimal"]);
        assert_eq!(d.last_tid, Tid::new(9));
    }

    #[test]
    fn a_degraded_backend_stays_degraded_even_when_ahead() {
        let p =
            persisted(&[BackendState::Optimal, BackendState::Degraded { reason: "x".into(), since: 0.0 }], 5);
        let d = decide(&specs(2), Some(&p), &[info(5), info(7)], 1.0);
        assert_eq!(words(&d), ["optimal", "degraded"]);
        assert_eq!(d.last_tid, Tid::new(5));
    }

    #[test]
    fn lost_acknowledged_commits_degrade_and_unreachable_degrades() {
        let p = persisted(&[BackendState::Optimal, BackendState::Optimal, BackendState::Optimal], 5);
        let d = decide(&specs(3), Some(&p), &[info(4), None, info(6)], 1.0);
        assert_eq!(words(&d), ["degraded", "degraded", "optimal"]);
        assert_eq!(d.last_tid, Tid::new(6));
    }

    #[test]
    fn nobody_reachable_is_failed_and_keeps_the_agreed_tid() {
        let p = persisted(&[BackendState::Optimal, BackendState::Disabled { since: 0.0 }], 5);
        let d = decide(&specs(3), Some(&p), &[None, info(9), info(9)], 1.0);
        assert_eq!(words(&d), ["degraded", "disabled", "degraded"]);
        assert_eq!(d.last_tid, Tid::new(5));
        // b0 was optimal and holds every acknowledged commit: it is the one to come back.
        assert_eq!(d.last_optimal, Some(0));
    }

    #[test]
    fn a_first_start_with_nobody_reachable_has_no_last_optimal_backend() {
        let d = decide(&specs(2), None, &[None, None], 1.0);
        assert_eq!(words(&d), ["degraded", "degraded"]);
        assert_eq!(d.last_optimal, None);
    }

    fn failed(last_optimal: &str, states: &[BackendState], last: u64) -> PersistedRaid {
        PersistedRaid { last_optimal: Some(last_optimal.into()), ..persisted(states, last) }
    }

    fn deg() -> BackendState {
        BackendState::Degraded { reason: "disconnected".into(), since: 0.0 }
    }

    #[test]
    fn the_last_optimal_backend_of_a_failed_raid_is_a_candidate() {
        let p = failed("b1", &[deg(), deg()], 5);
        // Reachable and not behind: optimal, the agreed tid raised to its last tid.
        let d = decide(&specs(2), Some(&p), &[info(5), info(7)], 1.0);
        assert_eq!(words(&d), ["degraded", "optimal"]);
        assert_eq!((d.last_tid, d.last_optimal), (Tid::new(7), None));
        // Behind the agreed tid: lost acknowledged commits, stays out (and stays the last).
        let d = decide(&specs(2), Some(&p), &[info(9), info(4)], 1.0);
        assert_eq!(words(&d), ["degraded", "degraded"]);
        assert_eq!((d.last_tid, d.last_optimal), (Tid::new(5), Some(1)));
        // Unreachable: stays the last optimal one, to come back with its `Up`.
        let d = decide(&specs(2), Some(&p), &[info(9), None], 1.0);
        assert_eq!(words(&d), ["degraded", "degraded"]);
        assert_eq!(d.last_optimal, Some(1));
    }

    /// The last tid was raised to what the last optimal backend once reported (never
    /// acknowledged, and it no longer holds it): it still holds every acknowledged commit, so it
    /// serves; tids go on above the raised one, the optimal backends hold its own.
    #[test]
    fn a_last_tid_above_the_acknowledged_one_does_not_keep_the_last_optimal_backend_out() {
        let p = PersistedRaid { acked_tid: Tid::new(5), ..failed("b1", &[deg(), deg()], 8) };
        let d = decide(&specs(2), Some(&p), &[info(3), info(6)], 1.0);
        assert_eq!(words(&d), ["degraded", "optimal"]);
        assert_eq!(
            (d.last_tid, d.held_tid, d.acked_tid, d.last_optimal),
            (Tid::new(8), Tid::new(6), Tid::new(5), None)
        );
        // Behind the acknowledged tid: it lost acknowledged commits.
        let d = decide(&specs(2), Some(&p), &[info(3), info(4)], 1.0);
        assert_eq!(words(&d), ["degraded", "degraded"]);
        assert_eq!((d.last_tid, d.last_optimal), (Tid::new(8), Some(1)));
    }

    #[test]
    fn a_disabled_last_optimal_backend_stays_disabled_and_stays_the_last() {
        let p = failed("b0", &[BackendState::Disabled { since: 0.0 }, deg()], 5);
        let d = decide(&specs(2), Some(&p), &[info(5), info(5)], 1.0);
        assert_eq!(words(&d), ["disabled", "degraded"]);
        assert_eq!(d.last_optimal, Some(0));
        // A last optimal name that is no longer configured is forgotten.
        let d = decide(&specs(1), Some(&failed("gone", &[deg()], 5)), &[info(5)], 1.0);
        assert_eq!((words(&d), d.last_optimal), (vec!["degraded"], None));
    }
}
