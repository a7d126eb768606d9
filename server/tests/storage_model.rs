//! Property test: random operation sequences on the storage engine agree with a simple
//! in-memory MVCC model of FileStorage.
//!
//! The model keeps records as a list (no file, no positions): each record has its object, tid,
//! previous record and either data or a back-pointer to another record (or to nothing).
//! Loads walk the previous-record chain, undo follows FileStorage's rules on that list. Reopens
//! (with or without saving the index cache, with a transaction left open) must change nothing.

use proptest::prelude::*;
use std::collections::BTreeMap;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::types::TxnStatus;
use zeoraid_server::storage::{format, BeginTid, MemDir, Options, Storage, StorageError, TxnMeta};

const OIDS: u64 = 5;

#[derive(Debug, Clone)]
enum Serial {
    Current,
    Zero,
    Old,
}

#[derive(Debug, Clone)]
enum Op {
    Begin { exact: bool, t: u64 },
    Store { oid: u64, serial: Serial, byte: u8, len: usize },
    Delete { oid: u64, serial: Serial },
    Restore { oid: u64, byte: Option<u8>, prev: usize },
    Undo { back: usize },
    Check { oid: u64, serial: Serial },
    Vote,
    Finish,
    Abort,
    LoadBefore { oid: u64, pick: usize, delta: i8 },
    LoadSerial { oid: u64, pick: usize },
    History { oid: u64 },
    Reopen { close: bool },
}

fn serial() -> impl Strategy<Value = Serial> {
    prop_oneof![6 => Just(Serial::Current), 1 => Just(Serial::Zero), 1 => Just(Serial::Old)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0u64..40).prop_map(|(exact, t)| Op::Begin { exact, t }),
        8 => (0..OIDS, serial(), any::<u8>(), 1usize..6).prop_map(|(oid, serial, byte, len)| Op::Store { oid, serial, byte, len }),
        2 => (0..OIDS, serial()).prop_map(|(oid, serial)| Op::Delete { oid, serial }),
        1 => (0..OIDS, proptest::option::of(any::<u8>()), 0usize..8).prop_map(|(oid, byte, prev)| Op::Restore { oid, byte, prev }),
        2 => (0usize..6).prop_map(|back| Op::Undo { back }),
        1 => (0..OIDS, serial()).prop_map(|(oid, serial)| Op::Check { oid, serial }),
        4 => Just(Op::Vote),
        4 => Just(Op::Finish),
        1 => Just(Op::Abort),
        4 => (0..OIDS, 0usize..10, -1i8..=1).prop_map(|(oid, pick, delta)| Op::LoadBefore { oid, pick, delta }),
        2 => (0..OIDS, 0usize..10).prop_map(|(oid, pick)| Op::LoadSerial { oid, pick }),
        1 => (0..OIDS).prop_map(|oid| Op::History { oid }),
        1 => any::<bool>().prop_map(|close| Op::Reopen { close }),
    ]
}

/// An outcome both sides can produce, compared for equality.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Ok,
    Tid(u64),
    Data(Option<(Vec<u8>, u64, Option<u64>)>),
    Bytes(Vec<u8>),
    Oids(Vec<u64>),
    History(Vec<(u64, i64)>),
    PosKey,
    Conflict(u64, u64),
    ReadConflict(u64, u64),
    Undo,
    MultipleUndo(Vec<u64>),
    Wrong,
    TidNotAfterLast,
    RestoreSerial,
}

fn from_err(e: StorageError) -> Out {
    match e {
        StorageError::PosKey { .. } => Out::PosKey,
        StorageError::Conflict { committed, read, .. } => Out::Conflict(committed.get(), read.get()),
        StorageError::ReadConflict { current, expected, .. } => {
            Out::ReadConflict(current.get(), expected.get())
        }
        StorageError::Undo { .. } => Out::Undo,
        StorageError::MultipleUndo(f) => Out::MultipleUndo(f.iter().map(|f| f.oid.get()).collect()),
        StorageError::WrongTransaction(_) => Out::Wrong,
        StorageError::TidNotAfterLast { .. } => Out::TidNotAfterLast,
        StorageError::RestoreSerial { .. } => Out::RestoreSerial,
        other => panic!("storage fault in the model test: {other}"),
    }
}

#[derive(Debug, Clone)]
enum Content {
    Data(Vec<u8>),
    Back(Option<usize>),
}

#[derive(Debug, Clone)]
struct Rec {
    oid: u64,
    tid: u64,
    prev: Option<usize>,
    content: Content,
}

