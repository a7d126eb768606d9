//! Unit tests of pack: semantics, reports, concurrency, cursors, failures (in-memory files).

use crate::storage::format::{self, STATUS_PACKED};
use crate::storage::{
    BeginTid, IndexSource, MemDir, OpenError, Options, PackOutcome, PackPhase, PackReport, Storage,
    StorageDir, StorageError, TxnMeta,
};
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::types::TxnStatus;

const NAME: &str = "Data.fs";

fn o(n: u64) -> Oid {
    Oid::new(n)
}

fn t(n: u64) -> Tid {
    Tid::new(n)
}

fn open(d: &MemDir) -> Storage<MemDir> {
    Storage::open(d.clone(), NAME, Options::default()).expect("open").0
}

/// A second, read-only view that rebuilds the index by scanning: it takes no `Data.fs.lock`,
/// so it can sit beside a storage that is open for writing.
fn open_scanning(d: &MemDir) -> Storage<MemDir> {
    let (s, r) =
        Storage::open(d.clone(), NAME, Options { index_cache: false, read_only: true, ..Options::default() })
            .expect("open without cache");
    assert_eq!(r.index, IndexSource::Scan);
    assert_eq!(r.dropped_tail, None);
    s
}

/// What a test transaction does.
#[derive(Clone, Copy)]
enum Op<'a> {
    /// Store data (serial: the object's newest record, whatever it is).
    Store(u64, &'a [u8]),
    Delete(u64),
    Undo(u64),
    /// Restore with a back-pointer to the object's record in that transaction.
    RestoreBack(u64, &'a [u8], u64),
}

/// The tid of `oid`'s newest record (a delete included), or zero.
fn serial(s: &Storage<MemDir>, oid: u64) -> Tid {
    s.history(o(oid), 1).ok().and_then(|h| h.first().map(|e| e.tid)).unwrap_or(Tid::ZERO)
}

fn commit(s: &Storage<MemDir>, tid: u64, ops: &[Op<'_>]) -> Tid {
    commit_d(s, tid, &format!("t{tid}"), ops)
}

fn commit_d(s: &Storage<MemDir>, tid: u64, description: &str, ops: &[Op<'_>]) -> Tid {
    let meta = TxnMeta::with_raw_extension(
        Bytes::from_static(b"u"),
        Bytes::copy_from_slice(description.as_bytes()),
        Bytes::new(),
    );
    s.begin(meta, BeginTid::Exactly(t(tid)), TxnStatus::NORMAL).expect("begin");
    for op in ops {
        match *op {
            Op::Store(oid, data) => s.store(o(oid), serial(s, oid), data).expect("store"),
            Op::Delete(oid) => s.delete(o(oid), serial(s, oid)).expect("delete"),
            Op::Undo(u) => {
                s.undo(&format::undo_id(t(u))).expect("undo");
            }
            Op::RestoreBack(oid, data, from) => {
                s.restore(o(oid), t(tid), Some(data), Some(t(from))).expect("restore");
            }
        }
    }
    s.vote().expect("vote");
    s.finish().expect("finish")
}

/// The transactions of the experiment run against Python's FileStorage (see the report).
fn python_scenario(s: &Storage<MemDir>) {
    commit(s, 100, &[Op::Store(0, b"root1"), Op::Store(1, b"a1"), Op::Store(2, b"b1")]);
    commit(s, 200, &[Op::Store(1, b"a2")]);
    commit(s, 300, &[Op::Delete(2)]);
    commit(s, 400, &[Op::Store(1, b"a3"), Op::Store(3, b"c1")]);
    commit_d(s, 500, "t500 undo 400", &[Op::Undo(400)]);
    commit(s, 600, &[Op::Store(0, b"root2")]);
}

/// A varied history: revisions, deletes, undo of a change, of a creation and of a delete,
/// restores with back-pointers, an empty transaction, two records of one object in a
/// transaction.
fn rich_scenario(s: &Storage<MemDir>) -> Vec<u64> {
    commit(s, 10, &[Op::Store(0, b"root1"), Op::Store(1, b"a1"), Op::Store(2, b"b1")]);
    commit(s, 20, &[Op::Store(1, b"a2"), Op::Store(3, b"c1")]);
    commit(s, 30, &[]);
    commit(s, 40, &[Op::Delete(2)]);
    commit(s, 50, &[Op::Undo(20)]);
    commit(s, 60, &[Op::Store(4, b"d1"), Op::Store(1, b"a3")]);
    commit(s, 70, &[Op::Undo(40)]);
    commit(s, 80, &[Op::RestoreBack(1, b"a3", 60), Op::Store(5, b"e1")]);
    commit(s, 90, &[Op::Store(4, b"d2"), Op::Store(4, b"d3")]);
    commit(s, 100, &[Op::Undo(80)]);
    commit(s, 110, &[Op::Delete(5), Op::Store(0, b"root2")]);
    commit(s, 120, &[Op::Undo(90)]);
    commit(s, 130, &[Op::Store(6, b"f1")]);
    commit(s, 140, &[Op::Undo(130), Op::Store(2, b"b2")]);
    vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140]
}

const OIDS: u64 = 8;

fn show<T: std::fmt::Debug>(r: Result<T, StorageError>) -> String {
    match r {
        Ok(x) => format!("{x:?}"),
        Err(StorageError::PosKey { .. }) => "POSKey".into(),
        Err(e) => panic!("storage fault: {e}"),
    }
}

/// Every `load_before(oid, b)` with `b` among the tids of interest at or after `from`.
fn loads(s: &Storage<MemDir>, tids: &[u64], from: Tid) -> Vec<(u64, u64, String)> {
    let mut bs: Vec<u64> = tids.iter().flat_map(|&x| [x, x + 1]).collect();
    bs.push(Tid::MAX.get());
    bs.retain(|&b| b >= from.get());
    let mut out = Vec::new();
    for oid in 0..OIDS {
        for &b in &bs {
            out.push((oid, b, show(s.load_before(o(oid), t(b)))));
        }
    }
    out
}

/// A record as iteration yields it: oid, tid, data, data_txn.
type Rec = (u64, u64, Option<Bytes>, Option<u64>);

/// The transactions with their records as iteration yields them.
fn txns(s: &Storage<MemDir>) -> Vec<(u64, char, Vec<Rec>)> {
    s.iterator(None, None)
        .map(|r| {
            let (h, recs) = r.expect("iterate");
            let recs = recs
                .into_iter()
                .map(|r| (r.oid.get(), r.tid.get(), r.data, r.data_txn.map(Tid::get)))
                .collect();
            (h.header.tid.get(), h.header.status.0, recs)
        })
        .collect()
}

/// Checks everything the pack promises for `pack_time`, comparing `s` (packed) with `before`
/// (a copy of the storage before the pack).
fn check_packed(s: &Storage<MemDir>, before: &Storage<MemDir>, tids: &[u64], r: &PackReport) {
    let p = r.pack_time;
    assert_eq!(s.last_transaction(), before.last_transaction());
    if r.outcome != PackOutcome::Packed {
        assert_eq!(txns(s), txns(before), "{r:?}");
        assert_eq!(loads(s, tids, Tid::ZERO), loads(before, tids, Tid::ZERO));
        return;
    }
    // load_before at every tid from the pack time on answers as before, except for objects
    // whose current revision at the pack time held no data: they are dropped, and where the
    // old answer was POSKey (the delete) there is now no revision.
    let dropped: Vec<u64> = (0..OIDS)
        .filter(|&oid| {
            matches!(before.load_before(o(oid), p), Err(StorageError::PosKey { .. }))
                && before.history(o(oid), 1000).is_ok_and(|h| h.iter().any(|e| e.tid < p))
        })
        .collect();
    let old = loads(before, tids, p);
    let new = loads(s, tids, p);
    for (a, b) in old.iter().zip(&new) {
        let allowed = dropped.contains(&a.0) && a.2 == "POSKey" && b.2 == "None";
        assert!(a == b || allowed, "pack time {p}: oid {} before {}: was {}, now {}", a.0, a.1, a.2, b.2);
    }
    // History before the pack time is gone: at most the current revision remains.
    for oid in 0..OIDS {
        if let Ok(h) = s.history(o(oid), 1000) {
            let old_ones: Vec<_> = h.iter().filter(|e| e.tid < p).collect();
            assert!(old_ones.len() <= 1, "oid {oid}: {} revisions before {p}", old_ones.len());
            assert!(!dropped.contains(&oid) || old_ones.is_empty(), "oid {oid} was dropped");
            if let Some(e) = old_ones.first() {
                assert_eq!(
                    s.load_serial(o(oid), e.tid).ok(),
                    before.load_before(o(oid), p).ok().flatten().map(|r| r.data),
                    "oid {oid}: the kept revision is the current one at {p}"
                );
            }
            let newer_before: Vec<_> = before
                .history(o(oid), 1000)
                .expect("history")
                .into_iter()
                .filter(|e| e.tid >= p)
                .map(|e| (e.tid, e.size, e.description))
                .collect();
            let newer_after: Vec<_> =
                h.iter().filter(|e| e.tid >= p).map(|e| (e.tid, e.size, e.description.clone())).collect();
            // Sizes can only differ where a back-pointer into removed history became data.
            assert_eq!(
                newer_before.iter().map(|e| e.0).collect::<Vec<_>>(),
                newer_after.iter().map(|e| e.0).collect::<Vec<_>>(),
                "oid {oid}"
            );
        }
    }
    // Transactions from the pack time on are as they were (data_txn may only vanish where the
    // data was copied in); those before are packed, with current records only.
    let old_txns = txns(before);
    let new_txns = txns(s);
    let old_after: Vec<_> = old_txns.iter().filter(|x| x.0 >= p.get()).collect();
    let new_after: Vec<_> = new_txns.iter().filter(|x| x.0 >= p.get()).collect();
    assert_eq!(old_after.len(), new_after.len());
    for (a, b) in old_after.iter().zip(&new_after) {
        assert_eq!((a.0, a.1), (b.0, b.1));
        assert_eq!(a.2.len(), b.2.len());
        for (ra, rb) in a.2.iter().zip(&b.2) {
            assert_eq!((ra.0, ra.1, &ra.2), (rb.0, rb.1, &rb.2), "txn {}", a.0);
            assert!(ra.3 == rb.3 || (rb.3.is_none() && ra.3.is_some_and(|x| x < p.get())), "txn {}", a.0);
        }
    }
    for x in new_txns.iter().filter(|x| x.0 < p.get()) {
        assert_eq!(x.1, 'p', "txn {} before the pack time is packed", x.0);
        assert!(!x.2.is_empty());
        for r in &x.2 {
            assert_eq!(r.3, None, "packed records hold their data");
            let want = before.load_before(o(r.0), p).ok().flatten().map(|l| (l.start.get(), l.data));
            assert_eq!(Some((r.1, r.2.clone().expect("data"))), want, "record of {} in txn {}", r.0, x.0);
        }
    }
    // The undo log stops at the packed transactions.
    assert!(s.undo_log(0, 1000).expect("undo log").iter().all(|e| format::parse_undo_id(&e.id.0) >= Some(p)));
}

/// A storage built by `f` in a fresh directory.
fn build(f: impl Fn(&Storage<MemDir>)) -> (MemDir, Storage<MemDir>) {
    let d = MemDir::new();
    let s = open(&d);
    f(&s);
    (d, s)
}

#[test]
fn python_scenario_packs_as_filestorage_does() {
    let (d, s) = build(python_scenario);
    let (_, before) = build(python_scenario);
    let size = s.size();
    // Python: pack to stop = 300 (inclusive) is this pack to 301.
    let r = s.pack(t(301)).expect("pack");
    assert_eq!(r.outcome, PackOutcome::Packed);
    assert_eq!(r.pack_time, t(301));
    assert_eq!((r.transactions_removed, r.transactions_packed, r.transactions_kept), (1, 2, 3));
    // a1 (superseded), b1 and its delete (dropped object), root1 is kept.
    assert_eq!((r.records_removed, r.objects_dropped, r.back_pointers_resolved), (3, 1, 0));
    assert_eq!((r.bytes_before, r.bytes_after), (size, s.size()));
    assert!(s.size() < size);
    let got = txns(&s);
    let b = |x: &'static [u8]| Some(Bytes::from_static(x));
    assert_eq!(
        got,
        vec![
            (100, 'p', vec![(0, 100, b(b"root1"), None)]),
            (200, 'p', vec![(1, 200, b(b"a2"), None)]),
            (400, ' ', vec![(1, 400, b(b"a3"), None), (3, 400, b(b"c1"), None)]),
            (500, ' ', vec![(1, 500, b(b"a2"), Some(200)), (3, 500, None, None)]),
            (600, ' ', vec![(0, 600, b(b"root2"), None)]),
        ]
    );
    // The file positions Python's pack produced for the same transactions (same metadata).
    let bytes = d.contents(NAME).expect("file");
    let at = |p: usize| u64::from_be_bytes(bytes[p..p + 8].try_into().expect("8 bytes"));
    assert_eq!(bytes[4 + 16], STATUS_PACKED);
    assert_eq!((at(4 + 8), at(87 + 8), at(167 + 8), at(291 + 8)), (75, 72, 116, 137), "tlens");
    assert_eq!(at(195 + 16), 115, "a3's previous record is the kept a2");
    assert_eq!(at(328 + 42), 115, "the undo's back-pointer is re-aimed at the kept a2");
    check_packed(&s, &before, &[100, 200, 300, 400, 500, 600], &r);
    assert!(matches!(s.load_before(o(2), Tid::MAX), Err(StorageError::PosKey { .. })), "b is gone");
    assert_eq!(s.len(), 3);
    let log: Vec<_> = s.undo_log(0, 10).expect("log").iter().map(|e| e.description.clone()).collect();
    assert_eq!(
        log,
        vec![Bytes::from_static(b"t600"), Bytes::from_static(b"t500 undo 400"), Bytes::from_static(b"t400")]
    );
    // Undo of a transaction after the pack time still works: a back to a3, c uncreated.
    commit(&s, 700, &[Op::Undo(500)]);
    assert_eq!(s.load(o(1)).expect("a").0, Bytes::from_static(b"a3"));
    assert_eq!(s.load(o(3)).expect("c").0, Bytes::from_static(b"c1"));
    // And undo of one before it does not.
    s.begin(TxnMeta::default(), BeginTid::Exactly(t(800)), TxnStatus::NORMAL).expect("begin");
    assert!(matches!(s.undo(&format::undo_id(t(200))), Err(StorageError::Undo { .. })));
    s.abort().expect("abort");
    // The file is valid on its own, and the index cache written by the pack is used.
    drop(s);
    let scanned = open_scanning(&d);
    assert_eq!(scanned.last_transaction(), t(700));
    let (s, r) = Storage::open(d.clone(), NAME, Options::default()).expect("reopen");
    assert!(matches!(r.index, IndexSource::Cache { .. }), "{r:?}");
    assert_eq!(s.committed().index, scanned.committed().index);
}

#[test]
fn a_back_pointer_into_removed_history_gets_the_data() {
    // Python's FileStorage fails this pack with "PackError: Invalid backpointer transaction id":
    // the undo at 500 points at a2 (in 200), which is not current at 401.
    let (_, s) = build(python_scenario);
    let (_, before) = build(python_scenario);
    let r = s.pack(t(401)).expect("pack");
    assert_eq!(r.back_pointers_resolved, 1);
    assert_eq!(r.objects_dropped, 1);
    let got = txns(&s);
    assert_eq!(got[2].0, 500);
    assert_eq!(got[2].2[0], (1, 500, Some(Bytes::from_static(b"a2")), None), "data copied in");
    assert_eq!(got[2].2[1], (3, 500, None, None));
    check_packed(&s, &before, &[100, 200, 300, 400, 500, 600], &r);
    assert_eq!(
        s.history(o(1), 10).expect("history").iter().map(|e| (e.tid.get(), e.size)).collect::<Vec<_>>(),
        vec![(500, 2), (400, 2)]
    );
}

#[test]
fn every_pack_time_keeps_what_it_promises() {
    let (_, before) = build(|s| {
        rich_scenario(s);
    });
    let tids = rich_scenario(&open(&MemDir::new()));
    let mut times: Vec<u64> = tids.iter().flat_map(|&x| [x - 1, x, x + 1]).collect();
    times.push(1000);
    for p in times {
        let (d, s) = build(|s| {
            rich_scenario(s);
        });
        let r = s.pack(t(p)).expect("pack");
        let p_eff = t(p.min(140));
        assert_eq!(r.pack_time, p_eff);
        if p <= 10 {
            assert_eq!(r.outcome, PackOutcome::BeforeFirstTransaction, "pack time {p}");
        }
        check_packed(&s, &before, &tids, &r);
        // Packing again at the same time frees nothing.
        let again = s.pack(t(p)).expect("pack again");
        assert_ne!(again.outcome, PackOutcome::Packed, "pack time {p}: {again:?}");
        assert_eq!(again.bytes_after, s.size());
        // The file stands on its own: a full scan (every check of open) agrees with it.
        let scanned = open_scanning(&d);
        assert_eq!(loads(&scanned, &tids, p_eff), loads(&s, &tids, p_eff), "pack time {p}");
        assert_eq!(txns(&scanned), txns(&s));
        assert_eq!(scanned.committed().index, s.committed().index, "pack time {p}");
        // New commits land after the packed data and can be packed again.
        commit(&s, 2000, &[Op::Store(1, b"later"), Op::Store(7, b"new")]);
        commit(&s, 2001, &[Op::Store(1, b"later2")]);
        let r2 = s.pack(t(2001)).expect("pack after more commits");
        assert_eq!(r2.outcome, PackOutcome::Packed);
        assert_eq!(
            s.load_before(o(1), t(2001)).expect("load").map(|r| r.data),
            Some(Bytes::from_static(b"later"))
        );
        assert_eq!(s.load(o(1)).expect("load").0, Bytes::from_static(b"later2"));
    }
}

#[test]
fn no_op_packs_say_why() {
    let d = MemDir::new();
    let s = open(&d);
    let r = s.pack(t(50)).expect("empty");
    assert_eq!((r.outcome, r.bytes_before, r.bytes_after), (PackOutcome::Empty, 4, 4));
    commit(&s, 100, &[Op::Store(0, b"r"), Op::Store(1, b"a")]);
    let r = s.pack(Tid::MAX).expect("one transaction");
    assert_eq!(
        (r.outcome, r.pack_time),
        (PackOutcome::BeforeFirstTransaction, t(100)),
        "the last one is kept"
    );
    commit(&s, 200, &[Op::Store(2, b"b")]);
    let image = d.contents(NAME);
    let r = s.pack(t(99)).expect("before the first");
    assert_eq!(r.outcome, PackOutcome::BeforeFirstTransaction);
    let r = s.pack(Tid::MAX).expect("all current");
    assert_eq!((r.outcome, r.pack_time), (PackOutcome::NothingToRemove, t(200)));
    assert_eq!(d.contents(NAME), image, "the file is untouched");
    assert!(!d.names().iter().any(|n| n.ends_with(".pack")));
    assert_eq!(s.undo_log(0, 10).expect("log").len(), 2, "nothing was marked packed");
    commit(&s, 300, &[Op::Store(1, b"a2")]);
    let r = s.pack(Tid::MAX).expect("a2 is the last transaction, kept as it is");
    assert_eq!((r.outcome, r.pack_time), (PackOutcome::NothingToRemove, t(300)));
    commit(&s, 400, &[Op::Store(2, b"b2")]);
    let r = s.pack(Tid::MAX).expect("pack");
    assert_eq!((r.outcome, r.pack_time, r.records_removed), (PackOutcome::Packed, t(400), 1));
    assert_eq!(r.transactions_kept, 1, "the last transaction is kept as it is");
    assert_eq!(
        txns(&s).iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(),
        vec![(100, 'p'), (200, 'p'), (300, 'p'), (400, ' ')]
    );
    let again = s.pack(t(400)).expect("again");
    assert_eq!(again.outcome, PackOutcome::NothingToRemove);
}

#[test]
fn read_only_storages_refuse_to_pack() {
    let (d, s) = build(python_scenario);
    drop(s);
    let (s, _) = Storage::open(d, NAME, Options { read_only: true, ..Options::default() }).expect("open");
    assert!(matches!(s.pack(t(301)), Err(StorageError::ReadOnly)));
}

#[test]
fn a_second_pack_is_refused_while_one_runs() {
    let (_, s) = build(python_scenario);
    let mut inner = None;
    let r = s
        .pack_with_progress(t(301), |phase| {
            if phase == PackPhase::CopiedToPackTime {
                inner = Some(s.pack(t(301)).map(|r| r.outcome));
            }
        })
        .expect("pack");
    assert_eq!(r.outcome, PackOutcome::Packed);
    assert!(matches!(inner, Some(Err(StorageError::PackInProgress))), "{inner:?}");
    // Once it is over, another may run.
    assert_eq!(s.pack(t(301)).expect("again").outcome, PackOutcome::NothingToRemove);
}

#[test]
fn commits_during_the_pack_land_in_the_packed_file() {
    let (d, s) = build(python_scenario);
    let big = vec![7u8; 3 << 20];
    let mut phases = Vec::new();
    let r = s
        .pack_with_progress(t(301), |phase| {
            phases.push(phase);
            match phase {
                // Before the snapshot is copied: a commit the unlocked catch-up copies.
                PackPhase::CopiedToPackTime => {
                    commit(&s, 700, &[Op::Store(4, &big)]);
                }
                // A large one (copied without the lock) and a small one (under the lock).
                PackPhase::CopiedSnapshot => {
                    commit(&s, 800, &[Op::Store(5, &big)]);
                    commit(&s, 900, &[Op::Undo(500)]);
                }
                PackPhase::Finishing => {
                    commit(&s, 1000, &[Op::Store(0, b"root3")]);
                }
                PackPhase::Planned => {}
            }
        })
        .expect("pack");
    assert_eq!(
        phases,
        vec![
            PackPhase::Planned,
            PackPhase::CopiedToPackTime,
            PackPhase::CopiedSnapshot,
            PackPhase::Finishing
        ]
    );
    assert_eq!(r.outcome, PackOutcome::Packed);
    // 400, 500, 600 from the snapshot; 700, 800, 900 caught up without the lock; 1000 under it.
    assert_eq!((r.transactions_kept, r.transactions_committed_during_pack), (7, 4), "{r:?}");
    assert_eq!(s.last_transaction(), t(1000));
    let tids: Vec<u64> = txns(&s).iter().map(|x| x.0).collect();
    assert_eq!(tids, vec![100, 200, 400, 500, 600, 700, 800, 900, 1000]);
    assert_eq!(s.load(o(0)).expect("root").0, Bytes::from_static(b"root3"));
    assert_eq!(s.load(o(4)).expect("big").0.len(), big.len());
    assert_eq!(s.load(o(5)).expect("big").0.len(), big.len());
    // 900 undid 500 (a back to a3, c back to c1, both from 400): its back-pointers were
    // re-aimed at the copies of 400's records.
    assert_eq!(s.load(o(1)).expect("a").0, Bytes::from_static(b"a3"));
    assert_eq!(s.load(o(3)).expect("c").0, Bytes::from_static(b"c1"));
    drop(s);
    let scanned = open_scanning(&d);
    assert_eq!(txns(&scanned).iter().map(|x| x.0).collect::<Vec<_>>(), tids);
    assert_eq!(scanned.load(o(3)).expect("c").0, Bytes::from_static(b"c1"));
}

#[test]
fn the_pack_waits_for_the_transaction_in_progress_and_begin_waits_for_the_pack() {
    let (d, s) = build(python_scenario);
    let begun = AtomicBool::new(false);
    let finishing = AtomicBool::new(false);
    let finished_at = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            s.begin(TxnMeta::default(), BeginTid::Exactly(t(700)), TxnStatus::NORMAL).expect("begin");
            s.store(o(9), Tid::ZERO, b"in flight").expect("store");
            begun.store(true, Ordering::SeqCst);
            while !finishing.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            // The pack is now waiting for this transaction.
            std::thread::sleep(std::time::Duration::from_millis(50));
            s.vote().expect("vote");
            finished_at.store(s.finish().expect("finish").get(), Ordering::SeqCst);
        });
        let r = s
            .pack_with_progress(t(301), |phase| {
                if phase == PackPhase::CopiedSnapshot {
                    while !begun.load(Ordering::SeqCst) {
                        std::thread::yield_now();
                    }
                }
                if phase == PackPhase::Finishing {
                    finishing.store(true, Ordering::SeqCst);
                }
            })
            .expect("pack");
        writer.join().expect("writer");
        assert_eq!(finished_at.load(Ordering::SeqCst), 700);
        assert_eq!(r.transactions_committed_during_pack, 1);
    });
    assert_eq!(s.load(o(9)).expect("in the packed file").0, Bytes::from_static(b"in flight"));
    drop(s);
    assert_eq!(open_scanning(&d).load(o(9)).expect("after reopen").0, Bytes::from_static(b"in flight"));
}

