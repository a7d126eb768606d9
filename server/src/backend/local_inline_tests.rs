//! The local backend without threads (`Exec::Inline`) over the crashable in-memory `MemDir`:
//! every outcome is delivered on the caller's thread before `submit` returns, and what was
//! answered `Finished` survives a crash.

use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use bytes::Bytes;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::types::{Extension, TxnStatus};
use zeoraid_core::zeo::backend::{
    BackendIterId, BackendOutcome, BackendReqId, BackendRequest, Culprit, TxnOp, UploadId, VoteRequest,
};

use super::local::{Exec, LocalBackend, LocalConfig};
use super::local_tests::store;
use crate::storage::{CrashMode, MemDir, OpenReport, RealDir, StorageDir};

type Delivered = Arc<Mutex<Vec<(BackendReqId, BackendOutcome, ThreadId)>>>;

struct Inline<D: StorageDir + 'static = MemDir> {
    dir: D,
    cfg: LocalConfig,
    backend: LocalBackend<D>,
    delivered: Delivered,
    next: u64,
    last: Tid,
}

fn recording_sink() -> (Delivered, super::Sink) {
    let delivered: Delivered = Arc::default();
    let d = Arc::clone(&delivered);
    let sink: super::Sink = Arc::new(move |id, o| {
        d.lock().expect("delivered").push((id, o, std::thread::current().id()));
    });
    (delivered, sink)
}

impl Inline {
    fn open(dir: MemDir, last: Tid) -> (Inline, OpenReport) {
        let cfg = LocalConfig::in_dir(true, true);
        let (delivered, sink) = recording_sink();
        let (backend, report) =
            LocalBackend::open_in("m", dir.clone(), &cfg, sink, Exec::Inline).expect("open in a MemDir");
        (Inline { dir, cfg, backend, delivered, next: 0, last }, report)
    }

    /// Opens what `mode` leaves of the directory after a power cut (the backend is left as is:
    /// the crashed process).
    fn crash(&self, mode: CrashMode) -> (Inline, OpenReport) {
        Inline::open(self.dir.crash(mode), self.last)
    }
}

