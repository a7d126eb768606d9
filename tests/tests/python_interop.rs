//! Proves the Python interop harness: the venv holds exactly the pinned ZODB and ZEO, and the
//! scripts in `tests/python/` write, check and describe a real FileStorage.
//!
//! Comparing `dump_fs.py`'s document with one produced by zeoraid's own storage engine is left
//! to the engine's tests; [`dump`] and [`normalized`] are meant to be reused there.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use zeoraid_tests::python::{requirements_path, PythonEnv, PythonError};

/// A directory under cargo's per-workspace scratch directory, removed when the test passed.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(name: &str) -> ScratchDir {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("python_interop-{}-{name}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).expect("remove a stale scratch directory");
        }
        fs::create_dir_all(&dir).expect("create the scratch directory");
        ScratchDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn stdout_json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("the script's stdout is not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout))
    })
}

/// `name==version` lines of the requirements file, by normalized name.
fn pins() -> BTreeMap<String, String> {
    let text = fs::read_to_string(requirements_path()).expect("read requirements.txt");
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, version) = line
                .split_once("==")
                .unwrap_or_else(|| panic!("requirements.txt: {line:?} is not pinned with =="));
            (normalize(name), version.trim().to_string())
        })
        .collect()
}

/// PEP 503 name normalization.
fn normalize(name: &str) -> String {
    let mut out = String::new();
    for part in name.trim().split(['-', '_', '.']).filter(|part| !part.is_empty()) {
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&part.to_lowercase());
    }
    out
}

/// Every distribution installed in the venv, with its version, by normalized name.
fn installed() -> BTreeMap<String, String> {
    let out = PythonEnv::get()
        .run_code(
            "import json, importlib.metadata as m\n\
             print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
            &[],
        )
        .expect("list the venv's distributions");
    let Value::Object(map) = stdout_json(&out) else {
        panic!("expected a JSON object");
    };
    map.into_iter()
        .map(|(name, version)| (normalize(&name), version.as_str().expect("a version string").to_string()))
        .collect()
}

#[test]
fn venv_has_the_pinned_versions() {
    let env = PythonEnv::get();
    if let Some(took) = env.setup_duration() {
        eprintln!("created {} in {:.1} s", env.venv_dir().display(), took.as_secs_f64());
    }
    let pins = pins();
    assert_eq!(pins.get("zodb").map(String::as_str), Some("6.4"));
    assert_eq!(pins.get("zeo").map(String::as_str), Some("6.2"));
    let installed = installed();
    for (name, version) in &pins {
        assert_eq!(installed.get(name), Some(version), "{name} is pinned to {version}");
    }
    // And the modules themselves import, from the venv, with those versions.
    let out = env
        .run_code(
            "import json, sys, ZODB, ZEO, BTrees, persistent, transaction, msgpack\n\
             from importlib.metadata import version\n\
             print(json.dumps({'ZODB': version('ZODB'), 'ZEO': version('ZEO'),\n\
                               'prefix': sys.prefix, 'zodb_file': ZODB.__file__}))",
            &[],
        )
        .expect("import ZODB and ZEO");
    let versions = stdout_json(&out);
    assert_eq!(versions["ZODB"], "6.4");
    assert_eq!(versions["ZEO"], "6.2");
    let zodb_file = versions["zodb_file"].as_str().expect("ZODB.__file__");
    assert!(
        Path::new(zodb_file).starts_with(env.venv_dir()),
        "ZODB is imported from {zodb_file}, not from the venv {}",
        env.venv_dir().display()
    );
}

#[test]
fn venv_pins_every_installed_distribution() {
    let pins = pins();
    let unpinned: Vec<String> = installed()
        .into_iter()
        .filter(|(name, _)| !pins.contains_key(name))
        .filter(|(name, _)| !matches!(name.as_str(), "pip" | "setuptools" | "wheel"))
        .map(|(name, version)| format!("{name}=={version}"))
        .collect();
    assert!(unpinned.is_empty(), "installed but not pinned in requirements.txt: {unpinned:?}");
}

