//! Real Python ZODB/ZEO clients (ZEO 6.2's `ClientStorage`, ZODB 6.4's `DB`) against a ZEO
//! server process, in both encodings: one test per scenario of `tests/python/zeo_client.py` and
//! encoding, each with its own server process on its own port and data directory.
//!
//! This module is shared by three test binaries, which differ only in the server they run:
//! * `zeo_interop`: the default `zeoraid serve` (a RAID of two local storages), or the server
//!   `ZEORAID_INTEROP_SERVER` names: `runzeo` (stock ZEO in client-conflict-resolution mode, the
//!   mode zeoraid implements, which checks the scenarios themselves), `zeoraid`, `raid-local`,
//!   `raid-zeo` or `raid-mixed` (see `zeoraid_tests::raid`);
//! * `raid_zeo_interop`: a RAID of two stock `runzeo` backends;
//! * `raid_mixed_interop`: a RAID of one local and one `runzeo` backend.
//!
//! Each scenario asserts what a ZODB user sees (values, errors, history, undo log, blob contents,
//! cache verification); see the docstrings in `zeo_client.py`. After each test every server it
//! started is checked with `ServerProcess::check_mirrors`: a RAID is still optimal, and once
//! everything is stopped, every backend holds the same history (transaction by transaction,
//! record by record, blob by blob) with every transaction the front reported.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use zeoraid_core::wire::Encoding;
use zeoraid_tests::python::{scripts_dir, PythonEnv};
use zeoraid_tests::raid::RaidSpec;
use zeoraid_tests::server::{run_with_deadline, zeoraid_binary, ServerKind, ServerOpts, ServerProcess};

/// The server the scenarios run against: the binary's own choice ([`crate::SERVER`]), else
/// `ZEORAID_INTEROP_SERVER`, else the default `zeoraid serve`.
fn server_under_test() -> ServerKind {
    let env = std::env::var("ZEORAID_INTEROP_SERVER").ok();
    match crate::SERVER.or(env.as_deref()) {
        Some("runzeo") => ServerKind::Runzeo,
        None | Some("zeoraid") => ServerKind::Zeoraid { binary: zeoraid_binary().to_path_buf() },
        Some(name) => match RaidSpec::from_name(name) {
            Some(spec) => spec.kind(),
            None => panic!(
                "ZEORAID_INTEROP_SERVER={name:?}: expected runzeo, zeoraid, raid-local, raid-zeo or raid-mixed"
            ),
        },
    }
}

/// A scenario's hard limit (the script has its own, shorter one that dumps its threads).
const CLIENT_DEADLINE: Duration = Duration::from_secs(120);

fn start(opts: ServerOpts) -> ServerProcess {
    let kind = server_under_test();
    ServerProcess::start(kind, opts).unwrap_or_else(|e| panic!("{e}"))
}

/// The check after a scenario (see the module documentation); stops the server.
fn finish(mut server: ServerProcess) {
    let report = server.check_mirrors(1).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{}: backends {:?} identical: {} transactions, {} records, {} blob files; notes: {:?}",
        server.kind().name(),
        report.backends,
        report.transactions,
        report.records,
        report.blobs,
        report.notes
    );
}

fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Pickle => "pickle",
        Encoding::Msgpack => "msgpack",
    }
}

