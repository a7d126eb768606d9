//! The local backend against a real Data.fs in a temporary directory.

use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::error::{PosKeyDetails, ZeoError};
use zeoraid_core::wire::reply::VoteItem;
use zeoraid_core::wire::types::{Extension, TxnStatus};
use zeoraid_core::zeo::backend::{
    BackendIterId, BackendOutcome, BackendReqId, BackendRequest, Culprit, TxnOp, UploadId, VoteRequest,
    WholeTxn,
};

use super::local::{LocalBackend, LocalConfig};

pub(super) struct Fixture {
    pub(super) dir: tempfile::TempDir,
    pub(super) cfg: LocalConfig,
    pub(super) backend: Option<LocalBackend>,
    rx: Receiver<(BackendReqId, BackendOutcome)>,
    next: u64,
    pub(super) last: Tid,
    /// Outcomes of earlier requests that arrived while waiting for another one.
    stray: Vec<(BackendReqId, BackendOutcome)>,
}

impl Fixture {
    pub(super) fn new(read_only: bool) -> Fixture {
        Fixture::with(read_only, false)
    }

    pub(super) fn with(read_only: bool, fsync: bool) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LocalConfig {
            path: dir.path().join("Data.fs"),
            blob_dir: Some(dir.path().join("blobs")),
            read_only: false,
            fsync,
            read_threads: 2,
        };
        if read_only {
            // Create the file first; a read-only open needs it.
            let (tx, _rx) = channel();
            let sink: super::Sink = Arc::new(move |i, o| drop(tx.send((i, o))));
            let (b, _) = LocalBackend::open("1", &cfg, sink).expect("create");
            b.close().expect("close");
        }
        let (tx, rx) = channel();
        let sink: super::Sink = Arc::new(move |i, o| drop(tx.send((i, o))));
        let cfg = LocalConfig { read_only, ..cfg };
        let (backend, _) = LocalBackend::open("1", &cfg, sink).expect("open");
        Fixture { dir, cfg, backend: Some(backend), rx, next: 0, last: Tid::ZERO, stray: Vec::new() }
    }

    /// Closes the backend and opens it again from the files.
    pub(super) fn reopen(&mut self) {
        if let Some(b) = self.backend.take() {
            b.close().expect("close");
        }
        let (tx, rx) = channel();
        let sink: super::Sink = Arc::new(move |i, o| drop(tx.send((i, o))));
        let (backend, _) = LocalBackend::open("1", &self.cfg, sink).expect("reopen");
        self.backend = Some(backend);
        self.rx = rx;
        self.stray.clear();
    }

    pub(super) fn backend(&self) -> &LocalBackend {
        self.backend.as_ref().expect("open")
    }

    /// Runs one request and returns all its outcomes (partial ones first).
    pub(super) fn call_all(&mut self, req: BackendRequest) -> Vec<BackendOutcome> {
        self.next += 1;
        let id = BackendReqId(self.next);
        self.backend().submit(id, req);
        let mut out = Vec::new();
        loop {
            let (got, o) = self.rx.recv_timeout(Duration::from_secs(30)).expect("an outcome");
            if got != id {
                // A request still in flight (group commit: its Finished comes when durable).
                assert!(got < id, "an outcome for a request not sent yet");
                self.stray.push((got, o));
                continue;
            }
            let partial = o.is_partial();
            out.push(o);
            if !partial {
                return out;
            }
        }
    }

    pub(super) fn call(&mut self, req: BackendRequest) -> BackendOutcome {
        let mut all = self.call_all(req);
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    pub(super) fn next_tid(&mut self) -> Tid {
        let t = Tid::later_than(Tid::from_unix(1_700_000_000, 0).expect("tid"), self.last).expect("tid");
        self.last = t;
        t
    }

    fn vote(&mut self, ops: Vec<TxnOp>) -> (Tid, BackendOutcome) {
        let tid = self.next_tid();
        let req = VoteRequest {
            tid,
            status: TxnStatus::NORMAL,
            user: Bytes::from_static(b"u"),
            description: Bytes::from_static(b"d"),
            extension: Extension::default(),
            ops,
            deferred_sync: false,
        };
        (tid, self.call(BackendRequest::Vote(Box::new(req))))
    }

    pub(super) fn commit(&mut self, ops: Vec<TxnOp>) -> Tid {
        let (tid, out) = self.vote(ops);
        assert!(matches!(out, BackendOutcome::Voted { .. }), "{out:?}");
        match self.call_all(BackendRequest::Finish { tid }).as_slice() {
            [BackendOutcome::Finished { tid: t, .. }]
            | [BackendOutcome::Committed { .. }, BackendOutcome::Finished { tid: t, .. }] => {
                assert_eq!(*t, tid);
                *t
            }
            o => panic!("finish: {o:?}"),
        }
    }
}