#[test]
fn venv_is_reused_once_complete() {
    let env = PythonEnv::get();
    let python = std::env::var_os("ZEORAID_PYTHON").unwrap_or_else(|| "python3".into());
    let again =
        PythonEnv::create(&python, &requirements_path(), env.venv_dir().parent().expect("the target dir"))
            .expect("find the venv again");
    assert_eq!(again.venv_dir(), env.venv_dir());
    assert_eq!(again.setup_duration(), None, "a complete venv must not be rebuilt");
    assert!(env.venv_dir().join(".zeoraid-complete").is_file());
}

#[test]
fn concurrent_setups_build_the_venv_once() {
    // The same code path as the real venv, with a requirements file that installs nothing
    // (so that this test does not download anything).
    let scratch = ScratchDir::new("concurrent");
    let requirements = scratch.path().join("requirements.txt");
    fs::write(&requirements, "# installs nothing\n").expect("write requirements");
    let target = scratch.path().join("target");
    let python = std::env::var_os("ZEORAID_PYTHON").unwrap_or_else(|| "python3".into());
    let envs: Vec<PythonEnv> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..3).map(|_| s.spawn(|| PythonEnv::create(&python, &requirements, &target))).collect();
        handles.into_iter().map(|h| h.join().expect("no panic").unwrap_or_else(|e| panic!("{e}"))).collect()
    });
    let built = envs.iter().filter(|e| e.setup_duration().is_some()).count();
    assert_eq!(built, 1, "exactly one of the concurrent set-ups builds the venv");
    assert!(envs.iter().all(|e| e.venv_dir() == envs[0].venv_dir()));
    assert!(envs[0].python_path().exists());

    // A venv without its completion marker (a set-up that died) is rebuilt.
    fs::remove_file(envs[0].venv_dir().join(".zeoraid-complete")).expect("remove the marker");
    let rebuilt = PythonEnv::create(&python, &requirements, &target).expect("rebuild");
    assert!(rebuilt.setup_duration().is_some());
}

#[test]
fn a_missing_python_fails_loudly() {
    let scratch = ScratchDir::new("missing");
    let err = PythonEnv::create(OsStr::new("/nonexistent/python3"), &requirements_path(), scratch.path())
        .expect_err("no interpreter, no venv");
    assert!(matches!(err, PythonError::PythonMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("python3-venv"), "{err}");
}

#[test]
fn pip_failures_show_pips_stderr() {
    let scratch = ScratchDir::new("pipfail");
    let requirements = scratch.path().join("requirements.txt");
    // An invalid requirement line: pip refuses it before touching the network.
    fs::write(&requirements, "this is not a requirement ===\n").expect("write requirements");
    let python = std::env::var_os("ZEORAID_PYTHON").unwrap_or_else(|| "python3".into());
    let err =
        PythonEnv::create(&python, &requirements, &scratch.path().join("target")).expect_err("pip must fail");
    let PythonError::PipFailed { step, stderr, .. } = &err else {
        panic!("expected PipFailed, got {err:?}");
    };
    assert_eq!(*step, "install");
    assert!(!stderr.is_empty());
    let message = err.to_string();
    assert!(message.contains("pip's stderr"), "{message}");
    assert!(message.contains(stderr.trim()), "{message}");
}

#[test]
fn failing_scripts_report_their_output() {
    let scratch = ScratchDir::new("scriptfail");
    let script = scratch.path().join("fail.py");
    fs::write(&script, "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\nsys.exit(3)\n")
        .expect("write the script");
    let err =
        PythonEnv::get().run_script(&script, &[OsStr::new("an-argument")]).expect_err("the script exits 3");
    let PythonError::ScriptFailed { status, stdout, stderr, command } = &err else {
        panic!("expected ScriptFailed, got {err:?}");
    };
    assert_eq!(status.code(), Some(3));
    assert_eq!(stdout.trim(), "to stdout");
    assert_eq!(stderr.trim(), "to stderr");
    assert!(command.contains("fail.py an-argument"), "{command}");
    let message = err.to_string();
    assert!(message.contains("to stdout") && message.contains("to stderr"), "{message}");
}

/// One `make_fs.py` database per test process, shared read-only by the tests below.
struct Made {
    dir: PathBuf,
    summary: Value,
}

impl Made {
    fn data_fs(&self) -> PathBuf {
        self.dir.join("Data.fs")
    }

    fn blobs(&self) -> PathBuf {
        self.dir.join("blobs")
    }
}

fn make_fs(dir: &Path) -> Value {
    let out = PythonEnv::get()
        .run_script(Path::new("make_fs.py"), &[dir.as_os_str()])
        .unwrap_or_else(|e| panic!("{e}"));
    stdout_json(&out)
}

fn made() -> &'static Made {
    static MADE: OnceLock<Made> = OnceLock::new();
    MADE.get_or_init(|| {
        // Not a ScratchDir: it lives as long as the process. Later runs remove it.
        let parent = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python_interop-made");
        remove_dirs_of_dead_processes(&parent);
        let dir = parent.join(std::process::id().to_string());
        let _ = fs::remove_dir_all(&dir);
        let summary = make_fs(&dir);
        Made { dir, summary }
    })
}

