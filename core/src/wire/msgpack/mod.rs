//! The msgpack encoding (letter `M`, `zeo-protocol.md` §3.3): frame payload bytes ⇄ [`Value`].
//!
//! Python ZEO packs with `msgpack.packb(obj, use_bin_type=True)` and unpacks with
//! `unpackb(data, raw=False, use_list=False)` (so `strict_map_key=True`). This module mirrors
//! both sides:
//!
//! * [`decode`] is a hand-written, iterative decoder for untrusted input. It never recurses
//!   (so deep nesting is an error, not a stack overflow), never allocates from a claimed length
//!   that the remaining input could not back, and never copies byte strings or texts: they are
//!   [`Bytes::slice`]s of the payload, so multi-megabyte data records decode at memory speed.
//! * [`encode`] writes the canonical bytes Python would write for the same value (smallest
//!   int, str, bin, array and map forms; floats always as float64).

use super::value::{Limits, SeqKind, Text, TopLevel, Value};
use bytes::Bytes;
use rmp::Marker;

/// Why a msgpack payload could not be decoded. Offsets are byte offsets into the payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgpackError {
    /// The payload ended in the middle of a value.
    #[error(
        "msgpack input ends early: {what} at byte {offset} needs {needed} bytes, \
         only {available} left"
    )]
    Truncated {
        /// Where the incomplete part starts.
        offset: usize,
        /// What was being read (a marker, a length, string data…).
        what: &'static str,
        /// Bytes the part needs.
        needed: u64,
        /// Bytes that were left.
        available: usize,
    },
    /// An array or map claims more elements than the rest of the payload could possibly hold
    /// (every element takes at least one byte). Reported before anything is allocated for it.
    #[error(
        "msgpack {kind} at byte {offset} claims {count} elements but only {available} bytes remain \
         ({pending} of them already owed to enclosing containers)"
    )]
    CountTooLarge {
        /// Where the array or map marker is.
        offset: usize,
        /// `array` or `map`.
        kind: &'static str,
        /// The element count it claims (twice the entry count for a map).
        count: u64,
        /// Bytes left after its header.
        available: usize,
        /// Elements still owed to the containers that enclose it.
        pending: usize,
    },
    /// The marker byte `0xc1`, which msgpack reserves and never uses.
    #[error("reserved msgpack marker 0xc1 at byte {offset}")]
    ReservedMarker {
        /// Where the marker is.
        offset: usize,
    },
    /// A msgpack extension type: ZEO never sends one and Python would refuse it.
    #[error("msgpack extension type (marker {marker:#04x}) at byte {offset} is not used by ZEO")]
    Extension {
        /// Where the marker is.
        offset: usize,
        /// The marker byte (`0xc7`–`0xc9`, `0xd4`–`0xd8`).
        marker: u8,
    },
    /// A str whose data is not valid UTF-8 (Python decodes with `raw=False`).
    #[error("msgpack str at byte {offset} is not valid UTF-8 (first bad byte at {bad_offset})")]
    InvalidUtf8 {
        /// Where the str marker is.
        offset: usize,
        /// Where the first invalid byte is.
        bad_offset: usize,
    },
    /// A map key that is neither str nor bin (Python's `strict_map_key`).
    #[error("msgpack map key at byte {offset} is {found}; keys must be str or bin")]
    MapKey {
        /// Where the key starts.
        offset: usize,
        /// The msgpack type found instead.
        found: &'static str,
    },
    /// Containers nested deeper than [`Limits::max_depth`].
    #[error("msgpack container at byte {offset} nests deeper than the limit of {max}")]
    TooDeep {
        /// Where the container that goes too deep starts.
        offset: usize,
        /// The limit.
        max: u32,
    },
    /// More values than [`Limits::max_nodes`].
    #[error("msgpack value at byte {offset} exceeds the limit of {max} values per message")]
    TooManyNodes {
        /// Where the first value over the limit starts.
        offset: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes left over after the one value a payload must hold.
    #[error("{len} trailing bytes after the msgpack value, starting at byte {offset}")]
    TrailingBytes {
        /// Where the extra bytes start.
        offset: usize,
        /// How many there are.
        len: usize,
    },
}