pub(super) fn store(oid: u64, serial: Tid, data: &'static [u8]) -> TxnOp {
    TxnOp::Store { oid: Oid::new(oid), serial, data: Bytes::from_static(data) }
}

#[test]
fn commit_then_load_as_of_snapshots() {
    let mut f = Fixture::new(false);
    let t1 = f.commit(vec![store(0, Tid::ZERO, b"one")]);
    let t2 = f.commit(vec![store(0, t1, b"two")]);
    let load = |f: &mut Fixture, snapshot| {
        f.call(BackendRequest::LoadBefore { oid: Oid::ROOT, before: Tid::MAX, snapshot })
    };
    match load(&mut f, t2) {
        BackendOutcome::LoadBefore(Some(r)) => {
            assert_eq!((&r.data[..], r.start, r.end), (&b"two"[..], t2, None))
        }
        o => panic!("{o:?}"),
    }
    // As of t1 the second revision does not exist yet: data one, and no end announced.
    match load(&mut f, t1) {
        BackendOutcome::LoadBefore(Some(r)) => {
            assert_eq!((&r.data[..], r.start, r.end), (&b"one"[..], t1, None))
        }
        o => panic!("{o:?}"),
    }
    match f.call(BackendRequest::LoadBefore { oid: Oid::ROOT, before: t2, snapshot: t2 }) {
        BackendOutcome::LoadBefore(Some(r)) => assert_eq!((r.start, r.end), (t1, Some(t2))),
        o => panic!("{o:?}"),
    }
    assert_eq!(f.call(BackendRequest::GetTid { oid: Oid::ROOT, snapshot: t1 }), BackendOutcome::Tid(t1));
    match f.call(BackendRequest::LoadBefore { oid: Oid::new(9), before: Tid::MAX, snapshot: t2 }) {
        BackendOutcome::Failed(e) => {
            assert_eq!(e.error, ZeoError::pos_key(Oid::new(9)));
            assert_eq!(e.culprit, Culprit::Client);
        }
        o => panic!("{o:?}"),
    }
    f.backend.take().expect("open").close().expect("close");
}

#[test]
fn conflicts_leave_nothing_open_and_a_revote_with_the_resolution_commits() {
    let mut f = Fixture::new(false);
    let t1 = f.commit(vec![store(0, Tid::ZERO, b"one")]);
    let _t2 = f.commit(vec![store(0, t1, b"two")]);
    let t2 = f.last;
    // A client that read t1 conflicts; the map carries the committed and read serials.
    let (_, out) = f.vote(vec![store(0, t1, b"mine")]);
    assert_eq!(
        out,
        BackendOutcome::Conflicts(vec![VoteItem::Conflict {
            oid: Oid::ROOT,
            committed: t2,
            read: t1,
            data: Bytes::from_static(b"mine")
        }])
    );
    // Re-vote: everything replayed, plus the resolved store with the committed serial.
    let t3 = f.commit(vec![store(0, t1, b"mine"), store(0, t2, b"resolved")]);
    match f.call(BackendRequest::LoadSerial { oid: Oid::ROOT, serial: t3 }) {
        BackendOutcome::Data(d) => assert_eq!(&d[..], b"resolved"),
        o => panic!("{o:?}"),
    }
}

