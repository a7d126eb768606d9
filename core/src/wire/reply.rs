//! Typed results of successful calls (the bare 4th element of a `.reply`, §3.1 and §4.2).
//!
//! A reply does not name its method, so a client types it with [`Reply::from_value`], giving
//! the [`Method`] of the call whose msgid it answers. Maps are written with their keys in the
//! order a stock FileStorage-backed server writes them, so re-encoding reproduces its bytes.

use super::request::Method;
use super::types::{
    bool_of, bytes_of, field_err, float_of, int_of, map_of, oid_list, oid_of, oid_value, oids_of, opt_tid_of,
    opt_tid_value, seq_of, status_of, status_value, text_of, tid_of, tid_value, Args, Extension, IterId,
    TxnStatus, TypedError, UndoId,
};
use super::value::{SeqKind, Text, Value};
use crate::ids::{Oid, Tid};
use bytes::Bytes;

/// `get_info` result and `info` push: storage facts (every key is optional on the wire).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StorageInfo {
    /// `length`: number of objects.
    pub length: Option<i64>,
    /// `size`: approximate size in bytes.
    pub size: Option<i64>,
    /// `name`: the storage's name (FileStorage: its path).
    pub name: Option<Text>,
    /// `supportsUndo`.
    pub supports_undo: Option<bool>,
    /// `supports_record_iternext`.
    pub supports_record_iternext: Option<bool>,
    /// `interfaces`: `(module, name)` pairs the storage provides.
    pub interfaces: Option<Vec<(Text, Text)>>,
    /// Any other keys, in wire order.
    pub extra: Vec<(Value, Value)>,
}

impl StorageInfo {
    /// Parses the map.
    pub fn from_value(v: &Value) -> Result<StorageInfo, TypedError> {
        const CTX: &str = "get_info";
        let mut info = StorageInfo::default();
        for (k, val) in map_of(v, CTX)? {
            match k.as_str() {
                Some("length") => info.length = Some(int_of(val, "get_info.length")?),
                Some("size") => info.size = Some(int_of(val, "get_info.size")?),
                Some("name") => info.name = Some(text_of(val, "get_info.name")?),
                Some("supportsUndo") => info.supports_undo = Some(bool_of(val, "get_info.supportsUndo")?),
                Some("supports_record_iternext") => {
                    info.supports_record_iternext = Some(bool_of(val, "get_info.supports_record_iternext")?)
                }
                Some("interfaces") => {
                    let pairs = seq_of(val, "get_info.interfaces")?
                        .iter()
                        .map(|p| {
                            let mut a = Args::of_seq("get_info.interfaces", p, 2, "2")?;
                            Ok((a.text()?, a.text()?))
                        })
                        .collect::<Result<_, TypedError>>()?;
                    info.interfaces = Some(pairs);
                }
                _ => info.extra.push((k.clone(), val.clone())),
            }
        }
        Ok(info)
    }

    /// The map, known keys first in stock order.
    pub fn to_value(&self) -> Value {
        let mut m = Vec::new();
        if let Some(l) = self.length {
            m.push((Value::str_static("length"), Value::Int(i128::from(l))));
        }
        if let Some(s) = self.size {
            m.push((Value::str_static("size"), Value::Int(i128::from(s))));
        }
        if let Some(n) = &self.name {
            m.push((Value::str_static("name"), Value::Str(n.clone())));
        }
        if let Some(u) = self.supports_undo {
            m.push((Value::str_static("supportsUndo"), Value::Bool(u)));
        }
        if let Some(r) = self.supports_record_iternext {
            m.push((Value::str_static("supports_record_iternext"), Value::Bool(r)));
        }
        if let Some(ifs) = &self.interfaces {
            let items = ifs
                .iter()
                .map(|(a, b)| Value::tuple(vec![Value::Str(a.clone()), Value::Str(b.clone())]))
                .collect();
            m.push((Value::str_static("interfaces"), Value::tuple(items)));
        }
        m.extend(self.extra.iter().cloned());
        Value::Map(m)
    }
}

