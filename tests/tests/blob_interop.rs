//! Blob interop with Python's ZODB (FileStorage with a blob directory).
//!
//! * zeoraid writes a `Data.fs` and its blob directory (blobs uploaded in `sendBlob`-sized
//!   chunks, a blob store after a plain store of the same object, an undo that gives a blob
//!   revision back, restores with blobs, an aborted blob commit, an empty blob). Python's
//!   `FileStorage(path, blob_dir=...)` must read every blob revision (`loadBlob`,
//!   `openCommittedBlobFile`) with the same content, ZODB's layout helpers must accept the
//!   directory (marker, every file a valid blob file name in a valid oid directory, committed
//!   files read-only, `tmp/` empty). Python then commits a blob into the same directory and
//!   zeoraid reads it.
//! * Python writes the varied file of `tests/python/make_fs.py` (blobs with revisions, an undo
//!   that copies a blob, a pack that removes blob files); zeoraid reads every blob of it and
//!   the sha256 digests equal those of `tests/python/dump_fs.py --blobs`, it classifies every
//!   record as blob or not as ZODB does, and it lists the same blob files.
//!
//! Python comes from the pinned venv of [`zeoraid_tests::python::PythonEnv`].

use bytes::Bytes;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::types::TxnStatus;
use zeoraid_server::storage::{
    format, is_blob_record, BeginTid, Layout, Options, RealDir, Storage, TxnMeta, BLOB_CHUNK,
};
use zeoraid_tests::python::{scripts_dir, PythonEnv};

/// What ZODB 6.4 writes as the record of a `Blob`.
const BLOB_PICKLE: &[u8] = b"\x80\x03cZODB.blob\nBlob\nq\x00.\x80\x03N.";

const READ_SCRIPT: &str = r#"
import sys, json, os, stat
from ZODB.FileStorage import FileStorage
from ZODB.blob import FilesystemHelper, auto_layout_select, is_blob_record

path, blob_dir = sys.argv[1], os.path.abspath(sys.argv[2])
out = {'auto_layout': auto_layout_select(blob_dir)}
helper = FilesystemHelper(blob_dir)
helper.create()  # raises ValueError when the marker disagrees with the chosen layout
out['helper_layout'] = helper.layout_name
fs = FileStorage(path, read_only=True, blob_dir=blob_dir)
blobs = []
for t in fs.iterator():
    for r in t:
        if r.data and is_blob_record(r.data):
            fn = fs.loadBlob(r.oid, r.tid)
            with fs.openCommittedBlobFile(r.oid, r.tid) as f:
                data = f.read()
            mode = os.stat(fn).st_mode
            blobs.append([r.oid.hex(), r.tid.hex(), data.hex(),
                          os.path.relpath(fn, blob_dir).replace(os.sep, '/'),
                          bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))])
fs.close()
out['blobs'] = blobs
files, stray = [], []
for dirpath, dirs, names in os.walk(blob_dir):
    for name in names:
        full = os.path.join(dirpath, name)
        rel = os.path.relpath(full, blob_dir).replace(os.sep, '/')
        if rel in ('.layout',):
            continue
        try:
            oid, tid = helper.splitBlobFilename(full)
        except ValueError:
            oid = None
        if oid is None:
            stray.append(rel)
        else:
            files.append([oid.hex(), tid.hex()])
out['files'] = sorted(files)
out['stray'] = sorted(stray)
json.dump(out, sys.stdout)
"#;

const WRITE_SCRIPT: &str = r#"
import sys, os
from ZODB.FileStorage import FileStorage
from ZODB.Connection import TransactionMetaData
from ZODB.utils import p64, z64

path, blob_dir = sys.argv[1], sys.argv[2]
fs = FileStorage(path, blob_dir=blob_dir)
t = TransactionMetaData(b'/ python', b'python blob', {})
fs.tpc_begin(t)
tmp = os.path.join(fs.temporaryDirectory(), 'python-upload')
with open(tmp, 'wb') as f:
    f.write(b'written by python\n' * 1000)