#[test]
fn blob_upload_survives_conflicts_and_streams_in_chunks() {
    let mut f = Fixture::new(false);
    let t1 = f.commit(vec![store(1, Tid::ZERO, b"blob v1")]);
    let _ = f.commit(vec![store(1, t1, b"blob v2")]);
    let t2 = f.last;
    let up = UploadId(7);
    assert_eq!(f.call(BackendRequest::BlobUploadStart { upload: up }), BackendOutcome::Nil);
    let big = vec![b'x'; 130_000];
    for c in big.chunks(50_000) {
        let req = BackendRequest::BlobUploadChunk { upload: up, chunk: Bytes::copy_from_slice(c) };
        assert_eq!(f.call(req), BackendOutcome::Nil);
    }
    let blob = |serial| TxnOp::StoreBlob {
        oid: Oid::new(1),
        serial,
        data: Bytes::from_static(b"blob rec"),
        upload: up,
    };
    let (_, out) = f.vote(vec![blob(t1)]);
    assert!(matches!(out, BackendOutcome::Conflicts(ref c) if c.len() == 1), "{out:?}");
    let t3 = f.commit(vec![blob(t2)]);
    let all = f.call_all(BackendRequest::SendBlob { oid: Oid::new(1), serial: t3 });
    let (last, chunks) = all.split_last().expect("outcomes");
    assert_eq!(*last, BackendOutcome::Nil);
    let sizes: Vec<usize> = chunks
        .iter()
        .map(|c| match c {
            BackendOutcome::BlobChunk(b) => b.len(),
            o => panic!("{o:?}"),
        })
        .collect();
    assert_eq!(sizes, vec![59_000, 59_000, 12_000]);
    match f.call(BackendRequest::SendBlob { oid: Oid::new(1), serial: t2 }) {
        BackendOutcome::Failed(e) => assert!(matches!(e.error, ZeoError::PosKey(PosKeyDetails::Blob { .. }))),
        o => panic!("{o:?}"),
    }
}

#[test]
fn read_conflict_and_abort() {
    let mut f = Fixture::new(false);
    let t1 = f.commit(vec![store(0, Tid::ZERO, b"one")]);
    let _ = f.commit(vec![store(0, t1, b"two")]);
    let (_, out) =
        f.vote(vec![TxnOp::CheckCurrent { oid: Oid::ROOT, serial: t1 }, store(1, Tid::ZERO, b"x")]);
    assert!(
        matches!(out, BackendOutcome::Failed(ref e) if matches!(e.error, ZeoError::ReadConflict(_))),
        "{out:?}"
    );
    // Nothing left open: a vote then an abort, and the storage still commits.
    let (tid, out) = f.vote(vec![store(1, Tid::ZERO, b"x")]);
    assert!(matches!(out, BackendOutcome::Voted { .. }));
    assert_eq!(f.call(BackendRequest::Abort { tid }), BackendOutcome::Nil);
    assert!(matches!(
        f.call(BackendRequest::LoadBefore { oid: Oid::new(1), before: Tid::MAX, snapshot: Tid::MAX }),
        BackendOutcome::Failed(_)
    ));
    f.commit(vec![store(1, Tid::ZERO, b"x")]);
}

