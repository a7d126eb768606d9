//! Crash tests of the storage engine on the in-memory crashable directory.
//!
//! A fixed workload of commits (stores, a delete, an undo, an abort after vote) runs with the
//! process "dying" at its k-th mutating file operation, for every k. The directory is then
//! crashed (unsynced writes dropped, the last write torn at every byte, or unsynced writes
//! reordered), reopened, and must hold exactly the transactions whose `finish` returned, each
//! with the right data; the one in flight may also be there, but only if it died inside its
//! own `finish` (after the status byte was written, a crash cannot tell). Recovery itself is
//! crashed too, and the reopened storage must accept new commits.
//!
//! Packs are crashed the same way, at every file operation (with a commit made while the pack
//! copies, or just before it swaps files, or none): every crash image reopens to the history
//! before the pack or after it (never a mix, never a leftover `Data.fs.pack`), holding exactly
//! the commits whose finish returned, with the same `load_before` answers as a run without
//! faults; once the pack returned, only the packed history is allowed.

use bytes::Bytes;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::types::TxnStatus;
use zeoraid_server::storage::{
    format, BeginTid, CrashMode, MemDir, OpenError, Options, PackOutcome, PackPhase, PackReport, Storage,
    StorageError, TxnMeta,
};

const NAME: &str = "Data.fs";

#[derive(Clone)]
enum Op {
    Store(u64, u64, Vec<u8>),
    Delete(u64, u64),
    Undo(u64),
}

struct TxnPlan {
    tid: u64,
    ops: Vec<Op>,
    abort_after_vote: bool,
}

fn small_workload() -> Vec<TxnPlan> {
    let s = |o, serial, d: &str| Op::Store(o, serial, d.as_bytes().to_vec());
    vec![
        TxnPlan {
            tid: 100,
            ops: vec![s(0, 0, "root-1"), s(1, 0, "a-1"), s(2, 0, "b-1")],
            abort_after_vote: false,
        },
        TxnPlan { tid: 200, ops: vec![s(1, 100, "a-2"), Op::Delete(2, 100)], abort_after_vote: false },
        TxnPlan { tid: 300, ops: vec![s(0, 100, "root-X")], abort_after_vote: true },
        TxnPlan { tid: 300, ops: vec![Op::Undo(200)], abort_after_vote: false },
        TxnPlan { tid: 400, ops: vec![s(3, 0, "c-1"), s(0, 100, "root-2")], abort_after_vote: false },
    ]
}

fn large_workload() -> Vec<TxnPlan> {
    let big = |o: u64, n: usize| Op::Store(o, 0, vec![o as u8 + 1; n]);
    vec![
        TxnPlan { tid: 100, ops: vec![big(0, 10)], abort_after_vote: false },
        TxnPlan {
            tid: 200,
            ops: vec![big(1, 600_000), big(2, 600_000), big(3, 10)],
            abort_after_vote: false,
        },
        TxnPlan { tid: 300, ops: vec![Op::Store(3, 200, b"small".to_vec())], abort_after_vote: false },
    ]
}

/// How far a run got.
#[derive(Debug, Default)]
struct Outcome {
    /// Indexes (in the plan) of transactions whose finish returned.
    finished: Vec<usize>,
    /// How many transactions after the finished ones may be there too: the one whose finish
    /// failed (a crash cannot tell whether its status byte reached the disk), or under group
    /// commit every one finished since the last round returned.
    unacknowledged: usize,
    completed: bool,
}

fn meta(tid: u64) -> TxnMeta {
    TxnMeta::with_raw_extension(Bytes::from_static(b"user"), Bytes::from(format!("txn {tid}")), Bytes::new())
}

