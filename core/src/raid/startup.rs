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
//! 3. A reachable candidate whose last tid is below the persisted agreed tid has lost
//!    acknowledged commits: degraded.
//! 4. Among the remaining candidates, those behind the newest one are degraded. The newest are
//!    kept, not blindly: they were optimal when the state was last written, and they are not
//!    behind the agreed tid. Their extra transactions (if the others lack them) were never
//!    acknowledged to a client (a commit is acknowledged only once every optimal backend has
//!    finished it), so keeping them loses nothing, and discarding them is impossible on a remote
//!    backend. Whether the lagging ones are a prefix of the newest is verified by recovery
//!    before it copies anything (the recovery issue).
//!
//! The agreed last tid is then the newest candidate's, and never less than the persisted one
//! (tids never go back, also across restarts).

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
    let mut states: Vec<Option<BackendState>> = vec![None; specs.len()];
    let mut candidates = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let before = persisted.map(|p| p.backends.iter().find(|b| b.name == spec.name).map(|b| &b.state));
        match before {
            Some(None) => states[i] = Some(degraded("new backend, not yet recovered".to_string())),
            Some(Some(BackendState::Optimal)) | None => candidates.push(i),
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
    for &i in &candidates {
        match infos.get(i).and_then(|x| x.as_ref()) {
            None => states[i] = Some(degraded("unreachable at start-up".to_string())),
            Some(info) if info.last_tid < agreed => {
                states[i] = Some(degraded(format!(
                "behind at start-up: last tid {} is before the agreed {agreed} (lost acknowledged commits)",
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
    Decision {
        states: states.into_iter().map(|s| s.unwrap_or_else(|| degraded("unknown".into()))).collect(),
        last_tid,
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
            oid_hwm: Oid::new(0),
            recovery: None,
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
    }
}
