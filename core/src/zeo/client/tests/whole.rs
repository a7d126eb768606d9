//! `IterNextWhole` as a chain of iterator calls.

use super::*;
use crate::wire::reply::DataRecord;
use crate::zeo::backend::WholeTxn;

fn header(t: u64) -> TxnHeader {
    TxnHeader {
        tid: tid(t),
        status: TxnStatus::NORMAL,
        user: Bytes::from_static(b"u"),
        description: Bytes::from(format!("txn {t}")),
        extension: Extension::default(),
    }
}

fn record(o: u64, t: u64) -> DataRecord {
    DataRecord { oid: oid(o), tid: tid(t), data: Some(Bytes::from(format!("data {o}"))), data_txn: None }
}

/// The one call the client sent, and its msgid.
fn one_call(s: &mut Script) -> (Request, i64) {
    let sent = s.sent();
    assert_eq!(sent.len(), 1, "one call of the chain at a time: {sent:?}");
    (request_of(&sent[0]).clone(), int_id(&sent[0]))
}

#[test]
fn iter_next_whole_reads_a_transaction_and_its_records_in_one_request() {
    for enc in BOTH {
        let mut s = Script::ready(enc);
        let it = BackendIterId(10);
        s.client.submit(BackendReqId(1), BackendRequest::IterStart { iter: it, start: None, stop: None });
        s.client.submit(BackendReqId(2), BackendRequest::IterNextWhole { iter: it });
        let (_, start) = one_call(&mut s);
        s.reply(start, Reply::IterId(IterId(7)));
        // A transaction with two records.
        let (req, m) = one_call(&mut s);
        assert_eq!(req, Request::IteratorNext { iid: IterId(7) });
        s.reply(m, Reply::IteratorNext(Some(header(4))));
        let (req, m) = one_call(&mut s);
        assert_eq!(req, Request::IteratorRecordStart { txn_iid: IterId(7), tid: tid(4) });
        s.reply(m, Reply::IterId(IterId(8)));
        for r in [record(1, 4), record(2, 4)] {
            let (req, m) = one_call(&mut s);
            assert_eq!(req, Request::IteratorRecordNext { riid: IterId(8) });
            s.reply(m, Reply::IteratorRecordNext(Some(r)));
        }
        assert_eq!(s.outcomes(), [(BackendReqId(1), BackendOutcome::Nil)], "not answered before the end");
        let (req, m) = one_call(&mut s);
        assert_eq!(req, Request::IteratorRecordNext { riid: IterId(8) });
        s.reply(m, Reply::IteratorRecordNext(None));
        let first = WholeTxn { header: header(4), records: vec![record(1, 4), record(2, 4)] };
        assert_eq!(s.outcomes(), [(BackendReqId(2), BackendOutcome::WholeTxn(Some(Box::new(first))))]);
        // A transaction without records.
        s.client.submit(BackendReqId(3), BackendRequest::IterNextWhole { iter: it });
        let (_, m) = one_call(&mut s);
        s.reply(m, Reply::IteratorNext(Some(header(5))));
        let (_, m) = one_call(&mut s);
        s.reply(m, Reply::IterId(IterId(9)));
        let (req, m) = one_call(&mut s);
        assert_eq!(req, Request::IteratorRecordNext { riid: IterId(9) });
        s.reply(m, Reply::IteratorRecordNext(None));
        let empty = WholeTxn { header: header(5), records: vec![] };
        assert_eq!(s.outcomes(), [(BackendReqId(3), BackendOutcome::WholeTxn(Some(Box::new(empty))))]);
        // The end frees the iterator.
        s.client.submit(BackendReqId(4), BackendRequest::IterNextWhole { iter: it });
        let (_, m) = one_call(&mut s);
        s.reply(m, Reply::IteratorNext(None));
        assert_eq!(s.outcomes(), [(BackendReqId(4), BackendOutcome::WholeTxn(None))]);
        // Now it is unknown: the same failure as for IterNext.
        s.client.submit(BackendReqId(5), BackendRequest::IterNextWhole { iter: it });
        s.client.submit(BackendReqId(6), BackendRequest::IterNext { iter: it });
        assert!(s.sent().is_empty());
        let got = s.outcomes();
        let (BackendOutcome::Failed(a), BackendOutcome::Failed(b)) = (&got[0].1, &got[1].1) else {
            panic!("{got:?}");
        };
        assert_eq!((a.culprit, a.error.class_path()), (b.culprit, b.error.class_path()));
        assert_eq!(a.culprit, Culprit::Backend);
        s.client.check().expect("invariants");
    }
}

#[test]
fn an_error_in_the_chain_fails_the_request_and_releases_the_record_iterator() {
    let mut s = Script::ready(Encoding::Msgpack);
    let it = BackendIterId(1);
    s.client.submit(BackendReqId(1), BackendRequest::IterStart { iter: it, start: None, stop: None });
    let (_, m) = one_call(&mut s);
    s.reply(m, Reply::IterId(IterId(3)));
    s.client.submit(BackendReqId(2), BackendRequest::IterNextWhole { iter: it });
    let (_, m) = one_call(&mut s);
    s.reply(m, Reply::IteratorNext(Some(header(4))));
    let (_, m) = one_call(&mut s);
    s.reply(m, Reply::IterId(IterId(4)));
    let (_, m) = one_call(&mut s);
    s.reply(m, Reply::IteratorRecordNext(Some(record(1, 4))));
    let (_, m) = one_call(&mut s);
    s.error(MsgId::int(m), ZeoError::Exception(Text::from_static("disk on fire")));
    let sent = s.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(request_of(&sent[0]), &Request::IteratorGc { iids: vec![IterId(4)] });
    assert!(matches!(sent[0], ClientMessage::Async { .. }));
    let got = s.outcomes();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].0, BackendReqId(2));
    assert_eq!(culprit(&got[1].1), Culprit::Backend);
    // A failure of the record start: nothing to release; the lost connection fails a chain in
    // flight.
    s.client.submit(BackendReqId(3), BackendRequest::IterNextWhole { iter: it });
    let (_, m) = one_call(&mut s);
    s.reply(m, Reply::IteratorNext(Some(header(5))));
    let (_, m) = one_call(&mut s);
    s.error(MsgId::int(m), ZeoError::Exception(Text::from_static("out of order")));
    assert!(s.sent().is_empty());
    assert_eq!(s.outcomes()[0].0, BackendReqId(3));
    s.client.submit(BackendReqId(4), BackendRequest::IterNextWhole { iter: it });
    s.sent();
    s.client.fail_all("reset");
    s.client.check().expect("invariants after fail_all");
    let got = s.outcomes();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, culprit(&got[0].1)), (BackendReqId(4), Culprit::Backend));
}
