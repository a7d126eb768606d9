//! Online recovery (issue 6): recovery throughput against the source's own iteration
//! throughput, the achieved rate under a limit, and commit latency during a throttled recovery.
//!
//! ```text
//! cargo bench -p zeoraid-server --bench recovery [-- [--transactions 10000] [--objects 4]
//!     [--size 1000] [--fill-clients 8] [--load-clients 2] [--load-seconds 10]
//!     [--min-throttled-seconds 12] [--rate-bytes N] [--runzeo]]
//! ```
//!
//! Cargo builds `zeoraid` and `zeoraid-load` in release mode. One RAID (the tests crate's
//! harness, `zeoraid serve --config`, fsync on) of local backends `a`, `b` (the sources) and
//! `c`, `d`, `e` (the targets; with `--runzeo` also `f`, a stock `runzeo`), all empty at the
//! start; `c`…`f` are disabled at once, so only `a` and `b` take the commits. Then, in one run:
//! 1. **Fill**: `zeoraid-load --workload commits` (`--fill-clients` clients, `--objects` records
//!    of `--size` bytes per transaction, no blobs) until at least `--transactions` transactions
//!    are committed.
//! 2. **Source iteration**: `a`'s `Data.fs` opened read-only in this process with
//!    `LocalBackend` (the backend the server runs, its default read threads) and walked through
//!    the backend interface, one request at a time, as a ZEO client iterates: `IterStart`,
//!    `IterNext`, `IterRecordStart`, `IterRecordNext` (the recovery itself reads one
//!    `IterNextWhole` per transaction). Transactions/s and MB/s of record data. Done before
//!    and after the unthrottled recovery; the faster pass is the baseline.
//! 3. **Unthrottled recovery** of `c` (`recover` on the admin socket with `rate_bytes: 0`),
//!    timed from the recovery's own start to its end (both from `details`, polled every 100 ms:
//!    the server's clock); transactions and bytes are the end report's. Target ≥ 0.8× the
//!    iteration, in transactions/s and in MB/s. Then `c` is disabled again. With `--runzeo`,
//!    the same for `f` (a remote target).
//! 4. **Throttled recovery** of `d` with `rate_bytes` R (`--rate-bytes`, default the smaller of
//!    a third of the unthrottled rate and what makes the copy last `--min-throttled-seconds`);
//!    achieved = bytes copied / time; target within ±10% of R. Then `d` is disabled again.
//! 5. **Commit latency**: `zeoraid-load` commits (`--load-clients` clients, same transaction
//!    shape, 1 s warm-up, `--load-seconds` measured) without a recovery, then with a throttled
//!    recovery of `e` started just before the load (limit R, lowered if needed so that the copy
//!    would outlast the load twice over; the RAID raises it to 2× the live commit rate if that is
//!    higher: the convergence rule). Whether the recovery was still running when the load ended
//!    is printed. Then `e` is disabled and the load without recovery runs again. Target: p99
//!    during the recovery ≤ 1.5× the lower of the two p99s without.
//!
//! MB are 10^6 bytes of record data (the recovery's `bytes_copied` counts record data and blob
//! bytes; this database has no blobs). "server cpu" is the zeoraid process's user+system CPU
//! seconds over the measurement. This is a benchmark, not a test: nothing here asserts a
//! figure. `harness = false`; `cargo bench` passes `--bench`, which is ignored.

mod common;

use common::{cpu_secs, num, run_load, thread_delta, thread_stats, Res, ZEORAID};
use serde_json::Value as Json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use zeoraid_core::wire::Encoding;
use zeoraid_core::zeo::backend::{BackendIterId, BackendOutcome, BackendReqId, BackendRequest};
use zeoraid_server::admin::{self, AdminReply, Command, StorageReport};
use zeoraid_server::backend::local::{LocalBackend, LocalConfig};
use zeoraid_server::backend::Sink;
use zeoraid_tests::raid::{BackendKind, RaidSpec};
use zeoraid_tests::server::{ServerKind, ServerOpts, ServerProcess};