/// Runs the plan; with `group = Some(n)` under group commit, with `finish_deferred` and a
/// `sync_pending` after every `n` finished transactions and at the end.
fn run_with(d: &MemDir, plan: &[TxnPlan], group: Option<usize>) -> Outcome {
    let mut out = Outcome::default();
    let opts = Options { group_commit: group.is_some(), ..Options::default() };
    let Ok((s, _)) = Storage::open(d.clone(), NAME, opts) else { return out };
    // Finished under group commit, not yet acknowledged by a round.
    let mut deferred = Vec::new();
    let sync = |deferred: &mut Vec<usize>, out: &mut Outcome| match s.sync_pending() {
        Ok(_) => {
            out.finished.append(deferred);
            true
        }
        Err(_) => {
            out.unacknowledged = deferred.len();
            false
        }
    };
    for (i, t) in plan.iter().enumerate() {
        let ok = (|| {
            s.begin(meta(t.tid), BeginTid::Exactly(Tid::new(t.tid)), TxnStatus::NORMAL).ok()?;
            for op in &t.ops {
                match op {
                    Op::Store(o, serial, data) => s.store(Oid::new(*o), Tid::new(*serial), data).ok()?,
                    Op::Delete(o, serial) => s.delete(Oid::new(*o), Tid::new(*serial)).ok()?,
                    Op::Undo(tid) => s.undo(&format::undo_id(Tid::new(*tid))).map(|_| ()).ok()?,
                }
            }
            s.vote().ok()
        })();
        if ok.is_none() {
            out.unacknowledged = deferred.len();
            return out;
        }
        if t.abort_after_vote {
            if s.abort().is_err() {
                out.unacknowledged = deferred.len();
                return out;
            }
            continue;
        }
        let Some(every) = group else {
            match s.finish() {
                Ok(_) => out.finished.push(i),
                Err(_) => {
                    out.unacknowledged = 1;
                    return out;
                }
            }
            continue;
        };
        if s.finish_deferred().is_err() {
            out.unacknowledged = deferred.len() + 1;
            return out;
        }
        deferred.push(i);
        if deferred.len() >= every && !sync(&mut deferred, &mut out) {
            return out;
        }
    }
    if !deferred.is_empty() && !sync(&mut deferred, &mut out) {
        return out;
    }
    out.completed = true;
    out
}

/// What a reader can observe of a storage.
#[derive(Debug, PartialEq)]
struct View {
    last: Tid,
    loads: Vec<String>,
    txns: Vec<String>,
}

fn view(s: &Storage<MemDir>, plan: &[TxnPlan]) -> View {
    let mut loads = Vec::new();
    for oid in 0..5u64 {
        let oid = Oid::new(oid);
        loads.push(format!("{:?}", s.load(oid).map_err(|e| e.to_string())));
        for t in plan {
            loads.push(format!("{:?}", s.load_before(oid, Tid::new(t.tid + 1)).map_err(|e| e.to_string())));
        }
    }
    let txns = s
        .iterator(None, None)
        .map(|r| {
            let (t, recs) = r.expect("iterate");
            format!("{:?} {:?}", t.header, recs)
        })
        .collect();
    View { last: s.last_transaction(), loads, txns }
}

/// The view after each prefix of finished transactions, from a run without faults.
fn reference(plan: &[TxnPlan]) -> Vec<View> {
    let d = MemDir::new();
    let (s, _) = Storage::open(d.clone(), NAME, Options::default()).expect("open");
    let mut views = vec![view(&s, plan)];
    for t in plan {
        s.begin(meta(t.tid), BeginTid::Exactly(Tid::new(t.tid)), TxnStatus::NORMAL).expect("begin");
        for op in &t.ops {
            match op {
                Op::Store(o, serial, data) => s.store(Oid::new(*o), Tid::new(*serial), data).expect("store"),
                Op::Delete(o, serial) => s.delete(Oid::new(*o), Tid::new(*serial)).expect("delete"),
                Op::Undo(tid) => {
                    s.undo(&format::undo_id(Tid::new(*tid))).expect("undo");
                }
            }
        }
        s.vote().expect("vote");
        if t.abort_after_vote {
            s.abort().expect("abort");
            continue;
        }
        s.finish().expect("finish");
        views.push(view(&s, plan));
    }
    views
}

