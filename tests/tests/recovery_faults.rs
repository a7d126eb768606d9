//! Whole-process failure tests of recovery on loopback (issue 6): a recovery is interrupted by
//! a fault in the middle of its copy, ends in a consistent state, and a later `recover`
//! succeeds; every backend then holds the same history record by record.
//!
//! * the *target* is killed (`kill -9` of its stock `runzeo`): the recovery fails, the target is
//!   degraded with the reason; once it is back, `recover --wait` makes it optimal;
//! * the *source* is killed (a RAID of three stock backends): the recovery goes on from the other
//!   optimal backend and ends optimal; the killed one is recovered afterwards;
//! * *zeoraid itself* is killed (`kill -9`) and restarted: the persisted recovery resumes by
//!   itself and ends optimal;
//! * a local backend whose history *diverged* (a transaction written into its `Data.fs` behind
//!   the RAID's back) is rebuilt from scratch by `recover`, with nothing left of the old file.
//!
//! The copies are throttled (`--rate-txns`) so that the fault lands in the middle of one.

use std::time::Duration;

use zeoraid_core::wire::Encoding;
use zeoraid_tests::history::build_history;
use zeoraid_tests::operator::{backend, details_json, ok, recover_wait, status, wait_details};
use zeoraid_tests::raid::{BackendKind, RaidSpec};
use zeoraid_tests::server::{run_with_deadline, ServerOpts, ServerProcess};

/// Transactions of the history.
const HISTORY: u64 = 1_500;
/// The throttled copy's rate: the history takes about ten seconds.
const RATE: &str = "150";
/// Transactions copied before the fault.
const BEFORE_FAULT: u64 = 150;
/// How long anything here may take.
const LIMIT: Duration = Duration::from_secs(120);

fn start(spec: RaidSpec) -> ServerProcess {
    ServerProcess::start(spec.kind(), ServerOpts::new(Encoding::Pickle)).unwrap_or_else(|e| panic!("{e}"))
}

/// `target` out, a history built without it, then its throttled recovery started.
fn history_then_recover(raid: &ServerProcess, target: &str, undo_blobs: bool) {
    let out = ok(raid, &["disable", target]);
    assert!(out.contains(&format!("{target} disabled")), "{out}");
    let h = build_history(raid, HISTORY, undo_blobs).unwrap_or_else(|e| panic!("{e}"));
    assert!(h.transactions >= HISTORY, "{h:?}");
    let out = ok(raid, &["recover", target, "--rate-txns", RATE]);
    assert!(out.starts_with(&format!("recovery of {target} started")), "{out}");
    wait_details(raid, LIMIT, "the copy under way", |d| {
        d["storages"][0]["recovery"]["txns_copied"].as_u64().is_some_and(|n| n >= BEFORE_FAULT)
    });
}

/// Waits until the RAID sees `name` connected again.
fn wait_connected(raid: &ServerProcess, name: &str) {
    wait_details(raid, LIMIT, &format!("{name} reconnected"), |d| backend(d, name)["connected"] == true);
}

/// `recover NAME --wait` must end optimal.
fn recover_ok(raid: &ServerProcess, name: &str) {
    let out = run_with_deadline(recover_wait(raid, &[name]), LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "recover {name} --wait failed ({})\n{stdout}{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        raid.log_tail()
    );
}

/// Every backend holds the same history, of at least `min` transactions, with blobs.
fn check_mirrors(raid: &mut ServerProcess, names: &[&str], min: u64) {
    let report = raid.check_mirrors(min).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.backends, names, "{report:?}");
    assert!(report.blobs > 0, "{report:?}");
}

