//! Unit tests of the msgpack codec: every form, every error, the limits.

use super::*;
use crate::wire::value::ExceptionValue;

fn enc(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(v, &mut out).expect("encodable");
    out
}

fn dec(bytes: &[u8]) -> Result<Value, MsgpackError> {
    decode(&Bytes::copy_from_slice(bytes), &Limits::default())
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex")).collect()
}

/// Encodes to exactly `want` and decodes back to `v`.
fn both(v: Value, want: &str) {
    let want = hex(want);
    assert_eq!(enc(&v), want, "encoding {v:?}");
    assert_eq!(dec(&want), Ok(v));
}

#[test]
fn scalars() {
    both(Value::None, "c0");
    both(Value::Bool(false), "c2");
    both(Value::Bool(true), "c3");
    both(Value::Float(1.5), "cb 3ff8000000000000");
    both(Value::Float(-0.0), "cb 8000000000000000");
    let nan = f64::from_bits(0x7ff8_0000_0000_0001);
    both(Value::Float(nan), "cb 7ff8000000000001");
}

#[test]
fn ints_use_the_smallest_form() {
    let cases: &[(i128, &str)] = &[
        (0, "00"),
        (127, "7f"),
        (128, "cc80"),
        (255, "ccff"),
        (256, "cd0100"),
        (65535, "cdffff"),
        (65536, "ce00010000"),
        (u32::MAX as i128, "ceffffffff"),
        (1 << 32, "cf0000000100000000"),
        (u64::MAX as i128, "cfffffffffffffffff"),
        (-1, "ff"),
        (-32, "e0"),
        (-33, "d0df"),
        (-128, "d080"),
        (-129, "d1ff7f"),
        (-32768, "d18000"),
        (-32769, "d2ffff7fff"),
        (i32::MIN as i128, "d280000000"),
        (i32::MIN as i128 - 1, "d3ffffffff7fffffff"),
        (i64::MIN as i128, "d38000000000000000"),
    ];
    for &(i, h) in cases {
        both(Value::Int(i), h);
    }
}

#[test]
fn non_canonical_int_forms_decode() {
    assert_eq!(dec(&hex("cc05")), Ok(Value::Int(5)));
    assert_eq!(dec(&hex("d3 0000000000000005")), Ok(Value::Int(5)));
    assert_eq!(dec(&hex("d0 05")), Ok(Value::Int(5)));
    assert_eq!(dec(&hex("cf 8000000000000000")), Ok(Value::Int(1 << 63)));
}

#[test]
fn float32_widens() {
    assert_eq!(dec(&hex("ca 3fc00000")), Ok(Value::Float(1.5)));
}

#[test]
fn ints_out_of_range_are_refused() {
    let mut out = vec![7];
    for i in [u64::MAX as i128 + 1, i64::MIN as i128 - 1, i128::MAX, i128::MIN] {
        let err = encode(&Value::Int(i), &mut out);
        assert_eq!(err, Err(MsgpackEncodeError::IntOutOfRange { offset: 0, value: i }));
        assert_eq!(out, [7], "out is left unchanged on error");
    }
    let big = Value::BigInt(Bytes::from(vec![0u8; 17]));
    assert_eq!(encode(&big, &mut out), Err(MsgpackEncodeError::BigInt { offset: 0 }));
}

#[test]
fn pickle_only_values_are_refused() {
    let mut out = Vec::new();
    let g = Value::tuple(vec![Value::Int(1), Value::Global(Box::new(("a".into(), "b".into())))]);
    assert_eq!(encode(&g, &mut out), Err(MsgpackEncodeError::PickleOnly { offset: 2, kind: "global" }));
    assert!(out.is_empty());
    let r = Value::Reduce(Box::new((Value::None, Value::tuple(vec![]))));
    assert_eq!(encode(&r, &mut out), Err(MsgpackEncodeError::PickleOnly { offset: 0, kind: "reduce" }));
}

#[test]
fn strings_and_bytes() {
    both(Value::str_static(""), "a0");
    both(Value::str_static("é"), "a2 c3a9");
    let s31 = "x".repeat(31);
    both(Value::Str(s31.as_str().into()), &format!("bf{}", "78".repeat(31)));
    let s32 = "x".repeat(32);
    both(Value::Str(s32.as_str().into()), &format!("d920{}", "78".repeat(32)));
    let s256 = "x".repeat(256);
    both(Value::Str(s256.as_str().into()), &format!("da0100{}", "78".repeat(256)));
    let s65536 = "x".repeat(65536);
    both(Value::Str(s65536.as_str().into()), &format!("db00010000{}", "78".repeat(65536)));
    both(Value::bytes(&b""[..]), "c400");
    both(Value::bytes(vec![1u8; 255]), &format!("c4ff{}", "01".repeat(255)));
    both(Value::bytes(vec![1u8; 256]), &format!("c50100{}", "01".repeat(256)));
    both(Value::bytes(vec![1u8; 65536]), &format!("c600010000{}", "01".repeat(65536)));
}

