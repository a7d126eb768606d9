//! Backend failures as the front sees them.

use bytes::Bytes;

use crate::ids::{Oid, Tid};
use crate::wire::error::ZeoError;
use crate::wire::request::Request;
use crate::wire::value::{Text, Value};
use crate::wire::Encoding;
use crate::zeo::backend::{BackendError, BackendOutcome, BackendRequest, Culprit};

use super::harness::{begin, config, store, txn, Harness};

fn failed(msg: &'static str) -> BackendOutcome {
    BackendOutcome::Failed(BackendError {
        error: ZeoError::Exception(Text::from_static(msg)),
        culprit: Culprit::Backend,
    })
}

#[test]
fn a_failed_blob_upload_closes_the_connection() {
    let mut h = Harness::new(config());
    h.client(1, Encoding::Pickle);
    h.auto = false;
    h.cast(1, Request::StoreBlobStart);
    h.cast(1, Request::StoreBlobChunk { chunk: Bytes::from_static(b"x") });
    h.answer_where(|r| matches!(r, BackendRequest::BlobUploadStart { .. }), failed("disk full"));
    assert!(h.closed(1));
    h.deliver_all();
    assert_eq!(h.backends[0].open_handles(), (0, 0), "the upload is dropped");
}

#[test]
fn a_failed_finish_answers_an_error_and_releases_the_lock() {
    let mut h = Harness::new(config());
    h.client(1, Encoding::Msgpack);
    h.client(2, Encoding::Msgpack);
    h.auto = false;
    for c in [1u64, 2] {
        h.cast(c, begin(c as i64));
        h.cast(c, store(Oid::new(c), Tid::ZERO, b"x", c as i64));
        h.call(c, 5, Request::Vote { txn: txn(c as i64) });
    }
    h.deliver_where(|r| matches!(r, BackendRequest::Vote(_)));
    h.call(1, 6, Request::TpcFinish { txn: txn(1) });
    h.answer_where(|r| matches!(r, BackendRequest::Finish { .. }), failed("fsync failed"));
    let got = h.take(1);
    assert_eq!(Harness::result_of(&got, 6), Err(ZeoError::Exception(Text::from_static("fsync failed"))));
    assert!(super::harness::invalidations(&h.take(2)).is_empty());
    // The next voter runs; the failed commit's transaction is gone (abort is a no-op).
    assert!(h.inflight.iter().any(|(_, _, r)| matches!(r, BackendRequest::Vote(_))));
    h.call(1, 7, Request::TpcAbort { txn: txn(1) });
    assert_eq!(Harness::result_of(&h.take(1), 7), Ok(Value::None));
}

/// A failed `Finish` is in doubt (a RAID leg may have committed it before its backend went
/// away): its tid is never chosen again, also when the clock has not moved past it (simulation
/// seed 12: the RAID's clock stepped back, the next transaction reused the tid of a failed
/// finish that one backend had committed, and that backend's history diverged at that tid).
#[test]
fn the_tid_of_a_failed_finish_is_never_reused() {
    let vote_tid = |h: &Harness| {
        h.inflight.iter().find_map(|(_, _, r)| match r {
            BackendRequest::Vote(v) => Some(v.tid),
            _ => None,
        })
    };
    let mut h = Harness::new(config());
    h.client(1, Encoding::Msgpack);
    h.client(2, Encoding::Msgpack);
    h.auto = false;
    for c in [1u64, 2] {
        h.cast(c, begin(c as i64));
        h.cast(c, store(Oid::new(c), Tid::ZERO, b"x", c as i64));
        h.call(c, 5, Request::Vote { txn: txn(c as i64) });
    }
    let first = vote_tid(&h).expect("the first vote");
    h.deliver_where(|r| matches!(r, BackendRequest::Vote(_)));
    h.call(1, 6, Request::TpcFinish { txn: txn(1) });
    h.answer_where(|r| matches!(r, BackendRequest::Finish { .. }), failed("connection lost"));
    assert!(Harness::result_of(&h.take(1), 6).is_err());
    // The clock has not moved: without the floor, `max(now, last + 1)` is `first` again.
    let second = vote_tid(&h).expect("the next voter runs");
    assert!(second > first, "the next transaction got {second}, the failed finish had {first}");
}