#[test]
fn cursors_from_before_a_pack_fail_clearly_and_plain_reads_go_on() {
    let (_, s) = build(python_scenario);
    let mut cur = s.txn_cursor(None, None).expect("cursor");
    let first = s.next_txn(&mut cur).expect("next").expect("a txn");
    let mut recs = first.records();
    let mut it = s.iterator(Some(t(400)), None);
    assert!(it.next().is_some());
    let log_before = s.undo_log(0, 2).expect("log");
    s.pack(t(301)).expect("pack");
    assert!(matches!(s.next_txn(&mut cur), Err(StorageError::FileReplaced { cursor: 0, current: 1 })));
    assert!(matches!(s.next_record(&mut recs), Err(StorageError::FileReplaced { .. })));
    assert!(matches!(it.next(), Some(Err(StorageError::FileReplaced { .. }))));
    assert_eq!(
        StorageError::FileReplaced { cursor: 0, current: 1 }.culprit(),
        crate::storage::Culprit::Caller
    );
    // New cursors and stateless reads see the new file.
    let mut cur = s.txn_cursor(None, None).expect("cursor");
    assert_eq!(s.next_txn(&mut cur).expect("next").expect("txn").header.status, TxnStatus::PACKED);
    assert_eq!(s.undo_log(0, 2).expect("log"), log_before, "the newest entries did not change");
    assert_eq!(s.invalidations_since(t(500), 10).expect("inv"), Some((t(600), vec![o(0)])));
}

