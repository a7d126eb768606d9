//! Online recovery (being written).

use super::types::{AdminError, RateLimit, RecoveryEnd, RecoveryProgress};
use super::Raid;
use crate::zeo::events::Now;

impl Raid {
    /// `zeoraid recover NAME`: starts rebuilding a degraded, disabled or new backend from an
    /// optimal one, with `limit` (or the configured default).
    pub fn recover(&mut self, now: Now, name: &str, limit: Option<RateLimit>) -> Result<(), AdminError> {
        self.now = now;
        let _ = limit;
        Err(AdminError::UnknownBackend(name.to_string()))
    }

    /// The running recovery's progress.
    pub fn recovery(&self) -> Option<RecoveryProgress> {
        None
    }

    /// How the last recovery ended.
    pub fn last_recovery(&self) -> Option<&RecoveryEnd> {
        None
    }
}
