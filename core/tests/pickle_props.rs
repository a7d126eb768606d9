//! Property tests of the pickle codec: every value round-trips through encode → decode, and no
//! input (random bytes, random opcode sequences, damaged encodings) makes the decoder panic or
//! return a value that breaks the [`Value`] invariants.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use std::collections::BTreeSet;
use zeoraid_core::wire::pickle::{decode, encode};
use zeoraid_core::wire::value::{ExceptionValue, Limits, Text, Value};

// ----- strategies -----

/// Shortest two's complement form, as [`Value::BigInt`] requires.
fn int_from_le(mut le: Vec<u8>) -> Value {
    while let [.., prev, last] = le[..] {
        if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
            le.pop();
        } else {
            break;
        }
    }
    if le.len() <= 16 {
        let fill = if le.last().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 };
        let mut buf = [fill; 16];
        buf[..le.len()].copy_from_slice(&le);
        Value::Int(i128::from_le_bytes(buf))
    } else {
        Value::BigInt(le.into())
    }
}

fn int() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i128..300).prop_map(Value::Int),
        (-70_000i128..70_000).prop_map(Value::Int),
        any::<i32>().prop_map(|i| Value::Int(i.into())),
        any::<i64>().prop_map(|i| Value::Int(i.into())),
        any::<i128>().prop_map(Value::Int),
        vec(any::<u8>(), 17..40).prop_map(int_from_le),
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        any::<u64>().prop_map(f64::from_bits),
        Just(f64::NAN),
        Just(-0.0),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
    ]
}

fn text() -> impl Strategy<Value = Text> {
    prop_oneof!["[a-z._]{0,10}".prop_map(Text::from), any::<String>().prop_map(Text::from)]
}

fn bytes() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        8 => vec(any::<u8>(), 0..40).prop_map(Bytes::from),
        1 => vec(any::<u8>(), 250..300).prop_map(Bytes::from),
    ]
}

/// A global reference; never `ZODB.POSException._recon` (that would decode as an exception).
fn global() -> impl Strategy<Value = Value> {
    ("[A-Za-z_][A-Za-z0-9_.]{0,10}", "[A-Za-z_][A-Za-z0-9_.]{0,10}")
        .prop_map(|(m, n)| Value::Global(Box::new((Text::from(m), Text::from(n)))))
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        int(),
        float().prop_map(Value::Float),
        bytes().prop_map(Value::Bytes),
        text().prop_map(Value::Str),
        global(),
    ]
}

/// Hashable keys, including numbers of different types that Python finds equal.
fn key() -> impl Strategy<Value = Value> {
    let flat = prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        (-3i128..300).prop_map(Value::Int),
        int(),
        (-3i32..3).prop_map(|i| Value::Float(f64::from(i))),
        (-1e20f64..1e20).prop_map(Value::Float),
        bytes().prop_map(Value::Bytes),
        text().prop_map(Value::Str),
    ];
    flat.prop_recursive(2, 8, 3, |inner| vec(inner, 0..3).prop_map(Value::tuple))
}

/// Python's equality of the keys generated above, as an ordered value.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum PyKey {
    None,
    Int(i128),
    Big(Vec<u8>),
    Float(u64),
    Bytes(Vec<u8>),
    Str(String),
    Tuple(Vec<PyKey>),
}

fn py_key(v: &Value) -> PyKey {
    match v {
        Value::None => PyKey::None,
        Value::Bool(b) => PyKey::Int(i128::from(*b)),
        Value::Int(i) => PyKey::Int(*i),
        Value::BigInt(b) => PyKey::Big(b.to_vec()),
        // Key floats are below 1e20, so an integral one is an exact i128.
        Value::Float(f) if f.fract() == 0.0 => PyKey::Int(*f as i128),
        Value::Float(f) => PyKey::Float(f.to_bits()),
        Value::Bytes(b) => PyKey::Bytes(b.to_vec()),
        Value::Str(s) => PyKey::Str(s.as_str().to_owned()),
        Value::Seq(_, items) => PyKey::Tuple(items.iter().map(py_key).collect()),
        other => panic!("not a generated key: {other:?}"),
    }
}

/// A dict as Python would hold it: the first of equal keys wins its slot.
fn dict(entries: Vec<(Value, Value)>) -> Value {
    let mut seen = BTreeSet::new();
    Value::Map(entries.into_iter().filter(|(k, _)| seen.insert(py_key(k))).collect())
}

fn class_path() -> impl Strategy<Value = Text> {
    "[a-z_]{1,8}(\\.[a-z_]{1,8}){0,2}\\.[A-Z][A-Za-z]{0,10}".prop_map(Text::from)
}

/// Any value the codec carries, nested up to 4 levels (plus tuple keys).
fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::tuple),
            vec(inner.clone(), 0..6).prop_map(Value::list),
            vec((key(), inner.clone()), 0..5).prop_map(dict),
            (class_path(), inner.clone()).prop_map(|(class_path, state)| Value::Exception(Box::new(
                ExceptionValue { class_path, state }
            ))),
            (inner.clone(), inner).prop_map(|(f, a)| Value::Reduce(Box::new((f, a)))),
        ]
    })
}

fn enc(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(v, &mut out).expect("generated values encode");
    out
}

