//! Every pickle frame recorded from real ZEO 6.2 sessions decodes, matches the recorder's
//! rendering, and re-encodes to the very same bytes.
//!
//! No recorded frame is an exception to the byte-for-byte rule: ZEO pickles in fast mode, so
//! there are no memo opcodes to lose, and every other choice the C pickler makes is canonical.

mod common;

use bytes::Bytes;
use zeoraid_core::wire::pickle::{decode, encode};
use zeoraid_core::wire::value::{Limits, Value};

fn pickle_frames() -> Vec<common::Frame> {
    common::frames(".pickle.jsonl").into_iter().filter(|f| f.encoding == "pickle").collect()
}

#[test]
fn every_recorded_pickle_frame_decodes_matches_and_reencodes() {
    let frames = pickle_frames();
    assert!(frames.len() > 400, "only {} pickle frames found", frames.len());
    let limits = Limits::default();
    let mut failures = Vec::new();
    for frame in &frames {
        let payload = Bytes::from(frame.payload.clone());
        let value = match decode(&payload, &limits) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{}: decode: {e}", frame.name()));
                continue;
            }
        };
        if let Err(e) = value.check(&limits) {
            failures.push(format!("{}: check: {e}", frame.name()));
        }
        match &frame.msg {
            Some(msg) => {
                if let Err(e) = common::check_message(&value, msg) {
                    failures.push(format!("{}: msg: {e}\n  repr: {}", frame.name(), frame.repr));
                }
            }
            None => failures.push(format!("{}: no msg rendering", frame.name())),
        }
        let mut out = Vec::new();
        match encode(&value, &mut out) {
            Ok(()) if out == frame.payload => {}
            Ok(()) => failures.push(format!(
                "{}: re-encoding differs\n  want {}\n  got  {}",
                frame.name(),
                hex::encode(&frame.payload),
                hex::encode(&out)
            )),
            Err(e) => failures.push(format!("{}: encode: {e}", frame.name())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} frames failed:\n{}",
        failures.len(),
        frames.len(),
        failures.join("\n")
    );
}

#[test]
fn recorded_nested_exception_decodes_as_exception() {
    // The MultipleUndoErrors reply in undo.pickle.jsonl carries UndoError objects pickled as
    // ZODB.POSException._recon(cls, state).
    let frames = pickle_frames();
    let frame = frames
        .iter()
        .find(|f| f.file == "undo.pickle.jsonl" && f.repr.contains("MultipleUndoErrors"))
        .expect("the MultipleUndoErrors reply is recorded");
    let value = decode(&Bytes::from(frame.payload.clone()), &Limits::default()).expect("decodes");
    let args = value.as_seq().and_then(|s| s.get(3)).expect("4-tuple");
    let payload = args.as_seq().and_then(|s| s.get(1)).expect("(class_path, payload)");
    match payload.get("_oid") {
        Some(Value::Exception(e)) => {
            assert_eq!(e.class_path.as_str(), "ZODB.POSException.UndoError");
            assert!(e.state.get("args").is_some());
        }
        other => panic!("_oid is not an exception: {other:?}"),
    }
}

#[test]
fn decoded_bytes_share_the_payload_buffer() {
    // The biggest recorded frame carries a blob chunk: its bytes must be a slice of the
    // payload, not a copy.
    let frames = pickle_frames();
    let frame = frames.iter().max_by_key(|f| f.payload.len()).expect("frames");
    assert!(frame.payload.len() > 10_000, "expected a large frame");
    let payload = Bytes::from(frame.payload.clone());
    let value = decode(&payload, &Limits::default()).expect("decodes");
    let range = payload.as_ptr_range();
    let mut largest = 0;
    let mut stack = vec![&value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Bytes(b) | Value::BigInt(b) => {
                assert!(b.is_empty() || range.contains(&b.as_ptr()), "bytes copied");
                largest = largest.max(b.len());
            }
            Value::Str(t) => {
                let b = t.as_bytes();
                assert!(b.is_empty() || range.contains(&b.as_ptr()), "text copied");
            }
            Value::Seq(_, items) => stack.extend(items),
            Value::Map(entries) => stack.extend(entries.iter().flat_map(|(k, v)| [k, v])),
            Value::Exception(e) => stack.push(&e.state),
            Value::Reduce(r) => stack.extend([&r.0, &r.1]),
            _ => {}
        }
    }
    assert!(largest > 10_000, "the big frame holds a big byte string");
}
