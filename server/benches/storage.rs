//! zeoraid's storage engine against Python's FileStorage, in the same run on this machine.
//!
//! ```text
//! cargo bench -p zeoraid-server --bench storage [-- [--quick] [--objects N] [--seconds S]
//!                                                  [--lookups M] [--rounds R] [--no-python]
//!                                                  [--keep DIR]]
//! ```
//!
//! Measures the engine through its public API, then runs `tests/python/bench_fs.py` with the
//! pinned venv's Python (built on first use by `zeoraid_tests::python::PythonEnv`) with the same
//! parameters, and prints a markdown table of both figures and their ratio:
//!
//! * commits/s of 1 and of 10 objects per transaction, fsync on and off, each for S seconds
//!   (default 3; 1 with `--quick`). The records are the same bytes as Python's: a ZODB pickle of a
//!   `PersistentMapping` holding 1 KiB of random data (1110 bytes);
//! * `load_before(oid, Tid::MAX)`/s for M uniformly random oids (default 200,000; 20,000 with
//!   `--quick`; fixed seed) over a database of N objects (default 1,000,000; 20,000 with
//!   `--quick`) written in transactions of 1,000 objects with fsync off, as Python's is;
//! * the time to open that database read-only with the index cache and without it (a full scan),
//!   each in a fresh child process (this binary, re-run with `--child-open`), as Python's script
//!   opens its database with and without `.index`;
//! * the index's memory: the RSS growth of that child across the open, and the index's own
//!   accounting ([`Storage::index_heap_bytes`]).
//!
//! Every measurement runs R times (default 3; 1 with `--quick`) and the best is kept, on both
//! sides: the machine is shared and the figures are noisy. The commit benchmarks take turns
//! (zeoraid one round of one configuration, then Python the same), so that both engines see
//! about the same background load: fsync latency follows whatever else the disk is doing.
//!
//! The page cache is warm for both engines: each database is measured right after it was written
//! (the machine has far more free memory than the ~1.2 GB file), and zeoraid's is additionally
//! read once from start to end before its `load_before` runs and before its opens.
//!
//! `--keep DIR` works in DIR instead of a temporary directory and leaves zeoraid's read database
//! (`DIR/read.fs`) there, e.g. to profile an open: `storage --child-open DIR/read.fs cache`.
//!
//! This is a benchmark, not a test: nothing here asserts a figure. It is `harness = false`;
//! `cargo bench` passes `--bench`, which is ignored.

use serde_json::{json, Value as Json};
use std::error::Error;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::types::TxnStatus;
use zeoraid_server::storage::{index_cache_name, BeginTid, IndexSource, Options, Storage, TxnMeta};
use zeoraid_tests::python::PythonEnv;

type Res<T> = Result<T, Box<dyn Error>>;

/// Objects per transaction when writing the read database (as `bench_fs.py`).
const BATCH: u64 = 1000;
/// The seed of the random payloads and oids.
const SEED: u64 = 20_240_601;
/// Payload bytes per object (`bench_fs.py --object-size`).
const OBJECT_SIZE: usize = 1024;

/// `pickle.dumps(PersistentMapping, 3) + pickle.dumps({"data": {"payload": <1024 bytes>}}, 3)`:
/// the bytes before the payload (its `BINBYTES` opcode announces 1024 bytes)…
const RECORD_HEAD: &[u8] = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03}q\x00X\x04\x00\x00\x00dataq\x01}q\x02X\x07\x00\x00\x00payloadq\x03B\x00\x04\x00\x00";
/// …and after it.
const RECORD_TAIL: &[u8] = b"q\x04ss.";

#[derive(Debug, Clone)]
struct Args {
    quick: bool,
    objects: u64,
    seconds: f64,
    lookups: usize,
    rounds: usize,
    python: bool,
    keep: Option<std::path::PathBuf>,
}

