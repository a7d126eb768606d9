//! Checking the server's `lastTransaction` before `Ready`.
//!
//! A stock FileStorage that was killed between the vote and the finish of a transaction cuts
//! the unfinished transaction off its file when it opens again, yet reports that transaction's
//! tid as its `lastTransaction` (ZODB 6.4 `read_index` returns the tid of the record it
//! truncated). Taken at its word, such a backend looks as if it held a transaction it does not
//! hold: the RAID would count it level with a backend that finished that transaction, and the
//! read-ahead of `IterNextWhole` (`whole`) would take the tid for one its iterators are sure to
//! return, send an `iterator_next` that ends the iteration while record reads are under way,
//! and the end closes the file those reads use (`ValueError: seek of closed file`).
//!
//! So before `Ready` the client asks the server for the claimed transaction itself:
//! `iterator_start(claimed, claimed)` and one `iterator_next`. A FileStorage iterator with a
//! `start` is positioned from the end of the file, so each such question costs the server a few
//! reads. If the answer is the claimed transaction, it is held. If not, the client searches
//! for the newest transaction the server does hold, asking "the first transaction at or after
//! X, not above the claimed tid" for X below the claimed tid: first with gaps doubling
//! downwards from it (the real last transaction is normally just below it), then by halving
//! the interval between the newest tid known held and the lowest one known not held.
//!
//! ```text
//!  FetchingInfo ──both answered, last = z64──────────────────────────────────▶ Ready(z64)
//!       │ both answered, last = T: iterator_start(T, T)
//!       ▼
//!  Checking ──iterator_start answered──▶ (iterator_next sent) ──header T──▶ Ready(T)
//!     ▲  │                                      │ header h < T: lo = h
//!     │  │                                      │ none: nothing held at or after X
//!     │  └──── next X (lo, hi, gap) ◀───────────┘
//!     │        nothing left between lo and hi ──────────────────────────────▶ Ready(lo)
//!     └─ an error, or too many questions ──────────────────────────────────▶ Ready(T, no bound)
//! ```
//! Invariants (checked by [`ZeoClient::check`]): in `Checking` exactly one call of the check is
//! in flight; `lo < hi <= claimed` (when `lo` is known); nothing at or above `hi` up to
//! `claimed` is held. The iterators of the check are freed: by the server when it answers
//! none, by an `iterator_gc` otherwise.

use super::{ClientError, Expect, Phase, ZeoClient};
use crate::ids::Tid;
use crate::wire::error::ZeoError;
use crate::wire::reply::Reply;
use crate::wire::request::Request;
use crate::wire::types::IterId;

/// Questions the check may ask before it gives up (a search over 64-bit tids needs at most
/// about 130).
pub(super) const MAX_PROBES: u32 = 200;

/// A call of the check in flight.
#[derive(Debug, Clone, Copy)]
pub(super) enum ProbeCall {
    /// `iterator_start(at, claimed)`.
    Start { at: Tid },
    /// `iterator_next(iid)` of the iterator started at `at`.
    Next { at: Tid, iid: IterId },
}

/// Where the check of the claimed last tid is.
#[derive(Debug, Clone)]
pub(super) struct Probe {
    /// What `lastTransaction` said.
    claimed: Tid,
    /// The newest tid known held.
    lo: Option<Tid>,
    /// Nothing is held at or above this tid (up to `claimed`); `claimed + 1` until the first
    /// answer.
    hi: u64,
    /// How far below `hi` the next question goes while `lo` is unknown.
    gap: u64,
    /// Questions asked.
    asked: u32,
}

impl Probe {
    /// The next tid to ask about, or `None` when the search is over (`lo` is the answer).
    fn next_at(&mut self) -> Option<Tid> {
        match self.lo {
            Some(lo) if self.hi - lo.get() <= 1 => None,
            Some(lo) => Some(Tid::new(lo.get() + (self.hi - lo.get()) / 2)),
            None if self.hi == 0 => None,
            None => {
                let at = self.hi.saturating_sub(self.gap);
                self.gap = self.gap.saturating_mul(2);
                Some(Tid::new(at))
            }
        }
    }

    /// Checks the invariants of the search.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.hi > self.claimed.get().saturating_add(1) {
            return Err(format!("check: hi {} above the claimed {}", self.hi, self.claimed));
        }
        if let Some(lo) = self.lo {
            if lo.get() >= self.hi {
                return Err(format!("check: lo {lo} not below hi {}", self.hi));
            }
        }
        Ok(())
    }
}

