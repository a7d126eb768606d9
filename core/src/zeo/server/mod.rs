//! The ZEO server as a pure state machine (`zeo-protocol.md` §2–§6).
//!
//! The driver feeds inputs with the `handle_*` methods, drains [`Action`]s with
//! [`Server::poll_action`] after every input, and calls [`Server::handle_timeout`] once
//! [`Server::poll_timeout`] has passed.
//!
//! Layout: [`conn`] (per-connection state machine and the buffered transaction), [`front`] (per
//! storage: commit lock, invalidation queue, counters), [`outbox`] (the per-connection ordered
//! outbox of §6.4), `calls` (client calls), `outcomes` (backend outcomes), `commit` (the
//! vote/finish/abort path shared by calls, outcomes, timeouts and disconnects).
//!
//! Every frame produced for a connection during one input goes into its outbox; at the end of
//! the input each touched outbox is flushed into one [`Action::Send`]. Closing a connection
//! (an [`Action::Close`]) removes it at once: its transaction is aborted (or settled when a
//! write is in flight), its uploads and iterators are dropped, and later input for it is
//! ignored.
//!
//! Backend order: the core relies on a storage's backend applying (a) the write sequence
//! (`Vote`, `Finish`, `Abort`) and (b) the requests naming one upload or one iterator in the
//! order they were emitted (a FIFO per storage does both; reads may be answered in any order).
//! So an `Abort` releases the commit lock as soon as it is emitted, and the next voter's `Vote`
//! follows it; `BlobUploadDrop`/`IterDrop` may follow a request on the same handle at once.
//!
//! Invariants ([`Server::check`]): see [`conn`], [`front`], [`outbox`], and: every request in
//! `pending` belongs to a live connection or is settled without one (writes, drops); every
//! reserved outbox slot has a pending request; each storage has at most one write (`Vote`,
//! `Finish`) in flight, for its lock holder; a dead lock holder has a write in flight.

mod calls;
mod commit;
#[cfg(test)]
mod commit_tests;
pub(crate) mod conn;
#[cfg(test)]
mod failure_tests;
pub(crate) mod front;
#[cfg(test)]
mod harness;
#[cfg(all(test, feature = "mutations"))]
mod mutation_tests;
mod outbox;
mod outcomes;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use crate::ids::{ConnId, Oid, Tid};
use crate::wire::codec::Codec;
use crate::wire::error::ZeoError;
use crate::wire::frame::{encode_frame, FrameDecoder};
use crate::wire::handshake::server_announcement;
use crate::wire::message::{MsgId, ServerMessage};
use crate::wire::push::Push;
use crate::wire::reply::{Reply, ServerStatus};
use crate::wire::value::Text;

use self::conn::{Conn, ConnState, Phase};
use self::front::Front;
use super::backend::{BackendOutcome, BackendReqId, BackendRequest, UploadId};
use super::events::{Action, CloseReason, Now, ServerConfig, StorageIdx};

/// What an in-flight backend request is for.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    /// A read whose outcome is the reply to `msgid` (slot reserved in the outbox); `one_oid`
    /// for `new_oid`, which answers a single oid.
    Read { conn: ConnId, msgid: MsgId, one_oid: bool },
    /// An iterator request on iterator `iid` (slot reserved).
    Iter { conn: ConnId, iid: i64, msgid: MsgId, op: IterReq },
    /// `sendBlob`: pushes then the reply go into the reserved slot.
    SendBlob { conn: ConnId, msgid: MsgId, oid: Oid, serial: Tid, started: bool },
    /// `BlobUploadStart`/`BlobUploadChunk` (async calls: a failure closes the connection).
    Upload { conn: ConnId },
    /// The `Vote` of `conn`'s transaction.
    Vote { conn: ConnId, msgid: MsgId, tid: Tid, uploads: Vec<UploadId> },
    /// The `Finish` of `conn`'s transaction `tid`.
    Finish { conn: ConnId, msgid: MsgId, tid: Tid, invalidated: Vec<Oid>, released: bool },
    /// An `Abort` nobody waits for.
    Abort,
    /// A pack; `msgid` is set when the caller waits.
    Pack { conn: ConnId, msgid: Option<MsgId> },
    /// A drop whose outcome does not matter.
    Ignore,
}

