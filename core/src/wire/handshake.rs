//! The raw first frame of each direction and the `ruok` status probe (`zeo-protocol.md` §2).
//!
//! ```text
//! server -> client : b"Z5" (pickle) or b"M5" (msgpack)
//! client -> server : b"Z5" / b"M5" (the encoding of the rest of the connection), or b"ruok"
//! ```
//!
//! Server side: [`server_announcement`], [`parse_client_handshake`], [`encode_ruok_json`].
//! Client side: [`parse_server_announcement`], [`client_reply`], [`parse_ruok_json`].

use super::value::{Limits, SeqKind, Text, Value};
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

// ---------------------------------------------------------------------------------------------
// ruok JSON: rendering
// ---------------------------------------------------------------------------------------------

/// Renders the `ruok` answer (§2.3): a JSON object keyed by storage name whose values are the
/// `server_status` maps (§4.3), byte for byte as Python's `json.dumps` does by default:
/// separators `", "` and `": "`; `null`, `true`, `false`; ints in decimal; floats as Python's
/// `repr` (shortest round-trip digits, exact ties to the even digit as dtoa does, `.0` on
/// integral values, exponent form `1e+16` / `1e-05` outside `1e-4 <= |x| < 1e16`), NaN and
/// infinities as `NaN`, `Infinity`, `-Infinity`; strings ASCII-only with `\uXXXX` escapes
/// (lowercase hex, surrogate pairs above the BMP); tuples and lists as arrays; dicts in their
/// order.
///
/// Map keys must be str. Bytes, big ints and pickle-only values are errors (Python's
/// `json.dumps` raises `TypeError` for bytes; the others never occur in a status map).
pub fn encode_ruok_json(storages: &[(Text, Value)]) -> Result<Vec<u8>, HandshakeError> {
    let mut out = Vec::new();
    out.push(b'{');
    for (i, (name, status)) in storages.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        write_json_str(name.as_str(), &mut out);
        out.extend_from_slice(b": ");
        write_json_value(name, status, &mut out)?;
    }
    out.push(b'}');
    Ok(out)
}

/// What an open JSON array or object still has to write; `first` is true until an element
/// has been written.
enum Rest<'a> {
    Items(std::slice::Iter<'a, Value>, bool),
    Entries(std::slice::Iter<'a, (Value, Value)>, bool),
}

/// Writes one value without recursing (so any nesting depth is fine).
fn write_json_value(storage: &Text, root: &Value, out: &mut Vec<u8>) -> Result<(), HandshakeError> {
    let mut stack: Vec<Rest<'_>> = Vec::new();
    let mut next = Some(root);
    loop {
        if let Some(value) = next.take() {
            match value {
                Value::None => out.extend_from_slice(b"null"),
                Value::Bool(true) => out.extend_from_slice(b"true"),
                Value::Bool(false) => out.extend_from_slice(b"false"),
                Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
                Value::Float(f) => write_python_float(*f, out),
                Value::Str(s) => write_json_str(s.as_str(), out),
                Value::Seq(_, items) => {
                    out.push(b'[');
                    stack.push(Rest::Items(items.iter(), true));
                }
                Value::Map(entries) => {
                    out.push(b'{');
                    stack.push(Rest::Entries(entries.iter(), true));
                }
                Value::BigInt(_)
                | Value::Bytes(_)
                | Value::Exception(_)
                | Value::Global(..)
                | Value::Reduce(_) => {
                    return Err(HandshakeError::JsonUnsupported {
                        storage: storage.clone(),
                        offset: out.len(),
                        found: value.type_name(),
                    })
                }
            }
            continue;
        }
        let Some(top) = stack.last_mut() else {
            return Ok(());
        };
        match top {
            Rest::Items(iter, first) => match iter.next() {
                Some(v) => {
                    if !std::mem::replace(first, false) {
                        out.extend_from_slice(b", ");
                    }
                    next = Some(v);
                }
                None => {
                    out.push(b']');
                    stack.pop();
                }
            },
            Rest::Entries(iter, first) => match iter.next() {
                Some((k, v)) => {
                    if !std::mem::replace(first, false) {
                        out.extend_from_slice(b", ");
                    }
                    let Value::Str(key) = k else {
                        return Err(HandshakeError::JsonKey {
                            storage: storage.clone(),
                            offset: out.len(),
                            found: k.type_name(),
                        });
                    };
                    write_json_str(key.as_str(), out);
                    out.extend_from_slice(b": ");
                    next = Some(v);
                }
                None => {
                    out.push(b'}');
                    stack.pop();
                }
            },
        }
    }
}

/// A JSON string literal as `json.dumps(..., ensure_ascii=True)` writes it: printable ASCII
/// (space through `~`) as is except `"` and `\`, the usual short escapes, everything else as
/// `\uXXXX` in lowercase hex (UTF-16 surrogate pairs above the BMP).
fn write_json_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            ' '..='~' => out.push(c as u8),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.extend_from_slice(b"\\u");
                    for shift in [12, 8, 4, 0] {
                        out.push(HEX[usize::from((*unit >> shift) & 0xf)]);
                    }
                }
            }
        }
    }
    out.push(b'"');
}

