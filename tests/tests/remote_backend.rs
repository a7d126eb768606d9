//! `RemoteBackend` (zeoraid-server's connector with core's ZEO client) against real ZEO servers
//! on loopback: stock `runzeo` (ZEO 6.2, client-conflict-resolution mode) and the zeoraid
//! binary, in both encodings. One scenario per server and encoding: commits with chosen tids,
//! loads, history, iteration, a conflict, a POSKeyError, undo, pack, a 3 MB blob round trip,
//! then `kill -9` of the server (Down, failures) and its restart (Up again).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::timeout;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::error::ZeoError;
use zeoraid_core::wire::reply::{LoadBeforeResult, VoteItem};
use zeoraid_core::wire::types::{Extension, TxnStatus};
use zeoraid_core::wire::Encoding;
use zeoraid_core::zeo::backend::{
    BackendEvent, BackendInfo, BackendIterId, BackendOutcome, BackendReqId, BackendRequest, Culprit, TxnOp,
    UploadId, VoteRequest,
};
use zeoraid_server::backend::remote::{EventSink, RemoteAddr, RemoteBackend, RemoteConfig};
use zeoraid_server::backend::Sink;
use zeoraid_server::net::TokioNet;
use zeoraid_tests::server::{zeoraid_binary, ServerKind, ServerOpts, ServerProcess};

/// Records made by ZODB 6.4 (PersistentMappings): the root references `A` (oid 1) and `B`
/// (oid 2), so that a packing server with GC keeps them.
const ROOT: &str = "80036370657273697374656e742e6d617070696e670a50657273697374656e744d617070696e670a71002e80037d710158040000006461746171027d7103285801000000617104430800000000000000017105680086710651580100000062710743080000000000000002710868008671095175732e";
const A1: &str = "80036370657273697374656e742e6d617070696e670a50657273697374656e744d617070696e670a71002e80037d710158040000006461746171027d710358010000007671044b0173732e";
const A2: &str = "80036370657273697374656e742e6d617070696e670a50657273697374656e744d617070696e670a71002e80037d710158040000006461746171027d710358010000007671044b0273732e";
const A3: &str = "80036370657273697374656e742e6d617070696e670a50657273697374656e744d617070696e670a71002e80037d710158040000006461746171027d710358010000007671044b0373732e";
const B: &str = "80036370657273697374656e742e6d617070696e670a50657273697374656e744d617070696e670a71002e80037d710158040000006461746171027d71035801000000767104580100000062710573732e";
/// A `ZODB.blob.Blob` record, as the stock client stores it (from the blob vectors).
const BLOB: &str = "800358090000005a4f44422e626c6f6271005804000000426c6f6271018671024e8671032e80034e2e";

/// The longest any single step may take.
const STEP: Duration = Duration::from_secs(20);

fn rec(hex_data: &str) -> Bytes {
    Bytes::from(hex::decode(hex_data).expect("hex"))
}

fn oid(n: u64) -> Oid {
    Oid::new(n)
}

/// The test's view of one backend: its outcomes and events, in arrival order.
struct Harness {
    backend: RemoteBackend,
    outcomes: mpsc::UnboundedReceiver<(BackendReqId, BackendOutcome)>,
    events: mpsc::UnboundedReceiver<BackendEvent>,
    /// Outcomes that arrived for other requests than the one awaited.
    stash: BTreeMap<u64, Vec<BackendOutcome>>,
    next: u64,
}

impl Harness {
    fn spawn(server: &ServerProcess) -> Harness {
        let (otx, outcomes) = mpsc::unbounded_channel();
        let (etx, events) = mpsc::unbounded_channel();
        let sink: Sink = Arc::new(move |id, outcome| {
            let _ = otx.send((id, outcome));
        });
        let event_sink: EventSink = Arc::new(move |e| {
            let _ = etx.send(e);
        });
        let cfg = RemoteConfig {
            name: format!("{}-{:?}", server.kind().name(), server.opts().encoding),
            address: RemoteAddr::Tcp(server.address()),
            storage: "1".into(),
            read_only: false,
            connect_timeout: Duration::from_secs(5),
            max_frame: 64 << 20,
        };
        let backend = RemoteBackend::spawn(TokioNet, cfg, sink, event_sink);
        Harness { backend, outcomes, events, stash: BTreeMap::new(), next: 1 }
    }

    async fn event(&mut self, within: Duration) -> BackendEvent {
        timeout(within, self.events.recv()).await.expect("an event in time").expect("events open")
    }

    async fn up(&mut self) -> BackendInfo {
        match self.event(STEP).await {
            BackendEvent::Up(info) => info,
            other => panic!("expected Up, got {other:?}"),
        }
    }

