//! Unit tests: each opcode as Python reads it, each error, the limits, and the encoder's
//! canonical forms. Expected encoder bytes were produced with CPython 3's C pickler
//! (`Pickler(f, 3)`, `fast = 1`), whose batching and integer code is the same as zodbpickle's
//! `_pickle_33.c`.

use super::int::{i128_from_le, minimal_len};
use super::*;
use crate::wire::value::{ExceptionValue, Limits, SeqKind, Text, Value};
use bytes::Bytes;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).expect("test hex")
}

fn dec(bytes: &[u8]) -> Result<Value, PickleError> {
    decode(&Bytes::copy_from_slice(bytes), &Limits::default())
}

fn dec_hex(s: &str) -> Result<Value, PickleError> {
    dec(&h(s))
}

fn enc(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(v, &mut out).expect("encodable");
    out
}

fn int(i: i128) -> Value {
    Value::Int(i)
}

fn s(x: &'static str) -> Value {
    Value::str_static(x)
}

fn global(m: &'static str, n: &'static str) -> Value {
    Value::Global(Box::new((Text::from_static(m), Text::from_static(n))))
}

/// Decodes, compares, and checks that our encoder writes the same bytes back.
fn canonical(hex: &str, want: Value) {
    let bytes = h(hex);
    assert_eq!(dec(&bytes), Ok(want.clone()), "decoding {hex}");
    assert_eq!(hex::encode(enc(&want)), hex::encode(&bytes), "encoding {want:?}");
}

// ----- spec examples -----

#[test]
fn register_example() {
    canonical(
        "80 03 28 4b01 89 58 08000000 7265676973746572 58 01000000 31 89 86 74 2e",
        Value::tuple(vec![
            int(1),
            Value::Bool(false),
            s("register"),
            Value::tuple(vec![s("1"), Value::Bool(false)]),
        ]),
    );
}

#[test]
fn heartbeat_example() {
    canonical(
        "80 03 28 4a ffffffff 4b 00 58 06000000 2e7265706c79 4e 74 2e",
        Value::tuple(vec![int(-1), int(0), s(".reply"), Value::None]),
    );
}

// ----- opcodes -----

#[test]
fn proto_versions_0_to_3_and_absent() {
    for p in 0..=3u8 {
        assert_eq!(dec(&[0x80, p, b'N', b'.']), Ok(Value::None));
    }
    assert_eq!(dec(b"N."), Ok(Value::None));
    assert_eq!(dec(b"\x80\x02\x80\x03N."), Ok(Value::None), "PROTO may repeat");
}

#[test]
fn scalars() {
    canonical("8003 4e 2e", Value::None);
    canonical("8003 88 2e", Value::Bool(true));
    canonical("8003 89 2e", Value::Bool(false));
    canonical("8003 4b00 2e", int(0));
    canonical("8003 4bff 2e", int(255));
    canonical("8003 4d0001 2e", int(256));
    canonical("8003 4dffff 2e", int(65535));
    canonical("8003 4a00000100 2e", int(65536));
    canonical("8003 4affffff7f 2e", int(i128::from(i32::MAX)));
    canonical("8003 4a00000080 2e", int(i128::from(i32::MIN)));
    canonical("8003 473ff8000000000000 2e", Value::Float(1.5));
    canonical("8003 478000000000000000 2e", Value::Float(-0.0));
    canonical("8003 477ff8000000000000 2e", Value::Float(f64::NAN));
    canonical("8003 5802000000c3a9 2e", s("é"));
    canonical("8003 5800000000 2e", s(""));
    canonical("8003 430178 2e", Value::bytes(&b"x"[..]));
    canonical("8003 4300 2e", Value::bytes(Bytes::new()));
}

#[test]
fn bininit_forms_python_never_writes_still_decode() {
    // K/M/J are unsigned 8, unsigned 16, signed 32 bits.
    assert_eq!(dec_hex("8003 4d0000 2e"), Ok(int(0)));
    assert_eq!(dec_hex("8003 4a05000000 2e"), Ok(int(5)));
}