fn parse_args() -> Res<Args> {
    let mut quick = false;
    let (mut objects, mut seconds, mut lookups, mut rounds) = (None, None, None, None);
    let mut python = true;
    let mut keep = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => quick = true,
            "--objects" => objects = Some(value("--objects")?.replace('_', "").parse()?),
            "--seconds" => seconds = Some(value("--seconds")?.parse()?),
            "--lookups" => lookups = Some(value("--lookups")?.replace('_', "").parse()?),
            "--rounds" => rounds = Some(value("--rounds")?.parse()?),
            "--no-python" => python = false,
            "--keep" => keep = Some(value("--keep")?.into()),
            "--bench" => {} // passed by `cargo bench`
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let rounds: usize = rounds.unwrap_or(if quick { 1 } else { 3 });
    Ok(Args {
        quick,
        objects: objects.unwrap_or(if quick { 20_000 } else { 1_000_000 }),
        seconds: seconds.unwrap_or(if quick { 1.0 } else { 3.0 }),
        lookups: lookups.unwrap_or(if quick { 20_000 } else { 200_000 }),
        rounds: rounds.max(1),
        python,
        keep,
    })
}

/// splitmix64: a small deterministic generator (no dependency, same sequence everywhere).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: uniform enough for n far below 2^64.
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// `count` records of Python's shape with random payloads.
fn records(count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| {
            let mut r = Vec::with_capacity(RECORD_HEAD.len() + OBJECT_SIZE + RECORD_TAIL.len());
            r.extend_from_slice(RECORD_HEAD);
            while r.len() < RECORD_HEAD.len() + OBJECT_SIZE {
                r.extend_from_slice(&rng.next().to_le_bytes());
            }
            r.extend_from_slice(RECORD_TAIL);
            r
        })
        .collect()
}

fn remove_storage_files(path: &Path) {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for f in [name.clone(), index_cache_name(&name), format!("{name}.lock"), format!("{name}.tmp")] {
        let _ = fs::remove_file(path.with_file_name(f));
    }
}

// ---- commits ----------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct CommitRun {
    commits: u64,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
}

impl CommitRun {
    fn rate(&self) -> f64 {
        self.commits as f64 / self.seconds
    }
}

fn bench_commits(dir: &Path, per_commit: usize, fsync: bool, seconds: f64) -> Res<CommitRun> {
    let path = dir.join(format!("commits-{per_commit}-{}.fs", if fsync { "on" } else { "off" }));
    remove_storage_files(&path);
    let datas = records(64, SEED);
    let (s, _) = Storage::open_path(&path, Options { fsync, ..Options::default() })?;
    let oids = s.new_oids(per_commit)?;
    let mut serials = vec![Tid::ZERO; per_commit];
    let mut latencies = Vec::new();
    let start = Instant::now();
    let mut n = 0usize;
    let elapsed = loop {
        let t0 = Instant::now();
        s.begin(TxnMeta::default(), BeginTid::from_clock(), TxnStatus::NORMAL)?;
        for (i, (&oid, &serial)) in oids.iter().zip(&serials).enumerate() {
            s.store(oid, serial, &datas[(n + i) % datas.len()])?;
        }
        s.vote()?;
        let tid = s.finish()?;
        latencies.push(t0.elapsed());
        serials.fill(tid);
        n += 1;
        let elapsed = start.elapsed().as_secs_f64();
        if elapsed >= seconds && n >= 10 {
            break elapsed;
        }
    };
    s.close()?;
    remove_storage_files(&path);
    latencies.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Ok(CommitRun {
        commits: n as u64,
        seconds: elapsed,
        p50_us: us(latencies[latencies.len() / 2]),
        p99_us: us(latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]),
    })
}

// ---- the read database ------------------------------------------------------------------------

