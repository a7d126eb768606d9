//! Random runs of the RAID: random transactions and reads from the front, backends that take
//! their requests in random interleavings, injected faults (fail, hang, disconnect) at random
//! requests, random time steps and state-save acknowledgements. After every step the RAID's
//! invariants hold; read answers match a model of the acknowledged commits; when the reference
//! backend (b0) suffers no fault, no client ever sees a backend failure; at the end every
//! request was answered exactly once and every optimal backend holds the identical history.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use crate::ids::{Oid, Tid};
use crate::wire::types::{Extension, TxnStatus};
use crate::zeo::backend::{
    BackendIterId, BackendOutcome, BackendReqId, BackendRequest, Culprit, TxnOp, VoteRequest,
};
use crate::zeo::mem_backend::MemBackend;

use super::harness::{Fault, Harness};
use super::RaidStatus;

#[derive(Debug, Clone)]
enum Step {
    Write(u8),
    Read(u8),
    Deliver(u8),
    Fault {
        backend: u8,
        at: u8,
        fault: u8,
    },
    Time(u8),
    Save,
    /// `disable` or `recover` of a random backend.
    Admin(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => any::<u8>().prop_map(Step::Write),
        3 => any::<u8>().prop_map(Step::Read),
        10 => any::<u8>().prop_map(Step::Deliver),
        1 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(backend, at, fault)| Step::Fault { backend, at, fault }),
        1 => any::<u8>().prop_map(Step::Time),
        2 => Just(Step::Save),
        1 => any::<u8>().prop_map(Step::Admin),
    ]
}

