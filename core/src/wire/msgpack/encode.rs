//! The canonical msgpack encoder.

use super::MsgpackEncodeError;
use crate::wire::value::{ExceptionValue, Text, Value};
use rmp::Marker;

/// Appends the canonical msgpack encoding of `value` to `out`, byte for byte what Python's
/// `msgpack.packb(obj, use_bin_type=True)` (with ZEO's exception hook) writes:
///
/// * `None` → `c0`; bools → `c2`/`c3`;
/// * ints in the smallest form: non-negative as positive fixint / `cc` / `cd` / `ce` / `cf`,
///   negative as negative fixint / `d0` / `d1` / `d2` / `d3`; ints outside `[-2^63, 2^64)` and
///   [`Value::BigInt`] are errors;
/// * floats → `cb` + big-endian float64; str → fixstr / `d9` / `da` / `db`; bytes → `c4` /
///   `c5` / `c6`; tuples and lists → fixarray / `dc` / `dd`; dicts → fixmap / `de` / `df`,
///   in order;
/// * [`Value::Global`] and [`Value::Reduce`] are errors (pickle only);
/// * a [`Value::Exception`] is lowered the way ZEO's msgpack server lowers exception objects
///   (§3.6): to the 2-tuple `(class_path, payload)`, where the payload is the exception's
///   `__dict__` if non-empty and its `args` otherwise. Our `state` is the *pickle* state, which
///   is the `__dict__` plus an `'args'` key, so: if `state` is a map, its `'args'` entry is
///   dropped; if entries remain, the payload is that remaining map (in order), otherwise it is
///   the `'args'` value (an empty array if there was none). A `state` that is not a map (the
///   args tuple itself) is the payload as it is. Nested exceptions are lowered the same way.
///
/// Never recurses, so any nesting depth is fine. On error `out` is left as it was.
pub fn encode(value: &Value, out: &mut Vec<u8>) -> Result<(), MsgpackEncodeError> {
    let start = out.len();
    let result = Encoder { out, start, stack: Vec::new() }.run(value);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// What an open container still has to write.
enum Rest<'a> {
    /// The items of an array.
    Items(std::slice::Iter<'a, Value>),
    /// The entries of a map; `skip_args` drops `'args'` keys (a lowered exception state);
    /// `value` is the value of the entry whose key was just written.
    Entries { iter: std::slice::Iter<'a, (Value, Value)>, skip_args: bool, value: Option<&'a Value> },
}

struct Encoder<'o, 'a> {
    out: &'o mut Vec<u8>,
    start: usize,
    stack: Vec<Rest<'a>>,
}

impl<'a> Encoder<'_, 'a> {
    fn offset(&self) -> usize {
        self.out.len() - self.start
    }

    fn run(mut self, root: &'a Value) -> Result<(), MsgpackEncodeError> {
        let mut next = Some(root);
        loop {
            if let Some(value) = next.take() {
                next = self.write(value)?;
                continue;
            }
            let Some(top) = self.stack.last_mut() else {
                return Ok(());
            };
            next = match top {
                Rest::Items(iter) => iter.next(),
                Rest::Entries { iter, skip_args, value } => match value.take() {
                    Some(v) => Some(v),
                    None => {
                        let skip = *skip_args;
                        iter.find(|(k, _)| !(skip && is_args_key(k))).map(|(k, v)| {
                            *value = Some(v);
                            k
                        })
                    }
                },
            };
            if next.is_none() {
                self.stack.pop();
            }
        }
    }

    /// Writes a scalar, or the header of a container (pushing its contents on the stack).
    /// Returns a value that must be written next, before anything on the stack (used by the
    /// exception lowering).
    fn write(&mut self, value: &'a Value) -> Result<Option<&'a Value>, MsgpackEncodeError> {
        match value {
            Value::None => self.out.push(Marker::Null.to_u8()),
            Value::Bool(false) => self.out.push(Marker::False.to_u8()),
            Value::Bool(true) => self.out.push(Marker::True.to_u8()),
            Value::Int(i) => self.int(*i)?,
            Value::BigInt(_) => return Err(MsgpackEncodeError::BigInt { offset: self.offset() }),
            Value::Float(f) => {
                self.out.push(Marker::F64.to_u8());
                self.out.extend_from_slice(&f.to_bits().to_be_bytes());
            }
            Value::Str(t) => self.str(t)?,
            Value::Bytes(b) => {
                let len = self.len32("bin", b.len())?;
                if let Ok(n) = u8::try_from(len) {
                    self.out.extend_from_slice(&[Marker::Bin8.to_u8(), n]);
                } else if let Ok(n) = u16::try_from(len) {
                    self.out.push(Marker::Bin16.to_u8());
                    self.out.extend_from_slice(&n.to_be_bytes());
                } else {
                    self.out.push(Marker::Bin32.to_u8());
                    self.out.extend_from_slice(&len.to_be_bytes());
                }
                self.out.extend_from_slice(b);
            }
            Value::Seq(_, items) => {
                self.array_header(items.len())?;
                self.stack.push(Rest::Items(items.iter()));
            }
            Value::Map(entries) => {
                self.map_header(entries.len())?;
                self.stack.push(Rest::Entries { iter: entries.iter(), skip_args: false, value: None });
            }
            Value::Exception(e) => return self.exception(e),
            Value::Global(..) => {
                return Err(MsgpackEncodeError::PickleOnly { offset: self.offset(), kind: "global" })
            }
            Value::Reduce(_) => {
                return Err(MsgpackEncodeError::PickleOnly { offset: self.offset(), kind: "reduce" })
            }
        }
        Ok(None)
    }

    /// Lowers an exception to `[class_path, payload]` (see [`encode`]).
    fn exception(&mut self, e: &'a ExceptionValue) -> Result<Option<&'a Value>, MsgpackEncodeError> {
        self.array_header(2)?;
        self.str(&e.class_path)?;
        let Value::Map(entries) = &e.state else {
            return Ok(Some(&e.state));
        };
        let dict_len = entries.iter().filter(|(k, _)| !is_args_key(k)).count();
        if dict_len > 0 {
            self.map_header(dict_len)?;
            self.stack.push(Rest::Entries { iter: entries.iter(), skip_args: true, value: None });
            return Ok(None);
        }
        match entries.iter().find(|(k, _)| is_args_key(k)) {
            Some((_, args)) => Ok(Some(args)),
            None => {
                self.array_header(0)?;
                Ok(None)
            }
        }
    }

    fn int(&mut self, i: i128) -> Result<(), MsgpackEncodeError> {
        if let Ok(u) = u64::try_from(i) {
            if u < 0x80 {
                self.out.push(Marker::FixPos(u as u8).to_u8());
            } else if let Ok(n) = u8::try_from(u) {
                self.out.extend_from_slice(&[Marker::U8.to_u8(), n]);
            } else if let Ok(n) = u16::try_from(u) {
                self.out.push(Marker::U16.to_u8());
                self.out.extend_from_slice(&n.to_be_bytes());
            } else if let Ok(n) = u32::try_from(u) {
                self.out.push(Marker::U32.to_u8());
                self.out.extend_from_slice(&n.to_be_bytes());
            } else {
                self.out.push(Marker::U64.to_u8());
                self.out.extend_from_slice(&u.to_be_bytes());
            }
        } else if let Ok(s) = i64::try_from(i) {
            // Here s < 0: u64::try_from took every non-negative value that fits.
            if s >= -32 {
                self.out.push(s as u8);
            } else if let Ok(n) = i8::try_from(s) {
                self.out.extend_from_slice(&[Marker::I8.to_u8(), n as u8]);
            } else if let Ok(n) = i16::try_from(s) {
                self.out.push(Marker::I16.to_u8());
                self.out.extend_from_slice(&n.to_be_bytes());
            } else if let Ok(n) = i32::try_from(s) {
                self.out.push(Marker::I32.to_u8());
                self.out.extend_from_slice(&n.to_be_bytes());
            } else {
                self.out.push(Marker::I64.to_u8());
                self.out.extend_from_slice(&s.to_be_bytes());
            }
        } else {
            return Err(MsgpackEncodeError::IntOutOfRange { offset: self.offset(), value: i });
        }
        Ok(())
    }

    fn str(&mut self, t: &Text) -> Result<(), MsgpackEncodeError> {
        let b = t.as_bytes();
        let len = self.len32("str", b.len())?;
        if len < 32 {
            self.out.push(Marker::FixStr(len as u8).to_u8());
        } else if let Ok(n) = u8::try_from(len) {
            self.out.extend_from_slice(&[Marker::Str8.to_u8(), n]);
        } else if let Ok(n) = u16::try_from(len) {
            self.out.push(Marker::Str16.to_u8());
            self.out.extend_from_slice(&n.to_be_bytes());
        } else {
            self.out.push(Marker::Str32.to_u8());
            self.out.extend_from_slice(&len.to_be_bytes());
        }
        self.out.extend_from_slice(b);
        Ok(())
    }

    fn array_header(&mut self, len: usize) -> Result<(), MsgpackEncodeError> {
        let len = self.len32("array", len)?;
        if len < 16 {
            self.out.push(Marker::FixArray(len as u8).to_u8());
        } else if let Ok(n) = u16::try_from(len) {
            self.out.push(Marker::Array16.to_u8());
            self.out.extend_from_slice(&n.to_be_bytes());
        } else {
            self.out.push(Marker::Array32.to_u8());
            self.out.extend_from_slice(&len.to_be_bytes());
        }
        Ok(())
    }

    fn map_header(&mut self, len: usize) -> Result<(), MsgpackEncodeError> {
        let len = self.len32("map", len)?;
        if len < 16 {
            self.out.push(Marker::FixMap(len as u8).to_u8());
        } else if let Ok(n) = u16::try_from(len) {
            self.out.push(Marker::Map16.to_u8());
            self.out.extend_from_slice(&n.to_be_bytes());
        } else {
            self.out.push(Marker::Map32.to_u8());
            self.out.extend_from_slice(&len.to_be_bytes());
        }
        Ok(())
    }

    fn len32(&self, kind: &'static str, len: usize) -> Result<u32, MsgpackEncodeError> {
        u32::try_from(len).map_err(|_| MsgpackEncodeError::TooLong { offset: self.offset(), kind, len })
    }
}

/// Whether a map key is the `'args'` entry of a pickled exception state.
fn is_args_key(key: &Value) -> bool {
    key.as_str() == Some("args")
}
