//! Typed error replies (§3.6): the `(class_path, payload)` pair of a flag-2 `.reply`.
//!
//! [`ZeoError::from_reply`] never fails: a class or payload shape it does not know becomes
//! [`ZeoError::Other`], kept as it came, so nothing a backend says is lost on the way to a
//! client. [`ZeoError::to_reply`] writes the payload a stock server writes, so a stock client
//! rebuilds the right exception (§3.6, "How the stock client turns error replies into
//! exceptions").

use super::types::{oid_of, oid_value, tid_of, tid_value, TxnId};
use super::value::{ExceptionValue, SeqKind, Text, Value};
use crate::ids::{Oid, Tid};

const POS: &str = "ZODB.POSException.";

/// The details of a `ConflictError` or `ReadConflictError`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflictDetails {
    /// Human-readable message (`'database conflict error'`).
    pub message: Text,
    /// The conflicting object, if known.
    pub oid: Option<Oid>,
    /// The object's class (`module.Class`), if known.
    pub class_name: Option<Text>,
    /// `(committed, read)` serials, if known.
    pub serials: Option<(Tid, Tid)>,
    /// Any other attributes, in wire order.
    pub extra: Vec<(Value, Value)>,
}

/// The arguments of a `POSKeyError`.
#[derive(Debug, Clone, PartialEq)]
pub enum PosKeyDetails {
    /// `(oid,)`: unknown object or revision.
    Oid(Oid),
    /// `(message, oid, serial)`: a missing blob file.
    Blob {
        /// `'No blob file at …'`.
        message: Text,
        /// Object.
        oid: Oid,
        /// Revision.
        serial: Tid,
    },
}

/// The arguments of a `StorageTransactionError`.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageTxnDetails {
    /// `(current, given)`: the call named another transaction than the open one (or none is
    /// open, `current` = `None`).
    Mismatch {
        /// The open transaction's id, if any.
        current: Option<TxnId>,
        /// The id the call gave.
        given: TxnId,
    },
    /// `(message,)`, e.g. `'Already voting (locked)'`.
    Message(Text),
}

/// One `UndoError`.
#[derive(Debug, Clone, PartialEq)]
pub struct UndoError {
    /// Why the undo is impossible.
    pub reason: Text,
    /// The object that blocks it, if known.
    pub oid: Option<Oid>,
}

/// A typed error reply.
#[derive(Debug, Clone, PartialEq)]
pub enum ZeoError {
    /// `ZODB.POSException.ConflictError`: a write conflict the server did not resolve.
    Conflict(ConflictDetails),
    /// `ZODB.POSException.ReadConflictError`: a `checkCurrentSerialInTransaction` failed.
    ReadConflict(ConflictDetails),
    /// `ZODB.POSException.BTreesConflictError` with its four ints.
    BTreesConflict {
        /// `p1`.
        p1: i64,
        /// `p2`.
        p2: i64,
        /// `p3`.
        p3: i64,
        /// `reason`.
        reason: i64,
    },
    /// `ZODB.POSException.POSKeyError`.
    PosKey(PosKeyDetails),
    /// `ZODB.POSException.ReadOnlyError` (no arguments).
    ReadOnly,
    /// `ZODB.POSException.StorageTransactionError`.
    StorageTransaction(StorageTxnDetails),
    /// `ZODB.POSException.UndoError`.
    Undo(UndoError),
    /// `ZODB.POSException.MultipleUndoErrors`: every object that blocks an undo.
    MultipleUndo(Vec<(Oid, UndoError)>),
    /// `builtins.ValueError(message)`.
    ValueError(Text),
    /// `builtins.KeyError(key)`.
    KeyError(Value),
    /// `builtins.TypeError(message)`.
    TypeError(Text),
    /// `builtins.AttributeError(message)`.
    AttributeError(Text),
    /// `builtins.AssertionError(message)`.
    AssertionError(Text),
    /// `builtins.Exception(message)`.
    Exception(Text),
    /// Any other class or payload shape, kept as it came.
    Other {
        /// Dotted class path.
        class_path: Text,
        /// Payload: the exception's `__dict__` or `args`.
        payload: Value,
    },
}

