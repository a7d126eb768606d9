//! Each RAID mutation (see [`crate::mutation`]) really makes the bug it names: with the switch
//! on the scenario shows the wrong behaviour, with it off the right one.

use std::time::Duration;

use crate::ids::Tid;
use crate::mutation::{Mutation, Scoped};
use crate::raid::harness::{Fault, Harness};
use crate::raid::{AdminError, RateLimit};
use crate::zeo::backend::{BackendOutcome, BackendRequest};

fn switch(on: bool, m: Mutation) -> Option<Scoped> {
    on.then(|| Scoped::new(m))
}

#[test]
fn vote_before_all_voted_commits_on_the_first_voter_only() {
    for on in [false, true] {
        let _g = switch(on, Mutation::VoteBeforeAllVoted);
        let mut h = Harness::new(2);
        let (v, f) = h.commit(&[(1, Tid::ZERO, "one")]);
        assert!(matches!(v, BackendOutcome::Voted { .. }), "{v:?}");
        assert!(matches!(f, Some(BackendOutcome::Finished { .. })), "{f:?}");
        assert_eq!(h.state_word(1), "optimal", "mutation {on}");
        // The acknowledged commit is missing from an optimal backend only with the mutation.
        assert_eq!(h.load(1, 1).is_none(), on, "mutation {on}");
        assert_eq!(h.load(0, 1).as_deref(), Some(&b"one"[..]));
    }
}

#[test]
fn finish_before_all_finished_answers_while_a_backend_has_not_finished() {
    for on in [false, true] {
        let _g = switch(on, Mutation::FinishBeforeAllFinished);
        let mut h = Harness::new(2);
        h.queued = true;
        let v = h.vote_request(&[(1, Tid::ZERO, "one")]);
        let BackendRequest::Vote(req) = &v else { unreachable!() };
        let tid = req.tid;
        let vote = h.send(v);
        h.deliver_next(0);
        h.deliver_next(1);
        assert!(h.answers.iter().any(|(id, o)| *id == vote && matches!(o, BackendOutcome::Voted { .. })));
        let finish = h.send(BackendRequest::Finish { tid });
        h.deliver_next(0);
        let answered =
            h.answers.iter().any(|(id, o)| *id == finish && matches!(o, BackendOutcome::Finished { .. }));
        // b1 has not finished (its finish is still queued), and b1 is optimal: a read there misses it.
        assert_eq!(answered, on, "mutation {on}");
        assert_eq!(h.state_word(1), "optimal");
        assert!(h.load(1, 1).is_none());
        h.deliver_next(1);
        assert!(h
            .answers
            .iter()
            .any(|(id, o)| *id == finish && matches!(o, BackendOutcome::Finished { .. })));
    }
}

#[test]
fn no_degrade_on_error_keeps_a_backend_that_missed_a_commit() {
    for on in [false, true] {
        let _g = switch(on, Mutation::NoDegradeOnError);
        let mut h = Harness::new(2);
        h.fault(1, "vote", Fault::Fail);
        let (_, f) = h.commit(&[(1, Tid::ZERO, "one")]);
        assert!(matches!(f, Some(BackendOutcome::Finished { .. })), "{f:?}");
        let want = if on { "optimal" } else { "degraded" };
        assert_eq!(h.state_word(1), want, "mutation {on}");
        assert!(h.load(1, 1).is_none(), "b1 failed its vote: it does not have the commit");
    }
}

#[test]
fn second_recovery_starts_while_one_runs() {
    for on in [false, true] {
        let _g = switch(on, Mutation::SecondRecovery);
        let mut h = Harness::new(3);
        h.commit(&[(1, Tid::ZERO, "a")]);
        h.raid.disable(h.now, "b1").expect("disable");
        h.raid.disable(h.now, "b2").expect("disable");
        for i in 0..20u64 {
            h.commit(&[(10 + i, Tid::ZERO, "x")]);
        }
        let slow = RateLimit { bytes_per_sec: None, txns_per_sec: Some(5) };
        h.raid.recover(h.now, "b1", Some(slow)).expect("recover");
        h.run();
        assert_eq!(h.state_word(1), "recovering");
        let second = h.raid.recover(h.now, "b2", Some(slow));
        if on {
            assert_eq!(second, Ok(()), "the second recovery starts");
            assert_eq!(h.state_word(2), "recovering");
            assert_eq!(h.state_word(1), "recovering", "the first one was not ended: two at once");
            let broken = h.raid.check().expect_err("the RAID's own check sees it");
            assert!(broken.contains("more than one backend recovering"), "{broken}");
        } else {
            assert_eq!(second, Err(AdminError::RecoveryRunning("b1".into())));
            h.advance(Duration::from_millis(100));
            assert!(h.raid.check().is_ok());
        }
    }
}

#[test]
fn finish_before_state_saved_acknowledges_before_the_degradation_is_durable() {
    for on in [false, true] {
        let _g = switch(on, Mutation::FinishBeforeStateSaved);
        let mut h = Harness::new(2);
        h.auto_save = false;
        h.checking = false;
        h.fault(1, "finish", Fault::Fail);
        let v = h.vote_request(&[(1, Tid::ZERO, "one")]);
        let BackendRequest::Vote(req) = &v else { unreachable!() };
        let tid = req.tid;
        assert!(matches!(h.one(v), BackendOutcome::Voted { .. }));
        let got = h.request(BackendRequest::Finish { tid });
        assert_eq!(h.state_word(1), "degraded");
        // The state saying b1 missed the commit is not durable yet (a crash now brings b1 back
        // optimal without it): the finish must wait for it.
        assert!(!h.pending_saves.is_empty());
        let answered = got.iter().any(|o| matches!(o, BackendOutcome::Finished { .. }));
        assert_eq!(answered, on, "mutation {on}: {got:?}");
        // The checker sees the early acknowledgement (the simulation runs it after every step).
        match h.raid.check() {
            Err(broken) => assert!(on && broken.contains("acknowledged before state version"), "{broken}"),
            Ok(()) => assert!(!on, "the early acknowledgement went unseen"),
        }
    }
}

#[test]
fn pack_during_recovery_runs_a_pack_while_a_backend_recovers() {
    for on in [false, true] {
        let _g = switch(on, Mutation::PackDuringRecovery);
        let mut h = Harness::new(2);
        h.commit(&[(1, Tid::ZERO, "a")]);
        h.raid.disable(h.now, "b1").expect("disable");
        for i in 0..20u64 {
            h.commit(&[(10 + i, Tid::ZERO, "x")]);
        }
        let slow = RateLimit { bytes_per_sec: None, txns_per_sec: Some(5) };
        h.raid.recover(h.now, "b1", Some(slow)).expect("recover");
        h.run();
        assert!(h.raid.recovery().is_some());
        if on {
            let id = crate::zeo::backend::BackendReqId(9_000);
            h.raid.handle_request(h.now, id, BackendRequest::Pack { time: 1.0 });
            let mut sent = false;
            while let Some(a) = h.raid.poll_action() {
                sent |=
                    matches!(a, crate::raid::RaidAction::Submit { request: BackendRequest::Pack { .. }, .. });
            }
            assert!(sent, "the pack went to the backends");
            let broken = h.raid.check().expect_err("the RAID's own check sees it");
            assert!(broken.contains("a pack runs during a recovery"), "{broken}");
        } else {
            let packed = h.one(BackendRequest::Pack { time: 1.0 });
            assert!(matches!(packed, BackendOutcome::Failed(_)), "{packed:?}");
            assert!(!h.received.iter().any(|(_, r)| matches!(r, BackendRequest::Pack { .. })));
        }
    }
}
