//! Runs seeds and judges them: [`run_seed`] builds the world of one seed, runs it, reads the
//! backends' final histories and applies every checker; [`Summary`] adds runs up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use zeoraid_core::mutation::{self, Mutation};

use crate::checker::{self, Final};
use crate::hosts::RAID_TRANSACTION_TIMEOUT;
use crate::record::Outcome;
use crate::world::{self, Options};

/// After the healing, how long each client may take to get a commit acknowledged: the RAID
/// host's `transaction_timeout` and 10 s more. A client may have closed a connection that held
/// the front's commit lock (voted, not finished) while its link to the RAID host was
/// partitioned: turmoil drops every segment sent over a partitioned link, the FIN too, and never
/// retransmits it (real TCP does, once the link heals), so the RAID host learns of that close
/// only when the transaction timeout aborts the transaction, and every other vote waits until
/// then (seed 579 of the 10,000-seed run: c1's old connection, 26 s after the healing).
pub const LIVENESS_BOUND: Duration = RAID_TRANSACTION_TIMEOUT.saturating_add(Duration::from_secs(10));

/// The result of one seed.
#[derive(Debug)]
pub struct Report {
    /// The options derived from the seed.
    pub options: Options,
    /// Every violation (empty: the seed passes).
    pub violations: Vec<String>,
    /// The compact trace.
    pub trace: Vec<String>,
    /// Simulated time of the run.
    pub simulated: Duration,
    /// Acknowledged commits checked.
    pub acked: u64,
    /// Commits with an unknown outcome.
    pub unknown: u64,
    /// Reads checked.
    pub reads: u64,
    /// Faults injected by kind.
    pub faults: BTreeMap<String, u64>,
    /// Backend state transitions by kind.
    pub transitions: BTreeMap<String, u64>,
    /// Client errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// The test-only mutation switched on for the run, if any.
    pub mutation: Option<Mutation>,
}

impl Report {
    /// The failure text: seed, options, violations, trace and the replay command.
    pub fn failure_text(&self) -> String {
        let mut s = match self.mutation {
            Some(m) => format!("FAILED {} with mutation {}\n", self.options.show(), m.name()),
            None => format!("FAILED {}\n", self.options.show()),
        };
        for v in &self.violations {
            s.push_str(&format!("  violation: {v}\n"));
        }
        s.push_str(&format!("  client errors: {:?}\n", self.errors));
        s.push_str("  trace:\n");
        for t in &self.trace {
            s.push_str(&format!("    {t}\n"));
        }
        let with = self.mutation.map(|m| format!(" --mutation {}", m.name())).unwrap_or_default();
        s.push_str(&format!(
            "  replay: cargo run -p zeoraid-sim --release -- --seed {}{with} --trace\n",
            self.options.seed
        ));
        s
    }
}

/// Runs and judges one seed.
pub fn run_seed(seed: u64) -> Report {
    run_options(&Options::from_seed(seed))
}

/// Runs and judges one seed with the test-only `mutation` switched on (for this thread, which
/// runs the whole world) — `None`: the production code as it is.
pub fn run_seed_with(seed: u64, m: Option<Mutation>) -> Report {
    let before = mutation::set(m);
    let mut r = run_seed(seed);
    mutation::set(before);
    r.mutation = m;
    r
}

/// Runs `seeds` on `jobs` threads (each world runs on one thread); `each` sees every report as
/// it comes (from the worker threads). Returns the summary and the failed reports, by seed.
pub fn run_many(
    seeds: Vec<u64>,
    jobs: usize,
    m: Option<Mutation>,
    each: &(dyn Fn(&Report) + Sync),
) -> (Summary, Vec<Report>) {
    let queue = Mutex::new(seeds.into_iter().rev().collect::<Vec<u64>>());
    let total = Arc::new(Mutex::new((Summary::default(), Vec::new())));
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
                let Some(seed) = next else { break };
                let r = run_seed_with(seed, m);
                each(&r);
                let mut t = total.lock().unwrap_or_else(PoisonError::into_inner);
                t.0.add(&r);
                if !r.violations.is_empty() {
                    t.1.push(r);
                }
            });
        }
    });
    let (summary, mut failed) = std::mem::take(&mut *total.lock().unwrap_or_else(PoisonError::into_inner));
    failed.sort_by_key(|r| r.options.seed);
    (summary, failed)
}

