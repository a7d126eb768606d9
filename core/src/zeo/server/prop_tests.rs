//! Random inputs from three connections, random outcome delivery order, random disconnects and
//! timeouts: the invariants hold after every step and nothing panics — also with storage "1"
//! served by a RAID of in-memory backends (then every mirror ends with the same commits).

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use crate::ids::{ConnId, Oid, Tid};
use crate::wire::request::Request;
use crate::wire::types::IterId;
use crate::wire::value::Text;
use crate::wire::Encoding;

use super::harness::{begin, config, store, txn, Harness};

#[derive(Debug, Clone)]
enum Step {
    Call {
        slot: u64,
        call: u8,
        arg: u8,
        sync: bool,
    },
    Deliver(usize),
    Disconnect(u64),
    /// A complete frame with random bytes (or, with `partial`, bytes that may cut a frame).
    Garbage(u64, Vec<u8>, bool),
    /// `tpc_begin`, `storea`, sync `vote` in a row (the finish comes from a random call).
    BeginStoreVote {
        slot: u64,
        arg: u8,
    },
    Timeout(u8),
    /// Group commit: the held-back `Finished` outcomes arrive (the batch is durable).
    Durable,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        // Mostly the commit path (begin, store, vote, finish), mostly synchronous.
        6 => (0u64..3, prop_oneof![3 => 0u8..6, 1 => 0u8..20], any::<u8>(), prop::bool::weighted(0.8))
            .prop_map(|(slot, call, arg, sync)| Step::Call { slot, call, arg, sync }),
        6 => any::<usize>().prop_map(Step::Deliver),
        1 => (0u64..3).prop_map(Step::Disconnect),
        1 => ((0u64..3), proptest::collection::vec(any::<u8>(), 0..12), prop::bool::weighted(0.2))
            .prop_map(|(s, b, p)| Step::Garbage(s, b, p)),
        3 => (0u64..3, any::<u8>()).prop_map(|(slot, arg)| Step::BeginStoreVote { slot, arg }),
        3 => (0u64..3).prop_map(|slot| Step::Call { slot, call: 4, arg: 0, sync: true }),
        1 => any::<u8>().prop_map(Step::Timeout),
        2 => Just(Step::Durable),
    ]
}

struct Model {
    h: Harness,
    /// Current connection id per slot (generation * 10 + slot), and whether it is connected.
    gen: [u64; 3],
    live: [bool; 3],
}

impl Model {
    fn id(&self, slot: u64) -> u64 {
        self.gen[slot as usize] * 10 + slot
    }

    fn ensure(&mut self, slot: u64) {
        let i = slot as usize;
        if self.live[i] && !self.h.closed(self.id(slot)) {
            return;
        }
        if self.live[i] {
            self.h.disconnect(self.id(slot));
        }
        self.gen[i] += 1;
        self.live[i] = true;
        let id = self.id(slot);
        let enc = if slot == 1 { Encoding::Msgpack } else { Encoding::Pickle };
        self.h.connect(id, enc);
        let ro = slot == 2 && self.gen[i] % 2 == 0;
        self.h.call(id, 1, Request::Register { storage: Text::from_static("1"), read_only: ro });
    }