#[derive(Debug, Clone)]
struct Args {
    transactions: u64,
    objects: String,
    size: String,
    fill_clients: String,
    load_clients: String,
    load_seconds: f64,
    min_throttled_seconds: f64,
    rate_bytes: Option<u64>,
    runzeo: bool,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        transactions: 10_000,
        objects: "4".into(),
        size: "1000".into(),
        fill_clients: "8".into(),
        load_clients: "2".into(),
        load_seconds: 10.0,
        min_throttled_seconds: 12.0,
        rate_bytes: None,
        runzeo: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--transactions" => a.transactions = value()?.parse()?,
            "--objects" => a.objects = value()?,
            "--size" => a.size = value()?,
            "--fill-clients" => a.fill_clients = value()?,
            "--load-clients" => a.load_clients = value()?,
            "--load-seconds" => a.load_seconds = value()?.parse()?,
            "--min-throttled-seconds" => a.min_throttled_seconds = value()?.parse()?,
            "--rate-bytes" => a.rate_bytes = Some(value()?.parse()?),
            "--runzeo" => a.runzeo = true,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if a.load_seconds <= 0.0 || a.min_throttled_seconds <= 0.0 || a.rate_bytes == Some(0) {
        return Err("--load-seconds, --min-throttled-seconds and --rate-bytes must be above 0".into());
    }
    Ok(a)
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

// ---- the admin socket ---------------------------------------------------------------------------

/// Sends `cmd`; a refused command is an error.
fn admin(sock: &Path, cmd: Command) -> Res<AdminReply> {
    let reply = admin::request(sock, &cmd, Duration::from_secs(30))
        .map_err(|e| format!("admin {cmd:?}: {} ({})", e.what, e.path))?;
    if !reply.ok {
        return Err(format!("admin {cmd:?} refused: {}", reply.error.unwrap_or_default()).into());
    }
    Ok(reply)
}

/// Storage `1` as `details` shows it.
fn details(sock: &Path) -> Res<StorageReport> {
    let reply = admin(sock, Command::Details)?;
    reply.storages.into_iter().next().ok_or_else(|| "details: no storage".into())
}

fn disable(sock: &Path, name: &str) -> Res<()> {
    admin(sock, Command::Disable { storage: None, name: name.into() })?;
    Ok(())
}

// ---- recoveries ---------------------------------------------------------------------------------

/// One recovery, as measured.
#[derive(Debug, Clone, Default)]
struct Recovery {
    target: String,
    /// The bytes/s limit asked for (`None`: unthrottled).
    limit: Option<u64>,
    /// From the recovery's start to its end, by the server's clock.
    secs: f64,
    txns: u64,
    bytes: u64,
    failure: Option<String>,
    server_cpu: Option<f64>,
    /// Seconds spent in each phase (`details` polled every 100 ms; a phase shorter than that may
    /// be missing).
    phases: Vec<(String, f64)>,
    /// Whether it was still running when the commit load ended (the latency run).
    running_after_load: Option<bool>,
    /// CPU seconds the target process used (a `runzeo` target).
    target_cpu: Option<f64>,
    /// The server's threads at the start, then what each used over the recovery.
    threads: Vec<(String, f64, u64)>,
}

impl Recovery {
    fn txns_per_s(&self) -> f64 {
        self.txns as f64 / self.secs.max(1e-9)
    }
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs.max(1e-9)
    }
}

/// Starts the recovery of `target` (`rate_bytes` 0: unthrottled).
fn start_recovery(sock: &Path, pid: Option<u32>, target: &str, rate_bytes: u64) -> Res<Recovery> {
    let cpu = pid.and_then(cpu_secs);
    let threads = pid.map(thread_stats).unwrap_or_default();
    admin(
        sock,
        Command::Recover {
            storage: None,
            backend: target.into(),
            rate_bytes: Some(rate_bytes),
            rate_txns: Some(0),
        },
    )?;
    Ok(Recovery {
        target: target.into(),
        limit: Some(rate_bytes).filter(|&r| r > 0),
        server_cpu: cpu,
        threads,
        ..Recovery::default()
    })
}