#[test]
fn long1_and_long4() {
    canonical("8003 8a050000008000 2e", int(1 << 31));
    canonical("8003 8a05ffffff7fff 2e", int(-(1 << 31) - 1));
    canonical("8003 8a09000000000000008000 2e", int(1 << 63));
    canonical("8003 8a10 00000000000000000000000000000080 2e", int(i128::MIN));
    // 2**127 and -2**127 - 1 are outside i128.
    let two_127 = h("00000000000000000000000000000080 00");
    canonical("8003 8a11 00000000000000000000000000000080 00 2e", Value::BigInt(two_127.into()));
    let m = h("ffffffffffffffffffffffffffffff7f ff");
    canonical("8003 8a11 ffffffffffffffffffffffffffffff7f ff 2e", Value::BigInt(m.into()));
    // Non-canonical forms decode to the same numbers.
    assert_eq!(dec_hex("8003 8a00 2e"), Ok(int(0)));
    assert_eq!(dec_hex("8003 8a01ff 2e"), Ok(int(-1)));
    assert_eq!(dec_hex("8003 8a04 01000000 2e"), Ok(int(1)));
    assert_eq!(dec_hex("8003 8b02000000 0101 2e"), Ok(int(257)));
    // Redundant sign bytes are trimmed, so a BigInt is always minimal.
    let padded = "8003 8a13 00000000000000000000000000000080 000000 2e";
    assert_eq!(dec_hex(padded), Ok(Value::BigInt(two_127_bytes())));
}

fn two_127_bytes() -> Bytes {
    h("00000000000000000000000000000080 00").into()
}

#[test]
fn long4_beyond_255_bytes_round_trips() {
    let mut le = vec![0u8; 300];
    le[299] = 0x40;
    let v = Value::BigInt(le.clone().into());
    let bytes = enc(&v);
    assert_eq!(&bytes[..7], &h("8003 8b 2c010000")[..]);
    assert_eq!(dec(&bytes), Ok(v));
}

#[test]
fn bytes_and_py2_strings() {
    let mut big = h("8003 42 00010000");
    big.extend(std::iter::repeat_n(b'x', 256));
    big.push(b'.');
    let v = Value::bytes(vec![b'x'; 256]);
    assert_eq!(dec(&big), Ok(v.clone()));
    assert_eq!(enc(&v), big);
    assert_eq!(dec_hex("8003 55 02 6869 2e"), Ok(Value::bytes(&b"hi"[..])));
    assert_eq!(dec_hex("8003 54 02000000 6869 2e"), Ok(Value::bytes(&b"hi"[..])));
}

#[test]
fn tuples() {
    canonical("8003 29 2e", Value::tuple(vec![]));
    canonical("8003 4b01 85 2e", Value::tuple(vec![int(1)]));
    canonical("8003 4b01 4b02 86 2e", Value::tuple(vec![int(1), int(2)]));
    canonical("8003 4b01 4b02 4b03 87 2e", Value::tuple(vec![int(1), int(2), int(3)]));
    canonical("8003 28 4b01 4b02 4b03 4b04 74 2e", Value::tuple((1..=4).map(int).collect()));
    assert_eq!(dec_hex("8003 28 74 2e"), Ok(Value::tuple(vec![])));
}

#[test]
fn lists() {
    canonical("8003 5d 2e", Value::list(vec![]));
    canonical("8003 5d 4b01 61 2e", Value::list(vec![int(1)]));
    canonical("8003 5d 28 4b01 4b02 65 2e", Value::list(vec![int(1), int(2)]));
    assert_eq!(dec_hex("8003 28 4b01 4b02 6c 2e"), Ok(Value::list(vec![int(1), int(2)])));
    assert_eq!(dec_hex("8003 5d 28 65 2e"), Ok(Value::list(vec![])));
}

#[test]
fn dicts() {
    canonical("8003 7d 2e", Value::Map(vec![]));
    canonical("8003 7d 4b01 4b02 73 2e", Value::Map(vec![(int(1), int(2))]));
    canonical("8003 7d 28 4b01 4b02 4b03 4b04 75 2e", Value::Map(vec![(int(1), int(2)), (int(3), int(4))]));
    assert_eq!(dec_hex("8003 28 4b01 4e 64 2e"), Ok(Value::Map(vec![(int(1), Value::None)])));
}

