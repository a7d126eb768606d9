//! Every recorded frame of a real ZEO 6.2 session, in both encodings, decodes to a typed
//! message of the model (no unknown method, no untyped error, no argument error), and
//! re-encoding the typed message reproduces the recorded bytes exactly.

mod common;

use bytes::Bytes;
use std::collections::BTreeMap;
use zeoraid_core::wire::codec::Codec;
use zeoraid_core::wire::error::ZeoError;
use zeoraid_core::wire::message::{ClientMessage, ServerMessage};
use zeoraid_core::wire::push::Push;
use zeoraid_core::wire::reply::Reply;
use zeoraid_core::wire::request::{Method, Request};
use zeoraid_core::wire::Encoding;

fn run(suffix: &str, encoding: Encoding) -> BTreeMap<String, usize> {
    let codec = Codec::new(encoding);
    let frames = common::frames(suffix);
    // (file, conn, msgid rendering) -> method of the pending call
    let mut pending: BTreeMap<(String, u64, String), Method> = BTreeMap::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut checked = 0;
    for f in frames.iter().filter(|f| f.encoding == encoding_name(encoding)) {
        let payload = Bytes::from(f.payload.clone());
        let mut out = Vec::new();
        if f.dir == "c2s" {
            let msg =
                codec.decode_client(&payload).unwrap_or_else(|e| panic!("{}: {e}\n{}", f.name(), f.repr));
            match &msg {
                ClientMessage::Call { msgid, request } => {
                    let method = request.method().unwrap_or_else(|| panic!("{}: unknown method", f.name()));
                    pending.insert((f.file.clone(), f.conn, format!("{:?}", msgid.0)), method);
                    *seen.entry(format!("call {}", method.name())).or_default() += 1;
                }
                ClientMessage::Async { request, .. } => {
                    let method = request.method().unwrap_or_else(|| panic!("{}: unknown method", f.name()));
                    assert!(method.is_async(), "{}: {} sent async", f.name(), method.name());
                    *seen.entry(format!("async {}", method.name())).or_default() += 1;
                }
                ClientMessage::Heartbeat => *seen.entry("heartbeat".into()).or_default() += 1,
                ClientMessage::BadCall { error, .. } => panic!("{}: bad call: {error}\n{}", f.name(), f.repr),
            }
            if let ClientMessage::Call { request: Request::Unknown { .. }, .. } = msg {
                panic!("{}: unknown request", f.name());
            }
            codec.encode_client(&msg, &mut out).unwrap_or_else(|e| panic!("{}: encode: {e}", f.name()));
        } else {
            let msg =
                codec.decode_server(&payload).unwrap_or_else(|e| panic!("{}: {e}\n{}", f.name(), f.repr));
            let rebuilt = match &msg {
                ServerMessage::Reply { msgid, result } => {
                    let key = (f.file.clone(), f.conn, format!("{:?}", msgid.0));
                    let method =
                        *pending.get(&key).unwrap_or_else(|| panic!("{}: reply to no call", f.name()));
                    let typed = Reply::from_value(method, result)
                        .unwrap_or_else(|e| panic!("{}: {} reply: {e}\n{}", f.name(), method.name(), f.repr));
                    if let Reply::Raw(_) = typed {
                        panic!("{}: untyped reply", f.name());
                    }
                    *seen.entry(format!("reply {}", method.name())).or_default() += 1;
                    ServerMessage::reply(msgid.clone(), &typed)
                }
                ServerMessage::Error { error, .. } => {
                    if let ZeoError::Other { class_path, .. } = error {
                        panic!("{}: untyped error {class_path}\n{}", f.name(), f.repr);
                    }
                    *seen.entry(format!("error {}", error.class_path())).or_default() += 1;
                    msg.clone()
                }
                ServerMessage::Push(p) => {
                    if let Push::Unknown { name, .. } = p {
                        panic!("{}: unknown push {name}", f.name());
                    }
                    *seen.entry(format!("push {}", p.name())).or_default() += 1;
                    msg.clone()
                }
            };
            codec.encode_server(&rebuilt, &mut out).unwrap_or_else(|e| panic!("{}: encode: {e}", f.name()));
        }
        assert_eq!(
            hex::encode(&out),
            hex::encode(&f.payload),
            "{}: typed re-encoding differs\n{}",
            f.name(),
            f.repr
        );
        checked += 1;
    }
    assert!(checked > 400, "only {checked} frames checked");
    seen
}

fn encoding_name(e: Encoding) -> &'static str {
    match e {
        Encoding::Pickle => "pickle",
        Encoding::Msgpack => "msgpack",
    }
}

/// Everything the recordings exercise must be typed; this list is what they contain.
fn assert_coverage(seen: &BTreeMap<String, usize>) {
    for key in [
        "call register",
        "call get_info",
        "call loadBefore",
        "call new_oids",
        "call vote",
        "call tpc_finish",
        "async tpc_begin",
        "async storea",
        "async undoa",
        "async storeBlobChunk",
        "reply history",
        "reply undoLog",
        "reply undoInfo",
        "reply iterator_next",
        "reply iterator_record_next",
        "reply record_iternext",
        "reply server_status",
        "reply getInvalidations",
        "error ZODB.POSException.ConflictError",
        "error ZODB.POSException.ReadConflictError",
        "error ZODB.POSException.POSKeyError",
        "error ZODB.POSException.MultipleUndoErrors",
        "push invalidateTransaction",
        "push info",
        "push receiveBlobChunk",
    ] {
        assert!(seen.contains_key(key), "recordings never reached {key}: {seen:?}");
    }
}

#[test]
fn pickle_sessions_are_fully_typed_and_reencode_identically() {
    let seen = run(".pickle.jsonl", Encoding::Pickle);
    assert_coverage(&seen);
}

#[test]
fn msgpack_sessions_are_fully_typed_and_reencode_identically() {
    let seen = run(".msgpack.jsonl", Encoding::Msgpack);
    assert_coverage(&seen);
}
