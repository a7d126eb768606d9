//! A misbehaving ZEO backend: a frame-aware proxy that runs inside a turmoil host, between a
//! ZEO client (the RAID server) and a healthy ZEO server, and breaks replies on purpose.
//!
//! [`serve`] accepts connections on a port of its host. For each one it connects upstream
//! (within [`ProxyFaults::connect_timeout`]; on failure the client's connection is closed),
//! forwards the raw handshake frames in both directions and learns the connection's encoding
//! from them (the client's answer decides, the server's announcement is the fallback), then
//! forwards every frame, decoding it to know each call's msgid and method and which call each
//! reply answers. Replies may then be broken (see [`FaultKind`]); everything else passes
//! byte for byte. A frame that does not decode is forwarded unchanged and counted
//! ([`FaultLog::undecodable`]); nothing a peer sends can make the proxy panic.
//!
//! Determinism: every decision is drawn from a ChaCha8 generator seeded with the proxy's
//! `seed` and set to stream `n` for the `n`-th accepted connection (counting from 0), in the
//! order replies arrive. Turmoil delivers messages deterministically for a given world seed,
//! so the same seeds give the same faults at the same simulated times.
//!
//! Ordering: a reply held by [`FaultKind::Slow`] holds back everything the server sends after
//! it on that connection (a stalled server, never a reordering of replies and pushes).
//!
//! Connection diagram:
//!
//! ```text
//! client ──► [client→server pump: record (msgid, method) of each call] ──► upstream
//! client ◄── [server→client pump: match reply, draw faults, act]       ◄── upstream
//! ```
//!
//! The two pumps run in one task (a `select!`, `biased;`); when either ends (EOF, error, or a
//! cut), the upstream side is dropped and the client side is closed gracefully: FIN first,
//! then the client's remaining bytes are drained for at most [`DRAIN`] so that no RST can
//! overtake the last reply on the simulated link.

//! Wiring it into a world (one proxy host per misbehaving backend; point the RAID's backend
//! address at the proxy host; one [`FaultLog`] per proxy, or one shared by all):
//!
//! ```text
//! let log = FaultLog::new();
//! let (l, faults) = (log.clone(), ProxyFaults::buggify(&mut options_rng));
//! sim.host("b2-proxy", move || {
//!     let l = l.clone();
//!     async move { Ok(serve(8200, "b2:8100".to_owned(), faults, proxy_seed, l).await?) }
//! });
//! // after the run: log.faults() (each line Displays as a trace line), log.count(kind),
//! // log.undecodable(), log.connections()
//! ```

mod conn;
mod decide;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use turmoil::net::TcpListener;

pub use decide::{decide, CutPoint, Decision, ReplyAction};

/// How long a closing connection keeps reading (and discarding) what the client still sends,
/// so that the closing FIN reaches it before any reset.
pub const DRAIN: Duration = Duration::from_secs(1);

/// The kinds of fault the proxy injects, each drawn per reply with its probability in
/// [`ProxyFaults`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// A reply (success or error) is held for a random delay in
    /// [`ProxyFaults::slow_min`]`..=`[`ProxyFaults::slow_max`].
    Slow,
    /// A successful `vote` reply is replaced by an error reply (a backend-side exception:
    /// `StorageError`, `StorageSystemError` or `OSError`).
    ErrorAtVote,
    /// A successful `tpc_finish` reply is replaced by an error reply (the upstream server
    /// did commit).
    ErrorAtFinish,
    /// A successful `vote` reply is forwarded, then both sides are closed before
    /// `tpc_finish` is answered: at once ([`CutPoint::BeforeFinish`]: the server never sees
    /// `tpc_finish`), or when the reply to `tpc_finish`/`tpc_abort` arrives, which is dropped
    /// ([`CutPoint::AfterFinish`]: the server committed, the client never learns it).
    CutAfterVote,
    /// The tid in a successful `tpc_finish` or `lastTransaction` reply is replaced by another
    /// tid (up to about a minute of tid space away, older or newer).
    WrongAnswer,
    /// A reply is never forwarded: the call hangs, the connection stays open.
    Swallow,
}