    fn submit(&mut self, req: BackendRequest) -> BackendReqId {
        let id = BackendReqId(self.next);
        self.next += 1;
        self.backend.submit(id, req);
        id
    }

    /// Every outcome of `id`, up to and including the final one.
    async fn wait_all(&mut self, id: BackendReqId, within: Duration) -> Vec<BackendOutcome> {
        let mut got = self.stash.remove(&id.0).unwrap_or_default();
        loop {
            if got.last().is_some_and(|o| !o.is_partial()) {
                return got;
            }
            let (rid, o) =
                timeout(within, self.outcomes.recv()).await.expect("an outcome in time").expect("open");
            if rid == id {
                got.push(o);
            } else {
                self.stash.entry(rid.0).or_default().push(o);
            }
        }
    }

    async fn wait(&mut self, id: BackendReqId) -> BackendOutcome {
        let mut all = self.wait_all(id, STEP).await;
        assert_eq!(all.len(), 1, "partial outcomes: {all:?}");
        all.pop().expect("one")
    }

    async fn call(&mut self, req: BackendRequest) -> BackendOutcome {
        let id = self.submit(req);
        self.wait(id).await
    }

    async fn commit(&mut self, tid: Tid, ops: Vec<TxnOp>) -> (Vec<Oid>, Vec<Oid>) {
        let voted = self.call(vote(tid, ops)).await;
        let BackendOutcome::Voted { changed, invalidated } = voted else {
            panic!("vote of {tid}: {voted:?}")
        };
        match self.call(BackendRequest::Finish { tid }).await {
            BackendOutcome::Finished { tid: t, .. } => assert_eq!(t, tid),
            other => panic!("finish of {tid}: {other:?}"),
        }
        (changed, invalidated)
    }

    async fn load(&mut self, o: Oid, before: Tid, snapshot: Tid) -> Option<LoadBeforeResult> {
        match self.call(BackendRequest::LoadBefore { oid: o, before, snapshot }).await {
            BackendOutcome::LoadBefore(r) => r,
            other => panic!("loadBefore({o}, {before}): {other:?}"),
        }
    }
}

fn vote(tid: Tid, ops: Vec<TxnOp>) -> BackendRequest {
    BackendRequest::Vote(Box::new(VoteRequest {
        tid,
        status: TxnStatus::NORMAL,
        user: Bytes::from_static(b"remote-test"),
        description: Bytes::from(format!("commit {tid}")),
        extension: Extension::default(),
        ops,
        deferred_sync: false,
    }))
}

fn store(o: Oid, serial: Tid, data: &str) -> TxnOp {
    TxnOp::Store { oid: o, serial, data: rec(data) }
}

