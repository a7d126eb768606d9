//! Scenario tests of the RAID over in-memory backends: commits and reads with a backend failing,
//! hanging or disconnecting at each step, with two and with three backends; disagreements;
//! client errors; persistence before acknowledgement; oids; admin commands.
//!
//! In the backend interface a transaction's `tpc_begin`, stores and `vote` travel as one `Vote`
//! (the front buffers them); a remote backend failing at `tpc_begin` or at a store therefore
//! shows up as a failed vote, or as a dropped connection (ZEO closes on an async error) — the
//! `Fault::Fail` and `Fault::Down` cases at "vote".

use std::time::Duration;

use bytes::Bytes;

use crate::ids::{BackendId, Oid, Tid};
use crate::raid::{BackendState, RaidAction, RaidStatus};
use crate::wire::error::ZeoError;
use crate::zeo::backend::{BackendEvent, BackendIterId, BackendOutcome, BackendRequest, Culprit};

use super::harness::{Fault, Harness};

const FAULTS: [Fault; 3] = [Fault::Fail, Fault::Hang, Fault::Down];

fn is_finished(o: &Option<BackendOutcome>) -> bool {
    matches!(o, Some(BackendOutcome::Finished { .. }))
}

/// Lets a hung request time out (the write deadline is the longest of the two).
fn expire(h: &mut Harness) {
    h.advance(h.cfg.write_timeout + Duration::from_millis(1));
}

#[test]
fn commits_are_mirrored_and_reads_spread_over_every_backend() {
    for n in [2, 3] {
        let mut h = Harness::new(n);
        assert_eq!(h.raid.status(), RaidStatus::Optimal);
        let (v, f) = h.commit(&[(1, Tid::ZERO, "one")]);
        assert!(matches!(v, BackendOutcome::Voted { .. }), "{v:?}");
        assert!(is_finished(&f), "{f:?}");
        for b in 0..n {
            assert_eq!(h.load(b, 1).as_deref(), Some(&b"one"[..]), "backend {b}");
        }
        // Concurrent reads go to the least loaded backend: all of them get some.
        let before = h.received.len();
        let tid = h.raid.last_tid();
        for _ in 0..(3 * n) {
            h.raid.handle_request(
                h.now,
                crate::zeo::backend::BackendReqId(1000 + h.received.len() as u64),
                BackendRequest::LoadSerial { oid: Oid::new(1), serial: tid },
            );
        }
        h.run();
        for b in 0..n {
            let got = h.received[before..].iter().filter(|(x, _)| x.0 == b as u32).count();
            assert!(got >= 2, "backend {b} got {got} of {} reads", 3 * n);
        }
    }
}