/// Removes `parent/<pid>` directories of processes that are gone (Linux: no `/proc/<pid>`).
fn remove_dirs_of_dead_processes(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new("/proc/self").exists() && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// `dump_fs.py` of a database, parsed.
fn dump(data_fs: &Path, blobs: Option<&Path>) -> Value {
    let mut args = vec![data_fs.as_os_str()];
    if let Some(blobs) = blobs {
        args.push(OsStr::new("--blobs"));
        args.push(blobs.as_os_str());
    }
    let out = PythonEnv::get().run_script(Path::new("dump_fs.py"), &args).unwrap_or_else(|e| panic!("{e}"));
    stdout_json(&out)
}

fn check_fs(data_fs: &Path, blobs: Option<&Path>) -> Result<Value, PythonError> {
    let mut args = vec![data_fs.as_os_str()];
    if let Some(blobs) = blobs {
        args.push(OsStr::new("--blobs"));
        args.push(blobs.as_os_str());
    }
    PythonEnv::get().run_script(Path::new("check_fs.py"), &args).map(|out| stdout_json(&out))
}

fn is_tid(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn array<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v[key].as_array().unwrap_or_else(|| panic!("{key} is not an array"))
}

#[test]
fn make_fs_writes_a_file_that_zodbs_checks_accept() {
    let made = made();
    let summary = &made.summary;
    assert!(summary["transactions"].as_u64().expect("a count") >= 20);
    assert!(summary["transactions_by_status"]["p"].as_u64().expect("packed") >= 1);
    assert!(is_tid(&summary["last_transaction"]));

    let report = check_fs(&made.data_fs(), Some(&made.blobs())).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report["ok"], true);
    let checks: BTreeSet<&str> = array(&report, "checks").iter().filter_map(Value::as_str).collect();
    for check in ["fstest", "index", "iterator", "blobs", "fsrefs", "fsdump"] {
        assert!(checks.contains(check), "check {check} did not run: {report}");
    }
    assert_eq!(report["transactions"], summary["transactions"]);
}