/// Why a [`Value`] could not be encoded as msgpack. `offset` is the number of bytes this call
/// had written when it met the value, i.e. where the value would have started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgpackEncodeError {
    /// An integer outside msgpack's range `[-2^63, 2^64)`.
    #[error("integer {value} at output byte {offset} is outside msgpack's range [-2^63, 2^64)")]
    IntOutOfRange {
        /// Where the value would have started.
        offset: usize,
        /// The integer.
        value: i128,
    },
    /// A [`Value::BigInt`]: msgpack has no form for it.
    #[error("big integer at output byte {offset} cannot be encoded as msgpack")]
    BigInt {
        /// Where the value would have started.
        offset: usize,
    },
    /// A [`Value::Global`] or [`Value::Reduce`], which only pickle can carry.
    #[error("pickle-only value ({kind}) at output byte {offset} cannot be encoded as msgpack")]
    PickleOnly {
        /// Where the value would have started.
        offset: usize,
        /// `global` or `reduce`.
        kind: &'static str,
    },
    /// A str, bin, array or map longer than msgpack's 32-bit lengths allow.
    #[error("{kind} of length {len} at output byte {offset} exceeds msgpack's limit of 2^32-1")]
    TooLong {
        /// Where the value would have started.
        offset: usize,
        /// `str`, `bin`, `array` or `map`.
        kind: &'static str,
        /// Its length (bytes or elements).
        len: usize,
    },
}

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------

/// Decodes one msgpack value that must fill `payload` exactly.
///
/// Arrays become `Value::Seq(SeqKind::Tuple, …)` (Python uses `use_list=False`), maps keep
/// their wire order, every int form becomes [`Value::Int`], float32 widens to [`Value::Float`].
/// Str and bin data are zero-copy slices of `payload`. Errors: truncated input, reserved or
/// extension markers, invalid UTF-8 in a str, map keys other than str/bin, nesting deeper
/// than `limits.max_depth`, more than `limits.max_nodes` values, and trailing bytes.
/// Never panics.
pub fn decode(payload: &Bytes, limits: &Limits) -> Result<Value, MsgpackError> {
    let mut d = Decoder::new(payload, limits);
    let mut stack = OpenStack::default();
    let value = d.one(&mut stack)?;
    d.end()?;
    Ok(value)
}

/// [`decode`], except that a payload holding a 4-element array (every ZEO message) comes back
/// as its four items, without allocating the array.
pub(crate) fn decode_top(payload: &Bytes, limits: &Limits) -> Result<TopLevel, MsgpackError> {
    const FIXARRAY_4: u8 = 0x94;
    if payload.first() != Some(&FIXARRAY_4) || limits.max_depth == 0 || limits.max_nodes == 0 {
        return decode(payload, limits).map(TopLevel::Other);
    }
    // What `decode` does for the array, then for each item as a child of it: the array takes
    // one node and one level, and its slots stay owed to it while each item is read.
    let mut d = Decoder::new(payload, limits);
    d.pos = 1;
    d.nodes = 1;
    d.base_depth = 1;
    d.pending = 4;
    let mut stack = OpenStack::default();
    let mut item = || d.one(&mut stack);
    let parts = (|| Ok::<_, MsgpackError>([item()?, item()?, item()?, item()?]))();
    match parts.and_then(|p| d.end().map(|()| p)) {
        Ok(parts) => Ok(TopLevel::Four(parts)),
        // Any error is reported exactly as `decode` reports it.
        Err(_) => decode(payload, limits).map(TopLevel::Other),
    }
}

/// A container being filled.
enum Open {
    /// An array: its items so far and how many are still to come.
    Seq { items: Vec<Value>, left: usize },
    /// A map: its entries so far, a key waiting for its value, and entries still to come.
    Map { entries: Vec<(Value, Value)>, key: Option<Value>, left: usize },
}

impl Open {
    /// Whether the next value read goes into a map-key position.
    fn wants_key(&self) -> bool {
        matches!(self, Open::Map { key: None, .. })
    }
}

/// The open containers, innermost last. The innermost is kept apart, so that messages that
/// nest no deeper than one container inside the top level (all of ZEO's small ones) never
/// allocate for this stack.
#[derive(Default)]
struct OpenStack {
    top: Option<Open>,
    below: Vec<Open>,
}

impl OpenStack {
    fn len(&self) -> usize {
        self.below.len() + usize::from(self.top.is_some())
    }

    fn is_empty(&self) -> bool {
        self.top.is_none()
    }

    fn last(&self) -> Option<&Open> {
        self.top.as_ref()
    }