#[test]
fn a_backend_failing_at_each_commit_step_is_degraded_and_the_client_sees_no_error() {
    for n in [2u32, 3] {
        for bad in [0, n - 1] {
            for step in ["vote", "finish"] {
                for fault in FAULTS {
                    let ctx = format!("{n} backends, b{bad} {fault:?} at {step}");
                    let mut h = Harness::new(n as usize);
                    h.commit(&[(1, Tid::ZERO, "a")]);
                    let serial = h.raid.last_tid();
                    h.fault(bad, step, fault);
                    let v = h.vote_request(&[(1, serial, "b")]);
                    let BackendRequest::Vote(req) = &v else { unreachable!() };
                    let tid = req.tid;
                    let mut got = h.request(v);
                    if fault == Fault::Hang && step == "vote" {
                        assert!(got.is_empty(), "{ctx}: answered before the hung backend timed out");
                        expire(&mut h);
                        got = h.answers.iter().rev().take(1).map(|(_, o)| o.clone()).collect();
                    }
                    assert!(matches!(got.last(), Some(BackendOutcome::Voted { .. })), "{ctx}: vote {got:?}");
                    let mut fin = h.request(BackendRequest::Finish { tid });
                    if fault == Fault::Hang && step == "finish" {
                        assert!(!fin.iter().any(|o| matches!(o, BackendOutcome::Finished { .. })), "{ctx}");
                        expire(&mut h);
                        fin = h.answers.iter().rev().take(1).map(|(_, o)| o.clone()).collect();
                    }
                    assert!(
                        matches!(fin.last(), Some(BackendOutcome::Finished { tid: t, .. }) if *t == tid),
                        "{ctx}: finish {fin:?}"
                    );
                    assert_eq!(h.state_word(bad), "degraded", "{ctx}");
                    assert!(
                        h.reason(bad).contains(step) || h.reason(bad).contains("disconnected"),
                        "{ctx}: {}",
                        h.reason(bad)
                    );
                    for b in (0..n).filter(|&b| b != bad) {
                        assert_eq!(h.state_word(b), "optimal", "{ctx}");
                        assert_eq!(h.load(b as usize, 1).as_deref(), Some(&b"b"[..]), "{ctx}");
                    }
                    assert_eq!(h.raid.status(), RaidStatus::Degraded);
                    if fault == Fault::Hang {
                        assert!(
                            h.disconnects.contains(&BackendId(bad)),
                            "{ctx}: a hung backend is disconnected"
                        );
                    }
                    // The persisted state says so.
                    let saved = h.saved.last().expect("saved");
                    assert!(!saved.backends[bad as usize].state.is_optimal(), "{ctx}");
                    // Commits go on, on the others only.
                    let before = h.received.len();
                    let (v2, f2) = h.commit(&[(1, tid, "c")]);
                    assert!(
                        matches!(v2, BackendOutcome::Voted { .. }) && is_finished(&f2),
                        "{ctx}: {v2:?} {f2:?}"
                    );
                    assert!(
                        h.received[before..].iter().all(|(b, _)| b.0 != bad),
                        "{ctx}: degraded backend got requests"
                    );
                }
            }
        }
    }
}

#[test]
fn a_backend_failing_at_abort_is_degraded_and_the_abort_succeeds() {
    for n in [2u32, 3] {
        for fault in FAULTS {
            let mut h = Harness::new(n as usize);
            h.fault(n - 1, "abort", fault);
            let v = h.vote_request(&[(1, Tid::ZERO, "a")]);
            let BackendRequest::Vote(req) = &v else { unreachable!() };
            let tid = req.tid;
            assert!(matches!(h.one(v), BackendOutcome::Voted { .. }));
            let mut got = h.request(BackendRequest::Abort { tid });
            if fault == Fault::Hang {
                expire(&mut h);
                got = h.answers.iter().rev().take(1).map(|(_, o)| o.clone()).collect();
            }
            assert_eq!(got.last(), Some(&BackendOutcome::Nil), "{fault:?}");
            assert_eq!(h.state_word(n - 1), "degraded", "{fault:?}");
            for b in 0..n as usize {
                assert_eq!(h.load(b, 1), None, "aborted data visible on {b}");
            }
        }
    }
}

fn read_requests(h: &mut Harness) -> Vec<BackendRequest> {
    let tid = h.raid.last_tid();
    vec![
        BackendRequest::LoadBefore { oid: Oid::new(1), before: Tid::MAX, snapshot: tid },
        BackendRequest::LoadSerial { oid: Oid::new(1), serial: tid },
        BackendRequest::GetTid { oid: Oid::new(1), snapshot: tid },
        BackendRequest::History { oid: Oid::new(1), size: 5 },
        BackendRequest::RecordIternext { next: None },
        BackendRequest::UndoLog { first: 0, last: 10 },
        BackendRequest::UndoInfo { first: 0, last: 10, spec: None },
        BackendRequest::SendBlob { oid: Oid::new(9), serial: tid },
    ]
}

