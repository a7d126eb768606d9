//! Scenario tests of the last optimal backend (see `last_optimal`): a failed RAID serves again
//! when the backend that left last is back, at its `Up`, at a restart, or by `recover`.

use std::time::Duration;

use crate::ids::{Oid, Tid};
use crate::raid::{AdminError, RaidStatus};
use crate::zeo::backend::{BackendOutcome, BackendRequest};

use super::harness::{Fault, Harness};

fn is_finished(o: &Option<BackendOutcome>) -> bool {
    matches!(o, Some(BackendOutcome::Finished { .. }))
}

fn refused_as_failed(o: &BackendOutcome) -> bool {
    matches!(o, BackendOutcome::Failed(e) if format!("{:?}", e.error).contains("RAID has failed"))
}

/// The last optimal backend as the newest saved state has it.
fn saved_last(h: &Harness) -> Option<String> {
    h.saved.last().expect("saved").last_optimal.clone()
}

/// `n` backends; every one but b0 is degraded by a failed vote, then a commit lands on b0 alone.
fn only_b0_optimal(n: usize) -> Harness {
    let mut h = Harness::new(n);
    h.commit(&[(1, Tid::ZERO, "a")]);
    for b in 1..n as u32 {
        h.fault(b, "vote", Fault::Fail);
    }
    let serial = h.raid.last_tid();
    let (v, f) = h.commit(&[(1, serial, "b")]);
    assert!(matches!(v, BackendOutcome::Voted { .. }) && is_finished(&f), "{v:?} {f:?}");
    for b in 1..n as u32 {
        assert_eq!(h.state_word(b), "degraded");
    }
    h
}

#[test]
fn the_last_optimal_backend_serves_again_when_it_reconnects() {
    for n in [1, 2, 3] {
        for fault in [Fault::Down, Fault::Hang] {
            let ctx = format!("{n} backends, b0 {fault:?} at vote");
            let mut h = only_b0_optimal(n);
            let agreed = h.raid.last_tid();
            // The transient fault: b0 drops (or hangs until it times out and is disconnected).
            h.fault(0, "vote", fault);
            let serial = agreed;
            let v = h.vote_request(&[(1, serial, "lost")]);
            let mut got = h.request(v);
            if fault == Fault::Hang {
                h.advance(h.cfg.write_timeout + Duration::from_millis(1));
                got = h.answers.iter().rev().take(1).map(|(_, o)| o.clone()).collect();
                assert!(h.disconnects.contains(&crate::ids::BackendId(0)), "{ctx}");
                h.down(0); // the driver's disconnect
            }
            assert!(matches!(got.last(), Some(BackendOutcome::Failed(_))), "{ctx}: {got:?}");
            // Faults still degrade it: the RAID is failed, says so, and remembers b0.
            assert_eq!(h.state_word(0), "degraded", "{ctx}");
            assert_eq!(h.raid.status(), RaidStatus::Failed, "{ctx}");
            assert_eq!(h.raid.last_optimal(), Some("b0"), "{ctx}");
            assert_eq!(saved_last(&h).as_deref(), Some("b0"), "{ctx}: persisted");
            let (v, _) = h.commit(&[(2, Tid::ZERO, "x")]);
            assert!(refused_as_failed(&v), "{ctx}: {v:?}");
            let read =
                h.one(BackendRequest::LoadBefore { oid: Oid::new(1), before: Tid::MAX, snapshot: agreed });
            assert!(matches!(read, BackendOutcome::Failed(_)), "{ctx}: {read:?}");
            // Another backend coming up changes nothing: it may lack acknowledged commits.
            if n > 1 {
                h.up(1);
                assert_eq!(h.state_word(1), "degraded", "{ctx}");
                assert_eq!(h.raid.status(), RaidStatus::Failed, "{ctx}");
            }
            // b0 is back: optimal at once, persisted, the others stay degraded.
            h.up(0);
            assert_eq!(h.state_word(0), "optimal", "{ctx}");
            assert_eq!(h.raid.last_optimal(), None, "{ctx}");
            assert_eq!(saved_last(&h), None, "{ctx}");
            assert!(h.saved.last().expect("saved").backends[0].state.is_optimal(), "{ctx}");
            let want = if n == 1 { RaidStatus::Optimal } else { RaidStatus::Degraded };
            assert_eq!(h.raid.status(), want, "{ctx}");
            for b in 1..n as u32 {
                assert_eq!(h.state_word(b), "degraded", "{ctx}");
            }
            assert_eq!(h.raid.last_tid(), agreed, "{ctx}");
            // Reads and commits go on, on b0; the data acknowledged before is there.
            let read =
                h.one(BackendRequest::LoadBefore { oid: Oid::new(1), before: Tid::MAX, snapshot: agreed });
            assert!(
                matches!(&read, BackendOutcome::LoadBefore(Some(r)) if &r.data[..] == b"b"),
                "{ctx}: {read:?}"
            );
            let (v, f) = h.commit(&[(1, agreed, "c")]);
            assert!(matches!(v, BackendOutcome::Voted { .. }) && is_finished(&f), "{ctx}: {v:?} {f:?}");
            assert!(h.raid.last_tid() > agreed, "{ctx}");
            assert_eq!(h.load(0, 1).as_deref(), Some(&b"c"[..]), "{ctx}");
        }
    }
}