    fn last_mut(&mut self) -> Option<&mut Open> {
        self.top.as_mut()
    }

    fn push(&mut self, open: Open) {
        if let Some(outer) = self.top.replace(open) {
            self.below.push(outer);
        }
    }

    fn pop(&mut self) -> Option<Open> {
        let top = self.top.take();
        self.top = self.below.pop();
        top
    }
}

/// What one marker turned into.
enum Step {
    /// A complete value.
    Value(Value),
    /// A non-empty container was opened; its elements follow.
    Opened,
}

struct Decoder<'a> {
    payload: &'a Bytes,
    data: &'a [u8],
    pos: usize,
    limits: &'a Limits,
    /// Element slots the open containers still expect. Each needs at least one byte, so a
    /// well-formed input always has `pending <= remaining()`; checking that when a container
    /// opens is what makes it safe to reserve the container's full claimed size.
    pending: usize,
    /// Values read so far.
    nodes: usize,
    /// Containers open outside the stack passed to [`Decoder::one`] (the top-level array
    /// [`decode_top`] reads itself).
    base_depth: usize,
}

impl<'a> Decoder<'a> {
    fn new(payload: &'a Bytes, limits: &'a Limits) -> Self {
        Decoder { payload, data: payload.as_ref(), pos: 0, limits, pending: 0, nodes: 0, base_depth: 0 }
    }

    /// Fails if bytes are left after the value.
    fn end(&self) -> Result<(), MsgpackError> {
        match self.remaining() {
            0 => Ok(()),
            len => Err(MsgpackError::TrailingBytes { offset: self.pos, len }),
        }
    }

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    /// Takes the next `n` bytes (`n` as claimed by the input, hence `u64`).
    fn take(&mut self, n: u64, what: &'static str) -> Result<(usize, usize), MsgpackError> {
        let available = self.remaining();
        match usize::try_from(n) {
            Ok(n) if n <= available => {
                let start = self.pos;
                self.pos += n;
                Ok((start, self.pos))
            }
            _ => Err(MsgpackError::Truncated { offset: self.pos, what, needed: n, available }),
        }
    }

