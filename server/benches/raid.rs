//! The RAID against a single backend, same machine, same run, same load generator.
//!
//! ```text
//! cargo bench -p zeoraid-server --bench raid [-- [--seconds 5] [--warmup 1]
//!                                               [--commit-clients 1,16] [--load-clients 16]
//!                                               [--dataset 10000] [--threads 1]
//!                                               [--only commits,latency,reads]]
//! ```
//!
//! Cargo builds `zeoraid` and `zeoraid-load` in release mode. The servers are started with the
//! tests crate's harness (`zeoraid_tests::server::ServerProcess`, `zeoraid_tests::raid`): stock
//! `runzeo` from the pinned venv (FileStorage + blobs, `client-conflict-resolution true`, fsync
//! at every commit) and `zeoraid serve --config` over generated RAID configs (local backends
//! fsync too). Three comparisons, each in one run:
//! 1. **commit throughput**, `--commit-clients` clients: a RAID of two local backends against a
//!    RAID of one local backend (the single-storage server); target ≥ 0.8×;
//! 2. **commit latency**, one client: a RAID of two stock `runzeo` backends against the client
//!    talking to one `runzeo` directly; target p50 and p99 ≤ 1.3×; also against a RAID of one
//!    `runzeo` (zeoraid's hop alone, without the second server's fsync on the same disk);
//! 3. **read throughput** (`loadBefore` of random oids), `--load-clients` clients: a RAID of two
//!    stock `runzeo` backends against a RAID of one, and against one `runzeo` directly; target
//!    ≥ 1.6× the RAID of one (reads spread over the backends).
//!
//! Prints a markdown table with the ratios; "server cpu" is the zeoraid process (or the direct
//! `runzeo`), not the `runzeo` backends behind a RAID. This is a benchmark, not a test: nothing here
//! asserts a figure. `harness = false`; `cargo bench` passes `--bench`, which is ignored.

mod common;

use common::{cell, num, ratio, run_load, Res, ZEORAID};
use serde_json::Value as Json;
use std::fmt::Write as _;
use std::path::PathBuf;
use zeoraid_core::wire::Encoding;
use zeoraid_tests::raid::{BackendKind, RaidSpec};
use zeoraid_tests::server::{ServerKind, ServerOpts, ServerProcess};

#[derive(Debug, Clone)]
struct Args {
    seconds: String,
    warmup: String,
    commit_clients: String,
    load_clients: String,
    dataset: String,
    threads: String,
    only: Vec<String>,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        seconds: "5".into(),
        warmup: "1".into(),
        commit_clients: "1,16".into(),
        load_clients: "16".into(),
        dataset: "10000".into(),
        threads: "1".into(),
        only: vec!["commits".into(), "latency".into(), "reads".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--seconds" => a.seconds = value()?,
            "--warmup" => a.warmup = value()?,
            "--commit-clients" => a.commit_clients = value()?,
            "--load-clients" => a.load_clients = value()?,
            "--dataset" => a.dataset = value()?,
            "--threads" => a.threads = value()?,
            "--only" => a.only = value()?.split(',').map(str::to_owned).collect(),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    Ok(a)
}

/// A server to measure.
enum Target {
    /// Stock runzeo, clients straight to it.
    Runzeo,
    /// zeoraid over these backends.
    Raid(&'static str, Vec<BackendKind>),
}

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Runzeo => "stock runzeo (direct)".into(),
            Target::Raid(label, _) => label.to_string(),
        }
    }

    fn start(&self) -> Res<ServerProcess> {
        let kind = match self {
            Target::Runzeo => ServerKind::Runzeo,
            Target::Raid(label, backends) => {
                let spec = RaidSpec { label, backends: backends.clone(), ..RaidSpec::local() };
                ServerKind::Raid { binary: PathBuf::from(ZEORAID), spec }
            }
        };
        Ok(ServerProcess::start(kind, ServerOpts::new(Encoding::Pickle))?)
    }
}

/// Runs the generator against a fresh server of `target`; returns its JSON lines.
fn measure(args: &Args, target: &Target, workload: &str, clients: &str) -> Res<Vec<Json>> {
    eprintln!("raid bench: {workload} × {clients} clients against {}", target.name());
    let mut server = target.start()?;
    let runs = run_load(
        &server.address_arg(),
        server.pid(),
        &[
            "--workload",
            workload,
            "--clients",
            clients,
            "--duration",
            &args.seconds,
            "--warmup",
            &args.warmup,
            "--threads",
            &args.threads,
            "--dataset",
            &args.dataset,
        ],
    );
    server.stop_all()?;
    runs.map_err(|e| format!("{e} ({})\n{}", target.name(), server.log_tail()).into())
}