/// Runs `zeo_client.py SCENARIO ENCODING ADDRESS ARGS...` and fails the test when it fails.
fn run_client(server: &ServerProcess, scenario: &str, args: &[&OsStr]) -> String {
    let encoding = encoding_name(server.opts().encoding);
    let mut cmd = PythonEnv::get().command();
    cmd.arg(scripts_dir().join("zeo_client.py"))
        .arg(scenario)
        .arg(encoding)
        .arg(server.address_arg())
        .args(args);
    let out = run_with_deadline(cmd, CLIENT_DEADLINE)
        .unwrap_or_else(|e| panic!("scenario {scenario} ({encoding}) against {}: {e}", server.kind().name()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scenario {scenario} ({encoding}) against {} failed ({})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        server.kind().name(),
        out.status
    );
    let ok = format!("ok {scenario} ({encoding})");
    assert!(stdout.contains(&ok), "scenario {scenario} exited 0 without saying {ok:?}:\n{stdout}\n{stderr}");
    stdout
}

/// A directory for the clients' files (blob caches, persistent caches, copies): inside the
/// server's scratch directory, so it is kept with the server's logs when a test fails.
fn client_dir(server: &ServerProcess, name: &str) -> std::path::PathBuf {
    let dir = server.dir().join("clients").join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// One scenario with one server, no extra arguments.
fn simple(scenario: &str, encoding: Encoding) {
    let server = start(ServerOpts::new(encoding));
    run_client(&server, scenario, &[]);
    finish(server);
}

fn blobs(encoding: Encoding) {
    let server = start(ServerOpts::new(encoding));
    let work = client_dir(&server, "blobs");
    run_client(&server, "blobs", &[work.as_os_str()]);
    finish(server);
}

fn copy(encoding: Encoding) {
    let source = start(ServerOpts::new(encoding));
    let fresh = start(ServerOpts::new(encoding));
    let work = client_dir(&source, "copy");
    run_client(&source, "copy", &[OsStr::new(&fresh.address_arg()), work.as_os_str()]);
    finish(source);
    finish(fresh);
}

fn readonly_server(encoding: Encoding) {
    let mut server = start(ServerOpts::new(encoding));
    run_client(&server, "readonly_server_prepare", &[]);
    let data = server.data_files();
    assert!(!data.is_empty(), "the {} server has no Data.fs", server.kind().name());
    let before: Vec<Vec<u8>> = data.iter().map(|d| file_bytes(d)).collect();
    server
        .restart_with(ServerOpts { read_only: true, ..ServerOpts::new(encoding) })
        .unwrap_or_else(|e| panic!("{e}"));
    run_client(&server, "readonly_server_check", &[]);
    server.stop_all().unwrap_or_else(|e| panic!("{e}"));
    for (path, before) in data.iter().zip(before) {
        assert!(file_bytes(path) == before, "{} changed while the server was read-only", path.display());
    }
    finish(server);
}

fn persistent_cache(encoding: Encoding) {
    let mut server = start(ServerOpts::new(encoding));
    let var = client_dir(&server, "var");
    run_client(&server, "cache_phase1", &[var.as_os_str()]);
    let status = server.stop().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        status.is_some_and(|s| s.success()),
        "the server did not exit cleanly on SIGTERM: {status:?}\n{}",
        server.log_tail()
    );
    server.restart().unwrap_or_else(|e| panic!("{e}"));
    run_client(&server, "cache_phase2", &[]);
    // Restart once more, so the reconnecting client's getInvalidations is answered by a server
    // that did not see the commits it reports (it must rebuild them from the storage).
    server.restart().unwrap_or_else(|e| panic!("{e}"));
    run_client(&server, "cache_phase3", &[var.as_os_str()]);
    finish(server);
}

fn reconnect(encoding: Encoding) {
    let mut server = start(ServerOpts::new(encoding));
    let sync = client_dir(&server, "sync");
    let background = {
        let (address, sync) = (server.address_arg(), sync.clone());
        let mut cmd = PythonEnv::get().command();
        cmd.arg(scripts_dir().join("zeo_client.py"))
            .args(["reconnect", encoding_name(encoding), &address])
            .arg(&sync);
        std::thread::spawn(move || run_with_deadline(cmd, CLIENT_DEADLINE))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !sync.join("ready").exists() {
        if background.is_finished() {
            match background.join().expect("the client thread") {
                Ok(out) => panic!(
                    "the reconnect client ended before it was ready ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => panic!("the reconnect client: {e}"),
            }
        }
        assert!(std::time::Instant::now() < deadline, "the reconnect client was not ready within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.restart().unwrap_or_else(|e| panic!("{e}"));
    run_client(&server, "cache_phase2", &[]);
    std::fs::write(sync.join("go"), b"").expect("write the go file");
    let out =
        background.join().expect("the client thread").unwrap_or_else(|e| panic!("scenario reconnect: {e}"));
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok reconnect"),
        "scenario reconnect failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    finish(server);
}

fn lock_timeout(encoding: Encoding) {
    let opts = ServerOpts { transaction_timeout: Some(Duration::from_secs(1)), ..ServerOpts::new(encoding) };
    let server = start(opts);
    run_client(&server, "lock_timeout", &[]);
    finish(server);
}

/// Stock ZEO 6.2 fails `lock_timeout`: on a transaction timeout its TimeoutThread closes the
/// stalled client's connection with `close()`, which marks the close as anticipated, so
/// `connection_lost` skips `notify_disconnected` and the transaction is never aborted: the
/// commit lock stays taken and every later vote waits forever. zeoraid must release the lock.
const STOCK_LOCK_TIMEOUT_BUG: &str =
    "stock ZEO 6.2 never releases the commit lock after a transaction timeout; \
     run with --ignored against zeoraid (ZEORAID_INTEROP_SERVER=zeoraid)";

#[test]
fn lock_timeout_pickle() {
    assert_ne!(server_under_test(), ServerKind::Runzeo, "{STOCK_LOCK_TIMEOUT_BUG}");
    lock_timeout(Encoding::Pickle);
}

#[test]
fn lock_timeout_msgpack() {
    assert_ne!(server_under_test(), ServerKind::Runzeo, "{STOCK_LOCK_TIMEOUT_BUG}");
    lock_timeout(Encoding::Msgpack);
}

/// The harness itself: a scenario whose assertion fails fails the test, with the script's
/// message (here `root` on a database that is no longer fresh).
#[test]
fn a_failing_scenario_fails_its_test() {
    let server = start(ServerOpts::new(Encoding::Pickle));
    run_client(&server, "root", &[]);
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_client(&server, "root", &[])));
    let payload = again.expect_err("`root` on a database that has data must fail");
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    assert!(message.contains("FAILED root (pickle): the fresh root is empty"), "{message}");
    assert!(message.contains("expected: []"), "{message}");
    finish(server);
}

/// What the `pack` scenario expects of garbage: zeoraid's storages pack without garbage
/// collection (see README: pack), stock ZEO collects. A RAID's stock backends run with
/// `pack-gc false` (README: a RAID's backends must pack alike), so every RAID packs without GC.
fn pack_mode(kind: &ServerKind) -> &'static str {
    match kind {
        ServerKind::Runzeo => "gc",
        ServerKind::Raid { .. } | ServerKind::Zeoraid { .. } => "nogc",
    }
}

fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `mod $name { pickle, msgpack }`: the scenario once per encoding.
macro_rules! both_encodings {
    ($($name:ident => $run:expr;)*) => {$(
        mod $name {
            use super::*;

            #[test]
            fn pickle() {
                ($run)(Encoding::Pickle)
            }

            #[test]
            fn msgpack() {
                ($run)(Encoding::Msgpack)
            }
        }
    )*};
}

both_encodings! {
    root => |e| simple("root", e);
    invalidations => |e| simple("invalidations", e);
    conflict_resolved => |e| simple("conflict_resolved", e);
    conflict_unresolved => |e| simple("conflict_unresolved", e);
    poskeyerror => |e| simple("poskeyerror", e);
    readcurrent => |e| simple("readcurrent", e);
    undo => |e| simple("undo", e);
    history => |e| simple("history", e);
    pack => |e| {
        let mut server = start(ServerOpts::new(e));
        run_client(&server, "pack", &[OsStr::new(pack_mode(server.kind()))]);
        if server.kind().name() == "raid-mixed" {
            // Known divergence (README, "Known gaps"): with a pack time later than the last
            // transaction, FileStorage also packs that last transaction (status 'p', the
            // revisions it supersedes dropped) while zeoraid's pack keeps it as it is. The
            // clients saw the same answers above; the mirrors differ at the pack boundary.
            // This fails once the two packs agree: then use `finish` here too.
            let report = server.check_mirrors(1);
            assert!(
                matches!(&report, Err(e) if e.to_string().contains("differ")),
                "the mixed RAID's backends now pack alike: {report:?}"
            );
        } else {
            finish(server);
        }
    };
    readonly_client => |e| simple("readonly_client", e);
    many_clients => |e| simple("many", e);
    blobs => blobs;
    copy_transactions => copy;
    readonly_server => readonly_server;
    persistent_cache => persistent_cache;
    reconnect => reconnect;
}
