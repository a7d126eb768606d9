//! Byte-level interop spot check with Python's ZODB FileStorage.
//!
//! zeoraid writes a small `Data.fs` (extension, stores, delete, undo, restore with
//! back-pointers, a packed-status transaction, a larger record); Python's `fstest` must accept
//! it and Python's `FileStorage` must read exactly what zeoraid reads (iteration, loadBefore
//! at every tid, history, undoLog, length, size). Python then commits to the same file (a
//! store, an undo, a delete) and zeoraid must read exactly what Python reads.
//!
//! Pack: zeoraid packs such files (and the varied file Python wrote and packed itself) at many
//! pack times; `fstest` must accept every result and Python must read it exactly as zeoraid
//! does. Python's own pack (without GC) of a copy to the same time (its `stop` is inclusive, so
//! `stop = pack_time - 1`) must give the very same bytes whenever it succeeds; it fails where a
//! back-pointer after the pack time points into removed history, which zeoraid resolves.
//!
//! Python comes from the pinned venv of [`zeoraid_tests::python::PythonEnv`] (real ZODB 6.4
//! from PyPI); without a usable Python the tests fail and say what to install.

use bytes::Bytes;
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};
use std::process::Command;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::types::{Extension, TxnStatus};
use zeoraid_core::wire::value::Value;
use zeoraid_server::storage::{format, BeginTid, Options, PackOutcome, RealDir, Storage, TxnMeta};
use zeoraid_tests::python::PythonEnv;

const OIDS: u64 = 6;
/// Oids to probe in the file `tests/python/make_fs.py` writes (it has fewer).
const MAKE_FS_OIDS: u64 = 40;

const SCRIPT: &str = r#"
import sys, json
from ZODB.FileStorage import FileStorage
from ZODB.scripts import fstest
from ZODB.utils import p64, u64, z64, maxtid
from ZODB.Connection import TransactionMetaData

path, mode, noids = sys.argv[1], sys.argv[2], int(sys.argv[3])

def h(b):
    return None if b is None else b.hex()

def jsonable(v):
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    return v

if mode == 'read':
    fstest.check(path)
    fs = FileStorage(path, read_only=True)
    out = {'last': h(fs.lastTransaction()), 'len': len(fs), 'size': fs.getSize(),
           'txns': [], 'loads': {}, 'history': {}, 'undo': []}
    tids = []
    for t in fs.iterator():
        tids.append(t.tid)
        recs = [[h(r.oid), h(r.tid), h(r.data), h(r.data_txn)] for r in t]
        ext = {k: jsonable(v) for k, v in t.extension.items()}
        out['txns'].append([h(t.tid), t.status, h(t.user), h(t.description), ext, recs])
    for oid in range(noids):
        o = p64(oid)
        res = []
        for tid in tids:
            try:
                r = fs.loadBefore(o, p64(u64(tid) + 1))
                res.append(None if r is None else [h(r[0]), h(r[1]), h(r[2])])
            except KeyError:
                res.append('POSKeyError')
        out['loads'][str(oid)] = res
        try:
            out['history'][str(oid)] = [[h(d['tid']), d['size'], h(d['user_name']), h(d['description'])]
                                        for d in fs.history(o, 100)]
        except KeyError:
            out['history'][str(oid)] = 'POSKeyError'
    for d in fs.undoLog(0, 100):
        out['undo'].append([d['id'].decode(), d['size'], h(d['description']),
                            {k: jsonable(v) for k, v in d.items() if k not in ('id', 'time', 'size', 'user_name', 'description')}])
    fs.close()
    json.dump(out, sys.stdout)
elif mode == 'write':
    fs = FileStorage(path)
    def commit(desc, ext, f):
        t = TransactionMetaData(b'/ python', desc, ext)
        fs.tpc_begin(t)
        f(t)
        fs.tpc_vote(t)
        return fs.tpc_finish(t)
    root_serial = fs.getTid(z64)
    commit(b'python store', {'py': 1}, lambda t: (fs.store(p64(5), z64, b'python data', '', t),
                                                  fs.store(z64, root_serial, b'root from python', '', t)))
    undo_id = fs.undoLog(0, 3)[1]['id']
    commit(b'python undo', {}, lambda t: fs.undo(undo_id, t))
    serial3 = fs.getTid(p64(3))
    commit(b'python delete', {}, lambda t: fs.deleteObject(p64(3), serial3, t))
    fs.close()
    print('ok')