/// One comparison: `subject` against `base`, each a list of runs (one per client count).
struct Comparison {
    title: &'static str,
    metric: &'static str,
    target: &'static str,
    subject: (String, Vec<Json>),
    bases: Vec<(String, Vec<Json>)>,
}

fn table(comparisons: &[Comparison]) -> String {
    let mut t = String::from(
        "| comparison | server | workload | clients | ops/s | p50 µs | p99 µs | errors | gen cpu | server cpu | ratio | target |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for c in comparisons {
        let (sname, sruns) = &c.subject;
        for s in sruns {
            let clients = num(s, "clients");
            let row = |t: &mut String, name: &str, j: &Json, ratio: String, target: &str| {
                let _ = writeln!(
                    t,
                    "| {} | {name} | {} | {} | {} | {} | {} | {} | {} | {} | {ratio} | {target} |",
                    c.title,
                    j.get("workload").and_then(Json::as_str).unwrap_or("?"),
                    cell(num(j, "clients"), 0),
                    cell(num(j, "ops_per_s"), 0),
                    cell(num(j, "p50_us"), 0),
                    cell(num(j, "p99_us"), 0),
                    cell(num(j, "errors"), 0),
                    cell(num(j, "gen_cpu"), 2),
                    cell(num(j, "server_cpu"), 2),
                );
            };
            row(&mut t, sname, s, String::new(), "");
            for (bname, bruns) in &c.bases {
                let Some(b) = bruns.iter().find(|b| num(b, "clients") == clients) else { continue };
                let r = match c.metric {
                    "latency" => format!(
                        "p50 {} p99 {}",
                        ratio(num(s, "p50_us"), num(b, "p50_us")),
                        ratio(num(s, "p99_us"), num(b, "p99_us"))
                    ),
                    _ => format!("ops/s {}", ratio(num(s, "ops_per_s"), num(b, "ops_per_s"))),
                };
                row(&mut t, bname, b, format!("{sname} / this: {r}"), c.target);
            }
        }
    }
    t
}

fn main() -> Res<()> {
    let args = parse_args()?;
    let two_local = Target::Raid("raid: 2 local", vec![BackendKind::Local, BackendKind::Local]);
    let one_local = Target::Raid("raid: 1 local", vec![BackendKind::Local]);
    let two_zeo = Target::Raid("raid: 2 runzeo", vec![BackendKind::Runzeo, BackendKind::Runzeo]);
    let one_zeo = Target::Raid("raid: 1 runzeo", vec![BackendKind::Runzeo]);
    let direct = Target::Runzeo;

    let wanted = |name: &str| args.only.iter().any(|o| o == name);
    let mut comparisons = Vec::new();
    if wanted("commits") {
        comparisons.push(Comparison {
            title: "commit throughput",
            metric: "throughput",
            target: "≥ 0.8×",
            subject: (two_local.name(), measure(&args, &two_local, "commits", &args.commit_clients)?),
            bases: vec![(one_local.name(), measure(&args, &one_local, "commits", &args.commit_clients)?)],
        });
    }
    if wanted("latency") {
        comparisons.push(Comparison {
            title: "commit latency",
            metric: "latency",
            target: "≤ 1.3×",
            subject: (two_zeo.name(), measure(&args, &two_zeo, "commits", "1")?),
            bases: vec![
                (direct.name(), measure(&args, &direct, "commits", "1")?),
                // What zeoraid's hop costs alone, without a second server on the same disk.
                (one_zeo.name(), measure(&args, &one_zeo, "commits", "1")?),
            ],
        });
    }
    if wanted("reads") {
        comparisons.push(Comparison {
            title: "read throughput",
            metric: "throughput",
            target: "≥ 1.6× (raid of 1)",
            subject: (two_zeo.name(), measure(&args, &two_zeo, "loads", &args.load_clients)?),
            bases: vec![
                (one_zeo.name(), measure(&args, &one_zeo, "loads", &args.load_clients)?),
                (direct.name(), measure(&args, &direct, "loads", &args.load_clients)?),
            ],
        });
    }
    println!(
        "\n{} s per point after {} s warm-up, seed {}, generator threads {}; {}\n",
        args.seconds,
        args.warmup,
        common::SEED,
        args.threads,
        common::machine(),
    );
    print!("{}", table(&comparisons));
    Ok(())
}
