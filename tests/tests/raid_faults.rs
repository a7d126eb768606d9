//! Whole-process fault tests on loopback: a RAID of two stock ZEO 6.2 `runzeo` backends under a
//! stream of commits from several stock ZEO clients (tests/python/commit_stream.py, four
//! ClientStorage connections committing as fast as they can), and one backend fails:
//!
//! * `kill -9`: no client sees an error, `zeoraid details` shows the backend degraded with a
//!   reason within the call deadline, commits go on, and the other backend holds every
//!   acknowledged commit;
//! * `SIGSTOP` (a hung backend): the same, within the configured deadlines (measured); after
//!   `SIGCONT` the RAID shuts down cleanly;
//! * a RAID started while one backend is down (nothing listens on its port) serves within the
//!   connect deadline, with that backend degraded.
//!
//! The deadlines are short (call 2 s, write 3 s, connect 2 s) so the tests are quick; the
//! margin on top of them allows for a loaded 2-core CI machine.

use std::path::Path;
use std::time::{Duration, Instant};

use zeoraid_core::wire::Encoding;
use zeoraid_tests::raid::{compare_backends, BackendKind, RaidSpec};
use zeoraid_tests::server::{ServerOpts, ServerProcess};
use zeoraid_tests::stream::Stream;

const CALL: Duration = Duration::from_secs(2);
const WRITE: Duration = Duration::from_secs(3);
const CONNECT: Duration = Duration::from_secs(2);
/// What the machine may add to a deadline (scheduling, the admin poll interval).
const MARGIN: Duration = Duration::from_secs(2);
/// Clients in the commit stream.
const CLIENTS: u32 = 4;
/// Commits that must be acknowledged before the fault, and again after it.
const COMMITS: usize = 30;

fn spec(backends: Vec<BackendKind>) -> RaidSpec {
    RaidSpec { label: "raid-faults", backends, ..RaidSpec::zeo() }.with_timeouts(CALL, WRITE, CONNECT)
}

