//! Fuzz bodies: one function per decoder, shared by the cargo-fuzz targets in `fuzz/` and by
//! the proptests below, so that plain `cargo test` exercises them on stable.
//!
//! Each body feeds arbitrary bytes to a decoder and checks what a user relies on: no panic,
//! no unbounded work, and whatever decodes re-encodes to something that decodes to the same
//! thing. A violated property panics, which is what a fuzzer reports.

use super::codec::Codec;
use super::frame::{encode_frame, FrameDecoder};
use super::handshake;
use super::value::Limits;
use super::Encoding;
use bytes::Bytes;

/// Frames: the first input byte picks a chunk size; the rest is fed in chunks of that size.
/// Every frame that comes out must re-encode to exactly the bytes it was read from.
pub fn frames(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else { return };
    let chunk = usize::from(first % 17) + 1;
    let mut dec = FrameDecoder::new(1 << 16);
    let mut reencoded = Vec::new();
    let mut failed = false;
    for piece in rest.chunks(chunk) {
        dec.push(piece);
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= 1 << 16, "frame above the maximum");
                    encode_frame(&frame, &mut reencoded).expect("a decoded frame re-encodes");
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            break;
        }
    }
    assert_eq!(&rest[..reencoded.len()], &reencoded[..], "frames re-encode to their input");
    if !failed {
        assert_eq!(reencoded.len() + dec.buffered(), rest.len(), "no byte lost or invented");
    }
}

/// One message payload in `encoding`: value round trip, then typed round trip both ways
/// (as a client message and as a server message).
pub fn message(encoding: Encoding, data: &[u8]) {
    let codec = Codec { encoding, limits: Limits { max_depth: 32, max_nodes: 1 << 16 } };
    let payload = Bytes::copy_from_slice(data);
    let Ok(value) = codec.decode_value(&payload) else { return };
    if let Err(e) = value.check(&codec.limits) {
        panic!("decoded value breaks an invariant: {e}");
    }
    let mut out = Vec::new();
    if codec.encode_value(&value, &mut out).is_ok() {
        let again = codec.decode_value(&Bytes::from(out)).expect("an encoded value decodes");
        assert_eq!(again, value, "value round trip");
    }
    // The codec types the payload straight from the decoder (a 4-tuple handed over as its
    // items): exactly as typing the decoded value does.
    // Compared through `Debug`, which shows a NaN float (a `pack` time, say) equal to itself.
    let typed_client = super::message::ClientMessage::from_value(&value);
    assert_eq!(
        format!("{:?}", codec.decode_client(&payload).ok()),
        format!("{:?}", typed_client.clone().ok()),
        "client typing paths agree"
    );
    let typed_server = super::message::ServerMessage::from_value(&value);
    assert_eq!(
        format!("{:?}", codec.decode_server(&payload).ok()),
        format!("{:?}", typed_server.clone().ok()),
        "server typing paths agree"
    );
    if let Ok(msg) = typed_client {
        let mut first = Vec::new();
        codec.encode_client(&msg, &mut first).expect("a typed client message encodes");
        let back = codec.decode_client(&Bytes::from(first.clone())).expect("and decodes");
        let mut second = Vec::new();
        codec.encode_client(&back, &mut second).expect("and encodes again");
        assert_eq!(first, second, "typed client message round trip is stable");
    }
    if let Ok(msg) = typed_server {
        let mut first = Vec::new();
        codec.encode_server(&msg, &mut first).expect("a typed server message encodes");
        let back = codec.decode_server(&Bytes::from(first.clone())).expect("and decodes");
        let mut second = Vec::new();
        codec.encode_server(&back, &mut second).expect("and encodes again");
        assert_eq!(first, second, "typed server message round trip is stable");
    }
}

/// msgpack message payloads.
pub fn msgpack_message(data: &[u8]) {
    message(Encoding::Msgpack, data);
}

/// Pickle message payloads.
pub fn pickle_message(data: &[u8]) {
    message(Encoding::Pickle, data);
}

