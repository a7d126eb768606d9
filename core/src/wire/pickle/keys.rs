//! Dict keys as Python sees them: which values are hashable, and which keys are equal.

use super::arena::{Node, NodeId, Slot};
use super::int::{int_from_le, negate_le};
use super::PickleError;
use crate::wire::value::{SeqKind, Value};
use bytes::Bytes;

/// What makes two dict keys equal in Python, as an ordered value: numbers that compare equal
/// map to the same form whatever their type, and objects that compare by identity (NaN,
/// reduce results, exceptions) carry their node id.
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
    Identity(NodeId),
}

/// Why a key could not be indexed; turned into a [`PickleError`] by the caller.
pub(super) enum KeyError {
    Unhashable(&'static str),
    OutOfWork,
}

impl KeyError {
    pub(super) fn into_error(self, offset: usize, budget: usize) -> PickleError {
        match self {
            KeyError::Unhashable(found) => PickleError::UnhashableKey { offset, found },
            KeyError::OutOfWork => PickleError::TooManyNodes { limit: budget },
        }
    }
}

/// The Python identity of a dict key, or why it has none. Every node visited costs one unit of
/// `work_left`. Only tuples have children here, and a tuple's children always precede it in
/// the arena, so this cannot loop; its recursion is bounded by the tuple depth limit.
pub(super) fn key_repr(nodes: &[Slot], id: NodeId, work_left: &mut usize) -> Result<KeyRepr, KeyError> {
    *work_left = work_left.checked_sub(1).ok_or(KeyError::OutOfWork)?;
    Ok(match &nodes[id].node {
        Node::Leaf(v) => match v {
            Value::None => KeyRepr::None,
            Value::Bool(b) => KeyRepr::Int(i128::from(*b)),
            Value::Int(i) => KeyRepr::Int(*i),
            Value::BigInt(b) => KeyRepr::BigInt(b.clone()),
            Value::Float(f) => float_key(*f, id),
            Value::Bytes(b) => KeyRepr::Bytes(b.clone()),
            Value::Str(s) => KeyRepr::Str(s.as_bytes().clone()),
            Value::Global(m, n) => KeyRepr::Global(m.as_bytes().clone(), n.as_bytes().clone()),
            // Leaves never hold containers; compare by identity if one ever did.
            _ => KeyRepr::Identity(id),
        },
        Node::Seq(SeqKind::Tuple, items) => {
            KeyRepr::Tuple(items.iter().map(|&c| key_repr(nodes, c, work_left)).collect::<Result<_, _>>()?)
        }
        node @ (Node::Seq(SeqKind::List, _) | Node::Map(_)) => {
            return Err(KeyError::Unhashable(node.type_name()))
        }
        // Arbitrary objects hash by identity in Python.
        Node::Exception(..) | Node::Reduce(..) => KeyRepr::Identity(id),
    })
}

/// A float key: integral floats equal the integer of the same value (`1.0 == 1`), NaN equals
/// only itself (Python's dict checks identity first), others compare by value.
fn float_key(f: f64, id: NodeId) -> KeyRepr {
    const TWO_POW_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    if f.is_nan() {
        KeyRepr::Identity(id)
    } else if f.is_infinite() || f.fract() != 0.0 {
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