/// Reopens a crashed directory and checks it against the reference views.
fn check(c: &MemDir, plan: &[TxnPlan], refs: &[View], out: &Outcome, what: &str) {
    let (s, report) = match Storage::open(c.clone(), NAME, Options::default()) {
        Ok(x) => x,
        // Dying before the magic was synced leaves no file (its name was never synced).
        Err(OpenError::Missing { .. }) => panic!("{what}: missing file"),
        Err(e) => panic!("{what}: reopen failed: {e}"),
    };
    let got = view(&s, plan);
    let n = out.finished.len();
    let ok = (0..=out.unacknowledged).any(|j| refs.get(n + j) == Some(&got));
    assert!(ok, "{what}: {out:?}, report {report:?}\ngot  {got:#?}\nwant {:#?}", refs[n]);
    // The recovered storage takes new commits and reopens cleanly.
    s.begin(meta(0), BeginTid::Exactly(Tid::new(1000)), TxnStatus::NORMAL).expect("begin after recovery");
    s.store(Oid::new(9), Tid::ZERO, b"after").expect("store after recovery");
    s.vote().expect("vote after recovery");
    s.finish().expect("finish after recovery");
    drop(s);
    let (s, report) = Storage::open(c.clone(), NAME, Options::default()).expect("second reopen");
    assert_eq!(report.dropped_tail, None, "{what}");
    assert_eq!(s.load(Oid::new(9)).expect("load").0, Bytes::from_static(b"after"), "{what}");
}

/// Crashes recovery itself at every operation, then checks the result.
fn check_crashed_recovery(c: &MemDir, plan: &[TxnPlan], refs: &[View], out: &Outcome, what: &str) {
    for j in 1.. {
        let d = c.crash(CrashMode::DropUnsynced);
        d.fail_after(Some(j));
        let done = Storage::open(d.clone(), NAME, Options::default()).is_ok();
        for mode in [CrashMode::DropUnsynced, CrashMode::TearLast { keep: 1 }] {
            check(&d.crash(mode), plan, refs, out, &format!("{what}, recovery died at op {j} ({mode:?})"));
        }
        if done {
            break;
        }
    }
}

fn crash_everywhere(plan: &[TxnPlan], tear_every_byte: bool) -> usize {
    crash_everywhere_with(plan, tear_every_byte, None)
}

fn crash_everywhere_with(plan: &[TxnPlan], tear_every_byte: bool, group: Option<usize>) -> usize {
    let refs = reference(plan);
    let mut checked = 0;
    for k in 1.. {
        let d = MemDir::new();
        d.fail_after(Some(k));
        let out = run_with(&d, plan, group);
        if d.ops() == 0 {
            // Died creating the file: nothing to check but that a fresh open works.
            continue;
        }
        let mut modes = vec![CrashMode::DropUnsynced];
        let last = d.last_pending_len().unwrap_or(0);
        if tear_every_byte {
            modes.extend((0..=last).map(|keep| CrashMode::TearLast { keep }));
            let n = d.max_pending().min(8);
            modes.extend((0..1u64 << n).map(|mask| CrashMode::Reorder { mask }));
        } else {
            modes.extend(
                [0, 1, last / 2, last.saturating_sub(1), last].map(|keep| CrashMode::TearLast { keep }),
            );
            modes.extend([0, u64::MAX, 0x5555, 0xaaaa].map(|mask| CrashMode::Reorder { mask }));
        }
        for mode in modes {
            let c = d.crash(mode);
            if !c.names().iter().any(|n| n == NAME) {
                // The file's creation was never made durable: a fresh storage, nothing committed.
                assert!(out.finished.is_empty(), "k {k}: committed data but no file");
                continue;
            }
            check(&c, plan, &refs, &out, &format!("k {k}, {mode:?}"));
            checked += 1;
        }
        if k % 3 == 0 {
            check_crashed_recovery(
                &d.crash(CrashMode::TearLast { keep: last / 2 }),
                plan,
                &refs,
                &out,
                &format!("k {k}"),
            );
        }
        if out.completed {
            assert_eq!(out.finished.len(), plan.iter().filter(|t| !t.abort_after_vote).count());
            break;
        }
    }
    checked
}