#[test]
fn transactions_it_finished_but_nobody_acknowledged_are_kept_and_tids_go_on_above_them() {
    let mut h = only_b0_optimal(2);
    let agreed = h.raid.last_tid();
    h.down(0);
    assert_eq!(h.raid.status(), RaidStatus::Failed);
    // While away (or just before its answer got lost) b0 finished one more transaction.
    let v = h.vote_request(&[(5, Tid::ZERO, "extra")]);
    let BackendRequest::Vote(req) = &v else { unreachable!() };
    let extra = req.tid;
    assert!(matches!(h.backends[0].handle(v).last(), Some(BackendOutcome::Voted { .. })));
    assert!(matches!(
        h.backends[0].handle(BackendRequest::Finish { tid: extra }).last(),
        Some(BackendOutcome::Finished { .. })
    ));
    assert!(extra > agreed);
    h.up(0);
    assert_eq!(h.state_word(0), "optimal");
    assert_eq!(h.raid.last_tid(), extra, "the agreed tid is raised to b0's last tid");
    assert_eq!(h.saved.last().expect("saved").last_tid, extra, "and persisted");
    assert_eq!(h.moved_on, vec![extra], "the front is told its history moved on");
    let (v, f) = h.commit(&[(6, Tid::ZERO, "after")]);
    let Some(BackendOutcome::Finished { tid, .. }) = f else { panic!("{v:?} {f:?}") };
    assert!(tid > extra, "{tid} after {extra}");
    assert_eq!(h.raid.last_tid(), tid);
    assert_eq!(h.load(0, 5).as_deref(), Some(&b"extra"[..]));
}

/// Simulation seed 4149 (and 13 more of the 10,000-seed run): the last optimal backend came
/// back reporting a last tid ahead of what it holds (a wrong answer to `lastTransaction`); the
/// RAID took it back and raised its last tid to it. It left again before any commit, and came
/// back with its true last tid: judged against the raised tid it had "lost acknowledged
/// commits" and the RAID stayed failed for good. It holds every acknowledged commit: it serves.
#[test]
fn a_last_optimal_backend_that_reported_more_than_it_holds_still_serves_with_what_it_holds() {
    let mut h = only_b0_optimal(2);
    let acked = h.raid.last_tid();
    h.down(0);
    let claimed = Tid::new(acked.get() + 1_000);
    h.up_reporting(0, claimed);
    assert_eq!(h.state_word(0), "optimal");
    assert_eq!(h.raid.last_tid(), claimed);
    h.down(0);
    assert_eq!(h.raid.status(), RaidStatus::Failed);
    let saved = h.saved.last().expect("saved").clone();
    assert_eq!((saved.last_tid, saved.acked_tid), (claimed, acked), "both persisted");
    // Back with what it really holds: every acknowledged commit. It serves again; tids never
    // go back.
    h.up(0);
    assert_eq!(h.state_word(0), "optimal", "{}", h.reason(0));
    assert_eq!(h.raid.status(), RaidStatus::Degraded);
    assert_eq!(h.raid.last_tid(), claimed);
    h.raid.check().expect("invariants");
    // A recovery copies what the optimal backends hold (not up to the raised tid, which no
    // backend holds) and ends.
    h.raid.recover(h.now, "b1", None).expect("recover");
    h.run();
    assert_eq!(h.state_word(1), "optimal", "{:?}", h.raid.last_recovery());
    assert_eq!(h.raid.last_recovery().and_then(|e| e.failure.clone()), None);
    // Commits go on above the raised tid, on both.
    let (v, f) = h.commit(&[(1, acked, "after")]);
    let Some(BackendOutcome::Finished { tid, .. }) = f else { panic!("{v:?} {f:?}") };
    assert!(tid > claimed, "{tid} after {claimed}");
    assert_eq!(h.load(0, 1).as_deref(), Some(&b"after"[..]));
    assert_eq!(h.load(1, 1).as_deref(), Some(&b"after"[..]));
    h.raid.check().expect("invariants");
}