impl ZeoError {
    /// `POSKeyError((oid,))`.
    pub fn pos_key(oid: Oid) -> ZeoError {
        ZeoError::PosKey(PosKeyDetails::Oid(oid))
    }

    /// The dotted class path this error is sent with.
    pub fn class_path(&self) -> Text {
        let s = match self {
            ZeoError::Conflict(_) => "ZODB.POSException.ConflictError",
            ZeoError::ReadConflict(_) => "ZODB.POSException.ReadConflictError",
            ZeoError::BTreesConflict { .. } => "ZODB.POSException.BTreesConflictError",
            ZeoError::PosKey(_) => "ZODB.POSException.POSKeyError",
            ZeoError::ReadOnly => "ZODB.POSException.ReadOnlyError",
            ZeoError::StorageTransaction(_) => "ZODB.POSException.StorageTransactionError",
            ZeoError::Undo(_) => "ZODB.POSException.UndoError",
            ZeoError::MultipleUndo(_) => "ZODB.POSException.MultipleUndoErrors",
            ZeoError::ValueError(_) => "builtins.ValueError",
            ZeoError::KeyError(_) => "builtins.KeyError",
            ZeoError::TypeError(_) => "builtins.TypeError",
            ZeoError::AttributeError(_) => "builtins.AttributeError",
            ZeoError::AssertionError(_) => "builtins.AssertionError",
            ZeoError::Exception(_) => "builtins.Exception",
            ZeoError::Other { class_path, .. } => return class_path.clone(),
        };
        Text::from_static(s)
    }

    /// Types an error reply. Unknown classes and unexpected shapes become [`ZeoError::Other`].
    pub fn from_reply(class_path: &Text, payload: &Value) -> ZeoError {
        typed(class_path.as_str(), payload)
            .unwrap_or_else(|| ZeoError::Other { class_path: class_path.clone(), payload: payload.clone() })
    }

    /// The `(class_path, payload)` pair a stock server sends.
    pub fn to_reply(&self) -> (Text, Value) {
        let one = |t: &Text| Value::tuple(vec![Value::Str(t.clone())]);
        let payload = match self {
            ZeoError::Conflict(d) | ZeoError::ReadConflict(d) => conflict_value(d),
            ZeoError::BTreesConflict { p1, p2, p3, reason } => Value::Map(vec![
                (Value::str_static("p1"), Value::Int(i128::from(*p1))),
                (Value::str_static("p2"), Value::Int(i128::from(*p2))),
                (Value::str_static("p3"), Value::Int(i128::from(*p3))),
                (Value::str_static("reason"), Value::Int(i128::from(*reason))),
            ]),
            ZeoError::PosKey(PosKeyDetails::Oid(oid)) => Value::tuple(vec![oid_value(*oid)]),
            ZeoError::PosKey(PosKeyDetails::Blob { message, oid, serial }) => {
                Value::tuple(vec![Value::Str(message.clone()), oid_value(*oid), tid_value(*serial)])
            }
            ZeoError::ReadOnly => Value::tuple(vec![]),
            ZeoError::StorageTransaction(StorageTxnDetails::Mismatch { current, given }) => {
                Value::tuple(vec![current.as_ref().map_or(Value::None, |t| t.0.clone()), given.0.clone()])
            }
            ZeoError::StorageTransaction(StorageTxnDetails::Message(m)) => one(m),
            ZeoError::Undo(u) => undo_dict(u),
            ZeoError::MultipleUndo(errs) => multiple_undo_value(errs),
            ZeoError::ValueError(m)
            | ZeoError::TypeError(m)
            | ZeoError::AttributeError(m)
            | ZeoError::AssertionError(m)
            | ZeoError::Exception(m) => one(m),
            ZeoError::KeyError(k) => Value::tuple(vec![k.clone()]),
            ZeoError::Other { payload, .. } => payload.clone(),
        };
        (self.class_path(), payload)
    }
}

