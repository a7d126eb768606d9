//! The `ruok` answer (§2.3): one JSON frame keyed by storage name, rendered exactly as
//! Python's `json.dumps` does and parsed without recursion for zeoraid's own probes.

use super::HandshakeError;
use crate::wire::value::{Limits, SeqKind, Text, Value};
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
