//! Backends: where the ZEO front's [`BackendRequest`]s are carried out.
//!
//! * [`local`]: a local FileStorage engine ([`crate::storage`]) over any
//!   [`crate::storage::StorageDir`], served by its own threads so that storage I/O never blocks
//!   the driver, or inline on the caller's thread (the simulation, over a `MemDir`).
//! * [`remote`]: a remote ZEO server (stock Python ZEO or zeoraid), reached over the
//!   [`crate::net::Net`] trait with the client state machine of `zeoraid_core::zeo::client`.
//!
//! A backend answers through a [`Sink`]: every request gets exactly one final outcome (and, for
//! `SendBlob`, partial `BlobChunk`s before it), see `zeoraid_core::zeo::backend`.

use std::sync::Arc;

use zeoraid_core::zeo::backend::{BackendOutcome, BackendReqId};

pub mod local;
#[cfg(test)]
mod local_inline_tests;
#[cfg(test)]
mod local_recovery_tests;
#[cfg(test)]
mod local_tests;
pub mod rebuild;
pub mod remote;
#[cfg(test)]
mod remote_tests;

/// Where a backend delivers outcomes (called from the backend's threads, or from `submit` itself
/// for an inline local backend: it must not call back into the backend).
pub type Sink = Arc<dyn Fn(BackendReqId, BackendOutcome) + Send + Sync>;