fn typed(class_path: &str, payload: &Value) -> Option<ZeoError> {
    // ZEO 4 era servers used `exceptions.` for builtins; the stock client accepts both.
    let builtin = class_path.strip_prefix("builtins.").or_else(|| class_path.strip_prefix("exceptions."));
    if let Some(name) = builtin {
        let args = payload.as_seq()?;
        let single_text = || match args {
            [Value::Str(t)] => Some(t.clone()),
            _ => None,
        };
        return match name {
            "ValueError" => single_text().map(ZeoError::ValueError),
            "TypeError" => single_text().map(ZeoError::TypeError),
            "AttributeError" => single_text().map(ZeoError::AttributeError),
            "AssertionError" => single_text().map(ZeoError::AssertionError),
            "Exception" => single_text().map(ZeoError::Exception),
            "KeyError" => match args {
                [k] => Some(ZeoError::KeyError(k.clone())),
                _ => None,
            },
            _ => None,
        };
    }
    let name = class_path.strip_prefix(POS)?;
    match name {
        "ConflictError" => conflict_details(payload).map(ZeoError::Conflict),
        "ReadConflictError" => conflict_details(payload).map(ZeoError::ReadConflict),
        "BTreesConflictError" => {
            let int = |k: &str| payload.get(k).and_then(Value::as_int).and_then(|i| i64::try_from(i).ok());
            match payload {
                Value::Map(m) if m.len() == 4 => Some(ZeoError::BTreesConflict {
                    p1: int("p1")?,
                    p2: int("p2")?,
                    p3: int("p3")?,
                    reason: int("reason")?,
                }),
                _ => None,
            }
        }
        "POSKeyError" => match payload.as_seq()? {
            [oid] => Some(ZeoError::PosKey(PosKeyDetails::Oid(oid_of(oid, "").ok()?))),
            [Value::Str(message), oid, serial] => Some(ZeoError::PosKey(PosKeyDetails::Blob {
                message: message.clone(),
                oid: oid_of(oid, "").ok()?,
                serial: tid_of(serial, "").ok()?,
            })),
            _ => None,
        },
        "ReadOnlyError" => payload.as_seq()?.is_empty().then_some(ZeoError::ReadOnly),
        "StorageTransactionError" => match payload.as_seq()? {
            [Value::Str(m)] => Some(ZeoError::StorageTransaction(StorageTxnDetails::Message(m.clone()))),
            [current, given] => Some(ZeoError::StorageTransaction(StorageTxnDetails::Mismatch {
                current: match current {
                    Value::None => None,
                    v => Some(TxnId(v.clone())),
                },
                given: TxnId(given.clone()),
            })),
            _ => None,
        },
        "UndoError" => undo_from_dict(payload).map(ZeoError::Undo),
        "MultipleUndoErrors" => {
            let errs = payload.get("_errs")?.as_seq()?;
            let parsed = errs
                .iter()
                .map(|e| match e.as_seq()? {
                    [oid, exc] => Some((oid_of(oid, "").ok()?, nested_undo(exc)?)),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            // Python builds `_reason`/`_oid` from the first entry; anything else is not a
            // MultipleUndoErrors we can reproduce faithfully.
            match payload {
                Value::Map(m) if m.len() == 3 && !parsed.is_empty() => Some(ZeoError::MultipleUndo(parsed)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn conflict_details(payload: &Value) -> Option<ConflictDetails> {
    let Value::Map(m) = payload else { return None };
    let mut d = ConflictDetails {
        message: Text::default(),
        oid: None,
        class_name: None,
        serials: None,
        extra: vec![],
    };
    let mut has_message = false;
    for (k, v) in m {
        match (k.as_str(), v) {
            (Some("message"), Value::Str(t)) => {
                d.message = t.clone();
                has_message = true;
            }
            (Some("oid"), Value::None)
            | (Some("class_name"), Value::None)
            | (Some("serials"), Value::None) => {
                // Python's default attribute values. We write them back, see conflict_value.
            }
            (Some("oid"), v) => d.oid = Some(oid_of(v, "").ok()?),
            (Some("class_name"), Value::Str(t)) => d.class_name = Some(t.clone()),
            (Some("serials"), v) => match v.as_seq()? {
                [a, b] => d.serials = Some((tid_of(a, "").ok()?, tid_of(b, "").ok()?)),
                _ => return None,
            },
            (Some("message" | "class_name"), _) => return None,
            _ => d.extra.push((k.clone(), v.clone())),
        }
    }
    // The stock client requires `message`, `oid` and `serials` keys (§3.6).
    (has_message && payload.get("oid").is_some() && payload.get("serials").is_some()).then_some(d)
}

fn conflict_value(d: &ConflictDetails) -> Value {
    let mut m = vec![
        (Value::str_static("message"), Value::Str(d.message.clone())),
        (Value::str_static("oid"), d.oid.map_or(Value::None, oid_value)),
        (Value::str_static("class_name"), d.class_name.clone().map_or(Value::None, Value::Str)),
        (
            Value::str_static("serials"),
            d.serials.map_or(Value::None, |(a, b)| Value::tuple(vec![tid_value(a), tid_value(b)])),
        ),
    ];
    m.extend(d.extra.iter().cloned());
    Value::Map(m)
}

fn undo_from_dict(v: &Value) -> Option<UndoError> {
    let reason = match v.get("_reason")? {
        Value::Str(t) => t.clone(),
        _ => return None,
    };
    let oid = match v.get("_oid")? {
        Value::None => None,
        o => Some(oid_of(o, "").ok()?),
    };
    Some(UndoError { reason, oid })
}

/// A nested exception: `Value::Exception` from pickle, or `(class_path, dict)` from msgpack.
fn nested_undo(v: &Value) -> Option<UndoError> {
    let (class, state) = match v {
        Value::Exception(e) => (e.class_path.as_str(), &e.state),
        Value::Seq(_, items) => match items.as_slice() {
            [Value::Str(c), state] => (c.as_str(), state),
            _ => return None,
        },
        _ => return None,
    };
    (class == "ZODB.POSException.UndoError").then(|| undo_from_dict(state)).flatten()
}

fn undo_dict(u: &UndoError) -> Value {
    Value::Map(vec![
        (Value::str_static("_reason"), Value::Str(u.reason.clone())),
        (Value::str_static("_oid"), u.oid.map_or(Value::None, oid_value)),
    ])
}

/// The nested exception object, with the pickle state (`__dict__` plus `args`); the msgpack
/// encoder lowers it to `(class_path, __dict__)`.
fn undo_exception(u: &UndoError) -> Value {
    let mut args = vec![Value::Str(u.reason.clone())];
    if let Some(oid) = u.oid {
        args.push(oid_value(oid));
    }
    let Value::Map(mut state) = undo_dict(u) else { return Value::None };
    state.push((Value::str_static("args"), Value::tuple(args)));
    Value::Exception(Box::new(ExceptionValue {
        class_path: Text::from_static("ZODB.POSException.UndoError"),
        state: Value::Map(state),
    }))
}

fn multiple_undo_value(errs: &[(Oid, UndoError)]) -> Value {
    // MultipleUndoErrors(errs) calls UndoError.__init__(self, *errs[0]), so `_reason` holds
    // the first oid and `_oid` the first nested error.
    let (reason, oid) = match errs.first() {
        Some((o, e)) => (oid_value(*o), undo_exception(e)),
        None => (Value::None, Value::None),
    };
    let list = errs.iter().map(|(o, e)| Value::tuple(vec![oid_value(*o), undo_exception(e)])).collect();
    Value::Map(vec![
        (Value::str_static("_reason"), reason),
        (Value::str_static("_oid"), oid),
        (Value::str_static("_errs"), Value::Seq(SeqKind::List, list)),
    ])
}