fn failed_culprit(o: &BackendOutcome) -> (Culprit, &ZeoError) {
    match o {
        BackendOutcome::Failed(e) => (e.culprit, &e.error),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// The whole scenario against one server.
async fn scenario(mut server: ServerProcess) {
    let mut h = Harness::spawn(&server);
    let info = h.up().await;
    assert_eq!(info.last_tid, Tid::ZERO);
    assert!(info.blobs, "{info:?}");
    assert!(info.supports_undo, "{info:?}");
    assert_eq!(info.info_name, server.address().to_string());

    let BackendOutcome::NewOids(oids) = h.call(BackendRequest::NewOids { n: 3 }).await else {
        panic!("new_oids")
    };
    assert_eq!(oids.len(), 3);

    // Tids chosen by the test, a minute in the past (so that the pack time below is too).
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    let t1 = Tid::from_unix(now.as_secs() - 60, 0).expect("tid");
    let step = |n: u64| Tid::new(t1.get() + n * 1_000_000);
    let (t2, t3, t4, t5) = (step(1), step(2), step(3), step(4));

    let (changed, invalidated) = h
        .commit(
            t1,
            vec![
                store(Oid::ROOT, Tid::ZERO, ROOT),
                store(oid(1), Tid::ZERO, A1),
                store(oid(2), Tid::ZERO, B),
            ],
        )
        .await;
    assert!(changed.is_empty());
    assert_eq!(invalidated, [Oid::ROOT, oid(1), oid(2)]);
    h.commit(t2, vec![store(oid(1), t1, A2)]).await;

    // Loads as of snapshots.
    let r = h.load(oid(1), Tid::MAX, t2).await.expect("current");
    assert_eq!((r.data, r.start, r.end), (rec(A2), t2, None));
    let r = h.load(oid(1), t2, t2).await.expect("before t2");
    assert_eq!((r.data, r.start, r.end), (rec(A1), t1, Some(t2)));
    let r = h.load(oid(1), Tid::MAX, t1).await.expect("as of t1");
    assert_eq!((r.data, r.start, r.end), (rec(A1), t1, None), "t2 is after the snapshot");
    assert_eq!(h.load(oid(1), t1, t2).await, None);
    assert_eq!(
        h.call(BackendRequest::LoadSerial { oid: oid(1), serial: t1 }).await,
        BackendOutcome::Data(rec(A1))
    );
    assert_eq!(h.call(BackendRequest::GetTid { oid: oid(1), snapshot: t2 }).await, BackendOutcome::Tid(t2));
    let BackendOutcome::History(hist) = h.call(BackendRequest::History { oid: oid(1), size: 5 }).await else {
        panic!("history")
    };
    assert_eq!(hist.iter().map(|e| e.tid).collect::<Vec<_>>(), [t2, t1]);
    // Two identical loads in flight at once.
    let a = h.submit(BackendRequest::LoadBefore { oid: oid(2), before: Tid::MAX, snapshot: t2 });
    let b = h.submit(BackendRequest::LoadBefore { oid: oid(2), before: Tid::MAX, snapshot: t2 });
    for id in [a, b] {
        let BackendOutcome::LoadBefore(Some(r)) = h.wait(id).await else { panic!("load b") };
        assert_eq!((r.data, r.start), (rec(B), t1));
    }

    // POSKeyError: the client's fault.
    let missing = h.call(BackendRequest::LoadBefore { oid: oid(77), before: Tid::MAX, snapshot: t2 }).await;
    let (who, err) = failed_culprit(&missing);
    assert_eq!(who, Culprit::Client);
    assert!(matches!(err, ZeoError::PosKey(_)), "{err:?}");

    // Iteration over everything; the first next is sent before its start is answered.
    let (ti, ri) = (BackendIterId(1), BackendIterId(2));
    let start = h.submit(BackendRequest::IterStart { iter: ti, start: None, stop: None });
    let first = h.submit(BackendRequest::IterNext { iter: ti });
    assert_eq!(h.wait(start).await, BackendOutcome::Nil);
    let mut next = h.wait(first).await;
    let mut seen = Vec::new();
    while let BackendOutcome::Txn(Some(header)) = next {
        let opened =
            h.call(BackendRequest::IterRecordStart { iter: ri, txn_iter: ti, tid: header.tid }).await;
        assert_eq!(opened, BackendOutcome::Nil);
        let mut records = Vec::new();
        loop {
            match h.call(BackendRequest::IterRecordNext { iter: ri }).await {
                BackendOutcome::Record(Some(r)) => records.push((r.oid, r.tid, r.data)),
                BackendOutcome::Record(None) => break,
                other => panic!("record: {other:?}"),
            }
        }
        seen.push((header.tid, header.user, records));
        next = h.call(BackendRequest::IterNext { iter: ti }).await;
    }
    assert_eq!(next, BackendOutcome::Txn(None));
    let user = Bytes::from_static(b"remote-test");
    assert_eq!(
        seen,
        [
            (
                t1,
                user.clone(),
                vec![
                    (Oid::ROOT, t1, Some(rec(ROOT))),
                    (oid(1), t1, Some(rec(A1))),
                    (oid(2), t1, Some(rec(B)))
                ]
            ),
            (t2, user.clone(), vec![(oid(1), t2, Some(rec(A2)))]),
        ]
    );

    // A conflict (stale read serial) comes back as a conflict map, and leaves nothing open.
    let conflict = h.call(vote(t3, vec![store(oid(1), t1, A3)])).await;
    assert_eq!(
        conflict,
        BackendOutcome::Conflicts(vec![VoteItem::Conflict {
            oid: oid(1),
            committed: t2,
            read: t1,
            data: rec(A3)
        }])
    );

    // Undo of t2 (found in the undo log): oid 1 is reported as changed.
    let BackendOutcome::UndoLog(log) = h.call(BackendRequest::UndoLog { first: 0, last: -10 }).await else {
        panic!("undoLog")
    };
    assert_eq!(log.len(), 2);
    let (changed, invalidated) = h.commit(t3, vec![TxnOp::Undo { undo_id: log[0].id.clone() }]).await;
    assert_eq!(changed, [oid(1)]);
    assert_eq!(invalidated, [oid(1)]);
    let r = h.load(oid(1), Tid::MAX, t3).await.expect("after undo");
    assert_eq!((r.data, r.start), (rec(A1), t3));

    // One more commit, so that t3 is not the last tid (zeoraid packs to at most its last tid,
    // and the t3 record must lie before the pack time).
    h.commit(t4, vec![store(oid(2), t1, B)]).await;
    // Pack to after t4: the t2 revision of oid 1 goes, the current data stays.
    let pack_time = t4.to_unix_f64() + 1.0;
    let packed = h.call(BackendRequest::Pack { time: pack_time }).await;
    assert!(matches!(packed, BackendOutcome::Packed { size } if size.length == 3), "{packed:?}");
    let gone = h.call(BackendRequest::LoadSerial { oid: oid(1), serial: t2 }).await;
    assert_eq!(failed_culprit(&gone).0, Culprit::Client);
    assert_eq!(h.load(oid(1), Tid::MAX, t3).await.map(|r| r.data), Some(rec(A1)));

    // A 3 MB blob: upload, commit, download.
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let up = UploadId(1);
    assert_eq!(h.call(BackendRequest::BlobUploadStart { upload: up }).await, BackendOutcome::Nil);
    for chunk in blob.chunks(1 << 20) {
        let r = h
            .call(BackendRequest::BlobUploadChunk { upload: up, chunk: Bytes::copy_from_slice(chunk) })
            .await;
        assert_eq!(r, BackendOutcome::Nil);
    }
    h.commit(t5, vec![TxnOp::StoreBlob { oid: oid(3), serial: Tid::ZERO, data: rec(BLOB), upload: up }])
        .await;
    let id = h.submit(BackendRequest::SendBlob { oid: oid(3), serial: t5 });
    let mut parts = h.wait_all(id, STEP).await;
    assert_eq!(parts.pop(), Some(BackendOutcome::Nil));
    let mut got = Vec::new();
    for p in parts {
        let BackendOutcome::BlobChunk(c) = p else { panic!("chunk expected, got {p:?}") };
        got.extend_from_slice(&c);
    }
    assert!(got == blob, "blob of {} bytes came back as {} bytes", blob.len(), got.len());

    // disconnect() (what the RAID does after a call timeout) drops the connection with the
    // request in flight, and the backend reconnects after the first backoff (0.2 s).
    let in_flight = h.submit(BackendRequest::LoadSerial { oid: oid(1), serial: t1 });
    h.backend.disconnect();
    let out = h.wait_all(in_flight, Duration::from_secs(1)).await;
    // Dropped in flight (culprit Backend), unless the server's answer (here a POSKeyError: the
    // pack removed that revision) was already read before the drop: both are right, and the
    // request is answered exactly once either way.
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(
        matches!(&out[0], BackendOutcome::Failed(e) if e.culprit == Culprit::Backend
            || matches!(e.error, ZeoError::PosKey(_))),
        "{out:?}"
    );
    let down = h.event(Duration::from_secs(1)).await;
    assert!(matches!(&down, BackendEvent::Down { reason } if reason.contains("call timeout")), "{down:?}");
    assert_eq!(h.up().await.last_tid, t5);

    // kill -9: Down and failures within a second; then the restart brings it Up again.
    let in_flight = h.submit(BackendRequest::History { oid: oid(1), size: 1 });
    server.kill().expect("kill -9");
    let down = h.event(Duration::from_secs(1)).await;
    assert!(matches!(down, BackendEvent::Down { .. }), "{down:?}");
    let first = h.wait_all(in_flight, Duration::from_secs(1)).await;
    assert!(matches!(first[..], [BackendOutcome::History(_)] | [BackendOutcome::Failed(_)]), "{first:?}");
    let id = h.submit(BackendRequest::LoadSerial { oid: oid(1), serial: t1 });
    let out = h.wait_all(id, Duration::from_secs(1)).await;
    assert_eq!(failed_culprit(&out[0]).0, Culprit::Backend);
    server.restart().expect("restart");
    let info = h.up().await;
    assert_eq!(info.last_tid, t5);
    assert_eq!(h.load(oid(1), Tid::MAX, t5).await.map(|r| r.data), Some(rec(A1)));
    h.backend.close().await;
}

fn start(kind: ServerKind, encoding: Encoding) -> ServerProcess {
    ServerProcess::start(kind, ServerOpts::new(encoding)).unwrap_or_else(|e| panic!("{e}"))
}

fn zeoraid() -> ServerKind {
    ServerKind::Zeoraid { binary: zeoraid_binary().to_path_buf() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runzeo_pickle() {
    scenario(start(ServerKind::Runzeo, Encoding::Pickle)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runzeo_msgpack() {
    scenario(start(ServerKind::Runzeo, Encoding::Msgpack)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeoraid_pickle() {
    scenario(start(zeoraid(), Encoding::Pickle)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeoraid_msgpack() {
    scenario(start(zeoraid(), Encoding::Msgpack)).await;
}