#[test]
fn a_backend_failing_at_each_read_is_degraded_and_another_answers() {
    for n in [2u32, 3] {
        for fault in FAULTS {
            let mut reference = Harness::new(1);
            reference.commit(&[(1, Tid::ZERO, "a")]);
            reference.one(BackendRequest::BlobUploadStart { upload: crate::zeo::backend::UploadId(1) });
            for (i, req) in read_requests(&mut reference).into_iter().enumerate() {
                let ctx = format!("{n} backends, {fault:?}, read #{i} {}", super::request_name(&req));
                let want = reference.request(req.clone());
                let mut h = Harness::new(n as usize);
                h.commit(&[(1, Tid::ZERO, "a")]);
                let tid = h.raid.last_tid();
                let req = match req {
                    BackendRequest::LoadSerial { oid, .. } => BackendRequest::LoadSerial { oid, serial: tid },
                    BackendRequest::LoadBefore { oid, before, .. } => {
                        BackendRequest::LoadBefore { oid, before, snapshot: tid }
                    }
                    BackendRequest::GetTid { oid, .. } => BackendRequest::GetTid { oid, snapshot: tid },
                    BackendRequest::SendBlob { oid, .. } => BackendRequest::SendBlob { oid, serial: tid },
                    other => other,
                };
                // Every backend but the last misbehaves at this read: whichever is asked first,
                // the answer must come from the last one.
                for b in 0..n - 1 {
                    h.fault(b, super::request_name(&req), fault);
                }
                let mut got = h.request(req.clone());
                for _ in 0..n {
                    if got.iter().any(|o| !o.is_partial()) {
                        break;
                    }
                    assert_ne!(fault, Fault::Fail, "{ctx}: a failure is retried at once");
                    let before = h.answers.len();
                    expire(&mut h);
                    got.extend(h.answers[before..].iter().map(|(_, o)| o.clone()));
                }
                assert_eq!(strip_tids(&got), strip_tids(&want), "{ctx}");
                let asked: Vec<u32> = h
                    .received
                    .iter()
                    .filter(|(_, r)| super::request_name(r) == super::request_name(&req))
                    .map(|(b, _)| b.0)
                    .collect();
                assert_eq!(asked.last(), Some(&(n - 1)), "{ctx}: answered by the healthy backend");
                for b in asked.iter().filter(|&&b| b != n - 1) {
                    assert_eq!(h.state_word(*b), "degraded", "{ctx}: b{b} failed a read");
                }
                assert_eq!(h.state_word(n - 1), "optimal", "{ctx}");
            }
        }
    }
}

/// Answers compared without tids (the reference RAID commits at other tids).
fn strip_tids(o: &[BackendOutcome]) -> String {
    let s = format!("{o:?}");
    let mut out = String::new();
    let mut skip = false;
    for part in s.split("Tid(") {
        if skip {
            out.push_str(part.split_once(')').map_or("", |(_, rest)| rest));
        } else {
            out.push_str(part);
        }
        skip = true;
    }
    out
}

#[test]
fn every_read_kind_moves_to_another_backend_when_the_one_asked_fails() {
    // Deterministic routing: with nothing in flight the first read goes to b0 (then rotates).
    for n in [2u32, 3] {
        for fault in FAULTS {
            for (i, name) in
                ["loadBefore", "loadSerial", "getTid", "history", "record_iternext", "undoLog", "undoInfo"]
                    .into_iter()
                    .enumerate()
            {
                let mut h = Harness::new(n as usize);
                h.commit(&[(1, Tid::ZERO, "a")]);
                for b in 0..n {
                    h.fault(b, name, fault);
                }
                let req = read_requests(&mut h).remove(i);
                let mut got = h.request(req);
                if fault == Fault::Hang {
                    // Every backend hangs in turn: each times out and the next is asked.
                    for _ in 0..n {
                        expire(&mut h);
                    }
                    got = h.answers.iter().rev().take(1).map(|(_, o)| o.clone()).collect();
                }
                // Every backend was faulty for this read: the RAID is failed and says so.
                let last = got.last().cloned().unwrap_or(BackendOutcome::Nil);
                assert!(
                    matches!(&last, BackendOutcome::Failed(e) if e.culprit == Culprit::Backend),
                    "{n} {fault:?} {name}: {last:?}"
                );
                assert_eq!(h.raid.status(), RaidStatus::Failed, "{n} {fault:?} {name}");
                // And refuses commits with a clear error.
                let (v, _) = h.commit(&[(2, Tid::ZERO, "x")]);
                let BackendOutcome::Failed(e) = v else { panic!("{v:?}") };
                assert!(format!("{:?}", e.error).contains("RAID has failed"), "{e:?}");
            }
        }
    }
}