#[test]
fn arrays_and_maps() {
    both(Value::tuple(vec![]), "90");
    both(Value::tuple(vec![Value::Int(1), Value::None]), "92 01 c0");
    let fifteen = Value::tuple(vec![Value::Int(0); 15]);
    both(fifteen, &format!("9f{}", "00".repeat(15)));
    let sixteen = Value::tuple(vec![Value::Int(0); 16]);
    both(sixteen, &format!("dc0010{}", "00".repeat(16)));
    let big = Value::tuple(vec![Value::Int(0); 65536]);
    both(big, &format!("dd00010000{}", "00".repeat(65536)));
    // Lists encode as arrays and come back as tuples.
    assert_eq!(enc(&Value::list(vec![Value::Int(1)])), hex("91 01"));
    both(Value::Map(vec![]), "80");
    both(
        Value::Map(vec![(Value::str_static("b"), Value::Int(1)), (Value::bytes(&b"a"[..]), Value::None)]),
        "82 a162 01 c40161 c0",
    );
    let entries =
        |n: usize| (0..n).map(|i| (Value::Str(format!("{i:05}").into()), Value::None)).collect::<Vec<_>>();
    let m16 = enc(&Value::Map(entries(16)));
    assert_eq!(m16[..3], hex("de0010")[..]);
    assert_eq!(dec(&m16), Ok(Value::Map(entries(16))));
    let m65536 = enc(&Value::Map(entries(65536)));
    assert_eq!(m65536[..5], hex("df00010000")[..]);
    assert_eq!(dec(&m65536), Ok(Value::Map(entries(65536))));
}

#[test]
fn the_protocol_examples() {
    // §3.5: (1, False, 'register', ('1', False)).
    let register = Value::tuple(vec![
        Value::Int(1),
        Value::Bool(false),
        Value::str_static("register"),
        Value::tuple(vec![Value::str_static("1"), Value::Bool(false)]),
    ]);
    both(register, "9401c2a8726567697374657292a131c2");
    // §1.4: the heartbeat.
    let heartbeat =
        Value::tuple(vec![Value::Int(-1), Value::Int(0), Value::str_static(".reply"), Value::None]);
    both(heartbeat, "94 ff 00 a6 2e7265706c79 c0");
}

fn exc(state: Value) -> Value {
    Value::Exception(Box::new(ExceptionValue {
        class_path: Text::from_static("ZODB.POSException.UndoError"),
        state,
    }))
}

#[test]
fn exceptions_are_lowered_like_zeo_does() {
    let class = Value::str_static("ZODB.POSException.UndoError");
    let args = Value::tuple(vec![Value::str_static("nope")]);
    // __dict__ non-empty: the dict without 'args'.
    let state = Value::Map(vec![
        (Value::str_static("_reason"), Value::str_static("r")),
        (Value::str_static("args"), args.clone()),
        (Value::str_static("_oid"), Value::bytes(&b"o"[..])),
    ]);
    let want = Value::tuple(vec![
        class.clone(),
        Value::Map(vec![
            (Value::str_static("_reason"), Value::str_static("r")),
            (Value::str_static("_oid"), Value::bytes(&b"o"[..])),
        ]),
    ]);
    assert_eq!(enc(&exc(state)), enc(&want));
    // __dict__ empty: the args.
    let state = Value::Map(vec![(Value::str_static("args"), args.clone())]);
    let want = Value::tuple(vec![class.clone(), args.clone()]);
    assert_eq!(enc(&exc(state)), enc(&want));
    // No args at all: an empty array.
    let want = Value::tuple(vec![class.clone(), Value::tuple(vec![])]);
    assert_eq!(enc(&exc(Value::Map(vec![]))), enc(&want));
    // A non-map state is the payload itself.
    let want = Value::tuple(vec![class.clone(), args.clone()]);
    assert_eq!(enc(&exc(args.clone())), enc(&want));
    // Nested inside a dict and inside another exception's dict.
    let inner = exc(Value::Map(vec![(Value::str_static("args"), args.clone())]));
    let outer = exc(Value::Map(vec![
        (Value::str_static("args"), Value::tuple(vec![])),
        (Value::str_static("_errs"), Value::tuple(vec![inner])),
    ]));
    let want = Value::tuple(vec![
        class.clone(),
        Value::Map(vec![(Value::str_static("_errs"), Value::tuple(vec![Value::tuple(vec![class, args])]))]),
    ]);
    assert_eq!(enc(&outer), enc(&want));
}

#[test]
fn truncated_input() {
    assert_eq!(dec(&[]), Err(MsgpackError::Truncated { offset: 0, what: "marker", needed: 1, available: 0 }));
    assert_eq!(
        dec(&hex("cd01")),
        Err(MsgpackError::Truncated { offset: 1, what: "uint16", needed: 2, available: 1 })
    );
    assert_eq!(
        dec(&hex("a3 6162")),
        Err(MsgpackError::Truncated { offset: 1, what: "str data", needed: 3, available: 2 })
    );
    assert_eq!(
        dec(&hex("c6 ffffffff 00")),
        Err(MsgpackError::Truncated { offset: 5, what: "bin data", needed: u32::MAX as u64, available: 1 })
    );
    // Inside containers whose claimed counts do fit.
    assert_eq!(
        dec(&hex("91 91 91 a3 6162")),
        Err(MsgpackError::Truncated { offset: 4, what: "str data", needed: 3, available: 2 })
    );
    assert_eq!(
        dec(&hex("91 cd")),
        Err(MsgpackError::Truncated { offset: 2, what: "uint16", needed: 2, available: 0 })
    );
}