#[derive(Debug, Default)]
struct Txn {
    tid: u64,
    recs: Vec<usize>,
    tindex: BTreeMap<u64, usize>,
    voted: bool,
}

#[derive(Debug, Default)]
struct Model {
    recs: Vec<Rec>,
    index: BTreeMap<u64, usize>,
    /// Committed transactions: tid and record ids, in order.
    txns: Vec<(u64, Vec<usize>)>,
    last: u64,
    cur: Option<Txn>,
}

impl Model {
    fn resolve(&self, mut id: usize) -> Option<&[u8]> {
        loop {
            match &self.recs[id].content {
                Content::Data(d) => return Some(d),
                Content::Back(None) => return None,
                Content::Back(Some(j)) => id = *j,
            }
        }
    }

    fn committed_tid(&self, oid: u64) -> Option<u64> {
        self.index.get(&oid).map(|&i| self.recs[i].tid)
    }

    fn serial(&self, oid: u64, s: &Serial) -> u64 {
        match s {
            Serial::Current => self.committed_tid(oid).unwrap_or(0),
            Serial::Zero => 0,
            Serial::Old => self.committed_tid(oid).map_or(1, |t| t.saturating_sub(1)),
        }
    }

    /// Tids of `oid`'s chain, newest first.
    fn chain(&self, oid: u64) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at = self.index.get(&oid).copied();
        while let Some(i) = at {
            out.push(i);
            at = self.recs[i].prev;
        }
        out
    }

    fn open_txn(&mut self) -> Result<&mut Txn, Out> {
        match &mut self.cur {
            Some(t) if !t.voted => Ok(t),
            _ => Err(Out::Wrong),
        }
    }

    fn write(&mut self, oid: u64, content: Content, prev: Option<usize>) {
        let id = self.recs.len();
        let Some(t) = self.cur.as_mut() else { return };
        self.recs.push(Rec { oid, tid: t.tid, prev, content });
        t.recs.push(id);
        t.tindex.insert(oid, id);
    }

    fn undo_record(&self, t: &Txn, r: usize) -> Result<Option<usize>, ()> {
        let rec = &self.recs[r];
        let ipos = self.index.get(&rec.oid).copied();
        let current = t.tindex.get(&rec.oid).copied().or(ipos);
        let mut copy = true;
        if current != Some(r) {
            let cur = current.ok_or(())?;
            let (ptr, data) = match &self.recs[cur].content {
                Content::Data(d) => (Some(cur), Some(d.as_slice())),
                Content::Back(b) => (*b, None),
            };
            if ptr != Some(r) {
                let undone = self.resolve(r).ok_or(())?;
                let data = match data {
                    Some(d) => d,
                    None => self.resolve(ptr.ok_or(())?).ok_or(())?,
                };
                if undone != data {
                    copy = false;
                    if rec.prev.is_none() {
                        return Err(());
                    }
                }
            }
        }
        if rec.prev.is_none() || copy {
            Ok(rec.prev)
        } else {
            Err(())
        }
    }

    fn apply(&mut self, op: &Op) -> Out {
        match op {
            Op::Begin { exact, t } => {
                if self.cur.is_some() {
                    return Out::Wrong;
                }
                let tid = if *exact {
                    if *t <= self.last {
                        return Out::TidNotAfterLast;
                    }
                    *t
                } else {
                    (*t).max(self.last + 1)
                };
                self.cur = Some(Txn { tid, ..Txn::default() });
                Out::Tid(tid)
            }
            Op::Store { oid, serial, byte, len } => {
                let s = self.serial(*oid, serial);
                if let Err(e) = self.open_txn() {
                    return e;
                }
                if let Some(c) = self.committed_tid(*oid) {
                    if c != s {
                        return Out::Conflict(c, s);
                    }
                }
                let prev = self.index.get(oid).copied();
                self.write(*oid, Content::Data(vec![*byte; *len]), prev);
                Out::Ok
            }
            Op::Delete { oid, serial } => {
                let s = self.serial(*oid, serial);
                if let Err(e) = self.open_txn() {
                    return e;
                }
                let Some(c) = self.committed_tid(*oid) else { return Out::PosKey };
                if c != s {
                    return Out::Conflict(c, s);
                }
                let prev = self.index.get(oid).copied();
                self.write(*oid, Content::Back(None), prev);
                Out::Ok
            }
            Op::Restore { oid, byte, prev: pick } => {
                let tid = match self.open_txn() {
                    Ok(t) => t.tid,
                    Err(e) => return e,
                };
                let prev_txn = self.txns.get(*pick).map(|(t, _)| *t);
                let data = byte.map(|b| vec![b; 3]);
                // The record of prev_txn on the object's chain, if the data matches.
                let mut back = None;
                if let Some(pt) = prev_txn {
                    if let Some(&r) = self.chain(*oid).iter().find(|&&r| self.recs[r].tid <= pt) {
                        if self.recs[r].tid == pt {
                            back = match (&self.recs[r].content, &data) {
                                (Content::Back(_), _) | (_, None) => Some(r),
                                (Content::Data(d), Some(x)) if d == x => Some(r),
                                _ => None,
                            };
                        }
                    }
                }
                let prev = self.index.get(oid).copied();
                let content = match (back, data) {
                    (Some(r), _) => Content::Back(Some(r)),
                    (None, Some(d)) => Content::Data(d),
                    (None, None) => Content::Back(None),
                };
                let _ = tid;
                self.write(*oid, content, prev);
                Out::Ok
            }
            Op::Undo { back } => {
                if let Err(e) = self.open_txn() {
                    return e;
                }
                let Some(idx) = self.txns.len().checked_sub(1 + back) else { return Out::Undo };
                let t = self.cur.take().unwrap_or_default();
                let recs = self.txns[idx].1.clone();
                let mut failures: Vec<u64> = Vec::new();
                let mut plans = Vec::new();
                for r in recs {
                    let oid = self.recs[r].oid;
                    failures.retain(|&o| o != oid);
                    match self.undo_record(&t, r) {
                        Ok(b) => plans.push((oid, b)),
                        Err(()) => failures.push(oid),
                    }
                }
                self.cur = Some(t);
                if !failures.is_empty() {
                    return Out::MultipleUndo(failures);
                }
                let mut oids = Vec::new();
                for (oid, b) in plans {
                    let prev = self.index.get(&oid).copied();
                    self.write(oid, Content::Back(b), prev);
                    if !oids.contains(&oid) {
                        oids.push(oid);
                    }
                }
                Out::Oids(oids)
            }
            Op::Check { oid, serial } => {
                let s = self.serial(*oid, serial);
                if let Err(e) = self.open_txn() {
                    return e;
                }
                let current = match self.index.get(oid) {
                    Some(&i) if !matches!(self.recs[i].content, Content::Back(None)) => self.recs[i].tid,
                    _ => return Out::PosKey,
                };
                if current != s {
                    return Out::ReadConflict(current, s);
                }
                Out::Ok
            }
            Op::Vote => match self.open_txn() {
                Ok(t) => {
                    t.voted = true;
                    Out::Ok
                }
                Err(e) => e,
            },
            Op::Finish => match self.cur.take() {
                Some(t) if t.voted => {
                    for (&oid, &id) in &t.tindex {
                        self.index.insert(oid, id);
                    }
                    self.last = t.tid;
                    self.txns.push((t.tid, t.recs));
                    Out::Tid(self.last)
                }
                other => {
                    self.cur = other;
                    Out::Wrong
                }
            },
            Op::Abort => {
                self.cur = None;
                Out::Ok
            }
            Op::LoadBefore { oid, pick, delta } => {
                let before = self.pick_tid(*pick, *delta);
                let chain = self.chain(*oid);
                if chain.is_empty() {
                    return Out::PosKey;
                }
                let mut end = None;
                for r in chain {
                    let rec = &self.recs[r];
                    if rec.tid < before {
                        return match self.resolve(r) {
                            Some(d) => Out::Data(Some((d.to_vec(), rec.tid, end))),
                            None => Out::PosKey,
                        };
                    }
                    end = Some(rec.tid);
                }
                Out::Data(None)
            }
            Op::LoadSerial { oid, pick } => {
                let serial = self.pick_tid(*pick, 0);
                match self.chain(*oid).into_iter().find(|&r| self.recs[r].tid <= serial) {
                    Some(r) if self.recs[r].tid == serial => {
                        self.resolve(r).map_or(Out::PosKey, |d| Out::Bytes(d.to_vec()))
                    }
                    _ => Out::PosKey,
                }
            }
            Op::History { oid } => {
                let chain = self.chain(*oid);
                if chain.is_empty() {
                    return Out::PosKey;
                }
                Out::History(
                    chain
                        .into_iter()
                        .take(3)
                        .map(|r| {
                            let size = match &self.recs[r].content {
                                Content::Data(d) => d.len() as i64,
                                Content::Back(_) => 0,
                            };
                            (self.recs[r].tid, size)
                        })
                        .collect(),
                )
            }
            Op::Reopen { .. } => {
                self.cur = None;
                Out::Ok
            }
        }
    }

    fn pick_tid(&self, pick: usize, delta: i8) -> u64 {
        let base = if pick >= self.txns.len() { u64::MAX >> 1 } else { self.txns[pick].0 };
        base.saturating_add_signed(i64::from(delta))
    }
}

