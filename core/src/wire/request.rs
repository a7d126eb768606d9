//! Typed client → server calls: every server method of `zeo-protocol.md` §4.2.
//!
//! The server decodes them with [`Request::from_call`]; zeoraid's backend client builds them
//! and encodes them with [`Request::to_args`]. Argument shapes follow what the stock Python
//! client sends, so that re-encoding a decoded call reproduces its bytes.

use super::types::{
    field_err, oid_value, opt_tid_value, status_value, tid_value, Args, Extension, IterId, Owned, TxnId,
    TxnStatus, TypedError, UndoId,
};
use super::value::{SeqKind, Text, Value};
use crate::ids::{Oid, Tid};
use bytes::Bytes;

pub use super::method::Method;

/// One call from a client, with typed arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `register(storage, read_only)`: attach the connection to a storage.
    Register {
        /// Storage name (`"1"` by default).
        storage: Text,
        /// Whether the client asks for a read-only connection.
        read_only: bool,
    },
    /// `get_info()`.
    GetInfo,
    /// `lastTransaction()`.
    LastTransaction,
    /// `getInvalidations(tid)`: what changed after `tid`.
    GetInvalidations {
        /// The client's cached last tid.
        tid: Tid,
    },
    /// `new_oids(n)`; `None` when the client sent no argument (the server's default, 100).
    NewOids {
        /// How many oids, if given.
        n: Option<i64>,
    },
    /// `new_oid()`, registered by stock servers but never implemented.
    NewOid,
    /// `pack(t, wait)`.
    Pack {
        /// Pack time, epoch seconds.
        time: f64,
        /// Whether to reply after the pack completes.
        wait: bool,
    },
    /// `loadBefore(oid, tid)`: the revision current just before `before`.
    LoadBefore {
        /// Object.
        oid: Oid,
        /// Exclusive upper bound on the revision's tid.
        before: Tid,
    },
    /// `storea(oid, serial, data, txn)`.
    Storea {
        /// Object.
        oid: Oid,
        /// The serial the client read (`z64` for a new object).
        serial: Tid,
        /// New data record.
        data: Bytes,
        /// Transaction handle.
        txn: TxnId,
    },
    /// `checkCurrentSerialInTransaction(oid, serial, txn)`.
    CheckCurrentSerialInTransaction {
        /// Object.
        oid: Oid,
        /// The serial that must still be current at vote.
        serial: Tid,
        /// Transaction handle.
        txn: TxnId,
    },
    /// `restorea(oid, serial, data, prev_txn, txn)`: copy a record with its original serial.
    Restorea {
        /// Object.
        oid: Oid,
        /// The tid that originally wrote the record.
        serial: Tid,
        /// Data, or `None` for a record without data (an undone creation).
        data: Option<Bytes>,
        /// Back-pointer: the transaction whose data this record reuses.
        prev_txn: Option<Tid>,
        /// Transaction handle.
        txn: TxnId,
    },
    /// `storeBlobStart()`: open the connection's blob upload slot.
    StoreBlobStart,
    /// `storeBlobChunk(chunk)`.
    StoreBlobChunk {
        /// The next piece of the blob file.
        chunk: Bytes,
    },
    /// `storeBlobEnd(oid, serial, data, txn)`: bind the uploaded file to a store.
    StoreBlobEnd {
        /// Object.
        oid: Oid,
        /// Serial read.
        serial: Tid,
        /// Data record.
        data: Bytes,
        /// Transaction handle.
        txn: TxnId,
    },
    /// `storeBlobShared(oid, serial, data, filename, txn)` (shared blob directory).
    StoreBlobShared {
        /// Object.
        oid: Oid,
        /// Serial read.
        serial: Tid,
        /// Data record.
        data: Bytes,
        /// Bare file name inside the oid's blob directory.
        filename: Text,
        /// Transaction handle.
        txn: TxnId,
    },
    /// `deleteObject(oid, serial, txn)`.
    DeleteObject {
        /// Object.
        oid: Oid,
        /// Current serial.
        serial: Tid,
        /// Transaction handle.
        txn: TxnId,
    },
    /// `tpc_begin(txn, user, description, ext, tid, status)`.
    TpcBegin {
        /// Transaction handle.
        txn: TxnId,
        /// `user` metadata.
        user: Bytes,
        /// `description` metadata.
        description: Bytes,
        /// Extension dict.
        extension: Extension,
        /// A supplied tid (copying), or `None` to let the server choose at vote.
        tid: Option<Tid>,
        /// Transaction status (`' '` unless copying).
        status: TxnStatus,
    },
    /// `vote(txn)`.
    Vote {
        /// Transaction handle.
        txn: TxnId,
    },
    /// `tpc_finish(txn)`.
    TpcFinish {
        /// Transaction handle.
        txn: TxnId,
    },
    /// `tpc_abort(txn)`.
    TpcAbort {
        /// Transaction handle.
        txn: TxnId,
    },
    /// `history(oid, size)`.
    History {
        /// Object.
        oid: Oid,
        /// Most entries wanted (default 1).
        size: i64,
    },
    /// `record_iternext(next)`.
    RecordIternext {
        /// Where to continue, `None` to start.
        next: Option<Oid>,
    },
    /// `sendBlob(oid, serial)`.
    SendBlob {
        /// Object.
        oid: Oid,
        /// Revision.
        serial: Tid,
    },
    /// `getTid(oid)` (deprecated).
    GetTid {
        /// Object.
        oid: Oid,
    },
    /// `loadSerial(oid, serial)`.
    LoadSerial {
        /// Object.
        oid: Oid,
        /// Exact revision.
        serial: Tid,
    },
    /// `undoa(undo_id, txn)`.
    Undoa {
        /// Undo id from `undoLog`.
        undo_id: UndoId,
        /// Transaction handle.
        txn: TxnId,
    },
    /// `undoLog(first, last)`.
    UndoLog {
        /// First index.
        first: i64,
        /// End index, or a negative count.
        last: i64,
    },
    /// `undoInfo(first, last, spec)`.
    UndoInfo {
        /// First index.
        first: i64,
        /// End index, or a negative count.
        last: i64,
        /// Filter: entries must match every item (a dict), or `None`.
        spec: Option<Value>,
    },
    /// `iterator_start(start, stop)`.
    IteratorStart {
        /// First tid (inclusive) or `None`.
        start: Option<Tid>,
        /// Last tid (inclusive) or `None`.
        stop: Option<Tid>,
    },
    /// `iterator_next(iid)`.
    IteratorNext {
        /// Transaction iterator.
        iid: IterId,
    },
    /// `iterator_record_start(txn_iid, tid)`.
    IteratorRecordStart {
        /// Transaction iterator.
        txn_iid: IterId,
        /// The transaction it last returned.
        tid: Tid,
    },
    /// `iterator_record_next(riid)`.
    IteratorRecordNext {
        /// Record iterator.
        riid: IterId,
    },
    /// `iterator_gc(iids)`.
    IteratorGc {
        /// Iterators to forget.
        iids: Vec<IterId>,
    },
    /// `server_status()`.
    ServerStatus,
    /// `set_client_label(label)`.
    SetClientLabel {
        /// Label for the server's logs.
        label: Text,
    },
    /// `ping()`.
    Ping,
    /// A method name the server does not register (stock servers close the connection).
    Unknown {
        /// The name as sent.
        name: Text,
        /// The arguments as sent.
        args: Vec<Value>,
    },
}

