//! `IterNextWhole` with read-ahead, against scripted replies and against a model of the stock
//! server's iterators that checks every call is legal.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::wire::reply::DataRecord;
use crate::zeo::backend::WholeTxn;
use crate::zeo::client::{READ_AHEAD_BYTES, READ_AHEAD_TXNS};

pub(super) fn header(t: u64) -> TxnHeader {
    TxnHeader {
        tid: tid(t),
        status: TxnStatus::NORMAL,
        user: Bytes::from_static(b"u"),
        description: Bytes::from(format!("txn {t}")),
        extension: Extension::default(),
    }
}

pub(super) fn record(o: u64, t: u64) -> DataRecord {
    DataRecord { oid: oid(o), tid: tid(t), data: Some(Bytes::from(format!("data {o}"))), data_txn: None }
}

/// A registered client whose server said `lastTransaction` = `last`.
fn ready_at(enc: Encoding, last: Tid) -> Script {
    let mut s = Script::announced(enc, cfg());
    s.sent();
    s.reply(1, Reply::Register(Some(last)));
    s.reply(2, Reply::GetInfo(StorageInfo::default()));
    s.reply(3, Reply::LastTransaction(last));
    if last != Tid::ZERO {
        s.confirm_last(last);
    }
    s.sent();
    assert!(matches!(s.client.poll_event(), Some(ClientEvent::Ready(_))));
    s
}

/// The calls sent since the last look, with their int msgids (0 for casts).
fn calls(s: &mut Script) -> Vec<(Request, i64)> {
    s.sent()
        .iter()
        .map(|m| (request_of(m).clone(), if matches!(m, ClientMessage::Call { .. }) { int_id(m) } else { 0 }))
        .collect()
}

fn whole(t: u64, records: Vec<DataRecord>) -> BackendOutcome {
    BackendOutcome::WholeTxn(Some(Box::new(WholeTxn { header: header(t), records })))
}

/// The stock server's iterator calls (`ZEO/StorageServer.py` over a FileStorage): calls are
/// handled in order; `iterator_record_start` only for the transaction `iterator_next` returned
/// last; the end (or gc) of a transaction iterator closes the file its record iterators read.
/// Anything the real server would log as an error is a `violation`.
pub(super) struct Model {
    pub(super) txns: Vec<(TxnHeader, Vec<DataRecord>)>,
    pub(super) next_iid: i64,
    /// Transaction iterators: next position, index of the last one returned, stop tid.
    pub(super) txn_iters: BTreeMap<i64, (usize, Option<usize>, Option<Tid>)>,
    /// Record iterators: transaction index, next record, transaction iterator.
    pub(super) rec_iters: BTreeMap<i64, (usize, usize, i64)>,
    /// Transaction iterators whose file is closed.
    pub(super) closed: BTreeSet<i64>,
    pub(super) violations: Vec<String>,
    /// Errors to answer instead: (method name, how many calls of it to let through first).
    pub(super) fail_at: Vec<(&'static str, usize)>,
    pub(super) counts: BTreeMap<&'static str, usize>,
    pub(super) gcs: Vec<Vec<IterId>>,
}

#[allow(clippy::result_large_err)] // replies as the wire carries them
impl Model {
    pub(super) fn new(n: u64, records: impl Fn(u64) -> Vec<DataRecord>) -> Model {
        Model::with_tids((1..=n).collect(), records)
    }

    /// A server holding transactions with these tids (ascending).
    pub(super) fn with_tids(tids: Vec<u64>, records: impl Fn(u64) -> Vec<DataRecord>) -> Model {
        let txns = tids.into_iter().map(|t| (header(t), records(t))).collect();
        Model {
            txns,
            next_iid: 0,
            txn_iters: BTreeMap::new(),
            rec_iters: BTreeMap::new(),
            closed: BTreeSet::new(),
            violations: Vec::new(),
            fail_at: Vec::new(),
            counts: BTreeMap::new(),
            gcs: Vec::new(),
        }
    }

    fn bad(&mut self, what: String) -> Result<Reply, ZeoError> {
        self.violations.push(what.clone());
        Err(ZeoError::Exception(Text::from(what)))
    }

