//! What a run records: the clients' commits and reads, the trace (backend state changes and
//! nemesis actions, with simulated time), the monitor's observations, panics.
//!
//! One [`Log`] per world, shared by every host through an `Arc<Mutex<_>>` (turmoil runs every
//! host on the one thread of the simulation, so the lock is never contended).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use zeoraid_core::ids::{Oid, Tid};

/// How a commit ended, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `tpc_finish` answered with this tid.
    Acked(Tid),
    /// `tpc_finish` was sent but no answer came (or an error did): it may or may not be in.
    Unknown,
    /// Aborted before `tpc_finish` was sent (conflict, error, lost connection at vote).
    Failed(String),
}

/// One transaction a client attempted.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The client (`c0`, `c1`, …).
    pub client: u32,
    /// Its sequence number at that client (from 0: the set-up transaction of `c0`).
    pub seq: u64,
    /// The objects written, each with `data`.
    pub oids: Vec<Oid>,
    /// The data written (unique: names the client and sequence).
    pub data: Bytes,
    /// How it ended.
    pub outcome: Outcome,
    /// When `tpc_begin` was sent (simulated time since the start).
    pub began: Duration,
    /// When it ended.
    pub ended: Duration,
}

/// The data a transaction writes: `c{client}:{seq}`.
pub fn data_of(client: u32, seq: u64) -> Bytes {
    Bytes::from(format!("c{client}:{seq}"))
}

/// The (client, seq) a datum names, if it is one of the workload's.
pub fn parse_data(d: &[u8]) -> Option<(u32, u64)> {
    let s = std::str::from_utf8(d).ok()?.strip_prefix('c')?;
    let (c, q) = s.split_once(':')?;
    Some((c.parse().ok()?, q.parse().ok()?))
}

/// One `loadBefore` answer.
#[derive(Debug, Clone)]
pub struct Read {
    /// The client.
    pub client: u32,
    /// The object.
    pub oid: Oid,
    /// The exclusive bound asked.
    pub before: Tid,
    /// When it was sent.
    pub sent: Duration,
    /// `(data, start, end)`, or `None` (no revision before `before`).
    pub answer: Option<(Bytes, Tid, Option<Tid>)>,
    /// When the answer came.
    pub at: Duration,
}

/// Everything recorded in one run.
#[derive(Debug, Default)]
pub struct Log {
    /// Every transaction attempted, in the order they ended.
    pub commits: Vec<Commit>,
    /// Every `loadBefore` answered.
    pub reads: Vec<Read>,
    /// Readable trace lines (`[   12.345s] …`).
    pub trace: Vec<String>,
    /// Violations seen during the run (the monitor's).
    pub violations: Vec<String>,
    /// Client errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Faults injected by kind.
    pub faults: BTreeMap<String, u64>,
    /// Backend state transitions seen by the monitor, by `from->to`.
    pub transitions: BTreeMap<String, u64>,
    /// Panics (message and location), from the panic hook.
    pub panics: Vec<String>,
    /// The oids of the key space, once `c0` has created them.
    pub keys: Vec<Oid>,
    /// Per client: simulated times of its acknowledged commits.
    pub acks: BTreeMap<u32, Vec<Duration>>,
    /// Set by the monitor when the RAID is failed after the healing: the operator restarts it
    /// (the nemesis does, between two steps).
    pub restart_raid: bool,
    /// Backends the operator (the monitor) asks to empty and restart: their history diverged
    /// from the source's and a remote backend cannot be truncated from the RAID (the recovery's
    /// own instruction), so the operator replaces the storage with an empty one.
    pub wipe: Vec<String>,
    /// Set by the monitor when the run may end (everything converged after the healing, or
    /// the calm phase's bound passed): the clients stop.
    pub stop: bool,
    /// The backends' states at the monitor's last look (name → state word).
    pub last_states: BTreeMap<String, String>,
    /// When the nemesis healed every fault (it may be a step after the planned
    /// `Options::chaos_until`); the liveness checker counts from it, so the monitor does too.
    pub healed_at: Option<Duration>,
}

/// The shared log of a world.
#[derive(Debug, Clone, Default)]
pub struct Shared(pub Arc<Mutex<Log>>);

impl Shared {
    /// The log (a poisoned lock is taken anyway: the panic is recorded separately).
    pub fn lock(&self) -> MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a trace line stamped with the simulated time.
    pub fn trace(&self, line: impl AsRef<str>) {
        self.trace_at(now(), line);
    }

    /// Adds a trace line stamped with `at` (from outside the hosts, where the simulated time is
    /// the `Sim`'s).
    pub fn trace_at(&self, at: Duration, line: impl AsRef<str>) {
        self.lock().trace.push(format!("[{:>9.3}s] {}", at.as_secs_f64(), line.as_ref()));
    }

    /// Counts a fault and traces it.
    pub fn fault(&self, at: Duration, kind: &str, line: impl AsRef<str>) {
        *self.lock().faults.entry(kind.to_string()).or_default() += 1;
        self.trace_at(at, format!("nemesis {kind}: {}", line.as_ref()));
    }

    /// Counts a client error.
    pub fn error(&self, kind: &str) {
        *self.lock().errors.entry(kind.to_string()).or_default() += 1;
    }
}

/// Simulated time since the world started (zero outside a simulation).
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}
