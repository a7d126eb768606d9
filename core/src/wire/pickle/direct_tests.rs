//! The memo-free fast path agrees with the general decoder: whenever it returns a value, the
//! general decoder returns the same value; and it does return one for everything ZEO sends.

use super::decode::{budget, decode_general};
use super::{direct, encode, PickleError};
use crate::wire::value::{ExceptionValue, Limits, Text, Value};
use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;

fn enc(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(v, &mut out).expect("generated values encode");
    out
}

/// Runs both paths; fails if the fast path returns a value the general decoder does not.
/// Returns whether the fast path returned one.
fn agree(data: &[u8], limits: &Limits) -> Result<bool, TestCaseError> {
    let payload = Bytes::copy_from_slice(data);
    let fast = direct::decode(&payload, limits, budget(&payload, limits));
    let general = decode_general(&payload, limits);
    if let Some(v) = &fast {
        prop_assert_eq!(Ok(v), general.as_ref(), "fast path disagrees on {}", hex::encode(data));
    }
    Ok(fast.is_some())
}

fn agree_default(data: &[u8]) -> Result<bool, TestCaseError> {
    agree(data, &Limits::default())
}

// ----- strategies -----

fn text() -> impl Strategy<Value = Text> {
    prop_oneof!["[a-z._]{0,6}".prop_map(Text::from), any::<String>().prop_map(Text::from)]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        (-300i128..300).prop_map(Value::Int),
        any::<i128>().prop_map(Value::Int),
        Just(Value::BigInt(Bytes::from(vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0]))),
        any::<f64>().prop_map(Value::Float),
        vec(any::<u8>(), 0..12).prop_map(|b| Value::Bytes(b.into())),
        text().prop_map(Value::Str),
        ("[a-z]{1,4}", "[a-z.]{1,4}")
            .prop_map(|(m, n)| Value::Global(Box::new((Text::from(m), Text::from(n))))),
    ]
}

/// Dict keys: the kinds the fast path compares itself (often equal to each other, to exercise
/// repeated keys), and kinds it leaves to the general decoder.
fn key() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            (-2i128..3).prop_map(Value::Int),
            prop_oneof![Just("a"), Just("b")].prop_map(Value::str_static),
            prop_oneof![Just(&b"a"[..]), Just(&b"b"[..])].prop_map(|b| Value::Bytes(Bytes::from_static(b))),
        ],
        1 => prop_oneof![
            (-2i32..3).prop_map(|i| Value::Float(f64::from(i))),
            Just(Value::Float(f64::NAN)),
            vec(Just(Value::Int(1)), 0..3).prop_map(Value::tuple),
        ],
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::tuple),
            vec(inner.clone(), 0..8).prop_map(Value::list),
            vec((key(), inner.clone()), 0..6).prop_map(Value::Map),
            ("[a-z]{1,4}\\.[A-Z][a-z]{0,4}", inner.clone()).prop_map(|(c, state)| {
                Value::Exception(Box::new(ExceptionValue { class_path: Text::from(c), state }))
            }),
            (inner.clone(), inner.clone()).prop_map(|(f, a)| Value::Reduce(Box::new((f, a)))),
            // What `_recon` calls decode to depends on the class name (a dotted one is no
            // exception) and on the shape of the arguments.
            ("[a-z]{1,3}", "[A-Z.]{1,3}", vec(inner, 1..3)).prop_map(|(m, n, mut args)| {
                let recon = Text::from_static("_recon");
                let callable = Value::Global(Box::new((Text::from_static("ZODB.POSException"), recon)));
                args[0] = Value::Global(Box::new((Text::from(m), Text::from(n))));
                Value::Reduce(Box::new((callable, Value::tuple(args))))
            }),
        ]
    })
}

/// Whether every dict in `v` has only keys the fast path compares, so it must not give up.
fn fast_path_handles(v: &Value) -> bool {
    match v {
        Value::Seq(_, items) => items.iter().all(fast_path_handles),
        Value::Map(entries) => {
            entries.len() <= direct::MAX_DIRECT_MAP
                && entries.iter().all(|(k, v)| {
                    matches!(
                        k,
                        Value::None | Value::Bool(_) | Value::Int(_) | Value::Bytes(_) | Value::Str(_)
                    ) && fast_path_handles(v)
                })
        }
        Value::Exception(e) => fast_path_handles(&e.state),
        Value::Reduce(r) => fast_path_handles(&r.0) && fast_path_handles(&r.1),
        _ => true,
    }
}