    fn handle(&mut self, req: &Request) -> Result<Reply, ZeoError> {
        let name: &'static str = match req {
            Request::IteratorStart { .. } => "start",
            Request::IteratorNext { .. } => "next",
            Request::IteratorRecordStart { .. } => "record_start",
            Request::IteratorRecordNext { .. } => "record_next",
            Request::IteratorGc { .. } => "gc",
            other => panic!("not an iterator call: {other:?}"),
        };
        let n = self.counts.entry(name).or_default();
        *n += 1;
        if self.fail_at.contains(&(name, *n - 1)) {
            return Err(ZeoError::Exception(Text::from_static("disk on fire")));
        }
        match req {
            Request::IteratorStart { start, stop } => {
                let iid = self.next_iid;
                self.next_iid += 1;
                // Positioned at the first transaction at or after `start`.
                let pos = start.map_or(0, |s| self.txns.iter().take_while(|(h, _)| h.tid < s).count());
                self.txn_iters.insert(iid, (pos, None, *stop));
                Ok(Reply::IterId(IterId(iid)))
            }
            Request::IteratorNext { iid } => {
                let Some((pos, last, stop)) = self.txn_iters.get_mut(&iid.0) else {
                    return self.bad(format!("iterator_next on unknown iid {}", iid.0));
                };
                // Past `stop` the iteration ends (and closes its file), as at the end.
                if *pos < self.txns.len() && stop.is_none_or(|s| self.txns[*pos].0.tid <= s) {
                    *last = Some(*pos);
                    *pos += 1;
                    return Ok(Reply::IteratorNext(Some(self.txns[*pos - 1].0.clone())));
                }
                self.txn_iters.remove(&iid.0);
                self.closed.insert(iid.0);
                if self.rec_iters.values().any(|&(_, _, parent)| parent == iid.0) {
                    self.violations.push(format!("iterator {} ended under open record iterators", iid.0));
                }
                Ok(Reply::IteratorNext(None))
            }
            Request::IteratorRecordStart { txn_iid, tid } => {
                let last = self.txn_iters.get(&txn_iid.0).and_then(|(_, last, _)| *last);
                match last {
                    Some(i) if self.txns[i].0.tid == *tid => {
                        let iid = self.next_iid;
                        self.next_iid += 1;
                        self.rec_iters.insert(iid, (i, 0, txn_iid.0));
                        Ok(Reply::IterId(IterId(iid)))
                    }
                    _ => self.bad(format!("Out-of-order request for record iterator for {tid}")),
                }
            }
            Request::IteratorRecordNext { riid } => {
                let Some(&(i, at, parent)) = self.rec_iters.get(&riid.0) else {
                    return self.bad(format!("iterator_record_next on unknown iid {}", riid.0));
                };
                if self.closed.contains(&parent) {
                    return self.bad(format!("record iterator {} reads a closed file", riid.0));
                }
                match self.txns[i].1.get(at).cloned() {
                    Some(r) => {
                        self.rec_iters.insert(riid.0, (i, at + 1, parent));
                        Ok(Reply::IteratorRecordNext(Some(r)))
                    }
                    None => {
                        self.rec_iters.remove(&riid.0);
                        Ok(Reply::IteratorRecordNext(None))
                    }
                }
            }
            Request::IteratorGc { iids } => {
                self.gcs.push(iids.clone());
                for iid in iids {
                    self.rec_iters.remove(&iid.0);
                    if self.txn_iters.remove(&iid.0).is_some() {
                        self.closed.insert(iid.0);
                    }
                }
                Ok(Reply::Nil)
            }
            _ => unreachable!(),
        }
    }

    /// One round trip: the server handles everything the client sent, in order, and the
    /// client gets the replies. Returns the calls handled.
    pub(super) fn round(&mut self, s: &mut Script) -> Vec<Request> {
        let sent = s.sent();
        let mut replies = Vec::new();
        for m in &sent {
            let r = self.handle(request_of(m));
            if let ClientMessage::Call { msgid, .. } = m {
                replies.push((msgid.clone(), r));
            }
        }
        for (msgid, r) in replies {
            match r {
                Ok(reply) => s.deliver(&ServerMessage::reply(msgid, &reply)),
                Err(error) => s.error(msgid, error),
            }
        }
        sent.iter().map(|m| request_of(m).clone()).collect()
    }

