//! Scenario tests of the server state machine, with real frames in both encodings.

use std::time::Duration;

use bytes::Bytes;

use crate::ids::{Oid, Tid};
use crate::wire::error::{StorageTxnDetails, ZeoError};
use crate::wire::message::{ClientMessage, MsgId, ServerMessage};
use crate::wire::push::Push;
use crate::wire::request::Request;
use crate::wire::types::IterId;
use crate::wire::value::{Text, Value};
use crate::wire::Encoding;
use crate::zeo::backend::BackendRequest;

use super::harness::{begin, config, invalidations, store, txn, Harness};

const ENCS: [Encoding; 2] = [Encoding::Pickle, Encoding::Msgpack];

fn o(n: u64) -> Oid {
    Oid::new(n)
}

fn stx_msg(e: &ZeoError) -> Option<&str> {
    match e {
        ZeoError::StorageTransaction(StorageTxnDetails::Message(m)) => Some(m.as_str()),
        _ => None,
    }
}

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
        for i in ["IStorageRestoreable", "IBlobStorage", "IBlobStorageRestoreable", "IExternalGC", "Interface"] {
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
        assert_eq!(Harness::result_of(&got, 1), Err(ZeoError::ValueError(Text::from_static("unknown storage: nope"))));
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
fn a_commit_invalidates_the_other_client_not_the_committer_and_info_precedes_the_reply() {
    for enc in ENCS {
        let mut h = Harness::new(config());
        h.client(1, enc);
        h.client(2, Encoding::Msgpack);
        h.call(1, 2, Request::NewOids { n: Some(3) });
        let got = h.take(1);
        let oids = Harness::result_of(&got, 2).expect("oids");
        assert_eq!(oids.as_seq().map(<[Value]>::len), Some(3));
        h.cast(1, begin(1));
        h.cast(1, store(o(1), Tid::ZERO, b"data", 1));
        h.call(1, 3, Request::Vote { txn: txn(1) });
        h.call(1, 4, Request::TpcFinish { txn: txn(1) });
        let got = h.take(1);
        assert_eq!(Harness::result_of(&got, 3), Ok(Value::list(vec![])));
        let tid = Harness::result_of(&got, 4).expect("tid");
        let tid = Tid::from_slice(tid.as_bytes().expect("bytes")).expect("tid");
        assert!(tid > Tid::ZERO);
        // info push just before the finish reply; no invalidation to the committer.
        let pos_info = got.iter().position(|m| matches!(m, ServerMessage::Push(Push::Info(_)))).expect("info");
        assert_eq!(pos_info + 1, got.len() - 1);
        assert!(invalidations(&got).is_empty());
        assert_eq!(invalidations(&h.take(2)), vec![(tid, vec![o(1)])]);
        // The other client loads the new data and sees it in getInvalidations.
        let mb = MsgId::load_before(o(1), Tid::MAX);
        h.send_msg(2, &ClientMessage::Call { msgid: mb.clone(), request: Request::LoadBefore { oid: o(1), before: Tid::MAX } });
        h.call(2, 6, Request::GetInvalidations { tid: Tid::ZERO });
        h.call(2, 7, Request::LastTransaction);
        let got = h.take(2);
        let lb = got.iter().find_map(|m| match m {
            ServerMessage::Reply { msgid, result } if *msgid == mb => Some(result.clone()),
            _ => None,
        });
        let lb = lb.expect("loadBefore reply echoes the (oid, tid) tuple msgid");
        let items = lb.as_seq().expect("[data, start, end]");
        assert_eq!(items[0].as_bytes().map(|b| b.as_ref()), Some(&b"data"[..]));
        assert_eq!(items[2], Value::None);
        let inv = Harness::result_of(&got, 6).expect("invalidations");
        assert_eq!(inv.as_seq().map(|s| s[1].as_seq().map(<[Value]>::len)), Some(Some(1)));
        assert_eq!(Harness::result_of(&got, 7), Ok(Value::bytes(Bytes::copy_from_slice(&tid.to_bytes()))));
        assert!(Harness::result_of(&got, 7).is_ok());
    }
}
