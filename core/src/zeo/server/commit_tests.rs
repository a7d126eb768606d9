//! Scenario tests of the two-phase commit in the server state machine: invalidations, the
//! order of voters, conflicts, transaction ids, abort and disconnect in every phase, the
//! lock timeout and group commit.

use std::time::Duration;

use bytes::Bytes;

use crate::ids::Tid;
use crate::wire::error::{StorageTxnDetails, ZeoError};
use crate::wire::message::{ClientMessage, MsgId, ServerMessage};
use crate::wire::push::Push;
use crate::wire::request::Request;
use crate::wire::value::{Text, Value};
use crate::wire::Encoding;
use crate::zeo::backend::BackendRequest;

use super::harness::{
    begin, config, empty_vote, invalidations, is_finish, is_vote, o, store, stx_msg, txn, Harness, ENCS,
};

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
        assert!(empty_vote(&Harness::result_of(&got, 3)));
        let tid = Harness::result_of(&got, 4).expect("tid");
        let tid = Tid::from_slice(tid.as_bytes().expect("bytes")).expect("tid");
        assert!(tid > Tid::ZERO);
        // info push just before the finish reply; no invalidation to the committer.
        let pos_info =
            got.iter().position(|m| matches!(m, ServerMessage::Push(Push::Info(_)))).expect("info");
        assert_eq!(pos_info + 1, got.len() - 1);
        assert!(invalidations(&got).is_empty());
        assert_eq!(invalidations(&h.take(2)), vec![(tid, vec![o(1)])]);
        // The other client loads the new data and sees it in getInvalidations.
        let mb = MsgId::load_before(o(1), Tid::MAX);
        h.send_msg(
            2,
            &ClientMessage::Call {
                msgid: mb.clone(),
                request: Request::LoadBefore { oid: o(1), before: Tid::MAX },
            },
        );
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

fn writes(h: &Harness) -> Vec<&'static str> {
    h.inflight
        .iter()
        .filter_map(|(_, _, r)| match r {
            BackendRequest::Vote(_) => Some("vote"),
            BackendRequest::Finish { .. } => Some("finish"),
            BackendRequest::Abort { .. } => Some("abort"),
            _ => None,
        })
        .collect()
}

/// Two clients with open transactions storing `o(1)` and `o(2)`, both voted; manual delivery.
fn two_voters(enc: Encoding) -> Harness {
    let mut h = Harness::new(config());
    h.client(1, enc);
    h.client(2, enc);
    h.auto = false;
    for (c, oid) in [(1, 1), (2, 2)] {
        h.cast(c, begin(c as i64));
        h.cast(c, store(o(oid), Tid::ZERO, b"x", c as i64));
        h.call(c, 10, Request::Vote { txn: txn(c as i64) });
    }
    h
}

#[test]
fn voters_are_served_in_order_and_the_second_vote_reply_waits() {
    for enc in ENCS {
        let mut h = two_voters(enc);
        assert_eq!(writes(&h), ["vote"], "only the first vote reaches the backend");
        h.call(2, 11, Request::Vote { txn: txn(2) });
        assert_eq!(
            stx_msg(&Harness::result_of(&h.take(2), 11).expect_err("twice")),
            Some("Already voting (waiting)")
        );
        h.deliver_where(is_vote);
        assert!(empty_vote(&Harness::result_of(&h.take(1), 10)));
        h.call(1, 12, Request::Vote { txn: txn(1) });
        assert_eq!(
            stx_msg(&Harness::result_of(&h.take(1), 12).expect_err("twice")),
            Some("Already voting (locked)")
        );
        assert!(h.take(2).is_empty(), "second voter still waiting");
        let st = h.srv.status(crate::zeo::events::StorageIdx(0)).expect("status");
        assert_eq!(st.waiting, 1);
        assert!(st.lock_time.is_some());
        h.call(1, 13, Request::TpcFinish { txn: txn(1) });
        h.deliver_where(is_finish);
        assert_eq!(writes(&h), ["vote"], "second vote emitted after the finish");
        h.deliver_where(is_vote);
        assert!(empty_vote(&Harness::result_of(&h.take(2), 10)));
        h.call(2, 14, Request::TpcFinish { txn: txn(2) });
        h.deliver_where(is_finish);
        let t2 = Harness::result_of(&h.take(2), 14).expect("finished");
        let t1 = invalidations(&h.take(1));
        assert_eq!(t1.len(), 1);
        assert_eq!(t1[0].0.to_bytes().as_slice(), t2.as_bytes().map(|b| b.as_ref()).expect("bytes"));
    }
}