/// One opcode with a plausible argument; no memo opcodes (those always go to the general
/// decoder), but `DUP`, which does too.
fn token() -> impl Strategy<Value = Vec<u8>> {
    let push: Vec<&'static [u8]> = vec![
        b"N",
        b")",
        b"]",
        b"}",
        b"\x88",
        b"\x89",
        b"cm\nn\n",
        b"cm\nn.x\n",
        b"cZODB.POSException\n_recon\n",
        b"G\x7f\xf8\x00\x00\x00\x00\x00\x00",
        b"G?\xf0\x00\x00\x00\x00\x00\x00",
        b"C\x01x",
        b"X\x01\x00\x00\x00x",
        b"\x8a\x11\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x00",
        b"I01\n",
        b"L12L\n",
        b"F1.0\n",
    ];
    let consume: Vec<&'static [u8]> = vec![
        b"(", b"a", b"e", b"s", b"u", b"t", b"l", b"d", b"\x85", b"\x86", b"\x87", b"0", b"1", b"2", b"R",
    ];
    // A container or a mark right before a mark: what the stack opcodes must not reach across.
    let nested: Vec<&'static [u8]> = vec![b"](", b"}(", b"((", b"]N(", b"}NN(", b"(N(", b"cm\nn\n("];
    prop_oneof![
        6 => proptest::sample::select(push).prop_map(<[u8]>::to_vec),
        2 => (0u8..4).prop_map(|b| vec![b'K', b]),
        6 => proptest::sample::select(consume).prop_map(<[u8]>::to_vec),
        2 => proptest::sample::select(nested).prop_map(<[u8]>::to_vec),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ]
}

fn small_limits() -> impl Strategy<Value = Limits> {
    (0u32..8, 0usize..80).prop_map(|(max_depth, max_nodes)| Limits { max_depth, max_nodes })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Every memo-free pickle our encoder writes (as ZEO peers write them) takes the fast path
    /// unless a dict needs the general one, and both paths give the same value.
    #[test]
    fn encoded_values_agree(v in value()) {
        let data = enc(&v);
        let fast = agree_default(&data)?;
        prop_assert_eq!(fast, fast_path_handles(&v), "fast path coverage for {:?}", v);
    }

    /// Under tight limits, the fast path never accepts what the general decoder refuses.
    #[test]
    fn encoded_values_agree_under_limits(v in value(), limits in small_limits()) {
        agree(&enc(&v), &limits)?;
    }

    #[test]
    fn random_opcode_sequences_agree(
        tokens in vec(token(), 0..40),
        wrap in 0usize..4,
        limits in prop_oneof![Just(Limits::default()), small_limits()],
    ) {
        let mut data = b"\x80\x03".to_vec();
        data.extend(b"(".repeat(wrap));
        data.extend(tokens.concat());
        if wrap > 0 {
            data.extend(b"t".repeat(wrap));
            data.push(b'.');
        }
        agree(&data, &limits)?;
    }

    #[test]
    fn damaged_encodings_agree(
        v in value(),
        edits in vec((any::<usize>(), any::<u8>(), 0u8..4), 1..4),
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
        agree_default(&data)?;
    }

    #[test]
    fn random_bytes_agree(data in vec(any::<u8>(), 0..64)) {
        agree_default(&data)?;
    }
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).expect("test hex")
}

#[test]
fn memo_pickles_go_to_the_general_decoder() {
    // [x] memoised, then read back: ([x], [x]) sharing one list.
    let data = Bytes::from(h("8003 5d 71 00 4b 01 61 68 00 86 2e"));
    assert_eq!(direct::decode(&data, &Limits::default(), budget(&data, &Limits::default())), None);
    let one = Value::list(vec![Value::Int(1)]);
    assert_eq!(super::decode(&data, &Limits::default()), Ok(Value::tuple(vec![one.clone(), one])));
}

