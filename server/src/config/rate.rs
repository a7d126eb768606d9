//! Byte counts and rates as the configuration and the CLI write them: a plain integer
//! (`20000000`) or a number with a unit (`"20MB"`, `"512KiB"`, `"1.5 GB"`).
//!
//! Units: `B`; decimal `kB`/`KB`, `MB`, `GB`, `TB` (powers of 1000); binary `KiB`, `MiB`,
//! `GiB`, `TiB` (powers of 1024). Units are matched without regard to case except that
//! `MiB`-style binary units need the `i`. A trailing `/s` is accepted (`"20MB/s"`). The result
//! must be a whole number of bytes of at least 1 and at most 2^63.

/// Parses a byte count (see the module doc); the error says what is wrong, without the key.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim_end();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_')).unwrap_or(t.len());
    let (number, unit) = (t[..split].replace('_', ""), t[split..].trim());
    if number.is_empty() {
        return Err(format!("{text:?} is not a byte count (e.g. 20000000, \"20MB\", \"512KiB\")"));
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000_u64.pow(2),
        "g" | "gb" => 1000_u64.pow(3),
        "t" | "tb" => 1000_u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ))
        }
    };
    let bytes = if number.contains('.') {
        let v: f64 = number.parse().map_err(|_| format!("{text:?}: {number:?} is not a number"))?;
        let b = v * multiplier as f64;
        if !b.is_finite() || b.fract() != 0.0 || b > (1u64 << 63) as f64 {
            return Err(format!("{text:?} is not a whole number of bytes (at most 2^63)"));
        }
        b as u64
    } else {
        let v: u64 = number.parse().map_err(|_| format!("{text:?}: {number:?} is not a number"))?;
        v.checked_mul(multiplier)
            .filter(|b| *b <= 1 << 63)
            .ok_or_else(|| format!("{text:?} is too large (at most 2^63 bytes)"))?
    };
    if bytes == 0 {
        return Err(format!(
            "{text:?} is zero: the smallest limit is 1 byte/s (leave the key out for no limit)"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_suffixed_counts() {
        for (text, want) in [
            ("20000000", 20_000_000),
            ("20MB", 20_000_000),
            ("20 MB", 20_000_000),
            ("20mb/s", 20_000_000),
            ("512KiB", 524_288),
            ("512kib", 524_288),
            ("1.5GB", 1_500_000_000),
            ("1.5 MiB", 1_572_864),
            ("1_000", 1000),
            ("7B", 7),
            ("2k", 2000),
            ("1TiB", 1 << 40),
        ] {
            assert_eq!(parse_bytes(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_counts_say_why() {
        for (text, needle) in [
            ("", "not a byte count"),
            ("MB", "not a byte count"),
            ("20XB", "unknown unit"),
            ("20 M B", "unknown unit"),
            ("0", "zero"),
            ("0MB", "zero"),
            ("0.5", "whole number"),
            ("1.2.3MB", "not a number"),
            ("-5", "not a byte count"),
            ("99999999999TB", "too large"),
            ("1e30", "unknown unit"),
        ] {
            let e = parse_bytes(text).expect_err(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
