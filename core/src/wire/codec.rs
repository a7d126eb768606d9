//! One entry point from frame payloads to typed messages and back, for either encoding.

use super::message::{ClientMessage, ServerMessage};
use super::types::TypedError;
use super::value::{Limits, TopLevel, Value};
use super::{msgpack, pickle, Encoding};
use bytes::Bytes;
use thiserror::Error;

/// A frame payload could not be decoded or a message could not be encoded. Decoding errors
/// are the peer's fault: the connection is closed with a log line (§3.7).
#[derive(Debug, Error)]
pub enum CodecError {
    /// Not a valid pickle.
    #[error("pickle: {0}")]
    Pickle(#[from] pickle::PickleError),
    /// Not valid msgpack.
    #[error("msgpack: {0}")]
    Msgpack(#[from] msgpack::MsgpackError),
    /// A value this pickle encoder cannot write.
    #[error("pickle encode: {0}")]
    PickleEncode(#[from] pickle::PickleEncodeError),
    /// A value msgpack cannot carry.
    #[error("msgpack encode: {0}")]
    MsgpackEncode(#[from] msgpack::MsgpackEncodeError),
    /// Decoded, but not a ZEO message of the expected shape.
    #[error("message: {0}")]
    Typed(#[from] TypedError),
}

/// The codec of one connection: its encoding and its decoding limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    /// The encoding chosen by the handshake.
    pub encoding: Encoding,
    /// Limits for decoding untrusted input.
    pub limits: Limits,
}

impl Codec {
    /// A codec with default limits.
    pub fn new(encoding: Encoding) -> Codec {
        Codec { encoding, limits: Limits::default() }
    }

    /// Decodes one frame payload into a [`Value`].
    pub fn decode_value(&self, payload: &Bytes) -> Result<Value, CodecError> {
        Ok(match self.encoding {
            Encoding::Pickle => pickle::decode(payload, &self.limits)?,
            Encoding::Msgpack => msgpack::decode(payload, &self.limits)?,
        })
    }

    /// [`Codec::decode_value`], with a top-level 4-tuple possibly handed over as its items.
    fn decode_top(&self, payload: &Bytes) -> Result<TopLevel, CodecError> {
        Ok(match self.encoding {
            Encoding::Pickle => pickle::decode_top(payload, &self.limits)?,
            Encoding::Msgpack => msgpack::decode_top(payload, &self.limits)?,
        })
    }

    /// Encodes one [`Value`] as a frame payload, appended to `out`.
    pub fn encode_value(&self, value: &Value, out: &mut Vec<u8>) -> Result<(), CodecError> {
        match self.encoding {
            Encoding::Pickle => pickle::encode(value, out)?,
            Encoding::Msgpack => msgpack::encode(value, out)?,
        }
        Ok(())
    }

    /// Server side: decodes a client's frame.
    pub fn decode_client(&self, payload: &Bytes) -> Result<ClientMessage, CodecError> {
        Ok(match self.decode_top(payload)? {
            TopLevel::Four(items) => ClientMessage::from_items(items),
            TopLevel::Other(v) => ClientMessage::from_owned_value(v),
        }?)
    }

    /// Client side: encodes a message to a server.
    pub fn encode_client(&self, msg: &ClientMessage, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.encode_value(&msg.to_value(), out)
    }

    /// Client side: decodes a server's frame.
    pub fn decode_server(&self, payload: &Bytes) -> Result<ServerMessage, CodecError> {
        Ok(match self.decode_top(payload)? {
            TopLevel::Four(items) => ServerMessage::from_items(items),
            TopLevel::Other(v) => ServerMessage::from_owned_value(v),
        }?)
    }

    /// Server side: encodes a message to a client.
    pub fn encode_server(&self, msg: &ServerMessage, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.encode_value(&msg.to_value(), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::arbitrary;
    use crate::wire::message::ServerMessage;
    use crate::wire::reply::Reply;
    use proptest::prelude::*;

    fn client_round_trip(encoding: Encoding, msg: &ClientMessage) -> Result<(), TestCaseError> {
        let codec = Codec::new(encoding);
        let mut out = Vec::new();
        codec.encode_client(msg, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = codec.decode_client(&Bytes::from(out)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, msg);
        Ok(())
    }

    fn server_round_trip(
        encoding: Encoding,
        method: Option<crate::wire::request::Method>,
        msg: &ServerMessage,
    ) -> Result<(), TestCaseError> {
        let codec = Codec::new(encoding);
        let mut out = Vec::new();
        codec.encode_server(msg, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = codec.decode_server(&Bytes::from(out)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match (method, &back, msg) {
            // A reply's raw value may change list to tuple in msgpack (Python cannot tell them
            // apart either); what must survive is the typed result.
            (
                Some(m),
                ServerMessage::Reply { msgid: id_back, result: back_result },
                ServerMessage::Reply { msgid, result },
            ) => {
                prop_assert_eq!(id_back, msgid);
                let typed_back =
                    Reply::from_value(m, back_result).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let typed = Reply::from_value(m, result).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(typed_back, typed);
            }
            _ => prop_assert_eq!(&back, msg),
        }
        Ok(())
    }

    /// `decode_top` says what `decode_value` says: the same value (taken apart or not) or the
    /// same error. Returns whether it took the value apart.
    fn top_agrees(codec: &Codec, data: &[u8]) -> Result<bool, TestCaseError> {
        let payload = Bytes::copy_from_slice(data);
        let whole = codec.decode_value(&payload).map_err(|e| e.to_string());
        match codec.decode_top(&payload) {
            Ok(TopLevel::Four(items)) => {
                prop_assert_eq!(Ok(Value::tuple(items.to_vec())), whole);
                Ok(true)
            }
            Ok(TopLevel::Other(v)) => {
                prop_assert_eq!(Ok(v), whole);
                Ok(false)
            }
            Err(e) => {
                prop_assert_eq!(Err(e.to_string()), whole);
                Ok(false)
            }
        }
    }

    fn damage(data: &mut Vec<u8>, edits: &[(usize, u8, u8)]) {
        for &(at, byte, kind) in edits {
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
    }

    fn limits() -> impl Strategy<Value = Limits> {
        prop_oneof![
            Just(Limits::default()),
            (0u32..5, 0usize..40).prop_map(|(max_depth, max_nodes)| Limits { max_depth, max_nodes }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Every ZEO message comes back from `decode_top` as its four items.
        #[test]
        fn messages_are_taken_apart((_, msg) in arbitrary::server_message(), pickle in any::<bool>()) {
            let codec = Codec::new(if pickle { Encoding::Pickle } else { Encoding::Msgpack });
            let mut out = Vec::new();
            codec.encode_server(&msg, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(top_agrees(&codec, &out)?, "not taken apart");
        }

        /// A call whose arguments do not fit its method keeps them all, exactly as decoded,
        /// even when the arguments before the bad one were taken (e.g. storea's data).
        #[test]
        fn bad_calls_keep_their_arguments(
            method in proptest::sample::select(crate::wire::request::Method::ALL.to_vec()),
            args in proptest::collection::vec(
                prop_oneof![
                    3 => arbitrary::oid().prop_map(crate::wire::types::oid_value),
                    2 => arbitrary::value(),
                    1 => arbitrary::txn_id().prop_map(|t| t.0),
                ],
                0..7,
            ),
            pickle in any::<bool>(),
        ) {
            let codec = Codec::new(if pickle { Encoding::Pickle } else { Encoding::Msgpack });
            let v = Value::tuple(vec![
                Value::Int(3),
                Value::Bool(false),
                Value::str_static(method.name()),
                Value::tuple(args),
            ]);
            let mut out = Vec::new();
            codec.encode_value(&v, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let payload = Bytes::from(out);
            let decoded = codec.decode_value(&payload).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let sent = decoded.as_seq().and_then(|items| items[3].as_seq()).map(<[Value]>::to_vec);
            let msg = codec.decode_client(&payload).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let by_ref = ClientMessage::from_value(&decoded);
            prop_assert_eq!(by_ref.as_ref(), Ok(&msg));
            if let ClientMessage::BadCall { args, .. } = &msg {
                prop_assert_eq!(Some(args), sent.as_ref());
            }
        }

        /// Any 4-tuple or other value, intact or damaged, under any limits.
        #[test]
        fn decode_top_agrees_with_decode_value(
            items in proptest::collection::vec(arbitrary::value(), 3..6),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 0..3),
            limits in limits(),
            pickle in any::<bool>(),
        ) {
            let encoding = if pickle { Encoding::Pickle } else { Encoding::Msgpack };
            let mut data = Vec::new();
            Codec::new(encoding).encode_value(&Value::tuple(items), &mut data).map_err(|e| TestCaseError::fail(e.to_string()))?;
            damage(&mut data, &edits);
            top_agrees(&Codec { encoding, limits }, &data)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn client_messages_round_trip_in_pickle(msg in arbitrary::client_message()) {
            client_round_trip(Encoding::Pickle, &msg)?;
        }

        #[test]
        fn client_messages_round_trip_in_msgpack(msg in arbitrary::client_message()) {
            client_round_trip(Encoding::Msgpack, &msg)?;
        }

        #[test]
        fn server_messages_round_trip_in_pickle((method, msg) in arbitrary::server_message()) {
            server_round_trip(Encoding::Pickle, method, &msg)?;
        }

        #[test]
        fn server_messages_round_trip_in_msgpack((method, msg) in arbitrary::server_message()) {
            server_round_trip(Encoding::Msgpack, method, &msg)?;
        }
    }

    #[test]
    fn decode_top_keeps_the_limits_at_their_edges() {
        // `(1, 2, 3, (4,))`: six nodes, two levels.
        let v = Value::tuple(vec![
            Value::Int(1),
            Value::Int(2),
            Value::Int(3),
            Value::tuple(vec![Value::Int(4)]),
        ]);
        for encoding in [Encoding::Pickle, Encoding::Msgpack] {
            let mut data = Vec::new();
            Codec::new(encoding).encode_value(&v, &mut data).expect("encodes");
            for (max_depth, max_nodes, ok) in [(2, 6, true), (1, 6, false), (2, 5, false), (0, 6, false)] {
                let codec = Codec { encoding, limits: Limits { max_depth, max_nodes } };
                let top = codec.decode_top(&Bytes::from(data.clone()));
                assert_eq!(top.is_ok(), ok, "{encoding:?} depth {max_depth} nodes {max_nodes}");
                if ok {
                    assert!(matches!(top, Ok(TopLevel::Four(_))), "{encoding:?}");
                }
            }
        }
    }

    #[test]
    fn heartbeat_bytes_match_the_protocol_document() {
        // §1.4: the exact heartbeat bytes in both encodings.
        let mut out = Vec::new();
        Codec::new(Encoding::Msgpack).encode_client(&ClientMessage::Heartbeat, &mut out).expect("encodes");
        assert_eq!(out, [0x94, 0xff, 0x00, 0xa6, b'.', b'r', b'e', b'p', b'l', b'y', 0xc0]);
        let mut out = Vec::new();
        Codec::new(Encoding::Pickle).encode_client(&ClientMessage::Heartbeat, &mut out).expect("encodes");
        let mut want = vec![0x80, 0x03, b'(', b'J', 0xff, 0xff, 0xff, 0xff, b'K', 0x00, b'X', 6, 0, 0, 0];
        want.extend_from_slice(b".replyNt.");
        assert_eq!(out, want);
    }

    #[test]
    fn a_client_reply_that_is_not_a_heartbeat_is_refused() {
        let codec = Codec::new(Encoding::Msgpack);
        let v = Value::tuple(vec![Value::Int(5), Value::Int(0), Value::str_static(".reply"), Value::None]);
        let mut out = Vec::new();
        codec.encode_value(&v, &mut out).expect("encodes");
        assert!(matches!(codec.decode_client(&Bytes::from(out)), Err(CodecError::Typed(_))));
    }

    #[test]
    fn wrong_arguments_are_a_bad_call_not_a_decode_error() {
        let codec = Codec::new(Encoding::Pickle);
        // register('1', False, 'credentials'): a ZEO 5 client with credentials (§2.4).
        let v = Value::tuple(vec![
            Value::Int(1),
            Value::Bool(false),
            Value::str_static("register"),
            Value::tuple(vec![Value::str_static("1"), Value::Bool(false), Value::str_static("creds")]),
        ]);
        let mut out = Vec::new();
        codec.encode_value(&v, &mut out).expect("encodes");
        match codec.decode_client(&Bytes::from(out)).expect("decodes") {
            ClientMessage::BadCall {
                is_async: false, error: TypedError::ArgCount { got: 3, .. }, ..
            } => {}
            other => panic!("expected a bad call, got {other:?}"),
        }
    }
}
