//! `zeoraid-load`: a ZEO load generator for benchmarks, usable against any ZEO 5/6 server
//! (zeoraid, or stock `runzeo`).
//!
//! ```text
//! zeoraid-load --address 127.0.0.1:8100 --workload commits,loads --clients 1,4,16 \
//!              [--duration 5] [--warmup 1] [--objects 1] [--size 100] [--dataset 10000] \
//!              [--depth 1] [--seed N] [--threads 1] [--server-pid PID] [--json] [--strict]
//! ```
//!
//! Each run (one workload × one client count) opens N connections, one per client, each
//! driven by its own task: the ZEO handshake (the server's letter copied), `register(storage,
//! False)`, `get_info`, then the workload (see `workload.rs`) for the warm-up and the measured
//! duration. Output: a table (one line per run) or, with `--json`, one JSON object per run:
//! ops, ops/s, p50/p90/p99/max latency in µs, errors by kind, and the CPU (in cores) used by
//! this process and by `--server-pid` during the measurement. Any set-up failure ends the
//! program (exit 1); errors during a run are counted, and with `--strict` any counted error
//! makes the exit status 1.
#![forbid(unsafe_code)]

mod args;
mod conn;
mod cpu;
mod stats;
mod workload;

use args::{Address, Args, Workload};
use clap::Parser;
use conn::ConnError;
use stats::{ErrorCounts, Report, Samples};
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::task::JoinHandle;
use workload::{ClientResult, CommitClient, LoadClient, Rng, Schedule};
use zeoraid_core::ids::Oid;
use zeoraid_core::wire::Encoding;

/// Why the generator gave up (set-up failures; errors during runs are counted instead).
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("{0}")]
    Conn(#[from] ConnError),
    #[error("{what} took longer than {secs:.1} s")]
    Timeout { what: &'static str, secs: f64 },
    #[error("a client task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

async fn within<T, F>(limit: Duration, what: &'static str, fut: F) -> Result<T, RunError>
where
    F: Future<Output = Result<T, ConnError>>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(RunError::Timeout { what, secs: limit.as_secs_f64() }),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(clock_seed);
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads as usize)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)
        .and_then(|rt| rt.block_on(run_all(&args, seed)));
    match result {
        Ok(errors) if args.strict && errors > 0 => {
            eprintln!("zeoraid-load: {errors} errors counted (--strict)");
            ExitCode::from(1)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zeoraid-load: {e}");
            ExitCode::from(1)
        }
    }
}

fn clock_seed() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
}

/// Runs every workload × client count; returns the number of errors counted.
async fn run_all(args: &Args, seed: u64) -> Result<u64, RunError> {
    let mut setup = within(args.timeout, "connecting", workload::open(&args.address, &args.storage)).await?;
    let encoding = setup.encoding();
    let data = workload::record(args.size as usize, &mut Rng::new(seed, u64::MAX));
    let dataset: Option<Arc<[Oid]>> = if args.workload.contains(&Workload::Loads) {
        let batches = args.dataset.div_ceil(1000);
        let limit = args.timeout.saturating_mul(batches.saturating_add(1));
        let oids = within(
            limit,
            "creating the data set",
            workload::create_dataset(&mut setup, args.dataset as usize, &data),
        )
        .await?;
        Some(oids.into())
    } else {
        None
    };
    drop(setup);
    if !args.json {
        let enc = match encoding {
            Encoding::Pickle => "pickle",
            Encoding::Msgpack => "msgpack",
        };
        println!(
            "# zeoraid-load {}: {} ({enc}), seed {seed}, records of {} bytes, {} thread(s)",
            env!("CARGO_PKG_VERSION"),
            args.address,
            data.len(),
            args.threads
        );
        println!("{}", Report::table_header());
    }
    let mut errors = 0;
    for &w in &args.workload {
        for &clients in &args.clients {
            let report = run_one(args, w, clients, seed, &data, dataset.clone()).await?;
            errors += report.errors.total();
            if args.json {
                println!("{}", report.to_json());
            } else {
                println!("{}", report.table_row());
            }
        }
    }
    Ok(errors)
}

