//! Scenario tests of the server state machine, with real frames in both encodings: the
//! handshake and calls, iterators, blobs, pack, loads, shutdown, oids and tid floors (the
//! two-phase commit's scenarios are in `commit_tests.rs`).

use std::time::Duration;

use bytes::Bytes;

use crate::ids::{Oid, Tid};
use crate::wire::error::ZeoError;
use crate::wire::message::{ClientMessage, MsgId, ServerMessage};
use crate::wire::push::Push;
use crate::wire::request::Request;
use crate::wire::types::IterId;
use crate::wire::value::{Text, Value};
use crate::wire::Encoding;

use super::harness::{begin, config, is_finish, is_vote, o, store, txn, Harness, ENCS};

#[test]
fn handshake_in_both_letters_then_register_and_get_info() {
    for enc in ENCS {
        let mut h = Harness::new(config());
        h.connect(1, enc);
        assert_eq!(h.clients[&1].raw, vec![Bytes::from_static(b"Z5")], "announcement");
        h.call(1, 7, Request::Register { storage: Text::from_static("1"), read_only: false });
        h.call(1, 8, Request::GetInfo);
        h.call(1, 9, Request::LastTransaction);
        let got = h.take(1);
        assert_eq!(Harness::result_of(&got, 7), Ok(Value::bytes(Bytes::from_static(&[0; 8]))));
        let info = Harness::result_of(&got, 8).expect("info");
        assert_eq!(info.get("name").and_then(|v| v.as_str()), Some("/data/1/Data.fs"));
        assert_eq!(info.get("supportsUndo"), Some(&Value::Bool(true)));
        let ifaces = format!("{:?}", info.get("interfaces"));
        for i in
            ["IStorageRestoreable", "IBlobStorage", "IBlobStorageRestoreable", "IExternalGC", "Interface"]
        {
            assert!(ifaces.contains(i), "{i} in {ifaces}");
        }
        assert!(Harness::result_of(&got, 9).is_ok());
        assert!(!h.closed(1));
    }
}

#[test]
fn ruok_answers_json_for_every_storage_then_closes() {
    let mut h = Harness::new(config());
    h.connect_raw(1);
    h.send_frame(1, b"ruok");
    let c = &h.clients[&1];
    assert_eq!(c.raw.len(), 2);
    let parsed = crate::wire::handshake::parse_ruok_json(&c.raw[1], &Default::default()).expect("json");
    let names: Vec<&str> = parsed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["1", "ro"]);
    assert_eq!(parsed[0].1.get("timeout-thread-is-alive").and_then(|v| v.as_str()), Some("stub"));
    assert!(h.closed(1));
}

#[test]
fn a_bad_letter_or_an_oversize_frame_closes() {
    let mut h = Harness::new(config());
    h.connect_raw(1);
    h.send_frame(1, b"Z4");
    assert!(h.closed(1));
    h.connect(2, Encoding::Pickle);
    let huge = (2u32 << 20).to_be_bytes();
    h.srv.handle_bytes(h.now, crate::ids::ConnId(2), &huge);
    h.drain();
    assert!(h.closed(2));
    h.connect(3, Encoding::Msgpack);
    h.send_frame(3, b"\xc1garbage");
    assert!(h.closed(3));
}

#[test]
fn register_failures_leave_the_connection_unregistered_for_a_retry() {
    for enc in ENCS {
        let mut h = Harness::new(config());
        h.connect(1, enc);
        h.call(1, 1, Request::Register { storage: Text::from_static("nope"), read_only: false });
        h.call(1, 2, Request::Register { storage: Text::from_static("ro"), read_only: false });
        h.call(1, 3, Request::Register { storage: Text::from_static("ro"), read_only: true });
        let got = h.take(1);
        assert_eq!(
            Harness::result_of(&got, 1),
            Err(ZeoError::ValueError(Text::from_static("unknown storage: nope")))
        );
        assert_eq!(Harness::result_of(&got, 2), Err(ZeoError::ReadOnly));
        assert!(Harness::result_of(&got, 3).is_ok());
        // Read-only connection: writes refused.
        h.call(1, 4, Request::NewOids { n: None });
        h.cast(1, begin(1));
        assert!(h.closed(1), "async tpc_begin on read-only closes");
        assert_eq!(Harness::result_of(&h.take(1), 4), Err(ZeoError::ReadOnly));
    }
}