#[test]
fn conflicts_return_maps_keep_the_transaction_and_a_revote_succeeds() {
    for enc in ENCS {
        let mut h = Harness::new(config());
        h.client(1, enc);
        h.client(2, enc);
        let t1 = h.commit(1, 1, &[(o(1), Tid::ZERO, b"one")]);
        h.take(2);
        h.cast(2, begin(5));
        h.cast(2, store(o(1), Tid::ZERO, b"mine", 5));
        h.cast(2, store(o(2), Tid::ZERO, b"other", 5));
        h.call(2, 3, Request::Vote { txn: txn(5) });
        let got = h.take(2);
        let v = Harness::result_of(&got, 3).expect("conflict maps");
        let items = v.as_seq().expect("list");
        assert_eq!(items.len(), 1);
        assert!(items[0].get("serials").is_some());
        assert_eq!(h.srv.status(crate::zeo::events::StorageIdx(0)).expect("st").conflicts, 1);
        // Resolved store, re-vote, finish: both objects committed.
        h.cast(2, store(o(1), t1, b"resolved", 5));
        h.call(2, 4, Request::Vote { txn: txn(5) });
        h.call(2, 6, Request::TpcFinish { txn: txn(5) });
        let got = h.take(2);
        assert!(empty_vote(&Harness::result_of(&got, 4)));
        assert!(Harness::result_of(&got, 6).is_ok());
        let inv = invalidations(&h.take(1));
        assert_eq!(inv.len(), 1);
        assert_eq!(inv[0].1, vec![o(2), o(1)], "first-write order after the replay");
        h.call(1, 7, Request::LoadSerial { oid: o(1), serial: inv[0].0 });
        assert_eq!(Harness::result_of(&h.take(1), 7), Ok(Value::bytes(Bytes::from_static(b"resolved"))));
    }
}

#[test]
fn read_conflicts_and_stale_deletes_fail_the_vote_and_forget_the_transaction() {
    let mut h = Harness::new(config());
    h.client(1, Encoding::Pickle);
    let t1 = h.commit(1, 1, &[(o(1), Tid::ZERO, b"one")]);
    h.cast(1, begin(2));
    h.cast(1, Request::CheckCurrentSerialInTransaction { oid: o(1), serial: Tid::ZERO, txn: txn(2) });
    h.call(1, 3, Request::Vote { txn: txn(2) });
    assert!(matches!(Harness::result_of(&h.take(1), 3), Err(ZeoError::ReadConflict(_))));
    h.call(1, 4, Request::TpcAbort { txn: txn(2) });
    assert_eq!(Harness::result_of(&h.take(1), 4), Ok(Value::None), "abort after a failed vote is harmless");
    h.cast(1, begin(3));
    h.cast(1, Request::DeleteObject { oid: o(1), serial: Tid::ZERO, txn: txn(3) });
    h.call(1, 5, Request::Vote { txn: txn(3) });
    assert!(matches!(Harness::result_of(&h.take(1), 5), Err(ZeoError::Conflict(_))));
    // A correct delete invalidates.
    h.client(2, Encoding::Msgpack);
    h.cast(1, begin(4));
    h.cast(1, Request::DeleteObject { oid: o(1), serial: t1, txn: txn(4) });
    h.call(1, 6, Request::Vote { txn: txn(4) });
    h.call(1, 7, Request::TpcFinish { txn: txn(4) });
    assert!(Harness::result_of(&h.take(1), 7).is_ok());
    assert_eq!(invalidations(&h.take(2))[0].1, vec![o(1)]);
}