#[test]
fn repeated_dict_keys_follow_python() {
    // {1: None, True: 2} == {1: 2} and {1: 1, 1.0: 2} == {1: 2}: first key, last value.
    assert_eq!(dec_hex("8003 7d 28 4b01 4e 88 4b02 75 2e"), Ok(Value::Map(vec![(int(1), int(2))])));
    assert_eq!(
        dec_hex("8003 7d 28 4b01 4b01 47 3ff0000000000000 4b02 75 2e"),
        Ok(Value::Map(vec![(int(1), int(2))]))
    );
    // 2.0**200 == 2**200.
    let mut le = vec![0u8; 26];
    le[25] = 1;
    let mut p = h("8003 7d 28 8a1a");
    p.extend(&le);
    p.extend(h("4b01 47 4c70000000000000 4b02 75 2e"));
    assert_eq!(dec(&p), Ok(Value::Map(vec![(Value::BigInt(le.into()), int(2))])));
    // -0.0 == 0; strings and bytes never equal each other.
    assert_eq!(
        dec_hex("8003 7d 28 4b00 4b01 47 8000000000000000 4b02 75 2e"),
        Ok(Value::Map(vec![(int(0), int(2))]))
    );
    let str_and_bytes = dec_hex("8003 7d 28 5801000000 61 4e 430161 4e 75 2e").expect("ok");
    assert_eq!(str_and_bytes.as_map_len(), 2);
    // Tuple keys compare by their items; a later SETITEM replaces in place.
    assert_eq!(
        dec_hex("8003 7d 28 4b01 4b02 86 4e 4b03 4e 4b01 4b02 86 88 75 2e"),
        Ok(Value::Map(vec![(Value::tuple(vec![int(1), int(2)]), Value::Bool(true)), (int(3), Value::None),]))
    );
}

#[test]
fn nan_keys_never_merge() {
    let nan = "47 7ff8000000000000";
    let two = dec_hex(&format!("8003 7d 28 {nan} 4b01 {nan} 4b02 75 2e")).expect("ok");
    assert_eq!(two.as_map_len(), 2);
    // Python would merge the very same NaN object read back from the memo (its dicts check
    // identity first); scalars have no identity here, so these stay two entries.
    let memo = dec_hex(&format!("8003 7d 28 {nan} 71 00 4b01 68 00 4b02 75 2e")).expect("ok");
    assert_eq!(memo.as_map_len(), 2);
}

#[test]
fn hashable_keys_of_every_kind() {
    let v = dec_hex(
        "8003 7d 28 4e 4b01 89 4b02 63 6d0a 6e0a 4b03 29 4b04 \
         63 6d0a 6e0a 29 52 4b05 8a1100000000000000000000000000000080 00 4b06 75 2e",
    )
    .expect("ok");
    assert_eq!(v.as_map_len(), 6);
}

#[test]
fn memo_is_by_reference() {
    // Python: loads(b'\x80\x03](K\x01]q\x00h\x00e.') == [1, [], []].
    let empty = Value::list(vec![]);
    assert_eq!(
        dec_hex("8003 5d 28 4b01 5d 71 00 68 00 65 2e"),
        Ok(Value::list(vec![int(1), empty.clone(), empty]))
    );
    // A list memoised while empty and read back after it was filled is the filled list, as in
    // the standard (non-fast) pickle of [[1, 2], <the same list>].
    let inner = Value::list(vec![int(1), int(2)]);
    assert_eq!(
        dec_hex("8003 5d 71 00 28 5d 71 01 28 4b01 4b02 65 68 01 65 2e"),
        Ok(Value::list(vec![inner.clone(), inner]))
    );
}