impl Request {
    /// The method, or `None` for [`Request::Unknown`].
    pub fn method(&self) -> Option<Method> {
        Some(match self {
            Request::Register { .. } => Method::Register,
            Request::GetInfo => Method::GetInfo,
            Request::LastTransaction => Method::LastTransaction,
            Request::GetInvalidations { .. } => Method::GetInvalidations,
            Request::NewOids { .. } => Method::NewOids,
            Request::NewOid => Method::NewOid,
            Request::Pack { .. } => Method::Pack,
            Request::LoadBefore { .. } => Method::LoadBefore,
            Request::Storea { .. } => Method::Storea,
            Request::CheckCurrentSerialInTransaction { .. } => Method::CheckCurrentSerialInTransaction,
            Request::Restorea { .. } => Method::Restorea,
            Request::StoreBlobStart => Method::StoreBlobStart,
            Request::StoreBlobChunk { .. } => Method::StoreBlobChunk,
            Request::StoreBlobEnd { .. } => Method::StoreBlobEnd,
            Request::StoreBlobShared { .. } => Method::StoreBlobShared,
            Request::DeleteObject { .. } => Method::DeleteObject,
            Request::TpcBegin { .. } => Method::TpcBegin,
            Request::Vote { .. } => Method::Vote,
            Request::TpcFinish { .. } => Method::TpcFinish,
            Request::TpcAbort { .. } => Method::TpcAbort,
            Request::History { .. } => Method::History,
            Request::RecordIternext { .. } => Method::RecordIternext,
            Request::SendBlob { .. } => Method::SendBlob,
            Request::GetTid { .. } => Method::GetTid,
            Request::LoadSerial { .. } => Method::LoadSerial,
            Request::Undoa { .. } => Method::Undoa,
            Request::UndoLog { .. } => Method::UndoLog,
            Request::UndoInfo { .. } => Method::UndoInfo,
            Request::IteratorStart { .. } => Method::IteratorStart,
            Request::IteratorNext { .. } => Method::IteratorNext,
            Request::IteratorRecordStart { .. } => Method::IteratorRecordStart,
            Request::IteratorRecordNext { .. } => Method::IteratorRecordNext,
            Request::IteratorGc { .. } => Method::IteratorGc,
            Request::ServerStatus => Method::ServerStatus,
            Request::SetClientLabel { .. } => Method::SetClientLabel,
            Request::Ping => Method::Ping,
            Request::Unknown { .. } => return None,
        })
    }

