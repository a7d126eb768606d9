//! The determinism self-check: a seed gives the same trace and the same workload every time it
//! runs, alone or while other worlds run on other threads of the process (as in `--jobs 2` and
//! the CI batch), so that a seed that fails in a batch fails again with `--seed N`.
//!
//! Regression: until the driver's tasks ran on the host's local set (`SimNet::spawn`), a world's
//! run depended on the worlds beside it. A crash drops the host's tasks, and with them its
//! sockets, in the order of tokio's task list, which follows task ids numbered process-wide;
//! each closing socket draws a delay from the world's random numbers, so another thread's
//! spawns changed the draws. Seeds 107, 124 and 129 (each crashes the RAID server) ended with
//! other commit counts beside another world than alone.

use std::sync::atomic::{AtomicBool, Ordering};

use zeoraid_sim::runner::{run_seed, Report};

/// Seeds with server crashes whose runs differed between two `--seeds 300 --jobs 2` runs
/// before the fix, and seed 3 (the self-check's seed since session 7).
const SEEDS: [u64; 4] = [3, 107, 124, 129];

fn same(seed: u64, a: &Report, b: &Report, how: &str) {
    assert!(a.trace.len() > 5, "seed {seed}: a trace of {} lines", a.trace.len());
    assert!(a.violations.is_empty(), "seed {seed} fails:\n{}", a.failure_text());
    assert_eq!(a.trace, b.trace, "seed {seed}: the traces differ {how}");
    assert_eq!((a.acked, a.reads), (b.acked, b.reads), "seed {seed}: the workloads differ {how}");
}

#[test]
fn a_seed_gives_the_same_run_alone_twice_and_beside_other_worlds() {
    let alone: Vec<Report> = SEEDS.iter().map(|&s| run_seed(s)).collect();
    for (&seed, a) in SEEDS.iter().zip(&alone) {
        same(seed, a, &run_seed(seed), "between two runs alone");
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Another world the whole time, spawning tasks on the other thread.
        let other = scope.spawn(|| {
            for seed in 1_000.. {
                run_seed(seed);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        });
        let beside: Vec<Report> = SEEDS.iter().map(|&s| run_seed(s)).collect();
        stop.store(true, Ordering::Relaxed);
        other.join().expect("the other thread's worlds do not panic");
        for ((&seed, a), b) in SEEDS.iter().zip(&alone).zip(&beside) {
            same(seed, a, b, "alone and beside another world");
        }
    });
}