/// The first seed of `seeds` (in order) that fails with `m` switched on, running `jobs` seeds
/// at a time; `None` when every seed passes.
pub fn first_failing(seeds: &[u64], jobs: usize, m: Mutation) -> Option<Report> {
    for chunk in seeds.chunks(jobs.max(1)) {
        let (_, failed) = run_many(chunk.to_vec(), jobs, Some(m), &|_| {});
        if let Some(r) = failed.into_iter().next() {
            return Some(r);
        }
    }
    None
}

/// Runs and judges one world.
pub fn run_options(options: &Options) -> Report {
    let f = world::run(options);
    let panics = crate::panics::take();
    let log = f.log.lock();
    let mut unreadable = Vec::new();
    let finals: Vec<Final> = f
        .stores
        .iter()
        .map(|(name, store)| Final {
            name: name.clone(),
            optimal: log.last_states.get(name).is_some_and(|s| s == "optimal"),
            history: crate::disk::history(name, store).unwrap_or_else(|e| {
                unreadable.push(format!("the storage of {name} cannot be read at the end: {e}"));
                Vec::new()
            }),
        })
        .collect();
    let mut violations = log.violations.clone();
    violations.extend(unreadable);
    if let Some(e) = &f.sim_error {
        violations.push(format!("the simulation failed: {e}"));
    }
    violations.extend(panics.into_iter().map(|p| format!("invariant 7: {p}")));
    if !finals.iter().any(|x| x.optimal) {
        violations.push("no backend is optimal at the end".to_string());
    }
    violations.extend(checker::no_lost_commit(&log.commits, &finals));
    violations.extend(checker::identical_histories(&finals));
    violations.extend(checker::reads_serializable(&log.reads, &log.commits, &finals));
    violations.extend(checker::tids_increase(&log.commits, &finals));
    violations.extend(checker::liveness(&log, options.clients, f.healed_at, LIVENESS_BOUND, &finals));
    Report {
        options: options.clone(),
        violations,
        trace: log.trace.clone(),
        simulated: f.simulated,
        acked: log.commits.iter().filter(|c| matches!(c.outcome, Outcome::Acked(_))).count() as u64,
        unknown: log.commits.iter().filter(|c| c.outcome == Outcome::Unknown).count() as u64,
        reads: log.reads.len() as u64,
        faults: log.faults.clone(),
        transitions: log.transitions.clone(),
        errors: log.errors.clone(),
        mutation: None,
    }
}

/// Totals over many seeds.
#[derive(Debug, Default)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds failed.
    pub failed: Vec<u64>,
    /// Simulated time.
    pub simulated: Duration,
    /// Acknowledged commits checked.
    pub acked: u64,
    /// Unknown outcomes.
    pub unknown: u64,
    /// Reads checked.
    pub reads: u64,
    /// Faults by kind.
    pub faults: BTreeMap<String, u64>,
    /// Transitions by kind.
    pub transitions: BTreeMap<String, u64>,
}

impl Summary {
    /// Adds one report.
    pub fn add(&mut self, r: &Report) {
        self.seeds += 1;
        if !r.violations.is_empty() {
            self.failed.push(r.options.seed);
        }
        self.simulated += r.simulated;
        self.acked += r.acked;
        self.unknown += r.unknown;
        self.reads += r.reads;
        for (k, n) in &r.faults {
            *self.faults.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &r.transitions {
            *self.transitions.entry(k.clone()).or_default() += n;
        }
    }

    /// Adds another summary.
    pub fn merge(&mut self, o: Summary) {
        self.seeds += o.seeds;
        self.failed.extend(o.failed);
        self.simulated += o.simulated;
        self.acked += o.acked;
        self.unknown += o.unknown;
        self.reads += o.reads;
        for (k, n) in o.faults {
            *self.faults.entry(k).or_default() += n;
        }
        for (k, n) in o.transitions {
            *self.transitions.entry(k).or_default() += n;
        }
    }

    /// The summary text.
    pub fn text(&self) -> String {
        let kv = |m: &BTreeMap<String, u64>| {
            m.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
        };
        format!(
            "seeds {} (failed {}: {:?})\nsimulated {:.2} h\ncommits checked {} acknowledged, {} unknown; reads checked {}\nfaults: {}\ntransitions: {}",
            self.seeds,
            self.failed.len(),
            self.failed,
            self.simulated.as_secs_f64() / 3600.0,
            self.acked,
            self.unknown,
            self.reads,
            kv(&self.faults),
            kv(&self.transitions)
        )
    }
}
