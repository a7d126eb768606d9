//! Unit tests of opening, recovery, reads, undo and iteration, on the in-memory directory.

use super::format::{DATA_HEADER_LEN, STATUS_OFFSET, TXN_HEADER_LEN};
use super::*;
use bytes::Bytes;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::types::TxnStatus;

const NAME: &str = "Data.fs";

fn opts() -> Options {
    Options::default()
}

fn open(d: &MemDir) -> (Storage<MemDir>, OpenReport) {
    Storage::open(d.clone(), NAME, opts()).expect("open")
}

fn meta(desc: &str) -> TxnMeta {
    TxnMeta::with_raw_extension(
        Bytes::from_static(b"/ alice"),
        Bytes::copy_from_slice(desc.as_bytes()),
        Bytes::new(),
    )
}

fn o(n: u64) -> Oid {
    Oid::new(n)
}

fn t(n: u64) -> Tid {
    Tid::new(n)
}

/// One operation of a test transaction.
enum Op<'a> {
    Store(u64, u64, &'a [u8]),
    Delete(u64, u64),
    Undo(u64),
}

fn commit(s: &Storage<MemDir>, tid: u64, ops: &[Op<'_>]) -> Tid {
    s.begin(meta(&format!("txn {tid}")), BeginTid::Exactly(t(tid)), TxnStatus::NORMAL).expect("begin");
    for op in ops {
        match *op {
            Op::Store(oid, serial, data) => s.store(o(oid), t(serial), data).expect("store"),
            Op::Delete(oid, serial) => s.delete(o(oid), t(serial)).expect("delete"),
            Op::Undo(tid) => {
                s.undo(&format::undo_id(t(tid))).expect("undo");
            }
        }
    }
    s.vote().expect("vote");
    s.finish().expect("finish")
}

/// A file with three transactions; returns the directory and the end of each transaction.
fn three_txns() -> (MemDir, Vec<u64>) {
    three_txns_at(10)
}

/// Three transactions with tids `base`, `base + 10`, `base + 20`.
fn three_txns_at(base: u64) -> (MemDir, Vec<u64>) {
    let d = MemDir::new();
    let (s, _) = open(&d);
    let mut ends = vec![s.size()];
    commit(&s, base, &[Op::Store(0, 0, b"root v1"), Op::Store(1, 0, b"one v1")]);
    ends.push(s.size());
    commit(&s, base + 10, &[Op::Store(1, base, b"one v2")]);
    ends.push(s.size());
    commit(&s, base + 20, &[Op::Store(0, base, b"root v2"), Op::Store(2, 0, b"two v1")]);
    ends.push(s.size());
    (d, ends)
}

fn bytes_of(d: &MemDir) -> Vec<u8> {
    d.contents(NAME).expect("Data.fs")
}

/// A fresh directory holding only `data` as Data.fs (no cache).
fn with_file(data: Vec<u8>) -> MemDir {
    let d = MemDir::new();
    d.put(NAME, data);
    d
}

#[test]
fn python2_files_open_only_when_allowed() {
    let (d, _) = three_txns();
    let mut data = bytes_of(&d);
    data[..4].copy_from_slice(b"FS21");
    assert!(matches!(
        Storage::open(with_file(data.clone()), NAME, opts()),
        Err(OpenError::NotFileStorage { .. })
    ));
    let (s, _) = Storage::open(with_file(data), NAME, Options { allow_python2_magic: true, ..opts() })
        .expect("allowed");
    assert_eq!(s.last_transaction(), t(30));
}

#[test]
fn a_file_that_is_not_filestorage_is_refused() {
    let d = with_file(b"FS99xxxxxxxxxxxxxxxxxxxxxxxxxxx".to_vec());
    match Storage::open(d, NAME, opts()) {
        Err(OpenError::NotFileStorage { found, .. }) => assert!(found.contains("FS99"), "{found}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_new_storage_is_created_and_reopens() {
    let d = MemDir::new();
    let (s, r) = open(&d);
    assert_eq!(r.index, IndexSource::Created);
    assert_eq!((s.last_transaction(), s.len(), s.size()), (Tid::ZERO, 0, 4));
    assert!(matches!(s.load_before(o(0), Tid::MAX), Err(StorageError::PosKey { .. })));
    drop(s);
    assert_eq!(bytes_of(&d), b"FS30");
    // A creation torn inside the magic is finished.
    let d = with_file(b"FS".to_vec());
    let (s, r) = open(&d);
    assert_eq!((r.index, s.size()), (IndexSource::Created, 4));
    assert!(Storage::open(MemDir::new(), NAME, Options { create: false, ..opts() }).is_err());
}

#[test]
fn load_before_follows_the_protocol_example() {
    // zeo-protocol.md §7: revisions t1, t2, delete at t3.
    let d = MemDir::new();
    let (s, _) = open(&d);
    commit(&s, 1, &[Op::Store(7, 0, b"rev1")]);
    commit(&s, 2, &[Op::Store(7, 1, b"rev2")]);
    commit(&s, 3, &[Op::Delete(7, 2)]);
    assert!(matches!(s.load_before(o(7), Tid::MAX), Err(StorageError::PosKey { oid }) if oid == o(7)));
    let r = s.load_before(o(7), t(3)).expect("load").expect("some");
    assert_eq!((r.data.as_ref(), r.start, r.end), (&b"rev2"[..], t(2), Some(t(3))));
    let r = s.load_before(o(7), t(2)).expect("load").expect("some");
    assert_eq!((r.data.as_ref(), r.start, r.end), (&b"rev1"[..], t(1), Some(t(2))));
    assert_eq!(s.load_before(o(7), t(1)).expect("load"), None);
    assert_eq!(s.load_before(o(7), Tid::ZERO).expect("load"), None);
    assert!(matches!(s.load_before(o(8), Tid::MAX), Err(StorageError::PosKey { .. })));
    assert_eq!(s.load_serial(o(7), t(1)).expect("serial"), Bytes::from_static(b"rev1"));
    assert!(matches!(s.load_serial(o(7), t(3)), Err(StorageError::PosKey { .. })));
    assert!(matches!(s.load_serial(o(7), t(4)), Err(StorageError::PosKey { .. })));
    assert!(matches!(s.get_tid(o(7)), Err(StorageError::PosKey { .. })));
    let h = s.history(o(7), 10).expect("history");
    assert_eq!(h.iter().map(|e| (e.tid, e.size)).collect::<Vec<_>>(), vec![(t(3), 0), (t(2), 4), (t(1), 4)]);
    assert_eq!(h[0].description, Bytes::from_static(b"txn 3"));
    assert_eq!(h[0].user_name, Bytes::from_static(b"/ alice"));
    assert_eq!(s.history(o(7), 1).expect("history").len(), 1);
    assert_eq!(s.len(), 1, "a deleted object stays in the index, as in FileStorage");
    // Delete of an unknown object, and with a stale serial.
    s.begin(meta("x"), BeginTid::Now(t(0)), TxnStatus::NORMAL).expect("begin");
    assert!(matches!(s.delete(o(9), t(0)), Err(StorageError::PosKey { .. })));
    assert!(matches!(
        s.delete(o(7), t(2)),
        Err(StorageError::Conflict { oid, committed, read }) if oid == o(7) && committed == t(3) && read == t(2)
    ));
    s.abort().expect("abort");
}

#[test]
fn stores_check_serials_and_move_the_oid_counter() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    assert_eq!(s.new_oids(2).expect("oids"), vec![o(1), o(2)]);
    commit(&s, 5, &[Op::Store(0, 0, b"root"), Op::Store(40, 0, b"forty")]);
    assert_eq!(s.new_oids(1).expect("oids"), vec![o(41)]);
    s.begin(meta("c"), BeginTid::Now(t(0)), TxnStatus::NORMAL).expect("begin");
    assert!(matches!(
        s.store(o(0), t(4), b"x"),
        Err(StorageError::Conflict { committed, read, .. }) if committed == t(5) && read == t(4)
    ));
    s.check_current_serial(o(40), t(5)).expect("current");
    assert!(matches!(
        s.check_current_serial(o(40), t(4)),
        Err(StorageError::ReadConflict { current, expected, .. }) if current == t(5) && expected == t(4)
    ));
    assert!(matches!(s.check_current_serial(o(99), t(4)), Err(StorageError::PosKey { .. })));
    s.store(o(0), t(5), b"root 2").expect("the transaction survives a conflict");
    s.vote().expect("vote");
    let tid = s.finish().expect("finish");
    assert_eq!(tid, t(6), "max(now, last + 1)");
    assert_eq!(s.load(o(0)).expect("load"), (Bytes::from_static(b"root 2"), t(6)));
    drop(s);
    let (s, _) = open(&d);
    assert_eq!(s.new_oids(1).expect("oids"), vec![o(41)], "the counter restarts at the largest stored oid");
}

#[test]
fn record_iternext_walks_current_records() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    assert_eq!(s.record_iternext(None).expect("empty"), None);
    commit(&s, 1, &[Op::Store(0, 0, b"a"), Op::Store(5, 0, b"b"), Op::Store(9, 0, b"c")]);
    commit(&s, 2, &[Op::Store(5, 1, b"b2"), Op::Delete(9, 1)]);
    let r = s.record_iternext(None).expect("first").expect("some");
    assert_eq!((r.oid, r.tid, r.data.as_ref(), r.next), (o(0), t(1), &b"a"[..], Some(o(5))));
    let r = s.record_iternext(r.next).expect("second").expect("some");
    assert_eq!((r.oid, r.tid, r.data.as_ref(), r.next), (o(5), t(2), &b"b2"[..], Some(o(9))));
    assert!(matches!(s.record_iternext(r.next), Err(StorageError::PosKey { .. })));
    assert_eq!(s.record_iternext(Some(o(10))).expect("past the end"), None);
}

#[test]
fn torn_tail_at_every_byte_is_cut_back_with_the_right_report() {
    let (d, ends) = three_txns();
    let full = bytes_of(&d);
    let (good, last) = (ends[2], ends[3]);
    for cut in good + 1..last {
        let d = with_file(full[..cut as usize].to_vec());
        let (s, r) = open(&d);
        let tail = r.dropped_tail.unwrap_or_else(|| panic!("cut at {cut}: no tail reported"));
        assert_eq!((tail.offset, tail.bytes), (good, cut - good), "cut at {cut}");
        assert!(matches!(tail.reason, TailReason::Torn { .. }), "cut at {cut}: {:?}", tail.reason);
        assert_eq!(s.last_transaction(), t(20), "cut at {cut}");
        assert_eq!(s.size(), good);
        assert_eq!(s.load(o(1)).expect("load").0, Bytes::from_static(b"one v2"));
        assert_eq!(bytes_of(&d).len() as u64, good, "file truncated");
        assert_eq!(
            d.contents(&format!("{NAME}.tr0")).expect("saved tail"),
            &full[good as usize..cut as usize]
        );
        drop(s);
        // Writing after recovery works and the file reopens cleanly.
        let (s, _) = open(&d);
        commit(&s, 40, &[Op::Store(2, 0, b"two again")]);
        drop(s);
        let (s, r) = open(&d);
        assert_eq!(r.dropped_tail, None);
        assert_eq!(s.last_transaction(), t(40));
    }
}

#[test]
fn an_uncommitted_transaction_is_cut_back() {
    let (d, ends) = three_txns();
    let mut data = bytes_of(&d);
    data[(ends[2] + STATUS_OFFSET) as usize] = b'c';
    let d = with_file(data);
    let (s, r) = open(&d);
    let tail = r.dropped_tail.expect("tail");
    assert_eq!((tail.offset, tail.bytes, tail.reason), (ends[2], ends[3] - ends[2], TailReason::Uncommitted));
    assert_eq!(s.last_transaction(), t(20));
    // Read-only opens report the tail but leave the file alone.
    let (d2, _) = three_txns();
    let mut data = bytes_of(&d2);
    data[(ends[2] + STATUS_OFFSET) as usize] = b'c';
    let d2 = with_file(data.clone());
    let (s, r) = Storage::open(d2.clone(), NAME, Options { read_only: true, ..opts() }).expect("open");
    assert_eq!(r.dropped_tail.expect("tail").saved_to, None);
    assert_eq!(s.last_transaction(), t(20));
    assert_eq!(bytes_of(&d2), data);
    assert!(matches!(
        s.begin(meta("x"), BeginTid::Now(t(0)), TxnStatus::NORMAL),
        Err(StorageError::ReadOnly)
    ));
}

/// Opens `data` and returns the offset of the refusal.
fn refused_at(data: Vec<u8>) -> u64 {
    match Storage::open(with_file(data), NAME, opts()) {
        Err(OpenError::Corrupt { offset, .. }) => offset,
        Err(e) => panic!("unexpected error {e}"),
        Ok((s, r)) => panic!("opened: {r:?}, last {}", s.last_transaction()),
    }
}

#[test]
fn damage_in_the_middle_is_refused_naming_its_offset() {
    let (d, ends) = three_txns();
    let full = bytes_of(&d);
    let t2 = ends[1]; // the second transaction
    let hl = TXN_HEADER_LEN + 7 + 6; // "/ alice", "txn 20"
    let rec = t2 + hl; // its only data record
    let set = |at: u64, b: &[u8]| {
        let mut v = full.clone();
        v[at as usize..at as usize + b.len()].copy_from_slice(b);
        v
    };
    // Bad status.
    assert_eq!(refused_at(set(t2 + STATUS_OFFSET, b"x")), t2 + STATUS_OFFSET);
    // A transaction length that runs past the file.
    assert_eq!(refused_at(set(t2 + 8, &[0x7f; 8])), t2 + 8);
    // A transaction length shorter than its header.
    assert_eq!(refused_at(set(t2 + 8, &5u64.to_be_bytes())), t2 + 8);
    // tid going backwards.
    assert_eq!(refused_at(set(t2, &5u64.to_be_bytes())), t2);
    // Data record pointing to another transaction.
    assert_eq!(refused_at(set(rec + 24, &4u64.to_be_bytes())), rec + 24);
    // Version length set.
    assert_eq!(refused_at(set(rec + 32, &[0, 1])), rec + 32);
    // Previous pointer forward.
    assert_eq!(refused_at(set(rec + 16, &(rec + 1).to_be_bytes())), rec + 16);
    // Data length past the transaction.
    assert_eq!(refused_at(set(rec + 34, &1000u64.to_be_bytes())), rec + 34);
    // Redundant length.
    let trailer = ends[2] - 8;
    assert_eq!(refused_at(set(trailer, &1u64.to_be_bytes())), trailer);
    // The refusal names the offset in its message.
    match Storage::open(with_file(set(rec + 32, &[0, 1])), NAME, opts()) {
        Err(e) => assert!(e.to_string().contains(&format!("offset {}", rec + 32)), "{e}"),
        Ok(_) => panic!("opened"),
    }
    let _ = DATA_HEADER_LEN;
}

#[test]
fn no_byte_flip_makes_open_or_reads_panic() {
    let (d, _) = three_txns();
    let full = bytes_of(&d);
    for at in 0..full.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut v = full.clone();
            v[at] ^= x;
            if let Ok((s, _)) = Storage::open(with_file(v), NAME, opts()) {
                for oid in 0..3 {
                    let _ = s.load_before(o(oid), Tid::MAX);
                    let _ = s.history(o(oid), 5);
                    let _ = s.load_serial(o(oid), t(10));
                }
                let _ = s.undo_log(0, 10);
                let _ = s.iterator(None, None).count();
                let _ = s.invalidations_since(Tid::ZERO, 10);
            }
        }
    }
}