elif mode == 'pack':
    # Pack copies of the file without GC, each to an exact stop tid (FileStorage.pack takes a
    # time and packs the transactions with tid <= TimeStamp(time); the conversion is replaced
    # so the stop is exact). argv[4:]: "path:stop_hex". Prints one result per copy.
    from ZODB.serialize import referencesf
    fsmod = sys.modules['ZODB.FileStorage.FileStorage']
    results = []
    for arg in sys.argv[4:]:
        copy, stop = arg.rsplit(':', 1)
        class Stop:
            def __init__(self, *args):
                pass
            def raw(self):
                return bytes.fromhex(stop)
        fs = FileStorage(copy)
        real = fsmod.TimeStamp
        fsmod.TimeStamp = Stop
        try:
            fs.pack(0, referencesf, gc=False)
            results.append('packed')
        except Exception as e:
            results.append('failed: %s: %s' % (type(e).__name__, e))
        finally:
            fsmod.TimeStamp = real
            fs.close()
    json.dump(results, sys.stdout)
"#;

fn python() -> PathBuf {
    PythonEnv::get().python_path().to_path_buf()
}

fn run_python(py: &Path, script: &Path, data: &Path, mode: &str) -> String {
    run_python_n(py, script, data, mode, OIDS)
}

fn run_python_n(py: &Path, script: &Path, data: &Path, mode: &str, oids: u64) -> String {
    let out =
        Command::new(py).arg(script).arg(data).arg(mode).arg(oids.to_string()).output().expect("run python");
    assert!(out.status.success(), "python {mode} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

fn hex(b: &[u8]) -> Json {
    json!(hex::encode(b))
}

fn opt_hex(b: Option<&[u8]>) -> Json {
    b.map_or(Json::Null, hex)
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::None => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(*i as i64),
        Value::Float(f) => json!(f),
        Value::Str(s) => json!(s.as_str()),
        Value::Bytes(b) => hex(b),
        Value::Seq(_, items) => Json::Array(items.iter().map(value_json).collect()),
        Value::Map(m) => map_json(m),
        other => json!(format!("{other:?}")),
    }
}

fn map_json(items: &[(Value, Value)]) -> Json {
    let mut m = serde_json::Map::new();
    for (k, v) in items {
        let k = match k {
            Value::Str(s) => s.as_str().to_owned(),
            Value::Int(i) => i.to_string(),
            other => format!("{other:?}"),
        };
        m.insert(k, value_json(v));
    }
    Json::Object(m)
}

fn ext_json(e: &Extension) -> Json {
    map_json(&e.0)
}

/// zeoraid's view of the file, shaped like the Python script's output.
fn rust_view(path: &Path) -> Json {
    rust_view_n(path, OIDS)
}

fn rust_view_n(path: &Path, oids: u64) -> Json {
    let (dir, name) = RealDir::split(path).expect("path");
    let (s, _) = Storage::open(dir, &name, Options { read_only: true, ..Options::default() }).expect("open");
    let mut txns = Vec::new();
    let mut tids = Vec::new();
    for item in s.iterator(None, None) {
        let (t, recs) = item.expect("iterate");
        tids.push(t.header.tid);
        let recs: Vec<Json> = recs
            .iter()
            .map(|r| {
                json!([
                    hex(&r.oid.to_bytes()),
                    hex(&r.tid.to_bytes()),
                    opt_hex(r.data.as_deref()),
                    opt_hex(r.data_txn.map(|t| t.to_bytes()).as_ref().map(|b| &b[..]))
                ])
            })
            .collect();
        txns.push(json!([
            hex(&t.header.tid.to_bytes()),
            t.header.status.0.to_string(),
            hex(&t.header.user),
            hex(&t.header.description),
            ext_json(&t.header.extension),
            recs
        ]));
    }
    let mut loads = serde_json::Map::new();
    let mut history = serde_json::Map::new();
    for oid in 0..oids {
        let o = Oid::new(oid);
        let res: Vec<Json> = tids
            .iter()
            .map(|t| match s.load_before(o, Tid::new(t.get() + 1)) {
                Ok(None) => Json::Null,
                Ok(Some(r)) => json!([
                    hex(&r.data),
                    hex(&r.start.to_bytes()),
                    opt_hex(r.end.map(|t| t.to_bytes()).as_ref().map(|b| &b[..]))
                ]),
                Err(_) => json!("POSKeyError"),
            })
            .collect();
        loads.insert(oid.to_string(), Json::Array(res));
        let hist = match s.history(o, 100) {
            Ok(h) => Json::Array(
                h.iter()
                    .map(|e| json!([hex(&e.tid.to_bytes()), e.size, hex(&e.user_name), hex(&e.description)]))
                    .collect(),
            ),
            Err(_) => json!("POSKeyError"),
        };
        history.insert(oid.to_string(), hist);
    }
    let undo: Vec<Json> = s
        .undo_log(0, 100)
        .expect("undo log")
        .iter()
        .map(|e| {
            json!([
                String::from_utf8(e.id.0.to_vec()).expect("ascii"),
                e.size,
                hex(&e.description),
                ext_json(&e.extension)
            ])
        })
        .collect();
    json!({
        "last": hex(&s.last_transaction().to_bytes()),
        "len": s.len(),
        "size": s.size(),
        "txns": txns,
        "loads": loads,
        "history": history,
        "undo": undo,
    })
}

fn commit(s: &Storage, meta: TxnMeta, tid: BeginTid, status: TxnStatus, f: impl FnOnce(&Storage)) -> Tid {
    s.begin(meta, tid, status).expect("begin");
    f(s);
    s.vote().expect("vote");
    s.finish().expect("finish")
}

fn meta(desc: &'static str, ext: Vec<(&'static str, Value)>) -> TxnMeta {
    let ext = Extension(ext.into_iter().map(|(k, v)| (Value::str_static(k), v)).collect());
    TxnMeta::new(Bytes::from_static(b"/ alice"), Bytes::from_static(desc.as_bytes()), &ext).expect("meta")
}