#[test]
fn a_failed_read_is_the_error_reply_in_its_slot() {
    let mut h = Harness::new(config());
    h.client(1, Encoding::Pickle);
    h.call(1, 2, Request::LoadBefore { oid: Oid::new(7), before: Tid::MAX });
    h.call(1, 3, Request::History { oid: Oid::new(7), size: 0 });
    let got = h.take(1);
    assert!(matches!(Harness::result_of(&got, 2), Err(ZeoError::PosKey(_))));
    assert!(matches!(Harness::result_of(&got, 3), Err(ZeoError::PosKey(_))));
}

#[test]
fn a_timeout_with_the_vote_in_flight_aborts_when_the_vote_arrives() {
    let mut cfg = config();
    cfg.transaction_timeout = Some(std::time::Duration::from_secs(5));
    let mut h = Harness::new(cfg);
    h.client(1, Encoding::Pickle);
    h.client(2, Encoding::Pickle);
    h.auto = false;
    for c in [1u64, 2] {
        h.cast(c, begin(c as i64));
        h.cast(c, store(Oid::new(c), Tid::ZERO, b"x", c as i64));
        h.call(c, 5, Request::Vote { txn: txn(c as i64) });
    }
    h.tick(6);
    h.srv.handle_timeout(h.now);
    h.drain();
    assert!(h.closed(1));
    assert!(!h.srv.is_shut_down());
    // The first vote lands for a dead connection: aborted, then the second voter runs.
    h.deliver_where(|r| matches!(r, BackendRequest::Vote(_)));
    h.auto = true;
    h.deliver_all();
    assert!(
        matches!(h.take(2).as_slice(), [m] if matches!(m, crate::wire::message::ServerMessage::Reply { .. }))
    );
    h.call(2, 6, Request::TpcFinish { txn: txn(2) });
    assert!(Harness::result_of(&h.take(2), 6).is_ok());
    assert_eq!(h.srv.status(crate::zeo::events::StorageIdx(0)).map(|s| s.commits), Some(1));
}

/// A ZEO client commits through the front to a RAID of two in-memory backends whose second one
/// fails at each commit step: the client sees no error, the other client gets the invalidation,
/// and the surviving mirror holds the data.
#[test]
fn through_a_raid_a_backend_failing_mid_commit_is_invisible_to_clients() {
    for at in ["vote", "finish"] {
        for fault in [crate::raid::harness::Fault::Fail, crate::raid::harness::Fault::Down] {
            let mut h = Harness::new(config());
            h.backends[0] = super::harness::TestBackend::raid(2);
            h.client(1, Encoding::Pickle);
            h.client(2, Encoding::Msgpack);
            if let super::harness::TestBackend::Raid(r) = &mut h.backends[0] {
                r.fault(1, at, fault);
            }
            h.cast(1, begin(1));
            h.cast(1, store(Oid::new(1), Tid::ZERO, b"data", 1));
            h.call(1, 3, Request::Vote { txn: txn(1) });
            h.call(1, 4, Request::TpcFinish { txn: txn(1) });
            let got = h.take(1);
            assert!(
                Harness::result_of(&got, 3).is_ok(),
                "{at} {fault:?}: vote {:?}",
                Harness::result_of(&got, 3)
            );
            let tid = Harness::result_of(&got, 4).expect("finish");
            let tid = Tid::from_slice(tid.as_bytes().expect("tid bytes")).expect("tid");
            let pushed = h.take(2);
            assert!(
                pushed.iter().any(|m| matches!(m, crate::wire::message::ServerMessage::Push(crate::wire::push::Push::InvalidateTransaction { tid: t, .. }) if *t == tid)),
                "{at} {fault:?}: no invalidation"
            );
            let super::harness::TestBackend::Raid(r) = &mut h.backends[0] else { unreachable!() };
            assert_eq!(r.state_word(1), "degraded", "{at} {fault:?}");
            assert_eq!(r.load(0, 1).as_deref(), Some(&b"data"[..]));
            assert_eq!(r.backends[0].last_tid(), tid);
        }
    }
}