#[test]
fn the_index_cache_is_used_validated_and_ignored_when_stale() {
    let (d, ends) = three_txns();
    let (s, r) = open(&d);
    assert_eq!(r.index, IndexSource::Scan, "three_txns never saved a cache");
    s.close().expect("close");
    let (s, r) = open(&d);
    assert_eq!((r.index, r.scanned_transactions), (IndexSource::Cache { scanned_from: ends[3] }, 0));
    // A commit after the cache was written is scanned from where the cache ends.
    commit(&s, 40, &[Op::Store(1, 20, b"one v3")]);
    drop(s);
    let (s, r) = open(&d);
    assert_eq!((r.index, r.scanned_transactions), (IndexSource::Cache { scanned_from: ends[3] }, 1));
    assert_eq!(s.load(o(1)).expect("load").0, Bytes::from_static(b"one v3"));
    s.close().expect("close");
    // A damaged cache is ignored.
    let cache = index_cache_name(NAME);
    let mut c = d.contents(&cache).expect("cache");
    let n = c.len();
    c[n - 3] ^= 0x40;
    d.put(&cache, c);
    let (s, r) = open(&d);
    assert_eq!(r.index, IndexSource::Scan);
    assert_eq!(s.load(o(1)).expect("load").0, Bytes::from_static(b"one v3"));
    s.close().expect("close");
    // A cache of another file of the same length is ignored.
    d.put(NAME, bytes_of(&d)[..ends[3] as usize].to_vec());
    let (other, other_ends) = three_txns_at(11);
    assert_eq!(other_ends, ends, "same layout, other tids");
    d.put(NAME, bytes_of(&other));
    let (s, r) = open(&d);
    assert_eq!(r.index, IndexSource::Scan);
    assert_eq!(s.last_transaction(), t(31));
    drop(s);
    // A cache longer than the file (the file was cut back) is ignored.
    let (s, _) = open(&d);
    s.close().expect("close");
    d.put(NAME, bytes_of(&d)[..ends[2] as usize].to_vec());
    let (s, r) = open(&d);
    assert_eq!(r.index, IndexSource::Scan);
    assert_eq!(s.last_transaction(), t(21));
}

