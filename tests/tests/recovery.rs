//! Whole-process recovery tests on loopback (issue 6), through the CLI as an operator runs it:
//!
//! 1. a database of at least 10,000 transactions is built through the RAID with stock ZEO
//!    clients (tests/python/build_history.py: bulk commits from several clients, blobs with
//!    several revisions, undo records with back-pointers, a pack);
//! 2. `zeoraid disable b`; three client processes keep committing (commit_stream.py, one
//!    client each, 20 commits/s); `zeoraid recover b --rate-txns R --wait` runs under that load
//!    and exits 0; meanwhile `status` says `recovering` (exit 1) and `details --json` shows the progress
//!    with the run's limit; the clients go on after the switch and saw no error;
//! 3. a new, empty backend `c` is added to the config, `zeoraid reload` adds it (degraded),
//!    `zeoraid recover c --wait` makes it optimal;
//! 4. every backend holds the same history record by record, back-pointers and blobs included,
//!    with every transaction the front lists ([`ServerProcess::check_mirrors`]).
//!
//! Once with local backends (blob revisions are undone too) and once with stock ZEO 6.2
//! backends (blob undo left out: stock ZEO has no restoreBlob, so a blob back-pointer copied to
//! a remote target becomes a plain blob record there).

use std::time::{Duration, Instant};

use zeoraid_core::wire::Encoding;
use zeoraid_tests::history::build_history;
use zeoraid_tests::operator::{details_json, ok, recover_wait, status};
use zeoraid_tests::raid::{BackendKind, RaidSpec};
use zeoraid_tests::server::{run_with_deadline, ServerOpts, ServerProcess};
use zeoraid_tests::stream::Stream;

/// Transactions of the history built before the recovery.
const HISTORY: u64 = 10_000;
/// Client processes committing during the recovery.
const LOAD_CLIENTS: usize = 3;
/// Commits per second of each load client: a live load the recovery must converge under
/// (on a loaded 2-core machine an unpaced Python client commits about as fast as a stock ZEO
/// target takes restored transactions, which tests the machine rather than the recovery).
const LOAD_RATE: u32 = 20;
/// Commits each load client makes before the recovery starts, and again after it ended.
const LOAD_COMMITS: usize = 10;
/// The transactions/s limit of the first recovery (given on the command line): above the load
/// clients' commit rate, so the recovery converges, and low enough that a 10,000-transaction
/// copy takes a few seconds, long enough to watch its progress.
const RATE_TXNS: u64 = 4000;
/// How long a `recover --wait` may take.
const RECOVER_DEADLINE: Duration = Duration::from_secs(300);

#[test]
fn recovery_of_local_backends_under_load() {
    recovery_under_load(RaidSpec::local(), BackendKind::Local, true);
}

#[test]
fn recovery_of_stock_zeo_backends_under_load() {
    recovery_under_load(RaidSpec::zeo(), BackendKind::Runzeo, false);
}