#[test]
fn transaction_id_mismatches_and_finish_without_vote() {
    for enc in ENCS {
        let mut h = Harness::new(config());
        h.client(1, enc);
        h.call(1, 2, store(o(1), Tid::ZERO, b"x", 9));
        let e = Harness::result_of(&h.take(1), 2).expect_err("no txn");
        assert_eq!(
            e,
            ZeoError::StorageTransaction(StorageTxnDetails::Mismatch { current: None, given: txn(9) })
        );
        h.cast(1, begin(1));
        h.cast(1, begin(1));
        assert!(!h.closed(1), "same txid is ignored");
        h.call(1, 3, Request::TpcFinish { txn: txn(2) });
        h.call(1, 4, Request::TpcFinish { txn: txn(1) });
        h.call(1, 5, Request::TpcAbort { txn: txn(7) });
        h.call(1, 6, Request::Vote { txn: txn(7) });
        let got = h.take(1);
        assert_eq!(Harness::result_of(&got, 3), Ok(Value::None));
        assert_eq!(
            Harness::result_of(&got, 4),
            Err(ZeoError::AssertionError(Text::from_static("finished called wo lock")))
        );
        assert_eq!(Harness::result_of(&got, 5), Ok(Value::None));
        assert!(matches!(Harness::result_of(&got, 6), Err(ZeoError::StorageTransaction(_))));
        h.cast(1, begin(2));
        assert!(h.closed(1), "a second tpc_begin with another txid closes");
    }
}

#[test]
fn a_supplied_tid_not_after_the_last_is_refused_at_vote() {
    let mut h = Harness::new(config());
    h.client(1, Encoding::Pickle);
    let t1 = h.commit(1, 1, &[(o(1), Tid::ZERO, b"one")]);
    h.cast(
        1,
        Request::TpcBegin {
            txn: txn(2),
            user: Bytes::new(),
            description: Bytes::new(),
            extension: Default::default(),
            tid: Some(t1),
            status: crate::wire::types::TxnStatus::NORMAL,
        },
    );
    h.cast(1, Request::Restorea { oid: o(2), serial: t1, data: None, prev_txn: None, txn: txn(2) });
    h.call(1, 3, Request::Vote { txn: txn(2) });
    assert!(matches!(Harness::result_of(&h.take(1), 3), Err(ZeoError::StorageTransaction(_))));
    // A later supplied tid is used as is.
    let t9 = Tid::new(t1.get() + 1000);
    h.cast(
        1,
        Request::TpcBegin {
            txn: txn(4),
            user: Bytes::new(),
            description: Bytes::new(),
            extension: Default::default(),
            tid: Some(t9),
            status: crate::wire::types::TxnStatus::PACKED,
        },
    );
    h.call(1, 5, Request::Vote { txn: txn(4) });
    h.call(1, 6, Request::TpcFinish { txn: txn(4) });
    assert_eq!(Harness::result_of(&h.take(1), 6), Ok(Value::bytes(Bytes::copy_from_slice(&t9.to_bytes()))));
}

#[test]
fn abort_in_every_phase_releases_or_leaves_the_queue() {
    // Open.
    let mut h = Harness::new(config());
    h.client(1, Encoding::Pickle);
    h.cast(1, begin(1));
    h.call(1, 2, Request::TpcAbort { txn: txn(1) });
    assert_eq!(Harness::result_of(&h.take(1), 2), Ok(Value::None));
    // Voted (holder) and waiting.
    for enc in ENCS {
        let mut h = two_voters(enc);
        h.call(2, 20, Request::TpcAbort { txn: txn(2) });
        let got = h.take(2);
        assert_eq!(Harness::result_of(&got, 20), Ok(Value::None));
        assert!(Harness::result_of(&got, 10).is_err(), "the waiting vote is answered");
        h.deliver_where(is_vote);
        h.call(1, 21, Request::TpcAbort { txn: txn(1) });
        assert_eq!(Harness::result_of(&h.take(1), 21), Ok(Value::None));
        assert_eq!(writes(&h), ["abort"]);
        h.deliver_all();
        assert!(!h.backends[0].has_voted());
        // Lock is free: a new commit goes through.
        h.auto = true;
        h.commit(2, 3, &[(o(3), Tid::ZERO, b"z")]);
    }
}