#[test]
fn undo_writes_back_pointers_and_reports_blocking_objects() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    commit(&s, 1, &[Op::Store(1, 0, b"a1"), Op::Store(2, 0, b"b1")]);
    commit(&s, 2, &[Op::Store(1, 1, b"a2")]);
    commit(&s, 3, &[Op::Store(2, 1, b"b2")]);
    // Undo t2: object 1 goes back to a1 (a back-pointer).
    s.begin(meta("undo 2"), BeginTid::Exactly(t(4)), TxnStatus::NORMAL).expect("begin");
    assert_eq!(s.undo(&format::undo_id(t(2))).expect("undo"), vec![o(1)]);
    s.vote().expect("vote");
    s.finish().expect("finish");
    assert_eq!(s.load(o(1)).expect("load"), (Bytes::from_static(b"a1"), t(4)));
    let h = s.history(o(1), 5).expect("history");
    assert_eq!(h.iter().map(|e| (e.tid, e.size)).collect::<Vec<_>>(), vec![(t(4), 0), (t(2), 2), (t(1), 2)]);
    // Undo t1: object 1's current record (t4) points at t1's data, so it could be undone;
    // object 2 was changed by t3 and blocks, so nothing is undone.
    s.begin(meta("undo 1"), BeginTid::Exactly(t(5)), TxnStatus::NORMAL).expect("begin");
    match s.undo(&format::undo_id(t(1))) {
        Err(StorageError::MultipleUndo(f)) => {
            assert_eq!(f.iter().map(|f| f.oid).collect::<Vec<_>>(), vec![o(2)]);
            assert!(f[0].reason.contains("add transaction"), "{}", f[0].reason);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(s.undo(b"not base64!"), Err(StorageError::Undo { .. })));
    assert!(matches!(s.undo(&format::undo_id(t(99))), Err(StorageError::Undo { .. })));
    // Undo of the undo (t4) restores a2: the current record is t4's back-pointer itself.
    assert_eq!(s.undo(&format::undo_id(t(4))).expect("undo"), vec![o(1)]);
    s.vote().expect("vote");
    s.finish().expect("finish");
    assert_eq!(s.load(o(1)).expect("load"), (Bytes::from_static(b"a2"), t(5)));
    // Undo of t3 (object 2 still current) then of creation t1 for object 2 only works if
    // nothing else blocks: t1 also created object 1, changed since, so it stays blocked.
    commit(&s, 6, &[Op::Undo(3)]);
    assert_eq!(s.load(o(2)).expect("load").0, Bytes::from_static(b"b1"));
    // Undo log: newest first, FileStorage ids and sizes.
    let log = s.undo_log(0, -20).expect("log");
    assert_eq!(
        log.iter().map(|e| e.id.0.clone()).collect::<Vec<_>>(),
        (1..=6).rev().map(|n| Bytes::from(format::undo_id(t(n)))).collect::<Vec<_>>()
    );
    assert_eq!(log[0].description, Bytes::from_static(b"txn 6"));
    assert!(log.iter().all(|e| e.size.is_some_and(|s| s > 23)));
    assert_eq!(s.undo_log(1, 3).expect("slice").len(), 2);
    assert_eq!(s.undo_log(2, -2).expect("slice")[0].id.0, Bytes::from(format::undo_id(t(4))));
    let only = s.undo_info(0, -20, |e| e.description.as_ref() == b"undo 2").expect("filtered");
    assert_eq!(only.len(), 1);
    drop(s);
    // Everything survives a reopen (back-pointers resolved from the file).
    let (s, _) = open(&d);
    assert_eq!(s.load(o(1)).expect("load").0, Bytes::from_static(b"a2"));
    assert_eq!(s.load(o(2)).expect("load").0, Bytes::from_static(b"b1"));
}

