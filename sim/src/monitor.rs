//! The monitor (a client host): looks at the RAID's admin `details` every [`EVERY`], traces
//! every backend state change, checks that at most one recovery runs at a time, sends the
//! admin requests the nemesis queues, and in the calm phase recovers every backend that is not
//! optimal, one at a time.

use std::collections::BTreeMap;
use std::time::Duration;

use zeoraid_server::admin::{AdminReply, AdminRequest};

use crate::hosts::AdminSlot;
use crate::record::{now, Shared};
use crate::world::AdminQueue;

/// How often the monitor looks.
pub const EVERY: Duration = Duration::from_millis(50);
/// After healing, how long before the monitor starts recovering backends.
pub const RECOVER_AFTER: Duration = Duration::from_secs(1);

fn describe(r: &AdminRequest) -> String {
    match r {
        AdminRequest::Status => "status".into(),
        AdminRequest::Details => "details".into(),
        AdminRequest::Disable { name, .. } => format!("disable {name}"),
        AdminRequest::Recover { backend, .. } => format!("recover {backend}"),
        AdminRequest::Reload { .. } => "reload".into(),
    }
}

fn answer(r: &Option<AdminReply>) -> String {
    match r {
        None => "no answer (the RAID host is down)".into(),
        Some(a) if a.ok => format!("ok {}", a.notes.join("; ")),
        Some(a) => format!("refused: {}", a.error.clone().unwrap_or_default()),
    }
}

/// Runs until `end`.
///
/// After the healing the run ends (`stop`) as soon as every backend is optimal and every one of
/// the `clients` had a commit acknowledged since the healing, or at `end` at the latest.
pub async fn run(
    admin: AdminSlot,
    queue: AdminQueue,
    log: Shared,
    clients: usize,
    heal: Duration,
    end: Duration,
) {
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut last_recover = Duration::ZERO;
    let mut attempts = 0usize;
    let mut wiped: Vec<String> = Vec::new();
    let mut last_restart = Duration::ZERO;
    while now() < end {
        tokio::time::sleep(EVERY).await;
        if now() >= end {
            break;
        }
        let Some(sender) = admin.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() else {
            continue;
        };
        loop {
            let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop_front();
            let Some(req) = next else { break };
            let what = describe(&req);
            let r = tokio::time::timeout(Duration::from_secs(2), sender.ask(req)).await.ok().flatten();
            log.trace(format!("admin {what}: {}", answer(&r)));
        }
        let Ok(Some(reply)) =
            tokio::time::timeout(Duration::from_secs(1), sender.ask(AdminRequest::Details)).await
        else {
            continue;
        };
        let Some(s) = reply.storages.first() else { continue };
        for b in &s.backends {
            let old = prev.insert(b.name.clone(), b.state.clone());
            if old.as_deref() != Some(b.state.as_str()) {
                let from = old.unwrap_or_else(|| "start".into());
                let reason = b.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
                log.trace(format!("backend {}: {} -> {}{}", b.name, from, b.state, reason));
                if from != "start" {
                    *log.lock().transitions.entry(format!("{from}->{}", b.state)).or_default() += 1;
                }
            }
        }
        if let Some(b) = &s.broken_invariant {
            let v = format!("RAID invariant broken (Raid::check): {b}");
            log.trace(&v);
            log.lock().violations.push(v);
        }
        // A recovery that stops because the target diverged tells the operator to empty the
        // target's storage (a remote backend cannot be truncated from the RAID): do so, once.
        for b in &s.backends {
            let diverged = b.state == "degraded"
                && b.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("diverges") && r.contains("empty its storage"));
            if diverged && !wiped.contains(&b.name) {
                wiped.push(b.name.clone());
                log.trace(format!("monitor: {} diverged; the operator empties its storage", b.name));
                log.lock().wipe.push(b.name.clone());
            }
        }
        let recovering: Vec<&str> =
            s.backends.iter().filter(|b| b.state == "recovering").map(|b| b.name.as_str()).collect();
        if recovering.len() > 1 {
            let v =
                format!("invariant 5: {} recoveries at once: {}", recovering.len(), recovering.join(", "));
            log.trace(&v);
            log.lock().violations.push(v);
        }
        {
            let mut g = log.lock();
            g.last_states = s.backends.iter().map(|b| (b.name.clone(), b.state.clone())).collect();
        }
        let t = now();
        if t > heal && s.backends.iter().all(|b| b.state == "optimal") {
            let g = log.lock();
            // Acknowledged after the healing as the checker counts it (seed 8409: a commit
            // acknowledged between the planned healing and the nemesis' healing step ended the
            // run, and the checker, counting from the later one, missed a client's commit).
            let all = g.healed_at.is_some_and(|healed| {
                (0..clients as u32).all(|c| g.acks.get(&c).is_some_and(|a| a.iter().any(|x| *x > healed)))
            });
            drop(g);
            if all {
                log.trace("monitor: converged after the healing; the run ends");
                log.lock().stop = true;
                return;
            }
        }
        if t >= heal + RECOVER_AFTER && s.status == "failed" && t >= last_restart + Duration::from_secs(10) {
            log.trace("monitor: the RAID is failed after the healing; the operator restarts it");
            log.lock().restart_raid = true;
            last_restart = t;
        }
        if t >= heal + RECOVER_AFTER && s.recovery.is_none() && t >= last_recover + Duration::from_secs(1) {
            // Each non-optimal backend in turn, as an operator reading the refusals would: when
            // the RAID has failed, only its last optimal backend can be recovered (promoted).
            let targets: Vec<_> = s
                .backends
                .iter()
                .filter(|b| (b.state == "degraded" || b.state == "disabled") && b.connected)
                .collect();
            let target = (!targets.is_empty()).then(|| targets[attempts % targets.len()]);
            attempts += 1;
            if let Some(b) = target {
                let req = AdminRequest::Recover {
                    storage: None,
                    backend: b.name.clone(),
                    rate_bytes: None,
                    rate_txns: None,
                };
                let r = tokio::time::timeout(Duration::from_secs(2), sender.ask(req)).await.ok().flatten();
                log.trace(format!("monitor: recover {}: {}", b.name, answer(&r)));
                last_recover = t;
            }
        }
    }
    log.trace("monitor: the calm phase's bound passed; the run ends");
    log.lock().stop = true;
}