#[test]
fn shared_nodes_are_copied_not_moved() {
    // t = ([b'x'],) memoised and used twice: the list inside is reached twice through t.
    let inner = Value::tuple(vec![Value::list(vec![Value::bytes(&b"x"[..])])]);
    assert_eq!(
        dec_hex("8003 5d 430178 61 85 71 00 30 68 00 68 00 86 2e"),
        Ok(Value::tuple(vec![inner.clone(), inner]))
    );
    // The args tuple of a _recon call memoised and used again after the REDUCE: the state
    // belongs to both the exception and the tuple.
    let mut p = h("8003");
    p.extend(b"cZODB.POSException\n_recon\ncm\nE\n");
    p.extend(h("5d 4b01 61 86 71 00 52 68 00 86 2e"));
    let state = Value::list(vec![int(1)]);
    let exc = Value::Exception(Box::new(ExceptionValue {
        class_path: Text::from_static("m.E"),
        state: state.clone(),
    }));
    assert_eq!(dec(&p), Ok(Value::tuple(vec![exc, Value::tuple(vec![global("m", "E"), state])])));
}

#[test]
fn memo_opcodes() {
    let pair = |x: Value| Ok(Value::tuple(vec![x.clone(), x]));
    assert_eq!(dec_hex("8003 4b07 71 05 68 05 86 2e"), pair(int(7)));
    assert_eq!(dec_hex("8003 4b07 72 05000100 6a 05000100 86 2e"), pair(int(7)));
    assert_eq!(dec(b"\x80\x03K\x07p12\ng12\n\x86."), pair(int(7)));
    // Text and binary indices share one memo.
    assert_eq!(dec(b"\x80\x03K\x07p5\nh\x05\x86."), pair(int(7)));
    // A later PUT to the same index replaces the entry.
    assert_eq!(dec_hex("8003 4b07 71 00 30 4b08 71 00 68 00 86 2e"), pair(int(8)));
}

#[test]
fn text_numbers() {
    assert_eq!(dec(b"I00\n."), Ok(Value::Bool(false)));
    assert_eq!(dec(b"I01\n."), Ok(Value::Bool(true)));
    assert_eq!(dec(b"I42\n."), Ok(int(42)));
    assert_eq!(dec(b"I-7\n."), Ok(int(-7)));
    assert_eq!(dec(b"I0\n."), Ok(int(0)));
    assert_eq!(dec(b"L123L\n."), Ok(int(123)));
    assert_eq!(dec(b"L-123\n."), Ok(int(-123)));
    let max = format!("L{}L\n.", i128::MAX);
    assert_eq!(dec(max.as_bytes()), Ok(int(i128::MAX)));
    let min = format!("I{}\n.", i128::MIN);
    assert_eq!(dec(min.as_bytes()), Ok(int(i128::MIN)));
    // 2**127, one past i128::MAX.
    assert_eq!(dec(b"L170141183460469231731687303715884105728L\n."), Ok(Value::BigInt(two_127_bytes())));
    // -(2**127) - 1.
    assert_eq!(
        dec(b"L-170141183460469231731687303715884105729\n."),
        Ok(Value::BigInt(h("ffffffffffffffffffffffffffffff7f ff").into()))
    );
    // 10**40 = 0x1d6329f1c35ca4bfabb9f5610000000000.
    assert_eq!(
        dec(b"L10000000000000000000000000000000000000000\n."),
        Ok(Value::BigInt(h("0000000000 61f5b9abbfa45cc3f129631d").into()))
    );
    assert_eq!(dec(b"F1.5\n."), Ok(Value::Float(1.5)));
    assert_eq!(dec(b"F-2e3\n."), Ok(Value::Float(-2000.0)));
}

#[test]
fn stack_opcodes() {
    // POP, POP_MARK, DUP.
    assert_eq!(dec_hex("8003 4b01 4b02 30 2e"), Ok(int(1)));
    assert_eq!(dec_hex("8003 4b01 28 4b02 4b03 31 2e"), Ok(int(1)));
    assert_eq!(dec_hex("8003 4b01 32 86 2e"), Ok(Value::tuple(vec![int(1), int(1)])));
    // POP with a mark on top removes the mark, as CPython does.
    assert_eq!(dec_hex("8003 4b01 28 30 2e"), Ok(int(1)));
}

