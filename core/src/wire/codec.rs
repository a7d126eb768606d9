//! One entry point from frame payloads to typed messages and back, for either encoding.

use super::message::{ClientMessage, ServerMessage};
use super::types::TypedError;
use super::value::{Limits, Value};
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
        Ok(ClientMessage::from_owned_value(self.decode_value(payload)?)?)
    }

    /// Client side: encodes a message to a server.
    pub fn encode_client(&self, msg: &ClientMessage, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.encode_value(&msg.to_value(), out)
    }

    /// Client side: decodes a server's frame.
    pub fn decode_server(&self, payload: &Bytes) -> Result<ServerMessage, CodecError> {
        Ok(ServerMessage::from_owned_value(self.decode_value(payload)?)?)
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