/// An iterator request's kind.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IterReq {
    Start,
    Next,
    RecordStart { riid: i64, backend: super::backend::BackendIterId },
}

#[derive(Debug, Clone)]
pub(crate) struct PendingEntry {
    pub(crate) storage: StorageIdx,
    pub(crate) what: Pending,
    /// Whether the request was emitted (queued iterator calls are not yet).
    pub(crate) emitted: bool,
}

/// Shutdown in progress.
#[derive(Debug, Clone, Copy)]
struct Shutdown {
    deadline: Duration,
}

/// The ZEO server state machine: every connection, every storage front.
#[derive(Debug)]
pub struct Server {
    cfg: ServerConfig,
    start_wall: Duration,
    actions: VecDeque<Action>,
    conns: BTreeMap<ConnId, Conn>,
    fronts: Vec<Front>,
    pending: BTreeMap<BackendReqId, PendingEntry>,
    next_req: u64,
    /// Connections whose outbox changed during the current input.
    dirty: BTreeSet<ConnId>,
    shutdown: Option<Shutdown>,
    /// The time of the current (or last) input.
    last_now: Now,
}

impl Server {
    /// A server with the given configuration, started at `now`.
    pub fn new(cfg: ServerConfig, now: Now) -> Server {
        let fronts =
            cfg.storages.iter().map(|s| Front::new(s.clone(), cfg.invalidation_queue_size)).collect();
        Server {
            cfg,
            start_wall: now.wall,
            actions: VecDeque::new(),
            conns: BTreeMap::new(),
            fronts,
            pending: BTreeMap::new(),
            next_req: 0,
            dirty: BTreeSet::new(),
            shutdown: None,
            last_now: now,
        }
    }

    /// A client connected (`label` is its peer address, for logs). Sends the handshake.
    pub fn handle_connect(&mut self, now: Now, conn: ConnId, label: &str) {
        self.last_now = now;
        let mut out = Vec::new();
        if encode_frame(server_announcement(self.cfg.announce), &mut out).is_err() {
            return;
        }
        self.conns.insert(
            conn,
            Conn {
                label: label.to_owned(),
                decoder: FrameDecoder::new(self.cfg.max_frame),
                codec: None,
                state: ConnState::AwaitingHandshake,
                outbox: Default::default(),
            },
        );
        tracing::info!(conn = conn.0, peer = label, "connected");
        self.actions.push_back(Action::Send { conn, bytes: Bytes::from(out) });
        if self.shutdown.is_some() {
            self.close(conn, "server shutting down");
        }
    }

