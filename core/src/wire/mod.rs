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

pub mod frame;
pub mod handshake;
pub mod msgpack;
pub mod pickle;
pub mod value;
