//! Turning a byte offset in a TOML file into `line:column` and the dotted key it belongs to.
//!
//! `toml`'s deserialisation errors carry a byte span but not (when a span is known) the key
//! path, so the key is recovered from the text: the nearest `key = …` line at or above the
//! offset, inside the nearest table header above it. This is exact for the flat files the
//! schema allows (no inline tables, no dotted keys), and a best effort otherwise.

/// A place in the file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineCol {
    /// Line, from 1.
    pub(crate) line: usize,
    /// Column in characters, from 1.
    pub(crate) col: usize,
}

/// The line and column of byte `offset` in `src` (clamped to the text).
pub(crate) fn line_col(src: &str, offset: usize) -> LineCol {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = src[line_start..offset].chars().count() + 1;
    LineCol { line, col }
}

/// The dotted key that byte `offset` of `src` belongs to (`server.listen`, `storage.path`), or
/// the table name when the offset is on a header, or `""` at the top level outside any key.
pub(crate) fn key_at(src: &str, offset: usize) -> String {
    let LineCol { line, .. } = line_col(src, offset);
    let lines: Vec<&str> = src.lines().collect();
    let mut key: Option<String> = None;
    for l in lines.iter().take(line).rev() {
        let t = l.trim_start();
        if t.starts_with('[') {
            let table = header_name(t);
            return match key {
                Some(k) if table.is_empty() => k,
                Some(k) => format!("{table}.{k}"),
                None => table,
            };
        }
        if key.is_none() {
            if let Some(k) = assigned_key(t) {
                key = Some(k);
            }
        }
    }
    key.unwrap_or_default()
}

/// The table name in a header line (`[server]`, `[[storage]]`, with an optional comment).
fn header_name(t: &str) -> String {
    let t = t.trim_start_matches('[');
    let end = t.find(']').unwrap_or(t.len());
    unquote(t[..end].trim())
}

/// The key a `key = value` line assigns, if it is one.
fn assigned_key(t: &str) -> Option<String> {
    if t.starts_with('#') {
        return None;
    }
    let eq = t.find('=')?;
    let k = t[..eq].trim();
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    let quoted = k.len() >= 2 && (k.starts_with('"') || k.starts_with('\''));
    if k.is_empty() || !(quoted || k.chars().all(bare)) {
        return None;
    }
    Some(unquote(k))
}

fn unquote(k: &str) -> String {
    k.trim_matches(|c| c == '"' || c == '\'').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "# top\n[server]\nlisten = [\n  \"a\",\n  \"b\",\n]\n\n[[storage]]\nname = \"1\"\n";

    #[test]
    fn line_and_column_count_from_one() {
        assert_eq!(line_col(SRC, 0), LineCol { line: 1, col: 1 });
        let at = SRC.find("\"b\"").expect("in text");
        assert_eq!(line_col(SRC, at), LineCol { line: 5, col: 3 });
        assert_eq!(line_col(SRC, usize::MAX).line, 10);
    }

    #[test]
    fn key_of_a_value_inside_a_multiline_array_is_the_array() {
        let at = SRC.find("\"b\"").expect("in text");
        assert_eq!(key_at(SRC, at), "server.listen");
        let at = SRC.find("\"1\"").expect("in text");
        assert_eq!(key_at(SRC, at), "storage.name");
        let at = SRC.find("[[storage").expect("in text");
        assert_eq!(key_at(SRC, at), "storage");
        assert_eq!(key_at(SRC, 0), "");
    }

    #[test]
    fn multibyte_text_does_not_split_characters() {
        let src = "name = \"é\"\nx";
        let at = src.find('x').expect("in text");
        assert_eq!(line_col(src, at), LineCol { line: 2, col: 1 });
        // An offset inside 'é' is moved back to its start.
        let e = src.find('é').expect("in text");
        assert_eq!(line_col(src, e + 1), LineCol { line: 1, col: 9 });
    }
}