/// A float as `json.dumps` writes it: `NaN` / `Infinity` / `-Infinity`, else Python's
/// `float.__repr__`.
fn write_python_float(f: f64, out: &mut Vec<u8>) {
    if f.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if f.is_sign_negative() {
        out.push(b'-');
    }
    if f.is_infinite() {
        out.extend_from_slice(b"Infinity");
        return;
    }
    if f == 0.0 {
        out.extend_from_slice(b"0.0");
        return;
    }
    // Rust's `{:e}` gives the shortest digits that round-trip, as does Python's repr:
    // "d.ddde<exp>" or "de<exp>".
    let (mut digits, mut exp) = sci_digits(&format!("{:e}", f.abs()));
    break_tie_to_even(f.abs(), &mut digits, &mut exp);
    // Python's "decpt": the value is 0.<digits> × 10^decpt.
    let decpt = exp + 1;
    let n = digits.len() as i32;
    if decpt <= -4 || decpt > 16 {
        // CPython's repr switches to exponent form here (format_float_short, mode 'r').
        // `{:e}` always writes at least one digit; `split_first` keeps this panic-free anyway.
        if let Some((first, rest)) = digits.split_first() {
            out.push(*first);
            if !rest.is_empty() {
                out.push(b'.');
                out.extend_from_slice(rest);
            }
        }
        out.extend_from_slice(format!("e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs()).as_bytes());
    } else if decpt <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-decpt) as usize));
        out.extend_from_slice(&digits);
    } else if decpt >= n {
        out.extend_from_slice(&digits);
        out.extend(std::iter::repeat_n(b'0', (decpt - n) as usize));
        out.extend_from_slice(b".0");
    } else {
        let (int, frac) = digits.split_at(decpt as usize);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    }
}

/// Splits Rust's `{:e}` output (`d.ddde<exp>`) into its digits, without trailing zeros, and
/// its decimal exponent.
fn sci_digits(sci: &str) -> (Vec<u8>, i32) {
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let mut digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    (digits, exp.parse().unwrap_or(0))
}

/// Rust and Python both pick the shortest digits that round-trip and, among those, the ones
/// closest to the exact value; they differ only when `x` lies exactly halfway between two such
/// candidates: Rust rounds the tie up, Python's dtoa to the even last digit. So when our last
/// digit is odd, check whether `x` is exactly halfway to a neighbour that also round-trips, and
/// take that (even) neighbour if so.
fn break_tie_to_even(x: f64, digits: &mut Vec<u8>, exp: &mut i32) {
    let Some(&last) = digits.last() else { return };
    if last % 2 == 0 {
        return;
    }
    // Any double's exact decimal expansion has fewer than 770 significant digits.
    let (exact, exact_exp) = sci_digits(&format!("{x:.800e}"));
    if exact_exp != *exp || exact.len() != digits.len() + 1 || exact.last() != Some(&b'5') {
        return;
    }
    let mut down = digits.clone();
    let mut up = digits.clone();
    let mut up_exp = *exp;
    // The last digit is odd, hence ≥ 1: no borrow.
    if let Some(d) = down.last_mut() {
        *d -= 1;
    }
    increment(&mut up, &mut up_exp);
    // x is halfway between `digits` and `down` iff its exact digits are `down` then 5.
    let candidate = if exact[..digits.len()] == down[..] {
        (down, *exp)
    } else if exact[..digits.len()] == digits[..] {
        (up, up_exp)
    } else {
        return;
    };
    let (mut alt, alt_exp) = candidate;
    while alt.len() > 1 && alt.last() == Some(&b'0') {
        alt.pop();
    }
    // 0.<digits> × 10^(exp+1) is d.igits × 10^exp.
    let text = format!("0.{}e{}", String::from_utf8_lossy(&alt), alt_exp + 1);
    if text.parse::<f64>().ok().map(f64::to_bits) == Some(x.to_bits()) {
        *digits = alt;
        *exp = alt_exp;
    }
}

/// Adds one in the last place of a digit string (`9.99e0` → `1e1`).
fn increment(digits: &mut Vec<u8>, exp: &mut i32) {
    for d in digits.iter_mut().rev() {
        if *d == b'9' {
            *d = b'0';
        } else {
            *d += 1;
            return;
        }
    }
    // All nines: the result is 1 followed by zeros, one decade up.
    digits.insert(0, b'1');
    digits.pop();
    *exp += 1;
}

