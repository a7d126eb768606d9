//! The per-storage front: commit lock, invalidation queue, last tid, size, `server_status`
//! counters, and the handle counters for iterators and uploads.
//!
//! Invariants: `last_tid` equals the invalidation queue's newest tid; a `write` in flight
//! belongs to the lock holder; `lock_since` is set exactly when the lock is held.

use std::time::Duration;

use crate::ids::{ConnId, Tid};
use crate::wire::reply::{ServerStatus, StorageInfo};
use crate::wire::value::{Text, Value};
use crate::zeo::backend::{BackendIterId, BackendReqId, StorageSize, UploadId};
use crate::zeo::events::{Now, StorageSeed};
use crate::zeo::invalidations::InvalidationQueue;
use crate::zeo::lock::CommitLock;

/// A pack in progress on a storage.
#[derive(Debug, Clone)]
pub(crate) struct PackState {
    /// The backend request.
    pub(crate) req: BackendReqId,
}

/// One storage, as the ZEO front sees it.
#[derive(Debug, Clone)]
pub(crate) struct Front {
    pub(crate) seed: StorageSeed,
    pub(crate) lock: CommitLock,
    pub(crate) invq: InvalidationQueue,
    pub(crate) last_tid: Tid,
    /// The newest tid the backend committed, or may have committed (a `Finish` that failed: its
    /// outcome is in doubt): above `last_tid` while group-committed transactions wait to become
    /// durable, or after such a failure. New tids are chosen above it, never reused.
    pub(crate) committed_tid: Tid,
    /// `Finish` requests answered `Committed` and not yet `Finished`.
    pub(crate) committing: usize,
    pub(crate) size: StorageSize,
    /// When the current holder got the lock (monotonic, wall).
    pub(crate) lock_since: Option<(Duration, Duration)>,
    /// The write request (`Vote`/`Finish`) in flight for the lock holder.
    pub(crate) write: Option<BackendReqId>,
    /// `Abort`s in flight (nobody waits for them; counted for shutdown).
    pub(crate) aborts_in_flight: usize,
    pub(crate) pack: Option<PackState>,
    next_iter: u64,
    next_upload: u64,
    pub(crate) loads: i64,
    pub(crate) stores: i64,
    pub(crate) commits: i64,
    pub(crate) aborts: i64,
    pub(crate) conflicts: i64,
    pub(crate) conflicts_resolved: i64,
}

impl Front {
    pub(crate) fn new(seed: StorageSeed, queue_size: usize) -> Front {
        let invq = InvalidationQueue::new(queue_size, seed.last_tid, seed.recent.clone());
        Front {
            lock: CommitLock::new(),
            last_tid: seed.last_tid,
            committed_tid: seed.last_tid,
            committing: 0,
            size: seed.size,
            invq,
            seed,
            lock_since: None,
            write: None,
            aborts_in_flight: 0,
            pack: None,
            next_iter: 0,
            next_upload: 0,
            loads: 0,
            stores: 0,
            commits: 0,
            aborts: 0,
            conflicts: 0,
            conflicts_resolved: 0,
        }
    }

    pub(crate) fn new_iter(&mut self) -> BackendIterId {
        self.next_iter += 1;
        BackendIterId(self.next_iter)
    }

    pub(crate) fn new_upload(&mut self) -> UploadId {
        self.next_upload += 1;
        UploadId(self.next_upload)
    }

    /// The holder of the commit lock changed to `holder` at `now`.
    pub(crate) fn note_holder(&mut self, now: Now) {
        self.lock_since = self.lock.holder().map(|_| (now.mono, now.wall));
    }

    /// `get_info`'s map.
    pub(crate) fn info(&self) -> StorageInfo {
        let zi = |n: &'static str| (Text::from_static("ZODB.interfaces"), Text::from_static(n));
        let mut interfaces = vec![
            zi("IStorageRestoreable"),
            zi("IStorageIteration"),
            zi("IStorageUndoable"),
            zi("IStorageCurrentRecordIteration"),
            zi("IExternalGC"),
            zi("IStorage"),
        ];
        if self.seed.blobs {
            interfaces.push(zi("IBlobStorage"));
            interfaces.push(zi("IBlobStorageRestoreable"));
        }
        interfaces.push((Text::from_static("zope.interface"), Text::from_static("Interface")));
        StorageInfo {
            length: Some(clamp_i64(self.size.length)),
            size: Some(clamp_i64(self.size.size)),
            name: Some(Text::from(self.seed.info_name.as_str())),
            supports_undo: Some(true),
            supports_record_iternext: Some(true),
            interfaces: Some(interfaces),
            extra: Vec::new(),
        }
    }

    /// The `info` push after a commit or pack: `{length, size}`.
    pub(crate) fn size_info(&self) -> StorageInfo {
        StorageInfo {
            length: Some(clamp_i64(self.size.length)),
            size: Some(clamp_i64(self.size.size)),
            name: None,
            supports_undo: None,
            supports_record_iternext: None,
            interfaces: None,
            extra: Vec::new(),
        }
    }

    /// The `server_status` map (§4.3).
    pub(crate) fn status(
        &self,
        connections: usize,
        active_txns: usize,
        start: Duration,
        has_timeout: bool,
    ) -> ServerStatus {
        ServerStatus {
            connections: clamp_i64(connections as u64),
            loads: self.loads,
            stores: self.stores,
            commits: self.commits,
            aborts: self.aborts,
            active_txns: clamp_i64(active_txns as u64),
            lock_time: self.lock_since.map(|(_, wall)| wall.as_secs_f64()),
            conflicts: self.conflicts,
            conflicts_resolved: self.conflicts_resolved,
            start: Text::from(ctime(start)),
            waiting: clamp_i64(self.lock.waiting() as u64),
            timeout_thread_is_alive: if has_timeout { Value::Bool(true) } else { Value::str_static("stub") },
            last_transaction: Text::from(self.last_tid.to_string()),
            extra: Vec::new(),
        }
    }

    /// Whether `conn` holds the lock.
    pub(crate) fn holds(&self, conn: ConnId) -> bool {
        self.lock.holder() == Some(conn)
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        self.lock.check()?;
        self.invq.check()?;
        if self.invq.newest() != self.last_tid {
            return Err(format!(
                "last tid {} but invalidation queue at {}",
                self.last_tid,
                self.invq.newest()
            ));
        }
        if self.lock_since.is_some() != self.lock.holder().is_some() {
            return Err("lock_since out of step with the lock".into());
        }
        if self.write.is_some() && self.lock.holder().is_none() {
            return Err("write in flight without a lock holder".into());
        }
        Ok(())
    }
}

fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Python's `time.ctime` of an instant, in UTC: `Wed Nov 25 16:44:21 2026`.
pub(crate) fn ctime(wall: Duration) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = wall.as_secs();
    let Some(tid) = Tid::from_unix(secs, 0) else { return String::from("?") };
    let t = tid.to_utc();
    let weekday = DAYS[((secs / 86_400 + 4) % 7) as usize];
    let month = MONTHS[usize::from(t.month.clamp(1, 12)) - 1];
    format!("{weekday} {month} {:2} {:02}:{:02}:{:02} {}", t.day, t.hour, t.minute, secs % 60, t.year)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_is_pythons_format() {
        assert_eq!(ctime(Duration::from_secs(0)), "Thu Jan  1 00:00:00 1970");
        assert_eq!(ctime(Duration::from_secs(1_795_625_061)), "Wed Nov 25 16:44:21 2026");
    }
}