fn recovery_under_load(spec: RaidSpec, kind: BackendKind, undo_blobs: bool) {
    let label = spec.label;
    let t0 = Instant::now();
    let mut raid = ServerProcess::start(spec.kind(), ServerOpts::new(Encoding::Pickle))
        .unwrap_or_else(|e| panic!("{e}"));

    // 1. The history.
    let history = build_history(&raid, HISTORY, undo_blobs).unwrap_or_else(|e| panic!("{label}: {e}"));
    eprintln!("{label}: history built: {history:?}");
    assert!(history.transactions >= HISTORY, "{history:?}");
    assert!(history.undos > 0 && history.blob_revisions > 0, "{history:?}");
    assert_eq!(status(&raid), ("optimal".to_string(), Some(0)));

    // 2. b out, load on, recover b under the load.
    let out = ok(&raid, &["disable", "b"]);
    assert!(out.contains("b disabled"), "{out}");
    assert_eq!(status(&raid), ("degraded".to_string(), Some(2)));
    let streams: Vec<Stream> = (0..LOAD_CLIENTS)
        .map(|i| {
            Stream::start_named(&raid, 1, &format!("load-{i}"), Duration::from_secs(400), Some(LOAD_RATE))
        })
        .collect();
    for s in &streams {
        s.wait_for(LOAD_COMMITS, Duration::from_secs(60), "before the recovery");
    }
    let before: Vec<usize> = streams.iter().map(Stream::commits).collect();

    let started = Instant::now();
    let waiter = {
        let cmd = recover_wait(&raid, &["b", "--rate-txns", &RATE_TXNS.to_string()]);
        std::thread::spawn(move || run_with_deadline(cmd, RECOVER_DEADLINE))
    };
    // Watch it as an operator would, while `--wait` runs.
    let mut seen_recovering = false;
    let mut seen_progress = None;
    while !waiter.is_finished() {
        let (word, code) = status(&raid);
        if word == "recovering" {
            assert_eq!(code, Some(1), "status recovering exits 1");
            seen_recovering = true;
        }
        let details = details_json(&raid);
        if let Some(r) = details["storages"][0].get("recovery").filter(|r| r["target"] == "b") {
            assert_eq!(r["source"], "a", "{r}");
            assert!(
                ["verifying", "rebuilding", "copying", "switching"]
                    .contains(&r["phase"].as_str().unwrap_or("")),
                "{r}"
            );
            assert_eq!(r["limit_txns"].as_u64(), Some(RATE_TXNS), "the command line's limit: {r}");
            seen_progress = Some(r.clone());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = waiter.join().expect("the recover thread").unwrap_or_else(|e| panic!("{e}"));
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{label}: recover b --wait ({took:?}):\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "{label}: recover b --wait failed ({})\n{stdout}{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        raid.log_tail()
    );
    assert!(stdout.starts_with("recovery of b started"), "{stdout}");
    assert!(
        stdout.trim_end().lines().last().is_some_and(|l| l.starts_with("recovery of b done: optimal")),
        "{stdout}"
    );
    assert!(seen_recovering, "{label}: status never said recovering during a {took:?} recovery");
    let progress =
        seen_progress.unwrap_or_else(|| panic!("{label}: details never showed the recovery's progress"));
    eprintln!("{label}: progress seen: {progress}");
    assert_eq!(status(&raid), ("optimal".to_string(), Some(0)));
    let end = details_json(&raid)["storages"][0]["last_recovery"].clone();
    assert_eq!((end["target"].as_str(), end["ok"].as_bool()), (Some("b"), Some(true)), "{end}");
    // The clients go on with both backends, and saw no error.
    for (s, n) in streams.iter().zip(&before) {
        s.wait_for(n + LOAD_COMMITS, Duration::from_secs(60), "after the recovery");
    }
    let mut commits = 0;
    for s in streams {
        commits += s.finish().0;
    }
    eprintln!(
        "{label}: {commits} commits from {LOAD_CLIENTS} clients during and after the recovery, no error"
    );

    // 3. A brand-new backend, added by reload, recovered without a limit.
    let c = raid.add_backend(kind).unwrap_or_else(|e| panic!("{e}"));
    let out = ok(&raid, &["reload"]);
    assert!(out.contains(&format!("added {c}")), "{out}");
    assert_eq!(status(&raid), ("degraded".to_string(), Some(2)));
    let started = Instant::now();
    let out =
        run_with_deadline(recover_wait(&raid, &[&c]), RECOVER_DEADLINE).unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let out_text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{label}: recover {c} --wait ({:?}):\n{out_text}{stderr}", started.elapsed());
    assert!(out.status.success(), "{label}: recover {c} --wait failed ({})\n{}", out.status, raid.log_tail());
    let out = out_text;
    assert!(
        out.trim_end()
            .lines()
            .last()
            .is_some_and(|l| l.starts_with(&format!("recovery of {c} done: optimal"))),
        "{out}"
    );
    let text = ok(&raid, &["details"]);
    assert!(text.contains(&format!("last recovery: {c} ok")), "{text}");

    // 4. Every backend, record by record.
    // The pack removed part of the history: at least HISTORY transactions are left.
    let min = HISTORY + commits as u64;
    let report = raid.check_mirrors(min).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(report.backends, ["a", "b", &c], "{report:?}");
    eprintln!(
        "{label}: mirrors equal: {} transactions, {} records, {} blobs ({:?} in all)",
        report.transactions,
        report.records,
        report.blobs,
        t0.elapsed()
    );
    assert!(report.blobs > 0, "{report:?}");
}