// ---------------------------------------------------------------------------------------------
// ruok JSON: parsing
// ---------------------------------------------------------------------------------------------

/// Parses a server's `ruok` answer (§2.3) into `(storage name, status)` pairs in order, so that
/// zeoraid can probe a backend's health.
///
/// A small JSON parser for untrusted input: never recurses and never panics. Ints (no fraction
/// or exponent) become [`Value::Int`] (an error beyond the `i128` range), other numbers
/// [`Value::Float`]; Python's `NaN`, `Infinity` and `-Infinity` are accepted; arrays become
/// lists, objects [`Value::Map`]s with str keys in order. Strings must be valid UTF-8 without
/// raw control characters, and `\u` escapes must not leave a lone surrogate. The outer object
/// counts towards `limits.max_depth`; keys and values count towards `limits.max_nodes`.
pub fn parse_ruok_json(frame: &[u8], limits: &Limits) -> Result<Vec<(Text, Value)>, HandshakeError> {
    let mut p = JsonParser { data: frame, pos: 0 };
    p.skip_ws();
    if p.peek() != Some(b'{') {
        return Err(p.error("the top level must be an object"));
    }
    match p.document(limits)? {
        Value::Map(entries) => Ok(entries
            .into_iter()
            .map(|(k, v)| match k {
                Value::Str(name) => (name, v),
                // The parser only makes str keys; this arm is never taken.
                other => (Text::from(other.type_name()), v),
            })
            .collect()),
        // Unreachable: the document starts with '{', so it is a map.
        _ => Err(p.error("the top level must be an object")),
    }
}

/// A JSON container being filled.
enum OpenJson {
    Array(Vec<Value>),
    /// Entries so far and the key of the value being parsed.
    Object(Vec<(Value, Value)>, Text),
}

struct JsonParser<'a> {
    data: &'a [u8],
    pos: usize,
}