#[test]
fn the_fast_path_keeps_the_limits() {
    // 64 nested empty tuples is the default limit; 65 is one too many.
    let nested = |n: usize| {
        let mut v = b"\x80\x03)".to_vec();
        v.extend(b"\x85".repeat(n - 1));
        v.push(b'.');
        Bytes::from(v)
    };
    let limits = Limits::default();
    assert!(direct::decode(&nested(64), &limits, budget(&nested(64), &limits)).is_some());
    assert_eq!(direct::decode(&nested(65), &limits, budget(&nested(65), &limits)), None);
    assert_eq!(super::decode(&nested(65), &limits), Err(PickleError::TooDeep { limit: 64 }));
    // The node budget: three nodes in ((),) plus the tuple… with a budget of 2.
    let tight = Limits { max_depth: 64, max_nodes: 2 };
    let data = Bytes::from(h("8003 29 29 86 2e"));
    assert_eq!(direct::decode(&data, &tight, budget(&data, &tight)), None);
    assert!(matches!(super::decode(&data, &tight), Err(PickleError::TooManyNodes { .. })));
    // A claimed 2^31-byte string fails without allocating, on both paths.
    let data = Bytes::from(h("8003 42 ffffff7f 2e"));
    assert_eq!(direct::decode(&data, &limits, budget(&data, &limits)), None);
    assert!(matches!(super::decode(&data, &limits), Err(PickleError::Truncated { .. })));
}

#[test]
fn every_recorded_pickle_frame_takes_the_fast_path() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("vectors");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).expect("tests/vectors exists") {
        let path = entry.expect("dir entry").path();
        if !path.to_string_lossy().ends_with(".pickle.jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&path).expect("readable").lines() {
            let rec: serde_json::Value = serde_json::from_str(line).expect("JSON line");
            if rec["kind"] != "frame" || rec["encoding"] != "pickle" {
                continue;
            }
            let data = Bytes::from(h(rec["hex"].as_str().expect("hex")));
            let limits = Limits::default();
            let fast = direct::decode(&data, &limits, budget(&data, &limits));
            assert!(fast.is_some(), "{}: {}", path.display(), rec["repr"]);
            assert_eq!(fast.as_ref(), decode_general(&data, &limits).as_ref().ok());
            checked += 1;
        }
    }
    assert!(checked > 400, "only {checked} recorded pickle frames");
}

/// Every sequence of up to four opcodes from a small alphabet, and of five from a smaller one,
/// bare or inside a `MARK … TUPLE`: the fast path never accepts what the general decoder
/// refuses, nor builds anything else. (Random sequences rarely hit the one order that matters,
/// e.g. `] ( N a`.)
#[test]
fn all_short_opcode_sequences_agree() {
    const TOKENS: [&[u8]; 20] = [
        b"(", b")", b"]", b"}", b"N", b"K\x01", b"cm\nn\n", b"a", b"e", b"s", b"u", b"t", b"l", b"d",
        b"\x85", b"\x86", b"0", b"1", b"2", b"R",
    ];
    const FEW: [&[u8]; 11] = [b"(", b"]", b"}", b"N", b"a", b"e", b"s", b"u", b"t", b"0", b"R"];
    let limits = Limits::default();
    let mut accepted = 0;
    let mut seq = Vec::new();
    for (alphabet, len) in [(&TOKENS[..], 0..=4u32), (&FEW[..], 5..=5)] {
        for len in len {
            for mut n in 0..alphabet.len().pow(len) {
                seq.clear();
                for _ in 0..len {
                    seq.extend_from_slice(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                for wrap in [false, true] {
                    let mut data = b"\x80\x03".to_vec();
                    if wrap {
                        data.push(b'(');
                    }
                    data.extend_from_slice(&seq);
                    if wrap {
                        data.push(b't');
                    }
                    data.push(b'.');
                    let payload = Bytes::from(data);
                    let fast = direct::decode(&payload, &limits, budget(&payload, &limits));
                    if let Some(v) = fast {
                        assert_eq!(Ok(v), decode_general(&payload, &limits), "{}", hex::encode(&payload));
                        accepted += 1;
                    }
                }
            }
        }
    }
    assert!(accepted > 5_000, "only {accepted} sequences decoded");
}
