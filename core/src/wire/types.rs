//! Small typed values that ZEO messages carry, and the checked readers that pull them out of
//! [`Value`]s. Every conversion from a `Value` checks its shape and says what it expected.

use super::value::{SeqKind, Text, Value};
use crate::ids::{Oid, Tid};
use bytes::Bytes;
use thiserror::Error;

/// A value had the wrong shape for the typed message it was meant to be.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TypedError {
    /// A call or push had the wrong number of arguments.
    #[error("{method}() takes {expected} arguments ({got} given)")]
    ArgCount {
        /// Method name.
        method: &'static str,
        /// What the method accepts, e.g. `"2"` or `"1 to 2"`.
        expected: &'static str,
        /// How many arrived.
        got: usize,
    },
    /// One argument or field had the wrong type or value.
    #[error("{context}: expected {expected}, got {got}")]
    Field {
        /// Which method argument or result field, e.g. `storea arg 0` or `get_info.length`.
        context: String,
        /// What was expected.
        expected: &'static str,
        /// What arrived (a Python type name or a short description).
        got: String,
    },
    /// A map lacked a required key.
    #[error("{context}: missing key {key:?}")]
    MissingKey {
        /// Which result or payload.
        context: &'static str,
        /// The missing key.
        key: &'static str,
    },
    /// The message envelope was not `(msgid, flag, name, args)`.
    #[error("malformed message: {0}")]
    Envelope(&'static str),
}

/// Shorthand for a [`TypedError::Field`].
pub(crate) fn field_err(context: impl Into<String>, expected: &'static str, got: &Value) -> TypedError {
    TypedError::Field { context: context.into(), expected, got: got.type_name().to_owned() }
}

/// The client's opaque transaction handle (`txid`): any scalar, compared by equality. The
/// Python client sends `id(txn)`, an int.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnId(pub Value);

/// An iterator id (`iterator_start`, `iterator_record_start`), a per-connection counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IterId(pub i64);

/// An opaque undo id from `undoLog`/`undoInfo` (FileStorage uses base64 of the tid).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UndoId(pub Bytes);

/// A transaction status character: `' '` normal, `'p'` packed, `'u'` undone, `'c'` checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnStatus(pub char);

impl TxnStatus {
    /// A normal committed transaction.
    pub const NORMAL: TxnStatus = TxnStatus(' ');
    /// A transaction whose history before it was packed away.
    pub const PACKED: TxnStatus = TxnStatus('p');
}

/// A transaction's extension: a dict (normally str-keyed), in wire order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Extension(pub Vec<(Value, Value)>);

/// Names an argument in an error message; kept unformatted until an error needs it, so that
/// decoding a valid message formats nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ArgCtx {
    method: &'static str,
    pos: usize,
}

impl From<ArgCtx> for String {
    fn from(c: ArgCtx) -> String {
        format!("{} arg {}", c.method, c.pos)
    }
}

/// A value that can be moved out of the [`Value`] holding it, leaving something that owns
/// nothing behind. The `Value` has been checked to be of the right kind (see [`Slot`]); were it
/// not, the result would be empty rather than a panic.
pub(crate) trait Owned: Sized {
    fn take_from(v: &mut Value) -> Self;
}

impl Owned for Bytes {
    fn take_from(v: &mut Value) -> Bytes {
        match v {
            Value::Bytes(b) => std::mem::take(b),
            _ => Bytes::new(),
        }
    }
}

impl Owned for Option<Bytes> {
    fn take_from(v: &mut Value) -> Option<Bytes> {
        match v {
            Value::Bytes(b) => Some(std::mem::take(b)),
            _ => None,
        }
    }
}

impl Owned for Text {
    fn take_from(v: &mut Value) -> Text {
        match v {
            Value::Str(t) => std::mem::take(t),
            _ => Text::default(),
        }
    }
}

impl Owned for Value {
    fn take_from(v: &mut Value) -> Value {
        std::mem::replace(v, Value::None)
    }
}

