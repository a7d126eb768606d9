//! Length-prefixed framing (`zeo-protocol.md` §1.3): `frame := length:u32 BE || payload`.
//!
//! [`FrameDecoder`] is fed whatever the socket delivered, in any chunking, and hands out whole
//! payloads as zero-copy [`Bytes`] split off its buffer. It never allocates for a claimed
//! length ahead of the bytes that actually arrived, and it refuses a length above its
//! configured maximum as soon as the four length bytes are in.

use bytes::{Buf, Bytes, BytesMut};

/// The default maximum payload size: 1 GiB. ZEO itself has no limit below 2^32−1, but a whole
/// object record travels in one frame, so the cap must be generous (§1.3).
pub const DEFAULT_MAX_FRAME: u32 = 1 << 30;

/// Framing errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A received frame header claims more than the decoder's maximum.
    #[error("frame at stream byte {offset} claims {len} bytes, more than the maximum of {max}")]
    TooLarge {
        /// Byte offset of the frame's length prefix in the received stream.
        offset: u64,
        /// The claimed payload length.
        len: u32,
        /// The decoder's maximum.
        max: u32,
    },
    /// A payload to send does not fit the 32-bit length prefix.
    #[error("payload of {len} bytes does not fit a frame (the limit is 2^32-1)")]
    PayloadTooLong {
        /// The payload length.
        len: usize,
    },
}

/// Splits a received byte stream into frame payloads.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Received bytes not yet handed out.
    buf: BytesMut,
    /// Largest payload accepted.
    max_frame: u32,
    /// Stream offset of `buf[0]`, for error messages.
    offset: u64,
    /// Set by the first error; every later call returns it.
    failed: Option<FrameError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameDecoder {
    /// A decoder that refuses payloads longer than `max_frame` bytes.
    pub fn new(max_frame: u32) -> FrameDecoder {
        FrameDecoder { buf: BytesMut::new(), max_frame, offset: 0, failed: None }
    }

    /// The largest payload this decoder accepts.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Appends received bytes. After an error the bytes are dropped: the stream is dead.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// The next complete payload, `Ok(None)` if more bytes are needed, or the error that ended
    /// the stream (returned again by every later call).
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Some(header) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header);
        if len > self.max_frame {
            let e = FrameError::TooLarge { offset: self.offset, len, max: self.max_frame };
            self.failed = Some(e.clone());
            // Nothing buffered is of any further use.
            self.buf = BytesMut::new();
            return Err(e);
        }
        // u32 → usize is lossless on the 32/64-bit targets zeoraid supports.
        let total = 4 + len as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        self.buf.advance(4);
        let payload = self.buf.split_to(len as usize).freeze();
        self.offset += total as u64;
        Ok(Some(payload))
    }

    /// Bytes received but not yet returned as frames (including a partial header).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// The 4-byte length prefix for a payload of `len` bytes, for writers that send header and
/// payload separately (vectored writes of big records).
pub fn frame_header(len: usize) -> Result<[u8; 4], FrameError> {
    u32::try_from(len).map(u32::to_be_bytes).map_err(|_| FrameError::PayloadTooLong { len })
}

