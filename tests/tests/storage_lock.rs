//! The storage lock against Python's: zeoraid and ZODB's FileStorage lock `Data.fs.lock` the
//! same way, so each refuses to open for writing what the other has open, and read-only opens
//! pass on both sides.
//!
//! Python comes from the pinned venv of [`zeoraid_tests::python::PythonEnv`] (real ZODB 6.4 and
//! zc.lockfile from PyPI); without a usable Python the tests fail and say what to install.

use bytes::Bytes;
use serde_json::Value as Json;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::types::TxnStatus;
use zeoraid_server::storage::{BeginTid, OpenError, Options, Storage, TxnMeta};
use zeoraid_tests::python::PythonEnv;

/// Tries a writable and a read-only FileStorage on argv[1]; prints what happened as JSON.
const TRY_OPEN: &str = r#"
import json, sys
import zc.lockfile
from ZODB.FileStorage import FileStorage
from ZODB.utils import p64
path = sys.argv[1]
out = {}
try:
    fs = FileStorage(path)
except zc.lockfile.LockError as e:
    out['write'] = ['LockError', str(e)]
else:
    out['write'] = ['opened', fs.load(p64(1))[0].decode()]
    fs.close()
fs = FileStorage(path, read_only=True)
out['read_only'] = fs.load(p64(1))[0].decode()
fs.close()
with open(path + '.lock') as f:
    out['lock_file'] = f.read()
print(json.dumps(out))
"#;

/// Opens argv[1] for writing, commits oid 1, prints its pid and holds the storage until its
/// standard input closes.
const HOLD: &str = r#"
import os, sys
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.utils import p64, z64
fs = FileStorage(sys.argv[1])
t = TransactionMetaData()
fs.tpc_begin(t)
fs.store(p64(1), z64, b'written by python', '', t)
fs.tpc_vote(t)
fs.tpc_finish(t)
print(os.getpid(), flush=True)
sys.stdin.read()
fs.close()
"#;

fn try_open_in_python(path: &Path) -> Json {
    let out = PythonEnv::get().run_code(TRY_OPEN, &[path.as_os_str()]).expect("python");
    serde_json::from_slice(&out.stdout).expect("json")
}

fn store_one(s: &Storage, data: &'static [u8]) {
    s.begin(TxnMeta::default(), BeginTid::from_clock(), TxnStatus::NORMAL).expect("begin");
    s.store(Oid::new(1), Tid::ZERO, data).expect("store");
    s.vote().expect("vote");
    s.finish().expect("finish");
}

#[test]
fn zeoraid_holding_the_storage_makes_python_filestorage_fail_with_its_lock_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("Data.fs");
    let lock = tmp.path().join("Data.fs.lock");
    let (s, _) = Storage::open_path(&path, Options::default()).expect("open");
    store_one(&s, b"written by zeoraid");

    let seen = try_open_in_python(&path);
    // zc.lockfile's message is "Couldn't lock %r" % the lock file's name.
    let message = format!("Couldn't lock '{}'", lock.display());
    assert_eq!(seen["write"], serde_json::json!(["LockError", message]), "{seen}");
    assert_eq!(seen["read_only"], "written by zeoraid", "read-only opens take no lock: {seen}");
    assert_eq!(seen["lock_file"], format!(" {}\n", std::process::id()), "zc.lockfile's content: {seen}");

    // Once zeoraid lets go, Python opens it for writing.
    s.close().expect("close");
    let seen = try_open_in_python(&path);
    assert_eq!(seen["write"], serde_json::json!(["opened", "written by zeoraid"]), "{seen}");
}

/// Kills the Python holder if the test fails while it runs.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn python_holding_the_storage_makes_zeoraid_fail_naming_the_lock_file_and_pid() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("Data.fs");
    let lock = tmp.path().join("Data.fs.lock");
    let mut cmd = PythonEnv::get().command();
    cmd.arg("-c").arg(HOLD).arg(path.as_os_str());
    let mut holder =
        Holder(cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("start the python holder"));
    let mut line = String::new();
    BufReader::new(holder.0.stdout.as_mut().expect("stdout")).read_line(&mut line).expect("read its pid");
    let pid: u32 = line.trim().parse().unwrap_or_else(|_| panic!("python printed {line:?}, not its pid"));
    assert_eq!(pid, holder.0.id());

    match Storage::open_path(&path, Options::default()) {
        Err(e @ OpenError::Locked { .. }) => {
            let message = e.to_string();
            let OpenError::Locked { lock: l, pid: p } = e else { unreachable!() };
            assert_eq!((l.as_str(), p), (lock.to_str().expect("utf-8"), Some(pid)));
            assert!(message.contains(&l) && message.contains(&format!("process {pid}")), "{message}");
        }
        other => panic!("expected OpenError::Locked, got {other:?}"),
    }
    // Read-only opens take no lock: zeoraid reads what Python committed.
    let (r, _) = Storage::open_path(&path, Options { read_only: true, ..Options::default() })
        .expect("read-only open beside python");
    assert_eq!(r.load(Oid::new(1)).expect("load").0, Bytes::from_static(b"written by python"));
    drop(r);

    // Python closes its storage and exits; zeoraid then opens it for writing.
    drop(holder.0.stdin.take());
    let status = holder.0.wait().expect("wait for python");
    assert!(status.success(), "python holder: {status}");
    let (s, _) = Storage::open_path(&path, Options::default()).expect("open after python closed");
    assert_eq!(s.load(Oid::new(1)).expect("load").0, Bytes::from_static(b"written by python"));
    s.close().expect("close");
}
