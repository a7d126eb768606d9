//! The ZEO server semantics, as pure state machines (`zeo-protocol.md` §4–§6).
//!
//! Built so far: the per-storage commit lock with its FIFO of waiting voters ([`lock`]) and
//! the invalidation queue that answers `getInvalidations` ([`invalidations`]). The connection
//! state machine and the transaction buffering come with the ZEO server issue.

pub mod invalidations;
pub mod lock;