    /// Bytes arrived from `conn` (any split; framing is done here).
    pub fn handle_bytes(&mut self, now: Now, conn: ConnId, data: &[u8]) {
        self.last_now = now;
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.decoder.push(data);
        while let Some(c) = self.conns.get_mut(&conn) {
            match c.decoder.next_frame() {
                Ok(Some(frame)) => self.handle_frame(now, conn, frame),
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(conn = conn.0, error = %e, "bad frame");
                    self.close(conn, &format!("bad frame: {e}"));
                    break;
                }
            }
        }
        self.end_input(now);
    }

    /// `conn` is gone (closed by the peer, by an I/O error, or after an [`Action::Close`]).
    pub fn handle_disconnect(&mut self, now: Now, conn: ConnId) {
        self.last_now = now;
        if self.conns.contains_key(&conn) {
            tracing::info!(conn = conn.0, "disconnected");
            self.drop_conn(now, conn);
        }
        self.end_input(now);
    }

    /// A backend answered request `id` of `storage`.
    pub fn handle_backend(
        &mut self,
        now: Now,
        storage: StorageIdx,
        id: BackendReqId,
        outcome: BackendOutcome,
    ) {
        self.on_outcome(now, storage, id, outcome);
        self.end_input(now);
    }

    /// Time passed (call when [`Server::poll_timeout`] is reached; extra calls are harmless).
    pub fn handle_timeout(&mut self, now: Now) {
        self.last_now = now;
        if let Some(limit) = self.cfg.transaction_timeout {
            for s in 0..self.fronts.len() {
                let f = &self.fronts[s];
                let (Some(holder), Some((since, _))) = (f.lock.holder(), f.lock_since) else { continue };
                if now.mono < since.saturating_add(limit) || !self.conns.contains_key(&holder) {
                    continue;
                }
                tracing::warn!(conn = holder.0, storage = %f.seed.name, "transaction timeout: aborting");
                self.close(holder, "transaction timeout");
            }
        }
        if let Some(sd) = self.shutdown {
            if now.mono >= sd.deadline {
                let all: Vec<ConnId> = self.conns.keys().copied().collect();
                for c in all {
                    self.close(c, "server shut down");
                }
            }
        }
        self.end_input(now);
    }

    /// Graceful shutdown: close every connection that holds no commit in progress; the commit
    /// in progress may finish (or is aborted after `grace`); then close the rest.
    pub fn begin_shutdown(&mut self, now: Now, grace: Duration) {
        self.last_now = now;
        tracing::info!("shutting down");
        self.shutdown = Some(Shutdown { deadline: now.mono.saturating_add(grace) });
        self.end_input(now);
    }

    /// Whether shutdown is complete: no connection left and no backend write in flight.
    pub fn is_shut_down(&self) -> bool {
        self.conns.is_empty()
            && self.fronts.iter().all(|f| f.write.is_none() && f.aborts_in_flight == 0 && f.committing == 0)
    }

    /// The next output.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call [`Server::handle_timeout`] next (monotonic time), if ever.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let mut next = self.shutdown.filter(|_| !self.conns.is_empty()).map(|s| s.deadline);
        if let Some(limit) = self.cfg.transaction_timeout {
            for f in &self.fronts {
                if let (Some(h), Some((since, _))) = (f.lock.holder(), f.lock_since) {
                    if self.conns.contains_key(&h) {
                        let d = since.saturating_add(limit);
                        next = Some(next.map_or(d, |n| n.min(d)));
                    }
                }
            }
        }
        next
    }

    /// The commits `storage`'s invalidation queue holds, oldest first: saved at shutdown so that
    /// the next start answers `getInvalidations` for them (a RAID of remote backends has no other
    /// source; see `StorageSeed::recent`).
    pub fn recent_commits(&self, storage: StorageIdx) -> Vec<(Tid, Vec<Oid>)> {
        self.fronts.get(storage.0).map(|f| f.invq.entries()).unwrap_or_default()
    }

    /// Raises the floor of the storage's next tids to `tid`: every later transaction gets a tid
    /// above it, whatever the clock says. The driver passes the RAID's agreed last tid after
    /// every drain, so that the front learns when the RAID raised it (a failed RAID taken back
    /// through its last optimal backend keeps that backend's extra transactions, whose tids the
    /// front never saw). Never lowers anything; reads and invalidations are not affected.
    pub fn raise_tid_floor(&mut self, storage: StorageIdx, tid: Tid) {
        if let Some(f) = self.fronts.get_mut(storage.0) {
            f.committed_tid = f.committed_tid.max(tid);
        }
    }

    /// The storage's history moved on to `last_tid` without this front seeing the transactions
    /// (see `raid::RaidAction::HistoryMovedOn`): `last_tid` becomes the newest visible tid, the
    /// invalidation queue is emptied (a `getInvalidations` from before it then answers `None`:
    /// the client verifies its whole cache), and every connection registered on the storage is
    /// closed, so that each client reconnects and does so. A `last_tid` not above the front's
    /// changes nothing.
    pub fn history_moved_on(&mut self, storage: StorageIdx, last_tid: Tid) {
        let Some(f) = self.fronts.get_mut(storage.0) else { return };
        // Against the visible tid only: `committed_tid` may already be `last_tid` (the floor of a
        // finish in doubt, or of the RAID's agreed tid), which says nothing of what reads see.
        if last_tid <= f.last_tid {
            return;
        }
        tracing::warn!(
            storage = %f.seed.name,
            "the storage's history moved on from {} to {last_tid} (its last optimal backend is back): every client reconnects and verifies its cache",
            f.last_tid
        );
        f.last_tid = last_tid;
        f.committed_tid = f.committed_tid.max(last_tid);
        f.invq = super::invalidations::InvalidationQueue::new(
            self.cfg.invalidation_queue_size,
            last_tid,
            Vec::new(),
        );
        let registered: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.reg().is_some_and(|r| r.storage == storage))
            .map(|(&id, _)| id)
            .collect();
        for conn in registered {
            self.close(conn, "the storage's history moved on (its last optimal backend is back): reconnect");
        }
    }

    /// The `server_status` map of a storage (`None` for an unknown index).
    pub fn status(&self, storage: StorageIdx) -> Option<ServerStatus> {
        let f = self.fronts.get(storage.0)?;
        let regs = self.conns.values().filter_map(|c| c.reg()).filter(|r| r.storage == storage);
        let (mut n, mut active) = (0, 0);
        for r in regs {
            n += 1;
            if r.txn.is_some() {
                active += 1;
            }
        }
        Some(f.status(n, active, self.start_wall, self.cfg.transaction_timeout.is_some()))
    }

    /// Checks every invariant of the state machine (for tests and the simulation).
    pub fn check(&self) -> Result<(), String> {
        for (i, f) in self.fronts.iter().enumerate() {
            f.check().map_err(|e| format!("storage {i}: {e}"))?;
            if let Some(h) = f.lock.holder() {
                match self.conns.get(&h) {
                    Some(c) => {
                        let phase = c.reg().and_then(|r| r.txn.as_ref()).map(|t| &t.phase);
                        if !phase.is_some_and(Phase::holds_lock) && f.write.is_none() {
                            return Err(format!("lock holder {h} of storage {i} is not voting"));
                        }
                    }
                    None => {
                        if f.write.is_none() {
                            return Err(format!(
                                "dead lock holder {h} of storage {i} with no write in flight"
                            ));
                        }
                    }
                }
            }
            if let Some(p) = &f.pack {
                if !self.pending.get(&p.req).is_some_and(|e| matches!(e.what, Pending::Pack { .. })) {
                    return Err(format!("storage {i}: pack {} not pending", p.req.0));
                }
            }
            let committing = self
                .pending
                .values()
                .filter(|p| p.storage.0 == i && matches!(p.what, Pending::Finish { released: true, .. }))
                .count();
            if committing != f.committing {
                return Err(format!(
                    "storage {i}: {} committing but {committing} released finishes",
                    f.committing
                ));
            }
            if f.last_tid > f.committed_tid && f.committing > 0 {
                return Err(format!(
                    "storage {i}: announced {} beyond committed {}",
                    f.last_tid, f.committed_tid
                ));
            }
            if let Some(w) = f.write {
                if !self
                    .pending
                    .get(&w)
                    .is_some_and(|p| matches!(p.what, Pending::Vote { .. } | Pending::Finish { .. }))
                {
                    return Err(format!("storage {i}: write {} not pending", w.0));
                }
            }
        }
        for (id, c) in &self.conns {
            c.outbox.check().map_err(|e| format!("{id}: {e}"))?;
            for r in c.outbox.pending() {
                match self.pending.get(&r) {
                    Some(p) if pending_conn(&p.what) == Some(*id) => {}
                    _ => return Err(format!("{id}: outbox slot for request {} not pending", r.0)),
                }
            }
            let Some(reg) = c.reg() else { continue };
            let f = self.fronts.get(reg.storage.0).ok_or("registered to an unknown storage")?;
            if let Some(t) = &reg.txn {
                let holds = f.holds(*id);
                if t.phase.holds_lock() != holds {
                    return Err(format!("{id}: txn {} but lock held={holds}", t.phase.name()));
                }
                match (&t.phase, f.write) {
                    (Phase::Voting { req, .. } | Phase::Finishing { req }, w) if w != Some(*req) => {
                        return Err(format!("{id}: {} without its write in flight", t.phase.name()));
                    }
                    (Phase::Committed { req }, _)
                        if !self
                            .pending
                            .get(req)
                            .is_some_and(|p| matches!(p.what, Pending::Finish { released: true, .. })) =>
                    {
                        return Err(format!("{id}: committed without its released Finish pending"));
                    }
                    _ => {}
                }
            } else if f.holds(*id) {
                // Allowed only while its aborted transaction's write is still in flight.
                let orphan = f
                    .write
                    .and_then(|w| self.pending.get(&w))
                    .is_some_and(|p| pending_conn(&p.what) == Some(*id));
                if !orphan {
                    return Err(format!("{id}: holds the lock without a transaction"));
                }
            }
            for (iid, it) in &reg.iters {
                if it.in_flight.is_none() && !it.queue.is_empty() {
                    return Err(format!("{id}: iterator {iid} has queued calls and nothing in flight"));
                }
                if let Some(r) = it.in_flight {
                    if !self.pending.get(&r).is_some_and(|p| p.emitted) {
                        return Err(format!("{id}: iterator {iid} request not in flight"));
                    }
                }
                for (r, _, _) in &it.queue {
                    if !c.outbox.has_slot(*r) || self.pending.get(r).is_none_or(|p| p.emitted) {
                        return Err(format!("{id}: queued iterator call {} without a slot", r.0));
                    }
                }
            }
        }
        let mut waiting = BTreeMap::new();
        for (id, c) in &self.conns {
            if let Some(Phase::Waiting { .. }) = c.reg().and_then(|r| r.txn.as_ref()).map(|t| &t.phase) {
                *waiting.entry(c.reg().map(|r| r.storage.0).unwrap_or(0)).or_insert(0usize) += 1;
                let _ = id;
            }
        }
        for (i, f) in self.fronts.iter().enumerate() {
            if f.lock.waiting() != waiting.get(&i).copied().unwrap_or(0) {
                return Err(format!(
                    "storage {i}: {} queued voters but {:?} waiting txns",
                    f.lock.waiting(),
                    waiting.get(&i)
                ));
            }
        }
        for (id, p) in &self.pending {
            if let Some(c) = pending_conn(&p.what) {
                let slotted =
                    matches!(p.what, Pending::Read { .. } | Pending::Iter { .. } | Pending::SendBlob { .. });
                if slotted {
                    match self.conns.get(&c) {
                        Some(conn) if !conn.outbox.has_slot(*id) => {
                            return Err(format!("request {} of {c} has no outbox slot", id.0));
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Plumbing shared by the submodules
    // -----------------------------------------------------------------------------------------

    fn new_req(&mut self) -> BackendReqId {
        self.next_req += 1;
        BackendReqId(self.next_req)
    }

    /// Emits a backend request and remembers what it is for.
    fn request(&mut self, storage: StorageIdx, request: BackendRequest, what: Pending) -> BackendReqId {
        let id = self.new_req();
        self.pending.insert(id, PendingEntry { storage, what, emitted: true });
        self.actions.push_back(Action::Backend { storage, id, request });
        id
    }

    /// Encodes a message for `conn` as a frame (an unencodable reply becomes a ValueError).
    fn encode(&self, conn: ConnId, msg: &ServerMessage) -> Vec<u8> {
        let Some(codec) = self.conns.get(&conn).and_then(|c| c.codec) else { return Vec::new() };
        encode_msg(codec, msg)
    }

    /// Appends a message to `conn`'s outbox.
    fn send(&mut self, conn: ConnId, msg: &ServerMessage) {
        let bytes = self.encode(conn, msg);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.outbox.push(bytes);
            self.dirty.insert(conn);
        }
    }

    fn reply(&mut self, conn: ConnId, msgid: MsgId, reply: &Reply) {
        self.send(conn, &ServerMessage::reply(msgid, reply));
    }

    fn error(&mut self, conn: ConnId, msgid: MsgId, error: ZeoError) {
        self.send(conn, &ServerMessage::Error { msgid, error });
    }

    fn push(&mut self, conn: ConnId, push: Push) {
        self.send(conn, &ServerMessage::Push(push));
    }

    /// Fills the reserved slot of `req` on `conn` with `msg`.
    fn fill(&mut self, conn: ConnId, req: BackendReqId, msg: &ServerMessage) {
        let bytes = self.encode(conn, msg);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.outbox.fill(req, &bytes);
            self.dirty.insert(conn);
        }
    }

    /// Closes `conn`: flushes what may be written, emits the close, and cleans up at once.
    fn close(&mut self, conn: ConnId, reason: &str) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let bytes = c.outbox.flush();
        if !bytes.is_empty() {
            self.actions.push_back(Action::Send { conn, bytes: Bytes::from(bytes) });
        }
        tracing::info!(conn = conn.0, reason, "closing connection");
        self.actions.push_back(Action::Close { conn, reason: CloseReason(reason.to_owned()) });
        self.dirty.remove(&conn);
        self.drop_conn_now(conn);
    }

    /// End of one input: shutdown progress, then one `Send` per touched connection.
    fn end_input(&mut self, now: Now) {
        if self.shutdown.is_some() {
            let idle: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| {
                    !c.reg()
                        .and_then(|r| r.txn.as_ref())
                        .is_some_and(|t| t.phase.holds_lock() || matches!(t.phase, Phase::Committed { .. }))
                })
                .map(|(id, _)| *id)
                .collect();
            for c in idle {
                self.close(c, "server shutting down");
            }
        }
        let _ = now;
        let dirty = std::mem::take(&mut self.dirty);
        for conn in dirty {
            let Some(c) = self.conns.get_mut(&conn) else { continue };
            let bytes = c.outbox.flush();
            if !bytes.is_empty() {
                self.actions.push_back(Action::Send { conn, bytes: Bytes::from(bytes) });
            }
        }
    }

    /// The registered connections of `storage`.
    fn conns_of(&self, storage: StorageIdx) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.reg().is_some_and(|r| r.storage == storage))
            .map(|(id, _)| *id)
            .collect()
    }

    fn storage_name(&self, storage: StorageIdx) -> &str {
        self.fronts.get(storage.0).map_or("?", |f| f.seed.name.as_str())
    }

    /// The ruok JSON answer.
    fn ruok(&self) -> Option<Vec<u8>> {
        let mut all = Vec::new();
        for (i, f) in self.fronts.iter().enumerate() {
            let st = self.status(StorageIdx(i))?;
            all.push((Text::from(f.seed.name.as_str()), st.to_value()));
        }
        crate::wire::handshake::encode_ruok_json(&all).ok()
    }
}