/// `getInvalidations` result when the server can answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalidations {
    /// The newest tid the answer covers.
    pub tid: Tid,
    /// Every oid changed after the client's tid.
    pub oids: Vec<Oid>,
}

/// `loadBefore` result when a revision exists.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadBeforeResult {
    /// The data record.
    pub data: Bytes,
    /// The revision's tid.
    pub start: Tid,
    /// The next revision's tid, `None` if this one is current.
    pub end: Option<Tid>,
}

/// One `history` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// Commit time, epoch seconds.
    pub time: f64,
    /// Transaction user.
    pub user_name: Bytes,
    /// Transaction description.
    pub description: Bytes,
    /// Revision tid.
    pub tid: Tid,
    /// Record length (0 for a delete record).
    pub size: i64,
    /// The transaction's extension keys, merged into the entry.
    pub extension: Extension,
}

/// `record_iternext` result.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordIternextResult {
    /// Object.
    pub oid: Oid,
    /// Current revision tid.
    pub tid: Tid,
    /// Current data.
    pub data: Bytes,
    /// Where to continue, `None` at the end.
    pub next: Option<Oid>,
}

/// One item of a `vote` result.
#[derive(Debug, Clone, PartialEq)]
pub enum VoteItem {
    /// An oid whose data the server changed (resolved conflict, undo): the client must not
    /// cache what it sent.
    Oid(Oid),
    /// A conflict the client must resolve (client-conflict-resolution mode, §6.6.2).
    Conflict {
        /// Object.
        oid: Oid,
        /// The committed serial.
        committed: Tid,
        /// The serial the client read.
        read: Tid,
        /// The client's data.
        data: Bytes,
    },
}

/// One `undoLog`/`undoInfo` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct UndoEntry {
    /// Undo id to pass to `undoa`.
    pub id: UndoId,
    /// Commit time, epoch seconds.
    pub time: f64,
    /// Transaction user.
    pub user_name: Bytes,
    /// Transaction record size (FileStorage gives it).
    pub size: Option<i64>,
    /// Transaction description.
    pub description: Bytes,
    /// The transaction's extension keys, merged into the entry.
    pub extension: Extension,
}

/// `iterator_next` result: one transaction's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnHeader {
    /// Transaction id.
    pub tid: Tid,
    /// Status.
    pub status: TxnStatus,
    /// User.
    pub user: Bytes,
    /// Description.
    pub description: Bytes,
    /// Extension.
    pub extension: Extension,
}

/// `iterator_record_next` result: one data record of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct DataRecord {
    /// Object.
    pub oid: Oid,
    /// The transaction the record belongs to.
    pub tid: Tid,
    /// Data, `None` for a record without data (undone creation, delete).
    pub data: Option<Bytes>,
    /// Back-pointer to the transaction whose data is reused.
    pub data_txn: Option<Tid>,
}

/// `server_status` result (§4.3), also each value of the `ruok` answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerStatus {
    /// Registered connections.
    pub connections: i64,
    /// Loads served.
    pub loads: i64,
    /// Stores received.
    pub stores: i64,
    /// Commits.
    pub commits: i64,
    /// Aborts.
    pub aborts: i64,
    /// Open transactions.
    pub active_txns: i64,
    /// When the commit lock was taken (epoch seconds), `None` if free.
    pub lock_time: Option<f64>,
    /// Conflicts.
    pub conflicts: i64,
    /// Conflicts resolved on the server.
    pub conflicts_resolved: i64,
    /// Start time, in `ctime` format.
    pub start: Text,
    /// Voters queued for the commit lock.
    pub waiting: i64,
    /// `timeout-thread-is-alive`: a bool, or the str `'stub'` when no timeout is set.
    pub timeout_thread_is_alive: Value,
    /// `last-transaction`: 16 hex digits.
    pub last_transaction: Text,
    /// Any other keys.
    pub extra: Vec<(Value, Value)>,
}

