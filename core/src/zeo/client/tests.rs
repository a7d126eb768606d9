//! The client against scripted server frames, built with the codec in both encodings.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::wire::frame::encode_frame;
use crate::wire::message::ServerMessage;
use crate::wire::push::Push;
use crate::wire::reply::{LoadBeforeResult, Reply, StorageInfo, TxnHeader, VoteItem};
use crate::wire::types::{Extension, IterId, TxnStatus, UndoId};
use crate::wire::Encoding;
use crate::zeo::backend::{TxnOp, VoteRequest};

const BOTH: [Encoding; 2] = [Encoding::Pickle, Encoding::Msgpack];

fn cfg() -> ClientConfig {
    ClientConfig { storage: "1".into(), read_only: false, max_frame: 1 << 20 }
}

/// One side of the conversation: the scripted server.
struct Script {
    codec: Codec,
    client: ZeoClient,
    /// What the client sent, decoded.
    frames: FrameDecoder,
    /// Messages taken out by a helper that the next `sent` returns first.
    held: Vec<ClientMessage>,
}

impl Script {
    /// A client that has seen the announcement (not yet registered).
    fn announced(enc: Encoding, cfg: ClientConfig) -> Script {
        let mut client = ZeoClient::new(cfg);
        let mut raw = Vec::new();
        encode_frame(crate::wire::handshake::server_announcement(enc), &mut raw).expect("frame");
        client.handle_bytes(&raw).expect("announcement");
        let mut s =
            Script { codec: Codec::new(enc), client, frames: FrameDecoder::new(1 << 30), held: Vec::new() };
        s.frames.push(&s.client.poll_transmit().expect("handshake reply"));
        let letter = s.frames.next_frame().expect("frame").expect("handshake frame");
        assert_eq!(&letter[..], &[enc.letter(), b'5'], "the server's letter is copied");
        s
    }

    /// A registered client, its `Ready` event consumed.
    fn ready(enc: Encoding) -> Script {
        let mut s = Script::announced(enc, cfg());
        let sent = s.sent();
        assert!(matches!(&sent[..], [ClientMessage::Call { request: Request::Register { .. }, .. }]));
        s.reply(1, Reply::Register(Some(Tid::new(5))));
        s.reply(2, Reply::GetInfo(StorageInfo::default()));
        s.reply(3, Reply::LastTransaction(Tid::new(5)));
        s.confirm_last(Tid::new(5));
        assert!(matches!(s.client.poll_event(), Some(ClientEvent::Ready(_))));
        s
    }

    /// Answers the check of the last tid (`probe`) as a server that holds `last`.
    fn confirm_last(&mut self, last: Tid) {
        assert_eq!(self.client.phase(), Phase::Checking);
        // (After whatever set-up calls the caller did not look at.)
        let sent = self.sent();
        let start = sent.last().expect("the check's first call");
        assert_eq!(request_of(start), &Request::IteratorStart { start: Some(last), stop: Some(last) });
        self.reply(int_id(start), Reply::IterId(IterId(900)));
        let sent = self.sent();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(request_of(&sent[0]), &Request::IteratorNext { iid: IterId(900) });
        let header = TxnHeader {
            tid: last,
            status: TxnStatus::NORMAL,
            user: Bytes::new(),
            description: Bytes::new(),
            extension: Extension::default(),
        };
        self.reply(int_id(&sent[0]), Reply::IteratorNext(Some(header)));
        // The iterator is freed; queued requests may follow.
        let sent = self.sent();
        assert!(
            matches!(&sent[0], ClientMessage::Async { request: Request::IteratorGc { iids }, .. } if iids == &[IterId(900)])
        );
        self.held = sent[1..].to_vec();
    }

    /// Every message the client wrote since the last call.
    fn sent(&mut self) -> Vec<ClientMessage> {
        if let Some(b) = self.client.poll_transmit() {
            self.frames.push(&b);
        }
        let mut out = std::mem::take(&mut self.held);
        while let Some(f) = self.frames.next_frame().expect("client framing") {
            out.push(self.codec.decode_client(&f).expect("client message"));
        }
        out
    }

    fn deliver(&mut self, msg: &ServerMessage) {
        self.client.handle_bytes(&self.frame(msg)).expect("server frame accepted");
        self.client.check().expect("invariants");
    }