#[test]
fn undoing_a_creation_leaves_no_data() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    commit(&s, 1, &[Op::Store(0, 0, b"root")]);
    commit(&s, 2, &[Op::Store(3, 0, b"new")]);
    commit(&s, 3, &[Op::Undo(2)]);
    assert!(matches!(s.load(o(3)), Err(StorageError::PosKey { .. })));
    assert_eq!(s.load_before(o(3), t(3)).expect("before").expect("some").data, Bytes::from_static(b"new"));
    // Undoing the undo brings it back (a back-pointer to the creation's record).
    commit(&s, 4, &[Op::Undo(3)]);
    assert_eq!(s.load(o(3)).expect("load"), (Bytes::from_static(b"new"), t(4)));
}

#[test]
fn iteration_yields_transactions_and_records_with_back_pointer_tids() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    commit(&s, 10, &[Op::Store(1, 0, b"a1")]);
    commit(&s, 20, &[Op::Store(1, 10, b"a2"), Op::Store(2, 0, b"b")]);
    commit(&s, 30, &[Op::Undo(20)]);
    commit(&s, 40, &[Op::Delete(1, 30)]);
    let all: Vec<_> = s.iterator(None, None).collect::<Result<_>>().expect("iterate");
    assert_eq!(all.iter().map(|(t, _)| t.header.tid.get()).collect::<Vec<_>>(), vec![10, 20, 30, 40]);
    assert_eq!(all[0].0.header.status, TxnStatus::NORMAL);
    assert_eq!(all[0].0.header.description, Bytes::from_static(b"txn 10"));
    let undo = &all[2].1;
    assert_eq!(undo.len(), 2);
    // Object 1 goes back to a1 (data from t10), object 2's creation is undone (no data).
    assert_eq!(
        (undo[0].oid, undo[0].data.as_deref(), undo[0].data_txn),
        (o(1), Some(&b"a1"[..]), Some(t(10)))
    );
    assert_eq!((undo[1].oid, undo[1].data.as_deref(), undo[1].data_txn), (o(2), None, None));
    assert_eq!((all[3].1[0].data.as_deref(), all[3].1[0].data_txn), (None, None));
    let some: Vec<u64> =
        s.iterator(Some(t(20)), Some(t(30))).map(|r| r.expect("txn").0.header.tid.get()).collect();
    assert_eq!(some, vec![20, 30], "start and stop are inclusive");
    let some: Vec<u64> = s.iterator(Some(t(15)), None).map(|r| r.expect("txn").0.header.tid.get()).collect();
    assert_eq!(some, vec![20, 30, 40]);
    let some: Vec<u64> = s.iterator(Some(t(39)), None).map(|r| r.expect("txn").0.header.tid.get()).collect();
    assert_eq!(some, vec![40], "searching back from the end");
    assert_eq!(s.iterator(Some(t(41)), None).count(), 0);
    // Invalidations.
    assert_eq!(s.invalidations_since(t(40), 100).expect("inv"), Some((t(40), vec![])));
    assert_eq!(s.invalidations_since(t(50), 100).expect("inv"), Some((t(40), vec![])));
    assert_eq!(s.invalidations_since(t(20), 100).expect("inv"), Some((t(40), vec![o(1), o(2)])));
    assert_eq!(s.invalidations_since(t(5), 100).expect("inv").map(|(_, v)| v.len()), Some(2));
    assert_eq!(s.invalidations_since(t(5), 3).expect("inv"), None, "more than 3 transactions");
    let last = s.last_invalidations(2).expect("last");
    assert_eq!(last, vec![(t(30), vec![o(1), o(2)]), (t(40), vec![o(1)])]);
}