#[test]
fn crash_at_every_operation_of_small_commits_tearing_every_byte() {
    let checked = crash_everywhere(&small_workload(), true);
    assert!(checked > 500, "only {checked} crash images checked");
}

#[test]
fn crash_at_every_operation_of_large_commits() {
    let checked = crash_everywhere(&large_workload(), false);
    assert!(checked > 20, "only {checked} crash images checked");
}

/// Group commit: several transactions finished before one round makes them durable, an undo
/// of a transaction still pending, an abort after a pending one. Every crash image holds the
/// acknowledged transactions and a prefix of the unacknowledged ones, never a mix.
#[test]
fn crash_at_every_operation_of_group_commits_in_threes_tearing_every_byte() {
    assert!(crash_everywhere_with(&small_workload(), true, Some(3)) > 0);
}

#[test]
fn crash_at_every_operation_of_group_commits_in_pairs() {
    assert!(crash_everywhere_with(&small_workload(), false, Some(2)) > 0);
}

#[test]
fn crash_at_every_operation_of_large_group_commits() {
    assert!(crash_everywhere_with(&large_workload(), false, Some(3)) > 0);
}

#[test]
fn a_failed_finish_breaks_the_storage_until_reopened() {
    let d = MemDir::new();
    let (s, _) = Storage::open(d.clone(), NAME, Options::default()).expect("open");
    s.begin(meta(1), BeginTid::Exactly(Tid::new(1)), TxnStatus::NORMAL).expect("begin");
    s.store(Oid::new(0), Tid::ZERO, b"root").expect("store");
    s.vote().expect("vote");
    d.fail_after(Some(2)); // the status write succeeds, its sync fails
    assert!(s.finish().is_err());
    d.fail_after(None);
    assert!(matches!(
        s.begin(meta(2), BeginTid::Exactly(Tid::new(2)), TxnStatus::NORMAL),
        Err(StorageError::Broken(_))
    ));
    assert_eq!(s.last_transaction(), Tid::ZERO, "not published");
    drop(s);
    // The status byte reached the (unsynced) file; a reopen finds the commit.
    let (s, _) = Storage::open(d.clone(), NAME, Options::default()).expect("reopen");
    assert_eq!(s.last_transaction(), Tid::new(1));
}

// ---- pack ---------------------------------------------------------------------------------------

/// The history packed by the pack crash tests: revisions, a delete (dropped by the pack), an
/// undo whose back-pointer points into history the pack removes (its data is copied in) and
/// one whose target survives (re-aimed), a record over the copy buffer, and an empty
/// transaction.
fn pack_setup(s: &Storage<MemDir>) {
    let big = vec![0x5au8; 1_300_000];
    let commit = |tid: u64, f: &dyn Fn()| {
        s.begin(meta(tid), BeginTid::Exactly(Tid::new(tid)), TxnStatus::NORMAL).expect("begin");
        f();
        s.vote().expect("vote");
        s.finish().expect("finish");
    };
    let st = |o: u64, serial: u64, d: &[u8]| s.store(Oid::new(o), Tid::new(serial), d).expect("store");
    let undo = |tid: u64| {
        s.undo(&format::undo_id(Tid::new(tid))).expect("undo");
    };
    commit(100, &|| {
        st(0, 0, b"root1");
        st(1, 0, b"a1");
        st(2, 0, b"b1");
    });
    commit(200, &|| st(1, 100, b"a2"));
    commit(250, &|| ());
    commit(300, &|| s.delete(Oid::new(2), Tid::new(100)).expect("delete"));
    commit(400, &|| {
        st(1, 200, b"a3");
        st(3, 0, &big);
    });
    commit(500, &|| undo(400));
    commit(600, &|| {
        st(0, 100, b"root2");
        st(4, 0, b"d1");
    });
    commit(650, &|| undo(600));
}

