//! What goes into and out of the ZEO server state machine: time, configuration, actions.
//!
//! The driver (the `server` crate, or the simulation) feeds the state machine with inputs
//! (`handle_*` methods taking a [`Now`]), then drains every [`Action`] with `poll_action` before
//! the next input, and sleeps until `poll_timeout`. The state machine never reads a clock.

use std::time::Duration;

use bytes::Bytes;

use crate::ids::{ConnId, Oid, Tid};
use crate::wire::Encoding;

use super::backend::{BackendReqId, BackendRequest, StorageSize};

/// The time of an input, as the driver saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Now {
    /// Monotonic time since the driver started (timeouts are measured on it).
    pub mono: Duration,
    /// Wall-clock time since the Unix epoch (tids and `lock_time` come from it).
    pub wall: Duration,
}

impl Now {
    /// The tid this instant stands for (`Tid::ZERO` outside the TimeStamp range).
    pub fn tid(&self) -> Tid {
        Tid::from_unix(self.wall.as_secs(), self.wall.subsec_nanos()).unwrap_or(Tid::ZERO)
    }

    /// Wall-clock seconds since the epoch, as Python's `time.time()`.
    pub fn unix_f64(&self) -> f64 {
        self.wall.as_secs_f64()
    }
}

/// Index of a storage in [`ServerConfig::storages`]; names the backend an [`Action::Backend`]
/// goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorageIdx(pub usize);

/// What the state machine needs to know about one storage when it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageSeed {
    /// The name clients give to `register` (`"1"` by default).
    pub name: String,
    /// Refuse writable registrations.
    pub read_only: bool,
    /// The newest committed tid (`Tid::ZERO` when empty).
    pub last_tid: Tid,
    /// The newest commits, newest first, to seed the `getInvalidations` queue.
    pub recent: Vec<(Tid, Vec<Oid>)>,
    /// Object count and size.
    pub size: StorageSize,
    /// `get_info`'s `name` (FileStorage: the path of `Data.fs`).
    pub info_name: String,
    /// Whether the storage keeps blobs (`IBlobStorage` is then announced).
    pub blobs: bool,
}

/// Server-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// The letter announced in the handshake (clients may answer with the other one).
    pub announce: Encoding,
    /// Largest frame accepted from a client, in bytes.
    pub max_frame: u32,
    /// Refuse writable registrations on every storage.
    pub read_only: bool,
    /// How long a transaction may hold the commit lock before it is aborted, the lock released
    /// and its connection closed; `None` for no limit.
    pub transaction_timeout: Option<Duration>,
    /// How many commits the `getInvalidations` queue remembers.
    pub invalidation_queue_size: usize,
    /// The storages, in the order their [`StorageIdx`] counts.
    pub storages: Vec<StorageSeed>,
}

/// Why the state machine closes a connection (logged by the driver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason(pub String);

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An output of the state machine, to be carried out by the driver in the order drained.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write these bytes (one or more complete frames, length prefixes included) to `conn`.
    Send {
        /// Connection.
        conn: ConnId,
        /// Framed bytes.
        bytes: Bytes,
    },
    /// Close `conn` after writing what was sent before; no more input is expected from it
    /// (the driver still reports the disconnect).
    Close {
        /// Connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Run a request on a storage's backend; answer with the state machine's backend input.
    Backend {
        /// Storage.
        storage: StorageIdx,
        /// Request id, echoed by the outcome.
        id: BackendReqId,
        /// The request.
        request: BackendRequest,
    },
}
