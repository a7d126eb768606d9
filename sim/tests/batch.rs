//! The CI batch: a fixed range of seeds, every invariant judged on each; the coverage of fault
//! kinds and backend-state transitions over the batch. (The determinism self-check is in
//! `determinism.rs`.)
//!
//! The batch runs on worker threads (one world per thread at a time; each world is
//! single-threaded), so that both cores of the CI machine work on it.

use std::collections::BTreeSet;

use zeoraid_sim::nemesis::Fault;
use zeoraid_sim::proxy::FaultKind;
use zeoraid_sim::runner::{run_many, Report, Summary};

/// The batch: seeds `0..BATCH`.
const BATCH: u64 = 500;

/// The transitions of the backend state diagram (core/src/raid/types.rs) the batch must hit.
const TRANSITIONS: [&str; 8] = [
    "optimal->degraded",
    "degraded->optimal",
    "optimal->disabled",
    "degraded->disabled",
    "degraded->recovering",
    "disabled->recovering",
    "recovering->optimal",
    "recovering->degraded",
];

/// Runs `seeds` on the available cores; the summary and the failure texts.
fn run_all(seeds: Vec<u64>) -> (Summary, Vec<String>) {
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
    let progress = |r: &Report| {
        if r.options.seed % 50 == 0 {
            eprintln!("batch: seed {} done", r.options.seed);
        }
    };
    let (summary, failed) = run_many(seeds, jobs, None, &progress);
    let texts: Vec<String> = failed.iter().map(Report::failure_text).collect();
    for t in &texts {
        eprintln!("{t}");
    }
    (summary, texts)
}

#[test]
fn ci_batch_passes_and_covers_every_fault_and_transition() {
    let (summary, failures) = run_all((0..BATCH).collect());
    println!("{}", summary.text());
    assert!(failures.is_empty(), "{} seed(s) failed:\n{}", failures.len(), failures.join("\n"));
    let proxy_kinds: Vec<String> = FaultKind::ALL.iter().map(|k| format!("proxy-{}", k.name())).collect();
    let missing_faults: Vec<&str> = Fault::ALL
        .iter()
        .map(|f| f.name())
        .chain(proxy_kinds.iter().map(String::as_str))
        .filter(|f| !summary.faults.contains_key(*f))
        .collect();
    let missing_transitions: BTreeSet<&str> =
        TRANSITIONS.iter().copied().filter(|t| !summary.transitions.contains_key(*t)).collect();
    assert!(
        missing_faults.is_empty() && missing_transitions.is_empty(),
        "never hit over the batch: faults {missing_faults:?}, transitions {missing_transitions:?}"
    );
}
