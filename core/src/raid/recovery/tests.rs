//! Recovery scenarios over in-memory backends.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::ids::{BackendId, Oid, Tid};
use crate::wire::reply::{DataRecord, TxnHeader};
use crate::wire::types::{Extension, TxnStatus};
use crate::zeo::backend::{
    BackendEvent, BackendIterId, BackendOutcome, BackendRequest, TxnOp, UploadId, VoteRequest,
};
use crate::zeo::mem_backend::MemBackend;

use crate::raid::harness::{info, Fault, Harness};
use crate::raid::{AdminError, RateLimit, RecoveryPhase};

/// Every transaction of a backend with its records, and its blobs.
fn history(b: &mut MemBackend) -> (Vec<(TxnHeader, Vec<DataRecord>)>, Vec<Bytes>) {
    let it = BackendIterId(900_000);
    b.handle(BackendRequest::IterStart { iter: it, start: None, stop: None });
    let mut out = Vec::new();
    let mut blobs = Vec::new();
    while let Some(BackendOutcome::Txn(Some(h))) = b.handle(BackendRequest::IterNext { iter: it }).pop() {
        let ri = BackendIterId(900_001);
        b.handle(BackendRequest::IterRecordStart { iter: ri, txn_iter: it, tid: h.tid });
        let mut recs = Vec::new();
        while let Some(BackendOutcome::Record(Some(r))) =
            b.handle(BackendRequest::IterRecordNext { iter: ri }).pop()
        {
            let got = b.handle(BackendRequest::SendBlob { oid: r.oid, serial: r.tid });
            if matches!(got.last(), Some(BackendOutcome::Nil)) {
                let mut blob = Vec::new();
                for o in got {
                    if let BackendOutcome::BlobChunk(c) = o {
                        blob.extend_from_slice(&c);
                    }
                }
                blobs.push(Bytes::from(blob));
            }
            recs.push(r);
        }
        out.push((h, recs));
    }
    (out, blobs)
}

/// A transaction `tid` of `ops` with the given metadata.
fn vote_request(tid: Tid, user: Bytes, description: Bytes, ops: Vec<TxnOp>) -> VoteRequest {
    VoteRequest {
        tid,
        status: TxnStatus::NORMAL,
        user,
        description,
        extension: Extension::default(),
        ops,
        deferred_sync: false,
    }
}

fn assert_mirrors(h: &mut Harness) {
    let first = history(&mut h.backends[0]);
    for i in 1..h.backends.len() {
        if h.state_word(i as u32) != "optimal" {
            continue;
        }
        let other = history(&mut h.backends[i]);
        assert_eq!(first.0.len(), other.0.len(), "transaction count of backend {i}");
        assert_eq!(first, other, "history of backend {i}");
    }
}

/// A writer of small transactions over a few objects (serials tracked).
#[derive(Default)]
struct Load {
    serials: BTreeMap<u64, Tid>,
    n: u64,
}

impl Load {
    /// Commits one transaction through the RAID; panics on any error.
    fn commit(&mut self, h: &mut Harness) -> Tid {
        self.n += 1;
        let oid = 1 + self.n % 7;
        let serial = self.serials.get(&oid).copied().unwrap_or(Tid::ZERO);
        let tid = h.next_tid();
        let vote = BackendRequest::Vote(Box::new(vote_request(
            tid,
            Bytes::from(format!("user{}", self.n)),
            Bytes::from_static(b"load"),
            vec![TxnOp::Store {
                oid: Oid::new(oid),
                serial,
                data: Bytes::from(format!("data {} {}", oid, self.n)),
            }],
        )));
        let v = h.one(vote);
        assert!(matches!(v, BackendOutcome::Voted { .. }), "vote: {v:?}");
        let f = h.one(BackendRequest::Finish { tid });
        assert!(matches!(f, BackendOutcome::Finished { .. }), "finish: {f:?}");
        self.serials.insert(oid, tid);
        tid
    }
}