    /// Round trips until the client sends nothing more; the calls of each round.
    pub(super) fn settle(&mut self, s: &mut Script) -> Vec<Vec<Request>> {
        let mut rounds = Vec::new();
        loop {
            let r = self.round(s);
            if r.is_empty() {
                return rounds;
            }
            rounds.push(r);
            assert!(rounds.len() < 10_000, "the client never stops sending");
        }
    }

    pub(super) fn expected(&self, i: usize) -> BackendOutcome {
        let (h, r) = &self.txns[i];
        BackendOutcome::WholeTxn(Some(Box::new(WholeTxn { header: h.clone(), records: r.clone() })))
    }
}

pub(super) fn records_of(t: u64) -> Vec<DataRecord> {
    (0..t % 4).map(|o| record(o + 1, t)).collect()
}

pub(super) fn count(round: &[Request], f: impl Fn(&Request) -> bool) -> usize {
    round.iter().filter(|r| f(r)).count()
}

pub(super) fn is_next(r: &Request) -> bool {
    matches!(r, Request::IteratorNext { .. })
}

/// Opens iterator `it` and asks for its first transaction; returns nothing (the model answers).
pub(super) fn open_and_ask(s: &mut Script, m: &mut Model, it: BackendIterId, stop: Option<Tid>) {
    s.client.submit(BackendReqId(1), BackendRequest::IterStart { iter: it, start: None, stop });
    m.round(s);
    assert_eq!(s.outcomes(), [(BackendReqId(1), BackendOutcome::Nil)]);
    s.client.submit(BackendReqId(100), BackendRequest::IterNextWhole { iter: it });
}

#[test]
fn read_ahead_keeps_k_transactions_in_flight_in_a_legal_order() {
    for enc in BOTH {
        let n = 40;
        let mut m = Model::new(n, records_of);
        let mut s = ready_at(enc, tid(n)); // every transaction is known committed
        let it = BackendIterId(10);
        open_and_ask(&mut s, &mut m, it, None);
        let rounds = m.settle(&mut s);
        assert!(m.violations.is_empty(), "{enc:?}: {:?}", m.violations);
        // The first request is answered; K more transactions are read ahead, no further.
        assert_eq!(s.outcomes(), [(BackendReqId(100), m.expected(0))]);
        let nexts: usize = rounds.iter().map(|r| count(r, is_next)).sum();
        assert_eq!(nexts, 1 + READ_AHEAD_TXNS, "{enc:?}");
        // Record chains run concurrently, and a round carries record_start(i) then next(i+1).
        let most = rounds
            .iter()
            .map(|r| count(r, |q| matches!(q, Request::IteratorRecordNext { .. })))
            .max()
            .unwrap_or(0);
        assert!(most >= 3, "record reads are not concurrent: {most}");
        for r in &rounds {
            if let Some(at) = r.iter().position(is_next) {
                assert!(
                    at == 0 || matches!(r[at - 1], Request::IteratorRecordStart { .. }),
                    "next not right after a record start: {r:?}"
                );
            }
        }
        // Buffered transactions are answered at once, in order, all of them.
        for i in 1..n as usize {
            let id = BackendReqId(100 + i as u64);
            s.client.submit(id, BackendRequest::IterNextWhole { iter: it });
            let got = s.outcomes();
            if got.is_empty() {
                m.settle(&mut s);
                assert_eq!(s.outcomes(), [(id, m.expected(i))], "{enc:?} txn {i}");
            } else {
                assert_eq!(got, [(id, m.expected(i))], "{enc:?} txn {i}");
            }
            s.client.check().expect("invariants");
        }
        s.client.submit(BackendReqId(500), BackendRequest::IterNextWhole { iter: it });
        m.settle(&mut s);
        assert_eq!(s.outcomes(), [(BackendReqId(500), BackendOutcome::WholeTxn(None))]);
        assert!(m.violations.is_empty(), "{enc:?}: {:?}", m.violations);
        assert!(m.txn_iters.is_empty() && m.rec_iters.is_empty(), "everything was freed by the server");
        assert!(m.gcs.is_empty(), "nothing to gc: {:?}", m.gcs);
        // The iterator ended: it is unknown now, as after IterNext.
        s.client.submit(BackendReqId(501), BackendRequest::IterNextWhole { iter: it });
        assert!(s.sent().is_empty());
        assert_eq!(culprit(&s.outcomes()[0].1), Culprit::Backend);
        s.client.check().expect("invariants");
    }
}