/// Polls `details` until the recovery `r` started at (or after) `asked` ends. With `load`, notes
/// whether the recovery was still running at the first poll after that thread finished.
fn wait_recovery(
    sock: &Path,
    pid: Option<u32>,
    mut r: Recovery,
    asked: f64,
    load: Option<&std::thread::JoinHandle<Result<Json, String>>>,
) -> Res<Recovery> {
    let mut started = None;
    let mut phase: Option<(String, f64)> = None;
    let give_up = Instant::now() + Duration::from_secs(1800);
    loop {
        let load_done = load.is_some_and(|h| h.is_finished());
        let st = details(sock)?;
        let now = unix_now();
        if load_done && r.running_after_load.is_none() {
            r.running_after_load = Some(st.recovery.as_ref().is_some_and(|p| p.target == r.target));
        }
        if let Some(p) = st.recovery.as_ref().filter(|p| p.target == r.target) {
            started.get_or_insert(p.started);
            if phase.as_ref().map(|(w, _)| w.as_str()) != Some(p.phase.as_str()) {
                if let Some((w, since)) = phase.take() {
                    r.phases.push((w, now - since));
                }
                phase = Some((p.phase.clone(), now));
            }
        }
        if let Some(end) = st.last_recovery.as_ref().filter(|e| e.target == r.target && e.at >= asked - 1.0) {
            if let Some((w, since)) = phase.take() {
                r.phases.push((w, end.at - since));
            }
            r.secs = end.at - started.unwrap_or(asked);
            r.txns = end.txns_copied;
            r.bytes = end.bytes_copied;
            r.failure = end.failure.clone();
            if load.is_some() && r.running_after_load.is_none() {
                // It ended before the load did.
                r.running_after_load = Some(false);
            }
            r.server_cpu = match (r.server_cpu, pid.and_then(cpu_secs)) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            };
            r.threads = thread_delta(&r.threads, &pid.map(thread_stats).unwrap_or_default());
            return Ok(r);
        }
        if Instant::now() > give_up {
            return Err(format!("the recovery of {} did not end within 30 minutes", r.target).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn recover(sock: &Path, pid: Option<u32>, target: &str, rate_bytes: u64) -> Res<Recovery> {
    let how = if rate_bytes == 0 { "unthrottled".to_string() } else { format!("at {rate_bytes} B/s") };
    eprintln!("recovery bench: recovering {target} {how}");
    let asked = unix_now();
    let r = start_recovery(sock, pid, target, rate_bytes)?;
    let r = wait_recovery(sock, pid, r, asked, None)?;
    eprintln!(
        "recovery bench: {target}: {} txns, {} bytes in {:.2} s ({})",
        r.txns,
        r.bytes,
        r.secs,
        r.failure.as_deref().unwrap_or("optimal")
    );
    Ok(r)
}

// ---- the source's own iteration -----------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct Iteration {
    txns: u64,
    records: u64,
    bytes: u64,
    secs: f64,
    /// What this process's threads used over the walk.
    threads: Vec<(String, f64, u64)>,
}

/// Asks `backend` one request and waits for its final outcome.
fn call(
    backend: &LocalBackend,
    rx: &Receiver<(BackendReqId, BackendOutcome)>,
    next_id: &mut u64,
    req: BackendRequest,
) -> Res<BackendOutcome> {
    *next_id += 1;
    let id = BackendReqId(*next_id);
    backend.submit(id, req);
    loop {
        let (got, out) = rx.recv_timeout(Duration::from_secs(30))?;
        if got != id || matches!(out, BackendOutcome::BlobChunk(_)) {
            continue;
        }
        if let BackendOutcome::Failed(e) = out {
            return Err(format!("the source backend failed: {e:?}").into());
        }
        return Ok(out);
    }
}

/// Walks the whole history of the storage at `path` (opened read-only, while the server keeps
/// it open for writing) with the recovery's requests.
fn iterate(path: &Path, blobs: &Path) -> Res<Iteration> {
    let (tx, rx) = channel();
    let sink: Sink = Arc::new(move |id, out| {
        let _ = tx.send((id, out));
    });
    let cfg = LocalConfig {
        path: path.to_path_buf(),
        blob_dir: Some(blobs.to_path_buf()),
        read_only: true,
        fsync: false,
        read_threads: zeoraid_server::config::DEFAULT_READ_THREADS,
    };
    let (backend, _) = LocalBackend::open("source", &cfg, sink)?;
    let mut id = 0;
    let mut it = Iteration::default();
    let txn_iter = BackendIterId(1);
    let mut rec_iter = 1;
    let threads = thread_stats(std::process::id());
    let start = Instant::now();
    call(&backend, &rx, &mut id, BackendRequest::IterStart { iter: txn_iter, start: None, stop: None })?;
    loop {
        let header = match call(&backend, &rx, &mut id, BackendRequest::IterNext { iter: txn_iter })? {
            BackendOutcome::Txn(Some(h)) => h,
            BackendOutcome::Txn(None) => break,
            other => return Err(format!("IterNext answered {other:?}").into()),
        };
        it.txns += 1;
        rec_iter += 1;
        let iter = BackendIterId(rec_iter);
        call(&backend, &rx, &mut id, BackendRequest::IterRecordStart { iter, txn_iter, tid: header.tid })?;
        loop {
            match call(&backend, &rx, &mut id, BackendRequest::IterRecordNext { iter })? {
                BackendOutcome::Record(Some(r)) => {
                    it.records += 1;
                    it.bytes += r.data.as_ref().map_or(0, |d| d.len() as u64);
                }
                BackendOutcome::Record(None) => break,
                other => return Err(format!("IterRecordNext answered {other:?}").into()),
            }
        }
    }
    it.secs = start.elapsed().as_secs_f64();
    it.threads = thread_delta(&threads, &thread_stats(std::process::id()));
    backend.close()?;
    eprintln!(
        "recovery bench: iterated {} txns, {} records, {} bytes in {:.2} s",
        it.txns, it.records, it.bytes, it.secs
    );
    Ok(it)
}

// ---- load ---------------------------------------------------------------------------------------

/// Commits through the front until at least `args.transactions` are acknowledged.
fn fill(args: &Args, address: &str, pid: Option<u32>) -> Res<(u64, f64)> {
    let (mut done, start) = (0_u64, Instant::now());
    let mut seconds = 5.0_f64;
    while done < args.transactions {
        let d = format!("{seconds:.1}");
        let runs = run_load(
            address,
            pid,
            &[
                "--workload",
                "commits",
                "--clients",
                &args.fill_clients,
                "--objects",
                &args.objects,
                "--size",
                &args.size,
                "--duration",
                &d,
                "--warmup",
                "0",
            ],
        )?;
        let ops: f64 = runs.iter().filter_map(|j| num(j, "ops")).sum();
        if ops < 1.0 {
            return Err("the fill committed nothing".into());
        }
        done += ops as u64;
        eprintln!("recovery bench: filled {done} transactions");
        let left = args.transactions.saturating_sub(done) as f64;
        seconds = (left / (ops / seconds) * 1.1 + 0.5).clamp(1.0, 600.0);
    }
    Ok((done, start.elapsed().as_secs_f64()))
}

/// One latency run of `zeoraid-load` commits.
fn latency(args: &Args, address: &str, pid: Option<u32>) -> Res<Json> {
    let secs = format!("{}", args.load_seconds);
    let runs = run_load(
        address,
        pid,
        &[
            "--workload",
            "commits",
            "--clients",
            &args.load_clients,
            "--objects",
            &args.objects,
            "--size",
            &args.size,
            "--duration",
            &secs,
            "--warmup",
            "1",
        ],
    )?;
    runs.into_iter().next().ok_or_else(|| "zeoraid-load printed nothing".into())
}

// ---- report -------------------------------------------------------------------------------------

fn rate_cell(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

fn phases(r: &Recovery) -> String {
    r.phases.iter().map(|(w, s)| format!("{w} {s:.2} s")).collect::<Vec<_>>().join(", ")
}

fn recovery_row(t: &mut String, what: &str, r: &Recovery, ratio: &str, target: &str) {
    let _ = writeln!(
        t,
        "| {what} | {} | - | {:.1} | {:.2} | {} | {} | {} | {ratio} | {target} |",
        r.txns,
        r.bytes as f64 / 1e6,
        r.secs,
        rate_cell(r.txns_per_s()),
        rate_cell(r.mb_per_s()),
        r.server_cpu.map_or_else(|| "-".into(), |c| format!("{c:.2}")),
    );
}

struct Figures {
    /// Records per transaction (`--objects`).
    objects: String,
    iterations: Vec<Iteration>,
    unthrottled: Recovery,
    remote: Option<Recovery>,
    throttled: Recovery,
    /// Commit latency without a recovery: before, and after, the one with.
    quiet: Vec<Json>,
    during: Json,
    during_recovery: Recovery,
}

fn report(f: &Figures) -> String {
    let mut t = String::from(
        "| measurement | txns | records | MB | s | txns/s | MB/s | server cpu s | ratio | target |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for (i, it) in f.iterations.iter().enumerate() {
        let _ = writeln!(
            t,
            "| source iteration, pass {} (in-process LocalBackend) | {} | {} | {:.1} | {:.2} | {} | {} | - | | |",
            i + 1,
            it.txns,
            it.records,
            it.bytes as f64 / 1e6,
            it.secs,
            rate_cell(it.txns as f64 / it.secs.max(1e-9)),
            rate_cell(it.bytes as f64 / 1e6 / it.secs.max(1e-9)),
        );
    }
    let best = f.iterations.iter().min_by(|a, b| a.secs.total_cmp(&b.secs)).cloned().unwrap_or_default();
    let (it_txns, it_mb) =
        (best.txns as f64 / best.secs.max(1e-9), best.bytes as f64 / 1e6 / best.secs.max(1e-9));
    let against_iteration = |t: &mut String, what: &str, r: &Recovery| {
        let (rt, rb) = (r.txns_per_s() / it_txns.max(1e-9), r.mb_per_s() / it_mb.max(1e-9));
        let ratio = format!("txns {rt:.2}×, MB {rb:.2}× the faster pass");
        let target = format!("≥ 0.8×: {}", met(rt >= 0.8 && rb >= 0.8 && r.failure.is_none()));
        recovery_row(t, what, r, &ratio, &target);
    };
    against_iteration(&mut t, "unthrottled recovery → local c", &f.unthrottled);
    if let Some(r) = &f.remote {
        against_iteration(&mut t, "unthrottled recovery → runzeo f", r);
    }
    let th = &f.throttled;
    let limit = th.limit.unwrap_or(0) as f64;
    let achieved = th.bytes as f64 / th.secs.max(1e-9);
    let dev = achieved / limit.max(1.0) - 1.0;
    recovery_row(
        &mut t,
        &format!("throttled recovery → local d, limit {:.3} MB/s", limit / 1e6),
        th,
        &format!("achieved {:.3} MB/s = {:+.1}% of the limit", achieved / 1e6, dev * 100.0),
        &format!("±10%: {}", met(dev.abs() <= 0.10 && th.failure.is_none())),
    );
    let dr = &f.during_recovery;
    recovery_row(
        &mut t,
        &format!(
            "throttled recovery → local e under the load, limit {:.3} MB/s",
            dr.limit.unwrap_or(0) as f64 / 1e6
        ),
        dr,
        &format!(
            "still running when the load ended: {}",
            dr.running_after_load.map_or("?", |b| if b { "yes" } else { "**no**" })
        ),
        "",
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| commits, {} client(s) | ops/s | p50 µs | p99 µs | errors | server cpu | ratio | target |\n|---|---:|---:|---:|---:|---:|---|---|",
        f.quiet.first().and_then(|q| num(q, "clients")).unwrap_or(0.0)
    );
    let lat_row = |t: &mut String, what: &str, j: &Json, ratio: &str, target: &str| {
        let c = |k: &str, d: usize| common::cell(num(j, k), d);
        let _ = writeln!(
            t,
            "| {what} | {} | {} | {} | {} | {} | {ratio} | {target} |",
            c("ops_per_s", 0),
            c("p50_us", 0),
            c("p99_us", 0),
            c("errors", 0),
            c("server_cpu", 2),
        );
    };
    for (q, when) in f.quiet.iter().zip(["before", "after"]) {
        lat_row(&mut t, &format!("without recovery ({when})"), q, "", "");
    }
    // Judged against the lower (better) baseline p99: the conservative choice.
    let p = |j: &Json, k: &str| num(j, k).unwrap_or(0.0);
    let base = |k: &str| f.quiet.iter().map(|q| p(q, k)).fold(f64::INFINITY, f64::min).max(1e-9);
    let (p50, p99) = (p(&f.during, "p50_us") / base("p50_us"), p(&f.during, "p99_us") / base("p99_us"));
    let worst = f.quiet.iter().map(|q| p(q, "p99_us")).fold(0.0, f64::max).max(1e-9);
    lat_row(
        &mut t,
        "during the throttled recovery of e",
        &f.during,
        &format!(
            "p50 {p50:.2}×, p99 {p99:.2}× the better baseline ({:.2}× the worse)",
            p(&f.during, "p99_us") / worst
        ),
        &format!("p99 ≤ 1.5×: {}", met(p99 <= 1.5 && dr.running_after_load == Some(true))),
    );
    let _ = writeln!(t);
    // The RAID never paces a recovery below CONVERGENCE_FACTOR (2) × the live commit rate.
    let objects: f64 = f.objects.parse().unwrap_or(0.0);
    let live =
        num(&f.during, "ops_per_s").unwrap_or(0.0) * objects * num(&f.during, "record_bytes").unwrap_or(0.0);
    let _ = writeln!(
        t,
        "live commits during the recovery of e: {:.2} MB/s of records; the RAID's floor for the recovery's \
         rate (2× that, the convergence rule): {:.2} MB/s; achieved over the whole recovery {:.2} MB/s\n",
        live / 1e6,
        2.0 * live / 1e6,
        dr.mb_per_s(),
    );
    for (what, r) in [("c", Some(&f.unthrottled)), ("f", f.remote.as_ref()), ("d", Some(th)), ("e", Some(dr))]
    {
        if let Some(r) = r {
            let end = r.failure.as_deref().map_or_else(|| "optimal".to_string(), |f| format!("FAILED: {f}"));
            let _ = writeln!(t, "recovery of {what}: {end}; phases: {}", phases(r));
            let _ = writeln!(t, "  server threads (cpu s / context switches): {}", threads(&r.threads));
            if let Some(c) = r.target_cpu {
                let _ = writeln!(t, "  the runzeo target's process: {c:.2} cpu s");
            }
        }
    }
    let _ = writeln!(
        t,
        "source iteration, faster pass, bench threads (cpu s / context switches): {}",
        threads(&best.threads)
    );
    t
}

fn threads(list: &[(String, f64, u64)]) -> String {
    list.iter().map(|(n, c, s)| format!("{n} {c:.2}/{s}")).collect::<Vec<_>>().join(", ")
}

// ---- the run ------------------------------------------------------------------------------------

fn run(args: &Args, server: &mut ServerProcess) -> Res<Figures> {
    let sock = server.admin_socket().ok_or("the RAID has no admin socket")?;
    let pid = server.pid();
    let address = server.address_arg();
    let targets: &[&str] = if args.runzeo { &["c", "d", "e", "f"] } else { &["c", "d", "e"] };
    for t in targets {
        disable(&sock, t)?;
    }
    let (acked, fill_secs) = fill(args, &address, pid)?;
    eprintln!("recovery bench: {acked} commits acknowledged in {fill_secs:.1} s");
    let a = server.mirror("a").ok_or("no backend a")?;
    let mut iterations = vec![iterate(&a.1, &a.2)?];

    let unthrottled = recover(&sock, pid, "c", 0)?;
    disable(&sock, "c")?;
    iterations.push(iterate(&a.1, &a.2)?);
    let remote = if args.runzeo {
        let runzeo = server.backend_server("f").and_then(|f| f.pid());
        let cpu = runzeo.and_then(cpu_secs);
        let mut r = recover(&sock, pid, "f", 0)?;
        r.target_cpu = cpu.zip(runzeo.and_then(cpu_secs)).map(|(a, b)| b - a);
        disable(&sock, "f")?;
        Some(r)
    } else {
        None
    };

    let unthrottled_rate = unthrottled.bytes as f64 / unthrottled.secs.max(1e-9);
    let source_bytes = unthrottled.bytes as f64;
    let rate = args.rate_bytes.unwrap_or_else(|| {
        (unthrottled_rate / 3.0).min(source_bytes / args.min_throttled_seconds).max(1.0) as u64
    });
    let throttled = recover(&sock, pid, "d", rate)?;
    disable(&sock, "d")?;

    eprintln!("recovery bench: commit latency without recovery");
    let mut quiet = vec![latency(args, &address, pid)?];
    // The copy must outlast the load (warm-up included) with room to spare.
    let outlast = 2.0 * (args.load_seconds + 1.0);
    let lat_rate = (rate as f64).min(source_bytes / outlast).max(1.0) as u64;
    eprintln!("recovery bench: commit latency during the recovery of e at {lat_rate} B/s");
    let asked = unix_now();
    let rec = start_recovery(&sock, pid, "e", lat_rate)?;
    let load = {
        let (args, address) = (args.clone(), address.clone());
        std::thread::spawn(move || latency(&args, &address, pid).map_err(|e| e.to_string()))
    };
    let during_recovery = wait_recovery(&sock, pid, rec, asked, Some(&load))?;
    let during = load.join().map_err(|_| "the load thread panicked")?;
    let during = during?;
    disable(&sock, "e")?;
    eprintln!("recovery bench: commit latency without recovery, again");
    quiet.push(latency(args, &address, pid)?);
    Ok(Figures {
        objects: args.objects.clone(),
        iterations,
        unthrottled,
        remote,
        throttled,
        quiet,
        during,
        during_recovery,
    })
}

fn main() -> Res<()> {
    let args = parse_args()?;
    let mut backends = vec![BackendKind::Local; 5];
    if args.runzeo {
        backends.push(BackendKind::Runzeo);
    }
    let spec = RaidSpec { label: "raid-recovery", backends, ..RaidSpec::local() };
    let kind = ServerKind::Raid { binary: PathBuf::from(ZEORAID), spec };
    let mut server = ServerProcess::start(kind, ServerOpts::new(Encoding::Pickle))?;
    eprintln!("recovery bench: RAID in {}", server.dir().display());
    let figures = run(&args, &mut server);
    let log = server.log_tail();
    server.stop_all()?;
    let figures = figures.map_err(|e| format!("{e}\nserver log:\n{log}"))?;
    println!(
        "\n{} transactions asked, {} records of {} bytes each per transaction, no blobs; fill {} clients; \
         load {} client(s) × {} s after 1 s warm-up; seed {}; {}\n",
        args.transactions,
        args.objects,
        args.size,
        args.fill_clients,
        args.load_clients,
        args.load_seconds,
        common::SEED,
        common::machine(),
    );
    print!("{}", report(&figures));
    Ok(())
}