    /// The wire name.
    pub fn name(&self) -> Text {
        match (self, self.method()) {
            (Request::Unknown { name, .. }, _) => name.clone(),
            (_, Some(m)) => Text::from_static(m.name()),
            (_, None) => Text::default(),
        }
    }

    /// Types a call from its method name and argument tuple.
    ///
    /// An unregistered name gives [`Request::Unknown`]; wrong arguments give the error that a
    /// Python server would raise as `TypeError` (or close the connection for async calls).
    pub fn from_call(name: &Text, args: &[Value]) -> Result<Request, TypedError> {
        match Method::from_wire_name(name.as_bytes()) {
            Some(method) => Request::from_args(method, args),
            None => Ok(Request::Unknown { name: name.clone(), args: args.to_vec() }),
        }
    }

    /// Types a call to a registered method from its argument tuple; see [`Request::from_call`].
    pub fn from_args(method: Method, args: &[Value]) -> Result<Request, TypedError> {
        Request::from_owned_args(method, &mut args.to_vec())
    }

    /// [`Request::from_args`], moving the byte strings, texts and other owned values it keeps
    /// out of `args` (leaving `None`s or empty values there). Every argument is checked before
    /// anything is moved, so on error `args` is as it came.
    pub fn from_owned_args(method: Method, args: &mut [Value]) -> Result<Request, TypedError> {
        let n = method.name();
        let exact = |k: usize, spelled: &'static str| Args::new(n, args, k, k, spelled);
        Ok(match method {
            Method::Register => {
                let mut a = exact(2, "2")?;
                let (storage, read_only) = (a.text_slot()?, a.truthy()?);
                Request::Register { storage: storage.take(args), read_only }
            }
            Method::GetInfo => no_args(exact(0, "0")?, Request::GetInfo),
            Method::LastTransaction => no_args(exact(0, "0")?, Request::LastTransaction),
            Method::GetInvalidations => Request::GetInvalidations { tid: exact(1, "1")?.tid()? },
            Method::NewOids => {
                let mut a = Args::new(n, args, 0, 1, "0 to 1")?;
                Request::NewOids {
                    n: a.next_opt().map(|v| super::types::int_of(v, "new_oids arg 0")).transpose()?,
                }
            }
            Method::NewOid => Request::NewOid,
            Method::Pack => {
                let mut a = Args::new(n, args, 1, 2, "1 to 2")?;
                let time = a.float()?;
                let wait = match a.next_opt() {
                    None => true,
                    Some(v) => super::types::bool_of(v, "pack arg 1")?,
                };
                Request::Pack { time, wait }
            }
            Method::LoadBefore => {
                let mut a = exact(2, "2")?;
                Request::LoadBefore { oid: a.oid()?, before: a.tid()? }
            }
            Method::Storea => {
                let mut a = exact(4, "4")?;
                let (oid, serial, data, txn) = (a.oid()?, a.tid()?, a.bytes_slot()?, a.txn_slot()?);
                Request::Storea { oid, serial, data: data.take(args), txn: txn.take(args) }
            }
            Method::CheckCurrentSerialInTransaction => {
                let mut a = exact(3, "3")?;
                let (oid, serial, txn) = (a.oid()?, a.tid()?, a.txn_slot()?);
                Request::CheckCurrentSerialInTransaction { oid, serial, txn: txn.take(args) }
            }
            Method::Restorea => {
                let mut a = exact(5, "5")?;
                let (oid, serial, data) = (a.oid()?, a.tid()?, a.opt_bytes_slot()?);
                let (prev_txn, txn) = (a.opt_tid()?, a.txn_slot()?);
                Request::Restorea { oid, serial, data: data.take(args), prev_txn, txn: txn.take(args) }
            }
            Method::StoreBlobStart => no_args(exact(0, "0")?, Request::StoreBlobStart),
            Method::StoreBlobChunk => {
                let chunk = exact(1, "1")?.bytes_slot()?;
                Request::StoreBlobChunk { chunk: chunk.take(args) }
            }
            Method::StoreBlobEnd => {
                let mut a = exact(4, "4")?;
                let (oid, serial, data, txn) = (a.oid()?, a.tid()?, a.bytes_slot()?, a.txn_slot()?);
                Request::StoreBlobEnd { oid, serial, data: data.take(args), txn: txn.take(args) }
            }
            Method::StoreBlobShared => {
                let mut a = exact(5, "5")?;
                let (oid, serial, data) = (a.oid()?, a.tid()?, a.bytes_slot()?);
                let (filename, txn) = (a.text_slot()?, a.txn_slot()?);
                Request::StoreBlobShared {
                    oid,
                    serial,
                    data: data.take(args),
                    filename: filename.take(args),
                    txn: txn.take(args),
                }
            }
            Method::DeleteObject => {
                let mut a = exact(3, "3")?;
                let (oid, serial, txn) = (a.oid()?, a.tid()?, a.txn_slot()?);
                Request::DeleteObject { oid, serial, txn: txn.take(args) }
            }
            Method::TpcBegin => {
                let mut a = Args::new(n, args, 4, 6, "4 to 6")?;
                let txn = a.txn_slot()?;
                let user = a.bytes_slot()?;
                let description = a.bytes_slot()?;
                let ext_at = a.pos();
                match a.value()? {
                    Value::Map(_) => {}
                    other => return Err(field_err("tpc_begin arg 3", "a dict", other)),
                }
                let tid = match a.next_opt() {
                    None => None,
                    Some(v) => super::types::opt_tid_of(v, "tpc_begin arg 4")?,
                };
                let status = match a.next_opt() {
                    None => TxnStatus::NORMAL,
                    Some(v) => super::types::status_of(v, "tpc_begin arg 5")?,
                };
                let extension = Extension(args.get_mut(ext_at).map(Owned::take_from).unwrap_or_default());
                Request::TpcBegin {
                    txn: txn.take(args),
                    user: user.take(args),
                    description: description.take(args),
                    extension,
                    tid,
                    status,
                }
            }
            Method::Vote => Request::Vote { txn: exact(1, "1")?.txn_slot()?.take(args) },
            Method::TpcFinish => Request::TpcFinish { txn: exact(1, "1")?.txn_slot()?.take(args) },
            Method::TpcAbort => Request::TpcAbort { txn: exact(1, "1")?.txn_slot()?.take(args) },
            Method::History => {
                let mut a = Args::new(n, args, 1, 2, "1 to 2")?;
                let oid = a.oid()?;
                let size = match a.next_opt() {
                    None => 1,
                    Some(v) => super::types::int_of(v, "history arg 1")?,
                };
                Request::History { oid, size }
            }
            Method::RecordIternext => {
                let mut a = Args::new(n, args, 0, 1, "0 to 1")?;
                let next = match a.next_opt() {
                    None | Some(Value::None) => None,
                    Some(v) => Some(super::types::oid_of(v, "record_iternext arg 0")?),
                };
                Request::RecordIternext { next }
            }
            Method::SendBlob => {
                let mut a = exact(2, "2")?;
                Request::SendBlob { oid: a.oid()?, serial: a.tid()? }
            }
            Method::GetTid => Request::GetTid { oid: exact(1, "1")?.oid()? },
            Method::LoadSerial => {
                let mut a = exact(2, "2")?;
                Request::LoadSerial { oid: a.oid()?, serial: a.tid()? }
            }
            Method::Undoa => {
                let mut a = exact(2, "2")?;
                let (undo_id, txn) = (a.bytes_slot()?, a.txn_slot()?);
                Request::Undoa { undo_id: UndoId(undo_id.take(args)), txn: txn.take(args) }
            }
            Method::UndoLog => {
                let mut a = Args::new(n, args, 0, 2, "0 to 2")?;
                let first =
                    a.next_opt().map(|v| super::types::int_of(v, "undoLog arg 0")).transpose()?.unwrap_or(0);
                let last = a
                    .next_opt()
                    .map(|v| super::types::int_of(v, "undoLog arg 1"))
                    .transpose()?
                    .unwrap_or(-20);
                Request::UndoLog { first, last }
            }
            Method::UndoInfo => {
                let mut a = Args::new(n, args, 0, 3, "0 to 3")?;
                let first =
                    a.next_opt().map(|v| super::types::int_of(v, "undoInfo arg 0")).transpose()?.unwrap_or(0);
                let last = a
                    .next_opt()
                    .map(|v| super::types::int_of(v, "undoInfo arg 1"))
                    .transpose()?
                    .unwrap_or(-20);
                let spec_at = a.pos();
                let spec = match a.next_opt() {
                    None | Some(Value::None) => false,
                    Some(Value::Map(_)) => true,
                    Some(v) => return Err(field_err("undoInfo arg 2", "a dict or None", v)),
                };
                let spec = if spec { args.get_mut(spec_at).map(Owned::take_from) } else { None };
                Request::UndoInfo { first, last, spec }
            }
            Method::IteratorStart => {
                let mut a = Args::new(n, args, 0, 2, "0 to 2")?;
                let start = a
                    .next_opt()
                    .map(|v| super::types::opt_tid_of(v, "iterator_start arg 0"))
                    .transpose()?
                    .flatten();
                let stop = a
                    .next_opt()
                    .map(|v| super::types::opt_tid_of(v, "iterator_start arg 1"))
                    .transpose()?
                    .flatten();
                Request::IteratorStart { start, stop }
            }
            Method::IteratorNext => Request::IteratorNext { iid: exact(1, "1")?.iter_id()? },
            Method::IteratorRecordStart => {
                let mut a = exact(2, "2")?;
                Request::IteratorRecordStart { txn_iid: a.iter_id()?, tid: a.tid()? }
            }
            Method::IteratorRecordNext => Request::IteratorRecordNext { riid: exact(1, "1")?.iter_id()? },
            Method::IteratorGc => {
                let v = exact(1, "1")?.value()?;
                let items = super::types::seq_of(v, "iterator_gc arg 0")?;
                let iids = items
                    .iter()
                    .map(|i| super::types::int_of(i, "iterator_gc arg 0").map(IterId))
                    .collect::<Result<_, _>>()?;
                Request::IteratorGc { iids }
            }
            Method::ServerStatus => no_args(exact(0, "0")?, Request::ServerStatus),
            Method::SetClientLabel => {
                Request::SetClientLabel { label: exact(1, "1")?.text_slot()?.take(args) }
            }
            Method::Ping => no_args(exact(0, "0")?, Request::Ping),
        })
    }