const PACK_TIME: u64 = 401;
const PACK_TIDS: [u64; 10] = [100, 200, 250, 300, 400, 500, 600, 650, 700, 701];

/// How the transaction committed during the pack ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum During {
    NotRun,
    Failed,
    DiedInFinish,
    Finished,
}

/// Everything a reader can observe: transactions with records, and load_before of every
/// object at every tid of interest (the current one included).
fn pack_view(s: &Storage<MemDir>) -> Vec<String> {
    let mut out: Vec<String> = s
        .iterator(None, None)
        .map(|r| {
            let (t, recs) = r.expect("iterate");
            let recs: Vec<_> =
                recs.iter().map(|r| (r.oid, r.tid, r.data.as_ref().map(Bytes::len), r.data_txn)).collect();
            format!("{:?} {:?}", t.header, recs)
        })
        .collect();
    for oid in 0..6 {
        for b in PACK_TIDS.iter().copied().chain([u64::MAX >> 1]) {
            let r =
                s.load_before(Oid::new(oid), Tid::new(b)).map(|r| r.map(|r| (r.data.len(), r.start, r.end)));
            out.push(format!("{oid} {b} {:?}", r.map_err(|e| e.to_string())));
        }
    }
    out
}

/// Packs (the setup already committed) with the process dying at its `k`-th file operation;
/// with `during`, a transaction is committed while the pack runs (at `phase`).
fn pack_run(d: &MemDir, k: Option<u64>, during: Option<PackPhase>) -> (Option<PackReport>, During) {
    let (s, _) = Storage::open(d.clone(), NAME, Options::default()).expect("open");
    d.fail_after(k);
    let mut outcome = During::NotRun;
    let r = s.pack_with_progress(Tid::new(PACK_TIME), |phase| {
        if Some(phase) != during {
            return;
        }
        let ok = s.begin(meta(700), BeginTid::Exactly(Tid::new(700)), TxnStatus::NORMAL).is_ok()
            && s.undo(&format::undo_id(Tid::new(650))).is_ok()
            && s.store(Oid::new(5), Tid::ZERO, b"during the pack").is_ok()
            && s.vote().is_ok();
        outcome = match (ok, ok && s.finish().is_ok()) {
            (true, true) => During::Finished,
            (true, false) => During::DiedInFinish,
            _ => {
                let _ = s.abort();
                During::Failed
            }
        };
    });
    (r.ok(), outcome)
}