#[test]
fn restore_copies_history_with_back_pointers_and_packed_status() {
    let src_dir = MemDir::new();
    let (src, _) = open(&src_dir);
    commit(&src, 10, &[Op::Store(1, 0, b"a1"), Op::Store(2, 0, b"b1")]);
    commit(&src, 20, &[Op::Store(1, 10, b"a2")]);
    commit(&src, 30, &[Op::Undo(20)]);
    commit(&src, 40, &[Op::Delete(2, 10)]);
    let dst_dir = MemDir::new();
    let (dst, _) = open(&dst_dir);
    for item in src.iterator(None, None) {
        let (txn, recs) = item.expect("txn");
        let h = &txn.header;
        let status = if h.tid == t(10) { TxnStatus::PACKED } else { h.status };
        dst.begin(
            TxnMeta::with_raw_extension(h.user.clone(), h.description.clone(), txn.raw_extension.clone()),
            BeginTid::Exactly(h.tid),
            status,
        )
        .expect("begin");
        for r in recs {
            dst.restore(r.oid, r.tid, r.data.as_deref(), r.data_txn).expect("restore");
        }
        dst.vote().expect("vote");
        dst.finish().expect("finish");
    }
    for (oid, before) in [(1, 15), (1, 25), (1, 35), (2, 35), (2, 45)] {
        let a = src.load_before(o(oid), t(before)).map_err(|e| e.to_string());
        let b = dst.load_before(o(oid), t(before)).map_err(|e| e.to_string());
        assert_eq!(a, b, "oid {oid} before {before}");
    }
    // The undo record was restored as a back-pointer, not a copy of the data.
    let h = dst.history(o(1), 5).expect("history");
    assert_eq!(h.iter().map(|e| (e.tid.get(), e.size)).collect::<Vec<_>>(), vec![(30, 0), (20, 2), (10, 2)]);
    let first = dst.iterator(None, None).next().expect("one").expect("txn");
    assert_eq!(first.0.header.status, TxnStatus::PACKED);
    // A packed transaction ends the undo log.
    assert_eq!(dst.undo_log(0, 10).expect("log").len(), 3);
    dst.begin(meta("r"), BeginTid::Exactly(t(50)), TxnStatus::NORMAL).expect("begin");
    assert!(matches!(dst.restore(o(1), t(49), Some(b"x"), None), Err(StorageError::RestoreSerial { .. })));
    dst.abort().expect("abort");
}