impl Owned for TxnId {
    fn take_from(v: &mut Value) -> TxnId {
        TxnId(Value::take_from(v))
    }
}

impl Owned for Vec<(Value, Value)> {
    fn take_from(v: &mut Value) -> Self {
        match v {
            Value::Map(m) => std::mem::take(m),
            _ => Vec::new(),
        }
    }
}

/// An argument checked to hold a `T`, to be moved out of the argument list only once every
/// argument has been checked: a call with a bad argument keeps all of its arguments (for the
/// error reply), and a good one gives its byte strings and texts away without copying them.
pub(crate) struct Slot<T> {
    pos: usize,
    kind: std::marker::PhantomData<fn() -> T>,
}

impl<T: Owned> Slot<T> {
    #[inline]
    fn at(pos: usize) -> Slot<T> {
        Slot { pos, kind: std::marker::PhantomData }
    }

    /// Moves the argument out of `args`, the list it was checked in.
    #[inline]
    pub(crate) fn take(self, args: &mut [Value]) -> T {
        match args.get_mut(self.pos) {
            Some(v) => T::take_from(v),
            None => T::take_from(&mut Value::None),
        }
    }
}

/// Reads typed fields out of an argument tuple or a result tuple, in order.
pub(crate) struct Args<'a> {
    context: &'static str,
    items: &'a [Value],
    pos: usize,
}