enum Prepared {
    Commit(CommitClient),
    Load(LoadClient),
}

/// What one client needs for its set-up.
struct ClientSpec {
    address: Address,
    storage: String,
    workload: Workload,
    objects: usize,
    data: bytes::Bytes,
    dataset: Option<Arc<[Oid]>>,
    depth: usize,
    rng: Rng,
}

async fn prepare(spec: ClientSpec) -> Result<Prepared, ConnError> {
    let conn = workload::open(&spec.address, &spec.storage).await?;
    Ok(match spec.workload {
        Workload::Commits => Prepared::Commit(CommitClient::prepare(conn, spec.objects, spec.data).await?),
        Workload::Loads => Prepared::Load(LoadClient {
            conn,
            oids: spec.dataset.unwrap_or_else(|| Arc::from([])),
            depth: spec.depth,
            rng: spec.rng,
        }),
    })
}

/// One run: set up `clients` clients, run them on one schedule, merge their results.
async fn run_one(
    args: &Args,
    w: Workload,
    clients: u32,
    seed: u64,
    data: &bytes::Bytes,
    dataset: Option<Arc<[Oid]>>,
) -> Result<Report, RunError> {
    let mut setups: Vec<JoinHandle<Result<Prepared, RunError>>> = Vec::new();
    for i in 0..clients {
        let mut rng = Rng::new(seed, u64::from(i));
        // Each commits client writes its own payload; the loads clients only need the rng.
        let data = if w == Workload::Commits { workload::record(data.len(), &mut rng) } else { data.clone() };
        let fut = prepare(ClientSpec {
            address: args.address.clone(),
            storage: args.storage.clone(),
            workload: w,
            objects: args.objects as usize,
            data,
            dataset: dataset.clone(),
            depth: args.depth as usize,
            rng,
        });
        let limit = args.timeout;
        setups.push(tokio::spawn(async move { within(limit, "client set-up", fut).await }));
    }
    let mut prepared = Vec::with_capacity(setups.len());
    for s in setups {
        prepared.push(s.await??);
    }

    let start = Instant::now();
    let warm_end = start + args.warmup;
    let end = warm_end + args.duration;
    let sched = Schedule { warm_end, end, deadline: end + args.timeout };
    let runs: Vec<JoinHandle<ClientResult>> = prepared
        .into_iter()
        .map(|p| match p {
            Prepared::Commit(c) => tokio::spawn(c.run(sched)),
            Prepared::Load(c) => tokio::spawn(c.run(sched)),
        })
        .collect();

    tokio::time::sleep_until(warm_end.into()).await;
    let (t0, gen0, srv0) =
        (Instant::now(), cpu::cpu_time(None), args.server_pid.and_then(|p| cpu::cpu_time(Some(p))));
    tokio::time::sleep_until(end.into()).await;
    let (t1, gen1, srv1) =
        (Instant::now(), cpu::cpu_time(None), args.server_pid.and_then(|p| cpu::cpu_time(Some(p))));
    let wall = (t1 - t0).as_secs_f64();
    let cores = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) if wall > 0.0 => Some(b.saturating_sub(a).as_secs_f64() / wall),
        _ => None,
    };

    let (mut ops, mut samples, mut errors) = (0, Samples::default(), ErrorCounts::default());
    for r in runs {
        let r = r.await?;
        ops += r.ops;
        samples.merge(r.samples);
        errors.merge(r.errors);
    }
    Ok(Report {
        address: args.address.to_string(),
        workload: w.name(),
        clients,
        depth: if w == Workload::Loads { args.depth } else { 1 },
        objects: if w == Workload::Commits { args.objects } else { 1 },
        record_bytes: data.len(),
        ops,
        seconds: args.duration.as_secs_f64(),
        latency: samples.summarize(),
        errors,
        gen_cpu: cores(gen0, gen1),
        server_cpu: cores(srv0, srv1),
        seed,
    })
}