fn write_rust_file(path: &Path) {
    let (s, _) = Storage::open_path(path, Options::default()).expect("create");
    let now = BeginTid::from_clock();
    let t1 = commit(
        &s,
        meta("first", vec![("k", Value::str_static("v")), ("n", Value::Int(1)), ("f", Value::Float(2.5))]),
        now,
        TxnStatus::PACKED,
        |s| {
            s.store(Oid::ROOT, Tid::ZERO, b"root v1").expect("store");
            s.store(Oid::new(1), Tid::ZERO, b"one v1").expect("store");
            s.store(Oid::new(2), Tid::ZERO, b"two v1").expect("store");
        },
    );
    let t2 = commit(&s, meta("second", vec![]), BeginTid::from_clock(), TxnStatus::NORMAL, |s| {
        s.store(Oid::new(1), t1, b"one v2").expect("store");
        s.delete(Oid::new(2), t1).expect("delete");
    });
    let _t3 = commit(&s, meta("undo second", vec![]), BeginTid::from_clock(), TxnStatus::NORMAL, |s| {
        assert_eq!(s.undo(&format::undo_id(t2)).expect("undo"), vec![Oid::new(1), Oid::new(2)]);
    });
    let t4 = Tid::new(s.last_transaction().get() + 1000);
    commit(&s, meta("restored", vec![]), BeginTid::Exactly(t4), TxnStatus::NORMAL, |s| {
        s.restore(Oid::new(3), t4, Some(b"three"), None).expect("restore");
        s.restore(Oid::new(1), t4, Some(b"one v1"), Some(t1)).expect("restore as back-pointer");
        s.restore(Oid::new(4), t4, None, None).expect("restore without data");
    });
    let big = vec![0x42u8; 70_000];
    commit(
        &s,
        meta("big", vec![("size", Value::Int(70_000))]),
        BeginTid::from_clock(),
        TxnStatus::NORMAL,
        |s| {
            s.store(Oid::new(3), t4, &big).expect("store");
        },
    );
    s.close().expect("close");
}

