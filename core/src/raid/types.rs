//! The RAID's public types: backend states, RAID status, configuration, persisted state,
//! admin answers, and the actions the RAID state machine emits.

use std::fmt;
use std::time::Duration;

use crate::ids::{BackendId, Oid, Tid};
use crate::zeo::backend::{BackendOutcome, BackendReqId, BackendRequest};

/// The state of one backend in a RAID.
///
/// ```text
///            ┌──────────── disable ───────────────┐
///            │                                    ▼
///  Optimal ──┴─ fault/timeout/disconnect ──▶ Degraded ──disable──▶ Disabled
///     ▲       /disagreement (not the last)       │                    │
///     │                                          │ recover            │ recover
///     └─────────────── copy done ─── Recovering ◀┴────────────────────┘
///                                        │ fault
///                                        ▼
///                                     Degraded
///
///  The RAID's last optimal backend, while no backend is optimal (the RAID has failed):
///  Degraded ──Up with last tid ≥ agreed──────────────────────────▶ Optimal
///  Degraded / Disabled ──recover (connected, last tid ≥ agreed)──▶ Optimal  (no copy)
/// ```
///
/// When a change leaves no backend optimal (the RAID fails), the backend that left last is
/// remembered as the RAID's *last optimal* backend (`Raid::last_optimal`, persisted): it holds
/// every acknowledged commit, so when it is reachable again, not behind the agreed last tid, it
/// becomes optimal again at once (no copy), on its `Up` while degraded, or by `recover` while
/// degraded or disabled, and at start-up it is a candidate like an optimal one.
///
/// Invariants (checked by `Raid::check`):
/// * only `Optimal` backends receive writes (votes, finishes, uploads, pack) and reads;
/// * a backend leaves `Optimal` only with a reason, and the change is persisted before any
///   commit that it did not take part in is acknowledged to a client;
/// * a disagreement never degrades the last optimal backend;
/// * the RAID's last optimal backend is set only while no backend is optimal, and names a
///   backend of the RAID.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendState {
    /// In sync with the RAID: takes every write and serves reads.
    Optimal,
    /// Out of the RAID until recovered.
    Degraded {
        /// Why (logged at warn, shown by `details`).
        reason: String,
        /// When, in seconds since the epoch.
        since: f64,
    },
    /// Being rebuilt (the recovery issue).
    Recovering {
        /// When the recovery started, in seconds since the epoch.
        since: f64,
    },
    /// Taken out by the operator (`zeoraid disable`).
    Disabled {
        /// When, in seconds since the epoch.
        since: f64,
    },
}

impl BackendState {
    /// The one-word name: `optimal`, `degraded`, `recovering`, `disabled`.
    pub fn word(&self) -> &'static str {
        match self {
            BackendState::Optimal => "optimal",
            BackendState::Degraded { .. } => "degraded",
            BackendState::Recovering { .. } => "recovering",
            BackendState::Disabled { .. } => "disabled",
        }
    }

    /// Whether the backend takes writes and reads.
    pub fn is_optimal(&self) -> bool {
        matches!(self, BackendState::Optimal)
    }
}

/// The state of the whole RAID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaidStatus {
    /// Every backend is optimal.
    Optimal,
    /// At least one backend is optimal and one is not (none recovering).
    Degraded,
    /// A backend is being recovered (and at least one is optimal).
    Recovering,
    /// No backend is optimal: writes and reads are refused.
    Failed,
}

impl RaidStatus {
    /// The one word `zeoraid status` prints.
    pub fn word(&self) -> &'static str {
        match self {
            RaidStatus::Optimal => "optimal",
            RaidStatus::Degraded => "degraded",
            RaidStatus::Recovering => "recovering",
            RaidStatus::Failed => "failed",
        }
    }

    /// The Nagios exit code: 0 optimal, 1 recovering, 2 degraded or failed.
    pub fn nagios_code(&self) -> i32 {
        match self {
            RaidStatus::Optimal => 0,
            RaidStatus::Recovering => 1,
            RaidStatus::Degraded | RaidStatus::Failed => 2,
        }
    }
}

impl fmt::Display for RaidStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// RAID settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RaidConfig {
    /// The storage name (for logs).
    pub name: String,
    /// How long a backend may take to answer one request before it is degraded
    /// (a `Vote` and a `Pack` get [`RaidConfig::write_timeout`] instead).
    pub call_timeout: Duration,
    /// How long a backend may take for a vote, finish or abort.
    pub write_timeout: Duration,
    /// How long a pack may take on a backend.
    pub pack_timeout: Duration,
    /// Oids reserved per persisted step of the oid high-water mark.
    pub oid_reserve: u64,
    /// The recovery's default rate limit (`recover --rate` overrides it per run).
    pub recovery_rate: RateLimit,
    /// The switch (the recovery's last step, under the commit lock) is entered only when the
    /// target is at most this many transactions behind.
    pub switch_max_lag: u64,
    /// The longest the switch may hold the commit lock; past it the lock is released and the
    /// recovery catches up again before it retries.
    pub switch_timeout: Duration,
}

