//! The dynamic data model shared by both wire encodings.
//!
//! ZEO messages are Python values. The msgpack and pickle codecs translate bytes to and from
//! [`Value`]; the typed layer ([`super::message`] and friends) translates [`Value`] to and from
//! typed messages. Byte strings and texts are [`Bytes`] slices of the frame they came from, so
//! decoding never copies object data.
//!
//! Invariants every decoder upholds (and [`Value::check`] verifies):
//! * nesting depth never exceeds [`Limits::max_depth`];
//! * [`Text`] always holds valid UTF-8;
//! * [`Value::BigInt`] only holds integers outside the `i128` range, in minimal little-endian
//!   two's complement form.

use bytes::Bytes;
use std::fmt;

/// Limits applied while decoding untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest allowed nesting of containers (a scalar has depth 0).
    pub max_depth: u32,
    /// Most value nodes one message may produce, counting copies made by pickle memo reads.
    /// Decoders also never produce more nodes than a small multiple of the input length.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_depth: 64, max_nodes: 16 * 1024 * 1024 }
    }
}

/// Whether a sequence is a tuple or a list. Pickle keeps the difference; msgpack does not
/// (Python decodes every msgpack array as a tuple).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeqKind {
    /// A Python tuple (msgpack arrays decode as tuples).
    Tuple,
    /// A Python list.
    List,
}

/// A UTF-8 text (Python `str`), stored as validated bytes so that it can share the frame buffer.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Text(Bytes);

impl Text {
    /// Wraps bytes that must be valid UTF-8.
    #[inline]
    pub fn from_utf8(bytes: Bytes) -> Result<Text, std::str::Utf8Error> {
        // Names and most texts on the wire are short and ASCII, which this checks faster.
        if !bytes.is_ascii() {
            std::str::from_utf8(&bytes)?;
        }
        Ok(Text(bytes))
    }

    /// A text from a static string, without allocating.
    pub const fn from_static(s: &'static str) -> Text {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// The text as a `&str`. (This checks the UTF-8 again; to compare with a known string,
    /// `text == "name"` compares the bytes only.)
    pub fn as_str(&self) -> &str {
        // The constructor checked the bytes; a failure here would be a bug in this module,
        // so fall back to an empty string rather than panicking.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The UTF-8 bytes.
    #[inline]
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Bytes::from(s.into_bytes()))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decoded frame payload: every ZEO message is a 4-element sequence, which a decoder may
/// hand over as its four items without allocating the sequence; anything else is a value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TopLevel {
    /// The items of a top-level 4-tuple.
    Four([Value; 4]),
    /// Any other value (or a 4-sequence the decoder did not take apart).
    Other(Value),
}

/// An exception object nested inside an error payload (§3.6).
///
/// Pickle carries it as `ZODB.POSException._recon(class, state)`; msgpack carries it as the
/// 2-tuple `(class_path, state)`, which decodes as a plain tuple.
#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionValue {
    /// Dotted class path, e.g. `ZODB.POSException.UndoError`.
    pub class_path: Text,
    /// The exception's state: its `__dict__` (a map) or its `args` (a tuple).
    pub state: Value,
}

/// One Python value as ZEO puts it on the wire.
#[derive(Debug, Clone)]
pub enum Value {
    /// `None` (msgpack nil).
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer in the `i128` range.
    Int(i128),
    /// An integer outside the `i128` range: minimal little-endian two's complement bytes.
    /// Only pickle can carry it.
    BigInt(Bytes),
    /// A float (always a 64-bit double on the wire).
    Float(f64),
    /// A byte string (`bytes`; msgpack bin).
    Bytes(Bytes),
    /// A text (`str`; msgpack str).
    Str(Text),
    /// A tuple or a list.
    Seq(SeqKind, Vec<Value>),
    /// A dict, in wire order.
    Map(Vec<(Value, Value)>),
    /// A nested exception object.
    Exception(Box<ExceptionValue>),
    /// A pickle global reference (`module`, `name`) other than the exception form. Pickle only.
    /// Boxed so that `Value` stays at 48 bytes.
    Global(Box<(Text, Text)>),
    /// A pickle `REDUCE`: a callable applied to an argument tuple. Pickle only.
    Reduce(Box<(Value, Value)>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        use Value::*;
        match (self, other) {
            (None, None) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (BigInt(a), BigInt(b)) => a == b,
            // Bitwise, so that a NaN survives a round trip as equal to itself.
            (Float(a), Float(b)) => a.to_bits() == b.to_bits(),
            (Bytes(a), Bytes(b)) => a == b,
            (Str(a), Str(b)) => a == b,
            (Seq(ka, a), Seq(kb, b)) => ka == kb && a == b,
            (Map(a), Map(b)) => a == b,
            (Exception(a), Exception(b)) => a == b,
            (Global(a), Global(b)) => a == b,
            (Reduce(a), Reduce(b)) => a == b,
            _ => false,
        }
    }
}