impl<'a> Args<'a> {
    /// Checks the count is within `min..=max` (`expected` spells it for the error).
    #[inline]
    pub(crate) fn new(
        context: &'static str,
        items: &'a [Value],
        min: usize,
        max: usize,
        expected: &'static str,
    ) -> Result<Args<'a>, TypedError> {
        if items.len() < min || items.len() > max {
            return Err(TypedError::ArgCount { method: context, expected, got: items.len() });
        }
        Ok(Args { context, items, pos: 0 })
    }

    /// Arguments of a sequence value (a result tuple, say) with an exact count.
    pub(crate) fn of_seq(
        context: &'static str,
        v: &'a Value,
        n: usize,
        expected: &'static str,
    ) -> Result<Args<'a>, TypedError> {
        let items = v.as_seq().ok_or_else(|| field_err(context, "a tuple", v))?;
        Args::new(context, items, n, n, expected)
    }

    /// The context of the next argument, formatted only if an error needs it.
    #[inline]
    fn ctx(&self) -> ArgCtx {
        ArgCtx { method: self.context, pos: self.pos }
    }

    /// The next value, or `None` past the end (an omitted optional argument).
    #[inline]
    pub(crate) fn next_opt(&mut self) -> Option<&'a Value> {
        let v = self.items.get(self.pos);
        self.pos += 1;
        v
    }

    #[inline]
    fn next(&mut self) -> Result<&'a Value, TypedError> {
        let ctx = self.ctx();
        self.next_opt().ok_or_else(|| TypedError::Field {
            context: ctx.into(),
            expected: "a value",
            got: "nothing".into(),
        })
    }

    /// The next value as it is, for the caller to check.
    pub(crate) fn value(&mut self) -> Result<&'a Value, TypedError> {
        self.next()
    }

    #[inline]
    pub(crate) fn oid(&mut self) -> Result<Oid, TypedError> {
        let ctx = self.ctx();
        oid_of(self.next()?, ctx)
    }

    #[inline]
    pub(crate) fn tid(&mut self) -> Result<Tid, TypedError> {
        let ctx = self.ctx();
        tid_of(self.next()?, ctx)
    }

    #[inline]
    pub(crate) fn opt_tid(&mut self) -> Result<Option<Tid>, TypedError> {
        let ctx = self.ctx();
        opt_tid_of(self.next()?, ctx)
    }

    #[inline]
    pub(crate) fn bytes(&mut self) -> Result<Bytes, TypedError> {
        let ctx = self.ctx();
        bytes_of(self.next()?, ctx)
    }

    pub(crate) fn opt_bytes(&mut self) -> Result<Option<Bytes>, TypedError> {
        let ctx = self.ctx();
        match self.next()? {
            Value::None => Ok(None),
            v => bytes_of(v, ctx).map(Some),
        }
    }

    pub(crate) fn text(&mut self) -> Result<Text, TypedError> {
        let ctx = self.ctx();
        text_of(self.next()?, ctx)
    }

    pub(crate) fn int(&mut self) -> Result<i64, TypedError> {
        let ctx = self.ctx();
        int_of(self.next()?, ctx)
    }

    pub(crate) fn float(&mut self) -> Result<f64, TypedError> {
        let ctx = self.ctx();
        float_of(self.next()?, ctx)
    }

    #[inline]
    pub(crate) fn truthy(&mut self) -> Result<bool, TypedError> {
        let ctx = self.ctx();
        match self.next()? {
            v @ (Value::Bool(_) | Value::Int(_) | Value::None) => Ok(v.is_truthy()),
            v => Err(field_err(ctx, "a bool or int", v)),
        }
    }

    /// [`Args::bytes`], to be taken later.
    #[inline]
    pub(crate) fn bytes_slot(&mut self) -> Result<Slot<Bytes>, TypedError> {
        let (pos, ctx) = (self.pos, self.ctx());
        match self.next()? {
            Value::Bytes(_) => Ok(Slot::at(pos)),
            v => Err(field_err(ctx, "bytes", v)),
        }
    }

    /// [`Args::opt_bytes`], to be taken later.
    #[inline]
    pub(crate) fn opt_bytes_slot(&mut self) -> Result<Slot<Option<Bytes>>, TypedError> {
        let (pos, ctx) = (self.pos, self.ctx());
        match self.next()? {
            Value::None | Value::Bytes(_) => Ok(Slot::at(pos)),
            v => Err(field_err(ctx, "bytes", v)),
        }
    }

    /// [`Args::text`], to be taken later.
    #[inline]
    pub(crate) fn text_slot(&mut self) -> Result<Slot<Text>, TypedError> {
        let (pos, ctx) = (self.pos, self.ctx());
        match self.next()? {
            Value::Str(_) => Ok(Slot::at(pos)),
            v => Err(field_err(ctx, "a str", v)),
        }
    }

    /// A transaction id (any scalar), to be taken later.
    #[inline]
    pub(crate) fn txn_slot(&mut self) -> Result<Slot<TxnId>, TypedError> {
        let (pos, ctx) = (self.pos, self.ctx());
        match self.next()? {
            Value::Int(_)
            | Value::BigInt(_)
            | Value::Str(_)
            | Value::Bytes(_)
            | Value::None
            | Value::Bool(_) => Ok(Slot::at(pos)),
            v => Err(field_err(ctx, "a scalar transaction id", v)),
        }
    }

    /// The position the next argument would be read from.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn iter_id(&mut self) -> Result<IterId, TypedError> {
        self.int().map(IterId)
    }
}

#[inline]
pub(crate) fn oid_of(v: &Value, ctx: impl Into<String>) -> Result<Oid, TypedError> {
    match v {
        Value::Bytes(b) => Oid::from_slice(b).ok_or_else(|| TypedError::Field {
            context: ctx.into(),
            expected: "an 8-byte oid",
            got: format!("{} bytes", b.len()),
        }),
        v => Err(field_err(ctx, "an 8-byte oid", v)),
    }
}

#[inline]
pub(crate) fn tid_of(v: &Value, ctx: impl Into<String>) -> Result<Tid, TypedError> {
    match v {
        Value::Bytes(b) => Tid::from_slice(b).ok_or_else(|| TypedError::Field {
            context: ctx.into(),
            expected: "an 8-byte tid",
            got: format!("{} bytes", b.len()),
        }),
        v => Err(field_err(ctx, "an 8-byte tid", v)),
    }
}

