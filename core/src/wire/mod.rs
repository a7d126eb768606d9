//! The ZEO 5/6 wire protocol (`zeo-protocol.md`).
//!
//! Layers, bottom up:
//! * [`frame`]: 4-byte big-endian length framing, fed incrementally.
//! * [`handshake`]: the raw first frame of each direction and the `ruok` probe.
//! * [`value`]: the dynamic data model that both encodings share.
//! * [`msgpack`] and [`pickle`]: bytes ⇄ [`value::Value`], with limits on untrusted input.
//! * [`message`], [`request`], [`reply`], [`push`], [`error`]: the typed model of every
//!   call, result, push and error reply, for both the server and the client side.
//! * [`codec`]: the one entry point that turns a frame payload into a typed message and back.

#[cfg(any(test, feature = "arbitrary"))]
pub mod arbitrary;
pub mod codec;
pub mod error;
pub mod frame;
pub mod fuzz;
pub mod handshake;
pub mod message;
pub mod method;
pub mod msgpack;
pub mod pickle;
pub mod push;
pub mod reply;
pub mod request;
pub mod types;
pub mod value;

/// The two message encodings of ZEO 5.1+ (§2.1, §3.3, §3.4), named by the handshake letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encoding {
    /// Pickle protocol 3, letter `Z` (the stock default).
    Pickle,
    /// msgpack, letter `M`.
    Msgpack,
}

impl Encoding {
    /// The handshake letter: `b'Z'` or `b'M'`.
    pub const fn letter(self) -> u8 {
        match self {
            Encoding::Pickle => b'Z',
            Encoding::Msgpack => b'M',
        }
    }

    /// The encoding a handshake letter names, if any.
    pub const fn from_letter(letter: u8) -> Option<Encoding> {
        match letter {
            b'Z' => Some(Encoding::Pickle),
            b'M' => Some(Encoding::Msgpack),
            _ => None,
        }
    }
}