/// A last optimal backend that really lost an acknowledged commit stays out, also after its
/// last tid was raised by a report of more.
#[test]
fn a_last_optimal_backend_behind_the_acknowledged_tid_stays_out() {
    let mut h = only_b0_optimal(2);
    let acked = h.raid.last_tid();
    h.down(0);
    h.up_reporting(0, Tid::new(acked.get() - 1));
    assert_eq!(h.state_word(0), "degraded");
    assert_eq!(h.raid.status(), RaidStatus::Failed);
    assert!(
        matches!(h.raid.recover(h.now, "b0", None), Err(AdminError::NoSource { hint }) if hint.contains("lost acknowledged commits"))
    );
    h.up(0);
    assert_eq!(h.state_word(0), "optimal");
}

#[test]
fn a_transaction_voted_before_it_left_is_aborted_when_it_comes_back_and_never_acknowledged() {
    let mut h = only_b0_optimal(2);
    let v = h.vote_request(&[(7, Tid::ZERO, "voted")]);
    let BackendRequest::Vote(req) = &v else { unreachable!() };
    let tid = req.tid;
    assert!(matches!(h.one(v), BackendOutcome::Voted { .. }));
    h.down(0);
    h.up(0);
    assert_eq!(h.state_word(0), "optimal");
    assert!(
        h.received.iter().any(|(b, r)| b.0 == 0 && *r == BackendRequest::Abort { tid }),
        "the transaction voted on its old connection is aborted"
    );
    let fin = h.one(BackendRequest::Finish { tid });
    assert!(matches!(fin, BackendOutcome::Failed(_)), "{fin:?}");
    assert_eq!(h.load(0, 7), None);
    assert_eq!(h.state_word(0), "optimal", "not degraded again");
    let (v, f) = h.commit(&[(8, Tid::ZERO, "next")]);
    assert!(matches!(v, BackendOutcome::Voted { .. }) && is_finished(&f), "{v:?} {f:?}");
}

#[test]
fn back_behind_the_agreed_tid_it_stays_degraded() {
    let mut h = Harness::new(2);
    h.commit(&[(1, Tid::ZERO, "a")]);
    h.fault(1, "vote", Fault::Fail);
    let old_b0 = h.backends[0].clone();
    let serial = h.raid.last_tid();
    h.commit(&[(1, serial, "b")]);
    let agreed = h.raid.last_tid();
    h.down(0);
    // b0 comes back without the last acknowledged commit (its storage lost it).
    h.backends[0] = old_b0;
    h.up(0);
    assert_eq!(h.state_word(0), "degraded");
    assert!(h.reason(0).contains("disconnected"), "{}", h.reason(0));
    assert_eq!(h.raid.status(), RaidStatus::Failed);
    assert_eq!(h.raid.last_optimal(), Some("b0"));
    assert_eq!(h.raid.last_tid(), agreed, "tids never go back");
    // `recover` says why it cannot help, and what would.
    let e = h.raid.recover(h.now, "b0", None).expect_err("behind").to_string();
    assert!(e.contains("lost acknowledged commits") && e.contains("restore"), "{e}");
    let e = h.raid.recover(h.now, "b1", None).expect_err("no source").to_string();
    assert!(e.contains("last optimal backend is b0") && e.contains("bring b0 back"), "{e}");
    let (v, _) = h.commit(&[(2, Tid::ZERO, "x")]);
    assert!(refused_as_failed(&v), "{v:?}");
}

