//! Property test: random operation sequences on the storage engine agree with a simple
//! in-memory MVCC model of FileStorage.
//!
//! The model keeps records as a list (no file, no positions): each record has its object, tid,
//! previous record and either data or a back-pointer to another record (or to nothing).
//! Loads walk the previous-record chain, undo follows FileStorage's rules on that list. Reopens
//! (with or without saving the index cache, with a transaction left open) must change nothing.
//!
//! Pack rebuilds the list the way FileStorage's pack (without GC) rewrites the file: before the
//! pack time only each object's current record survives (data resolved, no previous record,
//! its transaction marked packed), objects whose current record has no data are dropped,
//! later records keep everything but point at the surviving copies (or hold the data when
//! their target is gone), and nothing changes when the packed part would be exactly as long as
//! the original (record sizes are computed from the FileStorage layout).

use proptest::prelude::*;
use std::collections::BTreeMap;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::types::TxnStatus;
use zeoraid_server::storage::{
    format, BeginTid, MemDir, Options, PackOutcome, PackReport, Storage, StorageError, TxnMeta,
};

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
    Pack { pick: usize, delta: i8 },
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
        2 => (0usize..12, -1i8..=1).prop_map(|(pick, delta)| Op::Pack { pick, delta }),
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
    Pack(Box<PackOut>),
}

/// A transaction as iteration shows it: tid, status, records (oid, data, data_txn).
type TxnView = (u64, char, Vec<(u64, Option<Vec<u8>>, Option<u64>)>);

/// A pack's report and the transactions after it.
#[derive(Debug, Clone, PartialEq)]
struct PackOut {
    outcome: PackOutcome,
    pack_time: u64,
    /// Transactions removed, packed, kept; records removed, objects dropped, back-pointers
    /// resolved.
    counts: [u64; 6],
    txns: Vec<TxnView>,
}

impl PackOut {
    fn from_report(r: &PackReport, txns: Vec<TxnView>) -> PackOut {
        PackOut {
            outcome: r.outcome,
            pack_time: r.pack_time.get(),
            counts: [
                r.transactions_removed,
                r.transactions_packed,
                r.transactions_kept,
                r.records_removed,
                r.objects_dropped,
                r.back_pointers_resolved,
            ],
            txns,
        }
    }
}

fn engine_txns(s: &Storage<MemDir>) -> Vec<TxnView> {
    s.iterator(None, None)
        .map(|r| {
            let (t, recs) = r.expect("iterate");
            let recs = recs
                .into_iter()
                .map(|r| (r.oid.get(), r.data.map(|d| d.to_vec()), r.data_txn.map(Tid::get)))
                .collect();
            (t.header.tid.get(), t.header.status.0, recs)
        })
        .collect()
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
    /// Transactions with a tid below this one are packed (status 'p').
    packed_before: u64,
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
                if self.txns[idx].0 < self.packed_before {
                    // The undo log (and undo's search) stops at packed transactions.
                    return Out::Undo;
                }
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
            Op::Pack { pick, delta } => {
                if self.cur.is_some() {
                    return Out::Wrong;
                }
                let p = self.pick_tid(*pick, *delta);
                Out::Pack(Box::new(self.pack(p)))
            }
        }
    }

    /// Bytes of a record as FileStorage lays it out.
    fn rec_len(content: &Content) -> u64 {
        match content {
            Content::Data(d) => 42 + d.len() as u64,
            Content::Back(_) => 50,
        }
    }

    fn view(&self) -> Vec<TxnView> {
        self.txns
            .iter()
            .map(|(tid, recs)| {
                let status = if *tid < self.packed_before { 'p' } else { ' ' };
                let recs = recs
                    .iter()
                    .map(|&r| {
                        let rec = &self.recs[r];
                        let data_txn = match rec.content {
                            Content::Back(Some(j)) => Some(self.recs[j].tid),
                            _ => None,
                        };
                        (rec.oid, self.resolve(r).map(<[u8]>::to_vec), data_txn)
                    })
                    .collect();
                (*tid, status, recs)
            })
            .collect()
    }

    fn pack(&mut self, pack_time: u64) -> PackOut {
        let mut out =
            PackOut { outcome: PackOutcome::Packed, pack_time: 0, counts: [0; 6], txns: Vec::new() };
        if self.txns.is_empty() {
            out.outcome = PackOutcome::Empty;
            out.txns = self.view();
            return out;
        }
        let p = pack_time.min(self.last);
        out.pack_time = p;
        if self.txns[0].0 >= p {
            out.outcome = PackOutcome::BeforeFirstTransaction;
            out.txns = self.view();
            return out;
        }
        let nb = self.txns.iter().take_while(|(t, _)| *t < p).count();
        // Each object's current record at the pack time; None: it holds no data (dropped).
        let mut current: BTreeMap<u64, Option<usize>> = BTreeMap::new();
        for (_, recs) in &self.txns[..nb] {
            for &r in recs {
                let keep = !matches!(self.recs[r].content, Content::Back(None));
                current.insert(self.recs[r].oid, keep.then_some(r));
            }
        }
        let mut recs: Vec<Rec> = Vec::new();
        let mut moved: BTreeMap<usize, usize> = BTreeMap::new();
        let mut index: BTreeMap<u64, usize> = BTreeMap::new();
        let mut txns = Vec::new();
        let (mut old_len, mut new_len) = (0, 0);
        let (mut removed, mut packed, mut records) = (0, 0, 0);
        for (tid, trecs) in &self.txns[..nb] {
            old_len += 31 + trecs.iter().map(|&r| Self::rec_len(&self.recs[r].content)).sum::<u64>();
            records += trecs.len() as u64;
            let mut kept = Vec::new();
            for &r in trecs {
                if current.get(&self.recs[r].oid) == Some(&Some(r)) {
                    let content = self.resolve(r).map_or(Content::Back(None), |d| Content::Data(d.to_vec()));
                    new_len += Self::rec_len(&content);
                    let id = recs.len();
                    recs.push(Rec { oid: self.recs[r].oid, tid: *tid, prev: None, content });
                    moved.insert(r, id);
                    index.insert(self.recs[r].oid, id);
                    kept.push(id);
                }
            }
            if kept.is_empty() {
                removed += 1;
            } else {
                new_len += 31;
                packed += 1;
                txns.push((*tid, kept));
            }
        }
        if new_len == old_len {
            out.outcome = PackOutcome::NothingToRemove;
            out.txns = self.view();
            return out;
        }
        let mut resolved = 0;
        for (tid, trecs) in &self.txns[nb..] {
            let mut ids = Vec::new();
            let mut tindex = BTreeMap::new();
            for &r in trecs {
                let rec = &self.recs[r];
                let content = match &rec.content {
                    Content::Back(Some(j)) => match moved.get(j) {
                        Some(&nj) => Content::Back(Some(nj)),
                        None => {
                            resolved += 1;
                            self.resolve(*j).map_or(Content::Back(None), |d| Content::Data(d.to_vec()))
                        }
                    },
                    other => other.clone(),
                };
                let id = recs.len();
                recs.push(Rec { oid: rec.oid, tid: *tid, prev: index.get(&rec.oid).copied(), content });
                moved.insert(r, id);
                tindex.insert(rec.oid, id);
                ids.push(id);
            }
            index.extend(tindex);
            txns.push((*tid, ids));
        }
        let dropped = current.values().filter(|c| c.is_none()).count() as u64;
        let kept_before: u64 = txns.iter().take(packed as usize).map(|(_, r)| r.len() as u64).sum();
        out.counts =
            [removed, packed, (self.txns.len() - nb) as u64, records - kept_before, dropped, resolved];
        self.recs = recs;
        self.index = index;
        self.txns = txns;
        self.packed_before = self.packed_before.max(p);
        out.txns = self.view();
        out
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
        Op::Pack { pick, delta } => {
            if m.cur.is_some() {
                // A pack waits for the transaction in progress: it cannot run on this thread.
                return Out::Wrong;
            }
            let r = s.pack(Tid::new(m.pick_tid(*pick, *delta))).map_err(from_err);
            match r {
                Ok(r) => Out::Pack(Box::new(PackOut::from_report(&r, engine_txns(s)))),
                Err(e) => e,
            }
        }
        Op::Reopen { .. } => Out::Ok,
    }
}