#[test]
fn an_iteration_resumes_on_another_backend_at_the_same_position() {
    let mut h = Harness::new(2);
    for i in 0..4u64 {
        h.commit(&[(i + 1, Tid::ZERO, "x"), (i + 10, Tid::ZERO, "y")]);
    }
    let full = |h: &mut Harness, fail_after: Option<usize>| -> Vec<String> {
        let mut seen = Vec::new();
        let it = BackendIterId(1);
        let rec = BackendIterId(2);
        assert_eq!(
            h.one(BackendRequest::IterStart { iter: it, start: None, stop: None }),
            BackendOutcome::Nil
        );
        loop {
            let BackendOutcome::Txn(t) = h.one(BackendRequest::IterNext { iter: it }) else { panic!() };
            let Some(t) = t else { break };
            seen.push(format!("txn {}", t.tid));
            assert_eq!(
                h.one(BackendRequest::IterRecordStart { iter: rec, txn_iter: it, tid: t.tid }),
                BackendOutcome::Nil
            );
            loop {
                if fail_after == Some(seen.len()) {
                    // The backend holding the iterators drops out mid-transaction.
                    let holder = h
                        .received
                        .iter()
                        .rev()
                        .find(|(_, r)| matches!(r, BackendRequest::IterRecordStart { .. }))
                        .map(|(b, _)| *b);
                    if let Some(b) = holder {
                        h.raid.handle_event(h.now, b, BackendEvent::Down { reason: "test".into() });
                        h.run();
                    }
                }
                let BackendOutcome::Record(r) = h.one(BackendRequest::IterRecordNext { iter: rec }) else {
                    panic!()
                };
                let Some(r) = r else { break };
                seen.push(format!("rec {} {}", r.oid, r.tid));
            }
        }
        seen
    };
    let want = full(&mut h, None);
    assert_eq!(want.len(), 12);
    let got = full(&mut h, Some(4));
    assert_eq!(got, want);
    assert_eq!(h.raid.status(), RaidStatus::Degraded);
}

#[test]
fn client_errors_degrade_nobody() {
    let mut h = Harness::new(2);
    h.commit(&[(1, Tid::ZERO, "a")]);
    // A stale serial: both backends report the same conflict.
    let (v, _) = h.commit(&[(1, Tid::ZERO, "b")]);
    assert!(matches!(v, BackendOutcome::Conflicts(_)), "{v:?}");
    // An unknown oid.
    let got = h.one(BackendRequest::LoadBefore {
        oid: Oid::new(77),
        before: Tid::MAX,
        snapshot: h.raid.last_tid(),
    });
    assert!(
        matches!(&got, BackendOutcome::Failed(e) if e.culprit == Culprit::Client && matches!(e.error, ZeoError::PosKey(_))),
        "{got:?}"
    );
    assert_eq!(h.raid.status(), RaidStatus::Optimal);
}