    fn request(&self, call: u8, arg: u8) -> Request {
        let oid = Oid::new(u64::from(arg % 3));
        let serial = if arg & 0x80 != 0 { Tid::ZERO } else { self.h.backends[0].last_tid() };
        let t = i64::from(arg % 8 == 7);
        let iid = IterId(i64::from(arg % 4));
        match call {
            0 => begin(t),
            1 | 2 => store(oid, serial, b"data", t),
            3 => Request::Vote { txn: txn(t) },
            4 => Request::TpcFinish { txn: txn(t) },
            5 => Request::TpcAbort { txn: txn(t) },
            6 => Request::LoadBefore { oid, before: Tid::MAX },
            7 => Request::NewOids { n: Some(i64::from(arg) - 10) },
            8 => Request::IteratorStart { start: None, stop: None },
            9 => Request::IteratorNext { iid },
            10 => Request::IteratorRecordStart { txn_iid: iid, tid: serial },
            11 => Request::IteratorRecordNext { riid: iid },
            12 => Request::IteratorGc { iids: vec![iid] },
            13 => Request::StoreBlobStart,
            14 => Request::StoreBlobChunk { chunk: Bytes::from_static(b"blob") },
            15 => Request::StoreBlobEnd { oid, serial, data: Bytes::from_static(b"b"), txn: txn(t) },
            16 => Request::SendBlob { oid, serial },
            17 => Request::Pack { time: 0.0, wait: arg % 2 == 0 },
            18 => Request::GetInvalidations { tid: serial },
            _ => Request::CheckCurrentSerialInTransaction { oid, serial, txn: txn(t) },
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn random_inputs_keep_every_invariant(
        steps in proptest::collection::vec(step(), 1..80),
        group in any::<bool>(),
        raid in 0usize..4,
    ) {
        let mut cfg = config();
        cfg.transaction_timeout = Some(Duration::from_secs(20));
        let mut m = Model { h: Harness::new(cfg), gen: [0; 3], live: [false; 3] };
        m.h.auto = false;
        if raid >= 2 {
            // Storage "1" is a RAID of two or three in-memory backends.
            m.h.backends[0] = super::harness::TestBackend::raid(raid);
        }
        m.h.backends[0].set_group_commit(group);
        m.h.hold_durable = group;
        for (n, s) in steps.into_iter().enumerate() {
            match s {
                Step::Call { slot, call, arg, sync } => {
                    m.ensure(slot);
                    let r = m.request(call, arg);
                    let id = m.id(slot);
                    if sync { m.h.call(id, n as i64 + 10, r) } else { m.h.cast(id, r) }
                }
                Step::Deliver(i) => {
                    if !m.h.inflight.is_empty() {
                        let i = i % m.h.inflight.len();
                        m.h.deliver(i);
                    }
                }
                Step::Disconnect(slot) => {
                    if m.live[slot as usize] {
                        m.live[slot as usize] = false;
                        m.h.disconnect(m.id(slot));
                    }
                }
                Step::Garbage(slot, bytes, partial) => {
                    m.ensure(slot);
                    let id = m.id(slot);
                    if partial {
                        m.h.srv.handle_bytes(m.h.now, ConnId(id), &bytes);
                        m.h.drain();
                    } else {
                        m.h.send_frame(id, &bytes);
                    }
                }
                Step::BeginStoreVote { slot, arg } => {
                    m.ensure(slot);
                    let id = m.id(slot);
                    for (i, call) in [0u8, 1, 3].into_iter().enumerate() {
                        let r = m.request(call, arg & 0x83);
                        if m.h.closed(id) {
                            break;
                        }
                        if call == 3 { m.h.call(id, n as i64 * 10 + i as i64 + 10, r) } else { m.h.cast(id, r) }
                    }
                }
                Step::Durable => m.h.release_held(),
                Step::Timeout(secs) => {
                    m.h.tick(u64::from(secs % 30));
                    m.h.srv.handle_timeout(m.h.now);
                    m.h.drain();
                }
            }
            m.h.srv.check().map_err(TestCaseError::fail)?;
        }
        // Everything settles: deliver all, disconnect all; the lock is free and the backend clean.
        m.h.deliver_all();
        m.h.release_held();
        for slot in 0..3 {
            if m.live[slot as usize] {
                m.h.disconnect(m.id(slot));
            }
        }
        m.h.deliver_all();
        m.h.release_held();
        m.h.srv.check().map_err(TestCaseError::fail)?;
        prop_assert!(m.h.srv.is_shut_down());
        prop_assert!(!m.h.backends[0].has_voted());
        prop_assert_eq!(m.h.backends[0].open_handles(), (0, 0));
        if let super::harness::TestBackend::Raid(r) = &m.h.backends[0] {
            // Every mirror took every commit.
            let tids: Vec<Tid> = r.backends.iter().map(|b| b.last_tid()).collect();
            prop_assert!(tids.windows(2).all(|w| w[0] == w[1]), "mirrors differ: {:?}", tids);
            prop_assert_eq!(r.raid.status(), crate::raid::RaidStatus::Optimal);
        }
    }
}