    fn frame(&self, msg: &ServerMessage) -> Vec<u8> {
        let mut payload = Vec::new();
        self.codec.encode_server(msg, &mut payload).expect("encodes");
        let mut out = Vec::new();
        encode_frame(&payload, &mut out).expect("frame");
        out
    }

    fn reply(&mut self, msgid: i64, reply: Reply) {
        self.deliver(&ServerMessage::reply(MsgId::int(msgid), &reply));
    }

    fn error(&mut self, msgid: MsgId, error: ZeoError) {
        self.deliver(&ServerMessage::Error { msgid, error });
    }

    fn outcomes(&mut self) -> Vec<(BackendReqId, BackendOutcome)> {
        let mut out = Vec::new();
        while let Some(e) = self.client.poll_event() {
            match e {
                ClientEvent::Outcome { id, outcome } => out.push((id, outcome)),
                ClientEvent::Ready(i) => panic!("unexpected Ready({i:?})"),
                ClientEvent::ForeignCommit { .. } => {} // see `invalidations_from_other_writers_…`
            }
        }
        out
    }
}

fn msgid_of(m: &ClientMessage) -> MsgId {
    match m {
        ClientMessage::Call { msgid, .. } => msgid.clone(),
        other => panic!("not a call: {other:?}"),
    }
}

fn request_of(m: &ClientMessage) -> &Request {
    match m {
        ClientMessage::Call { request, .. } | ClientMessage::Async { request, .. } => request,
        other => panic!("not a call: {other:?}"),
    }
}

fn int_id(m: &ClientMessage) -> i64 {
    i64::try_from(msgid_of(m).as_int().expect("int msgid")).expect("small")
}

fn oid(n: u64) -> Oid {
    Oid::new(n)
}

fn tid(n: u64) -> Tid {
    Tid::new(n)
}

fn culprit(o: &BackendOutcome) -> Culprit {
    match o {
        BackendOutcome::Failed(e) => e.culprit,
        other => panic!("not a failure: {other:?}"),
    }
}

#[test]
fn registers_and_reports_ready_in_both_encodings() {
    for enc in BOTH {
        let mut s = Script::announced(enc, ClientConfig { read_only: true, ..cfg() });
        // A request before Ready waits.
        s.client.submit(BackendReqId(9), BackendRequest::NewOids { n: 3 });
        let sent = s.sent();
        assert_eq!(sent.len(), 1, "{enc:?}: only register before its reply");
        assert_eq!(request_of(&sent[0]), &Request::Register { storage: "1".into(), read_only: true });
        s.reply(1, Reply::Register(Some(tid(7))));
        let sent = s.sent();
        let methods: Vec<_> = sent.iter().map(|m| request_of(m).name().as_str().to_owned()).collect();
        assert_eq!(methods, ["get_info", "lastTransaction"], "{enc:?}");
        assert_eq!(s.client.phase(), Phase::FetchingInfo);
        let info = StorageInfo {
            length: Some(4),
            size: Some(900),
            name: Some("/srv/Data.fs".into()),
            supports_undo: Some(true),
            interfaces: Some(vec![("ZODB.interfaces".into(), "IBlobStorage".into())]),
            ..StorageInfo::default()
        };
        // Out of order: lastTransaction first.
        s.reply(int_id(&sent[1]), Reply::LastTransaction(tid(8)));
        assert!(s.client.poll_event().is_none(), "not ready before get_info");
        s.reply(int_id(&sent[0]), Reply::GetInfo(info));
        assert!(s.client.poll_event().is_none(), "not ready before the last tid is checked");
        s.confirm_last(tid(8));
        let Some(ClientEvent::Ready(ready)) = s.client.poll_event() else { panic!("{enc:?}: no Ready") };
        assert_eq!(
            ready,
            BackendInfo {
                last_tid: tid(8),
                size: StorageSize { length: 4, size: 900 },
                blobs: true,
                supports_undo: true,
                info_name: "/srv/Data.fs".into(),
                read_only: true,
                rebuildable: false,
            }
        );
        // The queued request went out.
        let sent = s.sent();
        assert_eq!(request_of(&sent[0]), &Request::NewOids { n: Some(3) });
        s.reply(int_id(&sent[0]), Reply::NewOids(vec![oid(1), oid(2), oid(3)]));
        assert_eq!(s.outcomes(), [(BackendReqId(9), BackendOutcome::NewOids(vec![oid(1), oid(2), oid(3)]))]);
    }
}

