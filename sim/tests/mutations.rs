//! The suite catches real bugs: each test-only mutation of the production code
//! (`zeoraid_core::mutation`, a known bug switched on for the simulation's thread) makes at
//! least one seed of the CI batch fail. Seeds are tried in order, two at a time, until one
//! fails; the first failing seed of each is printed (replay it with
//! `cargo run -p zeoraid-sim --release -- --seed N --mutation NAME --trace`).

use zeoraid_core::mutation::Mutation;
use zeoraid_sim::runner::first_failing;

/// The batch the mutations must be caught in (the CI batch's range).
const BATCH: u64 = 500;

/// Mutations the batch catches (first failing seed when this list was made, in brackets).
const CAUGHT: [Mutation; 9] = [
    Mutation::VoteBeforeAllVoted,      // [0] a read older than an invalidation
    Mutation::InvalidateBeforeFinish,  // [0] a read older than an invalidation
    Mutation::SkipStateFsync,          // [14] an acknowledged commit missing from an optimal backend
    Mutation::SecondRecovery,          // [8] Raid::check: two backends recovering
    Mutation::FinishBeforeAllFinished, // [3] an acknowledged commit missing from an optimal backend
    Mutation::ReuseLastTid,            // [1] commits refused for good once the clock stepped back
    Mutation::NoDegradeOnError,        // [14] a read older than an invalidation
    Mutation::PackDuringRecovery,      // [44] Raid::check after every RAID step: a pack during a recovery
    Mutation::FinishBeforeStateSaved,  // [3] Raid::check: a finish acknowledged before its state was durable
];

/// Mutations the batch does NOT catch yet, each with why (an open gap of the suite, not a
/// pass). None today: `FinishBeforeStateSaved` (session 5's gap: the state write takes no
/// simulated time, so no power cut ever fell between the early answer and the save) is caught
/// by the RAID's own check that a finish is acknowledged only once the state it needs is
/// durable, which the RAID host's driver runs after every step.
const NOT_CAUGHT_YET: [Mutation; 0] = [];

#[test]
fn every_mutation_is_either_caught_or_listed_as_a_gap() {
    for m in Mutation::ALL {
        let listed = usize::from(CAUGHT.contains(&m)) + usize::from(NOT_CAUGHT_YET.contains(&m));
        assert_eq!(listed, 1, "{} must be in exactly one of CAUGHT and NOT_CAUGHT_YET", m.name());
    }
}

#[test]
fn every_caught_mutation_makes_a_seed_of_the_batch_fail() {
    let seeds: Vec<u64> = (0..BATCH).collect();
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
    let mut missed = Vec::new();
    for m in CAUGHT {
        match first_failing(&seeds, jobs, m) {
            Some(r) => {
                let first = r.violations.first().cloned().unwrap_or_default();
                println!("mutation {}: caught by seed {}: {first}", m.name(), r.options.seed);
            }
            None => {
                println!("mutation {}: NOT caught by seeds 0..{BATCH}", m.name());
                missed.push(m.name());
            }
        }
    }
    assert!(missed.is_empty(), "mutations the batch does not catch: {missed:?}");
}