impl ServerStatus {
    /// Parses the map; every §4.3 key is required.
    pub fn from_value(v: &Value) -> Result<ServerStatus, TypedError> {
        const CTX: &str = "server_status";
        let m = map_of(v, CTX)?;
        let get = |key: &'static str| v.get(key).ok_or(TypedError::MissingKey { context: CTX, key });
        let int = |key: &'static str| get(key).and_then(|x| int_of(x, format!("{CTX}.{key}")));
        const KNOWN: [&str; 13] = [
            "connections",
            "loads",
            "stores",
            "commits",
            "aborts",
            "active_txns",
            "lock_time",
            "conflicts",
            "conflicts_resolved",
            "start",
            "waiting",
            "timeout-thread-is-alive",
            "last-transaction",
        ];
        Ok(ServerStatus {
            connections: int("connections")?,
            loads: int("loads")?,
            stores: int("stores")?,
            commits: int("commits")?,
            aborts: int("aborts")?,
            active_txns: int("active_txns")?,
            lock_time: match get("lock_time")? {
                Value::None => None,
                x => Some(float_of(x, "server_status.lock_time")?),
            },
            conflicts: int("conflicts")?,
            conflicts_resolved: int("conflicts_resolved")?,
            start: text_of(get("start")?, "server_status.start")?,
            waiting: int("waiting")?,
            timeout_thread_is_alive: get("timeout-thread-is-alive")?.clone(),
            last_transaction: text_of(get("last-transaction")?, "server_status.last-transaction")?,
            extra: m
                .iter()
                .filter(|(k, _)| !k.as_str().is_some_and(|k| KNOWN.contains(&k)))
                .cloned()
                .collect(),
        })
    }

    /// The map, in stock key order.
    pub fn to_value(&self) -> Value {
        let i = |n: i64| Value::Int(i128::from(n));
        let mut m = vec![
            (Value::str_static("connections"), i(self.connections)),
            (Value::str_static("loads"), i(self.loads)),
            (Value::str_static("stores"), i(self.stores)),
            (Value::str_static("commits"), i(self.commits)),
            (Value::str_static("aborts"), i(self.aborts)),
            (Value::str_static("active_txns"), i(self.active_txns)),
            (Value::str_static("lock_time"), self.lock_time.map_or(Value::None, Value::Float)),
            (Value::str_static("conflicts"), i(self.conflicts)),
            (Value::str_static("conflicts_resolved"), i(self.conflicts_resolved)),
            (Value::str_static("start"), Value::Str(self.start.clone())),
            (Value::str_static("waiting"), i(self.waiting)),
            (Value::str_static("timeout-thread-is-alive"), self.timeout_thread_is_alive.clone()),
            (Value::str_static("last-transaction"), Value::Str(self.last_transaction.clone())),
        ];
        m.extend(self.extra.iter().cloned());
        Value::Map(m)
    }
}

/// A typed successful result.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `register`: the storage's last tid (`None` from servers older than ZEO 5).
    Register(Option<Tid>),
    /// `get_info`.
    GetInfo(StorageInfo),
    /// `lastTransaction`.
    LastTransaction(Tid),
    /// `getInvalidations`: `None` means "drop your whole cache".
    GetInvalidations(Option<Invalidations>),
    /// `new_oids`.
    NewOids(Vec<Oid>),
    /// `loadBefore`: `None` when the object has no revision before the tid.
    LoadBefore(Option<LoadBeforeResult>),
    /// `loadSerial`.
    LoadSerial(Bytes),
    /// `getTid`.
    GetTid(Tid),
    /// `history`, newest first.
    History(Vec<HistoryEntry>),
    /// `record_iternext`.
    RecordIternext(RecordIternextResult),
    /// `vote`.
    Vote(Vec<VoteItem>),
    /// `tpc_finish`: the committed tid (`None` when there was no such transaction).
    TpcFinish(Option<Tid>),
    /// `undoLog` or `undoInfo`.
    UndoLog(Vec<UndoEntry>),
    /// `iterator_start` or `iterator_record_start`: the new iterator id.
    IterId(IterId),
    /// `iterator_next`: `None` at the end.
    IteratorNext(Option<TxnHeader>),
    /// `iterator_record_next`: `None` at the end.
    IteratorRecordNext(Option<DataRecord>),
    /// `server_status`.
    ServerStatus(Box<ServerStatus>),
    /// `None`: `ping`, `tpc_abort`, `sendBlob`, `pack`, and every async method if called
    /// synchronously.
    Nil,
    /// A result of a method this model does not type (an unknown method), kept as it came.
    Raw(Value),
}