#[test]
fn read_ahead_takes_far_fewer_round_trips() {
    let n = 30;
    let count_rounds = |last: Tid| {
        let mut m = Model::new(n, records_of);
        let mut s = ready_at(Encoding::Msgpack, last);
        let it = BackendIterId(1);
        open_and_ask(&mut s, &mut m, it, None);
        let mut rounds = 0;
        let mut got = 0;
        loop {
            rounds += m.round(&mut s).len().min(1);
            for (_, o) in s.outcomes() {
                match o {
                    BackendOutcome::WholeTxn(Some(_)) => {
                        got += 1;
                        s.client.submit(BackendReqId(200 + got), BackendRequest::IterNextWhole { iter: it });
                    }
                    BackendOutcome::WholeTxn(None) => return (rounds, got),
                    other => panic!("{other:?}"),
                }
            }
            assert!(m.violations.is_empty(), "{:?}", m.violations);
        }
    };
    // Pipelined: about one round per transaction; unknown bound (nothing committed as far as
    // the client knows): one transaction at a time, records + 3 rounds each.
    let (fast, got) = count_rounds(tid(n));
    assert_eq!(got, n);
    let (slow, got) = count_rounds(Tid::ZERO);
    assert_eq!(got, n);
    let sequential: u64 = (1..=n).map(|t| t % 4 + 3).sum::<u64>() + 1;
    assert_eq!(slow, sequential as usize);
    assert!(fast <= n as usize + 6, "{fast} rounds for {n} transactions");
}

#[test]
fn past_the_bound_the_end_waits_for_the_record_reads() {
    for (last, stop) in [(tid(5), None), (tid(12), Some(tid(8))), (Tid::ZERO, None)] {
        // More transactions than the client knows of (another writer): past `last` (or with a
        // stop below it) an iterator_next may end the iteration, which closes the record
        // iterators' file.
        let n = 12;
        let mut m = Model::new(n, |t| (0..3).map(|o| record(o + 1, t)).collect());
        let mut s = ready_at(Encoding::Pickle, last);
        let it = BackendIterId(3);
        open_and_ask(&mut s, &mut m, it, stop);
        let mut got = Vec::new();
        // The iteration ends after `stop` (inclusive).
        let end = stop.map_or(n, Tid::get);
        for i in 0..=end {
            if i > 0 {
                s.client.submit(BackendReqId(100 + i), BackendRequest::IterNextWhole { iter: it });
            }
            for round in m.settle(&mut s) {
                // Without a bound, a next never shares a round trip with a record read.
                if stop.is_some() || last == Tid::ZERO {
                    let reads = count(&round, |r| matches!(r, Request::IteratorRecordNext { .. }));
                    assert!(reads == 0 || !round.iter().any(is_next), "{last:?}/{stop:?}: {round:?}");
                }
            }
            got.extend(s.outcomes());
        }
        assert!(m.violations.is_empty(), "{last:?}/{stop:?}: {:?}", m.violations);
        let expected: Vec<_> = (0..end as usize)
            .map(|i| (BackendReqId(100 + i as u64), m.expected(i)))
            .chain([(BackendReqId(100 + end), BackendOutcome::WholeTxn(None))])
            .collect();
        assert_eq!(got, expected, "{last:?}/{stop:?}");
        s.client.check().expect("invariants");
    }
}