fn start(backends: Vec<BackendKind>) -> ServerProcess {
    ServerProcess::start(spec(backends).kind(), ServerOpts::new(Encoding::Pickle))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `zeoraid details` (it must succeed).
fn details(raid: &ServerProcess) -> String {
    let out = raid.admin(&["details"]).unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() || out.status.code() == Some(2),
        "zeoraid details failed ({})\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The line of `details` that describes backend `name`: its first word is the name, its last
/// column the reason (`BACKEND KIND STATE SINCE LAST-TID CONNECTED REASON`).
fn backend_row(details: &str, name: &str) -> Option<String> {
    details.lines().find(|l| l.split_whitespace().next() == Some(name)).map(str::to_owned)
}

/// Polls `details` until backend `name` is degraded; returns how long that took from `since`,
/// and its line (which must give a reason).
fn wait_degraded(raid: &ServerProcess, name: &str, since: Instant, limit: Duration) -> (Duration, String) {
    loop {
        let text = details(raid);
        if let Some(row) = backend_row(&text, name).filter(|r| r.contains("degraded")) {
            let took = since.elapsed();
            // The reason is the last column ("-" when there is none).
            assert!(!row.trim_end().ends_with(" -"), "no reason for {name} in details:\n{text}");
            return (took, row);
        }
        assert!(since.elapsed() < limit, "backend {name} not degraded within {limit:?}; details:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `zeoraid status`: its word and exit code.
fn status(raid: &ServerProcess) -> (String, Option<i32>) {
    let out = raid.admin(&["status"]).unwrap_or_else(|e| panic!("{e}"));
    (String::from_utf8_lossy(&out.stdout).trim().to_owned(), out.status.code())
}

/// The surviving backend holds every acknowledged commit (the RAID is stopped first).
fn survivor_has_everything(raid: &mut ServerProcess, survivor: &str, acknowledged: &Path, commits: usize) {
    raid.stop().unwrap_or_else(|e| panic!("{e}"));
    if let Some(server) = raid.backend_server(survivor) {
        server.stop().unwrap_or_else(|e| panic!("{e}"));
    }
    let mirror = raid.mirror(survivor).expect("the surviving backend");
    let report =
        compare_backends(&format!("backend {survivor}"), &[mirror], commits as u64, Some(acknowledged))
            .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "backend {survivor}: {} transactions, every acknowledged commit among them",
        report.transactions
    );
}

#[test]
fn kill_9_of_a_backend_during_commits() {
    let mut raid = start(vec![BackendKind::Runzeo, BackendKind::Runzeo]);
    assert_eq!(status(&raid), ("optimal".to_string(), Some(0)));
    let stream = Stream::start(&raid, CLIENTS);
    stream.wait_for(COMMITS, Duration::from_secs(60), "before the kill");

    let killed_at = Instant::now();
    raid.backend_server("b").expect("backend b").kill().unwrap_or_else(|e| panic!("{e}"));
    let before = stream.commits();
    let (took, row) = wait_degraded(&raid, "b", killed_at, CALL + MARGIN + Duration::from_secs(10));
    eprintln!("kill -9: b degraded after {took:?}: {row}");
    assert!(took <= CALL + MARGIN, "b degraded only after {took:?} (call deadline {CALL:?})");
    assert!(backend_row(&details(&raid), "a").is_some_and(|r| r.contains("optimal")), "{}", details(&raid));
    assert_eq!(status(&raid), ("degraded".to_string(), Some(2)));

    stream.wait_for(before + COMMITS, Duration::from_secs(60), "after the kill");
    let (commits, acknowledged) = stream.finish();
    survivor_has_everything(&mut raid, "a", &acknowledged, commits);
}

#[test]
fn sigstop_of_a_backend_during_commits() {
    let mut raid = start(vec![BackendKind::Runzeo, BackendKind::Runzeo]);
    let stream = Stream::start(&raid, CLIENTS);
    stream.wait_for(COMMITS, Duration::from_secs(60), "before the SIGSTOP");

    let stopped_at = Instant::now();
    raid.backend_server("b").expect("backend b").signal("STOP").unwrap_or_else(|e| panic!("{e}"));
    let before = stream.commits();
    let deadline = CALL.max(WRITE);
    let (took, row) = wait_degraded(&raid, "b", stopped_at, deadline + MARGIN + Duration::from_secs(30));
    eprintln!("SIGSTOP: b degraded after {took:?}: {row}");
    assert!(
        took <= deadline + MARGIN,
        "b degraded only after {took:?} (deadlines: call {CALL:?}, write {WRITE:?})"
    );
    assert_eq!(status(&raid), ("degraded".to_string(), Some(2)));

    stream.wait_for(before + COMMITS, Duration::from_secs(60), "after the SIGSTOP");
    let (commits, acknowledged) = stream.finish();
    raid.backend_server("b").expect("backend b").signal("CONT").unwrap_or_else(|e| panic!("{e}"));
    // Still serving after the hung backend woke up, and it stays degraded until recovered.
    assert!(backend_row(&details(&raid), "b").is_some_and(|r| r.contains("degraded")), "{}", details(&raid));
    let exit = raid.stop().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        exit.is_some_and(|s| s.success()),
        "zeoraid did not shut down cleanly: {exit:?}\n{}",
        raid.log_tail()
    );
    survivor_has_everything(&mut raid, "a", &acknowledged, commits);
}

#[test]
fn starting_with_a_backend_down() {
    let mut raid = start(vec![BackendKind::Runzeo, BackendKind::Unreachable]);
    let ready = raid.ready_after().expect("started");
    eprintln!("serving {ready:?} after the start with backend b down");
    assert!(ready <= CONNECT + MARGIN, "serving only after {ready:?} (connect deadline {CONNECT:?})");
    let text = details(&raid);
    assert!(backend_row(&text, "b").is_some_and(|r| r.contains("degraded")), "{text}");
    assert!(backend_row(&text, "a").is_some_and(|r| r.contains("optimal")), "{text}");
    assert_eq!(status(&raid), ("degraded".to_string(), Some(2)));

    // A client commits.
    let stream = Stream::start(&raid, 1);
    stream.wait_for(5, Duration::from_secs(30), "with b down");
    let (commits, acknowledged) = stream.finish();
    survivor_has_everything(&mut raid, "a", &acknowledged, commits);
}

/// The history check itself: two storages with different histories (the same scenario run
/// against two stock servers: other tids) are reported as different.
#[test]
fn the_history_check_sees_different_histories() {
    let mut histories = Vec::new();
    for _ in 0..2 {
        let mut server =
            ServerProcess::runzeo(ServerOpts::new(Encoding::Pickle)).unwrap_or_else(|e| panic!("{e}"));
        let stream = Stream::start(&server, 1);
        stream.wait_for(3, Duration::from_secs(30), "a stock server");
        stream.finish();
        server.stop().unwrap_or_else(|e| panic!("{e}"));
        histories.push(server);
    }
    let mirrors: Vec<_> = histories
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("s{i}"), s.dir().join("Data.fs"), s.dir().join("blobs")))
        .collect();
    let err = compare_backends("two stock servers", &mirrors, 1, None).expect_err("different histories");
    let text = err.to_string();
    assert!(text.contains("two stock servers differ") && text.contains("s1 vs s0"), "{text}");
    // Each one alone is consistent with itself.
    compare_backends("one stock server", &mirrors[..1], 3, None).unwrap_or_else(|e| panic!("{e}"));
}