#[test]
fn iterators_undo_and_pack() {
    let mut f = Fixture::new(false);
    let t1 = f.commit(vec![store(0, Tid::ZERO, b"one")]);
    let t2 = f.commit(vec![store(0, t1, b"two")]);
    use zeoraid_core::zeo::backend::BackendIterId as It;
    assert_eq!(
        f.call(BackendRequest::IterStart { iter: It(1), start: None, stop: None }),
        BackendOutcome::Nil
    );
    let mut tids = Vec::new();
    loop {
        match f.call(BackendRequest::IterNext { iter: It(1) }) {
            BackendOutcome::Txn(Some(h)) => {
                let req = BackendRequest::IterRecordStart { iter: It(2), txn_iter: It(1), tid: h.tid };
                assert_eq!(f.call(req), BackendOutcome::Nil);
                match f.call(BackendRequest::IterRecordNext { iter: It(2) }) {
                    BackendOutcome::Record(Some(r)) => assert_eq!(r.tid, h.tid),
                    o => panic!("{o:?}"),
                }
                assert_eq!(
                    f.call(BackendRequest::IterRecordNext { iter: It(2) }),
                    BackendOutcome::Record(None)
                );
                tids.push(h.tid);
            }
            BackendOutcome::Txn(None) => break,
            o => panic!("{o:?}"),
        }
    }
    assert_eq!(tids, vec![t1, t2]);
    // Undo t2 through the undo log.
    let id = match f.call(BackendRequest::UndoLog { first: 0, last: 10 }) {
        BackendOutcome::UndoLog(entries) => {
            assert_eq!(entries.len(), 2);
            entries[0].id.clone()
        }
        o => panic!("{o:?}"),
    };
    let (tid, out) = f.vote(vec![TxnOp::Undo { undo_id: id }]);
    assert_eq!(out, BackendOutcome::Voted { changed: vec![Oid::ROOT], invalidated: vec![Oid::ROOT] });
    assert!(matches!(f.call(BackendRequest::Finish { tid }), BackendOutcome::Finished { .. }));
    match f.call(BackendRequest::LoadBefore { oid: Oid::ROOT, before: Tid::MAX, snapshot: tid }) {
        BackendOutcome::LoadBefore(Some(r)) => assert_eq!(&r.data[..], b"one"),
        o => panic!("{o:?}"),
    }
    let history = |f: &mut Fixture| match f.call(BackendRequest::History { oid: Oid::ROOT, size: 10 }) {
        BackendOutcome::History(h) => h.len(),
        o => panic!("{o:?}"),
    };
    assert_eq!(history(&mut f), 3);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    assert!(matches!(f.call(BackendRequest::Pack { time: now }), BackendOutcome::Packed { .. }));
    // A pack time after the last transaction is lowered to it: t1's revision goes, the one
    // current before the last transaction (t2's) and the last one stay.
    assert_eq!(history(&mut f), 2);
    assert!(matches!(f.call(BackendRequest::Pack { time: f64::NAN }), BackendOutcome::Failed(_)));
}

/// What `IterNext`, `IterRecordStart` and `IterRecordNext` give for the next transaction.
fn stepwise(f: &mut Fixture, it: BackendIterId) -> Option<WholeTxn> {
    let header = match f.call(BackendRequest::IterNext { iter: it }) {
        BackendOutcome::Txn(h) => h?,
        o => panic!("{o:?}"),
    };
    let ri = BackendIterId(it.0 + 1000);
    let req = BackendRequest::IterRecordStart { iter: ri, txn_iter: it, tid: header.tid };
    assert_eq!(f.call(req), BackendOutcome::Nil);
    let mut records = Vec::new();
    loop {
        match f.call(BackendRequest::IterRecordNext { iter: ri }) {
            BackendOutcome::Record(Some(r)) => records.push(r),
            BackendOutcome::Record(None) => break,
            o => panic!("{o:?}"),
        }
    }
    Some(WholeTxn { header, records })
}

#[test]
fn iter_next_whole_reads_transactions_with_their_records() {
    let mut f = Fixture::new(false);
    let t1 =
        f.commit(vec![store(1, Tid::ZERO, b"a"), store(2, Tid::ZERO, b"bb"), store(3, Tid::ZERO, b"ccc")]);
    let t2 = f.commit(vec![]);
    let t3 = f.commit(vec![store(1, t1, b"a2")]);
    // An undo of t3 writes a back-pointer record (no data of its own, data_txn = t1).
    let id = match f.call(BackendRequest::UndoLog { first: 0, last: 1 }) {
        BackendOutcome::UndoLog(e) => e[0].id.clone(),
        o => panic!("{o:?}"),
    };
    let t4 = f.commit(vec![TxnOp::Undo { undo_id: id }]);
    let (whole, step) = (BackendIterId(1), BackendIterId(2));
    for it in [whole, step] {
        assert_eq!(
            f.call(BackendRequest::IterStart { iter: it, start: None, stop: None }),
            BackendOutcome::Nil
        );
    }
    let mut got = Vec::new();
    loop {
        let t = match f.call(BackendRequest::IterNextWhole { iter: whole }) {
            BackendOutcome::WholeTxn(t) => t,
            o => panic!("{o:?}"),
        };
        assert_eq!(t.as_deref(), stepwise(&mut f, step).as_ref());
        match t {
            Some(t) => got.push(*t),
            None => break,
        }
    }
    let shape: Vec<(Tid, Vec<u64>)> =
        got.iter().map(|t| (t.header.tid, t.records.iter().map(|r| r.oid.get()).collect())).collect();
    assert_eq!(shape, vec![(t1, vec![1, 2, 3]), (t2, vec![]), (t3, vec![1]), (t4, vec![1])]);
    assert_eq!(got[0].records[2].data.as_deref(), Some(&b"ccc"[..]));
    assert_eq!(got[3].records[0].data_txn, Some(t1));
    // The end freed the iterator; an unknown iterator is at its end, as for `IterNext`.
    assert_eq!(f.call(BackendRequest::IterNextWhole { iter: whole }), BackendOutcome::WholeTxn(None));
    assert_eq!(f.call(BackendRequest::IterNext { iter: whole }), BackendOutcome::Txn(None));
}

