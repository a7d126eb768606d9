//! Backend hosts' storage until the inline local backend lands: core's [`MemBackend`] behind
//! the driver's [`Backend`] trait, kept across host crashes in an `Arc<Mutex<_>>`.
//!
//! A crash loses the voted, unfinished transaction (as a real server's would): the next
//! incarnation of the host aborts it before serving ([`MemStore::reopen`]).

use std::sync::{Arc, Mutex, MutexGuard};

use zeoraid_core::ids::Tid;
use zeoraid_core::zeo::backend::{
    BackendInfo, BackendIterId, BackendOutcome, BackendReqId, BackendRequest, StorageSize, WholeTxn,
};
use zeoraid_core::zeo::mem_backend::MemBackend;
use zeoraid_server::backend::Sink;
use zeoraid_server::driver::Backend;

#[derive(Debug, Default)]
struct Inner {
    mem: MemBackend,
    /// The tid of the voted, unfinished transaction.
    voted: Option<Tid>,
}

/// One backend host's storage, surviving the host's crashes.
#[derive(Debug, Clone)]
pub struct MemStore(Arc<Mutex<Inner>>);

impl Default for MemStore {
    fn default() -> Self {
        MemStore(Arc::new(Mutex::new(Inner { mem: MemBackend::new(), voted: None })))
    }
}

impl MemStore {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new incarnation of the host: the voted transaction is lost; returns its info.
    pub fn reopen(&self) -> BackendInfo {
        let mut g = self.lock();
        if let Some(tid) = g.voted.take() {
            let _ = g.mem.handle(BackendRequest::Abort { tid });
        }
        BackendInfo {
            last_tid: g.mem.last_tid(),
            size: g.mem.size(),
            blobs: false,
            supports_undo: true,
            info_name: "mem".into(),
            read_only: false,
            rebuildable: false,
        }
    }

    /// Answers one request (what the host's driver submits).
    fn handle(&self, req: BackendRequest) -> Vec<BackendOutcome> {
        let mut g = self.lock();
        let vote_tid = match &req {
            BackendRequest::Vote(v) => Some(v.tid),
            _ => None,
        };
        let finishing = matches!(req, BackendRequest::Finish { .. } | BackendRequest::Abort { .. });
        let out = g.mem.handle(req);
        if finishing {
            g.voted = None;
        }
        if let Some(tid) = vote_tid {
            if matches!(out.last(), Some(BackendOutcome::Voted { .. })) {
                g.voted = Some(tid);
            }
        }
        out
    }

    /// The whole committed history, oldest first.
    pub fn history(&self) -> Vec<WholeTxn> {
        let mut g = self.lock();
        let iter = BackendIterId(u64::MAX);
        let _ = g.mem.handle(BackendRequest::IterStart { iter, start: None, stop: None });
        let mut all = Vec::new();
        while let Some(BackendOutcome::WholeTxn(Some(t))) =
            g.mem.handle(BackendRequest::IterNextWhole { iter }).pop()
        {
            all.push(*t);
        }
        all
    }

    /// Object count and size.
    pub fn size(&self) -> StorageSize {
        self.lock().mem.size()
    }
}

/// The driver's backend over a [`MemStore`]: answers at once, through the sink.
pub struct MemHostBackend {
    store: MemStore,
    sink: Sink,
}

impl MemHostBackend {
    /// Serves `store`, delivering to `sink`.
    pub fn new(store: MemStore, sink: Sink) -> MemHostBackend {
        MemHostBackend { store, sink }
    }
}

impl Backend for MemHostBackend {
    fn submit(&self, id: BackendReqId, request: BackendRequest) {
        for outcome in self.store.handle(request) {
            (self.sink)(id, outcome);
        }
    }
}