#[test]
fn an_error_mid_read_ahead_fails_the_answer_at_its_place() {
    let n = 10;
    let mut m = Model::new(n, |t| vec![record(1, t), record(2, t)]);
    // The 8th record read (transaction 3's 2nd record... whichever it is) and the 6th next fail.
    m.fail_at = vec![("record_next", 7), ("next", 5)];
    let mut s = ready_at(Encoding::Msgpack, tid(n));
    let it = BackendIterId(4);
    open_and_ask(&mut s, &mut m, it, None);
    let rounds = m.settle(&mut s);
    assert!(m.violations.is_empty(), "{:?}", m.violations);
    // The failed record read's iterator is released, once.
    let gcs: Vec<&Request> =
        rounds.iter().flatten().filter(|r| matches!(r, Request::IteratorGc { .. })).collect();
    assert_eq!(gcs.len(), 1, "{gcs:?}");
    // Reading ahead stopped at the failed next: 5 headers, the 6th failed.
    assert_eq!(m.counts["next"], 6);
    let mut got = s.outcomes();
    for i in 1..6 {
        s.client.submit(BackendReqId(100 + i), BackendRequest::IterNextWhole { iter: it });
        got.extend(s.outcomes());
    }
    assert_eq!(got.len(), 6, "{got:?}");
    let failed: Vec<usize> = got
        .iter()
        .enumerate()
        .filter(|(_, (_, o))| matches!(o, BackendOutcome::Failed(_)))
        .map(|(i, _)| i)
        .collect();
    // One transaction failed where its record read failed, and the failed next after the five
    // buffered transactions.
    assert_eq!(failed.len(), 2, "{got:?}");
    assert_eq!(failed[1], 5);
    for (i, (id, o)) in got.iter().enumerate() {
        assert_eq!(*id, BackendReqId(100 + i as u64));
        if failed.contains(&i) {
            assert_eq!(culprit(o), Culprit::Backend);
        } else {
            assert_eq!(*o, m.expected(i));
        }
    }
    // No speculative next after a failed one: only when asked.
    assert!(m.settle(&mut s).is_empty());
    s.client.submit(BackendReqId(200), BackendRequest::IterNextWhole { iter: it });
    m.settle(&mut s);
    assert_eq!(s.outcomes(), [(BackendReqId(200), m.expected(5))]);
    assert!(m.violations.is_empty(), "{:?}", m.violations);
    s.client.check().expect("invariants");
}