impl Reply {
    /// Types the result of a call to `method`.
    pub fn from_value(method: Method, v: &Value) -> Result<Reply, TypedError> {
        let ctx = method.name();
        Ok(match method {
            Method::Register => Reply::Register(opt_tid_of(v, ctx)?),
            Method::GetInfo => Reply::GetInfo(StorageInfo::from_value(v)?),
            Method::LastTransaction => Reply::LastTransaction(tid_of(v, ctx)?),
            Method::GetInvalidations => Reply::GetInvalidations(match v {
                Value::None => None,
                v => {
                    let mut a = Args::of_seq(ctx, v, 2, "2")?;
                    let tid = a.tid()?;
                    let oids = oids_of(a.value()?, "getInvalidations oids")?;
                    Some(Invalidations { tid, oids })
                }
            }),
            Method::NewOids => Reply::NewOids(oids_of(v, ctx)?),
            Method::LoadBefore => Reply::LoadBefore(match v {
                Value::None => None,
                v => {
                    let mut a = Args::of_seq(ctx, v, 3, "3")?;
                    Some(LoadBeforeResult { data: a.bytes()?, start: a.tid()?, end: a.opt_tid()? })
                }
            }),
            Method::LoadSerial => Reply::LoadSerial(bytes_of(v, ctx)?),
            Method::GetTid => Reply::GetTid(tid_of(v, ctx)?),
            Method::History => {
                Reply::History(seq_of(v, ctx)?.iter().map(history_entry).collect::<Result<_, _>>()?)
            }
            Method::RecordIternext => {
                let mut a = Args::of_seq(ctx, v, 4, "4")?;
                Reply::RecordIternext(RecordIternextResult {
                    oid: a.oid()?,
                    tid: a.tid()?,
                    data: a.bytes()?,
                    next: match a.value()? {
                        Value::None => None,
                        o => Some(oid_of(o, "record_iternext next")?),
                    },
                })
            }
            Method::Vote => Reply::Vote(seq_of(v, ctx)?.iter().map(vote_item).collect::<Result<_, _>>()?),
            Method::TpcFinish => Reply::TpcFinish(opt_tid_of(v, ctx)?),
            Method::UndoLog | Method::UndoInfo => {
                Reply::UndoLog(seq_of(v, ctx)?.iter().map(undo_entry).collect::<Result<_, _>>()?)
            }
            Method::IteratorStart | Method::IteratorRecordStart => Reply::IterId(IterId(int_of(v, ctx)?)),
            Method::IteratorNext => Reply::IteratorNext(match v {
                Value::None => None,
                v => {
                    let mut a = Args::of_seq(ctx, v, 5, "5")?;
                    let tid = a.tid()?;
                    let status = status_of(a.value()?, "iterator_next status")?;
                    let user = a.bytes()?;
                    let description = a.bytes()?;
                    let extension = Extension(map_of(a.value()?, "iterator_next extension")?.to_vec());
                    Some(TxnHeader { tid, status, user, description, extension })
                }
            }),
            Method::IteratorRecordNext => Reply::IteratorRecordNext(match v {
                Value::None => None,
                v => {
                    let mut a = Args::of_seq(ctx, v, 4, "4")?;
                    Some(DataRecord {
                        oid: a.oid()?,
                        tid: a.tid()?,
                        data: a.opt_bytes()?,
                        data_txn: a.opt_tid()?,
                    })
                }
            }),
            Method::ServerStatus => Reply::ServerStatus(Box::new(ServerStatus::from_value(v)?)),
            Method::Ping
            | Method::TpcAbort
            | Method::SendBlob
            | Method::Pack
            | Method::NewOid
            | Method::SetClientLabel
            | Method::TpcBegin
            | Method::Storea
            | Method::CheckCurrentSerialInTransaction
            | Method::Restorea
            | Method::StoreBlobStart
            | Method::StoreBlobChunk
            | Method::StoreBlobEnd
            | Method::StoreBlobShared
            | Method::DeleteObject
            | Method::Undoa
            | Method::IteratorGc => match v {
                Value::None => Reply::Nil,
                other => return Err(field_err(ctx, "None", other)),
            },
        })
    }

