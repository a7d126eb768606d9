//! Helpers shared by the integration tests: loading the recorded ZEO sessions in
//! `tests/vectors/` (copied from the project's shared recordings) and comparing decoded
//! values with the JSON rendering the recorder wrote next to each frame.
#![allow(dead_code, unreachable_pub)]

use serde_json::Value as Json;
use std::path::PathBuf;
use zeoraid_core::wire::value::{SeqKind, Value};

/// One recorded frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// File it came from.
    pub file: String,
    /// Connection number within the file.
    pub conn: u64,
    /// `c2s` or `s2c`.
    pub dir: String,
    /// Sequence number within the connection and direction.
    pub seq: u64,
    /// `handshake`, `msgpack`, `pickle` or `raw`.
    pub encoding: String,
    /// The frame payload (without the length prefix).
    pub payload: Vec<u8>,
    /// The recorder's JSON rendering of the decoded message, if it had one.
    pub msg: Option<Json>,
    /// Python's `repr` of the message, for failure messages.
    pub repr: String,
}

impl Frame {
    /// A short name for failure messages.
    pub fn name(&self) -> String {
        format!("{} conn {} {} #{}", self.file, self.conn, self.dir, self.seq)
    }
}

/// The folder holding the recorded vectors.
pub fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("vectors")
}

/// Every frame of every `*.jsonl` file whose name ends with `suffix` (e.g. `.pickle.jsonl`),
/// in file order. Panics (failing the test) if the folder is missing or empty.
pub fn frames(suffix: &str) -> Vec<Frame> {
    let mut files: Vec<_> = std::fs::read_dir(vectors_dir())
        .expect("tests/vectors exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no vector files ending in {suffix}");
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable vector file");
        let file = path.file_name().expect("file name").to_string_lossy().into_owned();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let rec: Json = serde_json::from_str(line).expect("valid JSON line");
            if rec["kind"] != "frame" {
                continue;
            }
            let payload = hex::decode(rec["hex"].as_str().expect("hex field")).expect("valid hex");
            assert_eq!(payload.len() as u64, rec["len"].as_u64().expect("len"), "length field");
            out.push(Frame {
                file: file.clone(),
                conn: rec["conn"].as_u64().expect("conn"),
                dir: rec["dir"].as_str().expect("dir").to_owned(),
                seq: rec["seq"].as_u64().expect("seq"),
                encoding: rec["encoding"].as_str().expect("encoding").to_owned(),
                payload,
                msg: rec.get("msg").cloned(),
                repr: rec.get("repr").and_then(Json::as_str).unwrap_or_default().to_owned(),
            });
        }
    }
    out
}

/// The decoded 4-tuple rendered the way the recorder rendered it: `{msgid, flags, method, args}`.
pub fn envelope_json(v: &Value) -> Result<[&Value; 4], String> {
    match v {
        Value::Seq(_, items) if items.len() == 4 => Ok([&items[0], &items[1], &items[2], &items[3]]),
        other => Err(format!("message is not a 4-tuple: {other:?}")),
    }
}

/// Checks a decoded message against the recorder's `msg` object.
pub fn check_message(v: &Value, msg: &Json) -> Result<(), String> {
    let [msgid, flags, method, args] = envelope_json(v)?;
    check(msgid, &msg["msgid"]).map_err(|e| format!("msgid: {e}"))?;
    check(flags, &msg["flags"]).map_err(|e| format!("flags: {e}"))?;
    check(method, &msg["method"]).map_err(|e| format!("method: {e}"))?;
    check(args, &msg["args"]).map_err(|e| format!("args: {e}"))
}

/// Checks one decoded value against the recorder's JSON rendering:
/// `{"b": hex}` is bytes, `{"dict": [[k, v], …]}` a dict in order, `{"exc": path, "args": […]}`
/// an exception object, a JSON array a tuple or list, and JSON scalars the Python scalars
/// (JSON `true`/`false` are bools, never ints).
pub fn check(v: &Value, j: &Json) -> Result<(), String> {
    let fail = || Err(format!("{v:?} does not match {j}"));
    match j {
        Json::Null => matches!(v, Value::None).then_some(()).map_or_else(fail, Ok),
        Json::Bool(b) => match v {
            Value::Bool(x) if x == b => Ok(()),
            _ => fail(),
        },
        Json::Number(n) => match v {
            Value::Int(i) if n.as_i64().map(i128::from) == Some(*i) => Ok(()),
            Value::Int(i) if n.as_u64().map(i128::from) == Some(*i) => Ok(()),
            Value::Float(f) if n.as_f64() == Some(*f) && !(n.is_i64() || n.is_u64()) => Ok(()),
            _ => fail(),
        },
        Json::String(s) => match v {
            Value::Str(t) if t.as_str() == s => Ok(()),
            _ => fail(),
        },
        Json::Array(items) => match v {
            Value::Seq(_, vs) if vs.len() == items.len() => {
                for (i, (a, b)) in vs.iter().zip(items).enumerate() {
                    check(a, b).map_err(|e| format!("[{i}]: {e}"))?;
                }
                Ok(())
            }
            _ => fail(),
        },
        Json::Object(o) => {
            if let Some(h) = o.get("b").and_then(Json::as_str).filter(|_| o.len() == 1) {
                let want = hex::decode(h).map_err(|e| e.to_string())?;
                return match v {
                    Value::Bytes(b) if b[..] == want[..] => Ok(()),
                    _ => fail(),
                };
            }
            if let Some(Json::Array(entries)) = o.get("dict").filter(|_| o.len() == 1) {
                let Value::Map(es) = v else { return fail() };
                if es.len() != entries.len() {
                    return fail();
                }
                for ((k, val), e) in es.iter().zip(entries) {
                    let pair = e.as_array().ok_or("dict entry is not a pair")?;
                    check(k, &pair[0]).map_err(|e| format!("key: {e}"))?;
                    check(val, &pair[1]).map_err(|e| format!("value of {k:?}: {e}"))?;
                }
                return Ok(());
            }
            if let (Some(cls), Some(args)) = (o.get("exc").and_then(Json::as_str), o.get("args")) {
                let Value::Exception(e) = v else { return fail() };
                if e.class_path.as_str() != cls {
                    return fail();
                }
                // The pickled state is the exception's __dict__ plus its `args`.
                let state_args = match &e.state {
                    Value::Seq(SeqKind::Tuple, _) => &e.state,
                    other => other.get("args").ok_or("exception state has no args")?,
                };
                return check(state_args, args);
            }
            Err(format!("unknown JSON rendering {j}"))
        }
    }
}