#[test]
fn extensions_are_pickled_and_merged_into_history_and_undo_log() {
    use zeoraid_core::wire::types::Extension;
    use zeoraid_core::wire::value::Value;
    let d = MemDir::new();
    let (s, _) = open(&d);
    let ext = Extension(vec![
        (Value::str_static("k"), Value::str_static("v")),
        (Value::str_static("time"), Value::Float(1.5)),
    ]);
    let m = TxnMeta::new(Bytes::from_static(b"u"), Bytes::from_static(b"d"), &ext).expect("pickle");
    assert_eq!(&m.extension[..2], &[0x80, 3], "protocol 3");
    s.begin(m, BeginTid::Exactly(t(1)), TxnStatus::NORMAL).expect("begin");
    s.store(o(0), Tid::ZERO, b"root").expect("store");
    s.vote().expect("vote");
    s.finish().expect("finish");
    let (txn, _) = s.iterator(None, None).next().expect("one").expect("txn");
    assert_eq!(txn.header.extension, ext);
    // history: standard keys win over the extension's.
    let h = s.history(o(0), 1).expect("history");
    assert_eq!(h[0].extension.0, vec![(Value::str_static("k"), Value::str_static("v"))]);
    assert_eq!(h[0].time, t(1).to_unix_f64());
    // undoLog: the extension's keys win.
    let u = s.undo_log(0, 1).expect("log");
    assert_eq!(u[0].time, 1.5);
    assert_eq!(u[0].extension.0, vec![(Value::str_static("k"), Value::str_static("v"))]);
    // An empty extension is stored as no bytes at all.
    assert!(TxnMeta::new(Bytes::new(), Bytes::new(), &Extension::default())
        .expect("empty")
        .extension
        .is_empty());
}