/// Handshake frames, both directions, and the `ruok` JSON answer.
pub fn handshake(data: &[u8]) {
    let _ = handshake::parse_client_handshake(data);
    if let Ok(enc) = handshake::parse_server_announcement(data) {
        assert_eq!(handshake::client_reply(enc)[0], enc.letter());
    }
    let limits = Limits { max_depth: 16, max_nodes: 1 << 14 };
    if let Ok(storages) = handshake::parse_ruok_json(data, &limits) {
        if let Ok(json) = handshake::encode_ruok_json(&storages) {
            let again = handshake::parse_ruok_json(&json, &limits).expect("our JSON parses");
            assert_eq!(again, storages, "ruok JSON round trip");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary bytes, and mutations of real frames (more likely to get deep into a decoder).
    fn input(seeds: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            (0..seeds.len(), proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4), any::<usize>())
                .prop_map(move |(i, edits, cut)| {
                    let mut v = seeds[i].to_vec();
                    for (at, b) in edits {
                        if !v.is_empty() {
                            let n = v.len();
                            v[at % n] = b;
                        }
                    }
                    if !v.is_empty() && cut % 3 == 0 {
                        v.truncate(cut % v.len());
                    }
                    v
                }),
        ]
    }

    const PICKLE_SEEDS: &[&[u8]] = &[
        // (1, False, 'register', ('1', False)), zeo-protocol.md §3.4
        b"\x80\x03(K\x01\x89X\x08\x00\x00\x00registerX\x01\x00\x00\x001\x89\x86t.",
        // heartbeat, §1.4
        b"\x80\x03(J\xff\xff\xff\xffK\x00X\x06\x00\x00\x00.replyNt.",
        // a memo put/get and a dict
        b"\x80\x03}q\x00(X\x01\x00\x00\x00ah\x00X\x01\x00\x00\x00bC\x02xyu.",
    ];
    const MSGPACK_SEEDS: &[&[u8]] = &[
        b"\x94\x01\xc2\xa8register\x92\xa11\xc2",
        b"\x94\xff\x00\xa6.reply\xc0",
        b"\x94\x00\xc3\xb5invalidateTransaction\x92\xc4\x08\x04\x0d\x40\xfe\xc8\xb9\x66\xee\x91\xc4\x08\x00\x00\x00\x00\x00\x00\x00\x01",
    ];
    const FRAME_SEEDS: &[&[u8]] = &[b"\x03\x00\x00\x00\x02Z5\x00\x00\x00\x02M5", b"\x00\xff\xff\xff\xff\x00"];
    const HANDSHAKE_SEEDS: &[&[u8]] = &[
        b"Z5",
        b"M5",
        b"ruok",
        b"{\"1\": {\"connections\": 0, \"lock_time\": null, \"start\": \"x\", \"t\": 1.5, \"a\": true}}",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4_000))]

        #[test]
        fn fuzz_frames(data in input(FRAME_SEEDS)) { frames(&data); }

        #[test]
        fn fuzz_pickle(data in input(PICKLE_SEEDS)) { pickle_message(&data); }

        #[test]
        fn fuzz_msgpack(data in input(MSGPACK_SEEDS)) { msgpack_message(&data); }

        #[test]
        fn fuzz_handshake(data in input(HANDSHAKE_SEEDS)) { handshake(&data); }
    }
}

#[cfg(test)]
mod regressions {
    /// Inputs the fuzzers found; each once broke a property of [`super::message`].
    #[test]
    fn recorded_fuzz_findings_hold() {
        // undoInfo(0, 110, 100): a bad call whose arguments were dropped on re-encoding.
        super::msgpack_message(b"\x94\x0a\xc2\xa8undoInfo\x93\x00\x6e\x64");
        // undoLog(False, 'uoL', 0, b'..'): same, in pickle.
        super::pickle_message(
            b"\x80\x03(K\x0d\x89X\x07\x00\x00\x00undoLog\x89X\x07\x00\x00\x00uoLK\x00C\x0a\x86t.",
        );
        // pack(NaN, 1): a NaN is not equal to itself, which the property must allow for.
        super::pickle_message(
            b"\x80\x03(K\x10\x89X\x04\x00\x00\x00packG\xff\xff\xff\xff\xff\xff\x00\x7bK\x01\x86t.",
        );
    }
}
