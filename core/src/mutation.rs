//! Test-only mutations: switches that put a known bug into the production code, so that the
//! simulation suite (issue 7) can show it catches real bugs.
//!
//! Without the cargo feature `mutations` (every production build) [`active`] is a `const fn`
//! returning `false`: each hook is `if mutation::active(..)` on a constant and compiles away.
//! With the feature, a mutation is switched on for the current THREAD only ([`set`], or the
//! guard [`Scoped`]): `cargo test` runs tests on parallel threads, and a turmoil simulation runs
//! on one thread.
//!
//! The mutations, and the bug each one makes:
//!
//! | mutation | where | the bug |
//! |---|---|---|
//! | [`Mutation::VoteBeforeAllVoted`] | `raid/writes.rs` `fan_outcome` | the RAID answers the front's vote as soon as the first backend voted, not once every optimal backend has |
//! | [`Mutation::FinishBeforeAllFinished`] | `raid/writes.rs` `fan_outcome` | the RAID answers the front's finish as soon as the first backend finished, not once all have (and before the state recording a failed leg is durable) |
//! | [`Mutation::NoDegradeOnError`] | `raid/mod.rs` `outcome` | a backend that fails a vote with its own fault is not degraded: its error is ignored, the transaction commits on the others only, and the backends diverge |
//! | [`Mutation::SecondRecovery`] | `raid/recovery/mod.rs` `recover` | a second recovery may start while one runs (the refusal is skipped) |
//! | [`Mutation::InvalidateBeforeFinish`] | `zeo/server/outcomes.rs` (vote answered) | the front sends a transaction's invalidations to the other clients when it is voted, before the backends finished it (and not again at finish) |
//! | [`Mutation::ReuseLastTid`] | `zeo/server/commit.rs` `start_vote` | the tid of a transaction comes from the clock alone, ignoring the last (persisted) tid: with the clock behind, a tid is reused or goes back |
//! | [`Mutation::SkipStateFsync`] | server `raid_state.rs` `save_in` | the RAID state file is written and renamed without any fsync (file or directory): a crash can lose or tear it |
//! | [`Mutation::FinishBeforeStateSaved`] | `raid/writes.rs` `settle` | the finish is answered without waiting for the RAID state that degrades a backend which missed it to be durable: a RAID crash then brings that backend back as optimal without the commit |
//! | [`Mutation::PackDuringRecovery`] | `raid/writes.rs` `start_fan` | a pack is fanned out while a recovery runs (the refusal is skipped) |
//!
//! The switch is thread-local: a hook reached on another thread (a real state file is saved in
//! `spawn_blocking`) does not see it. The simulation saves its state inline, on its one thread.
//!
//! Add a mutation here (variant, row, hook) with a unit test showing the bug with the switch
//! on and the right behaviour with it off.

/// A bug that can be switched on (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mutation {
    /// The vote is answered after the first backend voted.
    VoteBeforeAllVoted,
    /// Invalidations go out at vote, before finish.
    InvalidateBeforeFinish,
    /// The RAID state save skips its fsyncs.
    SkipStateFsync,
    /// A second recovery may start while one runs.
    SecondRecovery,
    /// The finish is answered after the first backend finished.
    FinishBeforeAllFinished,
    /// The tid comes from the clock alone.
    ReuseLastTid,
    /// A backend failing a vote is not degraded.
    NoDegradeOnError,
    /// The finish is answered before the state recording a failed leg is durable.
    FinishBeforeStateSaved,
    /// A pack may run during a recovery.
    PackDuringRecovery,
}

impl Mutation {
    /// Every mutation, in declaration order.
    pub const ALL: [Mutation; 9] = [
        Mutation::VoteBeforeAllVoted,
        Mutation::InvalidateBeforeFinish,
        Mutation::SkipStateFsync,
        Mutation::SecondRecovery,
        Mutation::FinishBeforeAllFinished,
        Mutation::ReuseLastTid,
        Mutation::NoDegradeOnError,
        Mutation::FinishBeforeStateSaved,
        Mutation::PackDuringRecovery,
    ];