    fn bytes<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], MsgpackError> {
        let (start, end) = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.data[start..end]);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, MsgpackError> {
        Ok(self.bytes::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, MsgpackError> {
        Ok(u16::from_be_bytes(self.bytes(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, MsgpackError> {
        Ok(u32::from_be_bytes(self.bytes(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, MsgpackError> {
        Ok(u64::from_be_bytes(self.bytes(what)?))
    }

    /// A str body of `len` bytes whose marker was at `offset`.
    fn str(&mut self, offset: usize, len: u64) -> Result<Value, MsgpackError> {
        let (start, end) = self.take(len, "str data")?;
        Text::from_utf8(self.payload.slice(start..end))
            .map(Value::Str)
            .map_err(|e| MsgpackError::InvalidUtf8 { offset, bad_offset: start + e.valid_up_to() })
    }

    /// A bin body of `len` bytes.
    fn bin(&mut self, len: u64) -> Result<Value, MsgpackError> {
        let (start, end) = self.take(len, "bin data")?;
        Ok(Value::Bytes(self.payload.slice(start..end)))
    }

    /// Reads one complete value. `stack` is empty on entry and on success; it is only passed in
    /// so that [`decode_top`] can reuse one allocation for its four items.
    fn one(&mut self, stack: &mut OpenStack) -> Result<Value, MsgpackError> {
        loop {
            let offset = self.pos;
            let Some(&byte) = self.data.get(offset) else {
                return Err(MsgpackError::Truncated { offset, what: "marker", needed: 1, available: 0 });
            };
            self.pos = offset + 1;
            // The marker fills one slot of the innermost open container (if any).
            let in_container = !stack.is_empty() || self.base_depth > 0;
            self.pending = self.pending.saturating_sub(usize::from(in_container));
            self.nodes += 1;
            if self.nodes > self.limits.max_nodes {
                return Err(MsgpackError::TooManyNodes { offset, max: self.limits.max_nodes });
            }
            if stack.last().is_some_and(Open::wants_key) && !is_str_or_bin(Marker::from_u8(byte)) {
                return Err(MsgpackError::MapKey { offset, found: marker_type(Marker::from_u8(byte)) });
            }
            // The markers of ZEO's small messages are read here directly; the rest, by their
            // `Marker`.
            let mut value = match byte {
                0x00..=0x7f => Value::Int(i128::from(byte)),
                0xa0..=0xbf => self.str(offset, u64::from(byte & 0x1f))?,
                0xc4 => {
                    let n = self.u8("bin8 length")?;
                    self.bin(u64::from(n))?
                }
                0xc5 => {
                    let n = self.u16("bin16 length")?;
                    self.bin(u64::from(n))?
                }
                0xcc => Value::Int(i128::from(self.u8("uint8")?)),
                0xcd => Value::Int(i128::from(self.u16("uint16")?)),
                0xce => Value::Int(i128::from(self.u32("uint32")?)),
                0xcf => Value::Int(i128::from(self.u64("uint64")?)),
                0xc0 => Value::None,
                0xc2 => Value::Bool(false),
                0xc3 => Value::Bool(true),
                _ => match self.scalar_or_open(Marker::from_u8(byte), offset, stack)? {
                    Step::Value(value) => value,
                    Step::Opened => continue,
                },
            };
            // Attach the finished value to its container, closing every container it completes.
            loop {
                let Some(top) = stack.last_mut() else {
                    return Ok(value);
                };
                let complete = match top {
                    Open::Seq { items, left } => {
                        items.push(value);
                        *left -= 1;
                        *left == 0
                    }
                    Open::Map { entries, key, left } => match key.take() {
                        None => {
                            *key = Some(value);
                            false
                        }
                        Some(k) => {
                            entries.push((k, value));
                            *left -= 1;
                            *left == 0
                        }
                    },
                };
                if !complete {
                    break;
                }
                value = match stack.pop() {
                    Some(Open::Seq { items, .. }) => Value::Seq(SeqKind::Tuple, items),
                    Some(Open::Map { entries, .. }) => Value::Map(entries),
                    // `stack.last_mut()` just returned Some, so this arm is unreachable; ending
                    // the loop with an empty tuple keeps the decoder panic-free regardless.
                    None => Value::Seq(SeqKind::Tuple, Vec::new()),
                };
            }
        }
    }

    /// Reads what follows `marker`: a complete scalar (or empty container), or opens a
    /// container on `stack`.
    fn scalar_or_open(
        &mut self,
        marker: Marker,
        offset: usize,
        stack: &mut OpenStack,
    ) -> Result<Step, MsgpackError> {
        let value = match marker {
            Marker::Null => Value::None,
            Marker::False => Value::Bool(false),
            Marker::True => Value::Bool(true),
            Marker::FixPos(n) => Value::Int(i128::from(n)),
            Marker::FixNeg(n) => Value::Int(i128::from(n)),
            Marker::U8 => Value::Int(i128::from(self.u8("uint8")?)),
            Marker::U16 => Value::Int(i128::from(self.u16("uint16")?)),
            Marker::U32 => Value::Int(i128::from(self.u32("uint32")?)),
            Marker::U64 => Value::Int(i128::from(self.u64("uint64")?)),
            Marker::I8 => Value::Int(i128::from(i8::from_be_bytes(self.bytes("int8")?))),
            Marker::I16 => Value::Int(i128::from(i16::from_be_bytes(self.bytes("int16")?))),
            Marker::I32 => Value::Int(i128::from(i32::from_be_bytes(self.bytes("int32")?))),
            Marker::I64 => Value::Int(i128::from(i64::from_be_bytes(self.bytes("int64")?))),
            Marker::F32 => Value::Float(f64::from(f32::from_be_bytes(self.bytes("float32")?))),
            Marker::F64 => Value::Float(f64::from_be_bytes(self.bytes("float64")?)),
            Marker::FixStr(n) => self.str(offset, u64::from(n))?,
            Marker::Str8 => {
                let n = self.u8("str8 length")?;
                self.str(offset, u64::from(n))?
            }
            Marker::Str16 => {
                let n = self.u16("str16 length")?;
                self.str(offset, u64::from(n))?
            }
            Marker::Str32 => {
                let n = self.u32("str32 length")?;
                self.str(offset, u64::from(n))?
            }
            Marker::Bin8 => {
                let n = self.u8("bin8 length")?;
                self.bin(u64::from(n))?
            }
            Marker::Bin16 => {
                let n = self.u16("bin16 length")?;
                self.bin(u64::from(n))?
            }
            Marker::Bin32 => {
                let n = self.u32("bin32 length")?;
                self.bin(u64::from(n))?
            }
            Marker::FixArray(n) => return self.open(false, u32::from(n), offset, stack),
            Marker::Array16 => {
                let n = self.u16("array16 length")?;
                return self.open(false, u32::from(n), offset, stack);
            }
            Marker::Array32 => {
                let n = self.u32("array32 length")?;
                return self.open(false, n, offset, stack);
            }
            Marker::FixMap(n) => return self.open(true, u32::from(n), offset, stack),
            Marker::Map16 => {
                let n = self.u16("map16 length")?;
                return self.open(true, u32::from(n), offset, stack);
            }
            Marker::Map32 => {
                let n = self.u32("map32 length")?;
                return self.open(true, n, offset, stack);
            }
            Marker::Reserved => return Err(MsgpackError::ReservedMarker { offset }),
            Marker::FixExt1
            | Marker::FixExt2
            | Marker::FixExt4
            | Marker::FixExt8
            | Marker::FixExt16
            | Marker::Ext8
            | Marker::Ext16
            | Marker::Ext32 => return Err(MsgpackError::Extension { offset, marker: marker.to_u8() }),
        };
        Ok(Step::Value(value))
    }

    /// Opens an array (`is_map == false`, `count` items) or a map (`count` entries).
    fn open(
        &mut self,
        is_map: bool,
        count: u32,
        offset: usize,
        stack: &mut OpenStack,
    ) -> Result<Step, MsgpackError> {
        // A container has depth 1 + its deepest child, so the innermost of `stack.len() + 1`
        // nested containers already makes the message that deep (even if it is empty).
        let open = stack.len().saturating_add(self.base_depth);
        let depth = u32::try_from(open).unwrap_or(u32::MAX).saturating_add(1);
        if depth > self.limits.max_depth {
            return Err(MsgpackError::TooDeep { offset, max: self.limits.max_depth });
        }
        let kind = if is_map { "map" } else { "array" };
        // u32 → usize cannot fail on the 32/64-bit targets zeoraid supports; saturating keeps
        // the check conservative (and panic-free) anywhere else.
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let slots = if is_map { count.saturating_mul(2) } else { count };
        let available = self.remaining();
        if self.pending.saturating_add(slots) > available {
            return Err(MsgpackError::CountTooLarge {
                offset,
                kind,
                count: slots as u64,
                available,
                pending: self.pending,
            });
        }
        if count == 0 {
            return Ok(Step::Value(if is_map {
                Value::Map(Vec::new())
            } else {
                Value::Seq(SeqKind::Tuple, Vec::new())
            }));
        }
        // Safe to reserve in full: the check above bounds the slots of all open containers by
        // the bytes still unread, so total reservations stay proportional to the input size.
        self.pending += slots;
        stack.push(if is_map {
            Open::Map { entries: Vec::with_capacity(count), key: None, left: count }
        } else {
            Open::Seq { items: Vec::with_capacity(count), left: count }
        });
        Ok(Step::Opened)
    }
}

fn is_str_or_bin(marker: Marker) -> bool {
    matches!(
        marker,
        Marker::FixStr(_)
            | Marker::Str8
            | Marker::Str16
            | Marker::Str32
            | Marker::Bin8
            | Marker::Bin16
            | Marker::Bin32
    )
}

/// The msgpack type a marker introduces, for error messages.
fn marker_type(marker: Marker) -> &'static str {
    match marker {
        Marker::Null => "nil",
        Marker::True | Marker::False => "bool",
        Marker::FixPos(_)
        | Marker::FixNeg(_)
        | Marker::U8
        | Marker::U16
        | Marker::U32
        | Marker::U64
        | Marker::I8
        | Marker::I16
        | Marker::I32
        | Marker::I64 => "int",
        Marker::F32 | Marker::F64 => "float",
        Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => "str",
        Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => "bin",
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => "array",
        Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => "map",
        Marker::Reserved => "reserved marker 0xc1",
        Marker::FixExt1
        | Marker::FixExt2
        | Marker::FixExt4
        | Marker::FixExt8
        | Marker::FixExt16
        | Marker::Ext8
        | Marker::Ext16
        | Marker::Ext32 => "ext",
    }
}

mod encode;
pub use encode::encode;

#[cfg(test)]
mod tests;