#[test]
fn a_failed_register_is_a_connection_error() {
    let mut s = Script::announced(Encoding::Pickle, cfg());
    s.sent();
    let msg = ServerMessage::Error { msgid: MsgId::int(1), error: ZeoError::ReadOnly };
    let frame = s.frame(&msg);
    assert!(matches!(s.client.handle_bytes(&frame), Err(ClientError::Register { .. })));
}

#[test]
fn loads_use_tuple_msgids_bounded_by_the_snapshot() {
    for enc in BOTH {
        let mut s = Script::ready(enc);
        let load = |before, snapshot| BackendRequest::LoadBefore { oid: oid(1), before, snapshot };
        // Two identical loads in flight, and one of another bound.
        s.client.submit(BackendReqId(1), load(tid(100), tid(9)));
        s.client.submit(BackendReqId(2), load(Tid::MAX, tid(9)));
        s.client.submit(BackendReqId(3), load(tid(5), tid(9)));
        let sent = s.sent();
        assert_eq!(request_of(&sent[0]), &Request::LoadBefore { oid: oid(1), before: tid(10) });
        assert_eq!(msgid_of(&sent[0]), MsgId::load_before(oid(1), tid(10)));
        assert_eq!(msgid_of(&sent[1]), MsgId::load_before(oid(1), tid(10)));
        assert_eq!(request_of(&sent[2]), &Request::LoadBefore { oid: oid(1), before: tid(5) });
        // The later bound answers first; its end (after the snapshot) is reported as current.
        let r = |start, end| {
            Reply::LoadBefore(Some(LoadBeforeResult { data: Bytes::from_static(b"d"), start, end }))
        };
        s.deliver(&ServerMessage::reply(MsgId::load_before(oid(1), tid(5)), &r(tid(3), Some(tid(6)))));
        s.deliver(&ServerMessage::reply(MsgId::load_before(oid(1), tid(10)), &r(tid(6), Some(tid(12)))));
        s.deliver(&ServerMessage::reply(MsgId::load_before(oid(1), tid(10)), &r(tid(6), Some(tid(9)))));
        let got = s.outcomes();
        let res = |start, end| {
            BackendOutcome::LoadBefore(Some(LoadBeforeResult { data: Bytes::from_static(b"d"), start, end }))
        };
        assert_eq!(
            got,
            [
                (BackendReqId(3), res(tid(3), Some(tid(6)))),
                (BackendReqId(1), res(tid(6), None)),
                (BackendReqId(2), res(tid(6), Some(tid(9)))),
            ],
            "{enc:?}"
        );
        // A third reply for that msgid answers nothing: protocol error.
        let extra = s.frame(&ServerMessage::reply(MsgId::load_before(oid(1), tid(10)), &r(tid(6), None)));
        assert!(matches!(s.client.handle_bytes(&extra), Err(ClientError::UnknownMsgId(_))));
    }
}

#[test]
fn get_tid_and_read_errors_carry_the_right_culprit() {
    for enc in BOTH {
        let mut s = Script::ready(enc);
        s.client.submit(BackendReqId(1), BackendRequest::GetTid { oid: oid(4), snapshot: tid(9) });
        s.client.submit(BackendReqId(2), BackendRequest::LoadSerial { oid: oid(4), serial: tid(3) });
        s.client.submit(BackendReqId(3), BackendRequest::History { oid: oid(4), size: 2 });
        let sent = s.sent();
        assert_eq!(request_of(&sent[0]), &Request::LoadBefore { oid: oid(4), before: tid(10) });
        s.deliver(&ServerMessage::reply(MsgId::load_before(oid(4), tid(10)), &Reply::LoadBefore(None)));
        s.error(msgid_of(&sent[1]), ZeoError::pos_key(oid(4)));
        s.error(msgid_of(&sent[2]), ZeoError::Exception("disk on fire".into()));
        let got = s.outcomes();
        assert_eq!(
            got[0].1,
            BackendOutcome::Failed(BackendError {
                error: ZeoError::pos_key(oid(4)),
                culprit: Culprit::Client
            })
        );
        assert_eq!(culprit(&got[1].1), Culprit::Client);
        assert_eq!(culprit(&got[2].1), Culprit::Backend);
    }
}