#[test]
fn readers_and_committers_on_other_threads_run_through_packs() {
    let (d, s) = build(|s| {
        commit(s, 1, &[Op::Store(1, b"1"), Op::Store(2, b"1")]);
    });
    let stop = AtomicBool::new(false);
    let last_committed = AtomicU64::new(1);
    // Set before each pack starts: history before it may vanish under a slow reader.
    let packing_to = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let reader = || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let last = s.last_transaction();
                // Both objects change in every transaction and keep every revision from
                // the pack time on: a reader sees them agree, before, during and after packs.
                let a = s.load_before(o(1), Tid::new(last.get() + 1)).expect("a");
                let b = s.load_before(o(2), Tid::new(last.get() + 1)).expect("b");
                match (a, b) {
                    (Some(a), Some(b)) => assert_eq!((a.data, a.start), (b.data, b.start)),
                    _ => assert!(
                        packing_to.load(Ordering::SeqCst) > last.get(),
                        "history after the pack time vanished"
                    ),
                }
                n += 1;
            }
            n
        };
        let writer = || {
            for tid in 2..400u64 {
                let v = tid.to_string();
                s.begin(TxnMeta::default(), BeginTid::Exactly(t(tid)), TxnStatus::NORMAL).expect("begin");
                s.store(o(1), t(tid - 1), v.as_bytes()).expect("store");
                s.store(o(2), t(tid - 1), v.as_bytes()).expect("store");
                s.vote().expect("vote");
                s.finish().expect("finish");
                last_committed.store(tid, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        };
        let readers = [scope.spawn(reader), scope.spawn(reader)];
        let w = scope.spawn(writer);
        let mut packs = 0;
        while !w.is_finished() {
            let upto = last_committed.load(Ordering::SeqCst).saturating_sub(5).max(1);
            packing_to.store(upto, Ordering::SeqCst);
            let r = s.pack(t(upto)).expect("pack");
            if r.outcome == PackOutcome::Packed {
                packs += 1;
                assert!(s.load_before(o(1), t(upto + 1)).expect("load").is_some());
            }
        }
        w.join().expect("writer");
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().expect("reader") > 0);
        }
        assert!(packs > 0, "at least one pack ran during the commits");
    });
    s.pack(t(399)).expect("last pack");
    assert_eq!(s.load(o(1)).expect("load").0, Bytes::from_static(b"399"));
    assert_eq!(s.load_before(o(2), t(399)).expect("load").map(|r| r.data), Some(Bytes::from_static(b"398")));
    drop(s);
    let s = open_scanning(&d);
    assert_eq!(txns(&s).len(), 2);
}

