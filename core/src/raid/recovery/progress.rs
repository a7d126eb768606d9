//! Progress: what `details` and the log show of a running recovery (rates over the last
//! seconds, estimates of what is left), and when the progress is persisted.

use std::collections::VecDeque;
use std::time::Duration;

use super::{Recovery, RecoveryPhase, SYNC_EVERY};
use crate::raid::types::RecoveryProgress;
use crate::raid::Raid;

impl Raid {
    /// The running recovery's progress.
    pub fn recovery(&self) -> Option<RecoveryProgress> {
        let r = self.recovery.as_ref()?;
        let (txns_per_sec, bytes_per_sec) = rates(&r.samples);
        let (txns_left, bytes_left) = self.estimate_left(r);
        let eta_secs = match (bytes_left, txns_left) {
            (Some(b), _) if bytes_per_sec > 0.0 => Some(b as f64 / bytes_per_sec),
            (_, Some(t)) if txns_per_sec > 0.0 => Some(t as f64 / txns_per_sec),
            _ => None,
        };
        Some(RecoveryProgress {
            target: self.member_name(r.target),
            source: self.member_name(r.source),
            phase: r.phase,
            current_tid: r.done_tid,
            txns_verified: r.txns_verified,
            txns_copied: r.txns_copied,
            bytes_copied: r.bytes_copied,
            txns_left,
            bytes_left,
            txns_per_sec,
            bytes_per_sec,
            eta_secs,
            limit: r.limit,
            started: r.started,
        })
    }

    pub(super) fn persist_progress(&mut self) {
        if let Some(r) = self.recovery.as_mut() {
            r.last_persist = self.now.mono;
        }
        self.persist();
        if let Some(p) = self.recovery() {
            tracing::debug!(storage = %self.cfg.name, phase = p.phase.word(), tid = %p.current_tid, copied = p.txns_copied, "recovery progress saved");
        }
    }

    /// Persists the verification progress now and then.
    pub(super) fn rec_maybe_persist(&mut self) {
        let Some(r) = self.recovery.as_ref() else { return };
        if r.phase == RecoveryPhase::Verifying && self.now.mono.saturating_sub(r.last_persist) >= SYNC_EVERY {
            self.persist_progress();
        }
    }

    /// Estimates of what is left: from how much of the source's file the recovery has gone
    /// through (when it started at the beginning and the size is known), else from how far
    /// through the source's tid range it is.
    pub(super) fn estimate_left(&self, r: &Recovery) -> (Option<u64>, Option<u64>) {
        // (A source whose size is not a file's — less than what was read — falls back.)
        let f = if r.from_start && r.consumed > 0 && r.consumed < self.size.size {
            r.consumed as f64 / self.size.size as f64
        } else {
            let Some(first) = r.first_tid else { return (None, None) };
            let end = self.held_tid.to_unix_f64();
            let (lo, at) = (first.to_unix_f64(), r.done_tid.to_unix_f64());
            if end <= lo || at < lo {
                return (None, None);
            }
            ((at - lo) / (end - lo)).clamp(0.0, 1.0)
        };
        if f <= 0.0 {
            return (None, None);
        }
        let txns = (r.txns_verified + r.txns_copied) as f64;
        let left = |done: f64| Some((done * (1.0 - f) / f).round() as u64);
        (left(txns), if r.bytes_copied > 0 { left(r.bytes_copied as f64) } else { None })
    }
}

/// Rates over the samples' window: (transactions/s, bytes/s).
fn rates(samples: &VecDeque<(Duration, u64, u64)>) -> (f64, f64) {
    match (samples.front(), samples.back()) {
        (Some(a), Some(b)) if b.0 > a.0 => {
            let secs = (b.0 - a.0).as_secs_f64();
            ((b.1 - a.1) as f64 / secs, (b.2 - a.2) as f64 / secs)
        }
        _ => (0.0, 0.0),
    }
}

/// Records a progress sample (at most every 100 ms, keeping 10 s).
pub(crate) fn sample(samples: &mut VecDeque<(Duration, u64, u64)>, now: Duration, txns: u64, bytes: u64) {
    if samples.back().is_some_and(|(t, _, _)| now.saturating_sub(*t) < Duration::from_millis(100)) {
        if let Some(last) = samples.back_mut() {
            *last = (last.0, txns, bytes);
        }
        return;
    }
    samples.push_back((now, txns, bytes));
    while samples.front().is_some_and(|(t, _, _)| now.saturating_sub(*t) > Duration::from_secs(10)) {
        samples.pop_front();
    }
}
