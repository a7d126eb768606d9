//! The invalidation queue that answers `getInvalidations` (§6.1): the last N commits of a
//! storage with the oids each changed, newest last.
//!
//! Invariants ([`InvalidationQueue::check`]): never empty (it is seeded with at least the
//! storage's last tid); tids strictly increase from front to back; at most `capacity` entries.

use crate::ids::{Oid, Tid};
use std::collections::{BTreeSet, VecDeque};
use thiserror::Error;

/// A commit was recorded out of order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("commit {tid} recorded after {newest}: tids must increase")]
pub struct OutOfOrder {
    /// The tid recorded.
    pub tid: Tid,
    /// The newest tid already queued.
    pub newest: Tid,
}

/// The bounded queue of recent commits of one storage.
#[derive(Debug, Clone)]
pub struct InvalidationQueue {
    capacity: usize,
    entries: VecDeque<(Tid, Vec<Oid>)>,
}

impl InvalidationQueue {
    /// A queue holding at most `capacity` commits (at least 1), seeded with the storage's
    /// recent commits (oldest first, as `lastInvalidations` gives them) or, when it has none
    /// to offer, with its last tid alone: a client whose cache is older than the seed gets
    /// `None` and drops its cache, which is always safe.
    pub fn new(capacity: usize, last_tid: Tid, recent: Vec<(Tid, Vec<Oid>)>) -> InvalidationQueue {
        let capacity = capacity.max(1);
        let mut q = InvalidationQueue { capacity, entries: VecDeque::new() };
        for (tid, oids) in recent {
            // A seed out of order is dropped, not trusted.
            let _ = q.record(tid, oids);
        }
        if q.newest() < last_tid || q.entries.is_empty() {
            q.entries.clear();
            q.entries.push_back((last_tid, Vec::new()));
        }
        q
    }

    /// The queued commits, oldest first (to persist at shutdown and seed the next start).
    pub fn entries(&self) -> Vec<(Tid, Vec<Oid>)> {
        self.entries.iter().cloned().collect()
    }

    /// The newest tid queued (the storage's last committed tid).
    pub fn newest(&self) -> Tid {
        self.entries.back().map_or(Tid::ZERO, |e| e.0)
    }

    /// Records a commit; the oldest entry falls out when the queue is full.
    pub fn record(&mut self, tid: Tid, oids: Vec<Oid>) -> Result<(), OutOfOrder> {
        if let Some(&(newest, _)) = self.entries.back() {
            if tid <= newest {
                return Err(OutOfOrder { tid, newest });
            }
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back((tid, oids));
        Ok(())
    }

    /// The answer to `getInvalidations(tid)`: `Some((newest, oids changed after tid))` when
    /// the queue reaches back to `tid`, `None` when it does not (the client must drop its
    /// cache). Oids come sorted and without repeats.
    pub fn since(&self, tid: Tid) -> Option<(Tid, Vec<Oid>)> {
        let oldest = self.entries.front()?.0;
        if oldest > tid {
            return None;
        }
        let oids: BTreeSet<Oid> =
            self.entries.iter().filter(|(t, _)| *t > tid).flat_map(|(_, o)| o.iter().copied()).collect();
        Some((self.newest(), oids.into_iter().collect()))
    }

    /// Checks the invariants in the module documentation.
    pub fn check(&self) -> Result<(), String> {
        if self.entries.is_empty() {
            return Err("empty invalidation queue".into());
        }
        if self.entries.len() > self.capacity {
            return Err(format!("{} entries over capacity {}", self.entries.len(), self.capacity));
        }
        let increasing = self.entries.iter().zip(self.entries.iter().skip(1)).all(|(a, b)| a.0 < b.0);
        if !increasing {
            return Err("tids do not increase".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(n: u64) -> Tid {
        Tid::new(n)
    }
    fn o(n: u64) -> Oid {
        Oid::new(n)
    }

    #[test]
    fn answers_like_the_stock_server_with_a_queue_of_three() {
        // §6.1: a tid older than the oldest queued entry gives None; a current one gives
        // [latest, []].
        let mut q = InvalidationQueue::new(3, t(10), vec![]);
        q.record(t(20), vec![o(1)]).expect("in order");
        q.record(t(30), vec![o(2), o(1)]).expect("in order");
        assert_eq!(q.since(t(10)), Some((t(30), vec![o(1), o(2)])));
        assert_eq!(q.since(t(20)), Some((t(30), vec![o(1), o(2)])));
        assert_eq!(q.since(t(25)), Some((t(30), vec![o(1), o(2)])));
        assert_eq!(q.since(t(30)), Some((t(30), vec![])));
        assert_eq!(q.since(t(99)), Some((t(30), vec![])));
        q.record(t(40), vec![o(3)]).expect("in order");
        // (10, []) fell out: 10 is now older than the oldest entry.
        assert_eq!(q.since(t(10)), None);
        assert_eq!(q.since(t(5)), None);
        assert_eq!(q.since(t(20)), Some((t(40), vec![o(1), o(2), o(3)])));
    }

    #[test]
    fn out_of_order_commits_are_refused() {
        let mut q = InvalidationQueue::new(3, t(10), vec![]);
        assert_eq!(q.record(t(10), vec![]), Err(OutOfOrder { tid: t(10), newest: t(10) }));
        assert!(q.record(t(11), vec![]).is_ok());
    }

    #[test]
    fn a_stale_seed_is_replaced_by_the_last_tid() {
        let q = InvalidationQueue::new(5, t(50), vec![(t(10), vec![o(1)]), (t(20), vec![o(2)])]);
        assert_eq!(q.since(t(20)), None, "the seed does not reach the last tid");
        assert_eq!(q.since(t(50)), Some((t(50), vec![])));
        let q = InvalidationQueue::new(5, t(20), vec![(t(10), vec![o(1)]), (t(20), vec![o(2)])]);
        assert_eq!(q.since(t(10)), Some((t(20), vec![o(2)])));
    }

    proptest! {
        /// Against a model that keeps every commit: whenever the queue answers, it answers
        /// exactly what the full history says; it declines only tids older than its window.
        #[test]
        fn agrees_with_the_full_history(cap in 1usize..6, commits in proptest::collection::vec(
            (1u64..4, proptest::collection::vec(0u64..8, 0..4)), 0..20), probe in 0u64..100) {
            let mut q = InvalidationQueue::new(cap, t(0), vec![]);
            let mut all = vec![(t(0), vec![])];
            let mut tid = 0;
            for (step, oids) in commits {
                tid += step;
                let oids: Vec<Oid> = oids.into_iter().map(o).collect();
                q.record(t(tid), oids.clone()).expect("increasing");
                all.push((t(tid), oids));
                q.check().map_err(TestCaseError::fail)?;
            }
            let probe = t(probe % (tid + 3));
            let window_start = all[all.len().saturating_sub(cap)].0;
            match q.since(probe) {
                Some((newest, oids)) => {
                    prop_assert!(window_start <= probe);
                    prop_assert_eq!(newest, t(tid));
                    let want: BTreeSet<Oid> = all.iter().filter(|(x, _)| *x > probe)
                        .flat_map(|(_, o)| o.iter().copied()).collect();
                    prop_assert_eq!(oids, want.into_iter().collect::<Vec<_>>());
                }
                None => prop_assert!(probe < window_start),
            }
        }
    }
}
