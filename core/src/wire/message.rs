//! The message layer (§3.1): every frame after the handshake is `(msgid, flag, name, args)`.
//!
//! [`ClientMessage`] is what a client sends (decoded by a server, encoded by zeoraid's backend
//! client); [`ServerMessage`] is what a server sends (encoded by zeoraid's front, decoded by
//! its backend client). Both convert to and from [`Value`] losslessly for everything a stock
//! peer sends: the msgid is echoed verbatim, tuples stay tuples.

use super::error::ZeoError;
use super::push::Push;
use super::reply::Reply;
use super::request::{Method, Request};
use super::types::{field_err, TypedError};
use super::value::{Text, Value};
use crate::ids::{Oid, Tid};

/// The name every reply carries.
pub const REPLY: &str = ".reply";

/// A message id: an int counter for ordinary calls, the `(oid, tid)` tuple for `loadBefore`,
/// and whatever else a peer chooses (str, nil, big ints). Kept verbatim so that the reply
/// echoes exactly what was sent (§3.1).
#[derive(Debug, Clone, PartialEq)]
pub struct MsgId(pub Value);

impl MsgId {
    /// An int msgid.
    pub fn int(n: i64) -> MsgId {
        MsgId(Value::Int(i128::from(n)))
    }

    /// The `(oid, tid)` msgid the Python client uses for `loadBefore`.
    pub fn load_before(oid: Oid, before: Tid) -> MsgId {
        MsgId(Value::tuple(vec![super::types::oid_value(oid), super::types::tid_value(before)]))
    }

    /// The msgid as an int, if it is one.
    #[inline]
    pub fn as_int(&self) -> Option<i128> {
        match self.0 {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// Whether this is the heartbeat msgid `-1`, which a server silently drops (§1.4).
    #[inline]
    pub fn is_heartbeat(&self) -> bool {
        self.as_int() == Some(-1)
    }
}

/// A message from a client to a server.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// A synchronous call (falsy flag): the server must reply with the same msgid.
    Call {
        /// Echoed in the reply.
        msgid: MsgId,
        /// The call.
        request: Request,
    },
    /// An asynchronous call (truthy flag): no reply; an error closes the connection.
    Async {
        /// The msgid as sent (the Python client sends 0).
        msgid: MsgId,
        /// The call.
        request: Request,
    },
    /// The keep-alive `(-1, 0, ".reply", None)`, or any message with msgid -1: dropped.
    Heartbeat,
    /// A call to a registered method with arguments that do not fit it. A server answers a
    /// synchronous one with `TypeError` and closes the connection for an asynchronous one.
    BadCall {
        /// The msgid, to answer with.
        msgid: MsgId,
        /// Whether the flag asked for an async call.
        is_async: bool,
        /// The method name.
        name: Text,
        /// The arguments as sent.
        args: Vec<Value>,
        /// What was wrong.
        error: TypedError,
    },
}

/// A message from a server to a client.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// A successful reply: the bare result, typed by the caller with [`Reply::from_value`].
    Reply {
        /// The call's msgid, echoed.
        msgid: MsgId,
        /// The result.
        result: Value,
    },
    /// An error reply (flag 2).
    Error {
        /// The call's msgid, echoed.
        msgid: MsgId,
        /// The error.
        error: ZeoError,
    },
    /// A push (callback).
    Push(Push),
}

impl ServerMessage {
    /// A successful reply carrying a typed result.
    pub fn reply(msgid: MsgId, reply: &Reply) -> ServerMessage {
        ServerMessage::Reply { msgid, result: reply.to_value() }
    }
}

/// The items of the `(msgid, flag, name, args)` envelope, moved out of it.
fn envelope(v: Value) -> Result<[Value; 4], TypedError> {
    let not_4_tuple = TypedError::Envelope("not a 4-tuple");
    let Value::Seq(_, items) = v else { return Err(not_4_tuple) };
    <[Value; 4]>::try_from(items).map_err(|_| not_4_tuple)
}

/// The envelope's parts, checking that the name is a str.
fn parts([msgid, flag, name, args]: [Value; 4]) -> Result<(Value, Value, Text, Value), TypedError> {
    match name {
        Value::Str(name) => Ok((msgid, flag, name, args)),
        _ => Err(TypedError::Envelope("name is not a str")),
    }
}

impl ClientMessage {
    /// Types a decoded client frame.
    ///
    /// Errors (the connection should be closed, §3.7) for a malformed envelope, a non-sequence
    /// argument list, or a `.reply` from a client that is not the heartbeat.
    pub fn from_value(v: &Value) -> Result<ClientMessage, TypedError> {
        ClientMessage::from_owned_value(v.clone())
    }