    /// The argument tuple, shaped as the stock Python client sends it.
    pub fn to_args(&self) -> Vec<Value> {
        let txn = |t: &TxnId| t.0.clone();
        match self {
            Request::Register { storage, read_only } => {
                // The Python client passes read_only as given: False/True, or 0 as in the
                // recordings (ClientStorage's default is the int 0).
                vec![Value::Str(storage.clone()), Value::Int(i128::from(*read_only))]
            }
            Request::GetInfo
            | Request::LastTransaction
            | Request::NewOid
            | Request::StoreBlobStart
            | Request::ServerStatus
            | Request::Ping => vec![],
            Request::GetInvalidations { tid } => vec![tid_value(*tid)],
            Request::NewOids { n } => n.map(|n| vec![Value::Int(i128::from(n))]).unwrap_or_default(),
            Request::Pack { time, wait } => vec![Value::Float(*time), Value::Int(i128::from(*wait))],
            Request::LoadBefore { oid, before } => vec![oid_value(*oid), tid_value(*before)],
            Request::Storea { oid, serial, data, txn: t }
            | Request::StoreBlobEnd { oid, serial, data, txn: t } => {
                vec![oid_value(*oid), tid_value(*serial), Value::Bytes(data.clone()), txn(t)]
            }
            Request::CheckCurrentSerialInTransaction { oid, serial, txn: t }
            | Request::DeleteObject { oid, serial, txn: t } => {
                vec![oid_value(*oid), tid_value(*serial), txn(t)]
            }
            Request::Restorea { oid, serial, data, prev_txn, txn: t } => vec![
                oid_value(*oid),
                tid_value(*serial),
                data.clone().map_or(Value::None, Value::Bytes),
                opt_tid_value(*prev_txn),
                txn(t),
            ],
            Request::StoreBlobChunk { chunk } => vec![Value::Bytes(chunk.clone())],
            Request::StoreBlobShared { oid, serial, data, filename, txn: t } => vec![
                oid_value(*oid),
                tid_value(*serial),
                Value::Bytes(data.clone()),
                Value::Str(filename.clone()),
                txn(t),
            ],
            Request::TpcBegin { txn: t, user, description, extension, tid, status } => vec![
                txn(t),
                Value::Bytes(user.clone()),
                Value::Bytes(description.clone()),
                Value::Map(extension.0.clone()),
                opt_tid_value(*tid),
                status_value(*status),
            ],
            Request::Vote { txn: t } | Request::TpcFinish { txn: t } | Request::TpcAbort { txn: t } => {
                vec![txn(t)]
            }
            Request::History { oid, size } => vec![oid_value(*oid), Value::Int(i128::from(*size))],
            Request::RecordIternext { next } => vec![next.map_or(Value::None, oid_value)],
            Request::SendBlob { oid, serial } | Request::LoadSerial { oid, serial } => {
                vec![oid_value(*oid), tid_value(*serial)]
            }
            Request::GetTid { oid } => vec![oid_value(*oid)],
            Request::Undoa { undo_id, txn: t } => vec![Value::Bytes(undo_id.0.clone()), txn(t)],
            Request::UndoLog { first, last } => {
                vec![Value::Int(i128::from(*first)), Value::Int(i128::from(*last))]
            }
            Request::UndoInfo { first, last, spec } => vec![
                Value::Int(i128::from(*first)),
                Value::Int(i128::from(*last)),
                spec.clone().unwrap_or(Value::None),
            ],
            Request::IteratorStart { start, stop } => vec![opt_tid_value(*start), opt_tid_value(*stop)],
            Request::IteratorNext { iid } => vec![Value::Int(i128::from(iid.0))],
            Request::IteratorRecordStart { txn_iid, tid } => {
                vec![Value::Int(i128::from(txn_iid.0)), tid_value(*tid)]
            }
            Request::IteratorRecordNext { riid } => vec![Value::Int(i128::from(riid.0))],
            Request::IteratorGc { iids } => {
                vec![Value::Seq(SeqKind::List, iids.iter().map(|i| Value::Int(i128::from(i.0))).collect())]
            }
            Request::SetClientLabel { label } => vec![Value::Str(label.clone())],
            Request::Unknown { args, .. } => args.clone(),
        }
    }
}

fn no_args(_: Args<'_>, r: Request) -> Request {
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_found_by_its_name() {
        for m in Method::ALL {
            assert_eq!(Method::from_name(m.name()), Some(m));
            assert_eq!(Method::from_wire_name(m.name().as_bytes()), Some(m));
        }
        assert_eq!(Method::from_name("registe"), None);
        assert_eq!(Method::from_name(".reply"), None);
    }
}
