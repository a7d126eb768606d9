//! The canonical pickle encoder: the exact bytes of zodbpickle's C `Pickler(protocol=3)` in
//! fast mode (`_pickle_33.c`, the pickler ZEO uses), so that a Python peer cannot tell us apart
//! and recorded frames re-encode byte for byte.

use super::int::{i128_from_le, minimal_len};
use super::PickleEncodeError;
use crate::wire::value::{SeqKind, Text, Value};

/// Items per `APPENDS`/`SETITEMS` batch (`BATCHSIZE` in the pickler).
const BATCH: usize = 1000;

/// Deepest value the encoder accepts: Python's default recursion limit, past which
/// zodbpickle itself cannot pickle.
const MAX_DEPTH: u32 = 1000;

/// Appends the pickle of `value` (`80 03` … `.`) to `out`.
///
/// On error `out` is left as it was. Besides the errors listed in [`PickleEncodeError`], any
/// [`Value`] encodes; a [`Value::BigInt`] that is not in minimal form is written in minimal
/// form (as [`Value::Int`] when it fits), which is what Python would write for that number.
pub fn encode(value: &Value, out: &mut Vec<u8>) -> Result<(), PickleEncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0x80, 3]);
    match write(value, out, 0) {
        Ok(()) => {
            out.push(b'.');
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

fn write(value: &Value, out: &mut Vec<u8>, depth: u32) -> Result<(), PickleEncodeError> {
    if depth > MAX_DEPTH {
        return Err(PickleEncodeError::TooDeep { limit: MAX_DEPTH });
    }
    let inner = depth + 1;
    match value {
        Value::None => out.push(b'N'),
        Value::Bool(true) => out.push(0x88),
        Value::Bool(false) => out.push(0x89),
        Value::Int(i) => write_int(*i, out)?,
        Value::BigInt(le) => {
            let le = &le[..minimal_len(le)];
            match i128_from_le(le) {
                Some(i) => write_int(i, out)?,
                None => write_long(le, out)?,
            }
        }
        Value::Float(f) => {
            out.push(b'G');
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Bytes(b) => write_bytes(b, out)?,
        Value::Str(s) => write_str(s, out)?,
        Value::Seq(SeqKind::Tuple, items) => write_tuple(items, out, inner)?,
        Value::Seq(SeqKind::List, items) => write_list(items, out, inner)?,
        Value::Map(entries) => write_map(entries, out, inner)?,
        Value::Exception(e) => {
            let path = e.class_path.as_str();
            let (module, name) = path
                .rsplit_once('.')
                .filter(|(m, n)| !m.is_empty() && !n.is_empty() && !path.contains('\n'))
                .ok_or_else(|| PickleEncodeError::BadClassPath(path.to_owned()))?;
            write_global("ZODB.POSException", "_recon", out)?;
            write_global(module, name, out)?;
            write(&e.state, out, inner)?;
            out.extend_from_slice(&[0x86, b'R']);
        }
        Value::Global(g) => write_global(g.0.as_str(), g.1.as_str(), out)?,
        Value::Reduce(r) => {
            write(&r.0, out, inner)?;
            write(&r.1, out, inner)?;
            out.push(b'R');
        }
    }
    Ok(())
}

/// `K` for 0..=255, `M` for 256..=65535, `J` for the rest of the i32 range, else `LONG1`.
fn write_int(i: i128, out: &mut Vec<u8>) -> Result<(), PickleEncodeError> {
    if let Ok(b) = u8::try_from(i) {
        out.extend_from_slice(&[b'K', b]);
    } else if let Ok(h) = u16::try_from(i) {
        out.push(b'M');
        out.extend_from_slice(&h.to_le_bytes());
    } else if let Ok(w) = i32::try_from(i) {
        out.push(b'J');
        out.extend_from_slice(&w.to_le_bytes());
    } else {
        let le = i.to_le_bytes();
        write_long(&le[..minimal_len(&le)], out)?;
    }
    Ok(())
}

/// `LONG1` (u8 length) or `LONG4` (i32 length) with minimal two's complement bytes.
fn write_long(le: &[u8], out: &mut Vec<u8>) -> Result<(), PickleEncodeError> {
    if let Ok(n) = u8::try_from(le.len()) {
        out.extend_from_slice(&[0x8a, n]);
    } else {
        let n = i32::try_from(le.len())
            .map_err(|_| PickleEncodeError::TooLarge { kind: "int", len: le.len() })?;
        out.push(0x8b);
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(le);
    Ok(())
}

/// `C` (u8 length) below 256 bytes, else `B` (u32 length).
fn write_bytes(b: &[u8], out: &mut Vec<u8>) -> Result<(), PickleEncodeError> {
    if let Ok(n) = u8::try_from(b.len()) {
        out.extend_from_slice(&[b'C', n]);
    } else {
        let n = u32::try_from(b.len())
            .map_err(|_| PickleEncodeError::TooLarge { kind: "bytes", len: b.len() })?;
        out.push(b'B');
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(b);
    Ok(())
}

/// Always `X` (u32 length + UTF-8): protocol 3 has no short form.
fn write_str(s: &Text, out: &mut Vec<u8>) -> Result<(), PickleEncodeError> {
    let b = s.as_bytes();
    let n = u32::try_from(b.len()).map_err(|_| PickleEncodeError::TooLarge { kind: "str", len: b.len() })?;
    out.push(b'X');
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(b);
    Ok(())
}

/// `)` when empty, items + `TUPLE1/2/3` up to three, else `(` items `t`.
fn write_tuple(items: &[Value], out: &mut Vec<u8>, depth: u32) -> Result<(), PickleEncodeError> {
    match items.len() {
        0 => out.push(b')'),
        n @ 1..=3 => {
            write_all(items, out, depth)?;
            // n is 1..=3, so this is 0x85..=0x87.
            out.push(0x84 + u8::try_from(n).unwrap_or(0));
        }
        _ => {
            out.push(b'(');
            write_all(items, out, depth)?;
            out.push(b't');
        }
    }
    Ok(())
}

/// `]`, then one item + `a` for a one-item list, else batches of up to 1000 items, each
/// `(` items `e` (the C pickler's `batch_list_exact`: a last batch of one still uses `e`).
fn write_list(items: &[Value], out: &mut Vec<u8>, depth: u32) -> Result<(), PickleEncodeError> {
    out.push(b']');
    if let [item] = items {
        write(item, out, depth)?;
        out.push(b'a');
        return Ok(());
    }
    for batch in items.chunks(BATCH) {
        out.push(b'(');
        write_all(batch, out, depth)?;
        out.push(b'e');
    }
    Ok(())
}

/// `}`, then one pair + `s` for a one-entry dict, else batches of up to 1000 pairs, each
/// `(` pairs `u`. Like the C pickler's `batch_dict_exact`, a batch that came out full is
/// always followed by another, so a dict of exactly 1000·k entries ends with an empty `( u`.
fn write_map(entries: &[(Value, Value)], out: &mut Vec<u8>, depth: u32) -> Result<(), PickleEncodeError> {
    out.push(b'}');
    match entries {
        [] => return Ok(()),
        [(k, v)] => {
            write(k, out, depth)?;
            write(v, out, depth)?;
            out.push(b's');
            return Ok(());
        }
        _ => {}
    }
    for batch in entries.chunks(BATCH) {
        out.push(b'(');
        for (k, v) in batch {
            write(k, out, depth)?;
            write(v, out, depth)?;
        }
        out.push(b'u');
    }
    if entries.len() % BATCH == 0 {
        out.extend_from_slice(b"(u");
    }
    Ok(())
}

fn write_all(items: &[Value], out: &mut Vec<u8>, depth: u32) -> Result<(), PickleEncodeError> {
    items.iter().try_for_each(|item| write(item, out, depth))
}

/// `c module\nname\n`; both parts must be non-empty and free of newlines.
fn write_global(module: &str, name: &str, out: &mut Vec<u8>) -> Result<(), PickleEncodeError> {
    let bad = |s: &str| s.is_empty() || s.contains('\n');
    if bad(module) || bad(name) {
        return Err(PickleEncodeError::BadGlobal { module: module.to_owned(), name: name.to_owned() });
    }
    out.push(b'c');
    for part in [module, name] {
        out.extend_from_slice(part.as_bytes());
        out.push(b'\n');
    }
    Ok(())
}
