//! The raw first frame of each direction and the `ruok` status probe (`zeo-protocol.md` §2).
//!
//! ```text
//! server -> client : b"Z5" (pickle) or b"M5" (msgpack)
//! client -> server : b"Z5" / b"M5" (the encoding of the rest of the connection), or b"ruok"
//! ```
//!
//! Server side: [`server_announcement`], [`parse_client_handshake`], [`encode_ruok_json`].
//! Client side: [`parse_server_announcement`], [`client_reply`], [`parse_ruok_json`].

use super::value::Text;
use super::Encoding;
use std::fmt;

/// The only protocol version ZEO 5.1 – 6.x speak.
const VERSION: &[u8] = b"5";

/// A received handshake frame, kept for error messages: its first bytes and its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Up to the first [`Received::KEPT`] bytes of the frame.
    pub head: Vec<u8>,
    /// The frame's full length.
    pub len: usize,
}

impl Received {
    /// How many bytes of a bad frame an error keeps.
    pub const KEPT: usize = 32;

    fn of(frame: &[u8]) -> Received {
        Received { head: frame[..frame.len().min(Self::KEPT)].to_vec(), len: frame.len() }
    }
}

impl fmt::Display for Received {
    /// Python's bytes-literal style: `b"Z4"`, or `b"…"... (N bytes)` when cut short.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.head.escape_ascii())?;
        if self.len > self.head.len() {
            write!(f, "... ({} bytes)", self.len)?;
        }
        Ok(())
    }
}

/// Handshake and `ruok` errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The client's handshake letter (byte 0) is not `Z` or `M`, or the frame is empty.
    #[error("client handshake {received} names no encoding: byte 0 must be 'Z' or 'M'")]
    ClientLetter {
        /// The frame received.
        received: Received,
    },
    /// The client's handshake asks for a protocol other than `5` (bytes 1…).
    #[error("client handshake {received} asks for an unsupported protocol: bytes 1.. must be \"5\"")]
    ClientVersion {
        /// The frame received.
        received: Received,
    },
    /// The server's announcement letter (byte 0) is not `Z` or `M`, or the frame is empty.
    #[error("server announcement {received} names no encoding: byte 0 must be 'Z' or 'M'")]
    ServerLetter {
        /// The frame received.
        received: Received,
    },
    /// The server's announced protocol (bytes 1…) is older than `5`.
    #[error("server announcement {received} offers no protocol we speak: bytes 1.. sort below \"5\"")]
    ServerVersion {
        /// The frame received.
        received: Received,
    },
    /// A value in a status map that JSON (or Python's `json.dumps`) cannot render.
    #[error("status of storage {storage:?}: {found} at JSON byte {offset} cannot be rendered as JSON")]
    JsonUnsupported {
        /// The storage whose status holds it.
        storage: Text,
        /// Where in the output it would have started.
        offset: usize,
        /// Python's name for its type.
        found: &'static str,
    },
    /// A map key other than a str in a status map.
    #[error("status of storage {storage:?}: {found} key at JSON byte {offset}; keys must be str")]
    JsonKey {
        /// The storage whose status holds it.
        storage: Text,
        /// Where in the output it would have started.
        offset: usize,
        /// Python's name for the key's type.
        found: &'static str,
    },
    /// Malformed `ruok` JSON.
    #[error("bad ruok JSON at byte {offset}: {reason}")]
    JsonSyntax {
        /// Where the problem is.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// `ruok` JSON nested deeper than [`Limits::max_depth`] (the outer object counts).
    #[error("ruok JSON at byte {offset} nests deeper than the limit of {max}")]
    JsonTooDeep {
        /// Where the container that goes too deep starts.
        offset: usize,
        /// The limit.
        max: u32,
    },
    /// `ruok` JSON with more values than [`Limits::max_nodes`] (keys count).
    #[error("ruok JSON at byte {offset} exceeds the limit of {max} values")]
    JsonTooManyNodes {
        /// Where the first value over the limit starts.
        offset: usize,
        /// The limit.
        max: usize,
    },
}

// ---------------------------------------------------------------------------------------------
// Handshake frames
// ---------------------------------------------------------------------------------------------