impl ZeoClient {
    /// Both set-up facts are in: check `last` unless it is `z64`.
    pub(super) fn begin_check(&mut self, last: Tid) -> Result<(), ClientError> {
        if last == Tid::ZERO {
            return self.become_ready(last, last);
        }
        self.phase = Phase::Checking;
        self.probe =
            Some(Probe { claimed: last, lo: None, hi: last.get().saturating_add(1), gap: 1, asked: 0 });
        self.ask(last)
    }

    /// Asks for the first transaction at or after `at` (and not above the claimed tid).
    fn ask(&mut self, at: Tid) -> Result<(), ClientError> {
        let Some(p) = self.probe.as_mut() else { return Ok(()) };
        p.asked += 1;
        let stop = Some(p.claimed);
        self.call(Request::IteratorStart { start: Some(at), stop }, Expect::Probe(ProbeCall::Start { at }))
    }

    /// A reply to a call of the check.
    pub(super) fn on_probe_reply(
        &mut self,
        call: ProbeCall,
        reply: Result<Reply, ZeoError>,
    ) -> Result<(), ClientError> {
        let Some(claimed) = self.probe.as_ref().map(|p| p.claimed) else {
            return Err(ClientError::Failed("a reply of the last-transaction check after it ended".into()));
        };
        match (call, reply) {
            (ProbeCall::Start { at }, Ok(Reply::IterId(iid))) => {
                self.call(Request::IteratorNext { iid }, Expect::Probe(ProbeCall::Next { at, iid }))
            }
            (ProbeCall::Next { at, iid }, Ok(Reply::IteratorNext(Some(h)))) => {
                // Not at its end: the server still holds it.
                self.cast(Request::IteratorGc { iids: vec![iid] })?;
                if h.tid == claimed {
                    return self.end_check(claimed, claimed);
                }
                if h.tid < at || h.tid > claimed {
                    let why =
                        format!("asked for the first transaction at or after {at}, it answered {}", h.tid);
                    return self.take_at_word(claimed, None, &why);
                }
                if let Some(p) = self.probe.as_mut() {
                    p.lo = Some(h.tid);
                    if h.tid.get() >= p.hi {
                        // Committed since it answered "none" higher up (another writer).
                        p.hi = claimed.get().saturating_add(1);
                    }
                }
                self.ask_next()
            }
            (ProbeCall::Next { at, .. }, Ok(Reply::IteratorNext(None))) => {
                if let Some(p) = self.probe.as_mut() {
                    p.hi = p.hi.min(at.get());
                }
                self.ask_next()
            }
            (call, Err(e)) => self.take_at_word(claimed, Some(call), &format!("iterating failed ({e:?})")),
            (call, Ok(other)) => {
                self.take_at_word(claimed, Some(call), &format!("{call:?} answered {other:?}"))
            }
        }
    }

    /// Ends a check the server could not answer: `claimed` is taken at its word, and iterators
    /// are read ahead with care (no bound). Frees the iterator of `call`, if it opened one.
    fn take_at_word(&mut self, claimed: Tid, call: Option<ProbeCall>, why: &str) -> Result<(), ClientError> {
        if let Some(ProbeCall::Next { iid, .. }) = call {
            self.cast(Request::IteratorGc { iids: vec![iid] })?;
        }
        tracing::warn!(
            "could not check the backend's last transaction {claimed}: {why}; taking it at its word, \
             and reading iterators ahead with care"
        );
        self.end_check(claimed, Tid::ZERO)
    }

    /// The next question, or the end of the search.
    fn ask_next(&mut self) -> Result<(), ClientError> {
        let Some(p) = self.probe.as_mut() else { return Ok(()) };
        let claimed = p.claimed;
        if p.asked >= MAX_PROBES {
            tracing::warn!(
                "the backend's last transaction {claimed} is not in its history, and {MAX_PROBES} \
                 questions did not find the newest one it holds; taking {claimed} at its word"
            );
            return self.end_check(claimed, Tid::ZERO);
        }
        match p.next_at() {
            Some(at) => self.ask(at),
            None => {
                let held = p.lo.unwrap_or(Tid::ZERO);
                tracing::warn!(
                    "the backend says its last transaction is {claimed}, but its history ends at \
                     {held} (a FileStorage that dropped an unfinished transaction when it \
                     reopened after a crash says so); it counts as holding {held}"
                );
                self.end_check(held, held)
            }
        }
    }

    fn end_check(&mut self, last: Tid, bound: Tid) -> Result<(), ClientError> {
        self.probe = None;
        self.become_ready(last, bound)
    }
}