#[test]
fn globals_and_reduce() {
    canonical("8003 63 6275696c74696e730a 7365740a 2e", global("builtins", "set"));
    let call = Value::Reduce(Box::new((global("builtins", "set"), Value::tuple(vec![]))));
    canonical("8003 63 6275696c74696e730a 7365740a 29 52 2e", call);
}

#[test]
fn recon_becomes_an_exception() {
    let mut p = h("8003");
    p.extend(b"cZODB.POSException\n_recon\ncZODB.POSException\nUndoError\n");
    p.extend(h("7d 58 04000000 61726773 4b01 85 73 86 52 2e"));
    let state = Value::Map(vec![(s("args"), Value::tuple(vec![int(1)]))]);
    let want = Value::Exception(Box::new(ExceptionValue {
        class_path: Text::from_static("ZODB.POSException.UndoError"),
        state,
    }));
    assert_eq!(dec(&p), Ok(want.clone()));
    assert_eq!(enc(&want), p);
    // A dotted class name or a non-tuple argument keeps the plain reduce form.
    let mut dotted = h("8003");
    dotted.extend(b"cZODB.POSException\n_recon\ncm\nA.B\n)\x86R.");
    assert!(matches!(dec(&dotted), Ok(Value::Reduce(_))));
    let mut list_args = h("8003");
    list_args.extend(b"cZODB.POSException\n_recon\n]R.");
    assert!(matches!(dec(&list_args), Ok(Value::Reduce(_))));
}

// ----- errors -----

#[test]
fn error_variants() {
    use PickleError as E;
    let cases: Vec<(&[u8], PickleError)> = vec![
        (b"\x80\x03\xff", E::UnknownOpcode { opcode: 0xff, offset: 2 }),
        (b"\x80\x03}b", E::UnsupportedOpcode { opcode: b'b', name: "BUILD", offset: 3 }),
        (b"\x80\x03\x8c\x01a.", E::UnsupportedOpcode { opcode: 0x8c, name: "SHORT_BINUNICODE", offset: 2 }),
        (b"\x80\x04N.", E::UnsupportedProtocol { protocol: 4, offset: 0 }),
        (b"\x80\x05N.", E::UnsupportedProtocol { protocol: 5, offset: 0 }),
        (b"\x80", E::Truncated { offset: 0, needed: 1 }),
        (b"\x80\x03J\x01\x02", E::Truncated { offset: 2, needed: 2 }),
        (b"\x80\x03X\x05\x00\x00\x00ab", E::Truncated { offset: 2, needed: 3 }),
        (b"\x80\x03I12", E::UnterminatedLine { offset: 2 }),
        (b"\x80\x03T\xff\xff\xff\xffab.", E::NegativeLength { offset: 2 }),
        (b"\x80\x03\x8b\xfe\xff\xff\xff.", E::NegativeLength { offset: 2 }),
        (b"\x80\x03Iabc\n.", E::BadNumber { offset: 2 }),
        (b"\x80\x03I0x10\n.", E::BadNumber { offset: 2 }),
        (b"\x80\x03Fxyz\n.", E::BadNumber { offset: 2 }),
        (b"\x80\x03K\x01p-1\n.", E::BadNumber { offset: 4 }),
        (b"\x80\x03X\x01\x00\x00\x00\xff.", E::InvalidUtf8 { offset: 2 }),
        (b"\x80\x03c\xff\nx\n.", E::InvalidUtf8 { offset: 2 }),
        (b"\x80\x03c\nx\n.", E::BadGlobal { offset: 2 }),
        (b"\x80\x03cm\n\n.", E::BadGlobal { offset: 2 }),
        (b"\x80\x03a.", E::StackUnderflow { offset: 2 }),
        (b"\x80\x03K\x01(\x85.", E::StackUnderflow { offset: 5 }),
        (b"\x80\x03K\x01(2.", E::StackUnderflow { offset: 5 }),
        (b"\x80\x03K\x01(q\x00.", E::StackUnderflow { offset: 5 }),
        (b"\x80\x03R.", E::StackUnderflow { offset: 2 }),
        (b"\x80\x03t.", E::MarkMissing { offset: 2 }),
        (b"\x80\x03]e.", E::MarkMissing { offset: 3 }),
        (b"\x80\x031.", E::MarkMissing { offset: 2 }),
        (b"\x80\x03h\x05.", E::MemoMissing { index: 5, offset: 2 }),
        (b"\x80\x03)K\x01a.", E::WrongType { offset: 5, expected: "list", found: "tuple" }),
        (b"\x80\x03]K\x01K\x02s.", E::WrongType { offset: 7, expected: "dict", found: "list" }),
        (b"\x80\x03}(K\x01u.", E::OddSetItems { offset: 6 }),
        (b"\x80\x03(K\x01d.", E::OddSetItems { offset: 5 }),
        (b"\x80\x03}]K\x01s.", E::UnhashableKey { offset: 6, found: "list" }),
        (b"\x80\x03}}K\x01s.", E::UnhashableKey { offset: 6, found: "dict" }),
        (b"\x80\x03}]\x85K\x01s.", E::UnhashableKey { offset: 7, found: "list" }),
        (b"", E::NoStop),
        (b"\x80\x03N", E::NoStop),
        (b"\x80\x03.", E::BadStop { offset: 2, values: 0, marks: 0 }),
        (b"\x80\x03NN.", E::BadStop { offset: 4, values: 2, marks: 0 }),
        (b"\x80\x03(N.", E::BadStop { offset: 4, values: 1, marks: 1 }),
        (b"\x80\x03N.N", E::TrailingBytes { offset: 4 }),
    ];
    for (input, want) in cases {
        assert_eq!(dec(input), Err(want), "input {}", hex::encode(input));
    }
}