#[test]
fn a_leftover_pack_file_is_removed_at_open() {
    let (d, s) = build(python_scenario);
    drop(s);
    d.put("Data.fs.pack", b"FS30 half a pack".to_vec());
    let s = open(&d);
    assert!(!d.names().iter().any(|n| n == "Data.fs.pack"), "{:?}", d.names());
    assert_eq!(s.last_transaction(), t(600));
    drop(s);
    // Read-only opens leave it alone.
    d.put("Data.fs.pack", b"FS30".to_vec());
    let (_, _) =
        Storage::open(d.clone(), NAME, Options { read_only: true, ..Options::default() }).expect("ro");
    assert!(d.names().iter().any(|n| n == "Data.fs.pack"));
}

#[test]
fn a_failed_pack_leaves_the_storage_as_it_was() {
    let (_, reference) = build(python_scenario);
    let tids = [100, 200, 300, 400, 500, 600];
    let want = loads(&reference, &tids, Tid::ZERO);
    for k in 1.. {
        let (d, s) = build(python_scenario);
        let image = d.contents(NAME);
        d.fail_after(Some(k));
        let r = s.pack(t(301));
        d.fail_after(None);
        match r {
            Ok(r) => {
                assert_eq!(r.outcome, PackOutcome::Packed);
                assert!(k > 5, "the pack did some writes");
                break;
            }
            Err(StorageError::Broken(_)) => {
                // The rename happened but its directory sync failed: reopen to settle.
                drop(s);
                let s = open(&d);
                let r = s.pack(t(301)).expect("nothing left to do");
                assert_eq!(r.outcome, PackOutcome::NothingToRemove);
                let scanned = open_scanning(&d);
                assert_eq!(
                    loads(&scanned, &tids, t(301)),
                    loads(&reference, &tids, t(301))
                        .into_iter()
                        .map(|mut x| {
                            if x.0 == 2 {
                                x.2 = "POSKey".into()
                            }
                            x
                        })
                        .collect::<Vec<_>>()
                );
            }
            Err(e) => {
                assert_eq!(e.culprit(), crate::storage::Culprit::Storage, "{e}");
                assert_eq!(d.contents(NAME), image, "k {k}: Data.fs untouched");
                assert_eq!(loads(&s, &tids, Tid::ZERO), want, "k {k}");
                // The storage takes commits and packs again.
                commit(&s, 1000 + k, &[Op::Store(1, b"after")]);
                assert_eq!(s.pack(t(301)).expect("pack again").outcome, PackOutcome::Packed);
                assert_eq!(s.load(o(1)).expect("load").0, Bytes::from_static(b"after"));
            }
        }
    }
}