#[test]
fn killing_the_target_mid_copy_degrades_it_and_a_later_recovery_succeeds() {
    let mut raid = start(RaidSpec::zeo());
    history_then_recover(&raid, "b", false);
    raid.backend_server("b").expect("b runs runzeo").kill().unwrap_or_else(|e| panic!("{e}"));
    let d = wait_details(&raid, LIMIT, "the recovery ended", |d| d["storages"][0]["recovery"].is_null());
    let end = &d["storages"][0]["last_recovery"];
    assert_eq!((end["target"].as_str(), end["ok"].as_bool()), (Some("b"), Some(false)), "{end}");
    assert!(end["failure"].as_str().is_some_and(|f| f.contains("target")), "{end}");
    assert_eq!(backend(&d, "b")["state"], "degraded", "{d:#}");
    assert_eq!(status(&raid), ("degraded".to_string(), Some(2)));
    // Commits still work (a stays optimal) ... and b comes back and is recovered.
    raid.backend_server("b").expect("b").restart().unwrap_or_else(|e| panic!("{e}"));
    wait_connected(&raid, "b");
    recover_ok(&raid, "b");
    assert_eq!(status(&raid), ("optimal".to_string(), Some(0)));
    check_mirrors(&mut raid, &["a", "b"], HISTORY);
}

#[test]
fn killing_the_source_mid_copy_moves_the_recovery_to_another_source() {
    let spec = RaidSpec { label: "raid-zeo3", backends: vec![BackendKind::Runzeo; 3], ..RaidSpec::zeo() };
    let mut raid = start(spec);
    history_then_recover(&raid, "c", false);
    let d = details_json(&raid);
    assert_eq!(d["storages"][0]["recovery"]["source"], "a", "{d:#}");
    raid.backend_server("a").expect("a runs runzeo").kill().unwrap_or_else(|e| panic!("{e}"));
    let d = wait_details(&raid, LIMIT, "the recovery ended", |d| d["storages"][0]["recovery"].is_null());
    let end = &d["storages"][0]["last_recovery"];
    assert_eq!((end["target"].as_str(), end["ok"].as_bool()), (Some("c"), Some(true)), "{end}");
    assert_eq!(backend(&d, "c")["state"], "optimal", "{d:#}");
    assert_eq!(backend(&d, "a")["state"], "degraded", "{d:#}");
    raid.backend_server("a").expect("a").restart().unwrap_or_else(|e| panic!("{e}"));
    wait_connected(&raid, "a");
    recover_ok(&raid, "a");
    assert_eq!(status(&raid), ("optimal".to_string(), Some(0)));
    check_mirrors(&mut raid, &["a", "b", "c"], HISTORY);
}

#[test]
fn killing_zeoraid_mid_recovery_resumes_it_after_the_restart() {
    let mut raid = start(RaidSpec::local());
    history_then_recover(&raid, "b", true);
    // Let a progress save happen (every 2 s of copying), then kill -9 and start again.
    std::thread::sleep(Duration::from_millis(2_500));
    raid.kill().unwrap_or_else(|e| panic!("{e}"));
    raid.restart().unwrap_or_else(|e| panic!("{e}"));
    let (word, code) = status(&raid);
    assert!(word == "recovering" || word == "optimal", "after the restart: {word} ({code:?})");
    let d =
        wait_details(&raid, LIMIT, "the resumed recovery ended", |d| d["storages"][0]["recovery"].is_null());
    let end = &d["storages"][0]["last_recovery"];
    assert_eq!((end["target"].as_str(), end["ok"].as_bool()), (Some("b"), Some(true)), "{end}");
    // It resumed: fewer transactions copied after the restart than the whole history.
    assert!(end["txns_copied"].as_u64().is_some_and(|n| n < HISTORY), "{end}");
    assert_eq!(status(&raid), ("optimal".to_string(), Some(0)));
    check_mirrors(&mut raid, &["a", "b"], HISTORY);
}

/// Python: commits one transaction of its own straight into a FileStorage (argv: Data.fs, blob
/// directory), so that the backend's history diverges from the RAID's.
const DIVERGE: &str = r#"
import sys, transaction, ZODB, ZODB.FileStorage
st = ZODB.FileStorage.FileStorage(sys.argv[1], blob_dir=sys.argv[2])
db = ZODB.DB(st)
with db.transaction("diverging") as conn:
    conn.root()["not-from-the-raid"] = 1
db.close()
"#;