#[test]
fn errors_display_their_offset() {
    let e = dec(b"\x80\x03\xff").expect_err("bad opcode");
    assert_eq!(e.to_string(), "unknown pickle opcode 0xff at offset 2");
}

// ----- limits -----

#[test]
fn deep_tuple_chain_fails_while_building() {
    let mut p = b"\x80\x03)".to_vec();
    p.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    p.push(b'.');
    assert_eq!(dec(&p), Err(PickleError::TooDeep { limit: 64 }));
    // Exactly at the limit is fine.
    let mut ok = b"\x80\x03)".to_vec();
    ok.extend(std::iter::repeat_n(0x85u8, 63));
    ok.push(b'.');
    let v = dec(&ok).expect("depth 64");
    assert_eq!(v.depth(), 64);
}

#[test]
fn deep_list_chain_and_cycles_fail() {
    // [[[...]]] built with APPEND: ] ] ] ... a a a.
    let mut p = b"\x80\x03".to_vec();
    p.extend(std::iter::repeat_n(b']', 100_000));
    p.extend(std::iter::repeat_n(b'a', 99_999));
    p.push(b'.');
    assert_eq!(dec(&p), Err(PickleError::TooDeep { limit: 64 }));
    // A list that contains itself: l = []; l.append(l).
    assert_eq!(dec(b"\x80\x03]q\x00h\x00a."), Err(PickleError::TooDeep { limit: 64 }));
    // A dict that contains itself as a value.
    assert_eq!(dec(b"\x80\x03}q\x00K\x01h\x00s."), Err(PickleError::TooDeep { limit: 64 }));
}

#[test]
fn memo_growth_after_sharing_is_caught_on_expansion() {
    // l = []; t = (l,) nested 60 times; then 10 more levels appended inside l: the bound for t
    // was computed while l was empty, the real depth is caught when expanding.
    let mut p = b"\x80\x03]q\x00".to_vec();
    p.extend(std::iter::repeat_n(0x85u8, 60));
    p.extend(b"h\x00");
    for _ in 0..10 {
        p.extend(b"]q\x00a0h\x00");
    }
    p.extend(b"0.");
    assert_eq!(dec(&p), Err(PickleError::TooDeep { limit: 64 }));
}