fn run_engine(slot: &mut Option<Storage<MemDir>>, d: &MemDir, m: &Model, op: &Op) -> Out {
    if let Op::Reopen { close } = op {
        if let Some(old) = slot.take() {
            if *close {
                old.close().expect("close");
            }
        }
        *slot = Some(open(d));
        return Out::Ok;
    }
    let Some(s) = slot.as_ref() else { return Out::Wrong };
    let r = |res: Result<(), StorageError>| res.map_or_else(from_err, |()| Out::Ok);
    match op {
        Op::Begin { exact, t } => {
            let tid = if *exact { BeginTid::Exactly(Tid::new(*t)) } else { BeginTid::Now(Tid::new(*t)) };
            s.begin(TxnMeta::default(), tid, TxnStatus::NORMAL).map_or_else(from_err, |t| Out::Tid(t.get()))
        }
        Op::Store { oid, serial, byte, len } => {
            r(s.store(Oid::new(*oid), Tid::new(m.serial(*oid, serial)), &vec![*byte; *len]))
        }
        Op::Delete { oid, serial } => r(s.delete(Oid::new(*oid), Tid::new(m.serial(*oid, serial)))),
        Op::Restore { oid, byte, prev } => {
            let prev_txn = m.txns.get(*prev).map(|(t, _)| Tid::new(*t));
            let data = byte.map(|b| vec![b; 3]);
            let serial = m.cur.as_ref().map_or(Tid::new(1), |t| Tid::new(t.tid));
            r(s.restore(Oid::new(*oid), serial, data.as_deref(), prev_txn))
        }
        Op::Undo { back } => {
            let tid = m.txns.len().checked_sub(1 + back).map_or(Tid::new(12345), |i| Tid::new(m.txns[i].0));
            s.undo(&format::undo_id(tid))
                .map_or_else(from_err, |o| Out::Oids(o.iter().map(|o| o.get()).collect()))
        }
        Op::Check { oid, serial } => {
            r(s.check_current_serial(Oid::new(*oid), Tid::new(m.serial(*oid, serial))))
        }
        Op::Vote => r(s.vote()),
        Op::Finish => s.finish().map_or_else(from_err, |t| Out::Tid(t.get())),
        Op::Abort => r(s.abort()),
        Op::LoadBefore { oid, pick, delta } => {
            s.load_before(Oid::new(*oid), Tid::new(m.pick_tid(*pick, *delta))).map_or_else(from_err, |x| {
                Out::Data(x.map(|x| (x.data.to_vec(), x.start.get(), x.end.map(Tid::get))))
            })
        }
        Op::LoadSerial { oid, pick } => s
            .load_serial(Oid::new(*oid), Tid::new(m.pick_tid(*pick, 0)))
            .map_or_else(from_err, |b| Out::Bytes(b.to_vec())),
        Op::History { oid } => s
            .history(Oid::new(*oid), 3)
            .map_or_else(from_err, |h| Out::History(h.iter().map(|e| (e.tid.get(), e.size)).collect())),
        Op::Reopen { .. } => Out::Ok,
    }
}