fn vote_request(ops: Vec<TxnOp>) -> BackendRequest {
    BackendRequest::Vote(Box::new(VoteRequest {
        tid: tid(50),
        status: TxnStatus::NORMAL,
        user: Bytes::from_static(b"u"),
        description: Bytes::from_static(b"d"),
        extension: Extension::default(),
        ops,
        deferred_sync: false,
    }))
}

#[test]
fn a_commit_sends_begin_ops_vote_then_finish() {
    for enc in BOTH {
        let mut s = Script::ready(enc);
        let data = Bytes::from_static(b"pickle");
        s.client.submit(
            BackendReqId(1),
            vote_request(vec![
                TxnOp::Store { oid: oid(2), serial: tid(0), data: data.clone() },
                TxnOp::CheckCurrent { oid: oid(7), serial: tid(3) },
                TxnOp::Delete { oid: oid(3), serial: tid(4) },
                TxnOp::Store { oid: oid(2), serial: tid(0), data: data.clone() },
                TxnOp::Undo { undo_id: UndoId(Bytes::from_static(b"AAAA")) },
            ]),
        );
        let sent = s.sent();
        let names: Vec<_> = sent.iter().map(|m| request_of(m).name().as_str().to_owned()).collect();
        assert_eq!(
            names,
            [
                "tpc_begin",
                "storea",
                "checkCurrentSerialInTransaction",
                "deleteObject",
                "storea",
                "undoa",
                "vote"
            ],
            "{enc:?}"
        );
        assert!(sent[..6].iter().all(|m| matches!(m, ClientMessage::Async { .. })));
        let Request::TpcBegin { tid: begin_tid, txn, .. } = request_of(&sent[0]) else { panic!() };
        assert_eq!(*begin_tid, Some(tid(50)));
        assert_eq!(request_of(&sent[6]), &Request::Vote { txn: txn.clone() });
        // The server undid oid 9 and resolved nothing else.
        s.reply(int_id(&sent[6]), Reply::Vote(vec![VoteItem::Oid(oid(9)), VoteItem::Oid(oid(2))]));
        assert_eq!(
            s.outcomes(),
            [(
                BackendReqId(1),
                BackendOutcome::Voted {
                    changed: vec![oid(9), oid(2)],
                    invalidated: vec![oid(2), oid(3), oid(9)]
                }
            )]
        );
        s.client.submit(BackendReqId(2), BackendRequest::Finish { tid: tid(50) });
        let sent = s.sent();
        assert_eq!(request_of(&sent[0]), &Request::TpcFinish { txn: txn.clone() });
        s.deliver(&ServerMessage::Push(Push::Info(StorageInfo {
            length: Some(3),
            size: Some(777),
            ..Default::default()
        })));
        s.reply(int_id(&sent[0]), Reply::TpcFinish(Some(tid(50))));
        assert_eq!(
            s.outcomes(),
            [(
                BackendReqId(2),
                BackendOutcome::Finished { tid: tid(50), size: StorageSize { length: 3, size: 777 } }
            )]
        );
        // The next transaction gets another txid.
        s.client.submit(BackendReqId(3), vote_request(vec![]));
        let sent = s.sent();
        let Request::TpcBegin { txn: txn2, .. } = request_of(&sent[0]) else { panic!() };
        assert_ne!(txn2, txn);
    }
}

#[test]
fn a_finish_under_another_tid_fails_as_the_backends_fault() {
    let mut s = Script::ready(Encoding::Msgpack);
    s.client.submit(BackendReqId(1), vote_request(vec![]));
    let vote = s.sent().pop().expect("vote");
    s.reply(int_id(&vote), Reply::Vote(vec![]));
    s.client.submit(BackendReqId(2), BackendRequest::Finish { tid: tid(50) });
    let fin = s.sent().pop().expect("finish");
    s.reply(int_id(&fin), Reply::TpcFinish(Some(tid(51))));
    let got = s.outcomes();
    assert_eq!(culprit(&got[1].1), Culprit::Backend);
    assert!(format!("{:?}", got[1].1).contains("expected"), "{got:?}");
}