/// A transaction with a blob (upload, then a blob store).
fn commit_blob(h: &mut Harness, oid: u64, serial: Tid, upload: u64, content: &'static [u8]) -> Tid {
    let upload = UploadId(upload);
    assert_eq!(h.one(BackendRequest::BlobUploadStart { upload }), BackendOutcome::Nil);
    let chunk = Bytes::from_static(content);
    assert_eq!(h.one(BackendRequest::BlobUploadChunk { upload, chunk }), BackendOutcome::Nil);
    let tid = h.next_tid();
    let vote = BackendRequest::Vote(Box::new(vote_request(
        tid,
        Bytes::new(),
        Bytes::from_static(b"blob"),
        vec![TxnOp::StoreBlob {
            oid: Oid::new(oid),
            serial,
            data: Bytes::from_static(b"cZODB.blob\nBlob\nq\x01."),
            upload,
        }],
    )));
    assert!(matches!(h.one(vote), BackendOutcome::Voted { .. }));
    assert!(matches!(h.one(BackendRequest::Finish { tid }), BackendOutcome::Finished { .. }));
    tid
}

fn vote_count(h: &Harness, b: u32) -> usize {
    h.received.iter().filter(|(x, r)| x.0 == b && matches!(r, BackendRequest::Vote(_))).count()
}

#[test]
fn a_degraded_backend_gets_what_it_missed_and_becomes_optimal() {
    let mut h = Harness::new(2);
    let mut load = Load::default();
    for _ in 0..20 {
        load.commit(&mut h);
    }
    h.raid.disable(h.now, "b1").expect("disable");
    for _ in 0..30 {
        load.commit(&mut h);
    }
    let votes_before = vote_count(&h, 1);
    h.raid.recover(h.now, "b1", None).expect("recover");
    h.run();
    assert_eq!(h.state_word(1), "optimal", "{:?}", h.raid.last_recovery());
    let end = h.raid.last_recovery().expect("an end").clone();
    assert_eq!(end.failure, None);
    // Verified the 20 it had, copied only the 30 it missed.
    assert_eq!(end.txns_copied, 30);
    assert_eq!(vote_count(&h, 1) - votes_before, 30);
    assert_mirrors(&mut h);
    // It takes part in commits again.
    load.commit(&mut h);
    assert_mirrors(&mut h);
    assert!(h.raid.recovery().is_none());
    assert_eq!(h.saved.last().and_then(|s| s.recovery.clone()), None);
}

#[test]
fn blobs_and_metadata_are_copied_with_their_tids() {
    let mut h = Harness::new(2);
    h.raid.disable(h.now, "b1").expect("disable");
    let t1 = commit_blob(&mut h, 3, Tid::ZERO, 1, b"first blob content");
    commit_blob(&mut h, 3, t1, 2, b"second");
    let mut load = Load::default();
    load.commit(&mut h);
    h.raid.recover(h.now, "b1", None).expect("recover");
    h.run();
    assert_eq!(h.state_word(1), "optimal");
    let (hist, blobs) = history(&mut h.backends[1]);
    assert_eq!(hist.len(), 3);
    assert_eq!(blobs, vec![Bytes::from_static(b"first blob content"), Bytes::from_static(b"second")]);
    assert_mirrors(&mut h);
    // No upload left open on either backend.
    assert_eq!(h.backends[1].open_handles(), (0, 0));
}

#[test]
fn a_diverged_local_target_is_rebuilt_from_scratch() {
    let mut h = Harness::new(2);
    let mut load = Load::default();
    for _ in 0..5 {
        load.commit(&mut h);
    }
    h.raid.disable(h.now, "b1").expect("disable");
    // b1 gets a transaction of its own: it diverges.
    let tid = h.next_tid();
    let own = vote_request(
        tid,
        Bytes::new(),
        Bytes::from_static(b"not from the RAID"),
        vec![TxnOp::Store { oid: Oid::new(50), serial: Tid::ZERO, data: Bytes::from_static(b"x") }],
    );
    h.backends[1].handle(BackendRequest::Vote(Box::new(own)));
    h.backends[1].handle(BackendRequest::Finish { tid });
    for _ in 0..5 {
        load.commit(&mut h);
    }
    h.raid.recover(h.now, "b1", None).expect("recover");
    h.run();
    assert!(h.received.iter().any(|(b, r)| b.0 == 1 && *r == BackendRequest::RebuildBegin));
    assert_eq!(h.state_word(1), "optimal", "{:?}", h.raid.last_recovery());
    assert_eq!(h.raid.last_recovery().map(|e| e.txns_copied), Some(10));
    assert_mirrors(&mut h);
}

