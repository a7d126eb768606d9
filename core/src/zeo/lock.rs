//! The per-storage commit lock (§6.5): taken at `vote`, not at `tpc_begin`; voters that find
//! it busy wait in a FIFO and are granted it in arrival order when it frees.
//!
//! ```text
//!            request(c) [free]                 release(c) [queue empty]
//!   Free ───────────────────────▶ Held(c) ─────────────────────────────▶ Free
//!                                  │  ▲
//!       request(d) [held by c]     │  │ release(c) [queue = d, …]: Held(d)
//!       → d queued ────────────────┘  └───────────────────────────────────
//! ```
//!
//! Invariants ([`CommitLock::check`]): the holder is never in the queue; no connection is
//! queued twice; the queue is empty while the lock is free.

use crate::ids::ConnId;
use std::collections::VecDeque;
use thiserror::Error;

/// A connection used the lock out of turn. Such a call is answered with
/// `StorageTransactionError` and never affects other connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LockError {
    /// The connection already holds the lock (`'Already voting (locked)'`).
    #[error("Already voting (locked)")]
    AlreadyLocked,
    /// The connection is already waiting (`'Already voting (waiting)'`).
    #[error("Already voting (waiting)")]
    AlreadyWaiting,
    /// The connection released a lock it does not hold.
    #[error("{0} does not hold the commit lock")]
    NotHolder(ConnId),
}

/// What a vote's request for the lock got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// The lock is the caller's now: run the vote.
    Granted,
    /// The caller waits; its vote runs when [`CommitLock::release`] hands it the lock.
    Queued {
        /// Voters ahead of it.
        ahead: usize,
    },
}

/// One storage's commit lock.
#[derive(Debug, Clone, Default)]
pub struct CommitLock {
    holder: Option<ConnId>,
    queue: VecDeque<ConnId>,
}

impl CommitLock {
    /// A free lock.
    pub fn new() -> CommitLock {
        CommitLock::default()
    }

    /// The connection holding the lock, if any.
    pub fn holder(&self) -> Option<ConnId> {
        self.holder
    }

    /// Voters waiting (the `waiting` figure of `server_status`).
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Asks for the lock on behalf of a voter.
    pub fn acquire(&mut self, conn: ConnId) -> Result<Acquire, LockError> {
        if self.holder == Some(conn) {
            return Err(LockError::AlreadyLocked);
        }
        if self.queue.contains(&conn) {
            return Err(LockError::AlreadyWaiting);
        }
        match self.holder {
            None => {
                self.holder = Some(conn);
                Ok(Acquire::Granted)
            }
            Some(_) => {
                self.queue.push_back(conn);
                Ok(Acquire::Queued { ahead: self.queue.len() - 1 })
            }
        }
    }

    /// Releases the lock held by `conn` (finish, abort, failed vote, conflict maps) and hands
    /// it to the first waiter, whose vote the caller must now run.
    pub fn release(&mut self, conn: ConnId) -> Result<Option<ConnId>, LockError> {
        if self.holder != Some(conn) {
            return Err(LockError::NotHolder(conn));
        }
        self.holder = self.queue.pop_front();
        Ok(self.holder)
    }

    /// Forgets a connection that went away (§6.8): it leaves the queue, or releases the lock.
    /// Returns the new holder when the lock was handed on.
    pub fn remove(&mut self, conn: ConnId) -> Option<ConnId> {
        if self.holder == Some(conn) {
            self.holder = self.queue.pop_front();
            return self.holder;
        }
        self.queue.retain(|c| *c != conn);
        None
    }

    /// Checks the invariants in the module documentation.
    pub fn check(&self) -> Result<(), String> {
        if self.holder.is_none() && !self.queue.is_empty() {
            return Err(format!("free lock with {} waiting", self.queue.len()));
        }
        if let Some(h) = self.holder {
            if self.queue.contains(&h) {
                return Err(format!("holder {h} is also queued"));
            }
        }
        for (i, c) in self.queue.iter().enumerate() {
            if self.queue.iter().skip(i + 1).any(|d| d == c) {
                return Err(format!("{c} queued twice"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(n: u64) -> ConnId {
        ConnId(n)
    }

    #[test]
    fn voters_are_served_first_come_first_served() {
        let mut l = CommitLock::new();
        assert_eq!(l.acquire(c(1)), Ok(Acquire::Granted));
        assert_eq!(l.acquire(c(2)), Ok(Acquire::Queued { ahead: 0 }));
        assert_eq!(l.acquire(c(3)), Ok(Acquire::Queued { ahead: 1 }));
        assert_eq!(l.waiting(), 2);
        assert_eq!(l.release(c(1)), Ok(Some(c(2))));
        assert_eq!(l.release(c(2)), Ok(Some(c(3))));
        assert_eq!(l.release(c(3)), Ok(None));
        assert_eq!(l.holder(), None);
    }

    #[test]
    fn voting_twice_is_the_callers_error() {
        let mut l = CommitLock::new();
        l.acquire(c(1)).expect("free");
        l.acquire(c(2)).expect("queued");
        assert_eq!(l.acquire(c(1)), Err(LockError::AlreadyLocked));
        assert_eq!(l.acquire(c(2)), Err(LockError::AlreadyWaiting));
        assert_eq!(l.release(c(2)), Err(LockError::NotHolder(c(2))));
        assert_eq!(LockError::AlreadyLocked.to_string(), "Already voting (locked)");
    }

    #[test]
    fn a_disconnected_holder_hands_the_lock_on_and_a_waiter_just_leaves() {
        let mut l = CommitLock::new();
        l.acquire(c(1)).expect("free");
        l.acquire(c(2)).expect("queued");
        l.acquire(c(3)).expect("queued");
        assert_eq!(l.remove(c(2)), None);
        assert_eq!(l.remove(c(1)), Some(c(3)));
        assert_eq!(l.remove(c(9)), None);
        assert_eq!(l.holder(), Some(c(3)));
        assert_eq!(l.waiting(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire(u64),
        Release(u64),
        Remove(u64),
    }

    proptest! {
        /// Any sequence of calls keeps the invariants, and the lock is granted in request order.
        #[test]
        fn invariants_hold_and_order_is_fifo(ops in proptest::collection::vec(
            prop_oneof![
                (0u64..5).prop_map(Op::Acquire),
                (0u64..5).prop_map(Op::Release),
                (0u64..5).prop_map(Op::Remove),
            ], 0..60)) {
            let mut l = CommitLock::new();
            // model: holder + queue in order
            let mut order: Vec<u64> = Vec::new();
            for op in ops {
                match op {
                    Op::Acquire(n) => {
                        let r = l.acquire(c(n));
                        if order.contains(&n) { prop_assert!(r.is_err()); } else {
                            prop_assert!(r.is_ok());
                            order.push(n);
                        }
                    }
                    Op::Release(n) => {
                        let r = l.release(c(n));
                        if order.first() == Some(&n) {
                            order.remove(0);
                            prop_assert_eq!(r, Ok(order.first().map(|m| c(*m))));
                        } else {
                            prop_assert!(r.is_err());
                        }
                    }
                    Op::Remove(n) => {
                        l.remove(c(n));
                        order.retain(|m| *m != n);
                    }
                }
                prop_assert_eq!(l.holder(), order.first().map(|m| c(*m)));
                prop_assert_eq!(l.waiting(), order.len().saturating_sub(1));
                l.check().map_err(TestCaseError::fail)?;
            }
        }
    }
}