#[test]
fn a_disagreement_degrades_the_backend_that_differs_from_the_first() {
    for bad in [0usize, 1] {
        // Backend `bad` holds an extra revision of oid 1 that the other lacks.
        let mut backends = vec![crate::zeo::mem_backend::MemBackend::new(); 2];
        let mut solo = Harness::with(vec![crate::zeo::mem_backend::MemBackend::new()], None);
        solo.commit(&[(1, Tid::ZERO, "a")]);
        backends[0] = solo.backends[0].clone();
        backends[1] = solo.backends[0].clone();
        let mut extra = Harness::with(vec![solo.backends[0].clone()], None);
        extra.commit(&[(1, extra.raid.last_tid(), "z")]);
        backends[bad] = extra.backends[0].clone();
        // Persisted state trusts both (so start-up does not degrade the shorter one).
        let p = crate::raid::PersistedRaid {
            backends: (0..2)
                .map(|i| crate::raid::PersistedBackend {
                    name: format!("b{i}"),
                    state: BackendState::Optimal,
                })
                .collect(),
            last_tid: Tid::ZERO,
            acked_tid: Tid::ZERO,
            oid_hwm: Oid::new(0),
            recovery: None,
            last_optimal: None,
        };
        let mut h = Harness::with(backends, Some(p));
        // Force both optimal (start-up would degrade the shorter one; here we test the vote rule).
        if h.raid.status() != RaidStatus::Optimal {
            for (i, m) in h.raid.members.values_mut().enumerate() {
                let _ = i;
                m.state = BackendState::Optimal;
            }
        }
        let serial = solo.raid.last_tid();
        let (v, f) = h.commit(&[(1, serial, "b")]);
        // b0 is the reference: its answer wins.
        if bad == 0 {
            assert!(matches!(v, BackendOutcome::Conflicts(_)), "{v:?}");
            assert_eq!(h.state_word(1), "degraded");
            assert!(h.reason(1).contains("disagreed with b0"), "{}", h.reason(1));
        } else {
            assert!(matches!(v, BackendOutcome::Voted { .. }) && is_finished(&f), "{v:?} {f:?}");
            assert_eq!(h.state_word(1), "degraded");
            assert!(h.reason(1).contains("disagreed with b0"), "{}", h.reason(1));
        }
        assert_eq!(h.state_word(0), "optimal", "the reference is never degraded by a disagreement");
    }
}

#[test]
fn a_commit_is_acknowledged_only_after_the_degradation_is_durable() {
    let mut h = Harness::new(2);
    h.commit(&[(1, Tid::ZERO, "a")]);
    h.auto_save = false;
    h.fault(1, "finish", Fault::Fail);
    let v = h.vote_request(&[(2, Tid::ZERO, "b")]);
    let BackendRequest::Vote(req) = &v else { unreachable!() };
    let tid = req.tid;
    assert!(matches!(h.one(v), BackendOutcome::Voted { .. }));
    let got = h.request(BackendRequest::Finish { tid });
    assert!(
        !got.iter().any(|o| matches!(o, BackendOutcome::Finished { .. })),
        "acknowledged before the state was saved: {got:?}"
    );
    let version = *h.pending_saves.last().expect("a save was asked for");
    h.raid.handle_state_saved(h.now, version);
    h.run();
    assert!(matches!(h.answers.last(), Some((_, BackendOutcome::Finished { .. }))), "{:?}", h.answers.last());
}

#[test]
fn new_oids_come_from_the_raid_above_every_backend_and_survive_a_restart() {
    let mut h = Harness::new(2);
    // A backend that already used oids 0..=40 (e.g. an existing Data.fs).
    let mut solo = Harness::with(vec![crate::zeo::mem_backend::MemBackend::new()], None);
    solo.commit(&[(40, Tid::ZERO, "x")]);
    h.backends[1] = solo.backends[0].clone();
    let mut h = Harness::with(h.backends.clone(), None);
    let BackendOutcome::NewOids(a) = h.one(BackendRequest::NewOids { n: 100 }) else { panic!() };
    assert!(a.iter().all(|o| o.get() > 40), "{a:?}");
    let saved = h.saved.last().cloned().expect("saved");
    assert!(saved.oid_hwm.get() > a.iter().map(|o| o.get()).max().unwrap_or(0));
    // No oid is ever handed out twice, also after a restart from the saved state.
    let mut h2 = Harness::with(h.backends.clone(), Some(saved));
    let BackendOutcome::NewOids(b) = h2.one(BackendRequest::NewOids { n: 100 }) else { panic!() };
    assert!(b.iter().all(|o| !a.contains(o)), "reused oids");
    // No backend request was needed for new oids (apart from the start-up probe).
    assert!(!h2.received.iter().skip(2).any(|(_, r)| matches!(r, BackendRequest::NewOids { .. })));
}

