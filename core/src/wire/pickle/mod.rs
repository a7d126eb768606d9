//! The pickle encoding (handshake letter `Z`, zeo-protocol.md §3.4): bytes ⇄ [`Value`].
//!
//! * [`decode()`] is tolerant: it accepts the protocol-0..3 opcodes any Python peer may send,
//!   memo opcodes included, and refuses everything else with a [`PickleError`] that names the
//!   byte offset. It never panics and never allocates more than the input can justify.
//! * [`encode()`] is canonical: it writes exactly the bytes zodbpickle's C `Pickler(protocol=3)`
//!   writes in fast mode (no memo), which is what ZEO itself sends.
//!
//! Python-level mapping: `None`, `bool`, `int` ([`Value::Int`] or [`Value::BigInt`]), `float`,
//! `bytes` (also py2 `str` read through `U`/`T`), `str`, `tuple`/`list` ([`Value::Seq`]), `dict`
//! ([`Value::Map`], in wire order), a class or function reference ([`Value::Global`]), a call
//! ([`Value::Reduce`]), and the nested exception form `ZODB.POSException._recon(cls, state)`
//! ([`Value::Exception`], §3.6).

mod arena;
mod decode;
mod direct;
#[cfg(test)]
mod direct_tests;
mod encode;
mod input;
mod int;
mod keys;
#[cfg(test)]
mod tests;

pub use decode::decode;
pub(crate) use decode::decode_top;
pub use encode::encode;

#[cfg(doc)]
use super::value::Value;