/// What a client's first frame asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientHello {
    /// `Z5` or `M5`: speak protocol 5 in this encoding from now on.
    Protocol(Encoding),
    /// `ruok`: answer one JSON status frame (§2.3), then close.
    Ruok,
}

/// The server's first frame: `Z5` (pickle, the stock default) or `M5` (msgpack).
pub fn server_announcement(enc: Encoding) -> &'static [u8] {
    match enc {
        Encoding::Pickle => b"Z5",
        Encoding::Msgpack => b"M5",
    }
}

/// Parses a client's first frame the way the Python server does (§2.1): exactly `ruok` is the
/// status probe; otherwise bytes `1..` must be exactly `5` and byte 0 `Z` or `M`, whatever the
/// server announced (the client's letter picks the encoding). `Z4`, `M4`, `Z3101`, `Z55`,
/// `X5` and the empty frame are refused.
pub fn parse_client_handshake(frame: &[u8]) -> Result<ClientHello, HandshakeError> {
    if frame == b"ruok" {
        return Ok(ClientHello::Ruok);
    }
    let Some((&letter, version)) = frame.split_first() else {
        return Err(HandshakeError::ClientLetter { received: Received::of(frame) });
    };
    let Some(enc) = Encoding::from_letter(letter) else {
        return Err(HandshakeError::ClientLetter { received: Received::of(frame) });
    };
    if version != VERSION {
        return Err(HandshakeError::ClientVersion { received: Received::of(frame) });
    }
    Ok(ClientHello::Protocol(enc))
}

/// Parses a server's announcement with the Python client's rule (§2.1): the protocol is
/// `min(frame[1:], b"5")` compared as byte strings and must come out as `5` (so `Z5`, but also
/// a future `Z6` or `Z51`, are accepted as protocol 5; `Z4`, `Z3101` and `Z` are refused), and
/// byte 0 must be `Z` or `M`; it names the encoding to use (answer with [`client_reply`]).
pub fn parse_server_announcement(frame: &[u8]) -> Result<Encoding, HandshakeError> {
    let Some((&letter, version)) = frame.split_first() else {
        return Err(HandshakeError::ServerLetter { received: Received::of(frame) });
    };
    // min(version, b"5") == b"5" exactly when version >= b"5" (slices compare bytewise).
    if version < VERSION {
        return Err(HandshakeError::ServerVersion { received: Received::of(frame) });
    }
    Encoding::from_letter(letter)
        .ok_or_else(|| HandshakeError::ServerLetter { received: Received::of(frame) })
}

/// The client's answer to a server announcement: the server's letter followed by `5`.
pub fn client_reply(enc: Encoding) -> [u8; 2] {
    [enc.letter(), VERSION[0]]
}