#[test]
fn iter_drop_with_read_ahead_in_flight_sends_one_gc_with_the_open_iids() {
    for end in [false, true] {
        let mut s = ready_at(Encoding::Pickle, tid(50));
        let (it, other) = (BackendIterId(1), BackendIterId(2));
        for (i, iter) in [it, other].into_iter().enumerate() {
            s.client
                .submit(BackendReqId(i as u64), BackendRequest::IterStart { iter, start: None, stop: None });
        }
        let c = calls(&mut s);
        s.reply(c[0].1, Reply::IterId(IterId(7)));
        s.reply(c[1].1, Reply::IterId(IterId(3)));
        s.client.submit(BackendReqId(5), BackendRequest::IterNextWhole { iter: it });
        let c = calls(&mut s);
        assert_eq!(c[0].0, Request::IteratorNext { iid: IterId(7) });
        s.reply(c[0].1, Reply::IteratorNext(Some(header(1))));
        let c = calls(&mut s);
        assert_eq!(
            c.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(),
            [
                Request::IteratorRecordStart { txn_iid: IterId(7), tid: tid(1) },
                Request::IteratorNext { iid: IterId(7) }
            ]
        );
        let (rs1, next2) = (c[0].1, c[1].1);
        s.reply(rs1, Reply::IterId(IterId(8)));
        let c = calls(&mut s);
        assert_eq!(c[0].0, Request::IteratorRecordNext { riid: IterId(8) });
        let rn1 = c[0].1;
        s.reply(next2, Reply::IteratorNext(Some(header(2))));
        let c = calls(&mut s);
        assert_eq!(c[0].0, Request::IteratorRecordStart { txn_iid: IterId(7), tid: tid(2) });
        assert_eq!(c[1].0, Request::IteratorNext { iid: IterId(7) });
        let (rs2, next3) = (c[0].1, c[1].1);
        // In flight: record_next(8), record_start for 2, next for 3. The core drops both.
        s.client.submit(BackendReqId(6), BackendRequest::IterDrop { iters: vec![it, other] });
        let c = calls(&mut s);
        assert_eq!(c, [(Request::IteratorGc { iids: vec![IterId(3)] }, 0)], "the plain one at once");
        let got = s.outcomes();
        assert_eq!(got.len(), 4);
        assert_eq!(got[2].0, BackendReqId(5), "the waiting request is failed");
        assert_eq!(culprit(&got[2].1), Culprit::Backend);
        assert_eq!(got[3], (BackendReqId(6), BackendOutcome::Nil));
        // Late replies: nothing more is asked, nothing answered; the last one sends one gc.
        s.reply(rn1, Reply::IteratorRecordNext(Some(record(1, 1))));
        s.reply(rs2, Reply::IterId(IterId(9)));
        assert!(calls(&mut s).is_empty());
        let last = if end { Reply::IteratorNext(None) } else { Reply::IteratorNext(Some(header(3))) };
        s.reply(next3, last);
        let c = calls(&mut s);
        let expected = if end { vec![IterId(8), IterId(9)] } else { vec![IterId(7), IterId(8), IterId(9)] };
        assert_eq!(c, [(Request::IteratorGc { iids: expected }, 0)], "end {end}");
        assert!(s.outcomes().is_empty());
        s.client.check().expect("invariants");
        // A dropped iterator is unknown.
        s.client.submit(BackendReqId(7), BackendRequest::IterNextWhole { iter: it });
        assert_eq!(culprit(&s.outcomes()[0].1), Culprit::Backend);
        assert!(calls(&mut s).is_empty());
    }
}

#[test]
fn iter_drop_of_an_idle_read_ahead_frees_it_at_once() {
    let n = 3;
    let mut m = Model::new(n, records_of);
    let mut s = ready_at(Encoding::Msgpack, tid(n));
    let it = BackendIterId(1);
    open_and_ask(&mut s, &mut m, it, None);
    m.settle(&mut s);
    assert_eq!(s.outcomes().len(), 1);
    // Everything is read ahead (the end too); then dropped: only what is open is freed.
    s.client.submit(BackendReqId(2), BackendRequest::IterDrop { iters: vec![it] });
    m.settle(&mut s);
    assert!(m.gcs.is_empty(), "the iteration ended on the server: {:?}", m.gcs);
    assert_eq!(s.outcomes(), [(BackendReqId(2), BackendOutcome::Nil)]);
    // Not at the end yet: the transaction iterator is freed.
    let mut m = Model::new(40, records_of);
    let mut s = ready_at(Encoding::Msgpack, tid(40));
    open_and_ask(&mut s, &mut m, it, None);
    m.settle(&mut s);
    s.client.submit(BackendReqId(2), BackendRequest::IterDrop { iters: vec![it] });
    m.settle(&mut s);
    assert_eq!(m.gcs, [vec![IterId(0)]]);
    assert!(m.txn_iters.is_empty() && m.rec_iters.is_empty());
    assert!(m.violations.is_empty(), "{:?}", m.violations);
    s.client.check().expect("invariants");
}

