//! Typed server → client pushes (§5).

use super::reply::StorageInfo;
use super::types::{map_of, oid_list, oid_value, oids_of, tid_value, Args, TypedError};
use super::value::{Text, Value};
use crate::ids::{Oid, Tid};
use bytes::Bytes;

/// One push (an async call from the server, msgid 0 and flag `True`).
#[derive(Debug, Clone, PartialEq)]
pub enum Push {
    /// `invalidateTransaction(tid, oids)`: a commit by another client.
    InvalidateTransaction {
        /// The committed tid.
        tid: Tid,
        /// Oids it changed (may be empty).
        oids: Vec<Oid>,
    },
    /// `info(dict)`: updated storage facts.
    Info(StorageInfo),
    /// `receiveBlobStart(oid, serial)`.
    ReceiveBlobStart {
        /// Object.
        oid: Oid,
        /// Revision.
        serial: Tid,
    },
    /// `receiveBlobChunk(oid, serial, chunk)`.
    ReceiveBlobChunk {
        /// Object.
        oid: Oid,
        /// Revision.
        serial: Tid,
        /// Next piece of the file.
        chunk: Bytes,
    },
    /// `receiveBlobStop(oid, serial)`.
    ReceiveBlobStop {
        /// Object.
        oid: Oid,
        /// Revision.
        serial: Tid,
    },
    /// A push name a ZEO ≥ 5.4 client does not accept, kept as it came.
    Unknown {
        /// Name as sent.
        name: Text,
        /// Arguments as sent.
        args: Vec<Value>,
    },
}

impl Push {
    /// The wire name.
    pub fn name(&self) -> Text {
        Text::from_static(match self {
            Push::InvalidateTransaction { .. } => "invalidateTransaction",
            Push::Info(_) => "info",
            Push::ReceiveBlobStart { .. } => "receiveBlobStart",
            Push::ReceiveBlobChunk { .. } => "receiveBlobChunk",
            Push::ReceiveBlobStop { .. } => "receiveBlobStop",
            Push::Unknown { name, .. } => return name.clone(),
        })
    }

    /// Types a push from its name and arguments.
    pub fn from_call(name: &Text, args: &[Value]) -> Result<Push, TypedError> {
        Ok(match name.as_bytes().as_ref() {
            b"invalidateTransaction" => {
                let mut a = Args::new("invalidateTransaction", args, 2, 2, "2")?;
                let tid = a.tid()?;
                Push::InvalidateTransaction { tid, oids: oids_of(a.value()?, "invalidateTransaction oids")? }
            }
            b"info" => {
                let mut a = Args::new("info", args, 1, 1, "1")?;
                let v = a.value()?;
                map_of(v, "info")?;
                Push::Info(StorageInfo::from_value(v)?)
            }
            b"receiveBlobStart" => {
                let mut a = Args::new("receiveBlobStart", args, 2, 2, "2")?;
                Push::ReceiveBlobStart { oid: a.oid()?, serial: a.tid()? }
            }
            b"receiveBlobChunk" => {
                let mut a = Args::new("receiveBlobChunk", args, 3, 3, "3")?;
                Push::ReceiveBlobChunk { oid: a.oid()?, serial: a.tid()?, chunk: a.bytes()? }
            }
            b"receiveBlobStop" => {
                let mut a = Args::new("receiveBlobStop", args, 2, 2, "2")?;
                Push::ReceiveBlobStop { oid: a.oid()?, serial: a.tid()? }
            }
            _ => Push::Unknown { name: name.clone(), args: args.to_vec() },
        })
    }

    /// The argument tuple, shaped as a stock server sends it.
    pub fn to_args(&self) -> Vec<Value> {
        match self {
            Push::InvalidateTransaction { tid, oids } => vec![tid_value(*tid), oid_list(oids)],
            Push::Info(info) => vec![info.to_value()],
            Push::ReceiveBlobStart { oid, serial } | Push::ReceiveBlobStop { oid, serial } => {
                vec![oid_value(*oid), tid_value(*serial)]
            }
            Push::ReceiveBlobChunk { oid, serial, chunk } => {
                vec![oid_value(*oid), tid_value(*serial), Value::Bytes(chunk.clone())]
            }
            Push::Unknown { args, .. } => args.clone(),
        }
    }
}