#[test]
fn a_diverged_remote_target_stops_the_recovery_naming_the_transaction() {
    let mut h = Harness::new(2);
    let mut load = Load::default();
    load.commit(&mut h);
    h.raid.disable(h.now, "b1").expect("disable");
    let tid = h.next_tid();
    let own = vote_request(
        tid,
        Bytes::new(),
        Bytes::new(),
        vec![TxnOp::Store { oid: Oid::new(50), serial: Tid::ZERO, data: Bytes::from_static(b"x") }],
    );
    h.backends[1].handle(BackendRequest::Vote(Box::new(own)));
    h.backends[1].handle(BackendRequest::Finish { tid });
    load.commit(&mut h); // the RAID's next transaction differs from b1's
    let mut remote = info(&h.backends[1]);
    remote.rebuildable = false;
    h.raid.handle_event(h.now, BackendId(1), BackendEvent::Up(remote));
    h.raid.recover(h.now, "b1", None).expect("recover");
    h.run();
    let end = h.raid.last_recovery().expect("ended").clone();
    let why = end.failure.expect("failed");
    assert!(why.contains(&tid.to_string()) || why.contains("diverges"), "{why}");
    assert!(why.contains("cannot be truncated"), "{why}");
    assert_eq!(h.state_word(1), "degraded");
    assert!(!h.received.iter().any(|(b, r)| b.0 == 1 && *r == BackendRequest::RebuildBegin));
}

#[test]
fn one_recovery_at_a_time_and_never_with_a_pack() {
    let mut h = Harness::new(3);
    let mut load = Load::default();
    load.commit(&mut h);
    h.raid.disable(h.now, "b1").expect("disable");
    h.raid.disable(h.now, "b2").expect("disable");
    for _ in 0..50 {
        load.commit(&mut h);
    }
    // Slow recovery: 10 transactions a second.
    let slow = RateLimit { bytes_per_sec: None, txns_per_sec: Some(10) };
    h.raid.recover(h.now, "b1", Some(slow)).expect("recover");
    h.run();
    assert_eq!(h.state_word(1), "recovering");
    assert_eq!(h.raid.recover(h.now, "b2", None), Err(AdminError::RecoveryRunning("b1".into())));
    let packed = h.one(BackendRequest::Pack { time: 1.0 });
    match packed {
        BackendOutcome::Failed(e) => assert!(format!("{:?}", e.error).contains("recovery"), "{e:?}"),
        other => panic!("pack during a recovery: {other:?}"),
    }
    assert!(!h.received.iter().any(|(_, r)| matches!(r, BackendRequest::Pack { .. })));
    let p = h.raid.recovery().expect("progress");
    assert_eq!(p.target, "b1");
    assert_eq!(p.source, "b0");
    assert_ne!(p.phase, RecoveryPhase::Switching);
    // It finishes, and then the other one can start.
    for _ in 0..100 {
        h.advance(Duration::from_millis(100));
    }
    assert_eq!(h.state_word(1), "optimal");
    h.raid.recover(h.now, "b2", None).expect("second recovery");
    h.run();
    assert_eq!(h.state_word(2), "optimal");
    assert_mirrors(&mut h);
}

#[test]
fn a_recovery_is_refused_while_a_pack_runs() {
    let mut h = Harness::new(2);
    let mut load = Load::default();
    load.commit(&mut h);
    h.raid.disable(h.now, "b1").expect("disable");
    h.fault(0, "pack", Fault::Hang);
    let _pack = h.send(BackendRequest::Pack { time: 1.0 });
    assert_eq!(h.raid.recover(h.now, "b1", None), Err(AdminError::PackRunning));
}

#[test]
fn the_rate_limit_paces_the_copy_and_live_commits_never_stop_it_converging() {
    let mut h = Harness::new(2);
    let mut load = Load::default();
    h.raid.disable(h.now, "b1").expect("disable");
    for _ in 0..100 {
        load.commit(&mut h);
    }
    let limit = RateLimit { bytes_per_sec: None, txns_per_sec: Some(20) };
    h.raid.recover(h.now, "b1", Some(limit)).expect("recover");
    h.run();
    let start = h.now.mono;
    // Live commits at 20 per second, as fast as the limit: the effective rate rises above it.
    let mut steps = 0;
    while h.state_word(1) == "recovering" {
        load.commit(&mut h);
        h.advance(Duration::from_millis(50));
        steps += 1;
        assert!(steps < 2_000, "the recovery does not converge: {:?}", h.raid.recovery());
    }
    assert_eq!(h.state_word(1), "optimal", "{:?}", h.raid.last_recovery());
    let secs = (h.now.mono - start).as_secs_f64();
    let copied = h.raid.last_recovery().map_or(0, |e| e.txns_copied) as f64;
    // Paced: not faster than twice the live rate (40/s) plus the read-ahead burst.
    assert!(copied / secs <= 45.0, "{copied} txns in {secs:.1}s");
    assert_mirrors(&mut h);
}