#[test]
fn python_filestorage_reads_what_zeoraid_writes_and_vice_versa() {
    let py = python();
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = tmp.path().join("check.py");
    std::fs::write(&script, SCRIPT).expect("script");
    let data = tmp.path().join("Data.fs");
    write_rust_file(&data);

    let theirs: Json = serde_json::from_str(&run_python(&py, &script, &data, "read")).expect("json");
    let ours = rust_view(&data);
    assert_eq!(ours, theirs, "\nzeoraid: {ours:#}\npython:  {theirs:#}");
    assert_eq!(theirs["txns"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        theirs["undo"].as_array().map(Vec::len),
        Some(4),
        "the packed first transaction is not undoable"
    );

    // Python commits to the file zeoraid wrote; zeoraid reads what Python reads.
    assert_eq!(run_python(&py, &script, &data, "write").trim(), "ok");
    let theirs: Json = serde_json::from_str(&run_python(&py, &script, &data, "read")).expect("json");
    let ours = rust_view(&data);
    assert_eq!(ours, theirs, "\nzeoraid: {ours:#}\npython:  {theirs:#}");
    assert_eq!(theirs["txns"].as_array().map(Vec::len), Some(8));

    // And zeoraid can keep writing after Python (its cache is stale and is topped up by a scan).
    let (s, report) = Storage::open_path(&data, Options::default()).expect("reopen");
    assert!(matches!(report.index, zeoraid_server::storage::IndexSource::Cache { .. }), "{report:?}");
    assert_eq!(s.load(Oid::new(5)).expect("python's object").0, Bytes::from_static(b"python data"));
    let serial = s.get_tid(Oid::ROOT).expect("root");
    commit(&s, meta("after python", vec![]), BeginTid::from_clock(), TxnStatus::NORMAL, |s| {
        s.store(Oid::ROOT, serial, b"root v3").expect("store");
    });
    drop(s);
    let theirs: Json = serde_json::from_str(&run_python(&py, &script, &data, "read")).expect("json");
    assert_eq!(rust_view(&data), theirs);
}

#[test]
fn zeoraid_reads_a_varied_python_file_as_python_does() {
    let py = python();
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = tmp.path().join("check.py");
    std::fs::write(&script, SCRIPT).expect("script");
    let out_dir = tmp.path().join("made");
    let make_fs = zeoraid_tests::python::scripts_dir().join("make_fs.py");
    let made = Command::new(&py).arg(&make_fs).arg(&out_dir).output().expect("run make_fs.py");
    assert!(made.status.success(), "make_fs.py failed:\n{}", String::from_utf8_lossy(&made.stderr));
    let data = out_dir.join("Data.fs");
    let theirs: Json =
        serde_json::from_str(&run_python_n(&py, &script, &data, "read", MAKE_FS_OIDS)).expect("json");
    let ours = rust_view_n(&data, MAKE_FS_OIDS);
    assert_eq!(ours, theirs, "\nzeoraid: {ours:#}\npython:  {theirs:#}");
    assert!(
        theirs["txns"].as_array().is_some_and(|t| t.iter().any(|t| t[1] == "p")),
        "the file has packed transactions"
    );
}

/// The tids of the transactions in the file, as zeoraid iterates them.
fn file_tids(path: &Path) -> Vec<Tid> {
    let (dir, name) = RealDir::split(path).expect("path");
    let (s, _) = Storage::open(dir, &name, Options { read_only: true, ..Options::default() }).expect("open");
    s.iterator(None, None).map(|r| r.expect("iterate").0.header.tid).collect()
}

/// Packs copies of `original` at each pack time, with zeoraid and with Python's FileStorage
/// (to `stop = pack_time - 1`); checks that fstest accepts zeoraid's result, that Python reads
/// it exactly as zeoraid does, and that it is byte for byte Python's whenever Python's pack
/// succeeds. Returns (pack time, zeoraid's outcome, Python's result) for each.
fn pack_both_ways(original: &Path, times: &[Tid], oids: u64) -> Vec<(Tid, PackOutcome, String)> {
    let py = python();
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = tmp.path().join("check.py");
    std::fs::write(&script, SCRIPT).expect("script");
    let bytes = std::fs::read(original).expect("read the original");
    let mut args = Vec::new();
    let mut ours = Vec::new();
    for (i, &p) in times.iter().enumerate() {
        let dir = tmp.path().join(format!("p{i}"));
        std::fs::create_dir_all(dir.join("z")).expect("mkdir");
        std::fs::create_dir_all(dir.join("py")).expect("mkdir");
        let z = dir.join("z").join("Data.fs");
        let theirs = dir.join("py").join("Data.fs");
        std::fs::write(&z, &bytes).expect("copy");
        std::fs::write(&theirs, &bytes).expect("copy");
        let (s, _) = Storage::open_path(&z, Options::default()).expect("open");
        let report = s.pack(p).expect("zeoraid packs");
        assert_eq!(report.pack_time, p);
        s.close().expect("close");
        args.push(format!("{}:{}", theirs.display(), hex::encode((p.get() - 1).to_be_bytes())));
        ours.push((z, theirs, report.outcome));
    }
    let out = Command::new(&py)
        .arg(&script)
        .arg(original)
        .arg("pack")
        .arg(oids.to_string())
        .args(&args)
        .output()
        .expect("run python");
    assert!(out.status.success(), "python pack failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<String> = serde_json::from_slice(&out.stdout).expect("json");
    let mut summary = Vec::new();
    for ((&p, (z, theirs, outcome)), result) in times.iter().zip(ours).zip(results) {
        let what = format!("pack time {p} ({outcome:?}; Python: {result})");
        let packed = std::fs::read(&z).expect("read ours");
        if outcome == PackOutcome::Packed {
            assert!(packed.len() < bytes.len() || packed != bytes, "{what}");
        } else {
            assert_eq!(packed, bytes, "{what}: a pack that does nothing leaves the file alone");
        }
        if result == "packed" {
            let python_packed = std::fs::read(&theirs).expect("read theirs");
            assert!(python_packed == packed, "{what}: zeoraid's packed file differs from Python's");
        } else {
            assert!(result.contains("PackError") || result.contains("AssertionError"), "{what}");
        }
        let theirs_view: Json =
            serde_json::from_str(&run_python_n(&py, &script, &z, "read", oids)).expect("json");
        let ours_view = rust_view_n(&z, oids);
        assert_eq!(ours_view, theirs_view, "{what}\nzeoraid: {ours_view:#}\npython:  {theirs_view:#}");
        summary.push((p, outcome, result));
    }
    summary
}

#[test]
fn python_reads_what_zeoraid_packed_and_packs_the_same_bytes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("Data.fs");
    write_rust_file(&data);
    // Two more commits, so that the restore's back-pointer (into the first transaction) and the
    // undo's outlive several pack times.
    let (s, _) = Storage::open_path(&data, Options::default()).expect("reopen");
    let serial = s.get_tid(Oid::ROOT).expect("root");
    let t6 = commit(&s, meta("sixth", vec![]), BeginTid::from_clock(), TxnStatus::NORMAL, |s| {
        s.store(Oid::ROOT, serial, b"root v2").expect("store");
    });
    commit(&s, meta("seventh", vec![]), BeginTid::from_clock(), TxnStatus::NORMAL, |s| {
        s.store(Oid::ROOT, t6, b"root v3").expect("store");
        s.store(Oid::new(5), Tid::ZERO, b"five").expect("store");
    });
    s.close().expect("close");
    let tids = file_tids(&data);
    assert_eq!(tids.len(), 7);
    let mut times: Vec<Tid> = tids.iter().flat_map(|t| [*t, Tid::new(t.get() + 1)]).collect();
    times.pop(); // after the last tid zeoraid keeps the last transaction and Python does not
    let summary = pack_both_ways(&data, &times, OIDS);
    let packed_same = summary.iter().filter(|(_, o, r)| *o == PackOutcome::Packed && r == "packed").count();
    let python_failed = summary.iter().filter(|(_, o, r)| *o == PackOutcome::Packed && r != "packed").count();
    let noop = summary.iter().filter(|(_, o, r)| *o != PackOutcome::Packed && r == "packed").count();
    assert!(packed_same >= 2, "{summary:#?}");
    assert!(python_failed >= 2, "Python fails where the restore points into removed history: {summary:#?}");
    assert!(noop >= 2, "{summary:#?}");
}

#[test]
fn zeoraid_packs_again_a_file_python_wrote_and_packed() {
    let py = python();
    let tmp = tempfile::tempdir().expect("tempdir");
    let out_dir = tmp.path().join("made");
    let make_fs = zeoraid_tests::python::scripts_dir().join("make_fs.py");
    let made = Command::new(&py).arg(&make_fs).arg(&out_dir).output().expect("run make_fs.py");
    assert!(made.status.success(), "make_fs.py failed:\n{}", String::from_utf8_lossy(&made.stderr));
    let data = out_dir.join("Data.fs");
    let tids = file_tids(&data);
    assert!(tids.len() > 10, "{}", tids.len());
    // Every third transaction (and just after it), plus the last one.
    let mut times: Vec<Tid> = tids
        .iter()
        .step_by(3)
        .flat_map(|t| [*t, Tid::new(t.get() + 1)])
        .filter(|t| *t <= tids[tids.len() - 1])
        .collect();
    times.push(tids[tids.len() - 1]);
    let summary = pack_both_ways(&data, &times, MAKE_FS_OIDS);
    assert!(
        summary.iter().any(|(_, o, r)| *o == PackOutcome::Packed && r == "packed"),
        "some packs remove history and match Python's: {summary:#?}"
    );
    assert!(
        summary.iter().any(|(_, o, _)| *o == PackOutcome::NothingToRemove),
        "packing to before Python's own pack time changes nothing: {summary:#?}"
    );
}
