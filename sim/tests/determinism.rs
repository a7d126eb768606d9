//! The determinism self-check: a seed run twice gives the same trace and the same workload.
//!
//! It runs in a test binary of its own, so that no other world runs in the process meanwhile:
//! that is how `zeoraid-sim --seed N` replays a seed. Two worlds running at the same time in
//! one process (`--jobs 2`, the CI batch's worker threads) can still influence each other: with
//! `--seeds 300 --jobs 2` run twice, a few seeds end with different commit counts (seen at
//! 207739a and at 22a1b4b; not root-caused; see docs/simulation.md, "Known gap"). A seed that
//! fails in such a batch is therefore replayed alone, and may not fail there.

use zeoraid_sim::runner::run_seed;

#[test]
fn the_same_seed_gives_the_same_trace() {
    for seed in [3, 8] {
        let a = run_seed(seed);
        let b = run_seed(seed);
        assert!(a.trace.len() > 5, "seed {seed}: a trace of {} lines", a.trace.len());
        assert_eq!(a.trace, b.trace, "seed {seed}: the traces differ");
        assert_eq!((a.acked, a.reads), (b.acked, b.reads), "seed {seed}: the workloads differ");
    }
}