#[test]
fn a_local_backend_that_diverged_is_rebuilt_from_scratch() {
    let mut raid = start(RaidSpec::local());
    let h = build_history(&raid, HISTORY, true).unwrap_or_else(|e| panic!("{e}"));
    assert!(h.transactions >= HISTORY, "{h:?}");
    ok(&raid, &["disable", "b"]);
    // zeoraid stopped, b gets a transaction the RAID never saw; more commits go to a only.
    raid.stop().unwrap_or_else(|e| panic!("{e}"));
    let b = raid.backends().iter().find(|x| x.name == "b").expect("b");
    let (data, blobs) = (b.data.clone(), b.blobs.clone());
    let mut cmd = zeoraid_tests::python::PythonEnv::get().command();
    cmd.arg("-c").arg(DIVERGE).arg(&data).arg(&blobs);
    let out = run_with_deadline(cmd, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    raid.restart().unwrap_or_else(|e| panic!("{e}"));
    let d = details_json(&raid);
    assert_eq!(backend(&d, "b")["state"], "disabled", "the restart keeps b out: {d:#}");
    build_history(&raid, 200, false).unwrap_or_else(|e| panic!("{e}"));
    recover_ok(&raid, "b");
    let text = raid.log_tail();
    assert!(text.contains("diverges"), "the log says why b is rebuilt:\n{text}");
    assert_eq!(status(&raid), ("optimal".to_string(), Some(0)));
    check_mirrors(&mut raid, &["a", "b"], 200); // the second history packed most of the first away
                                                // The old file is gone, no rebuild leftovers beside it.
    let dir = data.parent().expect("a directory");
    let names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!names.iter().any(|n| n.contains(".rebuild") || n.ends_with(".old")), "{names:?}");
}

/// Python: a crash between vote and finish. Votes a transaction on the FileStorage (argv:
/// Data.fs, blob directory), prints its tid in hex and dies without finishing it.
const CRASH_AFTER_VOTE: &str = r#"
import os, sys, ZODB.FileStorage
from ZODB.Connection import TransactionMetaData
from ZODB.utils import z64
st = ZODB.FileStorage.FileStorage(sys.argv[1], blob_dir=sys.argv[2])
t = TransactionMetaData()
st.tpc_begin(t)
data, serial = st.load(z64)
st.store(z64, serial, data, '', t)
st.tpc_vote(t)
print(st._tid.hex(), flush=True)
os._exit(0)
"#;

#[test]
fn a_stock_backend_that_names_a_transaction_it_dropped_in_a_crash_is_taken_for_what_it_holds() {
    // Reopened after such a crash, a FileStorage cuts the unfinished transaction off its file
    // but names it as its last transaction (ZODB 6.4). Taken at its word, b would look level
    // with a (or ahead of it); its recovery once failed reading b ("seek of closed file").
    let mut raid = start(RaidSpec::zeo());
    build_history(&raid, 30, false).unwrap_or_else(|e| panic!("{e}"));
    let d = details_json(&raid);
    let last = backend(&d, "a")["last_tid"].as_str().expect("a's last tid").to_owned();
    assert_eq!(backend(&d, "b")["last_tid"].as_str(), Some(last.as_str()), "{d:#}");
    raid.backend_server("b").expect("b runs runzeo").stop().unwrap_or_else(|e| panic!("{e}"));
    wait_details(&raid, LIMIT, "b disconnected", |d| backend(d, "b")["connected"] == false);
    let b = raid.backends().iter().find(|x| x.name == "b").expect("b");
    let (data, blobs) = (b.data.clone(), b.blobs.clone());
    let mut cmd = zeoraid_tests::python::PythonEnv::get().command();
    cmd.arg("-c").arg(CRASH_AFTER_VOTE).arg(&data).arg(&blobs);
    let out = run_with_deadline(cmd, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let dropped = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(dropped.len() == 16 && dropped > last, "voted {dropped:?} after {last}: {out:?}");
    raid.backend_server("b").expect("b").restart().unwrap_or_else(|e| panic!("{e}"));
    wait_connected(&raid, "b");
    let d = details_json(&raid);
    assert_eq!(backend(&d, "b")["last_tid"].as_str(), Some(last.as_str()), "not {dropped}: {d:#}");
    let text = raid.log_tail();
    assert!(text.contains("its history ends at"), "the log says what b claimed:\n{text}");
    assert_eq!(backend(&d, "b")["state"], "degraded", "{d:#}");
    recover_ok(&raid, "b");
    assert_eq!(status(&raid), ("optimal".to_string(), Some(0)));
    check_mirrors(&mut raid, &["a", "b"], 30);
}