#[test]
fn memo_bomb_fails_fast() {
    // x0 = []; x(n+1) = (xn,)*10 through the memo: 10**30 nodes from ~200 bytes.
    let mut p = b"\x80\x03]q\x000".to_vec();
    for _ in 0..30 {
        p.push(b'(');
        p.extend(std::iter::repeat_n(*b"h\x00", 10).flatten());
        p.extend(b"tq\x000");
    }
    p.extend(b"h\x00.");
    let limit = p.len() * 16 + 1024;
    // Expanding it would never finish: returning at all shows the budget stops it early.
    assert_eq!(dec(&p), Err(PickleError::TooManyNodes { limit }));
}

#[test]
fn memo_bomb_through_dict_keys_fails_fast() {
    // A 1000-item tuple memoised, then used as the key of 5000 SETITEMs: the key walks are
    // charged to the node budget.
    let mut p = b"\x80\x03(".to_vec();
    p.extend(std::iter::repeat_n(b'N', 1000));
    p.extend(b"tq\x00}(");
    for _ in 0..5000 {
        p.extend(b"h\x00N");
    }
    p.extend(b"u.");
    let limit = p.len() * 16 + 1024;
    assert_eq!(dec(&p), Err(PickleError::TooManyNodes { limit }));
}

#[test]
fn max_nodes_limit_applies() {
    let limits = Limits { max_nodes: 3, ..Limits::default() };
    let p = Bytes::from_static(b"\x80\x03K\x01K\x02\x86.");
    assert!(decode(&p, &limits).is_ok());
    let p = Bytes::from_static(b"\x80\x03K\x01K\x02K\x03\x87.");
    assert_eq!(decode(&p, &limits), Err(PickleError::TooManyNodes { limit: 3 }));
}

#[test]
fn huge_claimed_lengths_fail_without_allocating() {
    let cases: [(&[u8], usize); 4] = [
        (b"\x80\x03B\xff\xff\xff\x7f0123456789", 0x7fff_ffff - 10),
        (b"\x80\x03X\xff\xff\xff\xff0123456789", 0xffff_ffff - 10),
        (b"\x80\x03T\xff\xff\xff\x7f0123456789", 0x7fff_ffff - 10),
        (b"\x80\x03\x8b\xff\xff\xff\x7f0123456789", 0x7fff_ffff - 10),
    ];
    for (input, needed) in cases {
        assert_eq!(dec(input), Err(PickleError::Truncated { offset: 2, needed }));
    }
}

#[test]
fn huge_decimal_is_refused() {
    let mut p = b"\x80\x03L".to_vec();
    p.extend(std::iter::repeat_n(b'9', 4301));
    p.extend(b"\n.");
    assert_eq!(dec(&p), Err(PickleError::BadNumber { offset: 2 }));
    let mut ok = b"\x80\x03L-".to_vec();
    ok.extend(std::iter::repeat_n(b'9', 4300));
    ok.extend(b"\n.");
    let v = dec(&ok).expect("4300 digits");
    assert!(v.check(&Limits::default()).is_ok());
}

// ----- encoder -----

#[test]
fn list_batches_match_the_c_pickler() {
    let nones = |n: usize| Value::list(vec![Value::None; n]);
    let mut want = h("8003 5d 28");
    want.extend([b'N'; 1000]);
    want.extend(b"e.");
    assert_eq!(enc(&nones(1000)), want);
    // 1001 items: the last batch of one still uses MARK … APPENDS.
    let mut want = h("8003 5d 28");
    want.extend([b'N'; 1000]);
    want.extend(b"e(Ne.");
    assert_eq!(enc(&nones(1001)), want);
    let mut want = h("8003 5d 28");
    want.extend([b'N'; 1000]);
    want.extend(b"e(");
    want.extend([b'N'; 1000]);
    want.extend(b"e.");
    assert_eq!(enc(&nones(2000)), want);
    for n in [1000, 1001, 2000] {
        assert_eq!(dec(&enc(&nones(n))), Ok(nones(n)));
    }
}