impl JsonParser<'_> {
    fn error(&self, reason: &'static str) -> HandshakeError {
        HandshakeError::JsonSyntax { offset: self.pos, reason }
    }

    fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Consumes `lit` if the input continues with it.
    fn eat(&mut self, lit: &[u8]) -> bool {
        let hit = self.data.get(self.pos..).is_some_and(|rest| rest.starts_with(lit));
        if hit {
            self.pos += lit.len();
        }
        hit
    }

    /// One complete JSON value followed only by whitespace.
    fn document(&mut self, limits: &Limits) -> Result<Value, HandshakeError> {
        let mut stack: Vec<OpenJson> = Vec::new();
        let mut nodes: usize = 0;
        'value: loop {
            self.skip_ws();
            let offset = self.pos;
            nodes += 1;
            if nodes > limits.max_nodes {
                return Err(HandshakeError::JsonTooManyNodes { offset, max: limits.max_nodes });
            }
            let opens = matches!(self.peek(), Some(b'[' | b'{'));
            if opens && stack.len() >= limits.max_depth as usize {
                return Err(HandshakeError::JsonTooDeep { offset, max: limits.max_depth });
            }
            let mut value = match self.peek() {
                Some(b'[') => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.eat(b"]") {
                        Value::Seq(SeqKind::List, Vec::new())
                    } else {
                        stack.push(OpenJson::Array(Vec::new()));
                        continue 'value;
                    }
                }
                Some(b'{') => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.eat(b"}") {
                        Value::Map(Vec::new())
                    } else {
                        let key = self.key(&mut nodes, limits)?;
                        stack.push(OpenJson::Object(Vec::new(), key));
                        continue 'value;
                    }
                }
                Some(b'"') => Value::Str(self.string()?),
                _ => self.scalar()?,
            };
            // Attach the value to its container, closing every container it completes.
            loop {
                let Some(top) = stack.last_mut() else {
                    self.skip_ws();
                    if self.pos != self.data.len() {
                        return Err(self.error("unexpected data after the JSON value"));
                    }
                    return Ok(value);
                };
                self.skip_ws();
                match top {
                    OpenJson::Array(items) => {
                        items.push(value);
                        if self.eat(b",") {
                            continue 'value;
                        }
                        if !self.eat(b"]") {
                            return Err(self.error("expected ',' or ']'"));
                        }
                    }
                    OpenJson::Object(entries, key) => {
                        entries.push((Value::Str(std::mem::take(key)), value));
                        if self.eat(b",") {
                            self.skip_ws();
                            *key = self.key(&mut nodes, limits)?;
                            continue 'value;
                        }
                        if !self.eat(b"}") {
                            return Err(self.error("expected ',' or '}'"));
                        }
                    }
                }
                value = match stack.pop() {
                    Some(OpenJson::Array(items)) => Value::Seq(SeqKind::List, items),
                    Some(OpenJson::Object(entries, _)) => Value::Map(entries),
                    // `last_mut` just returned Some; an empty list keeps this panic-free.
                    None => Value::Seq(SeqKind::List, Vec::new()),
                };
            }
        }
    }

    /// An object key and the `:` after it.
    fn key(&mut self, nodes: &mut usize, limits: &Limits) -> Result<Text, HandshakeError> {
        let offset = self.pos;
        *nodes += 1;
        if *nodes > limits.max_nodes {
            return Err(HandshakeError::JsonTooManyNodes { offset, max: limits.max_nodes });
        }
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a string key"));
        }
        let key = self.string()?;
        self.skip_ws();
        if !self.eat(b":") {
            return Err(self.error("expected ':'"));
        }
        Ok(key)
    }

    /// A literal or a number.
    fn scalar(&mut self) -> Result<Value, HandshakeError> {
        if self.eat(b"null") {
            return Ok(Value::None);
        }
        if self.eat(b"true") {
            return Ok(Value::Bool(true));
        }
        if self.eat(b"false") {
            return Ok(Value::Bool(false));
        }
        if self.eat(b"NaN") {
            return Ok(Value::Float(f64::NAN));
        }
        if self.eat(b"Infinity") {
            return Ok(Value::Float(f64::INFINITY));
        }
        if self.eat(b"-Infinity") {
            return Ok(Value::Float(f64::NEG_INFINITY));
        }
        self.number()
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, the grammar of Python's scanner.
    fn number(&mut self) -> Result<Value, HandshakeError> {
        let start = self.pos;
        self.eat(b"-");
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => {
                self.pos = start;
                return Err(self.error("expected a value"));
            }
        }
        let mut is_int = true;
        if self.peek() == Some(b'.') && self.data.get(self.pos + 1).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
            self.digits();
            is_int = false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let mark = self.pos;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.digits();
                is_int = false;
            } else {
                // Not an exponent after all; Python stops the number before the 'e' too, and
                // the caller then fails on the leftover byte.
                self.pos = mark;
            }
        }
        // The scanned bytes are ASCII digits and signs, hence valid UTF-8.
        let text = std::str::from_utf8(&self.data[start..self.pos]).unwrap_or_default();
        if is_int {
            text.parse::<i128>().map(Value::Int).map_err(|_| HandshakeError::JsonSyntax {
                offset: start,
                reason: "integer outside the supported range",
            })
        } else {
            text.parse::<f64>()
                .map(Value::Float)
                .map_err(|_| HandshakeError::JsonSyntax { offset: start, reason: "bad number" })
        }
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    /// A string literal starting at the opening quote.
    fn string(&mut self) -> Result<Text, HandshakeError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            // Copy the run up to the next quote, backslash or control character in one go.
            let run_start = self.pos;
            while self.peek().is_some_and(|b| b != b'"' && b != b'\\' && b >= 0x20) {
                self.pos += 1;
            }
            let run = &self.data[run_start..self.pos];
            match std::str::from_utf8(run) {
                Ok(s) => out.push_str(s),
                Err(e) => {
                    return Err(HandshakeError::JsonSyntax {
                        offset: run_start + e.valid_up_to(),
                        reason: "invalid UTF-8 in a string",
                    })
                }
            }
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Text::from(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                Some(_) => return Err(self.error("control character in a string")),
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    /// The escape after a backslash.
    fn escape(&mut self, out: &mut String) -> Result<(), HandshakeError> {
        let Some(b) = self.peek() else {
            return Err(self.error("unterminated string"));
        };
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let at = self.pos - 2;
                let first = self.hex4()?;
                let code = match first {
                    0xd800..=0xdbff => {
                        if !self.eat(b"\\u") {
                            return Err(HandshakeError::JsonSyntax { offset: at, reason: "lone surrogate" });
                        }
                        let second = self.hex4()?;
                        if !(0xdc00..=0xdfff).contains(&second) {
                            return Err(HandshakeError::JsonSyntax { offset: at, reason: "lone surrogate" });
                        }
                        0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
                    }
                    0xdc00..=0xdfff => {
                        return Err(HandshakeError::JsonSyntax { offset: at, reason: "lone surrogate" })
                    }
                    other => other,
                };
                // Surrogates were handled above, so every remaining code is a char.
                char::from_u32(code)
                    .ok_or(HandshakeError::JsonSyntax { offset: at, reason: "lone surrogate" })?
            }
            _ => {
                self.pos -= 1;
                return Err(self.error("invalid escape"));
            }
        };
        out.push(c);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, HandshakeError> {
        let mut code = 0u32;
        for _ in 0..4 {
            let digit = self.peek().and_then(|b| char::from(b).to_digit(16));
            let Some(d) = digit else {
                return Err(self.error("expected 4 hex digits after \\u"));
            };
            code = code * 16 + d;
            self.pos += 1;
        }
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