#[test]
fn dump_fs_describes_everything_the_storage_answers() {
    let made = made();
    let doc = dump(&made.data_fs(), Some(&made.blobs()));

    let keys: BTreeSet<&str> = doc.as_object().expect("an object").keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "format",
        "last_transaction",
        "len",
        "size",
        "transactions",
        "objects",
        "undo_log",
        "record_iternext",
        "blobs",
    ]
    .into();
    assert_eq!(keys, expected);
    assert_eq!(doc["format"], "zeoraid-fsdump/1");
    assert_eq!(doc["last_transaction"], made.summary["last_transaction"]);
    let file_len = fs::metadata(made.data_fs()).expect("stat Data.fs").len();
    assert_eq!(doc["size"].as_u64(), Some(file_len));

    // Transactions: in tid order, packed ones first, then the undoable ones.
    let txns = array(&doc, "transactions");
    assert_eq!(txns.len() as u64, made.summary["transactions"].as_u64().expect("count"));
    assert!(txns.windows(2).all(|w| w[0]["tid"].as_str() < w[1]["tid"].as_str()));
    let statuses: Vec<&str> = txns.iter().filter_map(|t| t["status"].as_str()).collect();
    assert!(statuses.contains(&"p"), "no packed transaction: {statuses:?}");
    assert!(statuses.contains(&" "));
    let records: Vec<&Value> = txns.iter().flat_map(|t| array(t, "records")).collect();
    assert!(records.iter().any(|r| r["data"].is_null()), "no undone creation / deletion");
    assert!(records.iter().any(|r| is_tid(&r["data_txn"])), "no undo back-pointer");
    assert!(records.iter().any(|r| r["is_blob"] == true));
    assert!(records
        .iter()
        .all(|r| r["data"].is_null() || r["data"]["sha256"].as_str().map(str::len) == Some(64)));

    // Metadata: the non-ASCII description and the extension encodings survive.
    let descriptions: Vec<String> = txns
        .iter()
        .map(|t| {
            let hex = t["description"].as_str().expect("hex");
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
                .collect();
            String::from_utf8(bytes).expect("UTF-8 description")
        })
        .collect();
    assert!(descriptions.iter().any(|d| d.starts_with("Gr\u{f6}\u{df}e \u{e4}ndern")), "{descriptions:?}");
    let extensions: Vec<&Value> = txns.iter().map(|t| &t["extension"]).collect();
    assert!(extensions.iter().any(|e| e["raw"] == serde_json::json!({"bytes": "0001feff"})));
    assert!(extensions
        .iter()
        .any(|e| e["unicode"] == serde_json::json!({"str": "gr\u{fc}\u{df}e \u{2713}"})));

    // Objects: the deleted and undone ones answer POSKeyError, the others load.
    let objects = array(&doc, "objects");
    assert_eq!(doc["len"].as_u64(), Some(objects.len() as u64));
    let by_oid: BTreeMap<&str, &Value> =
        objects.iter().map(|o| (o["oid"].as_str().expect("oid"), o)).collect();
    let oid_of = |name: &str| made.summary["objects"][name].as_str().expect("an oid");
    for gone in ["orphan", "doomed2"] {
        let o = by_oid[oid_of(gone)];
        assert_eq!(o["load"]["error"], "POSKeyError", "{gone}: {o}");
        assert_eq!(o["load_before_max"]["error"], "POSKeyError", "{gone}");
        assert!(array(o, "history").len() >= 2, "{gone}");
    }
    assert!(
        !by_oid.contains_key(oid_of("doomed")),
        "the pack's GC removes the object whose creation was undone before the pack time"
    );
    let a = by_oid[oid_of("a")];
    assert!(array(a, "revisions").len() >= 5);
    assert_eq!(a["load"]["tid"], a["get_tid"]["tid"]);
    assert_eq!(a["load_before_max"]["end"], Value::Null);
    assert!(array(a, "history").iter().all(|h| h["time"].is_f64()));

    // The undo log stops at the packed transactions; it holds the undo transactions too.
    let undo_log = array(&doc, "undo_log");
    let undoable = statuses.iter().filter(|s| **s == " ").count();
    assert_eq!(undo_log.len(), undoable);
    assert_eq!(undo_log[0]["tid"], doc["last_transaction"]);
    assert!(undo_log.iter().any(|e| {
        e["description"]
            == Value::String("undo the second mistake".bytes().map(|b| format!("{b:02x}")).collect())
    }));

    // record_iternext visits every oid of the index, the unloadable ones as errors.
    let walk = array(&doc, "record_iternext");
    assert_eq!(walk.len(), objects.len());
    assert!(walk.iter().any(|s| s["error"] == "POSKeyError"));

    // Blobs: several revisions of x and y, every blob record with data has its file.
    let files = array(&doc["blobs"], "files");
    assert_eq!(doc["blobs"]["layout"], "bushy");
    let x_revisions = files.iter().filter(|f| f["oid"].as_str() == Some(oid_of("x"))).count();
    assert!(x_revisions >= 3, "{files:?}");
    assert!(files.iter().all(|f| f["sha256"].as_str().map(str::len) == Some(64)));
    let blob_files: BTreeSet<(&str, &str)> =
        files.iter().map(|f| (f["oid"].as_str().expect("oid"), f["tid"].as_str().expect("tid"))).collect();
    for r in records.iter().filter(|r| r["is_blob"] == true && r["data_txn"].is_null()) {
        let key = (r["oid"].as_str().expect("oid"), r["tid"].as_str().expect("tid"));
        assert!(blob_files.contains(&key), "no blob file for {key:?}");
    }

    // Without --blobs the blobs are null and the rest is the same document.
    let mut without = dump(&made.data_fs(), None);
    assert_eq!(without["blobs"], Value::Null);
    without["blobs"] = doc["blobs"].clone();
    assert_eq!(without, doc);
}

