//! The fault decision for one reply: a pure function of the connection's RNG, the
//! probabilities, the method the reply answers and the reply itself.
//!
//! Draw order per reply (always the same number of draws for the same kind of reply, so a
//! sequence replays): the method's own faults (`vote`: error, then cut; `tpc_finish`: error,
//! then wrong tid; `lastTransaction`: wrong tid), then swallow, then slow. At most one of
//! error / wrong tid / cut / swallow applies to a reply; slow combines with any but swallow.

use std::time::Duration;

use rand::Rng;
use zeoraid_core::ids::Tid;
use zeoraid_core::wire::error::ZeoError;
use zeoraid_core::wire::reply::Reply;
use zeoraid_core::wire::request::Method;
use zeoraid_core::wire::value::{Text, Value};

use super::{FaultKind, ProxyFaults};

/// Where a [`FaultKind::CutAfterVote`] closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutPoint {
    /// Right after the vote reply is forwarded: the server never sees `tpc_finish`.
    BeforeFinish,
    /// When the server's reply to `tpc_finish` (or `tpc_abort`) arrives; that reply is
    /// dropped, so the server has committed but the client never learns it.
    AfterFinish,
}

/// What to do with a reply.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyAction {
    /// Forward it unchanged.
    Forward,
    /// Send this error reply (same msgid) instead.
    Error(ZeoError),
    /// Send the same reply with tid `to` instead of `from`.
    WrongTid {
        /// The tid the server sent.
        from: Tid,
        /// The tid the client gets.
        to: Tid,
    },
    /// Forward nothing.
    Swallow,
    /// Forward it, then cut the connection at this point.
    Cut(CutPoint),
}

impl ReplyAction {
    /// The fault kind this action injects for a reply to `method`, if any.
    pub fn kind(&self, method: Option<Method>) -> Option<FaultKind> {
        match self {
            ReplyAction::Forward => None,
            ReplyAction::Error(_) if method == Some(Method::Vote) => Some(FaultKind::ErrorAtVote),
            ReplyAction::Error(_) => Some(FaultKind::ErrorAtFinish),
            ReplyAction::WrongTid { .. } => Some(FaultKind::WrongAnswer),
            ReplyAction::Swallow => Some(FaultKind::Swallow),
            ReplyAction::Cut(_) => Some(FaultKind::CutAfterVote),
        }
    }

    /// The specifics for the fault log.
    pub fn detail(&self) -> String {
        match self {
            ReplyAction::Forward => String::new(),
            ReplyAction::Error(e) => e.class_path().as_str().to_owned(),
            ReplyAction::WrongTid { from, to } => format!("tid {from} -> {to}"),
            ReplyAction::Swallow => "reply dropped".to_owned(),
            ReplyAction::Cut(CutPoint::BeforeFinish) => "closed before tpc_finish".to_owned(),
            ReplyAction::Cut(CutPoint::AfterFinish) => "closed when tpc_finish was answered".to_owned(),
        }
    }
}

/// The decision for one reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Hold the reply (and everything after it) this long first.
    pub delay: Option<Duration>,
    /// Then do this.
    pub action: ReplyAction,
}

/// `true` with probability `p` (`p` ≥ 1 always, `p` ≤ 0 or NaN never). Always draws once.
fn roll(rng: &mut impl Rng, p: f64) -> bool {
    let x: f64 = rng.random();
    x < p
}