#[test]
fn read_only_connection_refuses_vote_and_abort_with_replies() {
    let mut h = Harness::new(config());
    h.connect(1, Encoding::Msgpack);
    h.call(1, 1, Request::Register { storage: Text::from_static("1"), read_only: true });
    h.call(1, 2, Request::Vote { txn: txn(1) });
    h.call(1, 3, Request::TpcAbort { txn: txn(1) });
    h.call(1, 4, Request::NewOid);
    let got = h.take(1);
    assert_eq!(Harness::result_of(&got, 2), Err(ZeoError::ReadOnly));
    assert_eq!(Harness::result_of(&got, 3), Err(ZeoError::ReadOnly));
    assert_eq!(Harness::result_of(&got, 4), Err(ZeoError::ReadOnly));
}

#[test]
fn calls_before_register_second_register_and_unknown_methods_close() {
    let mut h = Harness::new(config());
    h.connect(1, Encoding::Pickle);
    h.send_msg(1, &ClientMessage::Heartbeat);
    assert!(!h.closed(1), "heartbeat before register is ignored");
    h.call(1, 1, Request::Ping);
    assert!(h.closed(1));
    assert!(h.take(1).is_empty(), "no reply before the close");

    h.client(2, Encoding::Pickle);
    h.call(2, 2, Request::Register { storage: Text::from_static("1"), read_only: false });
    assert!(h.closed(2));

    h.client(3, Encoding::Msgpack);
    h.call(3, 3, Request::Unknown { name: Text::from_static("loadEx"), args: vec![] });
    assert!(h.closed(3));
}

#[test]
fn bad_calls_get_type_error_when_sync_and_close_when_async() {
    for enc in ENCS {
        let mut h = Harness::new(config());
        h.client(1, enc);
        let bad = |is_async| ClientMessage::BadCall {
            msgid: MsgId::int(5),
            is_async,
            name: Text::from_static("loadBefore"),
            args: vec![Value::Int(1)],
            error: crate::wire::types::TypedError::Envelope("x"),
        };
        h.send_msg(1, &bad(false));
        assert!(matches!(Harness::result_of(&h.take(1), 5), Err(ZeoError::TypeError(_))));
        assert!(!h.closed(1));
        h.send_msg(1, &bad(true));
        assert!(h.closed(1));
    }
}

#[test]
fn iterators_walk_transactions_and_records_with_key_errors_and_gc() {
    for enc in ENCS {
        let mut h = Harness::new(config());
        h.client(1, enc);
        let t1 = h.commit(1, 1, &[(o(1), Tid::ZERO, b"a"), (o(2), Tid::ZERO, b"b")]);
        let t2 = h.commit(1, 2, &[(o(1), t1, b"c")]);
        h.call(1, 2, Request::IteratorStart { start: None, stop: None });
        h.call(1, 3, Request::IteratorNext { iid: IterId(0) });
        h.call(1, 4, Request::IteratorRecordStart { txn_iid: IterId(0), tid: t2 });
        h.call(1, 5, Request::IteratorRecordStart { txn_iid: IterId(0), tid: t1 });
        h.call(1, 6, Request::IteratorRecordNext { riid: IterId(1) });
        h.call(1, 7, Request::IteratorRecordNext { riid: IterId(1) });
        h.call(1, 8, Request::IteratorRecordNext { riid: IterId(1) });
        h.call(1, 9, Request::IteratorRecordNext { riid: IterId(1) });
        h.call(1, 10, Request::IteratorNext { iid: IterId(0) });
        h.call(1, 11, Request::IteratorNext { iid: IterId(0) });
        h.call(1, 12, Request::IteratorNext { iid: IterId(0) });
        let got = h.take(1);
        assert_eq!(Harness::result_of(&got, 2), Ok(Value::Int(0)));
        assert!(Harness::result_of(&got, 3).is_ok());
        assert!(matches!(Harness::result_of(&got, 4), Err(ZeoError::Exception(_))));
        assert_eq!(Harness::result_of(&got, 5), Ok(Value::Int(1)));
        assert!(Harness::result_of(&got, 6).expect("rec").as_seq().is_some());
        assert!(Harness::result_of(&got, 7).expect("rec").as_seq().is_some());
        assert_eq!(Harness::result_of(&got, 8), Ok(Value::None));
        assert_eq!(Harness::result_of(&got, 9), Err(ZeoError::KeyError(Value::tuple(vec![Value::Int(1)]))));
        assert!(Harness::result_of(&got, 10).expect("t2").as_seq().is_some());
        assert_eq!(Harness::result_of(&got, 11), Ok(Value::None));
        assert_eq!(Harness::result_of(&got, 12), Err(ZeoError::KeyError(Value::tuple(vec![Value::Int(0)]))));
        // gc frees an open iterator; later use is a KeyError.
        h.call(1, 13, Request::IteratorStart { start: Some(t2), stop: None });
        h.cast(1, Request::IteratorGc { iids: vec![IterId(2), IterId(99)] });
        h.call(1, 14, Request::IteratorNext { iid: IterId(2) });
        let got = h.take(1);
        assert_eq!(Harness::result_of(&got, 13), Ok(Value::Int(2)));
        assert!(matches!(Harness::result_of(&got, 14), Err(ZeoError::KeyError(_))));
        assert_eq!(h.backends[0].open_handles().0, 0);
    }
}