/// Appends one frame (length prefix and payload) to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    let header = frame_header(payload.len())?;
    out.reserve(4 + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_frame(p, &mut out).expect("small payload");
        }
        out
    }

    #[test]
    fn encodes_big_endian_length() {
        assert_eq!(framed(&[b"Z5"]), b"\x00\x00\x00\x02Z5");
        assert_eq!(framed(&[b""]), b"\x00\x00\x00\x00");
        assert_eq!(frame_header(0x0102_0304), Ok([1, 2, 3, 4]));
        assert_eq!(frame_header(u32::MAX as usize), Ok([0xff; 4]));
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn refuses_payloads_that_do_not_fit() {
        let len = u32::MAX as usize + 1;
        assert_eq!(frame_header(len), Err(FrameError::PayloadTooLong { len }));
    }

    #[test]
    fn decodes_whole_and_split_frames() {
        let mut d = FrameDecoder::default();
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&framed(&[b"Z5", b"", b"hello"]));
        assert_eq!(d.next_frame(), Ok(Some(Bytes::from_static(b"Z5"))));
        assert_eq!(d.next_frame(), Ok(Some(Bytes::new())));
        assert_eq!(d.next_frame(), Ok(Some(Bytes::from_static(b"hello"))));
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.buffered(), 0);
        for b in framed(&[b"abc"]) {
            assert_eq!(d.next_frame(), Ok(None));
            d.push(&[b]);
        }
        assert_eq!(d.buffered(), 7);
        assert_eq!(d.next_frame(), Ok(Some(Bytes::from_static(b"abc"))));
    }

    #[test]
    fn too_large_is_reported_from_the_header_alone_and_sticks() {
        let mut d = FrameDecoder::new(10);
        d.push(&framed(&[b"0123456789"]));
        assert_eq!(d.next_frame().map(|f| f.map(|b| b.len())), Ok(Some(10)));
        d.push(&[0, 0, 0]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&[11]);
        let e = FrameError::TooLarge { offset: 14, len: 11, max: 10 };
        assert_eq!(d.next_frame(), Err(e.clone()));
        d.push(&[0; 100]);
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.next_frame(), Err(e));
        assert_eq!(
            FrameError::TooLarge { offset: 14, len: 11, max: 10 }.to_string(),
            "frame at stream byte 14 claims 11 bytes, more than the maximum of 10"
        );
    }

    #[test]
    fn a_huge_claim_allocates_nothing_big() {
        let mut d = FrameDecoder::new(u32::MAX);
        d.push(&[0xff, 0xff, 0xff, 0xff]);
        d.push(&[0; 10]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.buffered(), 14);
        assert!(d.buf.capacity() < 1 << 20, "capacity {}", d.buf.capacity());
    }

    #[test]
    fn payloads_share_the_buffer() {
        let mut d = FrameDecoder::default();
        d.push(&framed(&[b"first", b"second"]));
        let a = d.next_frame().ok().flatten().expect("frame");
        let b = d.next_frame().ok().flatten().expect("frame");
        // Adjacent in one allocation: the second payload starts 4 header bytes after the first.
        assert_eq!(a.as_ptr().wrapping_add(a.len() + 4), b.as_ptr());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn any_chunking_reproduces_the_payloads(
            payloads in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..300),
                0..8,
            ),
            chunks in proptest::collection::vec(1usize..64, 1..20),
        ) {
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let stream = framed(&refs);
            let mut d = FrameDecoder::new(1000);
            let mut got = Vec::new();
            let mut rest = &stream[..];
            let mut sizes = chunks.iter().cycle();
            while !rest.is_empty() {
                let n = sizes.next().copied().unwrap_or(1).min(rest.len());
                d.push(&rest[..n]);
                rest = &rest[n..];
                while let Some(frame) = d.next_frame().expect("within the maximum") {
                    got.push(frame.to_vec());
                }
            }
            prop_assert_eq!(got, payloads);
            prop_assert_eq!(d.buffered(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            raw in proptest::collection::vec(any::<u8>(), 0..200),
            max in 0u32..100,
        ) {
            let mut d = FrameDecoder::new(max);
            d.push(&raw);
            let mut total = 0usize;
            loop {
                match d.next_frame() {
                    Ok(Some(f)) => {
                        prop_assert!(f.len() <= max as usize);
                        total += 4 + f.len();
                    }
                    Ok(None) => {
                        prop_assert_eq!(total + d.buffered(), raw.len());
                        break;
                    }
                    Err(FrameError::TooLarge { len, .. }) => {
                        prop_assert!(len > max);
                        prop_assert!(d.next_frame().is_err());
                        break;
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
        }
    }
}