#[test]
fn readers_on_other_threads_never_see_half_a_transaction() {
    fn assert_sync<T: Sync + Send>() {}
    assert_sync::<Storage<MemDir>>();
    assert_sync::<Storage<RealDir>>();
    let d = MemDir::new();
    let (s, _) = open(&d);
    commit(&s, 1, &[Op::Store(1, 0, b"1"), Op::Store(2, 0, b"1")]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let started = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let reader = || {
            let mut seen = 0;
            while seen == 0 || !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Both objects change in every transaction: a reader must see them agree.
                let last = s.last_transaction();
                let a = s.load_before(o(1), Tid::new(last.get() + 1)).expect("a").expect("some");
                let b = s.load_before(o(2), Tid::new(last.get() + 1)).expect("b").expect("some");
                assert_eq!((a.data, a.start), (b.data, b.start));
                if seen == 0 {
                    started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                seen += 1;
            }
            seen
        };
        let readers = [scope.spawn(reader), scope.spawn(reader)];
        // Commit only while both readers are reading (the machine may be busy).
        while started.load(std::sync::atomic::Ordering::Relaxed) < 2 {
            std::thread::yield_now();
        }
        for tid in 2..300u64 {
            let v = tid.to_string();
            s.begin(meta("w"), BeginTid::Exactly(t(tid)), TxnStatus::NORMAL).expect("begin");
            s.store(o(1), t(tid - 1), v.as_bytes()).expect("store");
            s.store(o(2), t(tid - 1), v.as_bytes()).expect("store");
            s.vote().expect("vote");
            s.finish().expect("finish");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            assert!(r.join().expect("reader") > 0);
        }
    });
}