#[test]
fn conflicts_abort_the_transaction_and_errors_carry_culprits() {
    for enc in BOTH {
        let mut s = Script::ready(enc);
        s.client.submit(
            BackendReqId(1),
            vote_request(vec![TxnOp::Store { oid: oid(2), serial: tid(1), data: Bytes::from_static(b"x") }]),
        );
        let vote = s.sent().pop().expect("vote");
        let conflict = VoteItem::Conflict {
            oid: oid(2),
            committed: tid(3),
            read: tid(1),
            data: Bytes::from_static(b"x"),
        };
        s.reply(int_id(&vote), Reply::Vote(vec![conflict.clone()]));
        assert_eq!(s.outcomes(), [(BackendReqId(1), BackendOutcome::Conflicts(vec![conflict]))]);
        let sent = s.sent();
        assert!(matches!(request_of(&sent[0]), Request::TpcAbort { .. }), "{enc:?}: {sent:?}");
        s.reply(int_id(&sent[0]), Reply::Nil);
        assert!(s.outcomes().is_empty(), "the abort of our own answers nothing");
        // A vote error: the client's fault for a conflict, the backend's for anything else.
        for (error, who) in
            [(ZeoError::ReadOnly, Culprit::Client), (ZeoError::ValueError("odd".into()), Culprit::Backend)]
        {
            s.client.submit(BackendReqId(2), vote_request(vec![]));
            let vote = s.sent().pop().expect("vote");
            s.error(msgid_of(&vote), error);
            let got = s.outcomes();
            assert_eq!(culprit(&got[0].1), who);
            let sent = s.sent();
            assert!(matches!(request_of(&sent[0]), Request::TpcAbort { .. }));
            s.reply(int_id(&sent[0]), Reply::Nil);
            // Nothing is open: an abort from the core is answered at once.
            s.client.submit(BackendReqId(3), BackendRequest::Abort { tid: tid(50) });
            assert!(s.sent().is_empty());
            assert_eq!(s.outcomes(), [(BackendReqId(3), BackendOutcome::Nil)]);
        }
    }
}

