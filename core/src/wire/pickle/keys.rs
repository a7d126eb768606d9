//! Dict keys as Python sees them: which values are hashable, and which keys are equal.

use super::arena::{Item, Node, NodeId, Slot};
use super::int::{int_from_le, negate_le};
use super::PickleError;
use crate::wire::value::{SeqKind, Value};
use bytes::Bytes;

/// What makes two dict keys equal in Python, as an ordered value: numbers that compare equal
/// map to the same form whatever their type, and objects that compare by identity carry an
/// identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum KeyRepr {
    None,
    /// Any integral number (bool, int, integral float) in the `i128` range.
    Int(i128),
    /// Any integral number outside it: minimal little-endian two's complement.
    BigInt(Bytes),
    /// A non-integral float or an infinity, by its bits (unique per value).
    Float(u64),
    Bytes(Bytes),
    Str(Bytes),
    Global(Bytes, Bytes),
    Tuple(Vec<KeyRepr>),
    /// A reduce result or exception object: Python hashes these by identity.
    Node(NodeId),
    /// A NaN: equal to nothing else, so each gets a number of its own.
    Nan(usize),
}

/// State of the key walks of one decode: the work budget, and the numbering of NaN keys.
pub(super) struct KeyWalk {
    work_left: usize,
    budget: usize,
    nans: usize,
}

/// Why a key could not be indexed.
enum KeyError {
    Unhashable(&'static str),
    OutOfWork,
}

impl KeyWalk {
    /// Key walks may visit at most `budget` values in all (a memoised tuple can be used as a key
    /// many times, and each use is walked again).
    pub(super) fn new(budget: usize) -> Self {
        KeyWalk { work_left: budget, budget, nans: 0 }
    }

    /// The Python identity of a dict key, or the error for the `SETITEM(S)`/`DICT` opcode at
    /// `offset` if Python could not hash it.
    pub(super) fn key(&mut self, nodes: &[Slot], key: &Item, offset: usize) -> Result<KeyRepr, PickleError> {
        self.repr(nodes, key).map_err(|e| match e {
            KeyError::Unhashable(found) => PickleError::UnhashableKey { offset, found },
            KeyError::OutOfWork => PickleError::TooManyNodes { limit: self.budget },
        })
    }

    /// Only tuples have children here, and a tuple's children always precede it in the arena,
    /// so this cannot loop; its recursion is bounded by the depth limit on tuples.
    fn repr(&mut self, nodes: &[Slot], item: &Item) -> Result<KeyRepr, KeyError> {
        self.work_left = self.work_left.checked_sub(1).ok_or(KeyError::OutOfWork)?;
        let id = match item {
            Item::Leaf(v) => return Ok(self.leaf(v)),
            Item::Node(id) => *id,
        };
        match &nodes[id].node {
            Node::Seq(SeqKind::Tuple, items) => {
                Ok(KeyRepr::Tuple(items.iter().map(|i| self.repr(nodes, i)).collect::<Result<_, _>>()?))
            }
            node @ (Node::Seq(SeqKind::List, _) | Node::Map(_)) => {
                Err(KeyError::Unhashable(node.type_name()))
            }
            // Arbitrary objects hash by identity in Python.
            Node::Exception(_) | Node::Reduce(_) => Ok(KeyRepr::Node(id)),
        }
    }

    fn leaf(&mut self, v: &Value) -> KeyRepr {
        match v {
            Value::None => KeyRepr::None,
            Value::Bool(b) => KeyRepr::Int(i128::from(*b)),
            Value::Int(i) => KeyRepr::Int(*i),
            Value::BigInt(b) => KeyRepr::BigInt(b.clone()),
            Value::Float(f) if f.is_nan() => {
                self.nans += 1;
                KeyRepr::Nan(self.nans)
            }
            Value::Float(f) => float_key(*f),
            Value::Bytes(b) => KeyRepr::Bytes(b.clone()),
            Value::Str(s) => KeyRepr::Str(s.as_bytes().clone()),
            Value::Global(g) => KeyRepr::Global(g.0.as_bytes().clone(), g.1.as_bytes().clone()),
            // Leaves never hold containers; should one ever, it equals nothing else.
            Value::Seq(..) | Value::Map(_) | Value::Exception(_) | Value::Reduce(_) => {
                self.nans += 1;
                KeyRepr::Nan(self.nans)
            }
        }
    }
}

/// A float key other than NaN: integral floats equal the integer of the same value
/// (`1.0 == 1`), others compare by value.
fn float_key(f: f64) -> KeyRepr {
    const TWO_POW_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    if f.is_infinite() || f.fract() != 0.0 {
        KeyRepr::Float(f.to_bits())
    } else if (-TWO_POW_127..TWO_POW_127).contains(&f) {
        // Exact: f is integral and within range.
        KeyRepr::Int(f as i128)
    } else {
        match int_from_le(Bytes::from(big_float_to_le(f))) {
            Value::Int(i) => KeyRepr::Int(i),
            Value::BigInt(b) => KeyRepr::BigInt(b),
            _ => KeyRepr::Float(f.to_bits()),
        }
    }
}

/// Two's complement little-endian bytes of a finite integral float with `|f| >= 2^127`.
fn big_float_to_le(f: f64) -> Vec<u8> {
    let bits = f.to_bits();
    let mantissa = (bits & ((1 << 52) - 1)) | (1 << 52);
    // For |f| >= 2^127 the exponent field is >= 1150, so this never underflows.
    let exponent = usize::try_from(((bits >> 52) & 0x7ff).saturating_sub(1075)).unwrap_or(0);
    let (byte_shift, bit_shift) = (exponent / 8, exponent % 8);
    let mut out = vec![0u8; byte_shift + 9];
    let shifted = (mantissa << bit_shift).to_le_bytes();
    for (dst, src) in out.iter_mut().skip(byte_shift).zip(shifted) {
        *dst = src;
    }
    if f < 0.0 {
        negate_le(&mut out);
    }
    out
}