impl FaultKind {
    /// Every kind, in the order decisions are drawn.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Slow,
        FaultKind::ErrorAtVote,
        FaultKind::ErrorAtFinish,
        FaultKind::CutAfterVote,
        FaultKind::WrongAnswer,
        FaultKind::Swallow,
    ];

    /// A short stable name for traces and coverage tables.
    pub const fn name(self) -> &'static str {
        match self {
            FaultKind::Slow => "slow",
            FaultKind::ErrorAtVote => "error-at-vote",
            FaultKind::ErrorAtFinish => "error-at-finish",
            FaultKind::CutAfterVote => "cut-after-vote",
            FaultKind::WrongAnswer => "wrong-answer",
            FaultKind::Swallow => "swallow",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Fault probabilities (each in `0.0..=1.0`; values outside act as the nearest bound, NaN as
/// 0) and the proxy's timing settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProxyFaults {
    /// [`FaultKind::Slow`], per reply.
    pub slow: f64,
    /// Shortest delay of a slow reply.
    pub slow_min: Duration,
    /// Longest delay of a slow reply (taken as `slow_min` if smaller).
    pub slow_max: Duration,
    /// [`FaultKind::ErrorAtVote`], per successful `vote` reply.
    pub error_at_vote: f64,
    /// [`FaultKind::ErrorAtFinish`], per successful `tpc_finish` reply.
    pub error_at_finish: f64,
    /// [`FaultKind::CutAfterVote`], per successful `vote` reply not already replaced.
    pub cut_after_vote: f64,
    /// [`FaultKind::WrongAnswer`], per successful `tpc_finish` (not already replaced) or
    /// `lastTransaction` reply.
    pub wrong_answer: f64,
    /// [`FaultKind::Swallow`], per reply not already broken otherwise.
    pub swallow: f64,
    /// How long to wait for the upstream connection before closing the client's.
    pub connect_timeout: Duration,
}

impl Default for ProxyFaults {
    /// A transparent proxy: every probability 0, slow replies 10–500 ms if enabled, a 5 s
    /// connect timeout.
    fn default() -> Self {
        ProxyFaults {
            slow: 0.0,
            slow_min: Duration::from_millis(10),
            slow_max: Duration::from_millis(500),
            error_at_vote: 0.0,
            error_at_finish: 0.0,
            cut_after_vote: 0.0,
            wrong_answer: 0.0,
            swallow: 0.0,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl ProxyFaults {
    /// No faults at all.
    pub fn none() -> ProxyFaults {
        ProxyFaults::default()
    }

    /// Only `kind`, with probability `p`.
    pub fn only(kind: FaultKind, p: f64) -> ProxyFaults {
        let mut f = ProxyFaults::default();
        f.set(kind, p);
        f
    }

    /// The probability of `kind`.
    pub fn probability(&self, kind: FaultKind) -> f64 {
        match kind {
            FaultKind::Slow => self.slow,
            FaultKind::ErrorAtVote => self.error_at_vote,
            FaultKind::ErrorAtFinish => self.error_at_finish,
            FaultKind::CutAfterVote => self.cut_after_vote,
            FaultKind::WrongAnswer => self.wrong_answer,
            FaultKind::Swallow => self.swallow,
        }
    }

    /// Sets the probability of `kind`.
    pub fn set(&mut self, kind: FaultKind, p: f64) {
        let slot = match kind {
            FaultKind::Slow => &mut self.slow,
            FaultKind::ErrorAtVote => &mut self.error_at_vote,
            FaultKind::ErrorAtFinish => &mut self.error_at_finish,
            FaultKind::CutAfterVote => &mut self.cut_after_vote,
            FaultKind::WrongAnswer => &mut self.wrong_answer,
            FaultKind::Swallow => &mut self.swallow,
        };
        *slot = p;
    }

    /// Buggify-style settings drawn from `rng`: each kind is enabled with probability 1/2, and
    /// an enabled kind fires with a probability between 1% and 10% (slow replies up to 25%).
    pub fn buggify(rng: &mut impl rand::Rng) -> ProxyFaults {
        let mut f = ProxyFaults::default();
        for kind in FaultKind::ALL {
            if rng.random_bool(0.5) {
                let top = if kind == FaultKind::Slow { 0.25 } else { 0.10 };
                f.set(kind, rng.random_range(0.01..=top));
            }
        }
        f
    }
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedFault {
    /// What was done.
    pub kind: FaultKind,
    /// The connection (numbered from 0 in accept order, per [`serve`] call).
    pub conn: u64,
    /// The method of the call whose reply was broken.
    pub method: String,
    /// Simulated time since the start of the simulation (`turmoil::sim_elapsed`, zero
    /// outside a simulation).
    pub at: Duration,
    /// Specifics: the error class, the delay, the tids, the cut point.
    pub detail: String,
}

impl fmt::Display for InjectedFault {
    /// `12.345678s conn 3 vote: error-at-vote (ZODB.POSException.StorageError)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}s conn {} {}: {} ({})",
            self.at.as_secs(),
            self.at.subsec_micros(),
            self.conn,
            self.method,
            self.kind,
            self.detail
        )
    }
}

#[derive(Debug, Default)]
struct LogInner {
    faults: Vec<InjectedFault>,
    undecodable: u64,
    connections: u64,
}

/// The record of what one or more proxies did: every injected fault in order, the number of
/// frames forwarded undecoded, and the number of connections accepted. Clones share the
/// record.
#[derive(Debug, Clone, Default)]
pub struct FaultLog(Arc<Mutex<LogInner>>);

impl FaultLog {
    /// An empty log.
    pub fn new() -> FaultLog {
        FaultLog::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut LogInner) -> T) -> T {
        // A panic elsewhere while holding the lock leaves plain data: keep using it.
        let mut inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut inner)
    }

    fn record(&self, fault: InjectedFault) {
        self.with(|l| l.faults.push(fault));
    }

    fn count_undecodable(&self) {
        self.with(|l| l.undecodable += 1);
    }

    fn count_connection(&self) {
        self.with(|l| l.connections += 1);
    }

    /// Every injected fault so far, in injection order.
    pub fn faults(&self) -> Vec<InjectedFault> {
        self.with(|l| l.faults.clone())
    }

    /// How many faults of `kind` were injected.
    pub fn count(&self, kind: FaultKind) -> usize {
        self.with(|l| l.faults.iter().filter(|f| f.kind == kind).count())
    }

    /// How many frames (either direction) did not decode and were forwarded unchanged.
    pub fn undecodable(&self) -> u64 {
        self.with(|l| l.undecodable)
    }

    /// How many client connections were accepted.
    pub fn connections(&self) -> u64 {
        self.with(|l| l.connections)
    }
}

/// Runs the proxy on `listen_port` of the current turmoil host, forwarding to `upstream`
/// (`"host:port"`, resolved by turmoil), with the given faults. Each connection runs in a
/// task of its own; this future only returns if binding or accepting fails.
///
/// The connection RNG is `ChaCha8Rng::seed_from_u64(seed)` on stream `n` for the `n`-th
/// connection accepted by this call.
pub async fn serve(
    listen_port: u16,
    upstream: String,
    faults: ProxyFaults,
    seed: u64,
    log: FaultLog,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", listen_port)).await?;
    let mut n: u64 = 0;
    loop {
        let (client, peer) = listener.accept().await?;
        let conn = n;
        n += 1;
        log.count_connection();
        tracing::debug!(conn, %peer, upstream = %upstream, "proxy: accepted");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(conn);
        let ctx = conn::Ctx { conn, faults, log: log.clone(), rng };
        tokio::spawn(conn::run(client, upstream.clone(), ctx));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_probability_agree_for_every_kind() {
        for (i, kind) in FaultKind::ALL.into_iter().enumerate() {
            let p = 0.1 * (i as f64 + 1.0);
            let f = ProxyFaults::only(kind, p);
            for other in FaultKind::ALL {
                let want = if other == kind { p } else { 0.0 };
                assert_eq!(f.probability(other), want, "{kind} / {other}");
            }
        }
        assert_eq!(ProxyFaults::none(), ProxyFaults::default());
    }

    #[test]
    fn buggify_stays_in_its_ranges_and_replays() {
        let draw = |seed| ProxyFaults::buggify(&mut ChaCha8Rng::seed_from_u64(seed));
        let mut enabled = [0usize; 6];
        for seed in 0..200 {
            let f = draw(seed);
            assert_eq!(f, draw(seed));
            for (i, kind) in FaultKind::ALL.into_iter().enumerate() {
                let p = f.probability(kind);
                assert!(p == 0.0 || (0.01..=0.25).contains(&p), "{kind} {p}");
                enabled[i] += usize::from(p > 0.0);
            }
        }
        // Each kind is enabled in about half the draws.
        assert!(enabled.iter().all(|&n| (60..=140).contains(&n)), "{enabled:?}");
    }

    #[test]
    fn log_lines_read_well() {
        let f = InjectedFault {
            kind: FaultKind::ErrorAtVote,
            conn: 3,
            method: "vote".into(),
            at: Duration::from_micros(12_345_678),
            detail: "ZODB.POSException.StorageError".into(),
        };
        assert_eq!(f.to_string(), "12.345678s conn 3 vote: error-at-vote (ZODB.POSException.StorageError)");
        let log = FaultLog::new();
        let shared = log.clone();
        shared.record(f.clone());
        shared.count_undecodable();
        shared.count_connection();
        assert_eq!(log.faults(), vec![f]);
        assert_eq!((log.count(FaultKind::ErrorAtVote), log.count(FaultKind::Slow)), (1, 0));
        assert_eq!((log.undecodable(), log.connections()), (1, 1));
    }
}