#[test]
fn disconnect_in_every_phase_releases_the_lock_and_the_next_voter_proceeds() {
    for phase in ["waiting", "voting", "voted", "finishing"] {
        let mut h = two_voters(Encoding::Msgpack);
        let (gone, next) = if phase == "waiting" { (2, 1) } else { (1, 2) };
        match phase {
            "voted" => h.deliver_where(is_vote),
            "finishing" => {
                h.deliver_where(is_vote);
                h.call(1, 30, Request::TpcFinish { txn: txn(1) });
            }
            _ => {}
        }
        h.disconnect(gone);
        h.auto = true;
        h.drain();
        h.deliver_all();
        let got = h.take(next);
        assert!(empty_vote(&Harness::result_of(&got, 10)), "{phase}: next vote proceeds");
        if phase == "finishing" {
            assert_eq!(invalidations(&got).len(), 1, "finished commit still invalidates the others");
        }
        h.call(next, 31, Request::TpcFinish { txn: txn(next as i64) });
        assert!(Harness::result_of(&h.take(next), 31).is_ok(), "{phase}");
        assert!(!h.backends[0].has_voted());
        assert_eq!(h.backends[0].open_handles(), (0, 0));
    }
}

#[test]
fn a_transaction_holding_the_lock_too_long_is_aborted_and_closed() {
    let mut cfg = config();
    cfg.transaction_timeout = Some(Duration::from_secs(30));
    let mut h = Harness::new(cfg);
    h.client(1, Encoding::Pickle);
    h.client(2, Encoding::Pickle);
    h.cast(1, begin(1));
    h.call(1, 2, Request::Vote { txn: txn(1) });
    h.take(1);
    assert_eq!(h.srv.poll_timeout(), Some(h.now.mono + Duration::from_secs(30)));
    h.tick(10);
    h.srv.handle_timeout(h.now);
    h.drain();
    assert!(!h.closed(1));
    h.tick(25);
    h.srv.handle_timeout(h.now);
    h.drain();
    assert!(h.closed(1));
    assert_eq!(h.srv.poll_timeout(), None);
    assert!(!h.backends[0].has_voted(), "aborted in the backend");
    h.commit(2, 3, &[(o(1), Tid::ZERO, b"z")]);
    let st = h.srv.status(crate::zeo::events::StorageIdx(0)).expect("st");
    assert_eq!(st.timeout_thread_is_alive, Value::Bool(true));
    assert_eq!(st.connections, 1);
}

#[test]
fn tpc_abort_while_the_vote_is_in_flight_settles_when_it_arrives() {
    let mut h = Harness::new(config());
    h.client(1, Encoding::Pickle);
    h.client(2, Encoding::Pickle);
    h.auto = false;
    h.cast(1, begin(1));
    h.cast(1, Request::StoreBlobStart);
    h.cast(1, store(o(1), Tid::ZERO, b"x", 1));
    h.call(1, 2, Request::Vote { txn: txn(1) });
    h.call(1, 3, Request::TpcAbort { txn: txn(1) });
    h.auto = true;
    h.drain();
    let got = h.take(1);
    assert_eq!(Harness::result_of(&got, 3), Ok(Value::None));
    assert!(Harness::result_of(&got, 2).is_err(), "the vote reports the abort");
    assert!(!h.backends[0].has_voted());
    assert_eq!(h.backends[0].open_handles(), (0, 0));
    h.commit(2, 5, &[(o(1), Tid::ZERO, b"y")]);
    h.commit(1, 6, &[(o(2), Tid::ZERO, b"z")]);
}