/// What a decoded value must satisfy: the invariants, and a stable round trip.
fn check_decoded(result: Result<Value, impl std::fmt::Debug>, limits: &Limits) -> Result<(), TestCaseError> {
    if let Ok(v) = result {
        prop_assert!(v.check(limits).is_ok(), "invariant broken: {:?}", v.check(limits));
        let again = decode(&Bytes::from(enc(&v)), limits);
        prop_assert_eq!(again.as_ref(), Ok(&v), "decoded value does not round-trip");
    }
    Ok(())
}

// ----- round trips -----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn every_value_round_trips(v in value()) {
        let bytes = enc(&v);
        let back = decode(&Bytes::from(bytes), &Limits::default());
        prop_assert_eq!(back.as_ref(), Ok(&v));
        prop_assert!(v.check(&Limits::default()).is_ok());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Lists and dicts around the 1000-item batch size.
    #[test]
    fn big_containers_round_trip(n in 990usize..2010, item in scalar()) {
        let list = Value::list(vec![item.clone(); n]);
        prop_assert_eq!(decode(&Bytes::from(enc(&list)), &Limits::default()), Ok(list));
        let map = Value::Map((0..n).map(|i| (Value::Int(i as i128), item.clone())).collect());
        prop_assert_eq!(decode(&Bytes::from(enc(&map)), &Limits::default()), Ok(map));
    }
}

// ----- hostile input -----

fn limits() -> Limits {
    Limits { max_depth: 16, max_nodes: 1 << 12 }
}

/// One opcode with a plausible argument, so that random sequences get deep into the decoder.
/// Opcodes that push a value come more often than those that consume, so that a fair share of
/// sequences leaves something to return.
fn token() -> impl Strategy<Value = Vec<u8>> {
    let push: Vec<&'static [u8]> = vec![
        b"N",
        b")",
        b"]",
        b"}",
        b"\x88",
        b"\x89",
        b"cm\nn\n",
        b"cZODB.POSException\n_recon\n",
        b"G\x7f\xf8\x00\x00\x00\x00\x00\x00",
        b"G?\xf0\x00\x00\x00\x00\x00\x00",
        b"C\x01x",
        b"X\x01\x00\x00\x00y",
        b"\x8a\x11\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x00",
        b"I01\n",
        b"L12L\n",
        b"F1.0\n",
    ];
    let consume: Vec<&'static [u8]> = vec![
        b"(", b"a", b"e", b"s", b"u", b"t", b"l", b"d", b"\x85", b"\x86", b"\x87", b"0", b"1", b"2", b"R",
    ];
    prop_oneof![
        6 => proptest::sample::select(push).prop_map(<[u8]>::to_vec),
        2 => any::<u8>().prop_map(|b| vec![b'K', b]),
        5 => proptest::sample::select(consume).prop_map(<[u8]>::to_vec),
        2 => (0u8..3).prop_map(|i| vec![b'q', i]),
        2 => (0u8..3).prop_map(|i| vec![b'h', i]),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn random_bytes_never_panic(data in vec(any::<u8>(), 0..512)) {
        check_decoded(decode(&Bytes::from(data), &limits()), &limits())?;
    }

    /// Random opcode sequences. Most are wrapped in `MARK … TUPLE`s and a `STOP`, which collect
    /// whatever the sequence left on the stack, so that a fair share decodes (and is checked).
    #[test]
    fn random_opcode_sequences_never_panic(tokens in vec(token(), 0..40), wrap in 0usize..4) {
        let mut data = b"\x80\x03".to_vec();
        data.extend(b"(".repeat(wrap));
        data.extend(tokens.concat());
        if wrap > 0 {
            data.extend(b"t".repeat(wrap));
            data.push(b'.');
        }
        check_decoded(decode(&Bytes::from(data), &limits()), &limits())?;
    }

    #[test]
    fn damaged_encodings_never_panic(
        v in value(),
        edits in vec((any::<usize>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let mut data = enc(&v);
        for (at, byte, kind) in edits {
            let at = at % data.len().max(1);
            match kind {
                0 if !data.is_empty() => data[at] = byte,
                1 => data.insert(at.min(data.len()), byte),
                2 if !data.is_empty() => {
                    data.remove(at);
                }
                _ => data.truncate(at),
            }
        }
        check_decoded(decode(&Bytes::from(data), &limits()), &limits())?;
    }
}

#[test]
fn decoded_bytes_and_texts_are_slices_of_the_payload() {
    let blob = vec![7u8; 1 << 20];
    let v = Value::tuple(vec![Value::bytes(blob), Value::str_static("é"), Value::BigInt(vec![1; 20].into())]);
    let payload = Bytes::from(enc(&v));
    let decoded = decode(&payload, &Limits::default()).expect("decodes");
    assert_eq!(decoded, v);
    let range = payload.as_ptr_range();
    let items = decoded.as_seq().expect("tuple");
    let ptrs = [
        items[0].as_bytes().expect("bytes").as_ptr(),
        match &items[1] {
            Value::Str(t) => t.as_bytes().as_ptr(),
            other => panic!("{other:?}"),
        },
        match &items[2] {
            Value::BigInt(b) => b.as_ptr(),
            other => panic!("{other:?}"),
        },
    ];
    for p in ptrs {
        assert!(range.contains(&p), "a decoded slice points outside the payload");
    }
}