impl RaidConfig {
    /// Defaults: 10 s per call, 30 s per write, 1 h per pack, 10,000 oids per reservation.
    pub fn new(name: &str) -> RaidConfig {
        RaidConfig {
            name: name.to_string(),
            call_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            pack_timeout: Duration::from_secs(3600),
            oid_reserve: 10_000,
            recovery_rate: RateLimit::UNLIMITED,
            switch_max_lag: 20,
            switch_timeout: Duration::from_secs(2),
        }
    }
}

/// A recovery's rate limit; `None` is no limit on that measure. Both limits apply together.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateLimit {
    /// Bytes of record data and blobs copied per second.
    pub bytes_per_sec: Option<u64>,
    /// Transactions copied per second.
    pub txns_per_sec: Option<u64>,
}

impl RateLimit {
    /// No limit.
    pub const UNLIMITED: RateLimit = RateLimit { bytes_per_sec: None, txns_per_sec: None };
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.bytes_per_sec, self.txns_per_sec) {
            (None, None) => f.write_str("unlimited"),
            (Some(b), None) => write!(f, "{b} bytes/s"),
            (None, Some(t)) => write!(f, "{t} txns/s"),
            (Some(b), Some(t)) => write!(f, "{b} bytes/s, {t} txns/s"),
        }
    }
}

/// The phase of a running recovery.
///
/// ```text
///  Verifying ──target is a verified prefix──▶ Copying ──caught up──▶ Switching ──▶ (optimal)
///      │                                        ▲  ▲                     │ lock held too long
///      └──diverged, local target──▶ Rebuilding ─┘  └─────────────────────┘
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryPhase {
    /// Walking the target's history against the source's.
    Verifying,
    /// Copying everything into a new, empty storage (a diverged local target).
    Rebuilding,
    /// Copying the transactions the target lacks.
    Copying,
    /// Holding the commit lock to copy the last transactions and make the target optimal.
    Switching,
}

impl RecoveryPhase {
    /// One word for `details` and logs.
    pub fn word(&self) -> &'static str {
        match self {
            RecoveryPhase::Verifying => "verifying",
            RecoveryPhase::Rebuilding => "rebuilding",
            RecoveryPhase::Copying => "copying",
            RecoveryPhase::Switching => "switching",
        }
    }
}

/// A running recovery, for `zeoraid details` and the logs.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryProgress {
    /// The backend being recovered.
    pub target: String,
    /// The optimal backend it is copied from.
    pub source: String,
    /// Phase.
    pub phase: RecoveryPhase,
    /// The newest transaction verified or copied.
    pub current_tid: Tid,
    /// Transactions verified so far.
    pub txns_verified: u64,
    /// Transactions copied so far.
    pub txns_copied: u64,
    /// Bytes (record data and blobs) copied so far.
    pub bytes_copied: u64,
    /// Transactions left, estimated.
    pub txns_left: Option<u64>,
    /// Bytes left, estimated.
    pub bytes_left: Option<u64>,
    /// Copy rate over the last seconds.
    pub txns_per_sec: f64,
    /// Copy rate over the last seconds.
    pub bytes_per_sec: f64,
    /// Estimated seconds left.
    pub eta_secs: Option<f64>,
    /// The rate limit in force.
    pub limit: RateLimit,
    /// When it started (epoch seconds).
    pub started: f64,
}

/// How the last recovery ended, for `details`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryEnd {
    /// The backend.
    pub target: String,
    /// `None`: it is optimal now; `Some(reason)`: it failed.
    pub failure: Option<String>,
    /// When (epoch seconds).
    pub at: f64,
    /// Transactions copied.
    pub txns_copied: u64,
    /// Bytes copied.
    pub bytes_copied: u64,
}

/// A recovery in progress as persisted: after a restart it resumes from `done_tid`.
#[derive(Debug, Clone, PartialEq)]
pub struct PersistedRecovery {
    /// The backend being recovered.
    pub target: String,
    /// Every transaction up to this one is on the target, verified or copied, and durable.
    pub done_tid: Tid,
    /// Whether the target was being rebuilt into a new file (which a restart discards).
    pub rebuilding: bool,
    /// The rate limit of this run.
    pub limit: RateLimit,
    /// When it started (epoch seconds).
    pub started: f64,
}