/// Crashes a pack at every file operation; every crash image must reopen to the history
/// before the pack or after it, with exactly the finished commits.
fn crash_every_pack_operation(during: Option<PackPhase>) -> usize {
    let setup = || {
        let d = MemDir::new();
        let (s, _) = Storage::open(d.clone(), NAME, Options::default()).expect("open");
        pack_setup(&s);
        d
    };
    // The four possible histories: before or after the pack, with or without the commit.
    let views = |commit: bool, pack: bool| {
        let d = setup();
        if pack || commit {
            let (r, out) = pack_run(&d, None, if commit { during } else { None });
            assert_eq!(out == During::Finished, commit);
            let r = r.expect("pack");
            assert_eq!(r.outcome, PackOutcome::Packed);
            assert_eq!(r.back_pointers_resolved, 1);
            if !pack {
                // The same commit, without the pack: replay it on a fresh copy.
                let d2 = setup();
                let (s, _) = Storage::open(d2.clone(), NAME, Options::default()).expect("open");
                s.begin(meta(700), BeginTid::Exactly(Tid::new(700)), TxnStatus::NORMAL).expect("begin");
                s.undo(&format::undo_id(Tid::new(650))).expect("undo");
                s.store(Oid::new(5), Tid::ZERO, b"during the pack").expect("store");
                s.vote().expect("vote");
                s.finish().expect("finish");
                return pack_view(&s);
            }
        }
        let (s, _) = Storage::open(d, NAME, Options::default()).expect("open");
        pack_view(&s)
    };
    let before = views(false, false);
    let after = views(false, true);
    let (before_c, after_c) = if during.is_some() {
        (views(true, false), views(true, true))
    } else {
        (before.clone(), after.clone())
    };
    assert_ne!(before, after);
    let mut checked = 0;
    for k in 1.. {
        let d = setup();
        let (report, out) = pack_run(&d, Some(k), during);
        let last = d.last_pending_len().unwrap_or(0);
        let mut modes = vec![CrashMode::DropUnsynced];
        modes.extend([0, 1, last / 2, last.saturating_sub(1), last].map(|keep| CrashMode::TearLast { keep }));
        modes.extend([0, u64::MAX, 0x5555, 0xaaaa].map(|mask| CrashMode::Reorder { mask }));
        for mode in modes {
            let c = d.crash(mode);
            let what =
                format!("k {k}, {mode:?}, commit {out:?}, pack {:?}", report.as_ref().map(|r| r.outcome));
            let (s, _) =
                Storage::open(c.clone(), NAME, Options::default()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(!c.names().iter().any(|n| n.ends_with(".pack")), "{what}: {:?}", c.names());
            let got = pack_view(&s);
            // A pack that died after its rename may have left either file as Data.fs; one that
            // died before the commit it waits for finished cannot have renamed.
            let allowed: Vec<&Vec<String>> = match (report.is_some(), out) {
                (true, _) => vec![&after_c],
                (false, During::Finished) => vec![&before_c, &after_c],
                (false, During::DiedInFinish) => vec![&before, &before_c],
                (false, During::NotRun) if during.is_none() => vec![&before, &after],
                (false, _) => vec![&before],
            };
            assert!(allowed.contains(&&got), "{what}\ngot {got:#?}");
            // The reopened storage takes commits and packs again.
            let tid = s.last_transaction().get() + 1000;
            s.begin(meta(tid), BeginTid::Exactly(Tid::new(tid)), TxnStatus::NORMAL).expect("begin");
            s.store(Oid::new(9), Tid::ZERO, b"after").expect("store");
            s.vote().expect("vote");
            s.finish().expect("finish");
            s.pack(Tid::new(tid)).expect("pack after the crash");
            drop(s);
            let (s, rep) = Storage::open(c, NAME, Options::default()).expect("reopen");
            assert_eq!(rep.dropped_tail, None, "{what}");
            assert_eq!(s.load(Oid::new(9)).expect("load").0, Bytes::from_static(b"after"), "{what}");
            checked += 1;
        }
        if report.is_some() {
            break;
        }
    }
    checked
}

#[test]
fn crash_at_every_operation_of_a_pack() {
    let checked = crash_every_pack_operation(None);
    assert!(checked > 100, "only {checked} crash images checked");
}

#[test]
fn crash_at_every_operation_of_a_pack_with_a_commit_during_the_copy() {
    let checked = crash_every_pack_operation(Some(PackPhase::CopiedSnapshot));
    assert!(checked > 100, "only {checked} crash images checked");
}

#[test]
fn crash_at_every_operation_of_a_pack_with_a_commit_before_the_swap() {
    let checked = crash_every_pack_operation(Some(PackPhase::Finishing));
    assert!(checked > 100, "only {checked} crash images checked");
}

#[test]
fn group_commit_runs_complete_without_faults() {
    for every in [1, 2, 3, 5] {
        for plan in [small_workload(), large_workload()] {
            let d = MemDir::new();
            let out = run_with(&d, &plan, Some(every));
            assert!(out.completed, "every {every}: {out:?}");
        }
    }
}
