//! The recovery's log lines: the core has no clock of its own to log by, so the driver looks
//! at each RAID's running recovery once a second ([`WATCH_EVERY`]) and logs, in the target
//! backend's span (`backend{storage=1 name=b}`): the start and every phase change at info, the
//! progress every [`LOG_EVERY`] at info (phase, current tid, done, left, rate, ETA, limit),
//! and the end (optimal at info, failed at warn with the reason).

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};
use zeoraid_core::raid::RecoveryPhase;

use super::raids::StorageUnit;
use super::Backend;
use crate::admin::{human_bytes, progress_line, RecoveryReport};

/// How often the driver looks at the recoveries.
pub(super) const WATCH_EVERY: Duration = Duration::from_secs(1);
/// How often a running recovery's progress is logged.
pub(super) const LOG_EVERY: Duration = Duration::from_secs(10);

/// What was last seen of one storage's recovery.
#[derive(Debug, Default)]
pub(super) struct RecoveryWatch {
    /// The running recovery's target and phase.
    running: Option<(String, RecoveryPhase)>,
    /// The `at` of the last recovery end already logged.
    ended_at: Option<f64>,
    /// When the progress was last logged.
    logged: Option<Instant>,
}

impl RecoveryWatch {
    /// A watch that takes the RAID's current last end as already logged (a restart does not
    /// log it again).
    pub(super) fn new<B: Backend>(unit: &StorageUnit<B>) -> RecoveryWatch {
        RecoveryWatch { ended_at: unit.raid.last_recovery().map(|e| e.at), ..RecoveryWatch::default() }
    }

    /// Looks at `unit`'s recovery and logs what changed.
    pub(super) fn look<B: Backend>(&mut self, unit: &StorageUnit<B>, now: Instant) {
        let span = |target: &str| {
            unit.raid
                .backend_id(target)
                .and_then(|id| unit.backends.get(&id))
                .map_or_else(tracing::Span::none, |s| s.span.clone())
        };
        match unit.raid.recovery() {
            Some(p) => {
                let (target, phase) = (p.target.clone(), p.phase);
                let report = RecoveryReport::from(p);
                let _g = span(&target).entered();
                match &self.running {
                    Some((t, _)) if *t == target => {}
                    _ => {
                        info!(
                            "recovery started: from {}, {} (limit: {})",
                            report.source,
                            report.phase,
                            limit(&report)
                        );
                        self.logged = Some(now);
                    }
                }
                if self.running.as_ref().is_some_and(|(t, ph)| *t == target && *ph != phase) {
                    info!("recovery: {} (tid {})", report.phase, report.current_tid);
                }
                if self.logged.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
                    info!("{}", progress_line(&report));
                    self.logged = Some(now);
                }
                self.running = Some((target, phase));
            }
            None => self.running = None,
        }
        if let Some(end) = unit.raid.last_recovery() {
            if self.ended_at != Some(end.at) {
                self.ended_at = Some(end.at);
                let _g = span(&end.target).entered();
                let copied =
                    format!("{} txn(s) / {} copied", end.txns_copied, human_bytes(end.bytes_copied as f64));
                match &end.failure {
                    None => info!("recovery done: optimal ({copied})"),
                    Some(reason) => warn!("recovery failed: {reason} ({copied})"),
                }
            }
        }
    }
}

fn limit(r: &RecoveryReport) -> zeoraid_core::raid::RateLimit {
    zeoraid_core::raid::RateLimit { bytes_per_sec: r.limit_bytes, txns_per_sec: r.limit_txns }
}
