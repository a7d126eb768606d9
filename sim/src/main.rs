//! `zeoraid-sim`: runs simulated worlds. `--seed N` replays one seed; `--seeds N [--from A]`
//! runs the range and prints a summary.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use zeoraid_core::mutation::Mutation;
use zeoraid_sim::runner::{run_many, Report};

/// Deterministic simulation of zeoraid worlds.
#[derive(Debug, Parser)]
#[command(name = "zeoraid-sim")]
struct Args {
    /// Run this one seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Run this many seeds.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// The first seed of the range.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Print the trace of every seed run (always printed for a failure).
    #[arg(long)]
    trace: bool,
    /// Log the servers (tracing, RUST_LOG syntax, e.g. info; best with --jobs 1).
    #[arg(long)]
    log: Option<String>,
    /// Worlds run at once (threads; each world runs on one). Default: the cores.
    #[arg(long)]
    jobs: Option<usize>,
    /// Switch on a test-only mutation (a known bug) in the production code, to see the suite
    /// catch it: one of the names `--mutation list` prints.
    #[arg(long)]
    mutation: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(filter) = &args.log {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .without_time()
            .init();
    }
    let mutation = match args.mutation.as_deref() {
        None => None,
        Some(name) => match Mutation::from_name(name) {
            Some(m) => Some(m),
            None => {
                let names: Vec<&str> = Mutation::ALL.iter().map(|m| m.name()).collect();
                if name != "list" {
                    eprintln!("zeoraid-sim: no mutation named {name:?}");
                }
                println!("mutations: {}", names.join(", "));
                return if name == "list" { ExitCode::SUCCESS } else { ExitCode::from(2) };
            }
        },
    };
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (args.from..args.from.saturating_add(args.seeds)).collect(),
    };
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let trace = args.trace;
    let show = move |r: &Report| {
        if !r.violations.is_empty() {
            println!("{}", r.failure_text());
        } else {
            println!("ok {} ({} commits, {} reads)", r.options.show(), r.acked, r.reads);
            if trace {
                println!("    client errors: {:?}", r.errors);
                for t in &r.trace {
                    println!("    {t}");
                }
            }
        }
    };
    let started = Instant::now();
    let (summary, _) = run_many(seeds, jobs, mutation, &show);
    let secs = started.elapsed().as_secs_f64();
    println!("{}", summary.text());
    println!("wall {secs:.1}s, {:.2} seeds/s", summary.seeds as f64 / secs.max(1e-9));
    if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