    /// Its name as written in the source (for command lines and reports).
    pub fn name(self) -> &'static str {
        match self {
            Mutation::VoteBeforeAllVoted => "VoteBeforeAllVoted",
            Mutation::InvalidateBeforeFinish => "InvalidateBeforeFinish",
            Mutation::SkipStateFsync => "SkipStateFsync",
            Mutation::SecondRecovery => "SecondRecovery",
            Mutation::FinishBeforeAllFinished => "FinishBeforeAllFinished",
            Mutation::ReuseLastTid => "ReuseLastTid",
            Mutation::NoDegradeOnError => "NoDegradeOnError",
            Mutation::FinishBeforeStateSaved => "FinishBeforeStateSaved",
            Mutation::PackDuringRecovery => "PackDuringRecovery",
        }
    }

    /// The mutation named `name` (as [`Mutation::name`] writes it).
    pub fn from_name(name: &str) -> Option<Mutation> {
        Mutation::ALL.into_iter().find(|m| m.name() == name)
    }
}

#[cfg(feature = "mutations")]
mod switch {
    use super::Mutation;
    use std::cell::Cell;

    // Test-only (behind the `mutations` feature): one switch per thread so that parallel tests,
    // and each single-threaded simulation, have their own.
    #[allow(clippy::disallowed_types, clippy::disallowed_methods)]
    mod tl {
        use super::{Cell, Mutation};
        std::thread_local! {
            pub(super) static ACTIVE: Cell<Option<Mutation>> = const { Cell::new(None) };
        }
    }

    pub(super) fn active(m: Mutation) -> bool {
        tl::ACTIVE.with(|a| a.get() == Some(m))
    }

    pub(super) fn set(m: Option<Mutation>) -> Option<Mutation> {
        tl::ACTIVE.with(|a| a.replace(m))
    }
}

/// Whether `m` is switched on for this thread.
#[cfg(feature = "mutations")]
#[inline]
pub fn active(m: Mutation) -> bool {
    switch::active(m)
}

/// Whether `m` is switched on: never, without the `mutations` feature.
#[cfg(not(feature = "mutations"))]
#[inline(always)]
pub const fn active(m: Mutation) -> bool {
    let _ = m;
    false
}

/// Switches `m` on for this thread (`None`: none); returns the one active before.
#[cfg(feature = "mutations")]
pub fn set(m: Option<Mutation>) -> Option<Mutation> {
    switch::set(m)
}

/// Switches `m` on for this thread until the guard is dropped (the previous one comes back).
#[cfg(feature = "mutations")]
#[derive(Debug)]
#[must_use = "the mutation is switched off again when the guard is dropped"]
pub struct Scoped {
    before: Option<Mutation>,
}

#[cfg(feature = "mutations")]
impl Scoped {
    /// Switches `m` on.
    pub fn new(m: Mutation) -> Scoped {
        Scoped { before: set(Some(m)) }
    }
}

#[cfg(feature = "mutations")]
impl Drop for Scoped {
    fn drop(&mut self) {
        set(self.before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Mutation::ALL {
            assert_eq!(Mutation::from_name(m.name()), Some(m));
        }
        assert_eq!(Mutation::from_name("nope"), None);
    }

    #[cfg(not(feature = "mutations"))]
    #[test]
    fn without_the_feature_nothing_is_ever_active() {
        // Usable in a const context: the hooks fold away.
        const { assert!(!active(Mutation::VoteBeforeAllVoted)) };
        assert!(Mutation::ALL.into_iter().all(|m| !active(m)));
    }

    #[cfg(feature = "mutations")]
    #[test]
    fn a_switch_is_per_thread_and_the_guard_restores_it() {
        assert!(!active(Mutation::SecondRecovery));
        {
            let _g = Scoped::new(Mutation::SecondRecovery);
            assert!(active(Mutation::SecondRecovery));
            assert!(!active(Mutation::ReuseLastTid));
            let other = std::thread::spawn(|| active(Mutation::SecondRecovery)).join().expect("thread");
            assert!(!other, "another thread does not see it");
        }
        assert!(!active(Mutation::SecondRecovery));
    }
}
