//! Each front mutation (see [`crate::mutation`]) really makes the bug it names: with the switch
//! on the scenario shows the wrong behaviour, with it off the right one.

use crate::ids::{Oid, Tid};
use crate::mutation::{Mutation, Scoped};
use crate::wire::request::Request;
use crate::wire::Encoding;
use crate::zeo::backend::BackendRequest;

use super::harness::{begin, config, invalidations, store, txn, Harness};

fn switch(on: bool, m: Mutation) -> Option<Scoped> {
    on.then(|| Scoped::new(m))
}

#[test]
fn invalidate_before_finish_tells_the_other_clients_before_the_commit_is_done() {
    for on in [false, true] {
        let _g = switch(on, Mutation::InvalidateBeforeFinish);
        let mut h = Harness::new(config());
        h.client(1, Encoding::Msgpack);
        h.client(2, Encoding::Msgpack);
        h.auto = false;
        h.cast(1, begin(1));
        h.cast(1, store(Oid::new(1), Tid::ZERO, b"data", 1));
        h.call(1, 3, Request::Vote { txn: txn(1) });
        h.deliver_where(|r| matches!(r, BackendRequest::Vote(_)));
        let early = invalidations(&h.take(2));
        assert_eq!(early.len(), usize::from(on), "mutation {on}: {early:?}");
        // The transaction is not finished: the backend has not even been asked to.
        h.call(1, 4, Request::TpcFinish { txn: txn(1) });
        h.deliver_all();
        let late = invalidations(&h.take(2));
        assert_eq!(late.len(), usize::from(!on), "mutation {on}: {late:?}");
    }
}

#[test]
fn reuse_last_tid_chooses_a_tid_behind_the_last_one() {
    let ahead = Tid::from_unix(2_000_000_000, 0).expect("in range");
    for on in [false, true] {
        let _g = switch(on, Mutation::ReuseLastTid);
        let mut cfg = config();
        cfg.storages[0].last_tid = ahead; // persisted by a RAID whose clock was ahead
        let mut h = Harness::new(cfg);
        h.client(1, Encoding::Msgpack);
        let tid = h.commit(1, 1, &[(Oid::new(1), Tid::ZERO, b"x")]);
        assert_eq!(tid <= ahead, on, "mutation {on}: {tid} vs last {ahead}");
    }
}