/// Group commit: once the backend answers `Committed` the lock passes on and the next client
/// votes, but neither the committer's reply nor the invalidation leaves before `Finished`.
#[test]
fn group_commit_passes_the_lock_on_before_durability_and_announces_after() {
    for enc in ENCS {
        let mut h = Harness::new(config());
        h.backends[0].set_group_commit(true);
        h.client(1, enc);
        h.client(2, enc);
        let t0 = h.commit(1, 9, &[(o(5), Tid::ZERO, b"five")]);
        h.take(2);
        h.hold_durable = true;
        // Client 1 commits; durability is held back.
        h.cast(1, begin(1));
        h.cast(1, store(o(1), Tid::ZERO, b"one", 1));
        h.call(1, 10, Request::Vote { txn: txn(1) });
        h.call(1, 11, Request::TpcFinish { txn: txn(1) });
        let got1 = h.take(1);
        assert!(got1
            .iter()
            .all(|m| !matches!(m, ServerMessage::Reply { msgid, .. } if *msgid == MsgId::int(11))));
        assert_eq!(h.held.len(), 1, "Finished held back");
        // Client 2 gets the lock at once and its vote sees client 1's commit (serial check).
        h.cast(2, begin(2));
        h.cast(2, store(o(5), t0, b"five again", 2));
        h.call(2, 20, Request::Vote { txn: txn(2) });
        let got2 = h.take(2);
        assert!(Harness::result_of(&got2, 20).is_ok(), "{got2:?}");
        assert!(invalidations(&got2).is_empty(), "nothing announced before durability: {got2:?}");
        // A load from client 2 is answered as of t0: client 1's object is not visible yet.
        h.call(2, 21, Request::LoadBefore { oid: o(1), before: Tid::MAX });
        let got2 = h.take(2);
        assert!(Harness::result_of(&got2, 21).is_err(), "{got2:?}");
        h.call(2, 22, Request::LastTransaction);
        let got2 = h.take(2);
        assert_eq!(
            Harness::result_of(&got2, 22).expect("tid").as_bytes().map(|b| b.to_vec()),
            Some(t0.to_bytes().to_vec())
        );
        // Durable: client 1 gets info + its tid, client 2 the invalidation.
        h.release_held();
        let got1 = h.take(1);
        let t1 = Tid::from_slice(Harness::result_of(&got1, 11).expect("finish").as_bytes().expect("b"))
            .expect("t");
        assert!(t1 > t0);
        let got2 = h.take(2);
        assert_eq!(invalidations(&got2), vec![(t1, vec![o(1)])]);
        // Client 2 finishes after client 1, with a later tid.
        h.call(2, 23, Request::TpcFinish { txn: txn(2) });
        h.release_held();
        let got2 = h.take(2);
        let t2 = Tid::from_slice(Harness::result_of(&got2, 23).expect("finish").as_bytes().expect("b"))
            .expect("t");
        assert!(t2 > t1);
        assert_eq!(invalidations(&h.take(1)), vec![(t2, vec![o(5)])]);
        h.srv.begin_shutdown(h.now, Duration::from_secs(1));
        h.drain();
        assert!(h.srv.is_shut_down());
    }
}

/// Regression (proptest, group commit): a second `vote` while the first transaction waits for
/// durability is refused instead of starting a new vote on the same transaction.
#[test]
fn a_vote_while_the_commit_waits_for_durability_is_refused() {
    let mut h = Harness::new(config());
    h.backends[0].set_group_commit(true);
    h.hold_durable = true;
    h.client(1, Encoding::Pickle);
    h.cast(1, begin(1));
    h.cast(1, store(o(1), Tid::ZERO, b"one", 1));
    h.call(1, 10, Request::Vote { txn: txn(1) });
    h.call(1, 11, Request::TpcFinish { txn: txn(1) });
    h.call(1, 12, Request::Vote { txn: txn(1) });
    let got = h.take(1);
    assert_eq!(Harness::result_of(&got, 12).err().as_ref().and_then(stx_msg), Some("Already finishing"));
    h.release_held();
    let got = h.take(1);
    assert!(Harness::result_of(&got, 11).is_ok(), "{got:?}");
}
