//! The msgpack codec against the recorded ZEO 6.2 sessions, plus property tests.

mod common;

use bytes::Bytes;
use proptest::prelude::*;
use zeoraid_core::wire::msgpack::{decode, encode};
use zeoraid_core::wire::value::{Limits, SeqKind, Text, Value};

/// Every recorded msgpack frame decodes, matches the recorder's rendering, and re-encodes to
/// exactly the recorded bytes (Python's encoder is canonical and so is ours).
#[test]
fn recorded_frames_decode_and_reencode_identically() {
    let frames: Vec<_> =
        common::frames(".msgpack.jsonl").into_iter().filter(|f| f.encoding == "msgpack").collect();
    assert!(frames.len() > 400, "only {} msgpack frames found", frames.len());
    let limits = Limits::default();
    for frame in &frames {
        let payload = Bytes::from(frame.payload.clone());
        let value =
            decode(&payload, &limits).unwrap_or_else(|e| panic!("{}: {e}\n{}", frame.name(), frame.repr));
        value.check(&limits).unwrap_or_else(|e| panic!("{}: {e}", frame.name()));
        let msg = frame.msg.as_ref().unwrap_or_else(|| panic!("{}: no msg", frame.name()));
        common::check_message(&value, msg)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", frame.name(), frame.repr));
        let mut out = Vec::new();
        encode(&value, &mut out).unwrap_or_else(|e| panic!("{}: {e}", frame.name()));
        assert!(out == frame.payload, "{} does not re-encode identically", frame.name());
    }
}

/// Byte strings and texts are slices of the payload buffer, not copies.
#[test]
fn decoding_is_zero_copy() {
    let mut raw = vec![0x92, 0xc6, 0x00, 0x10, 0x00, 0x00];
    raw.extend(std::iter::repeat_n(0xab, 0x10_0000));
    raw.extend_from_slice(&[0xa5, b'h', b'e', b'l', b'l', b'o']);
    let payload = Bytes::from(raw);
    let value = decode(&payload, &Limits::default()).expect("valid");
    let items = value.as_seq().expect("tuple");
    let data = items[0].as_bytes().expect("bin");
    let text = match &items[1] {
        Value::Str(t) => t.as_bytes().clone(),
        other => panic!("not a str: {other:?}"),
    };
    let range = payload.as_ptr_range();
    assert_eq!(data.len(), 0x10_0000);
    assert_eq!(data.as_ptr(), payload[6..].as_ptr());
    assert!(range.contains(&text.as_ptr()));
    assert_eq!(&text[..], b"hello");
}

/// A claim of 2^32-1 elements (or bytes) with a few bytes present fails without allocating.
#[test]
fn huge_claims_fail_fast() {
    let limits = Limits::default();
    for header in [
        &[0xdd, 0xff, 0xff, 0xff, 0xff][..],
        &[0xdf, 0xff, 0xff, 0xff, 0xff],
        &[0xc6, 0xff, 0xff, 0xff, 0xff],
    ] {
        let mut raw = header.to_vec();
        raw.extend_from_slice(&[0; 10]);
        assert!(decode(&Bytes::from(raw), &limits).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

fn text() -> impl Strategy<Value = Text> {
    prop_oneof![".{0,8}", "[a-z]{0,40}", Just(String::new())].prop_map(Text::from)
}

fn int() -> impl Strategy<Value = i128> {
    prop_oneof![
        -64i128..=200,
        any::<i64>().prop_map(i128::from),
        any::<u64>().prop_map(i128::from),
        Just(i128::from(i64::MIN)),
        Just(i128::from(u64::MAX)),
    ]
}

/// Every value msgpack can represent, in the form the decoder gives it back: no pickle-only
/// kinds, no big ints, no exception objects, and sequences are always tuples.
fn msgpack_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        int().prop_map(Value::Int),
        any::<u64>().prop_map(|b| Value::Float(f64::from_bits(b))),
        any::<f64>().prop_map(Value::Float),
        Just(Value::Float(f64::NAN)),
        text().prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::bytes),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            text().prop_map(Value::Str),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::bytes),
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6)
                .prop_map(|items| Value::Seq(SeqKind::Tuple, items)),
            proptest::collection::vec((key, inner), 0..5).prop_map(Value::Map),
        ]
    })
}

fn encoded(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(v, &mut out).expect("msgpack-representable");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn encode_then_decode_is_identity(v in msgpack_value()) {
        let bytes = Bytes::from(encoded(&v));
        let back = decode(&bytes, &Limits::default());
        prop_assert_eq!(back, Ok(v));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        let limits = Limits { max_depth: 8, max_nodes: 1_000 };
        if let Ok(v) = decode(&Bytes::from(raw), &limits) {
            prop_assert_eq!(v.check(&limits), Ok(()));
        }
    }

    #[test]
    fn mutated_encodings_never_panic(
        v in msgpack_value(),
        edits in proptest::collection::vec(
            (any::<prop::sample::Index>(), any::<u8>(), 0u8..3),
            1..4,
        ),
    ) {
        let mut raw = encoded(&v);
        for (at, byte, op) in edits {
            match op {
                // Overwrite, insert or delete one byte.
                0 if !raw.is_empty() => {
                    let i = at.index(raw.len());
                    raw[i] = byte;
                }
                1 => {
                    let i = at.index(raw.len() + 1);
                    raw.insert(i, byte);
                }
                _ if !raw.is_empty() => {
                    let i = at.index(raw.len());
                    raw.remove(i);
                }
                _ => {}
            }
        }
        let limits = Limits { max_depth: 3, max_nodes: 200 };
        if let Ok(v) = decode(&Bytes::from(raw), &limits) {
            prop_assert_eq!(v.check(&limits), Ok(()));
        }
    }
}
