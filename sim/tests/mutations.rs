//! The suite catches real bugs: each test-only mutation of the production code
//! (`zeoraid_core::mutation`, a known bug switched on for the simulation's thread) makes at
//! least one seed of the CI batch fail. Seeds are tried in order, two at a time, until one
//! fails; the first failing seed of each is printed (replay it with
//! `cargo run -p zeoraid-sim --release -- --seed N --mutation NAME --trace`).

use zeoraid_core::mutation::Mutation;
use zeoraid_sim::runner::first_failing;

/// The batch the mutations must be caught in (the CI batch's range).
const BATCH: u64 = 500;

#[test]
fn every_mutation_makes_a_seed_of_the_batch_fail() {
    let seeds: Vec<u64> = (0..BATCH).collect();
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
    let mut missed = Vec::new();
    for m in Mutation::ALL {
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