impl<D: StorageDir + 'static> Inline<D> {
    /// Runs one request: every outcome of it, delivered before `submit` returned, on this thread.
    fn call_all(&mut self, req: BackendRequest) -> Vec<BackendOutcome> {
        self.next += 1;
        let id = BackendReqId(self.next);
        self.backend.submit(id, req);
        let got: Vec<_> = self.delivered.lock().expect("delivered").drain(..).collect();
        let me = std::thread::current().id();
        got.into_iter()
            .map(|(i, o, t)| {
                assert_eq!(i, id, "an outcome of another request: {o:?}");
                assert_eq!(t, me, "delivered on another thread");
                o
            })
            .collect()
    }

    fn call(&mut self, req: BackendRequest) -> BackendOutcome {
        let mut all = self.call_all(req);
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    fn vote(&mut self, ops: Vec<TxnOp>, deferred_sync: bool) -> (Tid, BackendOutcome) {
        let tid = Tid::later_than(Tid::from_unix(1_700_000_000, 0).expect("tid"), self.last).expect("tid");
        self.last = tid;
        let req = VoteRequest {
            tid,
            status: TxnStatus::NORMAL,
            user: Bytes::from_static(b"u"),
            description: Bytes::from_static(b"d"),
            extension: Extension::default(),
            ops,
            deferred_sync,
        };
        (tid, self.call(BackendRequest::Vote(Box::new(req))))
    }

    /// Vote and finish: fsync is on, so `Committed` then `Finished` (a transaction with blobs
    /// is durable inside its finish: `Finished` alone), all before `submit` returned.
    fn commit(&mut self, ops: Vec<TxnOp>) -> Tid {
        let (tid, out) = self.vote(ops, false);
        assert!(matches!(out, BackendOutcome::Voted { .. }), "{out:?}");
        match self.call_all(BackendRequest::Finish { tid }).as_slice() {
            [BackendOutcome::Committed { tid: c }, BackendOutcome::Finished { tid: f, .. }] => {
                assert_eq!((*c, *f), (tid, tid));
            }
            [BackendOutcome::Finished { tid: f, .. }] => assert_eq!(*f, tid),
            o => panic!("finish: {o:?}"),
        }
        tid
    }

    fn load(&mut self, oid: u64) -> Option<(Bytes, Tid)> {
        let req = BackendRequest::LoadBefore { oid: Oid::new(oid), before: Tid::MAX, snapshot: Tid::MAX };
        match self.call(req) {
            BackendOutcome::LoadBefore(Some(r)) => Some((r.data, r.start)),
            BackendOutcome::Failed(e) if e.culprit == Culprit::Client => None,
            o => panic!("{o:?}"),
        }
    }

    /// Every transaction's tid and oids, in one pass of `IterNextWhole`.
    fn txns(&mut self) -> Vec<(Tid, Vec<Oid>)> {
        let it = BackendIterId(500 + self.next);
        assert_eq!(
            self.call(BackendRequest::IterStart { iter: it, start: None, stop: None }),
            BackendOutcome::Nil
        );
        let mut out = Vec::new();
        loop {
            match self.call(BackendRequest::IterNextWhole { iter: it }) {
                BackendOutcome::WholeTxn(Some(t)) => {
                    out.push((t.header.tid, t.records.iter().map(|r| r.oid).collect()));
                }
                BackendOutcome::WholeTxn(None) => return out,
                o => panic!("{o:?}"),
            }
        }
    }

    fn blob(&mut self, oid: u64, serial: Tid) -> Option<Vec<u8>> {
        let all = self.call_all(BackendRequest::SendBlob { oid: Oid::new(oid), serial });
        let (last, chunks) = all.split_last().expect("an outcome");
        if matches!(last, BackendOutcome::Failed(_)) {
            return None;
        }
        assert_eq!(*last, BackendOutcome::Nil);
        Some(
            chunks
                .iter()
                .flat_map(|c| match c {
                    BackendOutcome::BlobChunk(b) => b.to_vec(),
                    o => panic!("{o:?}"),
                })
                .collect(),
        )
    }

    fn upload(&mut self, id: u64, content: &'static [u8]) -> UploadId {
        let upload = UploadId(id);
        assert_eq!(self.call(BackendRequest::BlobUploadStart { upload }), BackendOutcome::Nil);
        let chunk = Bytes::from_static(content);
        assert_eq!(self.call(BackendRequest::BlobUploadChunk { upload, chunk }), BackendOutcome::Nil);
        upload
    }
}

fn blob_store(oid: u64, serial: Tid, upload: UploadId) -> TxnOp {
    TxnOp::StoreBlob { oid: Oid::new(oid), serial, data: Bytes::from_static(b"blob record"), upload }
}