#[test]
fn records_around_the_read_probe_size_load_whole() {
    // read_data_record reads RECORD_PROBE bytes at once: pickles that end just before, at and
    // after that read, and far past it, must come back whole, also through a back-pointer.
    let probe = engine::RECORD_PROBE;
    let head = DATA_HEADER_LEN as usize;
    let sizes = [1, 7, 8, 9, probe - head - 1, probe - head, probe - head + 1, probe, 3 * probe + 5];
    let data: Vec<Vec<u8>> =
        sizes.iter().enumerate().map(|(i, &n)| (0..n).map(|b| (b * 7 + i) as u8).collect()).collect();
    let d = MemDir::new();
    let (s, _) = open(&d);
    let ops: Vec<Op<'_>> = data.iter().enumerate().map(|(i, v)| Op::Store(i as u64, 0, v)).collect();
    commit(&s, 10, &ops);
    // Overwrite each object, then undo that: the current records become back-pointers.
    let ops: Vec<Op<'_>> = (0..data.len()).map(|i| Op::Store(i as u64, 10, b"new")).collect();
    commit(&s, 11, &ops);
    commit(&s, 12, &[Op::Undo(11)]);
    for (i, want) in data.iter().enumerate() {
        let oid = o(i as u64);
        assert_eq!(s.load(oid).expect("load").0, want[..], "size {}", want.len());
        let r = s.load_before(oid, Tid::MAX).expect("load_before").expect("a revision");
        assert_eq!((r.data.as_ref(), r.start), (&want[..], t(12)), "size {}", want.len());
        let r = s.load_before(oid, t(11)).expect("load_before").expect("a revision");
        assert_eq!((r.data.as_ref(), r.start, r.end), (&want[..], t(10), Some(t(11))));
        assert_eq!(s.load_serial(oid, t(10)).expect("load_serial"), want[..]);
    }
}

/// The non-blocking fast path answers exactly as `load_before`, or not at all.
#[test]
fn load_before_nowait_agrees_with_load_before() {
    use crate::storage::format::undo_id;
    let d = MemDir::new();
    let s = Storage::open(d, "Data.fs", Options::default()).expect("open").0;
    let meta = || TxnMeta::with_raw_extension(Bytes::from_static(b"u"), Bytes::new(), Bytes::new());
    let commit = |tid: u64, f: &dyn Fn(&Storage<MemDir>)| {
        s.begin(meta(), BeginTid::Exactly(Tid::new(tid)), TxnStatus::NORMAL).expect("begin");
        f(&s);
        s.vote().expect("vote");
        s.finish().expect("finish");
    };
    commit(10, &|s| {
        s.store(Oid::new(1), Tid::ZERO, b"one").expect("store");
        s.store(Oid::new(2), Tid::ZERO, b"two").expect("store");
        s.store(Oid::new(3), Tid::ZERO, &[7u8; 9000]).expect("store");
    });
    commit(20, &|s| s.store(Oid::new(1), Tid::new(10), b"one bis").expect("store"));
    commit(30, &|s| s.delete(Oid::new(2), Tid::new(10)).expect("delete"));
    commit(40, &|s| {
        s.undo(&undo_id(Tid::new(20))).expect("undo");
    });
    let mut answered = 0;
    for oid in 0..5u64 {
        for before in [0u64, 10, 11, 20, 21, 30, 31, 40, 41, u64::MAX >> 1] {
            let (oid, before) = (Oid::new(oid), Tid::new(before));
            let slow = format!("{:?}", s.load_before(oid, before).map_err(|e| e.to_string()));
            if let Some(fast) = s.load_before_nowait(oid, before) {
                answered += 1;
                assert_eq!(format!("{:?}", fast.map_err(|e| e.to_string())), slow, "{oid} before {before}");
            }
        }
    }
    // Unknown oids, and current revisions with their data, are answered fast.
    assert!(answered >= 20, "{answered}");
}