#[test]
fn without_live_commits_the_copy_keeps_to_the_limit() {
    let mut h = Harness::new(2);
    let mut load = Load::default();
    h.raid.disable(h.now, "b1").expect("disable");
    for _ in 0..200 {
        load.commit(&mut h);
    }
    let limit = RateLimit { bytes_per_sec: None, txns_per_sec: Some(50) };
    h.raid.recover(h.now, "b1", Some(limit)).expect("recover");
    h.run();
    for _ in 0..20 {
        h.advance(Duration::from_millis(100));
    }
    // Two seconds at 50/s: about 100 copied (plus the first, unpaced one).
    let p = h.raid.recovery().expect("still running");
    assert!((95..=110).contains(&p.txns_copied), "{p:?}");
    assert!(p.txns_left.is_some_and(|l| (80..=120).contains(&l)), "{p:?}");
    for _ in 0..30 {
        h.advance(Duration::from_millis(100));
    }
    assert_eq!(h.state_word(1), "optimal");
}

#[test]
fn a_target_failing_mid_copy_is_degraded_and_a_later_recovery_succeeds() {
    for at in ["vote", "finish", "iterator_next_whole", "blob upload start"] {
        let mut h = Harness::new(2);
        let mut load = Load::default();
        h.raid.disable(h.now, "b1").expect("disable");
        commit_blob(&mut h, 9, Tid::ZERO, 1, b"blob");
        for _ in 0..10 {
            load.commit(&mut h);
        }
        h.fault(1, at, Fault::Fail);
        h.raid.recover(h.now, "b1", None).expect("recover");
        h.run();
        assert_eq!(h.state_word(1), "degraded", "fault at {at}");
        assert!(h.reason(1).contains("recovery failed"), "{at}: {}", h.reason(1));
        assert!(h.raid.recovery().is_none());
        assert!(h.raid.last_recovery().is_some_and(|e| e.failure.is_some()));
        // Commits went on.
        load.commit(&mut h);
        h.raid.recover(h.now, "b1", None).expect("again");
        h.run();
        assert_eq!(h.state_word(1), "optimal", "after a fault at {at}: {:?}", h.raid.last_recovery());
        assert_mirrors(&mut h);
    }
}

#[test]
fn a_target_that_hangs_is_degraded_after_its_deadline() {
    let mut h = Harness::new(2);
    let mut load = Load::default();
    h.raid.disable(h.now, "b1").expect("disable");
    for _ in 0..5 {
        load.commit(&mut h);
    }
    h.fault(1, "vote", Fault::Hang);
    h.raid.recover(h.now, "b1", None).expect("recover");
    h.run();
    assert_eq!(h.state_word(1), "recovering");
    h.advance(Duration::from_secs(4));
    assert_eq!(h.state_word(1), "degraded");
    assert!(h.disconnects.contains(&BackendId(1)));
}

#[test]
fn the_recovery_moves_to_another_source_when_its_source_fails() {
    for at in ["iterator_start", "iterator_next_whole", "sendBlob"] {
        let mut h = Harness::new(3);
        let mut load = Load::default();
        h.raid.disable(h.now, "b2").expect("disable");
        commit_blob(&mut h, 9, Tid::ZERO, 1, b"blob");
        for _ in 0..10 {
            load.commit(&mut h);
        }
        h.fault(0, at, Fault::Fail);
        h.raid.recover(h.now, "b2", None).expect("recover");
        h.run();
        assert_eq!(h.state_word(0), "degraded", "{at}");
        assert_eq!(h.state_word(2), "optimal", "{at}: {:?}", h.raid.last_recovery());
        let a = history(&mut h.backends[1]);
        let b = history(&mut h.backends[2]);
        assert_eq!(a, b, "{at}");
    }
}

