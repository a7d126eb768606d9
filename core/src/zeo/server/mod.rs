//! The ZEO server as a pure state machine (`zeo-protocol.md` §2–§6).
//!
//! API skeleton: the bodies are being written (issue 4). The driver feeds inputs with the
//! `handle_*` methods, drains [`Action`]s with [`Server::poll_action`] after every input, and
//! calls [`Server::handle_timeout`] once [`Server::poll_timeout`] has passed.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

use crate::ids::ConnId;
use crate::wire::frame::encode_frame;
use crate::wire::handshake::server_announcement;

use super::backend::{BackendOutcome, BackendReqId};
use super::events::{Action, Now, ServerConfig, StorageIdx};

/// The ZEO server state machine: every connection, every storage front.
#[derive(Debug)]
pub struct Server {
    cfg: ServerConfig,
    actions: VecDeque<Action>,
}

impl Server {
    /// A server with the given configuration, started at `now`.
    pub fn new(cfg: ServerConfig, now: Now) -> Server {
        let _ = now;
        Server { cfg, actions: VecDeque::new() }
    }

    /// A client connected (`label` is its peer address, for logs). Sends the handshake.
    pub fn handle_connect(&mut self, now: Now, conn: ConnId, label: &str) {
        let _ = (now, label);
        let mut out = Vec::new();
        if encode_frame(server_announcement(self.cfg.announce), &mut out).is_err() {
            return;
        }
        self.actions.push_back(Action::Send { conn, bytes: Bytes::from(out) });
    }

    /// Bytes arrived from `conn` (any split; framing is done here).
    pub fn handle_bytes(&mut self, now: Now, conn: ConnId, data: &[u8]) {
        let _ = (now, conn, data);
    }

    /// `conn` is gone (closed by the peer, by an I/O error, or after an [`Action::Close`]).
    pub fn handle_disconnect(&mut self, now: Now, conn: ConnId) {
        let _ = (now, conn);
    }

    /// A backend answered request `id` of `storage`.
    pub fn handle_backend(
        &mut self,
        now: Now,
        storage: StorageIdx,
        id: BackendReqId,
        outcome: BackendOutcome,
    ) {
        let _ = (now, storage, id, outcome);
    }

    /// Time passed (call when [`Server::poll_timeout`] is reached; extra calls are harmless).
    pub fn handle_timeout(&mut self, now: Now) {
        let _ = now;
    }

    /// Graceful shutdown: close every connection that holds no commit in progress; the commit
    /// in progress may finish (or is aborted after `grace`); then close the rest.
    pub fn begin_shutdown(&mut self, now: Now, grace: Duration) {
        let _ = (now, grace);
    }

    /// Whether shutdown is complete: no connection left and no backend write in flight.
    pub fn is_shut_down(&self) -> bool {
        true
    }

    /// The next output.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call [`Server::handle_timeout`] next (monotonic time), if ever.
    pub fn poll_timeout(&self) -> Option<Duration> {
        None
    }

    /// Checks every invariant of the state machine (for tests and the simulation).
    pub fn check(&self) -> Result<(), String> {
        Ok(())
    }
}