/// Why a pickle payload could not be decoded. Offsets count from the start of the payload and
/// point at the opcode being executed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickleError {
    /// A byte that is not a pickle opcode.
    #[error("unknown pickle opcode 0x{opcode:02x} at offset {offset}")]
    UnknownOpcode {
        /// The byte found.
        opcode: u8,
        /// Where it was found.
        offset: usize,
    },
    /// A real pickle opcode that no ZEO peer sends and that this decoder does not implement
    /// (object building, persistent ids, extension codes, protocol 4/5 opcodes, text strings).
    #[error("unsupported pickle opcode {name} (0x{opcode:02x}) at offset {offset}")]
    UnsupportedOpcode {
        /// The opcode byte.
        opcode: u8,
        /// Its name in Python's `pickletools`.
        name: &'static str,
        /// Where it was found.
        offset: usize,
    },
    /// A `PROTO` opcode naming a protocol above 3; zodbpickle refuses these too.
    #[error("unsupported pickle protocol {protocol} at offset {offset}")]
    UnsupportedProtocol {
        /// The protocol number found.
        protocol: u8,
        /// Offset of the `PROTO` opcode.
        offset: usize,
    },
    /// The payload ends inside an opcode's argument.
    #[error("pickle truncated: opcode at offset {offset} needs {needed} more bytes than present")]
    Truncated {
        /// Offset of the opcode.
        offset: usize,
        /// How many bytes are missing.
        needed: usize,
    },
    /// A text-line argument (`I`, `L`, `F`, `p`, `g`, `c`) without its terminating newline.
    #[error("pickle line argument of the opcode at offset {offset} has no newline")]
    UnterminatedLine {
        /// Offset of the opcode.
        offset: usize,
    },
    /// A length prefix that is negative (`T`, `LONG4`).
    #[error("negative length for the opcode at offset {offset}")]
    NegativeLength {
        /// Offset of the opcode.
        offset: usize,
    },
    /// A text-line number (`I`, `L`, `F`, memo index) that does not parse, or has more than
    /// 4300 digits (Python's own limit for decimal integer conversion).
    #[error("malformed number for the opcode at offset {offset}")]
    BadNumber {
        /// Offset of the opcode.
        offset: usize,
    },
    /// A text (`X`) or global name (`c`) that is not valid UTF-8. Python would accept lone
    /// surrogates here (`surrogatepass`); they cannot be represented in a [`Value::Str`].
    #[error("invalid UTF-8 for the opcode at offset {offset}")]
    InvalidUtf8 {
        /// Offset of the opcode.
        offset: usize,
    },
    /// A `GLOBAL` with an empty module or name.
    #[error("malformed global reference at offset {offset}")]
    BadGlobal {
        /// Offset of the opcode.
        offset: usize,
    },
    /// An opcode needed more values than the stack holds above the innermost mark.
    #[error("pickle stack underflow at offset {offset}")]
    StackUnderflow {
        /// Offset of the opcode.
        offset: usize,
    },
    /// An opcode that works up to a mark found none.
    #[error("no mark on the pickle stack for the opcode at offset {offset}")]
    MarkMissing {
        /// Offset of the opcode.
        offset: usize,
    },
    /// A memo read of an index that was never written.
    #[error("memo index {index} not found at offset {offset}")]
    MemoMissing {
        /// The index read.
        index: u64,
        /// Offset of the opcode.
        offset: usize,
    },
    /// An opcode applied to a value of the wrong type (e.g. `APPEND` to a tuple).
    #[error("pickle opcode at offset {offset} needs a {expected}, found a {found}")]
    WrongType {
        /// Offset of the opcode.
        offset: usize,
        /// The Python type the opcode needs.
        expected: &'static str,
        /// The Python type found.
        found: &'static str,
    },
    /// `SETITEMS` or `DICT` with an odd number of items after the mark.
    #[error("odd number of items for the dict opcode at offset {offset}")]
    OddSetItems {
        /// Offset of the opcode.
        offset: usize,
    },
    /// A dict key Python could not hash (a list or a dict, or a tuple holding one).
    #[error("unhashable dict key of type {found} at offset {offset}")]
    UnhashableKey {
        /// Offset of the opcode.
        offset: usize,
        /// The Python type of the offending (part of the) key.
        found: &'static str,
    },
    /// The value would nest deeper than [`Limits::max_depth`](super::value::Limits::max_depth).
    #[error("pickle nests deeper than {limit}")]
    TooDeep {
        /// The limit in force.
        limit: u32,
    },
    /// The value would have more nodes than allowed: [`Limits::max_nodes`](super::value::Limits::max_nodes),
    /// or 16 per payload byte plus 1024 (memo copies make this possible; see [`decode()`]).
    #[error("pickle expands to more than {limit} value nodes")]
    TooManyNodes {
        /// The limit in force.
        limit: usize,
    },
    /// The payload ended without a `STOP` opcode.
    #[error("pickle has no STOP opcode")]
    NoStop,
    /// `STOP` found with other than exactly one value and no mark on the stack.
    #[error("STOP at offset {offset} with {values} values and {marks} marks on the stack")]
    BadStop {
        /// Offset of the `STOP`.
        offset: usize,
        /// Values on the stack.
        values: usize,
        /// Marks on the stack.
        marks: usize,
    },
    /// Bytes follow the `STOP` opcode.
    #[error("bytes after STOP, from offset {offset}")]
    TrailingBytes {
        /// Offset of the first byte after `STOP`.
        offset: usize,
    },
}

/// Why a [`Value`] could not be encoded as a pickle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickleEncodeError {
    /// A byte string or text of 4 GiB or more (protocol 3 has no opcode for it), or an integer
    /// whose two's complement form needs more than `i32::MAX` bytes.
    #[error("{kind} of {len} bytes is too large for pickle protocol 3")]
    TooLarge {
        /// `"bytes"`, `"str"` or `"int"`.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A [`Value::Global`] (or the class of a [`Value::Exception`]) whose module or name is
    /// empty or contains a newline, which the `GLOBAL` opcode cannot carry.
    #[error("cannot encode global {module:?} {name:?}")]
    BadGlobal {
        /// The module part.
        module: String,
        /// The name part.
        name: String,
    },
    /// A [`Value::Exception`] whose class path is not `module.Class`.
    #[error("exception class path {0:?} is not of the form module.Class")]
    BadClassPath(String),
    /// The value nests deeper than the encoder's limit (1000, Python's default recursion
    /// limit, beyond which zodbpickle cannot pickle either).
    #[error("value nests deeper than {limit}")]
    TooDeep {
        /// The limit.
        limit: u32,
    },
}