const AT: [&str; 9] = [
    "vote",
    "finish",
    "abort",
    "loadBefore",
    "history",
    "loadSerial",
    "iterator_next",
    "iterator_record_next",
    "sync",
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Write {
    Vote(Tid),
    Finish(Tid),
    Abort,
}

/// What a transaction stores: oid → data.
type Stores = Vec<(u64, Bytes)>;

struct Model {
    h: Harness,
    n: usize,
    /// Acknowledged state: oid → (tid, data).
    committed: BTreeMap<u64, (Tid, Bytes)>,
    /// The newest acknowledged tid (what the front would announce).
    announced: Tid,
    write: Option<(BackendReqId, Write, Stores)>,
    voted: Option<(Tid, Vec<(u64, Bytes)>)>,
    /// Reads in flight: id → (oid, expected data at the snapshot).
    reads: BTreeMap<BackendReqId, (u64, Option<(Tid, Bytes)>)>,
    sent: Vec<BackendReqId>,
    seen: usize,
    next_tid: u64,
    fault_on_reference: bool,
}

impl Model {
    fn absorb(&mut self) -> Result<(), TestCaseError> {
        let answers: Vec<(BackendReqId, BackendOutcome)> = self.h.answers[self.seen..].to_vec();
        self.seen = self.h.answers.len();
        for (id, o) in answers {
            if o.is_partial() {
                continue;
            }
            if let BackendOutcome::Failed(e) = &o {
                if e.culprit == Culprit::Backend && !self.fault_on_reference {
                    return Err(TestCaseError::fail(format!("a client saw a backend failure: {e:?}")));
                }
            }
            if let Some((wid, w, data)) = self.write.clone() {
                if wid == id {
                    self.write = None;
                    match (w, &o) {
                        (Write::Vote(tid), BackendOutcome::Voted { .. }) => self.voted = Some((tid, data)),
                        (Write::Finish(tid), BackendOutcome::Finished { tid: t, .. }) => {
                            prop_assert_eq!(tid, *t);
                            for (oid, d) in data {
                                self.committed.insert(oid, (tid, d));
                            }
                            self.announced = tid;
                        }
                        _ => {}
                    }
                    continue;
                }
            }
            if let Some((oid, want)) = self.reads.remove(&id) {
                match (&o, want) {
                    (BackendOutcome::LoadBefore(Some(r)), Some((tid, data))) => {
                        prop_assert_eq!(&r.data, &data, "oid {}", oid);
                        prop_assert_eq!(r.start, tid);
                    }
                    (BackendOutcome::Failed(e), None) if e.culprit == Culprit::Client => {}
                    (BackendOutcome::Failed(e), _)
                        if e.culprit == Culprit::Backend && self.fault_on_reference => {}
                    (other, want) => {
                        return Err(TestCaseError::fail(format!(
                            "load of {oid}: got {other:?}, want {want:?}"
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, arg: u8) {
        if self.write.is_some() {
            return;
        }
        if let Some((tid, data)) = self.voted.take() {
            let (req, w) = if arg % 4 == 0 {
                (BackendRequest::Abort { tid }, Write::Abort)
            } else {
                (BackendRequest::Finish { tid }, Write::Finish(tid))
            };
            let id = self.h.send(req);
            self.sent.push(id);
            self.write = Some((id, w, data));
            return;
        }
        let tid = Tid::new(self.next_tid.max(self.h.raid.last_tid().get()) + 1);
        self.next_tid = tid.get();
        let mut ops = Vec::new();
        let mut data = Vec::new();
        for k in 0..=(arg % 3) {
            let oid = u64::from((arg >> 2).wrapping_add(k) % 4) + 1;
            if data.iter().any(|(o, _)| *o == oid) {
                continue;
            }
            let stale = arg & 0x80 != 0 && k == 0;
            let serial = match self.committed.get(&oid) {
                Some((t, _)) if !stale => *t,
                Some(_) => Tid::ZERO,
                None => Tid::ZERO,
            };
            let d = Bytes::from(format!("{oid}@{}", tid.get()));
            ops.push(TxnOp::Store { oid: Oid::new(oid), serial, data: d.clone() });
            data.push((oid, d));
        }
        let req = BackendRequest::Vote(Box::new(VoteRequest {
            tid,
            status: TxnStatus::NORMAL,
            user: Bytes::new(),
            description: Bytes::new(),
            extension: Extension::default(),
            ops,
            deferred_sync: false,
        }));
        let id = self.h.send(req);
        self.sent.push(id);
        self.write = Some((id, Write::Vote(tid), data));
    }

    fn read(&mut self, arg: u8) {
        let oid = u64::from(arg % 5) + 1;
        let snapshot = self.announced;
        let req = match arg % 3 {
            0 => BackendRequest::History { oid: Oid::new(oid), size: 3 },
            1 => BackendRequest::NewOids { n: 3 },
            _ => BackendRequest::LoadBefore { oid: Oid::new(oid), before: Tid::MAX, snapshot },
        };
        let is_load = matches!(req, BackendRequest::LoadBefore { .. });
        let want = self.committed.get(&oid).cloned();
        let id = self.h.send(req);
        self.sent.push(id);
        if is_load {
            self.reads.insert(id, (oid, want));
        }
    }
}

/// A backend's committed history, transaction by transaction and record by record.
fn history(b: &MemBackend) -> Vec<String> {
    let mut b = b.clone();
    let mut out = Vec::new();
    let it = BackendIterId(9000);
    let rec = BackendIterId(9001);
    b.handle(BackendRequest::IterStart { iter: it, start: None, stop: None });
    loop {
        let Some(BackendOutcome::Txn(Some(t))) = b.handle(BackendRequest::IterNext { iter: it }).pop() else {
            break;
        };
        out.push(format!("txn {}", t.tid));
        b.handle(BackendRequest::IterRecordStart { iter: rec, txn_iter: it, tid: t.tid });
        while let Some(BackendOutcome::Record(Some(r))) =
            b.handle(BackendRequest::IterRecordNext { iter: rec }).pop()
        {
            out.push(format!("  {} {:?}", r.oid, r.data));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn random_runs_keep_the_mirrors_identical(
        n in 2usize..4,
        fault_on_reference in prop::bool::weighted(0.3),
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let mut h = Harness::new(n);
        h.queued = true;
        h.auto_save = false;
        let mut m = Model {
            h, n, committed: BTreeMap::new(), announced: Tid::ZERO, write: None, voted: None,
            reads: BTreeMap::new(), sent: Vec::new(), seen: 0, next_tid: 0, fault_on_reference,
        };
        for s in steps {
            match s {
                Step::Write(a) => m.write(a),
                Step::Read(a) => m.read(a),
                Step::Deliver(b) => m.h.deliver_next(usize::from(b) % m.n),
                Step::Fault { backend, at, fault } => {
                    let lowest = if m.fault_on_reference { 0 } else { 1 };
                    let b = lowest + u32::from(backend) % (m.n as u32 - lowest);
                    let f = [Fault::Fail, Fault::Hang, Fault::Down][usize::from(fault) % 3];
                    m.h.fault(b, AT[usize::from(at) % AT.len()], f);
                }
                Step::Time(s) => {
                    // Healthy backends answer well within their deadlines: only hung requests
                    // are still out when time moves on.
                    while let Some(b) = (0..m.n).find(|&b| !m.h.queues[b].is_empty()) {
                        m.h.deliver_next(b);
                    }
                    m.absorb()?;
                    m.h.advance(Duration::from_millis(u64::from(s) * 20));
                }
                Step::Admin(a) => {
                    let b = 1 + usize::from(a / 4) % (m.n - 1);
                    let name = format!("b{b}");
                    let now = m.h.now;
                    if a % 4 == 0 {
                        let _ = m.h.raid.disable(now, &name);
                    } else {
                        let limit = (a % 4 == 3).then_some(super::RateLimit { bytes_per_sec: None, txns_per_sec: Some(30) });
                        let _ = m.h.raid.recover(now, &name, limit);
                    }
                    m.h.run();
                }
                Step::Save => {
                    for v in std::mem::take(&mut m.h.pending_saves) {
                        m.h.raid.handle_state_saved(m.h.now, v);
                    }
                    m.h.run();
                }
            }
            m.absorb()?;
        }
        // Settle: finish or abort the open transaction, deliver everything, let timeouts fire.
        m.h.rules.clear();
        for _ in 0..50 {
            while let Some(b) = (0..m.n).find(|&b| !m.h.queues[b].is_empty()) {
                m.h.deliver_next(b);
            }
            for v in std::mem::take(&mut m.h.pending_saves) {
                m.h.raid.handle_state_saved(m.h.now, v);
            }
            m.h.run();
            m.absorb()?;
            if m.write.is_none() && m.voted.is_some() {
                m.write(1);
                continue;
            }
            if m.write.is_none() && m.h.raid.poll_timeout().is_none() && m.h.queues.iter().all(|q| q.is_empty()) {
                break;
            }
            m.h.advance(Duration::from_secs(4));
            m.absorb()?;
        }
        // Every request answered exactly once (finally).
        let mut finals: BTreeMap<BackendReqId, usize> = BTreeMap::new();
        for (id, o) in &m.h.answers {
            if !o.is_partial() {
                *finals.entry(*id).or_default() += 1;
            }
        }
        for id in &m.sent {
            prop_assert_eq!(finals.get(id).copied(), Some(1), "request {} answered {:?} times", id.0, finals.get(id));
        }
        if !m.fault_on_reference {
            prop_assert_eq!(m.h.raid.details()[0].state.word(), "optimal", "{:?}", m.h.raid.details()[0].state);
        }
        // Every optimal backend holds the identical history, which has every acknowledged commit.
        let optimal: Vec<usize> = (0..m.n).filter(|&b| m.h.raid.details()[b].state.is_optimal()).collect();
        if let Some(&first) = optimal.first() {
            let want = history(&m.h.backends[first]);
            for &b in &optimal[1..] {
                prop_assert_eq!(&history(&m.h.backends[b]), &want, "b{} differs from b{}", b, first);
            }
            for (oid, (tid, data)) in &m.committed {
                let line = format!("  {} {:?}", Oid::new(*oid), Some(data.clone()));
                prop_assert!(want.contains(&line), "acknowledged {} of {} missing on b{}", tid, oid, first);
            }
        } else {
            prop_assert_eq!(m.h.raid.status(), RaidStatus::Failed);
        }
    }
}