/// One backend as the RAID knows it at start-up (or when `reload` adds it).
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    /// Its name in the config (unique within the storage).
    pub name: String,
    /// What it is, for `details` (`local var/a/Data.fs`, `zeo 127.0.0.1:8101 storage 1`).
    pub label: String,
}

/// The persisted state of one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct PersistedBackend {
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: BackendState,
}

/// What the RAID keeps on disk (write, fsync, rename) to survive restarts.
#[derive(Debug, Clone, PartialEq)]
pub struct PersistedRaid {
    /// Every backend and its state.
    pub backends: Vec<PersistedBackend>,
    /// The newest tid the RAID had handed out or taken over when this was written: tids go on
    /// above it (they never go back, also across restarts).
    pub last_tid: Tid,
    /// The newest tid acknowledged to a client as committed when this was written (at most
    /// `last_tid`). A backend behind it lost acknowledged commits. Files written before it was
    /// kept load it as `last_tid`.
    pub acked_tid: Tid,
    /// Every oid below this may have been handed out: new oids start here.
    pub oid_hwm: Oid,
    /// The recovery in progress, if any.
    pub recovery: Option<PersistedRecovery>,
    /// While no backend is optimal (the RAID has failed): the backend that was optimal last.
    /// It holds every acknowledged commit; it becomes optimal again when it is back (see
    /// [`BackendState`]). `None` while a backend is optimal.
    pub last_optimal: Option<String>,
}

/// One row of `zeoraid details`.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendDetails {
    /// Name.
    pub name: String,
    /// What it is.
    pub label: String,
    /// Its state (with reason and since).
    pub state: BackendState,
    /// Whether its connection is up.
    pub connected: bool,
    /// Its last tid as last known (`None` if never seen).
    pub last_tid: Option<Tid>,
    /// Requests in flight on it.
    pub outstanding: usize,
}

/// An admin command refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// No backend of that name.
    #[error("no backend named {0:?}")]
    UnknownBackend(String),
    /// A backend of that name exists already.
    #[error("a backend named {0:?} exists already")]
    DuplicateBackend(String),
    /// The command would leave no optimal backend.
    #[error("{0:?} is the last optimal backend; refusing to take it out")]
    LastOptimal(String),
    /// A recovery runs already (only one at a time).
    #[error("a recovery of {0:?} is running already; only one recovery runs at a time")]
    RecoveryRunning(String),
    /// A pack runs (recovery and pack exclude each other).
    #[error("a pack is running; start the recovery when it is done")]
    PackRunning,
    /// No optimal backend to copy from; the hint says what would help.
    #[error("no optimal backend to copy from: {hint}")]
    NoSource {
        /// What would help (which backend must come back, or why it cannot serve yet).
        hint: String,
    },
    /// The backend is not connected.
    #[error("{0:?} is not connected; a recovery needs it up")]
    NotConnected(String),
    /// The backend is not in a state where the command applies.
    #[error("{name:?} is {state}: {what}")]
    WrongState {
        /// Backend.
        name: String,
        /// Its state word.
        state: &'static str,
        /// What cannot be done.
        what: String,
    },
}

/// An output of the RAID state machine, carried out by the driver in the order drained.
#[derive(Debug, Clone, PartialEq)]
pub enum RaidAction {
    /// Send a request to one backend; its outcome comes back through `Raid::handle_outcome`
    /// with the same `backend` and `id`.
    Submit {
        /// Backend.
        backend: BackendId,
        /// The RAID's id for this backend request.
        id: BackendReqId,
        /// The request.
        request: BackendRequest,
    },
    /// Answer the front's request `id` (partial outcomes may come first, as the backend
    /// contract allows).
    Answer {
        /// The front's request id.
        id: BackendReqId,
        /// The outcome.
        outcome: BackendOutcome,
    },
    /// Persist this state (write a temporary file, fsync, rename, fsync the directory), then
    /// call `Raid::handle_state_saved(version)`.
    SaveState {
        /// Increases with every save requested.
        version: u64,
        /// What to write.
        state: PersistedRaid,
    },
    /// Drop the backend's connection (it timed out or was taken out); the connector may
    /// reconnect with backoff, its later outcomes for old requests are ignored.
    Disconnect {
        /// Backend.
        backend: BackendId,
    },
    /// The RAID's history moved on without the front: a failed RAID took back its last
    /// optimal backend, whose last tid is above what the front knows (transactions committed
    /// before a restart whose state had not caught up, or finished but never acknowledged).
    /// The front must take `last_tid` as its newest visible tid and make every client
    /// re-verify its cache (`zeo::server::Server::history_moved_on`).
    HistoryMovedOn {
        /// The RAID's new agreed last tid.
        last_tid: Tid,
    },
}