#[test]
fn the_recovery_stops_when_no_source_is_left() {
    let mut h = Harness::new(2);
    let mut load = Load::default();
    h.raid.disable(h.now, "b1").expect("disable");
    for _ in 0..5 {
        load.commit(&mut h);
    }
    h.fault(0, "iterator_next_whole", Fault::Down);
    h.raid.recover(h.now, "b1", None).expect("recover");
    h.run();
    assert!(h.raid.recovery().is_none());
    assert_eq!(h.state_word(1), "degraded");
    assert!(h.raid.last_recovery().and_then(|e| e.failure.clone()).is_some_and(|f| f.contains("source")));
}

#[test]
fn a_restart_mid_recovery_resumes_it_from_the_saved_progress() {
    let mut h = Harness::new(2);
    let mut load = Load::default();
    h.raid.disable(h.now, "b1").expect("disable");
    for _ in 0..300 {
        load.commit(&mut h);
    }
    let limit = RateLimit { bytes_per_sec: None, txns_per_sec: Some(50) };
    h.raid.recover(h.now, "b1", Some(limit)).expect("recover");
    h.run();
    for _ in 0..50 {
        h.advance(Duration::from_millis(100));
    }
    let saved = h.saved.last().cloned().expect("saved");
    let rec = saved.recovery.clone().expect("the recovery is persisted");
    assert_eq!(rec.target, "b1");
    assert!(rec.done_tid > Tid::ZERO, "progress persisted: {rec:?}");
    // "Restart": a new RAID over the same backends from the saved state.
    let backends = h.backends.clone();
    let votes_before = vote_count(&h, 1);
    let mut h2 = Harness::with(backends, Some(saved));
    assert_eq!(h2.state_word(1), "recovering");
    let p = h2.raid.recovery().expect("resumed");
    assert_eq!(p.phase, RecoveryPhase::Verifying);
    for _ in 0..100 {
        h2.advance(Duration::from_millis(100));
    }
    assert_eq!(h2.state_word(1), "optimal", "{:?}", h2.raid.last_recovery());
    // It did not copy everything again.
    let copied_after = h2.raid.last_recovery().map_or(0, |e| e.txns_copied) as usize;
    assert!(copied_after + votes_before >= 300 && copied_after < 300, "{copied_after}");
    assert_mirrors(&mut h2);
}

#[test]
fn a_restart_with_the_target_unreachable_ends_the_recovery() {
    let mut h = Harness::new(2);
    let mut load = Load::default();
    h.raid.disable(h.now, "b1").expect("disable");
    for _ in 0..100 {
        load.commit(&mut h);
    }
    let limit = RateLimit { bytes_per_sec: None, txns_per_sec: Some(10) };
    h.raid.recover(h.now, "b1", Some(limit)).expect("recover");
    h.run();
    let saved = h.saved.last().cloned().expect("saved");
    let specs = crate::raid::harness::specs(2);
    let infos = vec![Some(info(&h.backends[0])), None];
    let raid = crate::raid::Raid::new(h.cfg.clone(), specs, Some(saved), infos, h.now);
    assert!(raid.recovery().is_none());
    assert_eq!(raid.details()[1].state.word(), "degraded");
    assert!(raid.check().is_ok(), "{:?}", raid.check());
}

#[test]
fn client_blob_uploads_during_a_recovery_reach_the_target_and_a_vote_after_the_switch_finds_them() {
    let mut h = Harness::new(2);
    let mut load = Load::default();
    h.raid.disable(h.now, "b1").expect("disable");
    for _ in 0..20 {
        load.commit(&mut h);
    }
    let limit = RateLimit { bytes_per_sec: None, txns_per_sec: Some(100) };
    h.raid.recover(h.now, "b1", Some(limit)).expect("recover");
    h.run();
    // A client uploads while the recovery runs, and votes only after the switch.
    let upload = UploadId(77);
    h.one(BackendRequest::BlobUploadStart { upload });
    h.one(BackendRequest::BlobUploadChunk { upload, chunk: Bytes::from_static(b"late blob") });
    for _ in 0..10 {
        h.advance(Duration::from_millis(100));
    }
    assert_eq!(h.state_word(1), "optimal");
    let tid = h.next_tid();
    let vote = BackendRequest::Vote(Box::new(vote_request(
        tid,
        Bytes::new(),
        Bytes::new(),
        vec![TxnOp::StoreBlob {
            oid: Oid::new(40),
            serial: Tid::ZERO,
            data: Bytes::from_static(b"cZODB.blob\nBlob\nq\x01."),
            upload,
        }],
    )));
    assert!(matches!(h.one(vote), BackendOutcome::Voted { .. }));
    assert!(matches!(h.one(BackendRequest::Finish { tid }), BackendOutcome::Finished { .. }));
    assert_eq!(h.state_word(1), "optimal");
    assert_mirrors(&mut h);
}