#[inline]
pub(crate) fn opt_tid_of(v: &Value, ctx: impl Into<String>) -> Result<Option<Tid>, TypedError> {
    match v {
        Value::None => Ok(None),
        v => tid_of(v, ctx).map(Some),
    }
}

#[inline]
pub(crate) fn bytes_of(v: &Value, ctx: impl Into<String>) -> Result<Bytes, TypedError> {
    match v {
        Value::Bytes(b) => Ok(b.clone()),
        v => Err(field_err(ctx, "bytes", v)),
    }
}

#[inline]
pub(crate) fn text_of(v: &Value, ctx: impl Into<String>) -> Result<Text, TypedError> {
    match v {
        Value::Str(t) => Ok(t.clone()),
        v => Err(field_err(ctx, "a str", v)),
    }
}

#[inline]
pub(crate) fn int_of(v: &Value, ctx: impl Into<String>) -> Result<i64, TypedError> {
    match v {
        Value::Int(i) => i64::try_from(*i).map_err(|_| TypedError::Field {
            context: ctx.into(),
            expected: "a 64-bit int",
            got: "a larger int".into(),
        }),
        Value::Bool(b) => Ok(i64::from(*b)),
        v => Err(field_err(ctx, "an int", v)),
    }
}

pub(crate) fn float_of(v: &Value, ctx: impl Into<String>) -> Result<f64, TypedError> {
    match v {
        Value::Float(f) => Ok(*f),
        // Python accepts ints where floats are expected (pack time, say).
        Value::Int(i) => Ok(*i as f64),
        v => Err(field_err(ctx, "a float", v)),
    }
}

pub(crate) fn bool_of(v: &Value, ctx: impl Into<String>) -> Result<bool, TypedError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Int(i) => Ok(*i != 0),
        v => Err(field_err(ctx, "a bool", v)),
    }
}

pub(crate) fn status_of(v: &Value, ctx: impl Into<String>) -> Result<TxnStatus, TypedError> {
    let ctx = ctx.into();
    let t = match v {
        Value::Str(t) => t.as_str(),
        // Some storages hand the status over as a 1-byte bytes.
        Value::Bytes(b) if b.len() == 1 && b[0].is_ascii() => {
            return Ok(TxnStatus(char::from(b[0])));
        }
        v => return Err(field_err(ctx, "a 1-character status", v)),
    };
    let mut chars = t.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok(TxnStatus(c)),
        _ => Err(TypedError::Field { context: ctx, expected: "a 1-character status", got: format!("{t:?}") }),
    }
}

pub(crate) fn map_of<'a>(v: &'a Value, ctx: &'static str) -> Result<&'a [(Value, Value)], TypedError> {
    match v {
        Value::Map(m) => Ok(m),
        v => Err(field_err(ctx, "a dict", v)),
    }
}

#[inline]
pub(crate) fn seq_of(v: &Value, ctx: impl Into<String>) -> Result<&[Value], TypedError> {
    v.as_seq().ok_or_else(|| field_err(ctx, "a tuple or list", v))
}

pub(crate) fn oid_value(oid: Oid) -> Value {
    Value::Bytes(Bytes::copy_from_slice(&oid.to_bytes()))
}

pub(crate) fn tid_value(tid: Tid) -> Value {
    Value::Bytes(Bytes::copy_from_slice(&tid.to_bytes()))
}

pub(crate) fn opt_tid_value(tid: Option<Tid>) -> Value {
    tid.map_or(Value::None, tid_value)
}

pub(crate) fn status_value(s: TxnStatus) -> Value {
    Value::Str(Text::from(s.0.to_string()))
}

pub(crate) fn oid_list(oids: &[Oid]) -> Value {
    Value::Seq(SeqKind::List, oids.iter().copied().map(oid_value).collect())
}

pub(crate) fn oids_of(v: &Value, ctx: &'static str) -> Result<Vec<Oid>, TypedError> {
    seq_of(v, ctx)?.iter().map(|o| oid_of(o, ctx)).collect()
}