#[test]
fn dict_batches_match_the_c_pickler() {
    let map = |n: i128| Value::Map((0..n).map(|i| (int(i), Value::None)).collect());
    let body = |range: std::ops::Range<i128>| {
        let mut out = Vec::new();
        for i in range {
            out.extend(&enc(&int(i))[2..enc(&int(i)).len() - 1]);
            out.push(b'N');
        }
        out
    };
    // 1000 entries: a full batch is followed by an empty one.
    let mut want = h("8003 7d 28");
    want.extend(body(0..1000));
    want.extend(b"u(u.");
    assert_eq!(enc(&map(1000)), want);
    assert_eq!(hex::encode(&want[want.len() - 6..]), "034e7528752e");
    // 1001 entries: the last batch of one still uses MARK … SETITEMS.
    let mut want = h("8003 7d 28");
    want.extend(body(0..1000));
    want.extend(b"u(");
    want.extend(body(1000..1001));
    want.extend(b"u.");
    assert_eq!(enc(&map(1001)), want);
    for n in [1000, 1001, 2000] {
        assert_eq!(dec(&enc(&map(n))), Ok(map(n)));
    }
}

#[test]
fn non_minimal_bigint_is_written_minimal() {
    let padded = Value::BigInt(h("0100000000").into());
    assert_eq!(enc(&padded), h("8003 4b01 2e"));
    let neg = Value::BigInt(h("00000000000000000000000000000080 ffff").into());
    assert_eq!(enc(&neg), h("8003 8a10 00000000000000000000000000000080 2e"));
    assert_eq!(enc(&Value::BigInt(Bytes::new())), h("8003 4b00 2e"));
}

#[test]
fn encode_errors_leave_output_untouched() {
    use PickleEncodeError as E;
    let exc = |path: &'static str| {
        Value::Exception(Box::new(ExceptionValue {
            class_path: Text::from_static(path),
            state: Value::tuple(vec![]),
        }))
    };
    let mut deep = Value::None;
    for _ in 0..1002 {
        deep = Value::tuple(vec![deep]);
    }
    let cases = vec![
        (global("a\nb", "c"), E::BadGlobal { module: "a\nb".into(), name: "c".into() }),
        (global("a", ""), E::BadGlobal { module: "a".into(), name: String::new() }),
        (exc("NoDot"), E::BadClassPath("NoDot".into())),
        (exc(".Leading"), E::BadClassPath(".Leading".into())),
        (exc("trailing."), E::BadClassPath("trailing.".into())),
        (exc("a.b\nc.D"), E::BadClassPath("a.b\nc.D".into())),
        (Value::list(vec![int(1), deep]), E::TooDeep { limit: 1000 }),
    ];
    for (value, want) in cases {
        let mut out = b"keep".to_vec();
        assert_eq!(encode(&value, &mut out), Err(want));
        assert_eq!(out, b"keep");
    }
}

#[test]
fn encode_appends() {
    let mut out = b"xy".to_vec();
    encode(&Value::None, &mut out).expect("ok");
    assert_eq!(out, b"xy\x80\x03N.");
}

#[test]
fn int_helpers() {
    assert_eq!(minimal_len(&[]), 0);
    assert_eq!(minimal_len(&[0]), 1);
    assert_eq!(minimal_len(&[0x80, 0xff]), 1);
    assert_eq!(minimal_len(&[0x80, 0x00]), 2);
    assert_eq!(minimal_len(&[0x7f, 0xff]), 2);
    assert_eq!(i128_from_le(&[0xfe]), Some(-2));
    assert_eq!(i128_from_le(&[]), Some(0));
    assert_eq!(i128_from_le(&[0; 17]), None);
}

/// Test-only helper.
trait MapLen {
    fn as_map_len(&self) -> usize;
}

impl MapLen for Value {
    fn as_map_len(&self) -> usize {
        match self {
            Value::Map(m) => m.len(),
            _ => usize::MAX,
        }
    }
}

#[test]
fn seq_kind_is_kept() {
    let v = dec_hex("8003 5d 4b01 61 85 2e").expect("ok");
    assert_eq!(v, Value::Seq(SeqKind::Tuple, vec![Value::Seq(SeqKind::List, vec![int(1)])]));
}