#[test]
fn python2_magic_is_kept() {
    let d = MemDir::new();
    let opts = Options { allow_python2_magic: true, ..Options::default() };
    {
        let s = open(&d);
        python_scenario(&s);
    }
    let mut bytes = d.contents(NAME).expect("file");
    bytes[..4].copy_from_slice(b"FS21");
    d.put(NAME, bytes);
    d.remove("Data.fs.zr-index").expect("remove the cache");
    let (s, _) = Storage::open(d.clone(), NAME, opts.clone()).expect("open");
    s.pack(t(301)).expect("pack");
    assert_eq!(&d.contents(NAME).expect("file")[..4], b"FS21");
    drop(s);
    assert!(matches!(
        Storage::open(d.clone(), NAME, Options::default()),
        Err(OpenError::NotFileStorage { .. })
    ));
}

#[test]
fn the_copier_patches_lengths_on_either_side_of_a_flush() {
    let d = MemDir::new();
    let file = d.open("x", crate::storage::OpenMode::Truncate).expect("create");
    let mut cp = super::Copier {
        file,
        path: "x".into(),
        buf: Vec::new(),
        flushed: 0,
        index: crate::storage::Index::new(),
        kept: Vec::new(),
        packpos: 0,
        shifts: Vec::new(),
        last_tid: Tid::ZERO,
    };
    cp.put(&[0xee; 20]).expect("put");
    cp.flush().expect("flush");
    cp.put(&[0xee; 20]).expect("put");
    cp.patch_u64(16, 0x0102_0304_0506_0708).expect("across the flush");
    cp.patch_u64(2, 9).expect("on disk");
    cp.patch_u64(30, 7).expect("buffered");
    cp.flush().expect("flush");
    let got = d.contents("x").expect("file");
    assert_eq!(got.len(), 40);
    assert_eq!(&got[16..24], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(&got[2..10], &9u64.to_be_bytes());
    assert_eq!(&got[30..38], &7u64.to_be_bytes());
    assert_eq!((got[0], got[10], got[24], got[38]), (0xee, 0xee, 0xee, 0xee));
}

#[test]
fn obsolete_undone_transactions_are_dropped_before_the_pack_time_and_copied_after_it() {
    let build_u = || {
        let (d, s) = build(|s| {
            commit(s, 100, &[Op::Store(0, b"root1"), Op::Store(1, b"x1")]);
            commit(s, 150, &[Op::Store(1, b"x2")]);
            commit(s, 200, &[Op::Store(2, b"a")]);
            commit(s, 300, &[Op::Store(0, b"root2")]);
        });
        let tpos = s.iterator(None, None).nth(2).expect("200").expect("txn").0.pos;
        drop(s);
        // Old FileStorages marked undone transactions 'u'; every reader skips them.
        let mut bytes = d.contents(NAME).expect("file");
        bytes[tpos as usize + 16] = b'u';
        d.put(NAME, bytes);
        d.remove("Data.fs.zr-index").expect("remove the cache");
        let s = open(&d);
        assert!(matches!(s.load(o(2)), Err(StorageError::PosKey { .. })));
        (d, s)
    };
    let (d, s) = build_u();
    let r = s.pack(t(160)).expect("pack");
    assert_eq!(r.outcome, PackOutcome::Packed);
    assert_eq!(
        txns(&s).iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(),
        vec![(100, 'p'), (150, 'p'), (300, ' ')]
    );
    let bytes = d.contents(NAME).expect("file");
    let u = bytes.windows(8).position(|w| w == t(200).to_bytes()).expect("200 is still there");
    assert_eq!(bytes[u + 16], b'u', "copied as it was");
    let h: Vec<u64> = s.history(o(0), 5).expect("history").iter().map(|e| e.tid.get()).collect();
    assert_eq!(h, vec![300, 100]);
    drop(s);
    let s = open_scanning(&d);
    assert_eq!(s.load(o(0)).expect("root").0, Bytes::from_static(b"root2"));

    let (d, s) = build_u();
    let r = s.pack(t(250)).expect("pack");
    assert_eq!((r.outcome, r.transactions_removed, r.transactions_packed), (PackOutcome::Packed, 1, 2));
    assert!(!d.contents(NAME).expect("file").windows(8).any(|w| w == t(200).to_bytes()), "200 is gone");
    drop(s);
    open_scanning(&d);
}