mod ruok;
pub use ruok::{encode_ruok_json, parse_ruok_json};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::value::{Limits, Value};
    use proptest::prelude::*;

    fn rendered(v: Value) -> String {
        let out = encode_ruok_json(&[(Text::from("s"), v)]).expect("renderable");
        let s = String::from_utf8(out).expect("ascii");
        s.strip_prefix("{\"s\": ").and_then(|s| s.strip_suffix('}')).expect("wrapper").to_owned()
    }

    #[test]
    fn announcements_and_replies() {
        assert_eq!(server_announcement(Encoding::Pickle), b"Z5");
        assert_eq!(server_announcement(Encoding::Msgpack), b"M5");
        assert_eq!(client_reply(Encoding::Pickle), *b"Z5");
        assert_eq!(client_reply(Encoding::Msgpack), *b"M5");
    }

    #[test]
    fn client_handshakes() {
        assert_eq!(parse_client_handshake(b"Z5"), Ok(ClientHello::Protocol(Encoding::Pickle)));
        assert_eq!(parse_client_handshake(b"M5"), Ok(ClientHello::Protocol(Encoding::Msgpack)));
        assert_eq!(parse_client_handshake(b"ruok"), Ok(ClientHello::Ruok));
    }

    #[test]
    fn client_handshake_refusals() {
        let version = |f: &[u8]| HandshakeError::ClientVersion { received: Received::of(f) };
        let letter = |f: &[u8]| HandshakeError::ClientLetter { received: Received::of(f) };
        for f in [&b"Z4"[..], b"M4", b"Z3101", b"Z309", b"Z55", b"Z", b"M", b"Z6", b"Z5\0", b"Z 5"] {
            assert_eq!(parse_client_handshake(f), Err(version(f)), "{f:?}");
        }
        for f in [&b""[..], b"X5", b"z5", b"m5", b"5", b"RUOK", b"ruok\n", b"ruo"] {
            assert_eq!(parse_client_handshake(f), Err(letter(f)), "{f:?}");
        }
        assert_eq!(
            parse_client_handshake(b"Z4").map_err(|e| e.to_string()),
            Err("client handshake b\"Z4\" asks for an unsupported protocol: \
                 bytes 1.. must be \"5\""
                .into())
        );
        assert_eq!(
            parse_client_handshake(b"").map_err(|e| e.to_string()),
            Err("client handshake b\"\" names no encoding: byte 0 must be 'Z' or 'M'".into())
        );
        let long = vec![b'Q'; 100];
        let e = parse_client_handshake(&long).expect_err("refused").to_string();
        assert!(e.contains("... (100 bytes)"), "{e}");
    }

    #[test]
    fn server_announcements() {
        assert_eq!(parse_server_announcement(b"Z5"), Ok(Encoding::Pickle));
        assert_eq!(parse_server_announcement(b"M5"), Ok(Encoding::Msgpack));
        // Python's min(frame[1:], b"5") == b"5" accepts anything sorting at or after "5".
        assert_eq!(parse_server_announcement(b"Z6"), Ok(Encoding::Pickle));
        assert_eq!(parse_server_announcement(b"M51"), Ok(Encoding::Msgpack));
        for f in [&b"Z4"[..], b"M4", b"Z3101", b"Z", b"Z\xff"[..1].as_ref(), b"Z0"] {
            assert_eq!(
                parse_server_announcement(f),
                Err(HandshakeError::ServerVersion { received: Received::of(f) }),
                "{f:?}"
            );
        }
        for f in [&b""[..], b"X5", b"z5", b"ruok"] {
            assert_eq!(
                parse_server_announcement(f),
                Err(HandshakeError::ServerLetter { received: Received::of(f) }),
                "{f:?}"
            );
        }
    }

    #[test]
    fn floats_render_like_python_repr() {
        // Expected strings from CPython 3's json.dumps.
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (100.0, "100.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1234567890123456.0, "1234567890123456.0"),
            (12345678901234567.0, "1.2345678901234568e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (9007199254740992.0, "9007199254740992.0"),
            (1.152921504606847e18, "1.152921504606847e+18"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-1.23e-18, "-1.23e-18"),
            (1e22, "1e+22"),
            (1e100, "1e+100"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (2.2250738585072014e-308, "2.2250738585072014e-308"),
            (1795614642.6496701, "1795614642.6496701"),
            (1795614642.6472907, "1795614642.6472907"),
            (123.456, "123.456"),
            (1.0 / 3.0, "0.3333333333333333"),
            // Exact ties between two shortest candidates go to the even digit, like dtoa:
            // -29978731757228.8125, 1190791592585888.25, -884465664838799.25 exactly.
            (f64::from_bits(0xc2bb_43f7_a83e_acd0), "-29978731757228.812"),
            (f64::from_bits(0x4310_ec13_1782_aa81), "1190791592585888.2"),
            (f64::from_bits(0xc309_2355_ae26_647a), "-884465664838799.2"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for &(f, want) in cases {
            assert_eq!(rendered(Value::Float(f)), want, "{f:e}");
        }
    }

    #[test]
    fn strings_render_ascii_only() {
        let s = "é\u{7f}\u{0}\u{1f}\"\\/\u{8}\u{c}\n\r\t😀\u{2028}";
        assert_eq!(
            rendered(Value::Str(s.into())),
            r#""\u00e9\u007f\u0000\u001f\"\\/\b\f\n\r\t\ud83d\ude00\u2028""#
        );
    }

    #[test]
    fn containers_render_with_python_separators() {
        let v = Value::Map(vec![
            (Value::str_static("a"), Value::tuple(vec![Value::Int(1), Value::None, Value::Bool(true)])),
            (Value::str_static("b"), Value::Map(vec![])),
            (Value::str_static("c"), Value::list(vec![])),
            (Value::str_static("d"), Value::Int(-(1 << 70))),
        ]);
        assert_eq!(rendered(v), r#"{"a": [1, null, true], "b": {}, "c": [], "d": -1180591620717411303424}"#);
        let two =
            encode_ruok_json(&[(Text::from("1"), Value::Map(vec![])), (Text::from("2"), Value::Bool(false))]);
        assert_eq!(two.as_deref(), Ok(&br#"{"1": {}, "2": false}"#[..]));
        assert_eq!(encode_ruok_json(&[]).as_deref(), Ok(&b"{}"[..]));
    }

    #[test]
    fn unrenderable_values() {
        let storage = Text::from("1");
        let bytes = Value::Map(vec![(Value::str_static("k"), Value::bytes(&b"x"[..]))]);
        assert_eq!(
            encode_ruok_json(&[(storage.clone(), bytes)]),
            Err(HandshakeError::JsonUnsupported { storage: storage.clone(), offset: 12, found: "bytes" })
        );
        let key = Value::Map(vec![(Value::Int(1), Value::None)]);
        assert_eq!(
            encode_ruok_json(&[(storage.clone(), key)]),
            Err(HandshakeError::JsonKey { storage, offset: 7, found: "int" })
        );
    }

    fn parse(s: &str) -> Result<Vec<(Text, Value)>, HandshakeError> {
        parse_ruok_json(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn parses_json() {
        let got = parse(
            r#" {"1": {"a": [1, -0, 2.5, -1e3, 1E+2, null, true, false, NaN, Infinity, -Infinity],
                 "s": "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00é", "e": {}, "l": [],
                 "big": -170141183460469231731687303715884105728}} "#,
        )
        .expect("valid");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.as_str(), "1");
        let want = Value::Map(vec![
            (
                Value::str_static("a"),
                Value::list(vec![
                    Value::Int(1),
                    Value::Int(0),
                    Value::Float(2.5),
                    Value::Float(-1000.0),
                    Value::Float(100.0),
                    Value::None,
                    Value::Bool(true),
                    Value::Bool(false),
                    Value::Float(f64::NAN),
                    Value::Float(f64::INFINITY),
                    Value::Float(f64::NEG_INFINITY),
                ]),
            ),
            (Value::str_static("s"), Value::str_static("x\"\\/\u{8}\u{c}\n\r\té😀é")),
            (Value::str_static("e"), Value::Map(vec![])),
            (Value::str_static("l"), Value::list(vec![])),
            (Value::str_static("big"), Value::Int(i128::MIN)),
        ]);
        assert_eq!(got[0].1, want);
    }

    #[test]
    fn json_errors() {
        let syntax = |s: &str| match parse(s) {
            Err(HandshakeError::JsonSyntax { offset, reason }) => (offset, reason),
            other => panic!("{s:?} gave {other:?}"),
        };
        assert_eq!(syntax(""), (0, "the top level must be an object"));
        assert_eq!(syntax("[1]"), (0, "the top level must be an object"));
        assert_eq!(syntax("{"), (1, "expected a string key"));
        assert_eq!(syntax("{\"a\" 1}"), (5, "expected ':'"));
        assert_eq!(syntax("{\"a\": }"), (6, "expected a value"));
        assert_eq!(syntax("{\"a\": 1,}"), (8, "expected a string key"));
        assert_eq!(syntax("{\"a\": [1 2]}"), (9, "expected ',' or ']'"));
        assert_eq!(syntax("{\"a\": 1} x"), (9, "unexpected data after the JSON value"));
        assert_eq!(syntax("{\"a\": 01}"), (7, "expected ',' or '}'"));
        assert_eq!(syntax("{\"a\": 1.}"), (7, "expected ',' or '}'"));
        assert_eq!(syntax("{\"a\": 1e}"), (7, "expected ',' or '}'"));
        assert_eq!(syntax("{\"a\": -}"), (6, "expected a value"));
        assert_eq!(syntax("{\"a\": tru}"), (6, "expected a value"));
        assert_eq!(syntax("{\"a\": \"x"), (8, "unterminated string"));
        assert_eq!(syntax("{\"a\": \"\n\"}"), (7, "control character in a string"));
        assert_eq!(syntax("{\"a\": \"\\x\"}"), (8, "invalid escape"));
        assert_eq!(syntax("{\"a\": \"\\u12\"}"), (11, "expected 4 hex digits after \\u"));
        assert_eq!(syntax("{\"a\": \"\\ud800\"}"), (7, "lone surrogate"));
        assert_eq!(syntax("{\"a\": \"\\ud800\\u0041\"}"), (7, "lone surrogate"));
        assert_eq!(syntax("{\"a\": \"\\udc00\"}"), (7, "lone surrogate"));
        assert_eq!(
            syntax("{\"a\": 170141183460469231731687303715884105728}"),
            (6, "integer outside the supported range")
        );
        assert_eq!(
            parse_ruok_json(b"{\"a\": \"\xff\"}", &Limits::default()),
            Err(HandshakeError::JsonSyntax { offset: 7, reason: "invalid UTF-8 in a string" })
        );
    }

    #[test]
    fn json_limits() {
        let limits = Limits { max_depth: 3, max_nodes: 100 };
        assert!(parse_ruok_json(b"{\"a\": [[]]}", &limits).is_ok());
        assert_eq!(
            parse_ruok_json(b"{\"a\": [[[]]]}", &limits),
            Err(HandshakeError::JsonTooDeep { offset: 8, max: 3 })
        );
        let deep = format!("{{\"a\": {}", "[".repeat(1_000_000));
        assert!(matches!(
            parse_ruok_json(deep.as_bytes(), &Limits::default()),
            Err(HandshakeError::JsonTooDeep { .. })
        ));
        let few = Limits { max_depth: 10, max_nodes: 4 };
        assert!(parse_ruok_json(b"{\"a\": [1]}", &few).is_ok());
        assert_eq!(
            parse_ruok_json(b"{\"a\": [1, 2]}", &few),
            Err(HandshakeError::JsonTooManyNodes { offset: 10, max: 4 })
        );
        assert_eq!(
            parse_ruok_json(b"{\"a\": 1, \"b\": 2}", &few),
            Err(HandshakeError::JsonTooManyNodes { offset: 14, max: 4 })
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| Value::Int(i.into())),
            // The parser gives every NaN the same bits; generate only that one.
            any::<f64>().prop_map(|f| Value::Float(if f.is_nan() { f64::NAN } else { f })),
            ".{0,6}".prop_map(|s| Value::Str(s.into())),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::list),
                proptest::collection::vec((".{0,4}".prop_map(|s| Value::Str(s.into())), inner), 0..4)
                    .prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_client_handshake(&raw);
            let _ = parse_server_announcement(&raw);
            let limits = Limits { max_depth: 5, max_nodes: 50 };
            if let Ok(entries) = parse_ruok_json(&raw, &limits) {
                for (_, v) in entries {
                    prop_assert_eq!(v.check(&limits), Ok(()));
                }
            }
        }

        #[test]
        fn json_shaped_text_never_panics(raw in "[{}\\[\\]\",:0-9.eE+\\-a-z\\\\ ]{0,40}") {
            let _ = parse_ruok_json(raw.as_bytes(), &Limits { max_depth: 5, max_nodes: 50 });
        }

        #[test]
        fn render_then_parse_round_trips(v in json_value()) {
            let storages = vec![(Text::from("1"), v)];
            let json = encode_ruok_json(&storages).expect("renderable");
            let back = parse_ruok_json(&json, &Limits::default()).expect("parses");
            prop_assert_eq!(encode_ruok_json(&back).expect("renderable"), json);
            // Python's float repr round-trips exactly, so the values come back bit for bit.
            prop_assert_eq!(back, storages);
        }
    }
}