/// Decides the fate of a reply to `method` (`None`: a method this model does not know).
/// `result` is the successful result, `None` for an error reply.
pub fn decide(
    rng: &mut impl Rng,
    faults: &ProxyFaults,
    method: Option<Method>,
    result: Option<&Value>,
) -> Decision {
    let mut action = ReplyAction::Forward;
    match (method, result) {
        (Some(Method::Vote), Some(_)) => {
            if roll(rng, faults.error_at_vote) {
                action = ReplyAction::Error(injected_error(rng, "vote"));
            } else if roll(rng, faults.cut_after_vote) {
                let point = if rng.random_bool(0.5) { CutPoint::BeforeFinish } else { CutPoint::AfterFinish };
                action = ReplyAction::Cut(point);
            }
        }
        (Some(Method::TpcFinish), Some(v)) => {
            if roll(rng, faults.error_at_finish) {
                action = ReplyAction::Error(injected_error(rng, "tpc_finish"));
            } else if roll(rng, faults.wrong_answer) {
                if let Ok(Reply::TpcFinish(Some(from))) = Reply::from_value(Method::TpcFinish, v) {
                    action = ReplyAction::WrongTid { from, to: other_tid(rng, from) };
                }
            }
        }
        (Some(Method::LastTransaction), Some(v)) => {
            let fires = roll(rng, faults.wrong_answer);
            if let (true, Ok(Reply::LastTransaction(from))) =
                (fires, Reply::from_value(Method::LastTransaction, v))
            {
                action = ReplyAction::WrongTid { from, to: other_tid(rng, from) };
            }
        }
        _ => {}
    }
    if roll(rng, faults.swallow) && action == ReplyAction::Forward {
        action = ReplyAction::Swallow;
    }
    let delay = roll(rng, faults.slow).then(|| {
        let (min, max) = (faults.slow_min, faults.slow_max.max(faults.slow_min));
        let ms = rng.random_range(millis(min)..=millis(max));
        Duration::from_millis(ms)
    });
    let delay = if action == ReplyAction::Swallow { None } else { delay };
    Decision { delay, action }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A backend-side exception, as a stock server would send it for a failing storage.
fn injected_error(rng: &mut impl Rng, at: &str) -> ZeoError {
    let message = |class: &str| {
        Value::tuple(vec![Value::Str(Text::from(format!(
            "{class} at {at} (injected by the zeoraid-sim proxy)"
        )))])
    };
    match rng.random_range(0..3u8) {
        0 => ZeoError::Other {
            class_path: Text::from_static("ZODB.POSException.StorageError"),
            payload: message("storage error"),
        },
        1 => ZeoError::Other {
            class_path: Text::from_static("ZODB.POSException.StorageSystemError"),
            payload: message("storage system error"),
        },
        _ => ZeoError::Other {
            class_path: Text::from_static("builtins.OSError"),
            payload: Value::tuple(vec![Value::Int(28), Value::str_static("No space left on device")]),
        },
    }
}

/// A tid other than `from`, at most 2^32 (about one minute of tid space) older or newer, and
/// never `z64` nor past `maxtid`.
fn other_tid(rng: &mut impl Rng, from: Tid) -> Tid {
    let delta = rng.random_range(1..=1u64 << 32);
    let older = from.get().checked_sub(delta).filter(|&t| t > 0);
    let newer = from.get().checked_add(delta).filter(|&t| t <= Tid::MAX.get());
    let pick = if rng.random_bool(0.5) { older.or(newer) } else { newer.or(older) };
    // `from` is at most maxtid, so one of the two exists unless from ≤ 1 and maxtid ≤ 2.
    Tid::new(pick.unwrap_or(from.get() ^ 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn tid_value(t: Tid) -> Value {
        Reply::LastTransaction(t).to_value()
    }

    fn all(p: f64) -> ProxyFaults {
        let mut f = ProxyFaults::none();
        for kind in FaultKind::ALL {
            f.set(kind, p);
        }
        f
    }

    #[test]
    fn zero_probabilities_forward_everything() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let tid = tid_value(Tid::new(77));
        for method in [Some(Method::Vote), Some(Method::TpcFinish), Some(Method::LastTransaction), None] {
            for result in [Some(&tid), Some(&Value::list(vec![])), None] {
                let d = decide(&mut rng, &ProxyFaults::none(), method, result);
                assert_eq!(d, Decision { delay: None, action: ReplyAction::Forward });
            }
        }
    }

    #[test]
    fn each_fault_at_probability_one_hits_only_its_replies() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let tid = tid_value(Tid::new(0x03_0000_0000));
        let vote_ok = Value::list(vec![]);
        let f = |kind| ProxyFaults::only(kind, 1.0);
        let d = decide(&mut rng, &f(FaultKind::ErrorAtVote), Some(Method::Vote), Some(&vote_ok));
        assert_eq!(d.action.kind(Some(Method::Vote)), Some(FaultKind::ErrorAtVote));
        let d = decide(&mut rng, &f(FaultKind::ErrorAtVote), Some(Method::TpcFinish), Some(&tid));
        assert_eq!(d.action, ReplyAction::Forward);
        let d = decide(&mut rng, &f(FaultKind::ErrorAtFinish), Some(Method::TpcFinish), Some(&tid));
        assert_eq!(d.action.kind(Some(Method::TpcFinish)), Some(FaultKind::ErrorAtFinish));
        let d = decide(&mut rng, &f(FaultKind::ErrorAtFinish), Some(Method::TpcFinish), None);
        assert_eq!(d.action, ReplyAction::Forward, "an error reply is not replaced");
        let d = decide(&mut rng, &f(FaultKind::CutAfterVote), Some(Method::Vote), Some(&vote_ok));
        assert!(matches!(d.action, ReplyAction::Cut(_)));
        for m in [Method::TpcFinish, Method::LastTransaction] {
            let d = decide(&mut rng, &f(FaultKind::WrongAnswer), Some(m), Some(&tid));
            match d.action {
                ReplyAction::WrongTid { from, to } => {
                    assert_eq!(from, Tid::new(0x03_0000_0000));
                    assert_ne!(to, from);
                    assert!(to.get().abs_diff(from.get()) <= 1 << 32);
                }
                other => panic!("{m:?}: {other:?}"),
            }
        }
        let d = decide(&mut rng, &f(FaultKind::WrongAnswer), Some(Method::Vote), Some(&vote_ok));
        assert_eq!(d.action, ReplyAction::Forward);
        let d = decide(&mut rng, &f(FaultKind::Swallow), Some(Method::LoadBefore), None);
        assert_eq!(d, Decision { delay: None, action: ReplyAction::Swallow });
        let mut slow = f(FaultKind::Slow);
        (slow.slow_min, slow.slow_max) = (Duration::from_millis(200), Duration::from_millis(300));
        for _ in 0..100 {
            let d = decide(&mut rng, &slow, Some(Method::Ping), Some(&Value::None));
            let delay = d.delay.expect("slow");
            assert!((200..=300).contains(&delay.as_millis()), "{delay:?}");
            assert_eq!(d.action, ReplyAction::Forward);
        }
        // A reversed range acts as its minimum; it never panics.
        (slow.slow_min, slow.slow_max) = (Duration::from_millis(50), Duration::ZERO);
        let d = decide(&mut rng, &slow, None, None);
        assert_eq!(d.delay, Some(Duration::from_millis(50)));
    }

    #[test]
    fn everything_at_once_breaks_each_reply_once() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let tid = tid_value(Tid::new(5));
        let mut cut_points = vec![];
        for _ in 0..200 {
            let d = decide(&mut rng, &all(1.0), Some(Method::Vote), Some(&Value::list(vec![])));
            // Error at vote is drawn first and always wins.
            assert_eq!(d.action.kind(Some(Method::Vote)), Some(FaultKind::ErrorAtVote));
            assert!(d.delay.is_some());
            let mut only_cut = ProxyFaults::only(FaultKind::CutAfterVote, 1.0);
            only_cut.swallow = 1.0;
            if let ReplyAction::Cut(p) =
                decide(&mut rng, &only_cut, Some(Method::Vote), Some(&Value::list(vec![]))).action
            {
                cut_points.push(p);
            }
            let d = decide(&mut rng, &all(1.0), None, Some(&tid));
            assert_eq!(d, Decision { delay: None, action: ReplyAction::Swallow });
        }
        assert_eq!(cut_points.len(), 200, "a cut is not overridden by a swallow");
        assert!(cut_points.contains(&CutPoint::BeforeFinish) && cut_points.contains(&CutPoint::AfterFinish));
    }

    #[test]
    fn odd_probabilities_never_panic() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for p in [f64::NAN, -1.0, 2.0, f64::INFINITY, f64::NEG_INFINITY] {
            let d = decide(&mut rng, &all(p), Some(Method::TpcFinish), Some(&tid_value(Tid::new(1))));
            let fires = p >= 1.0;
            assert_eq!(d.action != ReplyAction::Forward, fires, "{p}");
        }
    }

    #[test]
    fn other_tid_stays_in_range_at_the_edges() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for from in [Tid::new(1), Tid::new(2), Tid::MAX, Tid::new(Tid::MAX.get() - 1), Tid::new(1 << 40)] {
            for _ in 0..50 {
                let to = other_tid(&mut rng, from);
                assert_ne!(to, from);
                assert!(to > Tid::ZERO && to <= Tid::MAX, "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_decisions() {
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let tid = tid_value(Tid::new(1 << 40));
            (0..100)
                .map(|i| {
                    let m = [Method::Vote, Method::TpcFinish, Method::LastTransaction][i % 3];
                    decide(&mut rng, &all(0.3), Some(m), Some(&tid))
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }
}