#[test]
fn a_restart_of_a_failed_raid_takes_its_last_optimal_backend_when_reachable() {
    let mut h = only_b0_optimal(2);
    let agreed = h.raid.last_tid();
    h.down(0);
    let failed = h.saved.last().cloned().expect("saved");
    assert!(failed.backends.iter().all(|b| !b.state.is_optimal()));
    assert_eq!(failed.last_optimal.as_deref(), Some("b0"));
    // Reachable at start-up: optimal (the others stay degraded, start-up rule 1).
    let mut r = Harness::with(h.backends.clone(), Some(failed.clone()));
    assert_eq!((r.state_word(0), r.state_word(1)), ("optimal", "degraded"));
    assert_eq!(r.raid.status(), RaidStatus::Degraded);
    assert_eq!(r.raid.last_optimal(), None);
    assert_eq!(saved_last(&r), None);
    let (v, f) = r.commit(&[(1, agreed, "c")]);
    assert!(matches!(v, BackendOutcome::Voted { .. }) && is_finished(&f), "{v:?} {f:?}");
    // Unreachable at start-up: still failed, still remembered, and it serves once it is up.
    let mut r = Harness::with_reachable(h.backends.clone(), Some(failed), &[false, true]);
    assert_eq!(r.raid.status(), RaidStatus::Failed);
    assert_eq!(r.raid.last_optimal(), Some("b0"));
    assert_eq!(saved_last(&r).as_deref(), Some("b0"));
    r.up(0);
    assert_eq!(r.state_word(0), "optimal");
    let (v, f) = r.commit(&[(1, agreed, "c")]);
    assert!(matches!(v, BackendOutcome::Voted { .. }) && is_finished(&f), "{v:?} {f:?}");
}

#[test]
fn a_restart_with_every_optimal_backend_unreachable_remembers_one_of_them() {
    let mut h = Harness::new(2);
    h.commit(&[(1, Tid::ZERO, "a")]);
    let saved = h.saved.last().cloned().expect("saved");
    assert_eq!(saved.last_optimal, None);
    let mut r = Harness::with_reachable(h.backends.clone(), Some(saved), &[false, false]);
    assert_eq!(r.raid.status(), RaidStatus::Failed);
    assert_eq!(r.raid.last_optimal(), Some("b0"));
    r.up(1);
    assert_eq!(r.raid.status(), RaidStatus::Failed, "only the remembered one comes back by itself");
    r.up(0);
    assert_eq!(r.raid.status(), RaidStatus::Degraded);
    assert_eq!(r.state_word(0), "optimal");
}

#[test]
fn recover_promotes_a_disabled_or_failed_last_optimal_backend_without_a_copy() {
    let mut h = only_b0_optimal(2);
    h.down(0);
    h.raid.disable(h.now, "b0").expect("a degraded backend can be disabled");
    h.run();
    assert_eq!(h.state_word(0), "disabled");
    assert_eq!(h.raid.last_optimal(), Some("b0"), "still the last optimal one");
    // Not connected: refused, saying what would help.
    let e = h.raid.recover(h.now, "b0", None).expect_err("not connected").to_string();
    assert!(e.contains("not connected") && e.contains("recover b0"), "{e}");
    // Up while disabled: the operator's decision stands.
    h.up(0);
    assert_eq!(h.state_word(0), "disabled");
    assert_eq!(h.raid.status(), RaidStatus::Failed);
    let before = h.received.len();
    h.raid.recover(h.now, "b0", None).expect("recover the last optimal backend");
    h.run();
    assert_eq!(h.state_word(0), "optimal");
    assert!(h.raid.recovery().is_none(), "no copy ran");
    assert!(
        !h.received[before..].iter().any(|(_, r)| matches!(r, BackendRequest::IterStart { .. })),
        "nothing was read for a copy"
    );
    assert_eq!(saved_last(&h), None);
    assert!(h.saved.last().expect("saved").backends[0].state.is_optimal());
    let (v, f) = h.commit(&[(3, Tid::ZERO, "z")]);
    assert!(matches!(v, BackendOutcome::Voted { .. }) && is_finished(&f), "{v:?} {f:?}");
    // Now a normal recovery of b1 from b0 is possible again.
    h.raid.recover(h.now, "b1", None).expect("recover b1 from b0");
    h.run();
    for _ in 0..100 {
        if h.state_word(1) == "optimal" {
            break;
        }
        h.advance(Duration::from_millis(100));
    }
    assert_eq!(h.state_word(1), "optimal", "recovered from b0");
    assert_eq!(h.raid.last_recovery().map(|e| e.failure.clone()), Some(None));
    assert_eq!(h.load(1, 3).as_deref(), Some(&b"z"[..]));

    // A last optimal backend degraded by an error, still connected (no `Up` will come):
    // `recover` promotes it.
    let mut h = only_b0_optimal(2);
    h.fault(0, "vote", Fault::Fail);
    let (v, _) = h.commit(&[(4, Tid::ZERO, "y")]);
    assert!(matches!(v, BackendOutcome::Failed(_)), "{v:?}");
    assert_eq!(h.raid.status(), RaidStatus::Failed);
    h.raid.recover(h.now, "b0", None).expect("connected and holding every acknowledged commit");
    h.run();
    assert_eq!(h.state_word(0), "optimal");
    assert!(matches!(h.raid.recover(h.now, "b0", None), Err(AdminError::WrongState { .. })));
}