    /// The result value, shaped as a stock server sends it.
    pub fn to_value(&self) -> Value {
        match self {
            Reply::Register(t) => opt_tid_value(*t),
            Reply::GetInfo(info) => info.to_value(),
            Reply::LastTransaction(t) | Reply::GetTid(t) => tid_value(*t),
            Reply::GetInvalidations(None) => Value::None,
            Reply::GetInvalidations(Some(inv)) => Value::tuple(vec![tid_value(inv.tid), oid_list(&inv.oids)]),
            Reply::NewOids(oids) => oid_list(oids),
            Reply::LoadBefore(None) => Value::None,
            Reply::LoadBefore(Some(r)) => {
                Value::tuple(vec![Value::Bytes(r.data.clone()), tid_value(r.start), opt_tid_value(r.end)])
            }
            Reply::LoadSerial(d) => Value::Bytes(d.clone()),
            Reply::History(entries) => Value::list(entries.iter().map(history_value).collect()),
            Reply::RecordIternext(r) => Value::tuple(vec![
                oid_value(r.oid),
                tid_value(r.tid),
                Value::Bytes(r.data.clone()),
                r.next.map_or(Value::None, oid_value),
            ]),
            Reply::Vote(items) => Value::list(items.iter().map(vote_value).collect()),
            Reply::TpcFinish(t) => opt_tid_value(*t),
            Reply::UndoLog(entries) => Value::list(entries.iter().map(undo_value).collect()),
            Reply::IterId(i) => Value::Int(i128::from(i.0)),
            Reply::IteratorNext(None) | Reply::IteratorRecordNext(None) | Reply::Nil => Value::None,
            Reply::IteratorNext(Some(h)) => Value::tuple(vec![
                tid_value(h.tid),
                status_value(h.status),
                Value::Bytes(h.user.clone()),
                Value::Bytes(h.description.clone()),
                Value::Map(h.extension.0.clone()),
            ]),
            Reply::IteratorRecordNext(Some(r)) => Value::tuple(vec![
                oid_value(r.oid),
                tid_value(r.tid),
                r.data.clone().map_or(Value::None, Value::Bytes),
                opt_tid_value(r.data_txn),
            ]),
            Reply::ServerStatus(s) => s.to_value(),
            Reply::Raw(v) => v.clone(),
        }
    }
}

fn history_entry(v: &Value) -> Result<HistoryEntry, TypedError> {
    const CTX: &str = "history entry";
    let mut e = HistoryEntry {
        time: 0.0,
        user_name: Bytes::new(),
        description: Bytes::new(),
        tid: Tid::ZERO,
        size: 0,
        extension: Extension::default(),
    };
    let (mut has_time, mut has_tid) = (false, false);
    for (k, val) in map_of(v, CTX)? {
        match k.as_str() {
            Some("time") => {
                e.time = float_of(val, "history.time")?;
                has_time = true;
            }
            Some("user_name") => e.user_name = bytes_of(val, "history.user_name")?,
            Some("description") => e.description = bytes_of(val, "history.description")?,
            Some("tid") => {
                e.tid = tid_of(val, "history.tid")?;
                has_tid = true;
            }
            Some("size") => e.size = int_of(val, "history.size")?,
            _ => e.extension.0.push((k.clone(), val.clone())),
        }
    }
    if !has_tid {
        return Err(TypedError::MissingKey { context: CTX, key: "tid" });
    }
    if !has_time {
        e.time = e.tid.to_unix_f64();
    }
    Ok(e)
}

