//! The ZEO server semantics, as pure state machines (`zeo-protocol.md` §4–§6).
//!
//! * [`lock`]: the per-storage commit lock with its FIFO of waiting voters.
//! * [`invalidations`]: the invalidation queue that answers `getInvalidations`.
//! * [`backend`]: the typed requests the front sends to a storage's backend, and their outcomes.
//! * [`events`]: the inputs and outputs of the server state machine (time, config, actions).
//! * [`server`]: the ZEO server state machine (connections, transactions, storage fronts).
//! * [`client`]: the ZEO client state machine that uses a ZEO server as a backend.

pub mod backend;
pub mod client;
pub mod events;
pub mod invalidations;
pub mod lock;
pub mod mem_backend;
pub mod server;