#[test]
fn removing_the_last_optimal_backend_forgets_it() {
    let mut h = only_b0_optimal(2);
    h.down(0);
    h.raid.remove_backend(h.now, "b0").expect("a degraded backend can be removed");
    h.run();
    assert_eq!(h.raid.last_optimal(), None);
    assert_eq!(saved_last(&h), None);
    let e = h.raid.recover(h.now, "b1", None).expect_err("no source").to_string();
    assert!(e.contains("no backend is known to hold every acknowledged commit"), "{e}");
}

#[test]
fn a_late_failure_from_its_old_connection_does_not_degrade_it_again() {
    let mut h = only_b0_optimal(2);
    let v = h.vote_request(&[(7, Tid::ZERO, "voted")]);
    let BackendRequest::Vote(req) = &v else { unreachable!() };
    let tid = req.tid;
    assert!(matches!(h.one(v), BackendOutcome::Voted { .. }));
    h.down(0);
    // The front aborts; the RAID still tells b0 (its old connection) to abort: that request
    // is in flight when b0 comes back.
    h.queued = true;
    assert_eq!(h.one(BackendRequest::Abort { tid }), BackendOutcome::Nil);
    let (stale, _) = h.queues[0].pop_front().expect("an abort sent to b0 while it was away");
    h.queued = false;
    h.up(0);
    assert_eq!(h.state_word(0), "optimal");
    // The old connection's failure for it arrives late: ignored.
    h.raid.handle_outcome(
        h.now,
        crate::ids::BackendId(0),
        stale,
        BackendOutcome::Failed(crate::zeo::backend::BackendError::backend("connection lost")),
    );
    h.run();
    assert_eq!(h.state_word(0), "optimal", "{}", h.reason(0));
    h.advance(h.cfg.write_timeout * 2);
    assert_eq!(h.state_word(0), "optimal", "no deadline left for the old request: {}", h.reason(0));
    assert_eq!(h.load(0, 7), None, "the voted transaction was aborted");
    let (v, f) = h.commit(&[(8, Tid::ZERO, "next")]);
    assert!(matches!(v, BackendOutcome::Voted { .. }) && is_finished(&f), "{v:?} {f:?}");
}

#[test]
fn a_raid_that_never_acknowledged_a_commit_serves_from_any_backend_the_operator_recovers() {
    // No commit ever acknowledged, and no last optimal backend known (it was removed; a first
    // start that reached no backend is the same): `recover` of a connected backend promotes it.
    let mut h = Harness::new(3);
    h.down(1);
    h.down(2);
    h.down(0);
    h.raid.remove_backend(h.now, "b0").expect("a degraded backend can be removed");
    h.run();
    assert_eq!((h.raid.status(), h.raid.last_optimal()), (RaidStatus::Failed, None));
    let e = h.raid.recover(h.now, "b1", None).expect_err("b1 is not connected").to_string();
    assert!(e.contains("never acknowledged") && e.contains("not connected"), "{e}");
    h.up(1);
    h.run();
    h.raid.recover(h.now, "b1", None).expect("nothing acknowledged: b1 may serve");
    h.run();
    let b1 = h.raid.details().into_iter().find(|d| d.name == "b1").map(|d| d.state.word());
    assert_eq!(b1, Some("optimal"));
    h.raid.check().expect("invariants");
    let (v, f) = h.commit(&[(1, Tid::ZERO, "after")]);
    assert!(matches!(v, BackendOutcome::Voted { .. }) && is_finished(&f), "{v:?} {f:?}");
}
