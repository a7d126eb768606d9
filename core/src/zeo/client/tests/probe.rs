//! The check of the server's `lastTransaction` before `Ready` (`probe`), against the model of
//! the stock server's iterators.

use super::whole::{count, is_next, open_and_ask, record, records_of, Model};
use super::*;

/// A client registered with a server that claims `claimed` as its last transaction, its
/// check's first call sent (not yet looked at).
fn checking(enc: Encoding, claimed: Tid) -> Script {
    let mut s = Script::announced(enc, cfg());
    s.sent();
    s.reply(1, Reply::Register(Some(claimed)));
    s.sent(); // get_info, lastTransaction
    s.reply(2, Reply::GetInfo(StorageInfo::default()));
    s.reply(3, Reply::LastTransaction(claimed));
    assert_eq!(s.client.phase(), Phase::Checking);
    s
}

/// Registers against `m`, the server claiming `claimed` as its last transaction; the check is
/// answered by the model. Returns the script and what `Ready` reported.
fn ready_via(enc: Encoding, claimed: Tid, m: &mut Model) -> (Script, BackendInfo) {
    let mut s = checking(enc, claimed);
    let rounds = m.settle(&mut s);
    assert!(rounds.len() < 2 * crate::zeo::client::probe::MAX_PROBES as usize, "{} rounds", rounds.len());
    let Some(ClientEvent::Ready(info)) = s.client.poll_event() else { panic!("no Ready after {rounds:?}") };
    s.client.check().expect("invariants");
    assert!(m.violations.is_empty(), "{:?}", m.violations);
    assert!(m.txn_iters.is_empty(), "the check left iterators open: {:?}", m.txn_iters);
    (s, info)
}

#[test]
fn a_server_that_names_a_transaction_it_dropped_counts_as_holding_the_one_before() {
    // A FileStorage killed between vote and finish: reopened, it cut transaction 13 off its
    // file but names it as its last (what failed a CI run: the read-ahead took 13 for a
    // transaction its iterator would return, and ended the iteration under a record read).
    for enc in BOTH {
        let n = 12;
        let mut m = Model::new(n, |t| (0..3).map(|o| record(o + 1, t)).collect());
        let (mut s, info) = ready_via(enc, tid(n + 1), &mut m);
        assert_eq!(info.last_tid, tid(n), "{enc:?}");
        // Reading the whole history ahead is legal all the way.
        let it = BackendIterId(7);
        open_and_ask(&mut s, &mut m, it, None);
        let mut got = Vec::new();
        for i in 0..=n {
            if i > 0 {
                s.client.submit(BackendReqId(100 + i), BackendRequest::IterNextWhole { iter: it });
            }
            m.settle(&mut s);
            got.extend(s.outcomes());
            assert!(m.violations.is_empty(), "{enc:?}: {:?}", m.violations);
        }
        assert_eq!(got.len() as u64, n + 1, "{enc:?}");
        assert_eq!(got[n as usize].1, BackendOutcome::WholeTxn(None), "{enc:?}");
        for (i, (_, o)) in got[..n as usize].iter().enumerate() {
            assert_eq!(o, &m.expected(i), "{enc:?} txn {i}");
        }
    }
}

#[test]
fn a_server_that_holds_its_last_transaction_is_taken_at_its_word_after_one_question() {
    let mut m = Model::new(20, records_of);
    let (_, info) = ready_via(Encoding::Msgpack, tid(20), &mut m);
    assert_eq!(info.last_tid, tid(20));
    assert_eq!(m.counts.get("start"), Some(&1));
    assert_eq!(m.gcs.len(), 1, "the check's iterator is freed: {:?}", m.gcs);
}

#[test]
fn the_search_finds_the_newest_transaction_held_among_sparse_tids() {
    // Tids as timestamps are far apart; the dropped one can be far above the one before.
    let tids: Vec<u64> = (1..=40).map(|i| 1_000_000 * i + i * i).collect();
    let held = *tids.last().unwrap_or(&0);
    for claimed in [held + 1, held + 7, held + (1 << 30), u64::MAX >> 1] {
        let mut m = Model::with_tids(tids.clone(), records_of);
        let (_, info) = ready_via(Encoding::Pickle, Tid::new(claimed), &mut m);
        assert_eq!(info.last_tid, Tid::new(held), "claimed {claimed}");
        let asked = m.counts.get("start").copied().unwrap_or(0);
        assert!(asked <= 130, "{asked} questions for claimed {claimed}");
    }
    // An empty file that names a transaction: it holds nothing.
    let mut m = Model::with_tids(Vec::new(), records_of);
    let (_, info) = ready_via(Encoding::Msgpack, tid(7), &mut m);
    assert_eq!(info.last_tid, Tid::ZERO);
}

#[test]
fn a_check_that_fails_takes_the_server_at_its_word_and_reads_ahead_with_care() {
    for fail in [("start", 0), ("next", 0)] {
        // The server cannot answer the check (a storage without iteration, say).
        let n = 10;
        let mut m = Model::new(n, |t| (0..2).map(|o| record(o + 1, t)).collect());
        m.fail_at.push(fail);
        let (mut s, info) = ready_via(Encoding::Msgpack, tid(n + 1), &mut m);
        assert_eq!(info.last_tid, tid(n + 1), "{fail:?}");
        m.fail_at.clear();
        // Nothing is known held: a next never shares a round trip with a record read, and the
        // iteration is read to its end without a violation.
        let it = BackendIterId(2);
        open_and_ask(&mut s, &mut m, it, None);
        for i in 0..=n {
            if i > 0 {
                s.client.submit(BackendReqId(200 + i), BackendRequest::IterNextWhole { iter: it });
            }
            for round in m.settle(&mut s) {
                let reads = count(&round, |r| matches!(r, Request::IteratorRecordNext { .. }));
                assert!(reads == 0 || !round.iter().any(is_next), "{fail:?}: {round:?}");
            }
            s.outcomes();
        }
        assert!(m.violations.is_empty(), "{fail:?}: {:?}", m.violations);
    }
}

#[test]
fn requests_submitted_during_the_check_go_out_once_it_is_done() {
    let mut m = Model::new(3, records_of);
    let mut s = checking(Encoding::Msgpack, tid(4));
    s.client.submit(
        BackendReqId(1),
        BackendRequest::IterStart { iter: BackendIterId(1), start: None, stop: None },
    );
    let first = m.round(&mut s);
    assert!(
        first.iter().all(|r| matches!(r, Request::IteratorStart { start: Some(_), stop: Some(_) })),
        "only the check goes out while checking: {first:?}"
    );
    m.settle(&mut s);
    assert!(matches!(s.client.poll_event(), Some(ClientEvent::Ready(i)) if i.last_tid == tid(3)));
    assert_eq!(s.outcomes(), [(BackendReqId(1), BackendOutcome::Nil)]);
}

#[test]
fn losing_the_connection_during_the_check_answers_what_waited_and_closes() {
    let mut s = checking(Encoding::Pickle, tid(9));
    s.client.submit(BackendReqId(5), BackendRequest::NewOids { n: 1 });
    s.client.fail_all("reset by peer");
    s.client.check().expect("invariants after the loss");
    assert_eq!(s.client.phase(), Phase::Closed);
    let got = s.outcomes();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0, culprit(&got[0].1)), (BackendReqId(5), Culprit::Backend));
    assert!(s.client.poll_event().is_none(), "no Ready after the loss");
}