    /// [`ClientMessage::from_value`], taking the value apart instead of copying from it.
    pub fn from_owned_value(v: Value) -> Result<ClientMessage, TypedError> {
        ClientMessage::from_items(envelope(v)?)
    }

    /// [`ClientMessage::from_owned_value`] of the 4-tuple holding `items`.
    pub(crate) fn from_items(items: [Value; 4]) -> Result<ClientMessage, TypedError> {
        let (msgid, flag, name, args) = parts(items)?;
        let msgid = MsgId(msgid);
        if msgid.is_heartbeat() {
            return Ok(ClientMessage::Heartbeat);
        }
        if name == REPLY {
            return Err(TypedError::Envelope("a client sent a .reply"));
        }
        let mut args = match args {
            Value::Seq(_, items) => items,
            other => return Err(field_err("message args", "a tuple", &other)),
        };
        let is_async = flag.is_truthy();
        let request = match Method::from_wire_name(name.as_bytes()) {
            Some(method) => match Request::from_owned_args(method, &mut args) {
                Ok(request) => request,
                Err(error) => return Ok(ClientMessage::BadCall { msgid, is_async, name, args, error }),
            },
            None => Request::Unknown { name, args },
        };
        Ok(if is_async {
            ClientMessage::Async { msgid, request }
        } else {
            ClientMessage::Call { msgid, request }
        })
    }

    /// The 4-tuple, as the Python client writes it (bool flags).
    pub fn to_value(&self) -> Value {
        match self {
            ClientMessage::Call { msgid, request } => {
                call_value(msgid, false, request.name(), request.to_args())
            }
            ClientMessage::Async { msgid, request } => {
                call_value(msgid, true, request.name(), request.to_args())
            }
            ClientMessage::Heartbeat => {
                Value::tuple(vec![Value::Int(-1), Value::Int(0), Value::str_static(REPLY), Value::None])
            }
            ClientMessage::BadCall { msgid, is_async, name, args, .. } => {
                call_value(msgid, *is_async, name.clone(), args.clone())
            }
        }
    }
}

fn call_value(msgid: &MsgId, is_async: bool, name: Text, args: Vec<Value>) -> Value {
    Value::tuple(vec![msgid.0.clone(), Value::Bool(is_async), Value::Str(name), Value::tuple(args)])
}

impl ServerMessage {
    /// Types a decoded server frame.
    pub fn from_value(v: &Value) -> Result<ServerMessage, TypedError> {
        ServerMessage::from_owned_value(v.clone())
    }

    /// [`ServerMessage::from_value`], taking the value apart instead of copying from it.
    pub fn from_owned_value(v: Value) -> Result<ServerMessage, TypedError> {
        ServerMessage::from_items(envelope(v)?)
    }

    /// [`ServerMessage::from_owned_value`] of the 4-tuple holding `items`.
    pub(crate) fn from_items(items: [Value; 4]) -> Result<ServerMessage, TypedError> {
        let (msgid, flag, name, payload) = parts(items)?;
        let msgid = MsgId(msgid);
        if name == REPLY {
            if !flag.is_truthy() {
                return Ok(ServerMessage::Reply { msgid, result: payload });
            }
            let error = match payload.as_seq() {
                Some([Value::Str(class_path), p]) => ZeoError::from_reply(class_path, p),
                // ZEO 4 style or garbage: keep it, typed as an unknown error.
                _ => ZeoError::Other { class_path: Text::from_static("<malformed>"), payload },
            };
            return Ok(ServerMessage::Error { msgid, error });
        }
        let args = payload.as_seq().ok_or_else(|| field_err("push args", "a tuple", &payload))?;
        Ok(ServerMessage::Push(Push::from_call(&name, args)?))
    }

    /// The 4-tuple, as the stock server writes it (int flags 0 and 2 on replies, `True` on
    /// pushes).
    pub fn to_value(&self) -> Value {
        match self {
            ServerMessage::Reply { msgid, result } => {
                Value::tuple(vec![msgid.0.clone(), Value::Int(0), Value::str_static(REPLY), result.clone()])
            }
            ServerMessage::Error { msgid, error } => {
                let (class_path, payload) = error.to_reply();
                Value::tuple(vec![
                    msgid.0.clone(),
                    Value::Int(2),
                    Value::str_static(REPLY),
                    Value::tuple(vec![Value::Str(class_path), payload]),
                ])
            }
            ServerMessage::Push(p) => Value::tuple(vec![
                Value::Int(0),
                Value::Bool(true),
                Value::Str(p.name()),
                Value::tuple(p.to_args()),
            ]),
        }
    }
}
