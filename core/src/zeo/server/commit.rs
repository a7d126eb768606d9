//! The commit path (§6.3–§6.6, §6.8): vote, lock hand-over, finish, abort, and the cleanup of
//! a closed connection.

use crate::ids::{ConnId, Tid};
use crate::mutation::{self, Mutation};
use crate::wire::error::{StorageTxnDetails, ZeoError};
use crate::wire::message::MsgId;
use crate::wire::reply::Reply;
use crate::wire::types::TxnId;
use crate::wire::value::Text;
use crate::zeo::backend::{BackendReqId, BackendRequest, VoteRequest};
use crate::zeo::events::{Now, StorageIdx};
use crate::zeo::lock::{Acquire, LockError};

use super::calls::CallCtx;
use super::conn::Phase;
use super::{Pending, Server};

/// A finished commit, as the backend reported it.
pub(super) struct Commit {
    pub(super) tid: Tid,
    pub(super) size: crate::zeo::backend::StorageSize,
    pub(super) invalidated: Vec<crate::ids::Oid>,
}

fn stx(msg: &str) -> ZeoError {
    ZeoError::StorageTransaction(StorageTxnDetails::Message(Text::from(msg)))
}

impl Server {
    pub(super) fn vote(&mut self, now: Now, ctx: &CallCtx, txn: &TxnId) {
        let Some(reg) = self.reg_mut(ctx.conn) else { return };
        let (s, ro) = (reg.storage, reg.read_only);
        if ro {
            return self.answer(ctx, Err(ZeoError::ReadOnly));
        }
        if let Some(e) = self.txn_mismatch(ctx.conn, txn) {
            return self.answer(ctx, Err(e));
        }
        // Group commit: the lock has passed on, but the transaction is not over until Finished.
        let committed = self
            .reg(ctx.conn)
            .and_then(|r| r.txn.as_ref())
            .is_some_and(|t| matches!(t.phase, Phase::Committed { .. }));
        if committed {
            return self.answer(ctx, Err(stx("Already finishing")));
        }
        match self.fronts[s.0].lock.acquire(ctx.conn) {
            Err(LockError::AlreadyLocked) => self.answer(ctx, Err(stx("Already voting (locked)"))),
            Err(LockError::AlreadyWaiting) => self.answer(ctx, Err(stx("Already voting (waiting)"))),
            Err(LockError::NotHolder(_)) => self.answer(ctx, Err(stx("lock error"))),
            Ok(acq) => {
                if let Some(t) = self.reg_mut(ctx.conn).and_then(|r| r.txn.as_mut()) {
                    t.phase = Phase::Waiting { msgid: ctx.msgid.clone() };
                }
                if acq == Acquire::Granted {
                    self.fronts[s.0].note_holder(now);
                    self.start_vote(now, s, ctx.conn);
                }
            }
        }
    }

    /// `conn` was just granted the lock of `s`: choose the tid and send the `Vote`. On a
    /// refused tid the lock passes on to the next voter.
    fn start_vote(&mut self, now: Now, s: StorageIdx, conn: ConnId) {
        let mut conn = conn;
        loop {
            let last = self.fronts[s.0].last_tid.max(self.fronts[s.0].committed_tid);
            let last = if mutation::active(Mutation::ReuseLastTid) { Tid::ZERO } else { last };
            let Some(t) = self.reg_mut(conn).and_then(|r| r.txn.as_mut()) else {
                // A holder without a transaction cannot happen (waiters always have one).
                match self.release(now, s, conn) {
                    Some(next) => {
                        conn = next;
                        continue;
                    }
                    None => return,
                }
            };
            let Phase::Waiting { msgid } = &t.phase else {
                tracing::warn!(conn = conn.0, phase = t.phase.name(), "granted the lock while not waiting");
                return;
            };
            let msgid = msgid.clone();
            let tid = match t.tid {
                Some(tid) if tid > last => Some(tid),
                Some(_) => None,
                None => Tid::later_than(now.tid(), last),
            };
            let Some(tid) = tid else {
                let given = t.tid;
                let uploads = t.uploads();
                self.reg_mut(conn).map(|r| r.txn.take());
                self.drop_uploads(s, &uploads);
                let msg = match given {
                    Some(g) => format!("supplied tid {g} is not after the last transaction {last}"),
                    None => "no tid left after the last transaction".to_owned(),
                };
                self.error(conn, msgid, stx(&msg));
                match self.release(now, s, conn) {
                    Some(next) => {
                        conn = next;
                        continue;
                    }
                    None => return,
                }
            };
            let vote = VoteRequest {
                tid,
                status: t.status,
                user: t.user.clone(),
                description: t.description.clone(),
                extension: t.extension.clone(),
                ops: t.ops.clone(),
                deferred_sync: false,
            };
            let uploads = t.uploads();
            let req = self.request(
                s,
                BackendRequest::Vote(Box::new(vote)),
                Pending::Vote { conn, msgid, tid, uploads },
            );
            self.fronts[s.0].write = Some(req);
            if let Some(t) = self.reg_mut(conn).and_then(|r| r.txn.as_mut()) {
                t.phase = Phase::Voting { req, abort: false };
            }
            return;
        }
    }