#[test]
fn an_inline_backend_commits_reads_iterates_and_packs_on_the_callers_thread() {
    let (mut b, report) = Inline::open(MemDir::new(), Tid::ZERO);
    assert_eq!(report.dropped_tail, None);
    assert_eq!(b.backend.exec(), Exec::Inline);
    let t1 = b.commit(vec![store(0, Tid::ZERO, b"one")]);
    let up = b.upload(1, b"blob bytes");
    let t2 = b.commit(vec![store(0, t1, b"two"), blob_store(1, Tid::ZERO, up)]);
    assert_eq!(b.load(0), Some((Bytes::from_static(b"two"), t2)));
    assert_eq!(b.blob(1, t2), Some(b"blob bytes".to_vec()));
    match b.call(BackendRequest::LoadBefore { oid: Oid::ROOT, before: t2, snapshot: t2 }) {
        BackendOutcome::LoadBefore(Some(r)) => {
            assert_eq!((&r.data[..], r.start, r.end), (&b"one"[..], t1, Some(t2)))
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(b.call(BackendRequest::GetTid { oid: Oid::ROOT, snapshot: t1 }), BackendOutcome::Tid(t1));
    assert_eq!(b.txns(), vec![(t1, vec![Oid::ROOT]), (t2, vec![Oid::ROOT, Oid::new(1)])]);
    assert!(
        matches!(b.call(BackendRequest::NewOids { n: 3 }), BackendOutcome::NewOids(ref o) if o.len() == 3)
    );
    // A conflict, then an abort: nothing stays open and the storage still commits.
    let (_, out) = b.vote(vec![store(0, t1, b"stale")], false);
    assert!(matches!(out, BackendOutcome::Conflicts(ref c) if c.len() == 1), "{out:?}");
    let (t, out) = b.vote(vec![store(2, Tid::ZERO, b"x")], false);
    assert!(matches!(out, BackendOutcome::Voted { .. }), "{out:?}");
    assert_eq!(b.call(BackendRequest::Abort { tid: t }), BackendOutcome::Nil);
    assert_eq!(b.load(2), None);
    let t3 = b.commit(vec![store(0, t2, b"three")]);
    // A pack inline: the revisions before the last one's predecessor go.
    assert!(matches!(b.call(BackendRequest::Pack { time: 4_000_000_000.0 }), BackendOutcome::Packed { .. }));
    match b.call(BackendRequest::History { oid: Oid::ROOT, size: 10 }) {
        BackendOutcome::History(h) => assert_eq!(h.len(), 2, "{h:?}"),
        o => panic!("{o:?}"),
    }
    assert_eq!(b.load(0), Some((Bytes::from_static(b"three"), t3)));
    // The driver holds backends in tasks: `Backend: Send + 'static`.
    fn sendable<T: Send + Sync + 'static>(_: &T) {}
    sendable(&b.backend);
    let info = b.backend.info();
    assert_eq!((info.last_tid, info.blobs, info.rebuildable, info.read_only), (t3, true, false, false));
    let seed = b.backend.seed(10).expect("seed");
    assert_eq!(seed.last_tid, t3);
    b.backend.close().expect("close");
}

#[test]
fn a_mem_backend_refuses_a_rebuild_with_a_backend_error_and_keeps_serving() {
    let (mut b, _) = Inline::open(MemDir::new(), Tid::ZERO);
    let t1 = b.commit(vec![store(0, Tid::ZERO, b"one")]);
    for req in [BackendRequest::RebuildBegin, BackendRequest::RebuildCommit, BackendRequest::RebuildAbort] {
        match b.call(req) {
            BackendOutcome::Failed(e) => assert_eq!(e.culprit, Culprit::Backend),
            o => panic!("{o:?}"),
        }
    }
    assert_eq!(b.load(0), Some((Bytes::from_static(b"one"), t1)));
    b.commit(vec![store(0, t1, b"two")]);
}

#[test]
fn every_finished_transaction_survives_any_crash_and_a_voted_one_does_not() {
    let (mut b, _) = Inline::open(MemDir::new(), Tid::ZERO);
    let t1 = b.commit(vec![store(0, Tid::ZERO, b"one"), store(1, Tid::ZERO, b"a")]);
    let up = b.upload(1, b"blob of t2");
    let t2 = b.commit(vec![store(0, t1, b"two"), blob_store(3, Tid::ZERO, up)]);
    // Voted, never finished: written but not committed (and a blob upload left open).
    b.upload(2, b"blob never stored");
    let (t3, out) = b.vote(vec![store(0, t2, b"three"), store(4, Tid::ZERO, b"new")], false);
    assert!(matches!(out, BackendOutcome::Voted { .. }), "{out:?}");
    assert!(b.dir.max_pending() > 0, "the vote left unsynced writes to crash");

    let mut modes = vec![CrashMode::DropUnsynced];
    modes.extend((0..=b.dir.last_pending_len().unwrap_or(0)).map(|keep| CrashMode::TearLast { keep }));
    let bits = b.dir.max_pending().min(8);
    modes.extend((0..1u64 << bits).map(|mask| CrashMode::Reorder { mask }));
    for mode in modes {
        let (mut c, _report) = b.crash(mode);
        assert_eq!(c.backend.info().last_tid, t2, "{mode:?}");
        assert_eq!(c.load(0), Some((Bytes::from_static(b"two"), t2)), "{mode:?}");
        assert_eq!(c.load(1), Some((Bytes::from_static(b"a"), t1)), "{mode:?}");
        assert_eq!(c.load(4), None, "{mode:?}: the voted transaction is gone");
        assert_eq!(c.blob(3, t2), Some(b"blob of t2".to_vec()), "{mode:?}");
        assert_eq!(
            c.txns(),
            vec![(t1, vec![Oid::ROOT, Oid::new(1)]), (t2, vec![Oid::ROOT, Oid::new(3)])],
            "{mode:?}"
        );
        // It commits again after the crash, and that commit survives the next one.
        let t4 = c.commit(vec![store(0, t2, b"after")]);
        let (mut d, report) = c.crash(CrashMode::DropUnsynced);
        assert_eq!(report.dropped_tail, None, "{mode:?}");
        assert_eq!(d.load(0), Some((Bytes::from_static(b"after"), t4)), "{mode:?}");
        d.backend.close().expect("close");
    }
    // A voted transaction with a blob (its vote syncs its records): gone after a crash too.
    assert_eq!(b.call(BackendRequest::Abort { tid: t3 }), BackendOutcome::Nil);
    let up = b.upload(3, b"blob of t5");
    let (t5, out) = b.vote(vec![store(4, Tid::ZERO, b"new"), blob_store(5, Tid::ZERO, up)], false);
    assert!(matches!(out, BackendOutcome::Voted { .. }), "{out:?}");
    let (mut c, report) = b.crash(CrashMode::DropUnsynced);
    assert_eq!((c.load(4), c.load(5), c.backend.info().last_tid), (None, None, t2), "{report:?}");
    assert_eq!(c.blob(5, t5), None);
}

#[test]
fn deferred_finishes_are_answered_at_once_and_made_durable_by_sync() {
    let (mut b, _) = Inline::open(MemDir::new(), Tid::ZERO);
    let t1 = b.commit(vec![store(0, Tid::ZERO, b"live")]);
    let (t2, out) = b.vote(vec![store(1, Tid::ZERO, b"bulk")], true);
    assert!(matches!(out, BackendOutcome::Voted { .. }), "{out:?}");
    match b.call_all(BackendRequest::Finish { tid: t2 }).as_slice() {
        [BackendOutcome::Finished { tid, .. }] => assert_eq!(*tid, t2),
        o => panic!("a deferred finish answers Finished alone: {o:?}"),
    }
    assert_eq!(b.call(BackendRequest::Sync), BackendOutcome::Nil);
    let (mut c, report) = b.crash(CrashMode::DropUnsynced);
    assert_eq!(report.dropped_tail, None);
    assert_eq!(c.load(0), Some((Bytes::from_static(b"live"), t1)));
    assert_eq!(c.load(1), Some((Bytes::from_static(b"bulk"), t2)));
    // A deferred one is also made durable by the round of the next live finish.
    let (t3, _) = c.vote(vec![store(2, Tid::ZERO, b"bulk 2")], true);
    assert!(matches!(
        c.call_all(BackendRequest::Finish { tid: t3 }).as_slice(),
        [BackendOutcome::Finished { .. }]
    ));
    let t4 = c.commit(vec![store(0, t1, b"live 2")]);
    let (mut d, _) = c.crash(CrashMode::DropUnsynced);
    assert_eq!(d.load(2), Some((Bytes::from_static(b"bulk 2"), t3)));
    assert_eq!(d.load(0), Some((Bytes::from_static(b"live 2"), t4)));
}

#[test]
fn close_then_reopen_keeps_everything_and_the_config_names_the_files() {
    let (mut b, _) = Inline::open(MemDir::new(), Tid::ZERO);
    let t1 = b.commit(vec![store(0, Tid::ZERO, b"one")]);
    let dir = b.dir.clone();
    assert_eq!(b.cfg.path.to_str(), Some("Data.fs"));
    b.backend.close().expect("close");
    assert!(dir.names().iter().any(|n| n == "Data.fs"), "{:?}", dir.names());
    let (mut c, report) = Inline::open(dir, t1);
    assert_eq!(report.dropped_tail, None);
    assert_eq!(c.load(0), Some((Bytes::from_static(b"one"), t1)));
}

#[test]
fn a_pack_submitted_while_a_transaction_is_voted_runs_once_it_ends() {
    let (mut b, _) = Inline::open(MemDir::new(), Tid::ZERO);
    let t1 = b.commit(vec![store(0, Tid::ZERO, b"one")]);
    let t2 = b.commit(vec![store(0, t1, b"two")]);
    for (end_with_finish, oid) in [(true, 1), (false, 5)] {
        let (t, out) = b.vote(vec![store(oid, Tid::ZERO, b"x")], false);
        assert!(matches!(out, BackendOutcome::Voted { .. }), "{out:?}");
        // The engine's pack would wait for the voted transaction: inline, it waits its turn.
        assert_eq!(b.call_all(BackendRequest::Pack { time: 4_000_000_000.0 }), vec![]);
        let pack_id = BackendReqId(b.next);
        b.next += 1;
        let id = BackendReqId(b.next);
        let end = if end_with_finish {
            BackendRequest::Finish { tid: t }
        } else {
            BackendRequest::Abort { tid: t }
        };
        b.backend.submit(id, end);
        let got: Vec<(BackendReqId, BackendOutcome)> =
            b.delivered.lock().expect("delivered").drain(..).map(|(i, o, _)| (i, o)).collect();
        let (pack, first) = got.split_last().expect("outcomes");
        assert_eq!(pack.0, pack_id, "the pack answers last: {got:?}");
        assert!(matches!(pack.1, BackendOutcome::Packed { .. }), "{got:?}");
        assert!(first.iter().all(|(i, _)| *i == id), "{got:?}");
        if !end_with_finish {
            assert_eq!(first, [(id, BackendOutcome::Nil)]);
        }
    }
    assert_eq!(b.load(0), Some((Bytes::from_static(b"two"), t2)));
    assert!(b.load(1).is_some(), "the finished one is there");
    assert_eq!(b.load(5), None, "the aborted one is not");
    // A pack still waiting at close is answered.
    let (_, out) = b.vote(vec![store(2, Tid::ZERO, b"y")], false);
    assert!(matches!(out, BackendOutcome::Voted { .. }), "{out:?}");
    assert_eq!(b.call_all(BackendRequest::Pack { time: 4_000_000_000.0 }), vec![]);
    let delivered = Arc::clone(&b.delivered);
    b.backend.close().expect("close");
    let got = delivered.lock().expect("delivered").drain(..).map(|(_, o, _)| o).collect::<Vec<_>>();
    assert!(
        matches!(got.as_slice(), [BackendOutcome::Failed(e)] if e.culprit == Culprit::Backend),
        "{got:?}"
    );
}

#[test]
fn an_inline_backend_on_real_files_rebuilds() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = LocalConfig {
        path: tmp.path().join("Data.fs"),
        blob_dir: Some(tmp.path().join("blobs")),
        read_only: false,
        fsync: true,
        read_threads: 1,
    };
    let (delivered, sink) = recording_sink();
    let (backend, _) = LocalBackend::open_exec("r", &cfg, sink, Exec::Inline).expect("open");
    assert!(backend.info().rebuildable);
    let mut b = Inline { dir: RealDir::new(tmp.path()), cfg, backend, delivered, next: 0, last: Tid::ZERO };
    b.commit(vec![store(0, Tid::ZERO, b"old")]);
    assert_eq!(b.call(BackendRequest::RebuildBegin), BackendOutcome::Nil);
    assert_eq!(b.load(0), None, "the empty rebuild serves");
    let t2 = b.commit(vec![store(7, Tid::ZERO, b"new")]);
    assert_eq!(b.call(BackendRequest::RebuildCommit), BackendOutcome::Nil);
    assert_eq!((b.load(0), b.load(7)), (None, Some((Bytes::from_static(b"new"), t2))));
    b.backend.close().expect("close");
    let (_, sink) = recording_sink();
    let (reopened, _) = LocalBackend::open("r", &b.cfg, sink).expect("reopen");
    assert_eq!(reopened.info().last_tid, t2);
    reopened.close().expect("close");
}