fn build_read_db(path: &Path, n: u64) -> Res<(f64, u64)> {
    remove_storage_files(path);
    let datas = records(256, SEED + 1);
    let start = Instant::now();
    let (s, _) = Storage::open_path(path, Options { fsync: false, ..Options::default() })?;
    let mut oid = 0u64;
    while oid < n {
        s.begin(TxnMeta::default(), BeginTid::from_clock(), TxnStatus::NORMAL)?;
        for _ in 0..BATCH.min(n - oid) {
            s.store(Oid::new(oid), Tid::ZERO, &datas[(oid % datas.len() as u64) as usize])?;
            oid += 1;
        }
        s.vote()?;
        s.finish()?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let size = s.size();
    s.close()?; // writes the index cache
    Ok((seconds, size))
}

/// Reads the whole file once, so that it sits in the page cache.
fn warm_page_cache(path: &Path) -> Res<()> {
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    while f.read(&mut buf)? != 0 {}
    Ok(())
}

/// Nanoseconds this thread has run on a CPU (Linux `/proc/thread-self/schedstat`): unlike the
/// wall clock, it does not count the time the thread waited for a CPU on a busy machine.
fn thread_cpu_ns() -> Option<u64> {
    fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}

/// `load_before` rates (calls per wall-clock second) of each round, and the best round's
/// on-CPU time per call in µs.
fn bench_load_before(path: &Path, n: u64, lookups: usize, rounds: usize) -> Res<(Vec<f64>, Option<f64>)> {
    let (s, _) = Storage::open_path(path, Options { read_only: true, ..Options::default() })?;
    let mut rng = Rng(SEED);
    let oids: Vec<Oid> = (0..lookups).map(|_| Oid::new(rng.below(n))).collect();
    let mut out = Vec::new();
    let mut cpu_us: Option<f64> = None;
    let mut bytes = 0usize;
    for _ in 0..rounds {
        let cpu = thread_cpu_ns();
        let start = Instant::now();
        for &oid in &oids {
            let r = s.load_before(oid, Tid::MAX)?.ok_or("load_before found no revision")?;
            bytes += r.data.len();
        }
        out.push(lookups as f64 / start.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (cpu, thread_cpu_ns()) {
            let us = (b - a) as f64 / 1e3 / lookups as f64;
            cpu_us = Some(cpu_us.map_or(us, |c| c.min(us)));
        }
    }
    if bytes == 0 {
        return Err("load_before returned no data".into());
    }
    Ok((out, cpu_us))
}

// ---- opening, in a child process --------------------------------------------------------------

/// The resident set size of this process, from `/proc/self/status` (Linux).
fn rss_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Run in a fresh process: opens `path` read-only, prints the time and the RSS growth as JSON.
fn child_open(path: &Path, with_cache: bool) -> Res<()> {
    let before = rss_bytes();
    let start = Instant::now();
    let (s, report) =
        Storage::open_path(path, Options { read_only: true, index_cache: with_cache, ..Options::default() })?;
    let seconds = start.elapsed().as_secs_f64();
    let after = rss_bytes();
    let used_cache = matches!(report.index, IndexSource::Cache { .. });
    if used_cache != with_cache {
        return Err(format!("asked for the cache: {with_cache}, the open reported {:?}", report.index).into());
    }
    let out = json!({
        "seconds": seconds,
        "len": s.len(),
        "used_cache": used_cache,
        "rss_growth": before.zip(after).map(|(b, a)| a.saturating_sub(b)),
        "index_heap_bytes": s.index_heap_bytes(),
    });
    println!("{out}");
    Ok(())
}

fn measure_open(path: &Path, with_cache: bool) -> Res<Json> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("--child-open").arg(path).arg(if with_cache { "cache" } else { "no-cache" });
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!("child open failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The fastest of `rounds` child opens.
fn bench_open(path: &Path, with_cache: bool, rounds: usize) -> Res<Json> {
    let mut best: Option<Json> = None;
    let mut all = Vec::new();
    for _ in 0..rounds {
        let r = measure_open(path, with_cache)?;
        let s = r["seconds"].as_f64().ok_or("no seconds")?;
        all.push(s);
        if best.as_ref().is_none_or(|b| b["seconds"].as_f64().is_some_and(|bs| s < bs)) {
            best = Some(r);
        }
    }
    let mut best = best.ok_or("no round")?;
    best["rounds_seconds"] = json!(all);
    Ok(best)
}

// ---- Python -----------------------------------------------------------------------------------

/// Runs `bench_fs.py` with the run's parameters and `extra` arguments (which part to run).
fn run_python(args: &Args, work: &Path, rounds: usize, extra: &[&str]) -> Res<Json> {
    let env = PythonEnv::get();
    let mut a: Vec<OsString> = vec![
        args.objects.to_string().into(),
        "--seconds".into(),
        args.seconds.to_string().into(),
        "--lookups".into(),
        args.lookups.to_string().into(),
        "--object-size".into(),
        OBJECT_SIZE.to_string().into(),
        "--rounds".into(),
        rounds.to_string().into(),
        "--dir".into(),
        work.as_os_str().to_owned(),
    ];
    a.extend(extra.iter().map(OsString::from));
    if args.quick {
        a.push("--quick".into());
    }
    let refs: Vec<&std::ffi::OsStr> = a.iter().map(OsString::as_os_str).collect();
    let out = env.run_script(Path::new("bench_fs.py"), &refs)?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

// ---- the report -------------------------------------------------------------------------------

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn fmt_rate(x: f64) -> String {
    if x >= 100.0 {
        let n = x.round() as u64;
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{x:.1}")
    }
}

fn fmt_secs(x: f64) -> String {
    if x < 0.01 {
        format!("{:.2} ms", x * 1e3)
    } else {
        format!("{x:.3} s")
    }
}

fn fmt_opt(x: Option<f64>, f: fn(f64) -> String) -> String {
    x.map_or_else(|| "–".to_owned(), f)
}

fn ratio(z: f64, p: Option<f64>) -> String {
    p.filter(|&p| p > 0.0).map_or_else(|| "–".to_owned(), |p| format!("{:.1}×", z / p))
}

struct Row {
    what: String,
    zeoraid: String,
    python: String,
    ratio: String,
    target: String,
}

fn main() -> Res<()> {
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some("--child-open") {
        let path = raw.get(2).ok_or("--child-open needs a path")?;
        return child_open(Path::new(path), raw.get(3).map(String::as_str) == Some("cache"));
    }
    let args = parse_args()?;
    let started = Instant::now();
    let tmp = tempfile::Builder::new().prefix("zeoraid-bench-").tempdir()?;
    let work = args.keep.as_deref().unwrap_or(tmp.path());
    fs::create_dir_all(work)?;
    eprintln!("storage bench: {args:?}, work directory {}", work.display());

    // Commits: zeoraid and Python take turns, one configuration and round at a time, so that
    // both see about the same background load (fsync latency follows the machine's other I/O).
    let py_dir = work.join("python");
    let mut py_commits: Vec<Json> = Vec::new();
    let mut commits = Vec::new();
    for per_commit in [1usize, 10] {
        for fsync in [true, false] {
            let mut runs = Vec::new();
            let config = format!("{per_commit}:{}", if fsync { "on" } else { "off" });
            let mut py_runs: Vec<Json> = Vec::new();
            for _ in 0..args.rounds {
                runs.push(bench_commits(work, per_commit, fsync, args.seconds)?);
                if args.python {
                    let r = run_python(&args, &py_dir, 1, &["--commits", &config, "--no-read"])?;
                    py_runs.extend(r["commits"].as_array().into_iter().flatten().cloned());
                }
            }
            if let Some(top) = py_runs.iter().max_by(|a, b| {
                a["commits_per_s"]
                    .as_f64()
                    .unwrap_or(0.0)
                    .total_cmp(&b["commits_per_s"].as_f64().unwrap_or(0.0))
            }) {
                let mut top = top.clone();
                top["rounds_commits_per_s"] = py_runs.iter().map(|r| r["commits_per_s"].clone()).collect();
                eprintln!("python  commits of {config}: {}/s", top["rounds_commits_per_s"]);
                py_commits.push(top);
            }
            let rates: Vec<f64> = runs.iter().map(CommitRun::rate).collect();
            let top =
                runs.iter().max_by(|a, b| a.rate().total_cmp(&b.rate())).cloned().ok_or("no commit round")?;
            eprintln!(
                "zeoraid commits of {per_commit}, fsync {}: {:?}/s (best p50 {:.1} µs, p99 {:.1} µs)",
                if fsync { "on" } else { "off" },
                rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
                top.p50_us,
                top.p99_us
            );
            commits.push((per_commit, fsync, top, rates));
        }
    }
    let db = work.join("read.fs");
    let (build_s, size) = build_read_db(&db, args.objects)?;
    eprintln!("zeoraid read database: {} objects, {size} bytes, written in {build_s:.2} s", args.objects);
    warm_page_cache(&db)?;
    let (loads, load_cpu_us) = bench_load_before(&db, args.objects, args.lookups, args.rounds)?;
    eprintln!(
        "zeoraid load_before/s: {:?}, best on-CPU time per call {:.2} µs",
        loads.iter().map(|r| r.round()).collect::<Vec<_>>(),
        load_cpu_us.unwrap_or(f64::NAN)
    );
    let open_cache = bench_open(&db, true, args.rounds)?;
    let open_scan = bench_open(&db, false, args.rounds)?;
    eprintln!("zeoraid open with cache: {open_cache}\nzeoraid open by scan: {open_scan}");
    if args.keep.is_none() {
        remove_storage_files(&db);
    }

    // Python's read database.
    let py = if args.python {
        let t = Instant::now();
        let mut r = run_python(&args, &py_dir, args.rounds, &["--commits", "none"])?;
        let _ = fs::remove_dir_all(&py_dir);
        eprintln!("python bench_fs.py read database: {:.1} s", t.elapsed().as_secs_f64());
        r["commits"] = Json::Array(py_commits);
        Some(r)
    } else {
        None
    };
    let total = started.elapsed().as_secs_f64();

    // The table.
    let mut rows = Vec::new();
    for (per_commit, fsync, top, rates) in &commits {
        let p = py.as_ref().and_then(|p| {
            p["commits"].as_array()?.iter().find(|c| {
                c["objects_per_commit"].as_u64() == Some(*per_commit as u64)
                    && c["fsync"].as_bool() == Some(*fsync)
            })
        });
        let prate = p.and_then(|c| c["commits_per_s"].as_f64());
        let z = best(rates);
        rows.push(Row {
            what: format!(
                "commits/s, {per_commit} object{} of 1 KiB, fsync {}",
                if *per_commit == 1 { "" } else { "s" },
                if *fsync { "on" } else { "off" }
            ),
            zeoraid: format!("{} (p50 {:.0} µs)", fmt_rate(z), top.p50_us),
            python: match p {
                Some(c) => format!(
                    "{} (p50 {:.0} µs)",
                    fmt_opt(prate, fmt_rate),
                    c["latency_us"]["p50"].as_f64().unwrap_or(f64::NAN)
                ),
                None => "–".into(),
            },
            ratio: ratio(z, prate),
            target: "≥ 5×".into(),
        });
    }
    let pload = py.as_ref().and_then(|p| p["load_before"]["per_s"].as_f64());
    rows.push(Row {
        what: format!("load_before/s, {} objects, random oids", fmt_rate(args.objects as f64)),
        zeoraid: fmt_rate(best(&loads)),
        python: fmt_opt(pload, fmt_rate),
        ratio: ratio(best(&loads), pload),
        target: "≥ 5×".into(),
    });
    let secs = |j: &Json| j["seconds"].as_f64();
    let pcache = py.as_ref().and_then(|p| secs(&p["open"]["with_index"]));
    let pscan = py.as_ref().and_then(|p| secs(&p["open"]["without_index"]));
    let zcache = secs(&open_cache).unwrap_or(f64::NAN);
    let zscan = secs(&open_scan).unwrap_or(f64::NAN);
    // For times and sizes the ratio is Python's figure over zeoraid's: above 1× zeoraid is better.
    let inv = |z: f64, p: Option<f64>| p.map_or_else(|| "–".to_owned(), |p| format!("{:.2}×", p / z));
    rows.push(Row {
        what: "open, with index cache (zeoraid) / `.index` (Python)".into(),
        zeoraid: fmt_secs(zcache),
        python: fmt_opt(pcache, fmt_secs),
        ratio: inv(zcache, pcache),
        target: "≤ 1 s".into(),
    });
    rows.push(Row {
        what: "open, without (full scan)".into(),
        zeoraid: fmt_secs(zscan),
        python: fmt_opt(pscan, fmt_secs),
        ratio: inv(zscan, pscan),
        target: "–".into(),
    });
    let n = args.objects as f64;
    let zrss = open_scan["rss_growth"].as_f64().map(|b| b / n);
    let zrss_cache = open_cache["rss_growth"].as_f64().map(|b| b / n);
    let zacct = open_scan["index_heap_bytes"].as_f64().map(|b| b / n);
    let prss = py.as_ref().and_then(|p| p["open"]["without_index"]["rss_growth"].as_f64()).map(|b| b / n);
    let prss_cache = py.as_ref().and_then(|p| p["open"]["with_index"]["rss_growth"].as_f64()).map(|b| b / n);
    let bpo = |x: f64| format!("{x:.1}");
    rows.push(Row {
        what: "index memory, bytes/object (RSS growth of a fresh process over the open by scan)".into(),
        zeoraid: fmt_opt(zrss, bpo),
        python: fmt_opt(prss, bpo),
        ratio: zrss.map_or_else(|| "–".into(), |z| inv(z, prss)),
        target: "≤ 32".into(),
    });
    rows.push(Row {
        what: "index memory, bytes/object (RSS growth over the open with cache / `.index`)".into(),
        zeoraid: fmt_opt(zrss_cache, bpo),
        python: fmt_opt(prss_cache, bpo),
        ratio: zrss_cache.map_or_else(|| "–".into(), |z| inv(z, prss_cache)),
        target: "≤ 32".into(),
    });
    rows.push(Row {
        what: "index memory, bytes/object (the index's own accounting)".into(),
        zeoraid: fmt_opt(zacct, bpo),
        python: "–".into(),
        ratio: "–".into(),
        target: "≤ 32".into(),
    });

    let mut t = String::new();
    writeln!(t, "| measurement | zeoraid | Python FileStorage | zeoraid vs Python | target |")?;
    writeln!(t, "|---|---:|---:|---:|---|")?;
    for r in &rows {
        writeln!(t, "| {} | {} | {} | {} | {} |", r.what, r.zeoraid, r.python, r.ratio, r.target)?;
    }
    writeln!(t)?;
    writeln!(
        t,
        "Rates: zeoraid ÷ Python. Times and memory: Python ÷ zeoraid. Above 1× zeoraid is ahead. \
         Best of {} round(s) per figure, on both sides.",
        args.rounds
    )?;
    writeln!(
        t,
        "zeoraid's load_before: {:.2} µs per call on the CPU, {:.2} µs by the wall clock; Python's: \
         {} µs by the wall clock.",
        load_cpu_us.unwrap_or(f64::NAN),
        1e6 / best(&loads),
        py.as_ref()
            .and_then(|p| p["load_before"]["us_per_call"].as_f64())
            .map_or("–".into(), |u| format!("{u:.2}")),
    )?;
    writeln!(
        t,
        "Database: {} objects of {} bytes in transactions of {BATCH}, fsync off; zeoraid's file {size} \
         bytes{}, written in {build_s:.1} s{}.",
        fmt_rate(n),
        RECORD_HEAD.len() + OBJECT_SIZE + RECORD_TAIL.len(),
        py.as_ref()
            .and_then(|p| p["read_db"]["file_bytes"].as_u64())
            .map_or(String::new(), |b| format!(", Python's {b} bytes")),
        py.as_ref()
            .and_then(|p| p["read_db"]["build_seconds"].as_f64())
            .map_or(String::new(), |s| format!(" (Python: {s:.1} s)")),
    )?;
    writeln!(
        t,
        "Run time: {total:.0} s for both engines (`cargo bench -p zeoraid-server --bench storage{}`).",
        {
            let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
            if args.is_empty() {
                String::new()
            } else {
                format!(" -- {}", args.join(" "))
            }
        }
    )?;
    if let Some(p) = &py {
        writeln!(
            t,
            "Python {}, ZODB {}, {} CPUs.",
            p["python"].as_str().unwrap_or("?"),
            p["zodb"].as_str().unwrap_or("?"),
            p["cpus"]
        )?;
    }
    println!("{t}");
    Ok(())
}
