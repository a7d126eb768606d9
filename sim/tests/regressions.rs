//! Seeds outside the CI batch (`0..500`) that found production bugs in a long run
//! (`--seeds 10000`), kept as regression cases: each failed before its fix and passes since.
//! Bugs found by seeds of the batch are covered by the batch itself (docs/simulation.md lists
//! them all).

use zeoraid_sim::runner::{run_many, Report};

/// (seed, the bug it found; the fix is in the commit that names the seed).
const REGRESSIONS: &[(u64, &str)] = &[
    (2501, "every vote conflicted for good: a history that moved on to a tid already the floor stayed invisible"),
    (2809, "the same"),
    (7317, "the same"),
    (7569, "the same"),
    (7836, "the same"),
    (924, "the RAID stayed failed: its last optimal backend was judged against a last tid raised to a wrong report"),
    (2101, "the same (the wrong report ahead of an empty backend)"),
    (3201, "the same"),
    (3368, "the same"),
    (3903, "the same"),
    (4149, "the same (inspected: a wrong lastTransaction ahead of the truth at a reconnection)"),
    (4451, "the same"),
    (4548, "the same"),
    (5566, "the same"),
    (6150, "the same (the wrong report ahead of an empty backend)"),
    (7905, "the same"),
    (8097, "the same"),
    (8175, "the same"),
    (9711, "the same"),
    (127, "no commit for good: the previous RAID's last finish landed after the restarted one had read the backends' last tids, and every new tid was refused (found with the check of lastTransaction)"),
    (1135, "a RAID whose first start reached no backend (one disabled, one down) never acknowledged a commit, yet refused every recover for good"),
];

#[test]
fn seeds_that_found_production_bugs_pass() {
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
    let seeds: Vec<u64> = REGRESSIONS.iter().map(|&(s, _)| s).collect();
    let (summary, failed) = run_many(seeds, jobs, None, &|_: &Report| {});
    let texts: Vec<String> = failed
        .iter()
        .map(|r| {
            let why = REGRESSIONS.iter().find(|&&(s, _)| s == r.options.seed).map_or("", |&(_, w)| w);
            format!("regression seed {} ({why}):\n{}", r.options.seed, r.failure_text())
        })
        .collect();
    assert_eq!(summary.seeds, REGRESSIONS.len() as u64, "every regression seed ran");
    assert!(texts.is_empty(), "{} regression seed(s) failed:\n{}", texts.len(), texts.join("\n"));
}