    /// `conn` gives up the lock of `s`; the next voter (if any) starts. Returns a next holder
    /// only for `start_vote`'s own loop (it is then not yet started).
    fn release(&mut self, now: Now, s: StorageIdx, conn: ConnId) -> Option<ConnId> {
        let next = self.fronts[s.0].lock.remove(conn);
        self.fronts[s.0].note_holder(now);
        next
    }

    /// Releases the lock of `s` held by `conn` and starts the next voter.
    pub(super) fn release_and_next(&mut self, now: Now, s: StorageIdx, conn: ConnId) {
        if let Some(next) = self.release(now, s, conn) {
            self.start_vote(now, s, next);
        }
    }

    pub(super) fn tpc_finish(&mut self, ctx: &CallCtx, txn: &TxnId) {
        if self.txn_mismatch(ctx.conn, txn).is_some() {
            return self.answer(ctx, Ok(Reply::TpcFinish(None)));
        }
        let Some(reg) = self.reg_mut(ctx.conn) else { return };
        let s = reg.storage;
        let Some(t) = reg.txn.as_mut() else { return };
        if !matches!(t.phase, Phase::Voted { .. }) {
            let e = ZeoError::AssertionError(Text::from_static("finished called wo lock"));
            return self.answer(ctx, Err(e));
        }
        let Phase::Voted { tid, invalidated } = std::mem::replace(&mut t.phase, Phase::Open) else {
            return self
                .answer(ctx, Err(ZeoError::AssertionError(Text::from_static("finished called wo lock"))));
        };
        let what =
            Pending::Finish { conn: ctx.conn, msgid: ctx.msgid.clone(), tid, invalidated, released: false };
        let req = self.request(s, BackendRequest::Finish { tid }, what);
        self.fronts[s.0].write = Some(req);
        if let Some(t) = self.reg_mut(ctx.conn).and_then(|r| r.txn.as_mut()) {
            t.phase = Phase::Finishing { req };
        }
    }

    pub(super) fn tpc_abort(&mut self, now: Now, ctx: &CallCtx, txn: &TxnId) {
        let Some(reg) = self.reg(ctx.conn) else { return };
        if reg.read_only {
            return self.answer(ctx, Err(ZeoError::ReadOnly));
        }
        if self.txn_mismatch(ctx.conn, txn).is_some() {
            return self.answer(ctx, Ok(Reply::Nil));
        }
        let slot = reg.upload;
        let finishing = match self.reg_mut(ctx.conn).and_then(|r| r.txn.as_mut()).map(|t| &mut t.phase) {
            // The commit goes on; nothing to abort.
            Some(Phase::Finishing { .. } | Phase::Committed { .. }) => true,
            // Settled when the vote's outcome arrives.
            Some(Phase::Voting { abort, .. }) => {
                *abort = true;
                false
            }
            _ => {
                self.abort_txn(now, ctx.conn);
                false
            }
        };
        if let (false, Some(u), Some(r)) = (finishing, slot, self.reg_mut(ctx.conn)) {
            r.upload = None;
            let s = r.storage;
            self.drop_uploads(s, &[u]);
        }
        self.answer(ctx, Ok(Reply::Nil));
    }

    /// Aborts `conn`'s transaction in whatever phase it is. A `Vote` or `Finish` in flight is
    /// settled when its outcome arrives (the lock stays with `conn` until then).
    pub(super) fn abort_txn(&mut self, now: Now, conn: ConnId) {
        let Some(reg) = self.reg_mut(conn) else { return };
        let s = reg.storage;
        let Some(t) = reg.txn.take() else { return };
        let uploads = t.uploads();
        match t.phase {
            Phase::Open => self.drop_uploads(s, &uploads),
            Phase::Waiting { msgid } => {
                self.fronts[s.0].lock.remove(conn);
                self.drop_uploads(s, &uploads);
                // The vote never gets its reply on a live connection otherwise.
                self.error(conn, msgid, stx("transaction aborted while waiting for the commit lock"));
            }
            Phase::Voted { tid, .. } => {
                self.send_abort(s, tid);
                self.release_and_next(now, s, conn);
            }
            Phase::Voting { .. } | Phase::Finishing { .. } | Phase::Committed { .. } => {
                // Settled by on_outcome: the pending Vote/Finish carries what is needed.
            }
        }
        self.fronts[s.0].aborts += 1;
    }

    pub(super) fn send_abort(&mut self, s: StorageIdx, tid: Tid) {
        self.fronts[s.0].aborts_in_flight += 1;
        self.request(s, BackendRequest::Abort { tid }, Pending::Abort);
    }

    pub(super) fn drop_uploads(&mut self, s: StorageIdx, uploads: &[crate::zeo::backend::UploadId]) {
        for u in uploads {
            self.request(s, BackendRequest::BlobUploadDrop { upload: *u }, Pending::Ignore);
        }
    }