#[test]
fn the_byte_bound_holds() {
    let size = 900_000usize; // under the test max_frame
    let big = |t: u64| {
        vec![DataRecord {
            oid: oid(1),
            tid: tid(t),
            data: Some(Bytes::from(vec![7u8; size])),
            data_txn: None,
        }]
    };
    let n = 30;
    let mut m = Model::new(n, big);
    let mut s = ready_at(Encoding::Msgpack, tid(n));
    let it = BackendIterId(1);
    open_and_ask(&mut s, &mut m, it, None);
    m.settle(&mut s);
    assert_eq!(s.outcomes().len(), 1);
    // Reading stops once B bytes are buffered; only the transactions whose headers were on
    // their way before the bytes of the earlier ones had arrived overshoot (two round trips).
    let buffered = m.counts["next"] - 1;
    let limit = READ_AHEAD_BYTES as usize / size + 3;
    assert!(buffered <= limit && buffered < READ_AHEAD_TXNS, "{buffered} transactions buffered");
    // Consuming frees room; the whole history arrives, in order.
    let mut got = 1;
    while got < n as usize {
        s.client.submit(BackendReqId(got as u64), BackendRequest::IterNextWhole { iter: it });
        m.settle(&mut s);
        let o = s.outcomes();
        assert_eq!(o, [(BackendReqId(got as u64), m.expected(got))]);
        got += 1;
        assert!(m.counts["next"] - got <= limit + 1, "the buffer stays bounded");
    }
    assert!(m.violations.is_empty(), "{:?}", m.violations);
}

#[test]
fn plain_calls_on_a_read_ahead_iterator_fail_and_losing_the_connection_answers_the_waiting() {
    let mut m = Model::new(5, records_of);
    let mut s = ready_at(Encoding::Pickle, tid(5));
    let it = BackendIterId(1);
    open_and_ask(&mut s, &mut m, it, None);
    s.client.submit(BackendReqId(101), BackendRequest::IterNextWhole { iter: it });
    s.client.submit(BackendReqId(2), BackendRequest::IterNext { iter: it });
    let got = s.outcomes();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, culprit(&got[0].1)), (BackendReqId(2), Culprit::Backend));
    s.sent();
    s.client.fail_all("reset");
    s.client.check().expect("invariants after fail_all");
    let got = s.outcomes();
    let ids: Vec<_> = got.iter().map(|(id, _)| id.0).collect();
    assert_eq!(ids, [100, 101]);
    assert!(got.iter().all(|(_, o)| culprit(o) == Culprit::Backend));
}

#[test]
fn iter_next_whole_before_the_start_is_answered_waits_for_it() {
    let mut s = ready_at(Encoding::Msgpack, tid(9));
    let it = BackendIterId(10);
    s.client.submit(BackendReqId(1), BackendRequest::IterStart { iter: it, start: None, stop: None });
    s.client.submit(BackendReqId(2), BackendRequest::IterNextWhole { iter: it });
    let c = calls(&mut s);
    assert_eq!(c.len(), 1, "the read waits for the start");
    s.reply(c[0].1, Reply::IterId(IterId(7)));
    let c = calls(&mut s);
    assert_eq!(c[0].0, Request::IteratorNext { iid: IterId(7) });
    // A transaction with two records, the last one the client knows of: no read-ahead past it
    // while its records are read.
    s.reply(c[0].1, Reply::IteratorNext(Some(header(9))));
    let c = calls(&mut s);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].0, Request::IteratorRecordStart { txn_iid: IterId(7), tid: tid(9) });
    s.reply(c[0].1, Reply::IterId(IterId(8)));
    for r in [record(1, 9), record(2, 9)] {
        let c = calls(&mut s);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, Request::IteratorRecordNext { riid: IterId(8) });
        s.reply(c[0].1, Reply::IteratorRecordNext(Some(r)));
    }
    assert_eq!(s.outcomes(), [(BackendReqId(1), BackendOutcome::Nil)], "not answered before the end");
    let c = calls(&mut s);
    s.reply(c[0].1, Reply::IteratorRecordNext(None));
    assert_eq!(s.outcomes(), [(BackendReqId(2), whole(9, vec![record(1, 9), record(2, 9)]))]);
    // Now the next one goes out (read ahead), and its end is kept for the next request.
    let c = calls(&mut s);
    assert_eq!(c, [(Request::IteratorNext { iid: IterId(7) }, c[0].1)]);
    s.reply(c[0].1, Reply::IteratorNext(None));
    assert!(calls(&mut s).is_empty());
    s.client.submit(BackendReqId(3), BackendRequest::IterNextWhole { iter: it });
    assert_eq!(s.outcomes(), [(BackendReqId(3), BackendOutcome::WholeTxn(None))]);
    s.client.check().expect("invariants");
}