/// The connection a pending request answers to, if any.
fn pending_conn(p: &Pending) -> Option<ConnId> {
    match p {
        Pending::Read { conn, .. }
        | Pending::Iter { conn, .. }
        | Pending::SendBlob { conn, .. }
        | Pending::Upload { conn }
        | Pending::Vote { conn, .. }
        | Pending::Finish { conn, .. }
        | Pending::Pack { conn, .. } => Some(*conn),
        Pending::Abort | Pending::Ignore => None,
    }
}

/// One framed message; an unencodable reply becomes `ValueError("Couldn't pickle response")`.
fn encode_msg(codec: Codec, msg: &ServerMessage) -> Vec<u8> {
    let mut payload = Vec::new();
    if codec.encode_server(msg, &mut payload).is_err() {
        payload.clear();
        let msgid = match msg {
            ServerMessage::Reply { msgid, .. } | ServerMessage::Error { msgid, .. } => msgid.clone(),
            ServerMessage::Push(_) => {
                tracing::warn!("could not encode a push");
                return Vec::new();
            }
        };
        let err = ServerMessage::Error {
            msgid,
            error: ZeoError::ValueError(Text::from_static("Couldn't pickle response")),
        };
        if codec.encode_server(&err, &mut payload).is_err() {
            return Vec::new();
        }
    }
    let mut out = Vec::new();
    if encode_frame(&payload, &mut out).is_err() {
        return Vec::new();
    }
    out
}