fn history_value(e: &HistoryEntry) -> Value {
    let mut m = vec![
        (Value::str_static("time"), Value::Float(e.time)),
        (Value::str_static("user_name"), Value::Bytes(e.user_name.clone())),
        (Value::str_static("description"), Value::Bytes(e.description.clone())),
        (Value::str_static("tid"), tid_value(e.tid)),
        (Value::str_static("size"), Value::Int(i128::from(e.size))),
    ];
    m.extend(e.extension.0.iter().cloned());
    Value::Map(m)
}

fn undo_entry(v: &Value) -> Result<UndoEntry, TypedError> {
    const CTX: &str = "undoLog entry";
    let mut e = UndoEntry {
        id: UndoId(Bytes::new()),
        time: 0.0,
        user_name: Bytes::new(),
        size: None,
        description: Bytes::new(),
        extension: Extension::default(),
    };
    let mut has_id = false;
    for (k, val) in map_of(v, CTX)? {
        match k.as_str() {
            Some("id") => {
                e.id = UndoId(bytes_of(val, "undoLog.id")?);
                has_id = true;
            }
            Some("time") => e.time = float_of(val, "undoLog.time")?,
            Some("user_name") => e.user_name = bytes_of(val, "undoLog.user_name")?,
            Some("size") => e.size = Some(int_of(val, "undoLog.size")?),
            Some("description") => e.description = bytes_of(val, "undoLog.description")?,
            _ => e.extension.0.push((k.clone(), val.clone())),
        }
    }
    if !has_id {
        return Err(TypedError::MissingKey { context: CTX, key: "id" });
    }
    Ok(e)
}

impl UndoEntry {
    /// The entry as the map `undoLog`/`undoInfo` send (extension keys merged in).
    pub fn to_value(&self) -> Value {
        undo_value(self)
    }
}

fn undo_value(e: &UndoEntry) -> Value {
    let mut m = vec![
        (Value::str_static("id"), Value::Bytes(e.id.0.clone())),
        (Value::str_static("time"), Value::Float(e.time)),
        (Value::str_static("user_name"), Value::Bytes(e.user_name.clone())),
    ];
    if let Some(s) = e.size {
        m.push((Value::str_static("size"), Value::Int(i128::from(s))));
    }
    m.push((Value::str_static("description"), Value::Bytes(e.description.clone())));
    m.extend(e.extension.0.iter().cloned());
    Value::Map(m)
}

fn vote_item(v: &Value) -> Result<VoteItem, TypedError> {
    match v {
        Value::Map(_) => {
            const CTX: &str = "vote conflict";
            let get = |key: &'static str| v.get(key).ok_or(TypedError::MissingKey { context: CTX, key });
            let oid = oid_of(get("oid")?, "vote conflict oid")?;
            let mut serials = Args::of_seq("vote conflict serials", get("serials")?, 2, "2")?;
            let committed = serials.tid()?;
            let read = serials.tid()?;
            let data = bytes_of(get("data")?, "vote conflict data")?;
            Ok(VoteItem::Conflict { oid, committed, read, data })
        }
        v => oid_of(v, "vote oid").map(VoteItem::Oid),
    }
}

fn vote_value(item: &VoteItem) -> Value {
    match item {
        VoteItem::Oid(o) => oid_value(*o),
        VoteItem::Conflict { oid, committed, read, data } => Value::Map(vec![
            (Value::str_static("oid"), oid_value(*oid)),
            (
                Value::str_static("serials"),
                Value::Seq(SeqKind::Tuple, vec![tid_value(*committed), tid_value(*read)]),
            ),
            (Value::str_static("data"), Value::Bytes(data.clone())),
        ]),
    }
}