fn open(d: &MemDir) -> Storage<MemDir> {
    Storage::open(d.clone(), "Data.fs", Options::default()).expect("open").0
}

/// Operations that mostly commit whole transactions (so packs see long histories), with
/// packs, loads and reopens in between.
fn history_op() -> impl Strategy<Value = Vec<Op>> {
    let body = prop_oneof![
        6 => (0..OIDS, any::<u8>(), 1usize..6)
            .prop_map(|(oid, byte, len)| Op::Store { oid, serial: Serial::Current, byte, len }),
        2 => (0..OIDS).prop_map(|oid| Op::Delete { oid, serial: Serial::Current }),
        3 => (0usize..6).prop_map(|back| Op::Undo { back }),
        1 => (0..OIDS, proptest::option::of(any::<u8>()), 0usize..12)
            .prop_map(|(oid, byte, prev)| Op::Restore { oid, byte, prev }),
    ];
    prop_oneof![
        8 => (0u64..40, proptest::collection::vec(body, 0..4)).prop_map(|(t, ops)| {
            let mut v = vec![Op::Begin { exact: false, t }];
            v.extend(ops);
            v.extend([Op::Vote, Op::Finish]);
            v
        }),
        3 => (0usize..14, -1i8..=1).prop_map(|(pick, delta)| vec![Op::Pack { pick, delta }]),
        2 => (0..OIDS, 0usize..14, -1i8..=1).prop_map(|(oid, pick, delta)| vec![Op::LoadBefore { oid, pick, delta }]),
        1 => (0..OIDS).prop_map(|oid| vec![Op::History { oid }]),
        1 => any::<bool>().prop_map(|close| vec![Op::Reopen { close }]),
    ]
}

/// Runs `ops` on the engine and the model, comparing every outcome, then every revision after
/// a final reopen.
fn agree(ops: &[Op]) -> Result<(), TestCaseError> {
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
            let got =
                s.load_before(Oid::new(oid), Tid::new(m.pick_tid(pick, 1))).map_or_else(from_err, |x| {
                    Out::Data(x.map(|x| (x.data.to_vec(), x.start.get(), x.end.map(Tid::get))))
                });
            prop_assert_eq!(got, m.apply(&op));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_mvcc_model(ops in proptest::collection::vec(op(), 1..80)) {
        agree(&ops)?;
    }

    #[test]
    fn packs_of_long_histories_agree_with_the_model(
        ops in proptest::collection::vec(history_op(), 1..40).prop_map(|v| v.concat())
    ) {
        agree(&ops)?;
    }
}