impl Value {
    /// A text value from a static string.
    pub const fn str_static(s: &'static str) -> Value {
        Value::Str(Text::from_static(s))
    }

    /// A tuple.
    pub fn tuple(items: Vec<Value>) -> Value {
        Value::Seq(SeqKind::Tuple, items)
    }

    /// A list.
    pub fn list(items: Vec<Value>) -> Value {
        Value::Seq(SeqKind::List, items)
    }

    /// A byte string.
    pub fn bytes(b: impl Into<Bytes>) -> Value {
        Value::Bytes(b.into())
    }

    /// Python's name for the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "str",
            Value::Seq(SeqKind::Tuple, _) => "tuple",
            Value::Seq(SeqKind::List, _) => "list",
            Value::Map(_) => "dict",
            Value::Exception(_) => "exception",
            Value::Global(..) => "global",
            Value::Reduce(_) => "reduce",
        }
    }

    /// The items of a tuple or list.
    #[inline]
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Seq(_, items) => Some(items),
            _ => None,
        }
    }

    /// The text of a `str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(t) => Some(t.as_str()),
            _ => None,
        }
    }

    /// The bytes of a `bytes`.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// An integer (booleans count, as in Python).
    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i128::from(*b)),
            _ => None,
        }
    }

    /// Python truthiness for the scalar kinds a flag can take.
    #[inline]
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::None => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::BigInt(_) => true,
            Value::Float(f) => *f != 0.0,
            Value::Bytes(b) => !b.is_empty(),
            Value::Str(s) => !s.as_bytes().is_empty(),
            Value::Seq(_, v) => !v.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Exception(_) | Value::Global(..) | Value::Reduce(_) => true,
        }
    }

    /// Looks a `str` key up in a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Nesting depth: 0 for a scalar, 1 + the deepest child for a container.
    pub fn depth(&self) -> u32 {
        match self {
            Value::Seq(_, items) => 1 + items.iter().map(Value::depth).max().unwrap_or(0),
            Value::Map(entries) => {
                1 + entries.iter().map(|(k, v)| k.depth().max(v.depth())).max().unwrap_or(0)
            }
            Value::Exception(e) => 1 + e.state.depth(),
            Value::Reduce(r) => 1 + r.0.depth().max(r.1.depth()),
            _ => 0,
        }
    }

    /// Checks the invariants listed in the module documentation.
    pub fn check(&self, limits: &Limits) -> Result<(), String> {
        if self.depth() > limits.max_depth {
            return Err(format!("depth {} exceeds {}", self.depth(), limits.max_depth));
        }
        self.check_ints()
    }

    fn check_ints(&self) -> Result<(), String> {
        match self {
            Value::BigInt(b) => {
                if b.len() <= 16 {
                    return Err("BigInt within the i128 range".into());
                }
                let last = b[b.len() - 1];
                let prev_sign = b[b.len() - 2] & 0x80;
                if (last == 0 && prev_sign == 0) || (last == 0xff && prev_sign != 0) {
                    return Err("BigInt not minimal".into());
                }
                Ok(())
            }
            Value::Seq(_, items) => items.iter().try_for_each(Value::check_ints),
            Value::Map(entries) => entries.iter().try_for_each(|(k, v)| {
                k.check_ints()?;
                v.check_ints()
            }),
            Value::Exception(e) => e.state.check_ints(),
            Value::Reduce(r) => {
                r.0.check_ints()?;
                r.1.check_ints()
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_stays_small() {
        // Every decoded message is a tree of these; the big variants are boxed. (48 = an i128
        // aligned to 16 plus the tag; a `Bytes` is 32.)
        assert!(size_of::<Value>() <= 48, "{}", size_of::<Value>());
    }
}