/// Regression (found by tests/tests/recovery.rs against stock ZEO): a source reader that reached
/// the end while a live transaction was between vote and finish re-opened at its first start,
/// copying transactions twice.
#[test]
fn a_reader_that_waits_for_a_live_commit_reopens_after_what_it_read() {
    let mut h = Harness::new(2);
    let mut load = Load::default();
    h.raid.disable(h.now, "b1").expect("disable");
    for _ in 0..10 {
        load.commit(&mut h);
    }
    // A live transaction is voted (not finished) when the copy reaches the end.
    let tid = h.next_tid();
    let vote = BackendRequest::Vote(Box::new(vote_request(
        tid,
        Bytes::new(),
        Bytes::from_static(b"live"),
        vec![TxnOp::Store { oid: Oid::new(60), serial: Tid::ZERO, data: Bytes::from_static(b"live") }],
    )));
    assert!(matches!(h.one(vote), BackendOutcome::Voted { .. }));
    h.raid.recover(h.now, "b1", None).expect("recover");
    h.run();
    assert_eq!(h.state_word(1), "recovering", "no switch while a transaction is voted");
    assert_eq!(h.raid.recovery().map(|p| p.txns_copied), Some(10));
    assert!(matches!(h.one(BackendRequest::Finish { tid }), BackendOutcome::Finished { .. }));
    for _ in 0..5 {
        h.advance(Duration::from_millis(100));
    }
    assert_eq!(h.state_word(1), "optimal", "{:?}", h.raid.last_recovery());
    assert_eq!(h.raid.last_recovery().map(|e| e.txns_copied), Some(11));
    assert_mirrors(&mut h);
}

/// Regression (found by a fresh-clone CI run against stock ZEO): when verification ended, the
/// source reader was discarded and its iterator dropped (`iterator_gc`) while a read on it was
/// still in flight; the stock server then failed that read ("seek of closed file"), and the
/// backend fault degraded the source. A reader's iterator is now dropped only once no request
/// on it is in flight.
#[test]
fn an_iterator_is_never_dropped_while_a_read_on_it_is_in_flight() {
    let mut h = Harness::new(2);
    let mut load = Load::default();
    h.raid.disable(h.now, "b1").expect("disable");
    for _ in 0..5 {
        load.commit(&mut h);
    }
    h.queued = true;
    h.raid.recover(h.now, "b1", None).expect("recover");
    h.run();
    h.deliver_next(0); // the source's iterator_start: its first read goes out
    assert!(h.queues[0].iter().any(|(_, r)| matches!(r, BackendRequest::IterNextWhole { .. })));
    while h.state_word(1) == "recovering"
        && !h.queues[1].is_empty()
        && h.raid.recovery().is_some_and(|p| p.phase == RecoveryPhase::Verifying)
    {
        h.deliver_next(1); // the empty target's iterator ends: verification is over
    }
    assert_ne!(h.raid.recovery().map(|p| p.phase), Some(RecoveryPhase::Verifying));
    // The old reader's read is still queued on b0, and nothing drops its iterator before it.
    let mut in_flight = std::collections::BTreeSet::new();
    for (_, r) in &h.queues[0] {
        match r {
            BackendRequest::IterNextWhole { iter } => {
                in_flight.insert(*iter);
            }
            BackendRequest::IterDrop { iters } => {
                assert!(iters.iter().all(|i| !in_flight.contains(i)), "dropped while read: {iters:?}");
            }
            _ => {}
        }
    }
    for _ in 0..1000 {
        let Some(b) = (0..2).find(|&b| !h.queues[b].is_empty()) else { break };
        h.deliver_next(b);
    }
    assert_eq!(h.state_word(1), "optimal", "{:?}", h.raid.last_recovery());
    assert_eq!(h.backends[0].open_handles().0, 0, "no iterator left open on the source");
    h.queued = false;
    assert_mirrors(&mut h);
}
