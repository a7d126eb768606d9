//! Crash tests of blob commits on the in-memory crashable directory (Data.fs and the blob
//! directory share one operation counter and one crash snapshot).
//!
//! A workload of blob commits (uploads in chunks, blob stores next to plain ones, a commit
//! aborted after vote, an undo that links a blob, a restore with a blob, a delete) runs with
//! the process dying at its k-th mutating file operation, for every k. The directory is
//! crashed (unsynced changes dropped, the last write torn, unsynced writes reordered) and
//! reopened. It must hold exactly the transactions whose finish returned (or also the one that
//! died inside finish), every blob of those transactions with its content, no other committed
//! blob file, and an empty `tmp/`. The reopen itself is crashed at every operation too.

use bytes::Bytes;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::types::TxnStatus;
use zeoraid_server::storage::{
    format, BeginTid, CrashMode, MemDir, Options, Storage, StorageError, TxnMeta, UploadId,
};

const NAME: &str = "Data.fs";
const BLOB_PICKLE: &[u8] = b"\x80\x03cZODB.blob\nBlob\nq\x00.\x80\x03N.";
const OIDS: u64 = 6;

#[derive(Clone)]
enum Op {
    Store(u64, u64, &'static str),
    StoreBlob(u64, u64, Vec<u8>),
    RestoreBlob(u64, Vec<u8>, Option<u64>),
    Delete(u64, u64),
    Undo(u64),
}

struct TxnPlan {
    tid: u64,
    ops: Vec<Op>,
    abort_after_vote: bool,
}

fn content(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
}

fn workload() -> Vec<TxnPlan> {
    let blob = |o, serial, tag, len| Op::StoreBlob(o, serial, content(tag, len));
    vec![
        TxnPlan {
            tid: 100,
            ops: vec![
                Op::Store(0, 0, "root"),
                Op::Store(1, 0, "plain first"),
                blob(1, 0, 10, 40),
                blob(2, 0, 20, 25),
            ],
            abort_after_vote: false,
        },
        TxnPlan {
            tid: 200,
            ops: vec![blob(1, 100, 30, 33), Op::Store(3, 0, "three")],
            abort_after_vote: false,
        },
        TxnPlan { tid: 300, ops: vec![blob(2, 100, 40, 30)], abort_after_vote: true },
        TxnPlan { tid: 300, ops: vec![Op::Undo(200)], abort_after_vote: false },
        TxnPlan {
            tid: 400,
            ops: vec![Op::RestoreBlob(4, content(50, 20), None), blob(2, 100, 60, 0)],
            abort_after_vote: false,
        },
        TxnPlan { tid: 500, ops: vec![Op::Delete(2, 400), blob(1, 300, 70, 45)], abort_after_vote: false },
    ]
}

fn opts() -> Options {
    Options { blob_dir: Some("blobs".into()), ..Options::default() }
}

fn meta(tid: u64) -> TxnMeta {
    TxnMeta::with_raw_extension(Bytes::from_static(b"user"), Bytes::from(format!("txn {tid}")), Bytes::new())
}

/// Uploads `data` in chunks of 16 bytes (what ZEO does before the commit reaches the storage).
fn upload(s: &Storage<MemDir>, data: &[u8]) -> Result<UploadId, StorageError> {
    let id = s.begin_upload()?;
    for c in data.chunks(16) {
        s.append_upload(id, c)?;
    }
    Ok(id)
}

/// Runs one transaction; `Err` when an operation failed before finish.
fn run_txn(s: &Storage<MemDir>, t: &TxnPlan) -> Result<(), StorageError> {
    // Uploads come first, outside the transaction.
    let mut ids = Vec::new();
    for op in &t.ops {
        if let Op::StoreBlob(_, _, data) | Op::RestoreBlob(_, data, _) = op {
            ids.push(upload(s, data)?);
        }
    }
    let mut ids = ids.into_iter();
    s.begin(meta(t.tid), BeginTid::Exactly(Tid::new(t.tid)), TxnStatus::NORMAL)?;
    for op in &t.ops {
        match op {
            Op::Store(o, serial, d) => s.store(Oid::new(*o), Tid::new(*serial), d.as_bytes())?,
            Op::StoreBlob(o, serial, _) => {
                let id = ids.next().expect("upload");
                s.store_blob(Oid::new(*o), Tid::new(*serial), BLOB_PICKLE, id)?;
            }
            Op::RestoreBlob(o, _, prev) => {
                let id = ids.next().expect("upload");
                s.restore_blob(Oid::new(*o), Tid::new(t.tid), BLOB_PICKLE, prev.map(Tid::new), id)?;
            }
            Op::Delete(o, serial) => s.delete(Oid::new(*o), Tid::new(*serial))?,
            Op::Undo(tid) => {
                s.undo(&format::undo_id(Tid::new(*tid)))?;
            }
        }
    }
    s.vote()
}

#[derive(Debug, Default)]
struct Outcome {
    finished: Vec<usize>,
    died_in_finish: Option<usize>,
    completed: bool,
}

fn run(d: &MemDir, plan: &[TxnPlan]) -> Outcome {
    let mut out = Outcome::default();
    let Ok((s, _)) = Storage::open(d.clone(), NAME, opts()) else { return out };
    for (i, t) in plan.iter().enumerate() {
        if run_txn(&s, t).is_err() {
            return out;
        }
        if t.abort_after_vote {
            if s.abort().is_err() {
                return out;
            }
            continue;
        }
        match s.finish() {
            Ok(_) => out.finished.push(i),
            Err(_) => {
                out.died_in_finish = Some(i);
                return out;
            }
        }
    }
    out.completed = true;
    out
}

/// What a reader can observe, blobs included.
#[derive(Debug, PartialEq)]
struct View {
    last: Tid,
    loads: Vec<String>,
    txns: Vec<String>,
    blobs: Vec<String>,
    files: Vec<(Oid, Tid)>,
}

fn view(s: &Storage<MemDir>, plan: &[TxnPlan]) -> View {
    let mut loads = Vec::new();
    let mut blobs = Vec::new();
    for oid in (0..OIDS).map(Oid::new) {
        loads.push(format!("{:?}", s.load(oid).map_err(|e| e.to_string())));
        for t in plan {
            let tid = Tid::new(t.tid);
            loads.push(format!("{:?}", s.load_before(oid, Tid::new(t.tid + 1)).map_err(|e| e.to_string())));
            let b = s.open_blob(oid, tid).and_then(|r| r.read_all());
            blobs.push(format!("{oid} {tid} {:?}", b.map_err(|e| e.to_string())));
        }
    }
    let txns = s
        .iterator(None, None)
        .map(|r| {
            let (t, recs) = r.expect("iterate");
            format!("{:?} {:?}", t.header, recs)
        })
        .collect();
    let files = s.blob_store().expect("blobs").list().expect("list blob files");
    View { last: s.last_transaction(), loads, txns, blobs, files }
}

fn reference(plan: &[TxnPlan]) -> Vec<View> {
    let d = MemDir::new();
    let (s, _) = Storage::open(d.clone(), NAME, opts()).expect("open");
    let mut views = vec![view(&s, plan)];
    for t in plan {
        run_txn(&s, t).expect("transaction");
        if t.abort_after_vote {
            s.abort().expect("abort");
            continue;
        }
        s.finish().expect("finish");
        views.push(view(&s, plan));
    }
    // The workload really exercises blobs: the undo linked one, the restore wrote one, the
    // empty blob exists.
    let last = views.last().expect("views");
    assert_eq!(last.files.len(), 7, "{:?}", last.files);
    views
}

fn tmp_entries(d: &MemDir) -> Vec<String> {
    d.blob_fs("blobs").files().into_keys().filter(|k| k.starts_with("tmp/")).collect()
}

fn check(c: &MemDir, plan: &[TxnPlan], refs: &[View], out: &Outcome, what: &str) {
    let (s, report) = match Storage::open(c.clone(), NAME, opts()) {
        Ok(x) => x,
        Err(e) => panic!("{what}: reopen failed: {e}"),
    };
    let got = view(&s, plan);
    let n = out.finished.len();
    let ok = got == refs[n] || (out.died_in_finish.is_some() && got == refs[n + 1]);
    assert!(ok, "{what}: {out:?}, report {report:?}\ngot  {got:#?}\nwant {:#?}", refs[n]);
    assert_eq!(tmp_entries(c), Vec::<String>::new(), "{what}: tmp/ is cleaned at open");
    // The recovered storage takes new blob commits and reopens cleanly.
    let id = upload(&s, b"after recovery").expect("upload after recovery");
    s.begin(meta(0), BeginTid::Exactly(Tid::new(1000)), TxnStatus::NORMAL).expect("begin after recovery");
    s.store_blob(Oid::new(9), Tid::ZERO, BLOB_PICKLE, id).expect("store_blob after recovery");
    s.vote().expect("vote after recovery");
    s.finish().expect("finish after recovery");
    drop(s);
    let (s, report) = Storage::open(c.clone(), NAME, opts()).expect("second reopen");
    assert_eq!(report.dropped_tail, None, "{what}");
    assert_eq!(report.blobs, Default::default(), "{what}");
    let b = s.open_blob(Oid::new(9), Tid::new(1000)).and_then(|r| r.read_all()).expect("blob after recovery");
    assert_eq!(b, Bytes::from_static(b"after recovery"), "{what}");
}

/// Crashes the reopen itself at every operation, then checks the result.
fn check_crashed_recovery(c: &MemDir, plan: &[TxnPlan], refs: &[View], out: &Outcome, what: &str) {
    for j in 1.. {
        let d = c.crash(CrashMode::DropUnsynced);
        d.fail_after(Some(j));
        let done = Storage::open(d.clone(), NAME, opts()).is_ok();
        for mode in [CrashMode::DropUnsynced, CrashMode::TearLast { keep: 1 }] {
            check(&d.crash(mode), plan, refs, out, &format!("{what}, recovery died at op {j} ({mode:?})"));
        }
        if done {
            break;
        }
    }
}

#[test]
fn crash_at_every_operation_of_blob_commits() {
    let plan = workload();
    let refs = reference(&plan);
    let mut checked = 0;
    let mut recovered_blobs = 0;
    for k in 1.. {
        let d = MemDir::new();
        d.fail_after(Some(k));
        let out = run(&d, &plan);
        let last = d.last_pending_len().unwrap_or(0);
        let mut modes = vec![CrashMode::DropUnsynced];
        modes.extend([0, 1, last / 2, last.saturating_sub(1), last].map(|keep| CrashMode::TearLast { keep }));
        modes.extend([0, u64::MAX, 0x5555, 0xaaaa].map(|mask| CrashMode::Reorder { mask }));
        for mode in modes {
            let c = d.crash(mode);
            if !c.names().iter().any(|n| n == NAME) {
                assert!(out.finished.is_empty(), "k {k}: committed data but no file");
                continue;
            }
            // Count the crashes after which the open had to complete a staged blob.
            if let Ok((_, r)) = Storage::open(c.crash(CrashMode::DropUnsynced), NAME, opts()) {
                recovered_blobs += r.blobs.completed;
            }
            check(&c, &plan, &refs, &out, &format!("k {k}, {mode:?}"));
            checked += 1;
        }
        if k % 4 == 0 {
            check_crashed_recovery(&d.crash(CrashMode::DropUnsynced), &plan, &refs, &out, &format!("k {k}"));
        }
        if out.completed {
            assert_eq!(out.finished.len(), plan.iter().filter(|t| !t.abort_after_vote).count());
            break;
        }
    }
    eprintln!("checked {checked}, recovered {recovered_blobs}");
    assert!(checked > 500, "only {checked} crash images checked");
    assert!(recovered_blobs > 0, "no crash left a committed blob staged");
}

#[test]
fn undo_copies_blobs_when_hard_links_fail_and_survives_crashes() {
    let plan = workload();
    let refs = reference(&plan);
    for k in [1u64, 40, 80, 120, 160, 200, 240, 280] {
        let d = MemDir::new();
        d.blob_fs("blobs").set_hard_links(false);
        d.fail_after(Some(k));
        let out = run(&d, &plan);
        for mode in [CrashMode::DropUnsynced, CrashMode::TearLast { keep: 0 }] {
            let c = d.crash(mode);
            if c.names().iter().any(|n| n == NAME) {
                check(&c, &plan, &refs, &out, &format!("no links, k {k}, {mode:?}"));
            }
        }
    }
}