fn open(d: &MemDir) -> Storage<MemDir> {
    Storage::open(d.clone(), "Data.fs", Options::default()).expect("open").0
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_mvcc_model(ops in proptest::collection::vec(op(), 1..80)) {
        let d = MemDir::new();
        let mut s = Some(open(&d));
        let mut m = Model::default();
        for (i, op) in ops.iter().enumerate() {
            let want_serial_ctx = format!("step {i}: {op:?}");
            let got = run_engine(&mut s, &d, &m, op);
            let want = m.apply(op);
            prop_assert_eq!(&got, &want, "{}", want_serial_ctx);
            prop_assert_eq!(s.as_ref().map(|s| s.last_transaction().get()), Some(m.last));
        }
        // Every committed revision is still readable after a final reopen.
        drop(s);
        let s = open(&d);
        for oid in 0..OIDS {
            for pick in 0..=m.txns.len() {
                let op = Op::LoadBefore { oid, pick, delta: 1 };
                let got = s.load_before(Oid::new(oid), Tid::new(m.pick_tid(pick, 1)))
                    .map_or_else(from_err, |x| Out::Data(x.map(|x| (x.data.to_vec(), x.start.get(), x.end.map(Tid::get)))));
                prop_assert_eq!(got, m.apply(&op));
            }
        }
    }
}