fs.storeBlob(p64(40), z64, b'\x80\x03cZODB.blob\nBlob\nq\x00.\x80\x03N.', tmp, '', t)
fs.tpc_vote(t)
print(fs.tpc_finish(t).hex())
fs.close()
"#;

fn run(py: &Path, args: &[&Path]) -> String {
    let out = Command::new(py).args(args).output().expect("run python");
    assert!(out.status.success(), "python {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

fn opts(blobs: &Path) -> Options {
    Options { blob_dir: Some(blobs.to_path_buf()), ..Options::default() }
}

fn meta(desc: &str) -> TxnMeta {
    TxnMeta::with_raw_extension(
        Bytes::from_static(b"/ alice"),
        Bytes::copy_from_slice(desc.as_bytes()),
        Bytes::new(),
    )
}

fn upload(s: &Storage, content: &[u8]) -> zeoraid_server::storage::UploadId {
    let id = s.begin_upload().expect("begin upload");
    for c in content.chunks(BLOB_CHUNK) {
        s.append_upload(id, c).expect("append");
    }
    id
}

fn commit(s: &Storage, desc: &str, tid: BeginTid, f: impl FnOnce(&Storage)) -> Tid {
    s.begin(meta(desc), tid, TxnStatus::NORMAL).expect("begin");
    f(s);
    s.vote().expect("vote");
    s.finish().expect("finish")
}

/// Every blob revision of the storage as (oid hex, tid hex) → content, by iterating records.
fn blobs_of(s: &Storage) -> BTreeMap<(String, String), Vec<u8>> {
    let mut out = BTreeMap::new();
    for item in s.iterator(None, None) {
        let (_, recs) = item.expect("iterate");
        for r in recs {
            if r.data.as_deref().is_some_and(is_blob_record) {
                let content = s.open_blob(r.oid, r.tid).and_then(|b| b.read_all()).expect("read blob");
                out.insert((hex::encode(r.oid.to_bytes()), hex::encode(r.tid.to_bytes())), content.to_vec());
            }
        }
    }
    out
}

fn write_rust_blobs(data: &Path, blobs: &Path) -> BTreeMap<(String, String), Vec<u8>> {
    let (s, _) = Storage::open_path(data, opts(blobs)).expect("create");
    let big: Vec<u8> = (0..150_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let t1 = commit(&s, "create blobs", BeginTid::from_clock(), |s| {
        s.store(Oid::ROOT, Tid::ZERO, b"root v1").expect("store");
        let id = upload(s, &big);
        s.store_blob(Oid::new(1), Tid::ZERO, BLOB_PICKLE, id).expect("store_blob");
        let id = upload(s, b"small blob\n");
        s.store_blob(Oid::new(2), Tid::ZERO, BLOB_PICKLE, id).expect("store_blob");
    });
    let t2 = commit(&s, "blob 1 v2", BeginTid::from_clock(), |s| {
        // As ZEO does: a plain store, then the blob store of the same object.
        s.store(Oid::new(1), t1, BLOB_PICKLE).expect("store");
        let id = upload(s, b"one, revision 2\n");
        s.store_blob(Oid::new(1), t1, BLOB_PICKLE, id).expect("store_blob");
    });
    let t3 = commit(&s, "undo blob 1 v2", BeginTid::from_clock(), |s| {
        assert_eq!(s.undo(&format::undo_id(t2)).expect("undo"), vec![Oid::new(1)]);
    });
    let t4 = Tid::new(t3.get() + 1000);
    commit(&s, "restored", BeginTid::Exactly(t4), |s| {
        let id = upload(s, b"restored three\n");
        s.restore_blob(Oid::new(3), t4, BLOB_PICKLE, None, id).expect("restore_blob");
        let id = upload(s, b"small blob\n");
        s.restore_blob(Oid::new(2), t4, BLOB_PICKLE, Some(t1), id).expect("restore_blob as back-pointer");
    });
    s.begin(meta("aborted"), BeginTid::from_clock(), TxnStatus::NORMAL).expect("begin");
    let id = upload(&s, b"never committed");
    s.store_blob(Oid::new(5), Tid::ZERO, BLOB_PICKLE, id).expect("store_blob");
    s.vote().expect("vote");
    s.abort().expect("abort");
    commit(&s, "empty blob", BeginTid::from_clock(), |s| {
        let id = upload(s, b"");
        s.store_blob(Oid::new(2), t4, BLOB_PICKLE, id).expect("store_blob");
    });
    upload(&s, b"an upload left open at close");
    let blobs = blobs_of(&s);
    assert_eq!(blobs.len(), 7, "{:?}", blobs.keys());
    assert_eq!(blobs[&(hex::encode(Oid::new(1).to_bytes()), hex::encode(t3.to_bytes()))], big, "undo");
    s.close().expect("close");
    blobs
}

#[test]
fn python_reads_every_blob_zeoraid_writes_and_zeoraid_reads_pythons() {
    let py = PythonEnv::get().python_path().to_path_buf();
    let tmp = tempfile::tempdir().expect("tempdir");
    let read = tmp.path().join("read.py");
    std::fs::write(&read, READ_SCRIPT).expect("script");
    let write = tmp.path().join("write.py");
    std::fs::write(&write, WRITE_SCRIPT).expect("script");
    let data = tmp.path().join("Data.fs");
    let blob_dir = tmp.path().join("blobs");
    let ours = write_rust_blobs(&data, &blob_dir);

    let theirs: Json = serde_json::from_str(&run(&py, &[&read, &data, &blob_dir])).expect("json");
    assert_eq!(theirs["auto_layout"], "bushy");
    assert_eq!(theirs["helper_layout"], "bushy");
    assert_eq!(theirs["stray"], json!([]), "only blob files in the tree, nothing left in tmp/");
    let mut read_by_python = BTreeMap::new();
    for b in theirs["blobs"].as_array().expect("blobs") {
        let (oid, tid) = (b[0].as_str().expect("oid").to_owned(), b[1].as_str().expect("tid").to_owned());
        let content = hex::decode(b[2].as_str().expect("data")).expect("hex");
        let want_path = Layout::Bushy.blob_file(
            Oid::new(u64::from_str_radix(&oid, 16).expect("oid")),
            Tid::new(u64::from_str_radix(&tid, 16).expect("tid")),
        );
        assert_eq!(b[3].as_str(), Some(want_path.as_str()));
        assert_eq!(b[4], json!(false), "committed blob {want_path} is read-only");
        read_by_python.insert((oid, tid), content);
    }
    assert_eq!(read_by_python, ours);
    let files: Vec<Json> = ours.keys().map(|(o, t)| json!([o, t])).collect();
    assert_eq!(theirs["files"], Json::Array(files));

    // Python commits a blob into zeoraid's directory; zeoraid reads it.
    let tid = run(&py, &[&write, &data, &blob_dir]);
    let tid = Tid::new(u64::from_str_radix(tid.trim(), 16).expect("tid"));
    let (s, report) = Storage::open_path(&data, opts(&blob_dir)).expect("reopen");
    assert_eq!(report.blobs, Default::default(), "Python leaves nothing in tmp/");
    let b = s.open_blob(Oid::new(40), tid).expect("python's blob").read_all().expect("read");
    assert_eq!(b, Bytes::from(b"written by python\n".repeat(1000)));
    let mut all = ours;
    all.insert((hex::encode(Oid::new(40).to_bytes()), hex::encode(tid.to_bytes())), b.to_vec());
    assert_eq!(blobs_of(&s), all);
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[test]
fn zeoraid_reads_every_blob_of_a_python_file_as_dump_fs_describes_it() {
    let py = PythonEnv::get().python_path().to_path_buf();
    let tmp = tempfile::tempdir().expect("tempdir");
    let out_dir = tmp.path().join("made");
    let made = run(&py, &[&scripts_dir().join("make_fs.py"), &out_dir]);
    let summary: Json = serde_json::from_str(&made).expect("summary");
    let data = out_dir.join("Data.fs");
    let blob_dir = out_dir.join("blobs");
    assert_eq!(summary["blob_dir"].as_str().map(Path::new), Some(blob_dir.as_path()));
    let dump_fs = scripts_dir().join("dump_fs.py");
    let out = Command::new(&py)
        .arg(&dump_fs)
        .arg(&data)
        .arg("--blobs")
        .arg(&blob_dir)
        .output()
        .expect("run dump_fs.py");
    assert!(out.status.success(), "dump_fs.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let dump: Json = serde_json::from_slice(&out.stdout).expect("dump json");

    let ro = Options { read_only: true, ..opts(&blob_dir) };
    let (dir, name) = RealDir::split(&data).expect("path");
    let (s, _) = Storage::open(dir, &name, ro).expect("open read-only");
    let store = s.blob_store().expect("blobs");
    assert_eq!(dump["blobs"]["layout"].as_str(), Some(store.layout().name()));

    // Every record: blob or not, as ZODB's is_blob_record says.
    let mut records = Vec::new();
    let mut back_pointer_blobs = Vec::new();
    for item in s.iterator(None, None) {
        let (_, recs) = item.expect("iterate");
        for r in recs {
            let is_blob = r.data.as_deref().is_some_and(is_blob_record);
            records.push(json!([hex::encode(r.oid.to_bytes()), hex::encode(r.tid.to_bytes()), is_blob]));
            if let (true, Some(from)) = (is_blob, r.data_txn) {
                back_pointer_blobs.push((r.oid, r.tid, from));
            }
        }
    }
    let dumped: Vec<Json> = dump["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .flat_map(|t| t["records"].as_array().expect("records").iter())
        .map(|r| json!([r["oid"], r["tid"], r["is_blob"]]))
        .collect();
    assert_eq!(records, dumped);

    // Every blob file: same revisions, paths, sizes and digests.
    let files = dump["blobs"]["files"].as_array().expect("files");
    let ours: Vec<Json> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|(oid, tid)| {
            let b = s.open_blob(oid, tid).and_then(|b| b.read_all()).expect("read blob");
            let rel = s.blob_path(oid, tid).expect("path");
            let rel = rel
                .strip_prefix(&blob_dir)
                .expect("inside the blob dir")
                .to_string_lossy()
                .replace('\\', "/");
            json!({
                "oid": hex::encode(oid.to_bytes()),
                "tid": hex::encode(tid.to_bytes()),
                "path": rel,
                "sha256": sha256_hex(&b),
                "len": b.len(),
            })
        })
        .collect();
    assert_eq!(&ours, files);
    let blob_records = dumped.iter().filter(|r| r[2] == json!(true)).count();
    assert_eq!(files.len(), blob_records, "every blob record of the file has its blob");
    assert!(files.len() >= 5, "make_fs.py writes several blob revisions: {files:?}");

    // Python's undo copied the blob of the revision it went back to; zeoraid reads the same.
    assert!(!back_pointer_blobs.is_empty(), "make_fs.py undoes a blob change");
    for (oid, tid, from) in back_pointer_blobs {
        let a = s.open_blob(oid, tid).and_then(|b| b.read_all()).expect("undo's blob");
        let b = s.open_blob(oid, from).and_then(|b| b.read_all()).expect("original blob");
        assert_eq!(a, b, "{oid} {tid} from {from}");
    }
    drop(s);

    // A writable open finds nothing to clean and changes no blob.
    let (s, report) = Storage::open_path(&data, opts(&blob_dir)).expect("open");
    assert_eq!(report.blobs, Default::default());
    assert_eq!(s.blob_store().expect("blobs").list().expect("list").len(), files.len());
}