#[test]
fn blob_uploads_are_replayed_at_vote_and_downloads_stream_chunks() {
    for enc in BOTH {
        let mut s = Script::ready(enc);
        let up = UploadId(1);
        s.client.submit(BackendReqId(1), BackendRequest::BlobUploadStart { upload: up });
        s.client.submit(
            BackendReqId(2),
            BackendRequest::BlobUploadChunk { upload: up, chunk: Bytes::from(vec![1u8; 70_000]) },
        );
        s.client.submit(
            BackendReqId(3),
            BackendRequest::BlobUploadChunk { upload: up, chunk: Bytes::from(vec![2u8; 10]) },
        );
        assert!(s.sent().is_empty(), "uploads stay in the client until the vote");
        let data = Bytes::from_static(b"blobrec");
        s.client.submit(
            BackendReqId(4),
            vote_request(vec![TxnOp::StoreBlob {
                oid: oid(5),
                serial: tid(0),
                data: data.clone(),
                upload: up,
            }]),
        );
        let sent = s.sent();
        let names: Vec<_> = sent.iter().map(|m| request_of(m).name().as_str().to_owned()).collect();
        assert_eq!(
            names,
            [
                "tpc_begin",
                "storeBlobStart",
                "storeBlobChunk",
                "storeBlobChunk",
                "storeBlobChunk",
                "storeBlobEnd",
                "vote"
            ]
        );
        let sizes: Vec<usize> = sent[2..5]
            .iter()
            .map(|m| match request_of(m) {
                Request::StoreBlobChunk { chunk } => chunk.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, [59_000, 11_000, 10]);
        assert!(
            matches!(request_of(&sent[5]), Request::StoreBlobEnd { oid: o, data: d, .. } if *o == oid(5) && *d == data)
        );
        s.reply(int_id(&sent[6]), Reply::Vote(vec![]));
        assert_eq!(
            s.outcomes(),
            [
                (BackendReqId(1), BackendOutcome::Nil),
                (BackendReqId(2), BackendOutcome::Nil),
                (BackendReqId(3), BackendOutcome::Nil),
                (BackendReqId(4), BackendOutcome::Voted { changed: vec![], invalidated: vec![oid(5)] }),
            ]
        );
        // Download.
        s.client.submit(BackendReqId(5), BackendRequest::SendBlob { oid: oid(5), serial: tid(50) });
        let call = s.sent().pop().expect("sendBlob");
        s.deliver(&ServerMessage::Push(Push::ReceiveBlobStart { oid: oid(5), serial: tid(50) }));
        for part in [&b"ab"[..], b"cd"] {
            s.deliver(&ServerMessage::Push(Push::ReceiveBlobChunk {
                oid: oid(5),
                serial: tid(50),
                chunk: Bytes::copy_from_slice(part),
            }));
        }
        s.deliver(&ServerMessage::Push(Push::ReceiveBlobStop { oid: oid(5), serial: tid(50) }));
        s.reply(int_id(&call), Reply::Nil);
        let id = BackendReqId(5);
        assert_eq!(
            s.outcomes(),
            [
                (id, BackendOutcome::BlobChunk(Bytes::from_static(b"ab"))),
                (id, BackendOutcome::BlobChunk(Bytes::from_static(b"cd"))),
                (id, BackendOutcome::Nil),
            ]
        );
        // A chunk nobody asked for is a protocol error.
        let stray = s.frame(&ServerMessage::Push(Push::ReceiveBlobChunk {
            oid: oid(5),
            serial: tid(50),
            chunk: Bytes::new(),
        }));
        assert!(matches!(s.client.handle_bytes(&stray), Err(ClientError::UnexpectedPush(_))));
    }
}

#[test]
fn iterator_requests_wait_for_the_start_and_map_ids() {
    for enc in BOTH {
        let mut s = Script::ready(enc);
        let (it, rec) = (BackendIterId(10), BackendIterId(11));
        s.client
            .submit(BackendReqId(1), BackendRequest::IterStart { iter: it, start: None, stop: Some(tid(9)) });
        s.client.submit(BackendReqId(2), BackendRequest::IterNext { iter: it });
        let sent = s.sent();
        assert_eq!(sent.len(), 1, "iterator_next waits for the start");
        s.reply(int_id(&sent[0]), Reply::IterId(IterId(7)));
        let sent = s.sent();
        assert_eq!(request_of(&sent[0]), &Request::IteratorNext { iid: IterId(7) });
        let header = TxnHeader {
            tid: tid(4),
            status: TxnStatus::NORMAL,
            user: Bytes::new(),
            description: Bytes::new(),
            extension: Extension::default(),
        };
        s.reply(int_id(&sent[0]), Reply::IteratorNext(Some(header.clone())));
        s.client.submit(
            BackendReqId(3),
            BackendRequest::IterRecordStart { iter: rec, txn_iter: it, tid: tid(4) },
        );
        let sent = s.sent();
        assert_eq!(request_of(&sent[0]), &Request::IteratorRecordStart { txn_iid: IterId(7), tid: tid(4) });
        s.reply(int_id(&sent[0]), Reply::IterId(IterId(8)));
        s.client.submit(BackendReqId(4), BackendRequest::IterRecordNext { iter: rec });
        let sent = s.sent();
        assert_eq!(request_of(&sent[0]), &Request::IteratorRecordNext { riid: IterId(8) });
        s.reply(int_id(&sent[0]), Reply::IteratorRecordNext(None));
        // The record iterator ended (freed); dropping both sends a gc for the open one only.
        s.client.submit(BackendReqId(5), BackendRequest::IterDrop { iters: vec![it, rec] });
        let sent = s.sent();
        assert_eq!(request_of(&sent[0]), &Request::IteratorGc { iids: vec![IterId(7)] });
        assert!(matches!(sent[0], ClientMessage::Async { .. }));
        let got = s.outcomes();
        assert_eq!(
            got,
            [
                (BackendReqId(1), BackendOutcome::Nil),
                (BackendReqId(2), BackendOutcome::Txn(Some(header))),
                (BackendReqId(3), BackendOutcome::Nil),
                (BackendReqId(4), BackendOutcome::Record(None)),
                (BackendReqId(5), BackendOutcome::Nil),
            ],
            "{enc:?}"
        );
        s.client.submit(BackendReqId(6), BackendRequest::IterNext { iter: it });
        assert_eq!(culprit(&s.outcomes()[0].1), Culprit::Backend, "a dropped iterator is unknown");
    }
}

#[test]
fn pack_reports_the_size_from_get_info() {
    let mut s = Script::ready(Encoding::Pickle);
    s.client.submit(BackendReqId(1), BackendRequest::Pack { time: 1.5e9 });
    let sent = s.sent();
    assert_eq!(request_of(&sent[0]), &Request::Pack { time: 1.5e9, wait: true });
    s.reply(int_id(&sent[0]), Reply::Nil);
    let sent = s.sent();
    assert_eq!(request_of(&sent[0]), &Request::GetInfo);
    s.reply(
        int_id(&sent[0]),
        Reply::GetInfo(StorageInfo { length: Some(2), size: Some(50), ..Default::default() }),
    );
    assert_eq!(
        s.outcomes(),
        [(BackendReqId(1), BackendOutcome::Packed { size: StorageSize { length: 2, size: 50 } })]
    );
}

#[test]
fn losing_the_connection_fails_everything_in_flight() {
    let mut s = Script::ready(Encoding::Msgpack);
    s.client.submit(
        BackendReqId(1),
        BackendRequest::LoadBefore { oid: oid(1), before: Tid::MAX, snapshot: tid(5) },
    );
    s.client.submit(
        BackendReqId(2),
        BackendRequest::IterStart { iter: BackendIterId(1), start: None, stop: None },
    );
    s.client.submit(BackendReqId(3), BackendRequest::IterNext { iter: BackendIterId(1) });
    s.client.submit(BackendReqId(4), vote_request(vec![]));
    s.sent();
    s.client.fail_all("reset by peer");
    s.client.check().expect("invariants after fail_all");
    let got = s.outcomes();
    let ids: Vec<u64> = got.iter().map(|(id, _)| id.0).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    assert!(got.iter().all(|(_, o)| culprit(o) == Culprit::Backend));
    s.client.submit(BackendReqId(5), BackendRequest::NewOids { n: 1 });
    assert_eq!(culprit(&s.outcomes()[0].1), Culprit::Backend);
    // Also before Ready: queued requests are failed.
    let mut s = Script::announced(Encoding::Pickle, cfg());
    s.client.submit(BackendReqId(1), BackendRequest::NewOids { n: 1 });
    s.client.fail_all("timeout");
    assert_eq!(s.outcomes().len(), 1);
}

#[test]
fn bad_frames_are_errors() {
    for enc in BOTH {
        // Garbage after the handshake.
        let mut s = Script::ready(enc);
        let mut raw = Vec::new();
        encode_frame(b"\xff\xfe garbage", &mut raw).expect("frame");
        assert!(s.client.handle_bytes(&raw).is_err(), "{enc:?}");
        assert!(s.client.handle_bytes(b"").is_err(), "errors stick");
        // A reply of the wrong type.
        let mut s = Script::ready(enc);
        s.client.submit(BackendReqId(1), BackendRequest::LoadSerial { oid: oid(1), serial: tid(1) });
        let call = s.sent().pop().expect("call");
        let bad = s.frame(&ServerMessage::Reply { msgid: msgid_of(&call), result: Value::Int(3) });
        assert!(matches!(s.client.handle_bytes(&bad), Err(ClientError::ReplyType { .. })));
        // A frame above max_frame.
        let mut s = Script::announced(enc, ClientConfig { max_frame: 100, ..cfg() });
        assert!(matches!(s.client.handle_bytes(&1000u32.to_be_bytes()), Err(ClientError::Frame(_))));
        // A bad announcement.
        let mut c = ZeoClient::new(cfg());
        let mut raw = Vec::new();
        encode_frame(b"Z4", &mut raw).expect("frame");
        assert!(matches!(c.handle_bytes(&raw), Err(ClientError::Handshake(_))));
    }
}

#[test]
fn invalidations_from_other_writers_are_reported_and_need_no_answer() {
    let mut s = Script::ready(Encoding::Pickle);
    for t in [6, 7] {
        s.deliver(&ServerMessage::Push(Push::InvalidateTransaction { tid: tid(t), oids: vec![oid(1)] }));
    }
    let mut events = Vec::new();
    while let Some(e) = s.client.poll_event() {
        events.push(e);
    }
    assert_eq!(
        events,
        [ClientEvent::ForeignCommit { tid: tid(6) }, ClientEvent::ForeignCommit { tid: tid(7) }]
    );
    assert!(s.sent().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Random bytes after a valid handshake never panic, and the invariants hold.
    #[test]
    fn random_bytes_never_panic(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..6),
        pickle in any::<bool>(),
    ) {
        let enc = if pickle { Encoding::Pickle } else { Encoding::Msgpack };
        let mut s = Script::ready(enc);
        s.client.submit(BackendReqId(1), BackendRequest::LoadBefore { oid: oid(1), before: Tid::MAX, snapshot: tid(5) });
        s.client.submit(BackendReqId(2), vote_request(vec![]));
        for c in chunks {
            let mut framed = Vec::new();
            encode_frame(&c, &mut framed).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if s.client.handle_bytes(&framed).is_err() {
                break;
            }
            s.client.check().map_err(TestCaseError::fail)?;
        }
        s.client.fail_all("test");
        s.client.check().map_err(TestCaseError::fail)?;
    }
}

/// A server message that is well formed: a reply (typed for some method) or error to one of the
/// first msgids, or a push.
fn server_message() -> impl Strategy<Value = ServerMessage> {
    use crate::wire::arbitrary;
    prop_oneof![
        (1i64..16, arbitrary::reply()).prop_map(|(n, (_, r))| ServerMessage::reply(MsgId::int(n), &r)),
        (1i64..16, arbitrary::zeo_error())
            .prop_map(|(n, error)| ServerMessage::Error { msgid: MsgId::int(n), error }),
        (arbitrary::reply()).prop_map(|(_, r)| ServerMessage::reply(MsgId::load_before(oid(1), tid(6)), &r)),
        arbitrary::push().prop_map(ServerMessage::Push),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Well-formed but arbitrary server messages, with requests of every kind in flight: no
    /// panic, the invariants hold, and after `fail_all` every request has a final outcome.
    #[test]
    fn arbitrary_server_messages_keep_the_invariants(
        msgs in proptest::collection::vec(server_message(), 1..12),
        pickle in any::<bool>(),
    ) {
        let enc = if pickle { Encoding::Pickle } else { Encoding::Msgpack };
        let mut s = Script::ready(enc);
        let reqs = vec![
            BackendRequest::LoadBefore { oid: oid(1), before: Tid::MAX, snapshot: tid(5) },
            BackendRequest::IterStart { iter: BackendIterId(1), start: None, stop: None },
            BackendRequest::IterNext { iter: BackendIterId(1) },
            BackendRequest::IterStart { iter: BackendIterId(2), start: None, stop: None },
            BackendRequest::IterNextWhole { iter: BackendIterId(2) },
            BackendRequest::IterNextWhole { iter: BackendIterId(2) },
            BackendRequest::SendBlob { oid: oid(1), serial: tid(2) },
            BackendRequest::UndoLog { first: 0, last: -1 },
            BackendRequest::Pack { time: 1.0 },
            vote_request(vec![TxnOp::Store { oid: oid(2), serial: tid(0), data: Bytes::from_static(b"x") }]),
            BackendRequest::NewOids { n: 2 },
        ];
        let n = reqs.len() as u64;
        for (i, r) in reqs.into_iter().enumerate() {
            s.client.submit(BackendReqId(i as u64), r);
        }
        s.sent();
        for m in msgs {
            let frame = s.frame(&m);
            if s.client.handle_bytes(&frame).is_err() {
                break;
            }
            s.client.check().map_err(TestCaseError::fail)?;
            s.sent();
        }
        s.client.fail_all("end of test");
        s.client.check().map_err(TestCaseError::fail)?;
        let mut finals = BTreeMap::new();
        while let Some(ev) = s.client.poll_event() {
            if let ClientEvent::Outcome { id, outcome } = ev {
                if !outcome.is_partial() {
                    *finals.entry(id.0).or_insert(0) += 1;
                }
            }
        }
        // The vote may have been answered and a later Finish was never sent: every request
        // submitted has exactly one final outcome.
        for i in 0..n {
            prop_assert_eq!(finals.get(&i).copied(), Some(1), "request {} in {:?}", i, finals);
        }
    }
}

mod probe;
mod whole;
