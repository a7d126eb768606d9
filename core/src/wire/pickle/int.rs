//! Integer helpers shared by the decoder and the encoder: Python's `int` on the wire is
//! little-endian two's complement (`LONG1`/`LONG4`) or decimal text (`I`/`L`).

use crate::wire::value::Value;
use bytes::Bytes;

/// Length of the shortest little-endian two's complement form of the same integer: drops top
/// bytes that only repeat the sign. Empty input (zero) stays empty.
pub(super) fn minimal_len(le: &[u8]) -> usize {
    let mut s = le;
    while let [.., prev, last] = s {
        let redundant = (*last == 0 && prev & 0x80 == 0) || (*last == 0xff && prev & 0x80 != 0);
        if !redundant {
            break;
        }
        s = s.split_last().map_or(s, |(_, init)| init);
    }
    s.len()
}

/// The integer held in at most 16 bytes of little-endian two's complement, sign-extended.
pub(super) fn i128_from_le(le: &[u8]) -> Option<i128> {
    if le.len() > 16 {
        return None;
    }
    let negative = le.last().is_some_and(|b| b & 0x80 != 0);
    let mut buf = [if negative { 0xff } else { 0 }; 16];
    for (dst, src) in buf.iter_mut().zip(le) {
        *dst = *src;
    }
    Some(i128::from_le_bytes(buf))
}

/// The [`Value`] for an integer given in little-endian two's complement: [`Value::Int`] when it
/// fits, else [`Value::BigInt`] holding the minimal form, sliced (not copied) from `le`.
pub(super) fn int_from_le(le: Bytes) -> Value {
    let n = minimal_len(&le);
    match i128_from_le(le.get(..n).unwrap_or_default()) {
        Some(i) => Value::Int(i),
        None => Value::BigInt(le.slice(..n)),
    }
}

/// Python's default limit on the digits of a decimal integer (`sys.int_info`), which also
/// bounds the quadratic decimal conversion here.
const MAX_DECIMAL_DIGITS: usize = 4300;

/// Two's complement negation in place.
pub(super) fn negate_le(bytes: &mut [u8]) {
    let mut carry = true;
    for b in bytes {
        let (sum, overflow) = (!*b).overflowing_add(u8::from(carry));
        *b = sum;
        carry = overflow;
    }
}

/// Parses `[+-]digits` (surrounding ASCII whitespace allowed, as Python's `int()` does) into an
/// integer value. Base prefixes and underscores are refused: no pickler writes them.
pub(super) fn parse_decimal(line: &[u8]) -> Option<Value> {
    let line = line.trim_ascii();
    let (negative, digits) = match line {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > MAX_DECIMAL_DIGITS || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Magnitude in base 2^32 limbs, little-endian, fed nine digits at a time.
    let mut limbs: Vec<u32> = Vec::new();
    for chunk in digits.chunks(9) {
        let mut scale = 1u64;
        let mut add = 0u64;
        for d in chunk {
            scale *= 10;
            add = add * 10 + u64::from(d - b'0');
        }
        let mut carry = add;
        for limb in &mut limbs {
            let wide = u64::from(*limb) * scale + carry;
            *limb = (wide & 0xffff_ffff) as u32;
            carry = wide >> 32;
        }
        if carry != 0 {
            limbs.push((carry & 0xffff_ffff) as u32);
        }
    }
    let mut le: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    le.push(0); // room for the sign bit
    if negative {
        negate_le(&mut le);
    }
    Some(int_from_le(Bytes::from(le)))
}