#[test]
fn admin_disable_add_remove() {
    let mut h = Harness::new(2);
    assert!(h.raid.disable(h.now, "nope").is_err());
    h.raid.disable(h.now, "b1").expect("disable b1");
    h.run();
    assert_eq!(h.state_word(1), "disabled");
    assert_eq!(h.raid.status(), RaidStatus::Degraded);
    assert!(matches!(h.raid.disable(h.now, "b0"), Err(crate::raid::AdminError::LastOptimal(_))));
    assert!(matches!(h.raid.remove_backend(h.now, "b0"), Err(crate::raid::AdminError::LastOptimal(_))));
    let id = h
        .raid
        .add_backend(h.now, crate::raid::BackendSpec { name: "c".into(), label: "new".into() })
        .expect("add");
    h.run();
    assert_eq!(h.raid.details()[id.0 as usize].state.word(), "degraded");
    assert!(h
        .raid
        .add_backend(h.now, crate::raid::BackendSpec { name: "c".into(), label: "x".into() })
        .is_err());
    h.raid.remove_backend(h.now, "b1").expect("remove b1");
    h.run();
    assert_eq!(h.raid.details().len(), 2);
    assert!(h.saved.last().expect("saved").backends.iter().all(|b| b.name != "b1"));
    // Commits still work on b0 alone.
    let (v, f) = h.commit(&[(1, Tid::ZERO, "a")]);
    assert!(matches!(v, BackendOutcome::Voted { .. }) && is_finished(&f));
}

#[test]
fn a_restart_keeps_degraded_backends_out() {
    let mut h = Harness::new(2);
    h.commit(&[(1, Tid::ZERO, "a")]);
    h.fault(1, "vote", Fault::Fail);
    h.commit(&[(2, Tid::ZERO, "b")]);
    let saved = h.saved.last().cloned().expect("saved");
    let h2 = Harness::with(h.backends.clone(), Some(saved));
    assert_eq!(h2.state_word(0), "optimal");
    assert_eq!(h2.state_word(1), "degraded");
    assert_eq!(h2.raid.last_tid(), h.backends[0].last_tid());
    let _ = Bytes::new();
    let _ = RaidAction::Disconnect { backend: BackendId(0) };
}

#[test]
fn a_degradation_reason_reads_as_text() {
    let mut h = Harness::new(2);
    h.fault(1, "vote", Fault::Fail);
    h.commit(&[(1, Tid::ZERO, "a")]);
    assert_eq!(h.reason(1), "vote failed: ZODB.POSException.StorageSystemError: injected failure at vote");
}

#[test]
fn the_recoverys_whole_transaction_read_is_refused_from_the_front() {
    let mut h = Harness::new(2);
    let it = BackendIterId(5);
    assert_eq!(h.one(BackendRequest::IterStart { iter: it, start: None, stop: None }), BackendOutcome::Nil);
    let BackendOutcome::Failed(e) = h.one(BackendRequest::IterNextWhole { iter: it }) else {
        panic!("IterNextWhole from the front must fail");
    };
    assert_eq!(e.culprit, Culprit::Client);
    assert_eq!(h.state_word(0), "optimal");
    assert_eq!(h.state_word(1), "optimal");
}

#[test]
fn a_commit_a_backend_reports_from_another_writer_lifts_the_next_tids_above_it() {
    let mut h = Harness::new(2);
    h.commit(&[(1, Tid::ZERO, "one")]);
    let last = h.raid.last_tid();
    // Below what the RAID has: nothing changes.
    h.raid.handle_event(h.now, BackendId(0), BackendEvent::ForeignCommit { tid: Tid::new(last.get() - 1) });
    assert_eq!(h.raid.last_tid(), last);
    // Above it (the late finish of a previous run, say): new tids go above it.
    let foreign = Tid::new(last.get() + 1_000);
    h.raid.handle_event(h.now, BackendId(1), BackendEvent::ForeignCommit { tid: foreign });
    assert_eq!(h.raid.last_tid(), foreign);
    h.raid.check().expect("invariants");
    assert_eq!(h.raid.status(), RaidStatus::Optimal, "a report degrades nobody");
}