#[test]
fn iterator_calls_queue_behind_the_one_in_flight() {
    let mut h = Harness::new(config());
    h.client(1, Encoding::Pickle);
    h.commit(1, 1, &[(o(1), Tid::ZERO, b"a")]);
    h.auto = false;
    h.call(1, 2, Request::IteratorStart { start: None, stop: None });
    h.call(1, 3, Request::IteratorNext { iid: IterId(0) });
    h.call(1, 4, Request::IteratorNext { iid: IterId(0) });
    assert_eq!(h.inflight.len(), 1);
    h.deliver(0);
    assert_eq!(h.inflight.len(), 1);
    h.deliver(0);
    h.deliver(0);
    let got = h.take(1);
    let ids: Vec<_> = got
        .iter()
        .map(|m| match m {
            ServerMessage::Reply { msgid, .. } | ServerMessage::Error { msgid, .. } => msgid.as_int(),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [Some(2), Some(3), Some(4)]);
    assert_eq!(Harness::result_of(&got, 4), Ok(Value::None));
}

#[test]
fn blobs_upload_commit_and_stream_back_in_order() {
    for enc in ENCS {
        let mut h = Harness::new(config());
        h.client(1, enc);
        h.cast(1, begin(1));
        h.cast(1, Request::StoreBlobStart);
        h.cast(1, Request::StoreBlobChunk { chunk: Bytes::from_static(b"hello ") });
        h.cast(1, Request::StoreBlobChunk { chunk: Bytes::from_static(b"world") });
        h.cast(
            1,
            Request::StoreBlobEnd {
                oid: o(1),
                serial: Tid::ZERO,
                data: Bytes::from_static(b"rec"),
                txn: txn(1),
            },
        );
        h.call(1, 2, Request::Vote { txn: txn(1) });
        h.call(1, 3, Request::TpcFinish { txn: txn(1) });
        let got = h.take(1);
        let tid =
            Tid::from_slice(Harness::result_of(&got, 3).expect("tid").as_bytes().expect("b")).expect("t");
        h.call(1, 4, Request::SendBlob { oid: o(1), serial: tid });
        h.call(1, 5, Request::SendBlob { oid: o(1), serial: Tid::ZERO });
        let got = h.take(1);
        let mut data = Vec::new();
        let mut names = Vec::new();
        for m in &got {
            match m {
                ServerMessage::Push(p) => {
                    names.push(p.name().to_string());
                    if let Push::ReceiveBlobChunk { chunk, .. } = p {
                        data.extend_from_slice(chunk);
                    }
                }
                ServerMessage::Reply { .. } => names.push("reply".into()),
                ServerMessage::Error { .. } => names.push("error".into()),
            }
        }
        assert_eq!(data, b"hello world");
        assert_eq!(names.first().map(String::as_str), Some("receiveBlobStart"));
        assert_eq!(&names[names.len() - 3..], ["receiveBlobStop", "reply", "error"]);
        assert!(matches!(Harness::result_of(&got, 5), Err(ZeoError::PosKey(_))));
        h.cast(
            1,
            Request::StoreBlobShared {
                oid: o(1),
                serial: tid,
                data: Bytes::new(),
                filename: Text::from_static("x.tmp"),
                txn: txn(1),
            },
        );
        assert!(h.closed(1));
    }
}

#[test]
fn pack_pushes_info_to_every_client_and_one_pack_runs_at_a_time() {
    let mut h = Harness::new(config());
    h.client(1, Encoding::Pickle);
    h.client(2, Encoding::Msgpack);
    h.commit(1, 1, &[(o(1), Tid::ZERO, b"abc")]);
    h.take(1);
    h.take(2);
    h.auto = false;
    h.call(1, 2, Request::Pack { time: 1.0, wait: true });
    h.call(2, 3, Request::Pack { time: 1.0, wait: false });
    assert!(Harness::result_of(&h.take(2), 3).is_err(), "second pack refused");
    h.deliver(0);
    let got1 = h.take(1);
    let got2 = h.take(2);
    assert_eq!(Harness::result_of(&got1, 2), Ok(Value::None));
    for got in [&got1, &got2] {
        assert!(got.iter().any(|m| matches!(m, ServerMessage::Push(Push::Info(i)) if i.size == Some(3))));
    }
    h.call(2, 4, Request::Pack { time: 1.0, wait: false });
    assert_eq!(Harness::result_of(&h.take(2), 4), Ok(Value::None), "no wait: replied at once");
}

#[test]
fn a_load_issued_before_a_commit_is_written_before_its_invalidation() {
    for enc in ENCS {
        let mut h = Harness::new(config());
        h.client(1, enc);
        h.client(2, enc);
        let t1 = h.commit(1, 1, &[(o(1), Tid::ZERO, b"old")]);
        h.take(2);
        h.auto = false;
        h.call(2, 5, Request::LoadSerial { oid: o(1), serial: t1 });
        h.call(2, 6, Request::LoadBefore { oid: o(1), before: Tid::MAX });
        h.call(2, 7, Request::Ping);
        assert!(matches!(h.take(2).as_slice(), [ServerMessage::Reply { .. }]), "ping is not held back");
        // Client 1 commits while client 2's reads are in flight.
        h.cast(1, begin(2));
        h.cast(1, store(o(1), t1, b"new", 2));
        h.call(1, 8, Request::Vote { txn: txn(2) });
        h.deliver_where(is_vote);
        h.call(1, 9, Request::TpcFinish { txn: txn(2) });
        h.deliver_where(is_finish);
        h.call(2, 10, Request::LastTransaction);
        h.call(2, 11, Request::LoadBefore { oid: o(1), before: Tid::MAX });
        assert!(h.take(2).is_empty(), "invalidation and later replies held back by the reads");
        h.deliver_all();
        let got = h.take(2);
        let order: Vec<String> = got
            .iter()
            .map(|m| match m {
                ServerMessage::Reply { msgid, .. } | ServerMessage::Error { msgid, .. } => {
                    format!("{:?}", msgid.as_int())
                }
                ServerMessage::Push(p) => p.name().to_string(),
            })
            .collect();
        assert_eq!(order, ["Some(5)", "Some(6)", "invalidateTransaction", "Some(10)", "Some(11)"]);
        let old = Harness::result_of(&got, 6).expect("load");
        assert_eq!(old.as_seq().and_then(|s| s[0].as_bytes()).map(|b| b.as_ref()), Some(&b"old"[..]));
        let new = Harness::result_of(&got, 11).expect("load");
        assert_eq!(new.as_seq().and_then(|s| s[0].as_bytes()).map(|b| b.as_ref()), Some(&b"new"[..]));
    }
}

#[test]
fn shutdown_closes_idle_connections_and_lets_the_commit_finish() {
    let mut h = Harness::new(config());
    h.client(1, Encoding::Pickle);
    h.client(2, Encoding::Pickle);
    h.client(3, Encoding::Pickle);
    h.auto = false;
    h.cast(1, begin(1));
    h.call(1, 2, Request::Vote { txn: txn(1) });
    h.cast(3, begin(3));
    h.call(3, 2, Request::Vote { txn: txn(3) });
    h.srv.begin_shutdown(h.now, Duration::from_secs(5));
    h.drain();
    assert!(h.closed(2) && h.closed(3) && !h.closed(1));
    assert!(!h.srv.is_shut_down());
    h.deliver_where(is_vote);
    h.call(1, 3, Request::TpcFinish { txn: txn(1) });
    h.deliver_where(is_finish);
    assert!(Harness::result_of(&h.take(1), 3).is_ok());
    assert!(h.closed(1), "closed once its commit is done");
    assert!(h.srv.is_shut_down());
}

#[test]
fn shutdown_grace_aborts_a_stuck_commit() {
    let mut h = Harness::new(config());
    h.client(1, Encoding::Pickle);
    h.cast(1, begin(1));
    h.call(1, 2, Request::Vote { txn: txn(1) });
    h.srv.begin_shutdown(h.now, Duration::from_secs(5));
    h.drain();
    assert!(!h.closed(1));
    assert_eq!(h.srv.poll_timeout(), Some(h.now.mono + Duration::from_secs(5)));
    h.tick(6);
    h.srv.handle_timeout(h.now);
    h.drain();
    assert!(h.closed(1));
    assert!(h.srv.is_shut_down());
    assert!(!h.backends[0].has_voted());
}

#[test]
fn new_oid_answers_one_oid() {
    let mut h = Harness::new(config());
    h.client(1, Encoding::Msgpack);
    h.call(1, 2, Request::NewOid);
    h.call(1, 3, Request::NewOids { n: Some(0) });
    h.call(1, 4, Request::NewOids { n: Some(1000) });
    let got = h.take(1);
    assert_eq!(Harness::result_of(&got, 2).expect("oid").as_bytes().map(Bytes::len), Some(8));
    assert_eq!(Harness::result_of(&got, 3).expect("oids").as_seq().map(<[Value]>::len), Some(1));
    assert_eq!(Harness::result_of(&got, 4).expect("oids").as_seq().map(<[Value]>::len), Some(100));
}

#[test]
fn a_raised_tid_floor_puts_later_tids_above_it_whatever_the_clock() {
    // The RAID took back a backend holding a transaction the front never saw, far ahead of the
    // clock (a RAID whose clock stepped back): the next commit must still get a later tid.
    let ahead = Tid::from_unix(2_000_000_000, 0).expect("in range");
    let mut h = Harness::new(config());
    h.client(1, Encoding::Msgpack);
    let first = h.commit(1, 1, &[(Oid::new(1), Tid::ZERO, b"a")]);
    assert!(first < ahead, "the clock is behind the floor: {first}");
    h.srv.raise_tid_floor(crate::zeo::events::StorageIdx(0), ahead);
    let second = h.commit(1, 2, &[(Oid::new(1), first, b"b")]);
    assert!(second > ahead, "{second} is not after the raised floor {ahead}");
    // Lowering is not a thing: a lower floor changes nothing.
    h.srv.raise_tid_floor(crate::zeo::events::StorageIdx(0), first);
    let third = h.commit(1, 3, &[(Oid::new(1), second, b"c")]);
    assert!(third > second, "{third} after {second}");
}

#[test]
fn a_history_that_moved_on_to_a_tid_already_reserved_still_becomes_visible() {
    // Simulation seed 2809: the last optimal backend's finish of T failed (T in doubt: the front
    // keeps it as the floor of later tids), the backend came back holding T. Reads must then see
    // T, or every read-modify-write reads the revision before T and conflicts for ever.
    let mut h = Harness::new(config());
    h.client(1, Encoding::Msgpack);
    h.client(2, Encoding::Msgpack);
    let first = h.commit(1, 1, &[(Oid::new(1), Tid::ZERO, b"a")]);
    let doubtful = Tid::from_unix(2_000_000_000, 0).expect("in range");
    h.srv.raise_tid_floor(crate::zeo::events::StorageIdx(0), doubtful);
    h.srv.history_moved_on(crate::zeo::events::StorageIdx(0), doubtful);
    h.drain();
    assert!(h.closed(1) && h.closed(2), "the clients must verify their caches");
    h.client(3, Encoding::Msgpack);
    h.call(3, 10, Request::LastTransaction);
    let got = h.take(3);
    let last = Harness::result_of(&got, 10).expect("lastTransaction");
    assert_eq!(last.as_bytes().map(|b| b.to_vec()), Some(doubtful.to_bytes().to_vec()), "{last:?}");
    let next = h.commit(3, 11, &[(Oid::new(1), first, b"b")]);
    assert!(next > doubtful, "{next} after {doubtful}");
}

#[test]
fn a_history_that_moved_on_closes_the_clients_and_makes_them_verify_their_caches() {
    let mut h = Harness::new(config());
    h.client(1, Encoding::Msgpack);
    h.client(2, Encoding::Msgpack);
    let first = h.commit(1, 1, &[(Oid::new(1), Tid::ZERO, b"a")]);
    let ahead = Tid::from_unix(2_000_000_000, 0).expect("in range");
    // Not above what the front knows: nothing happens.
    h.srv.history_moved_on(crate::zeo::events::StorageIdx(0), first);
    h.drain();
    assert!(!h.closed(1) && !h.closed(2));
    h.srv.history_moved_on(crate::zeo::events::StorageIdx(0), ahead);
    h.drain();
    assert!(h.closed(1) && h.closed(2), "every registered client is closed");
    // A client that comes back asks for the invalidations since its last tid: unknown now, so
    // it must verify its whole cache; lastTransaction is the new one.
    h.client(3, Encoding::Msgpack);
    h.call(3, 10, Request::GetInvalidations { tid: first });
    h.call(3, 11, Request::LastTransaction);
    let got = h.take(3);
    let inv = Harness::result_of(&got, 10).expect("getInvalidations");
    assert_eq!(inv, Value::None, "{inv:?}");
    let last = Harness::result_of(&got, 11).expect("lastTransaction");
    assert_eq!(last.as_bytes().map(|b| b.to_vec()), Some(ahead.to_bytes().to_vec()), "{last:?}");
    let next = h.commit(3, 12, &[(Oid::new(1), first, b"b")]);
    assert!(next > ahead, "{next} after {ahead}");
}