    /// A connection is gone (disconnect or our close): abort, drop, forget.
    pub(super) fn drop_conn(&mut self, now: Now, conn: ConnId) {
        if let Some(reg) = self.reg_mut(conn) {
            let s = reg.storage;
            let upload = reg.upload.take();
            let iters: Vec<_> = reg.iters.values().map(|it| it.backend).collect();
            if let Some(t) = &reg.txn {
                if matches!(t.phase, Phase::Waiting { .. }) {
                    // No reply to send: just leave the queue.
                    let uploads = t.uploads();
                    reg.txn = None;
                    self.fronts[s.0].lock.remove(conn);
                    self.drop_uploads(s, &uploads);
                    self.fronts[s.0].aborts += 1;
                }
            }
            self.abort_txn(now, conn);
            if let Some(u) = upload {
                self.drop_uploads(s, &[u]);
            }
            if !iters.is_empty() {
                self.request(s, BackendRequest::IterDrop { iters }, Pending::Ignore);
            }
        }
        if let Some(c) = self.conns.remove(&conn) {
            for r in c.outbox.pending() {
                // Queued iterator calls were never emitted: forget them now.
                if self.pending.get(&r).is_some_and(|p| !p.emitted) {
                    self.pending.remove(&r);
                }
            }
        }
        self.dirty.remove(&conn);
    }

    /// [`Server::drop_conn`] from inside `close` (no `Now` at hand: lock hand-over uses the
    /// time of the last input, which only matters for `lock_time`).
    pub(super) fn drop_conn_now(&mut self, conn: ConnId) {
        let now = self.last_now;
        self.drop_conn(now, conn);
    }

    /// Settles the outcome of a `Vote` whose connection or transaction is gone.
    pub(super) fn orphan_vote(&mut self, now: Now, s: StorageIdx, conn: ConnId, voted: Option<Tid>) {
        if let Some(tid) = voted {
            self.send_abort(s, tid);
        }
        self.release_and_next(now, s, conn);
    }

    /// A finished commit: make it visible, fan out invalidations, info, reply, release.
    pub(super) fn committed(
        &mut self,
        now: Now,
        s: StorageIdx,
        conn: ConnId,
        msgid: MsgId,
        commit: Commit,
        released: bool,
    ) {
        let Commit { tid, size, invalidated } = commit;
        let f = &mut self.fronts[s.0];
        if let Err(e) = f.invq.record(tid, invalidated.clone()) {
            tracing::warn!(storage = %f.seed.name, error = %e, "finished tid out of order");
        } else {
            f.last_tid = tid;
        }
        f.size = size;
        f.commits += 1;
        let info = f.size_info();
        tracing::debug!(conn = conn.0, storage = %f.seed.name, tid = %tid, "committed");
        if !mutation::active(Mutation::InvalidateBeforeFinish) {
            self.invalidate_others(s, conn, tid, &invalidated);
        }
        if self.conns.contains_key(&conn) {
            if let Some(r) = self.reg_mut(conn) {
                r.txn = None;
            }
            self.push(conn, crate::wire::push::Push::Info(info));
            self.reply(conn, msgid, &Reply::TpcFinish(Some(tid)));
        }
        if !released {
            self.release_and_next(now, s, conn);
        }
    }

    /// Sends `conn`'s commit `tid` of `invalidated` to every other client of `s`.
    pub(super) fn invalidate_others(
        &mut self,
        s: StorageIdx,
        conn: ConnId,
        tid: Tid,
        invalidated: &[crate::ids::Oid],
    ) {
        for other in self.conns_of(s) {
            if other == conn {
                continue;
            }
            let push =
                crate::wire::message::ServerMessage::Push(crate::wire::push::Push::InvalidateTransaction {
                    tid,
                    oids: invalidated.to_vec(),
                });
            let bytes = self.encode(other, &push);
            if let Some(c) = self.conns.get_mut(&other) {
                c.outbox.push_invalidation(bytes);
                self.dirty.insert(other);
            }
        }
    }

    /// Group commit: the backend committed `conn`'s transaction (`tid`) but it is not durable
    /// yet. The lock passes on now (the next vote's tid is chosen above `tid`); the reply and
    /// the invalidations wait for `Finished`.
    pub(super) fn committed_early(
        &mut self,
        now: Now,
        s: StorageIdx,
        id: BackendReqId,
        conn: ConnId,
        tid: Tid,
    ) {
        let f = &mut self.fronts[s.0];
        f.committed_tid = f.committed_tid.max(tid);
        f.committing += 1;
        if f.write == Some(id) {
            f.write = None;
        }
        if let Some(t) = self.reg_mut(conn).and_then(|r| r.txn.as_mut()) {
            if matches!(t.phase, Phase::Finishing { req } if req == id) {
                t.phase = Phase::Committed { req: id };
            }
        }
        self.release_and_next(now, s, conn);
    }
}
