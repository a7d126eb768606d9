//! The storage engine's errors, classified by culprit.
//!
//! Two boundaries, two enums:
//! * [`OpenError`]: opening a `Data.fs` failed. The file is unusable as it is (not a FileStorage,
//!   corrupt in the middle) or the operating system refused.
//! * [`StorageError`]: one operation on an open storage failed. [`StorageError::culprit`] tells
//!   whether the caller asked for something the storage must refuse (answer the client, keep the
//!   backend) or the storage itself failed (degrade the backend).

use std::io;
use zeoraid_core::ids::{Oid, Tid};

/// Who is to blame for a [`StorageError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Culprit {
    /// The caller: a conflict, an unknown object, a wrong call sequence. The storage is fine.
    Caller,
    /// The storage: an I/O failure or a corrupt file. The backend should be degraded.
    Storage,
}

/// Why one record of an undo could not be undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoFailure {
    /// The blocking object.
    pub oid: Oid,
    /// FileStorage's wording of the reason.
    pub reason: String,
}

/// An operation on an open storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    // ---- the caller's errors -------------------------------------------------------------
    /// The object does not exist, or the requested revision is a delete (no-data) record.
    #[error("POSKeyError: {oid}")]
    PosKey {
        /// The object.
        oid: Oid,
    },
    /// A store or delete named a serial that is not the object's current one.
    #[error("ConflictError: oid {oid}, committed {committed}, read {read}")]
    Conflict {
        /// The object.
        oid: Oid,
        /// Its current (committed) serial.
        committed: Tid,
        /// The serial the caller read.
        read: Tid,
    },
    /// `check_current_serial` found a newer revision.
    #[error("ReadConflictError: oid {oid}, current {current}, expected {expected}")]
    ReadConflict {
        /// The object.
        oid: Oid,
        /// Its current serial.
        current: Tid,
        /// The serial the caller expected.
        expected: Tid,
    },
    /// An undo that cannot be done as a whole (bad id, non-undoable transaction).
    #[error("UndoError: {reason}")]
    Undo {
        /// FileStorage's wording.
        reason: String,
        /// The object concerned, if any.
        oid: Option<Oid>,
    },
    /// An undo blocked by later changes, one entry per blocking object (ZEO's
    /// `MultipleUndoErrors`).
    #[error("MultipleUndoErrors: {} objects", .0.len())]
    MultipleUndo(Vec<UndoFailure>),
    /// A supplied tid is not above the last committed one.
    #[error("tid {given} is not after the last transaction {last}")]
    TidNotAfterLast {
        /// The tid the caller supplied.
        given: Tid,
        /// The storage's last tid.
        last: Tid,
    },
    /// No tid is left after the last one (the 64-bit space is exhausted).
    #[error("no transaction id after {last}")]
    TidsExhausted {
        /// The storage's last tid.
        last: Tid,
    },
    /// A call out of sequence: no transaction, a second `begin`, a store after vote, a finish
    /// before vote.
    #[error("StorageTransactionError: {0}")]
    WrongTransaction(&'static str),
    /// The storage was opened read-only.
    #[error("ReadOnlyError")]
    ReadOnly,
    /// A transaction status other than `' '` or `'p'` was asked for.
    #[error("invalid transaction status {0:?} (only ' ' and 'p' can be written)")]
    BadStatus(char),
    /// User, description or extension longer than the 16-bit length field allows.
    #[error("{field} too long: {len} bytes (at most 65535)")]
    MetadataTooLong {
        /// `user`, `description` or `extension`.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// The extension dict could not be pickled.
    #[error("extension cannot be pickled: {0}")]
    BadExtension(String),
    /// A store with no data: FileStorage cannot tell an empty pickle from a back-pointer.
    #[error("empty data for oid {oid}")]
    EmptyData {
        /// The object.
        oid: Oid,
    },
    /// `restore` named a serial other than the transaction's tid.
    #[error("restore of {oid} with serial {serial} inside transaction {tid}")]
    RestoreSerial {
        /// The object.
        oid: Oid,
        /// The serial given.
        serial: Tid,
        /// The transaction's tid.
        tid: Tid,
    },
    /// No oid is left after the last one.
    #[error("object ids exhausted")]
    OidsExhausted,
    /// A blob operation on a storage opened without a blob directory.
    #[error("this storage has no blob directory")]
    NoBlobs,
    /// No blob file for this revision (ZEO's `POSKeyError('No blob file at <path>', oid,
    /// serial)`): the revision does not exist, is not committed, or has no blob.
    #[error("POSKeyError: No blob file at {path}")]
    BlobMissing {
        /// The object.
        oid: Oid,
        /// The revision asked for.
        serial: Tid,
        /// Where its blob file would be.
        path: String,
    },
    /// A blob upload id that is not (or no longer) open.
    #[error("no blob upload {0} in progress")]
    UnknownUpload(u64),
    /// A pack was asked for while another one runs.
    #[error("a pack is already in progress")]
    PackInProgress,
    /// A cursor made before a pack replaced `Data.fs` was used after it: its positions mean
    /// nothing in the new file. Start the iteration again.
    #[error("Data.fs was replaced by a pack since this cursor was made (file generation {cursor}, now {current}); start again")]
    FileReplaced {
        /// The generation the cursor was made in.
        cursor: u64,
        /// The current generation.
        current: u64,
    },

    // ---- the storage's faults ------------------------------------------------------------
    /// The operating system failed an I/O call.
    #[error("{op} {path}: {source}")]
    Io {
        /// What the engine was doing (`read`, `write`, `sync`, `truncate`…).
        op: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file does not hold what the format requires at `offset`.
    #[error("corrupt file at offset {offset}: expected {expected}, found {found}")]
    Corrupt {
        /// Byte offset in `Data.fs`.
        offset: u64,
        /// What the format requires there.
        expected: String,
        /// What is there.
        found: String,
    },
    /// A commit failed after its data may have reached the disk (a failed fsync at finish,
    /// say). The engine refuses every further write until the storage is reopened, which
    /// recovers whatever the disk holds.
    #[error("storage is broken until reopened: {0}")]
    Broken(String),
}

impl StorageError {
    /// Who is to blame.
    pub fn culprit(&self) -> Culprit {
        match self {
            StorageError::Io { .. } | StorageError::Corrupt { .. } | StorageError::Broken(_) => {
                Culprit::Storage
            }
            _ => Culprit::Caller,
        }
    }

    pub(crate) fn corrupt(offset: u64, expected: impl Into<String>, found: impl Into<String>) -> Self {
        StorageError::Corrupt { offset, expected: expected.into(), found: found.into() }
    }
}

/// Opening a storage failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file does not start with `FS30` (or `FS21` when allowed).
    #[error("{path} is not a FileStorage: expected magic \"FS30\" at offset 0, found {found} (\"FS21\" is a Python 2 FileStorage: convert it with zodbupdate, or allow it in the options)")]
    NotFileStorage {
        /// The file.
        path: String,
        /// What its first bytes are.
        found: String,
    },
    /// The file is damaged before its end; it is refused rather than cut back, because cutting
    /// would drop committed transactions.
    #[error("{path}: corrupt at offset {offset}: expected {expected}, found {found}")]
    Corrupt {
        /// The file.
        path: String,
        /// Byte offset of the damage.
        offset: u64,
        /// What the format requires there.
        expected: String,
        /// What is there.
        found: String,
    },
    /// The blob directory's `.layout` names a layout that ZODB does not define.
    #[error("{path}: unknown blob directory layout {found:?} (ZODB's layouts are \"bushy\" and \"lawn\")")]
    BlobLayout {
        /// The `.layout` file.
        path: String,
        /// What it says.
        found: String,
    },
    /// The storage's lock file is locked: another process (or another open in this one) has it
    /// open for writing, be it zeoraid or Python's FileStorage (a ZEO server, a script).
    #[error(
        "{lock} is locked by {}: the storage is open for writing elsewhere (zeoraid, or Python's \
         FileStorage or ZEO server); close it there first, or open read-only",
        super::lock::show_pid(*.pid)
    )]
    Locked {
        /// The lock file (`Data.fs.lock`).
        lock: String,
        /// The holder's pid, as written in the lock file.
        pid: Option<u32>,
    },
    /// The file is missing and `create` was off, or the storage is read-only.
    #[error("{path} does not exist")]
    Missing {
        /// The file.
        path: String,
    },
    /// The operating system failed an I/O call.
    #[error("{op} {path}: {source}")]
    Io {
        /// What the engine was doing.
        op: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl OpenError {
    pub(crate) fn from_storage(e: StorageError, path: &str) -> OpenError {
        match e {
            StorageError::Io { op, path, source } => OpenError::Io { op, path, source },
            StorageError::Corrupt { offset, expected, found } => {
                OpenError::Corrupt { path: path.to_owned(), offset, expected, found }
            }
            other => OpenError::Corrupt {
                path: path.to_owned(),
                offset: 0,
                expected: "a consistent storage".into(),
                found: other.to_string(),
            },
        }
    }
}

/// Result of storage operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