#[test]
fn huge_claimed_counts_allocate_nothing() {
    // An array32 claiming 2^32-1 elements with 10 bytes present.
    let mut input = hex("dd ffffffff");
    input.extend_from_slice(&[0; 10]);
    assert_eq!(
        dec(&input),
        Err(MsgpackError::CountTooLarge {
            offset: 0,
            kind: "array",
            count: u32::MAX as u64,
            available: 10,
            pending: 0
        })
    );
    // A map claims two slots per entry.
    assert_eq!(
        dec(&hex("81 c0")),
        Err(MsgpackError::CountTooLarge { offset: 0, kind: "map", count: 2, available: 1, pending: 0 })
    );
    // Slots owed to the outer array count too: the inner claim of 2 plus 1 more outer item
    // cannot fit in 2 bytes.
    assert_eq!(
        dec(&hex("92 92 01 02")),
        Err(MsgpackError::CountTooLarge { offset: 1, kind: "array", count: 2, available: 2, pending: 1 })
    );
}

#[test]
fn bad_markers() {
    assert_eq!(dec(&hex("c1")), Err(MsgpackError::ReservedMarker { offset: 0 }));
    for m in [0xc7u8, 0xc8, 0xc9, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8] {
        assert_eq!(dec(&[0x91, m, 0, 0, 0, 0, 0, 0]), Err(MsgpackError::Extension { offset: 1, marker: m }));
    }
}

#[test]
fn invalid_utf8() {
    assert_eq!(dec(&hex("a3 61 ff 62")), Err(MsgpackError::InvalidUtf8 { offset: 0, bad_offset: 2 }));
    // The same bytes as bin are fine.
    assert_eq!(dec(&hex("c403 61 ff 62")), Ok(Value::bytes(&b"a\xffb"[..])));
}

#[test]
fn map_keys_must_be_str_or_bin() {
    assert_eq!(dec(&hex("81 01 02")), Err(MsgpackError::MapKey { offset: 1, found: "int" }));
    assert_eq!(dec(&hex("81 c0 02")), Err(MsgpackError::MapKey { offset: 1, found: "nil" }));
    assert_eq!(dec(&hex("81 90 02")), Err(MsgpackError::MapKey { offset: 1, found: "array" }));
    assert_eq!(dec(&hex("82 a161 01 80 02")), Err(MsgpackError::MapKey { offset: 4, found: "map" }));
    // Values may be anything.
    assert!(dec(&hex("81 a161 80")).is_ok());
}

#[test]
fn depth_limit() {
    let limits = Limits { max_depth: 3, max_nodes: 100 };
    let ok = Bytes::from(hex("91 91 90"));
    assert_eq!(decode(&ok, &limits).map(|v| v.depth()), Ok(3));
    let deep = Bytes::from(hex("91 91 91 90"));
    assert_eq!(decode(&deep, &limits), Err(MsgpackError::TooDeep { offset: 3, max: 3 }));
    let deep_map = Bytes::from(hex("91 91 91 81 a161 c0"));
    assert_eq!(decode(&deep_map, &limits), Err(MsgpackError::TooDeep { offset: 3, max: 3 }));
    // A million nested arrays: an error, not a stack overflow.
    let mut million = vec![0x91u8; 1_000_000];
    million.push(0xc0);
    assert_eq!(dec(&million), Err(MsgpackError::TooDeep { offset: 64, max: Limits::default().max_depth }));
    let scalar_only = Limits { max_depth: 0, max_nodes: 10 };
    assert_eq!(decode(&Bytes::from_static(b"\x01"), &scalar_only), Ok(Value::Int(1)));
    assert_eq!(
        decode(&Bytes::from_static(b"\x90"), &scalar_only),
        Err(MsgpackError::TooDeep { offset: 0, max: 0 })
    );
}

#[test]
fn node_limit() {
    let limits = Limits { max_depth: 10, max_nodes: 3 };
    assert!(decode(&Bytes::from(hex("92 01 02")), &limits).is_ok());
    assert_eq!(
        decode(&Bytes::from(hex("93 01 02 03")), &limits),
        Err(MsgpackError::TooManyNodes { offset: 3, max: 3 })
    );
}

#[test]
fn trailing_bytes() {
    assert_eq!(dec(&hex("c0 c0 c0")), Err(MsgpackError::TrailingBytes { offset: 1, len: 2 }));
    assert_eq!(dec(&hex("91 01 02")), Err(MsgpackError::TrailingBytes { offset: 2, len: 1 }));
}

#[test]
fn errors_say_where() {
    let msg = dec(&hex("92 01 c1")).expect_err("reserved").to_string();
    assert_eq!(msg, "reserved msgpack marker 0xc1 at byte 2");
}
