//! zeoraid's pure core.
//!
//! Everything here is deterministic and free of I/O: no sockets, no files, no clock,
//! no randomness and no hash-ordered collections. Time is passed in by the driver.
//!
//! * [`ids`]: the identifier newtypes shared by every layer ([`ids::Oid`], [`ids::Tid`]).
//! * [`wire`]: the ZEO 5/6 wire protocol — framing, handshake, both encodings and the
//!   typed messages of both directions.
//! * [`zeo`]: the ZEO server semantics as pure state machines (commit lock, invalidation queue).
//! * [`mutation`]: test-only switches that put known bugs in (feature `mutations`; no-ops without).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ids;
pub mod mutation;
pub mod raid;
pub mod wire;
pub mod zeo;
