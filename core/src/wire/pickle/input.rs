//! Reading a pickle: opcodes, their arguments, and the scalars that opcodes push. Shared by
//! the general decoder ([`super::decode`]) and its memo-free fast path ([`super::direct`]), so
//! that both read every argument the same way and fail with the same errors.

use super::int::{i128_from_le, int_from_le, parse_decimal};
use super::PickleError;
use crate::wire::value::{Text, Value};
use bytes::Bytes;
use std::ops::Range;

/// The payload and the read position.
pub(super) struct Input<'a> {
    payload: &'a Bytes,
    /// Next byte to read.
    pos: usize,
}

impl<'a> Input<'a> {
    pub(super) fn new(payload: &'a Bytes) -> Self {
        Input { payload, pos: 0 }
    }

    /// Where the next byte would be read.
    #[inline]
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    /// Whether every byte has been read.
    #[inline]
    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.payload.len()
    }

    /// Whether the one byte left is a `STOP`.
    #[inline]
    pub(super) fn at_stop(&self) -> bool {
        self.payload.get(self.pos..) == Some(b".")
    }

    /// The next opcode and its offset, or `None` at the end of the payload.
    #[inline]
    pub(super) fn next_op(&mut self) -> Option<(u8, usize)> {
        let offset = self.pos;
        let op = *self.payload.get(offset)?;
        self.pos += 1;
        Some((op, offset))
    }

    /// Consumes `n` argument bytes; fails without consuming if fewer are present, so a
    /// claimed length is never trusted before the bytes are there.
    #[inline]
    fn take(&mut self, n: usize, offset: usize) -> Result<Range<usize>, PickleError> {
        let available = self.payload.len() - self.pos;
        if n > available {
            return Err(PickleError::Truncated { offset, needed: n - available });
        }
        let range = self.pos..self.pos + n;
        self.pos += n;
        Ok(range)
    }

    #[inline]
    pub(super) fn take_array<const N: usize>(&mut self, offset: usize) -> Result<[u8; N], PickleError> {
        let range = self.take(N, offset)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.payload[range]);
        Ok(out)
    }

    #[inline]
    fn take_u8(&mut self, offset: usize) -> Result<usize, PickleError> {
        Ok(usize::from(self.take_array::<1>(offset)?[0]))
    }

    #[inline]
    fn take_u32(&mut self, offset: usize) -> Result<usize, PickleError> {
        let n = u32::from_le_bytes(self.take_array(offset)?);
        // Where usize is narrower than 32 bits, such a length cannot be present anyway.
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// A signed 32-bit length (`T`, `LONG4`); negative ones are an error, as in Python.
    #[inline]
    fn take_i32_len(&mut self, offset: usize) -> Result<usize, PickleError> {
        let n = i32::from_le_bytes(self.take_array(offset)?);
        usize::try_from(n).map_err(|_| PickleError::NegativeLength { offset })
    }

    /// Consumes a text line and returns it without its `\n`.
    pub(super) fn take_line(&mut self, offset: usize) -> Result<&'a [u8], PickleError> {
        let payload: &'a [u8] = self.payload;
        let rest = &payload[self.pos..];
        let len = rest.iter().position(|&b| b == b'\n').ok_or(PickleError::UnterminatedLine { offset })?;
        let start = self.pos;
        self.pos += len + 1;
        Ok(&payload[start..start + len])
    }

    fn line_text(&mut self, offset: usize) -> Result<Text, PickleError> {
        let start = self.pos;
        let len = self.take_line(offset)?.len();
        Text::from_utf8(self.payload.slice(start..start + len))
            .map_err(|_| PickleError::InvalidUtf8 { offset })
    }

    // ----- opcodes that push a scalar -----

    /// `PROTO`: protocols 0 to 3 are accepted.
    #[inline]
    pub(super) fn proto(&mut self, offset: usize) -> Result<(), PickleError> {
        let [protocol] = self.take_array(offset)?;
        if protocol > 3 {
            return Err(PickleError::UnsupportedProtocol { protocol, offset });
        }
        Ok(())
    }

    /// The integer opcodes: `K`, `M`, `J`, `LONG1`, `LONG4`, and the text forms `I` and `L`.
    #[inline]
    pub(super) fn int(&mut self, op: u8, offset: usize) -> Result<Value, PickleError> {
        Ok(match op {
            b'K' => Value::Int(i128::from(u8::from_le_bytes(self.take_array(offset)?))),
            b'M' => Value::Int(i128::from(u16::from_le_bytes(self.take_array(offset)?))),
            b'J' => Value::Int(i128::from(i32::from_le_bytes(self.take_array(offset)?))),
            0x8a | 0x8b => {
                let n = if op == 0x8a { self.take_u8(offset)? } else { self.take_i32_len(offset)? };
                let range = self.take(n, offset)?;
                // Up to 16 bytes always fit (sign extension ignores redundant top bytes);
                // only a longer form may need a slice for a `BigInt`.
                match i128_from_le(&self.payload[range.clone()]) {
                    Some(i) => Value::Int(i),
                    None => int_from_le(self.payload.slice(range)),
                }
            }
            // Text INT: Python 2 wrote bools as `I00`/`I01`.
            b'I' => match self.take_line(offset)? {
                b"00" => Value::Bool(false),
                b"01" => Value::Bool(true),
                line => parse_decimal(line).ok_or(PickleError::BadNumber { offset })?,
            },
            // Text LONG: Python 2 appended an `L`.
            _ => {
                let line = self.take_line(offset)?;
                let line = line.strip_suffix(b"L").unwrap_or(line);
                parse_decimal(line).ok_or(PickleError::BadNumber { offset })?
            }
        })
    }

    /// `BINFLOAT` (`G`) and the text `FLOAT` (`F`).
    pub(super) fn float(&mut self, op: u8, offset: usize) -> Result<Value, PickleError> {
        let f = if op == b'G' {
            f64::from_be_bytes(self.take_array(offset)?)
        } else {
            let line = self.take_line(offset)?;
            std::str::from_utf8(line)
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
                .ok_or(PickleError::BadNumber { offset })?
        };
        Ok(Value::Float(f))
    }

    /// `BINUNICODE` (`X`).
    #[inline]
    pub(super) fn text(&mut self, offset: usize) -> Result<Value, PickleError> {
        let n = self.take_u32(offset)?;
        let range = self.take(n, offset)?;
        let text =
            Text::from_utf8(self.payload.slice(range)).map_err(|_| PickleError::InvalidUtf8 { offset })?;
        Ok(Value::Str(text))
    }

    /// `C`/`B` (bytes) and the py2 strings `U`/`T`, which ZEO peers mean as bytes too.
    #[inline]
    pub(super) fn bytes(&mut self, op: u8, offset: usize) -> Result<Value, PickleError> {
        let n = match op {
            b'C' | b'U' => self.take_u8(offset)?,
            b'B' => self.take_u32(offset)?,
            _ => self.take_i32_len(offset)?,
        };
        let range = self.take(n, offset)?;
        Ok(Value::Bytes(self.payload.slice(range)))
    }

    /// `GLOBAL` (`c`): `module\nname\n`, both non-empty.
    pub(super) fn global(&mut self, offset: usize) -> Result<Value, PickleError> {
        let module = self.line_text(offset)?;
        let name = self.line_text(offset)?;
        if module.as_bytes().is_empty() || name.as_bytes().is_empty() {
            return Err(PickleError::BadGlobal { offset });
        }
        Ok(Value::Global(Box::new((module, name))))
    }
}
