//! The RAID's invariant checker: [`Raid::check`] turns the invariants written in the doc
//! comments (backend states, requests in flight, durable state before acknowledgements, the
//! three tids, the last optimal backend, the recovery) into code that tests and the simulation
//! call after every step.

#[cfg(doc)]
use super::BackendState;
use super::{Owner, Raid};

impl Raid {
    /// Checks the invariants (see [`BackendState`]); `Err` names the first one broken.
    pub fn check(&self) -> Result<(), String> {
        for (id, s) in &self.subs {
            if !self.members.contains_key(&s.backend) {
                return Err(format!("request {} in flight on a removed backend", id.0));
            }
            if !self.deadlines.contains(&(s.deadline, *id)) {
                return Err(format!("request {} has no deadline entry", id.0));
            }
            if matches!(s.owner, Owner::Read(_) | Owner::Fan(_)) && !self.is_optimal(s.backend) {
                return Err(format!("request {} still owned on non-optimal {}", id.0, s.backend));
            }
        }
        if self.deadlines.len() != self.subs.len() {
            return Err(format!("{} deadlines for {} requests", self.deadlines.len(), self.subs.len()));
        }
        for (b, m) in &self.members {
            let n = self.subs.values().filter(|s| s.backend == *b).count();
            if n != m.outstanding {
                return Err(format!("{b}: outstanding {} but {n} requests in flight", m.outstanding));
            }
        }
        if self.next_oid > self.reserved {
            return Err(format!(
                "next oid {} above the persisted reservation {}",
                self.next_oid, self.reserved
            ));
        }
        if self.saved > self.version {
            return Err("saved a version never asked for".into());
        }
        if let Some(e) = &self.early_ack {
            return Err(e.clone());
        }
        if let Some((need, _)) = self.held.front() {
            if *need <= self.saved {
                return Err("an answer is held though its state is durable".into());
            }
        }
        for (front, job) in &self.fans {
            for b in job.waiting.keys() {
                if !self.is_optimal(*b) {
                    return Err(format!("fan-out {} waits for non-optimal {b}", front.0));
                }
            }
        }
        if self.acked_tid > self.last_tid || self.held_tid > self.last_tid {
            return Err(format!(
                "acknowledged tid {} or held tid {} above the last tid {}",
                self.acked_tid, self.held_tid, self.last_tid
            ));
        }
        if self.acked_tid > self.held_tid && !self.optimal().is_empty() {
            return Err(format!(
                "the optimal backends hold up to {} but {} was acknowledged",
                self.held_tid, self.acked_tid
            ));
        }
        self.check_last_optimal()?;
        self.check_recovery()
    }
}