#[test]
fn read_only_refuses_writes_and_seed_reports_state() {
    let mut f = Fixture::new(true);
    let seed = f.backend().seed(10).expect("seed");
    assert!(seed.read_only && seed.blobs);
    assert_eq!(seed.last_tid, Tid::ZERO);
    match f.call(BackendRequest::NewOids { n: 5 }) {
        BackendOutcome::Failed(e) => assert_eq!((e.error, e.culprit), (ZeoError::ReadOnly, Culprit::Client)),
        o => panic!("{o:?}"),
    }
    let (_, out) = f.vote(vec![store(0, Tid::ZERO, b"x")]);
    assert!(matches!(out, BackendOutcome::Failed(ref e) if e.error == ZeoError::ReadOnly), "{out:?}");
}

#[test]
fn group_commit_answers_committed_then_finished_in_order() {
    let mut f = Fixture::with(false, true);
    let t1 = f.commit(vec![store(0, Tid::ZERO, b"seed")]);
    // Vote and finish two transactions back to back without waiting for durability.
    let (ta, out) = f.vote(vec![store(0, t1, b"a")]);
    assert!(matches!(out, BackendOutcome::Voted { .. }), "{out:?}");
    f.next += 1;
    let fa = BackendReqId(f.next);
    f.backend().submit(fa, BackendRequest::Finish { tid: ta });
    let (got, o) = f.rx.recv_timeout(Duration::from_secs(30)).expect("committed");
    assert_eq!((got, o), (fa, BackendOutcome::Committed { tid: ta }));
    // The next transaction sees the first one: a store based on t1 conflicts with ta.
    let (_, out) = f.vote(vec![store(0, t1, b"stale")]);
    assert!(matches!(out, BackendOutcome::Conflicts(_)), "{out:?}");
    let (got, o) = match f.stray.pop() {
        Some(early) => early,
        None => f.rx.recv_timeout(Duration::from_secs(30)).expect("finished"),
    };
    assert_eq!(got, fa);
    assert!(matches!(o, BackendOutcome::Finished { tid, .. } if tid == ta), "{o:?}");
    f.backend.take().expect("open").close().expect("close");
}

/// On Linux a freshly written (so cached) record is read without waiting for the disk.
#[cfg(target_os = "linux")]
#[test]
fn real_files_answer_cached_loads_without_blocking() {
    use crate::storage::{BeginTid, Options, Storage, TxnMeta};
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, _) =
        Storage::open_path(dir.path().join("Data.fs"), Options { fsync: false, ..Options::default() })
            .expect("open");
    s.begin(TxnMeta::default(), BeginTid::Exactly(Tid::new(5)), TxnStatus::NORMAL).expect("begin");
    s.store(Oid::new(1), Tid::ZERO, b"cached").expect("store");
    s.vote().expect("vote");
    s.finish().expect("finish");
    match s.load_before_nowait(Oid::new(1), Tid::MAX) {
        Some(Ok(Some(r))) => assert_eq!((&r.data[..], r.start, r.end), (&b"cached"[..], Tid::new(5), None)),
        other => panic!("{other:?}"),
    }
}