#[test]
fn check_fs_rejects_damaged_files() {
    let made = made();
    let scratch = ScratchDir::new("damaged");
    let copy = scratch.path().join("Data.fs");
    let bytes = fs::read(made.data_fs()).expect("read Data.fs");

    // Cut in the middle of a transaction.
    fs::write(&copy, &bytes[..bytes.len() * 2 / 3]).expect("write the truncated copy");
    let err = check_fs(&copy, None).expect_err("a truncated file must fail");
    assert!(err.to_string().contains("fstest"), "{err}");

    // A blob file gone.
    fs::write(&copy, &bytes).expect("write the copy");
    let blobs = scratch.path().join("blobs");
    copy_dir(&made.blobs(), &blobs);
    let doc = dump(&copy, Some(&blobs));
    let first = array(&doc["blobs"], "files")[0]["path"].as_str().expect("a path").to_string();
    check_fs(&copy, Some(&blobs)).unwrap_or_else(|e| panic!("the intact copy must pass: {e}"));
    fs::remove_file(blobs.join(&first)).expect("remove a blob file");
    let err = check_fs(&copy, Some(&blobs)).expect_err("a missing blob file must fail");
    assert!(err.to_string().contains("no blob file"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A dump with every tid replaced by its rank among the dump's transaction ids (`T0`, `T1`,
/// ...) and the values that only restate a tid or the wall clock removed: what stays is the
/// content, which must not change from one run of `make_fs.py` to the next.
fn normalized(doc: &Value) -> Value {
    let tids: BTreeMap<String, usize> = array(doc, "transactions")
        .iter()
        .enumerate()
        .map(|(i, t)| (t["tid"].as_str().expect("tid").to_string(), i))
        .collect();
    fn walk(v: &Value, tids: &BTreeMap<String, usize>) -> Value {
        match v {
            Value::String(s) => match tids.get(s) {
                Some(i) => Value::String(format!("T{i}")),
                None => v.clone(),
            },
            Value::Array(items) => Value::Array(items.iter().map(|x| walk(x, tids)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    // time: the wall clock; id: base64 of a tid; path: names the tid
                    .filter(|(k, _)| !matches!(k.as_str(), "time" | "id" | "path"))
                    .map(|(k, x)| (k.clone(), walk(x, tids)))
                    .collect(),
            ),
            _ => v.clone(),
        }
    }
    walk(doc, &tids)
}

#[test]
fn make_fs_is_deterministic_in_content() {
    let made = made();
    let scratch = ScratchDir::new("again");
    let dir = scratch.path().join("db");
    make_fs(&dir);
    let first = normalized(&dump(&made.data_fs(), Some(&made.blobs())));
    let second = normalized(&dump(&dir.join("Data.fs"), Some(&dir.join("blobs"))));
    assert_eq!(first, second);
}

#[test]
fn bench_fs_runs_and_reports_every_figure() {
    // A smoke test with tiny figures; the real runs are `python bench_fs.py [--quick]`.
    let scratch = ScratchDir::new("bench");
    let out = PythonEnv::get()
        .run_script(
            Path::new("bench_fs.py"),
            &[
                OsStr::new("2000"),
                OsStr::new("--seconds"),
                OsStr::new("0.1"),
                OsStr::new("--lookups"),
                OsStr::new("1000"),
                OsStr::new("--dir"),
                scratch.path().as_os_str(),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let report = stdout_json(&out);
    let commits = array(&report, "commits");
    assert_eq!(commits.len(), 4);
    for c in commits {
        assert!(c["commits_per_s"].as_f64().expect("a rate") > 0.0, "{c}");
        if c["fsync"] == true {
            assert_eq!(c["fsync_calls"], c["commits"], "one fsync per commit: {c}");
        }
    }
    assert_eq!(report["read_db"]["objects"], 2000);
    assert!(report["load_before"]["per_s"].as_f64().expect("a rate") > 0.0);
    assert_eq!(report["open"]["with_index"]["used_index"], true);
    assert_eq!(report["open"]["without_index"]["used_index"], false);
    assert_eq!(report["open"]["without_index"]["len"], 2000);
}
