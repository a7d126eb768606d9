//! ZODB's blob directory layouts (`ZODB.blob.BushyLayout`, `LawnLayout`) and file names.
//!
//! Facts checked against ZODB 6.4 (its `blob.py` and a blob directory written by
//! `FileStorage(blob_dir=...)`):
//! * The layout's name is in the file `.layout` at the top of the directory, exactly `bushy` or
//!   `lawn` with no newline (readers strip whitespace). Without the file, ZODB picks `bushy`
//!   when the directory is missing or holds only hidden entries, else `lawn`.
//! * **bushy**: one directory level per oid byte, most significant first, each named `0x`
//!   plus two lowercase hex digits: oid 1 lives in `0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x01`.
//!   (Readers accept one or two digits per level.)
//! * **lawn** (deprecated by ZODB): one directory per oid, named by `oid_repr`: `0x` plus the
//!   hex digits without leading zeros, padded to an even count (`0x00`, `0x01`, `0x0100`).
//! * A committed blob file is `<tid_repr>.blob` in its oid's directory, `tid_repr` being the
//!   same `0x…` form (`0x03441422948b4399.blob`). Committed files are made read-only.
//! * Temporary files (ZEO uploads) go to `tmp/` at the top of the directory.

use zeoraid_core::ids::{Oid, Tid};

/// The marker file naming the layout.
pub const LAYOUT_MARKER: &str = ".layout";
/// The directory for temporary files (uploads, staged blobs).
pub const TMP_DIR: &str = "tmp";
/// The suffix of committed blob files.
pub const BLOB_SUFFIX: &str = ".blob";

/// A blob directory layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Eight directory levels, one per oid byte (ZODB's default).
    Bushy,
    /// One directory per oid (deprecated by ZODB, still read and written).
    Lawn,
}

impl Layout {
    /// The name written in `.layout`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Bushy => "bushy",
            Layout::Lawn => "lawn",
        }
    }

    /// The layout named by the content of a `.layout` file (surrounding whitespace ignored).
    pub fn parse(marker: &str) -> Option<Layout> {
        match marker.trim() {
            "bushy" => Some(Layout::Bushy),
            "lawn" => Some(Layout::Lawn),
            _ => None,
        }
    }

    /// The directory of `oid`, relative to the blob directory, `/`-separated.
    pub fn oid_dir(self, oid: Oid) -> String {
        match self {
            Layout::Bushy => {
                let b = oid.to_bytes();
                let parts: Vec<String> = b.iter().map(|x| format!("0x{x:02x}")).collect();
                parts.join("/")
            }
            Layout::Lawn => hex_repr(oid.get()),
        }
    }

    /// The path components of `oid`'s directory.
    pub fn oid_dir_parts(self, oid: Oid) -> Vec<String> {
        self.oid_dir(oid).split('/').map(str::to_owned).collect()
    }

    /// The committed blob file of revision `tid` of `oid`, relative to the blob directory.
    pub fn blob_file(self, oid: Oid, tid: Tid) -> String {
        format!("{}/{}", self.oid_dir(oid), blob_file_name(tid))
    }

    /// How many directory levels an oid's directory has.
    pub fn depth(self) -> usize {
        match self {
            Layout::Bushy => 8,
            Layout::Lawn => 1,
        }
    }

    /// The oid of a directory path made of `parts` (as [`Layout::oid_dir_parts`] gives), if it
    /// is one that ZODB's `path_to_oid` accepts.
    pub fn parse_oid_dir(self, parts: &[&str]) -> Option<Oid> {
        if parts.len() != self.depth() {
            return None;
        }
        match self {
            Layout::Bushy => {
                let mut v = 0u64;
                for p in parts {
                    let h = p.strip_prefix("0x")?;
                    if h.is_empty()
                        || h.len() > 2
                        || !h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
                    {
                        return None;
                    }
                    v = (v << 8) | u64::from_str_radix(h, 16).ok()?;
                }
                Some(Oid::new(v))
            }
            Layout::Lawn => parse_repr(parts[0]).map(Oid::new),
        }
    }
}

/// ZODB's `oid_repr`/`tid_repr`: `0x` and the hex digits without leading zeros, padded to an
/// even count (at least `00`).
pub fn hex_repr(v: u64) -> String {
    let s = format!("{v:x}");
    if s.len() % 2 == 1 {
        format!("0x0{s}")
    } else {
        format!("0x{s}")
    }
}

/// The inverse of [`hex_repr`] as ZODB's `repr_to_oid` reads it: an optional `0x`, then an
/// even number (2 to 16) of hex digits.
pub fn parse_repr(s: &str) -> Option<u64> {
    let h = s.strip_prefix("0x").unwrap_or(s);
    if h.is_empty() || h.len() > 16 || h.len() % 2 != 0 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(h, 16).ok()
}

/// The file name of a committed blob revision: `<tid_repr>.blob`.
pub fn blob_file_name(tid: Tid) -> String {
    format!("{}{BLOB_SUFFIX}", hex_repr(tid.get()))
}

/// The tid of a committed blob file name, if it is one (`splitBlobFilename`).
pub fn parse_blob_file_name(name: &str) -> Option<Tid> {
    parse_repr(name.strip_suffix(BLOB_SUFFIX)?).map(Tid::new)
}

/// Whether a data record is a blob record, as ZODB's `is_blob_record` decides by unpickling
/// the record's first pickle (the class) with ZODB's protocol-3 unpickler: the pickle is
/// exactly the global `ZODB.blob.Blob` (opcode `GLOBAL`, with optional `PROTO` 0 to 3 and memo
/// stores). Protocol 4 and 5 pickles are not blob records for ZODB (its unpickler refuses
/// them), so they are not here either.
pub fn is_blob_record(data: &[u8]) -> bool {
    first_class_is_blob(data).unwrap_or(false)
}

fn first_class_is_blob(d: &[u8]) -> Option<bool> {
    let mut i = 0;
    if *d.first()? == 0x80 {
        if *d.get(1)? > 3 {
            return Some(false);
        }
        i = 2;
    }
    if *d.get(i)? != b'c' {
        return Some(false);
    }
    let rest = d.get(i + 1..)?;
    let Some(rest) = rest.strip_prefix(b"ZODB.blob\nBlob\n".as_slice()) else { return Some(false) };
    // Memo stores may follow: PUT (decimal line), BINPUT (1 byte), LONG_BINPUT (4 bytes).
    let mut j = 0;
    loop {
        match *rest.get(j)? {
            b'p' => j += rest.get(j..)?.iter().position(|&b| b == b'\n')? + 1,
            b'q' => j += 2,
            b'r' => j += 5,
            op => return Some(op == b'.'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bushy_paths_are_as_zodb_writes_them() {
        let l = Layout::Bushy;
        assert_eq!(l.oid_dir(Oid::new(1)), "0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x01");
        assert_eq!(l.oid_dir(Oid::new(0x0102_0304_0506_a7b8)), "0x01/0x02/0x03/0x04/0x05/0x06/0xa7/0xb8");
        assert_eq!(
            l.blob_file(Oid::new(1), Tid::new(0x040d_4132_d9e3_6ecc)),
            "0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x01/0x040d4132d9e36ecc.blob"
        );
        let parts = ["0x01", "0x02", "0x03", "0x04", "0x05", "0x06", "0xa7", "0xb8"];
        assert_eq!(l.parse_oid_dir(&parts), Some(Oid::new(0x0102_0304_0506_a7b8)));
        // ZODB's pattern: one or two lowercase digits per level, exactly eight levels.
        assert_eq!(
            l.parse_oid_dir(&["0x0", "0x0", "0x0", "0x0", "0x0", "0x0", "0x0", "0x7"]),
            Some(Oid::new(7))
        );
        assert_eq!(l.parse_oid_dir(&["0x00"; 7]), None);
        assert_eq!(l.parse_oid_dir(&["0x00", "0x00", "0x00", "0x00", "0x00", "0x00", "0x00", "0xAB"]), None);
        assert_eq!(l.parse_oid_dir(&["0x00", "0x00", "0x00", "0x00", "0x00", "0x00", "0x00", "tmp"]), None);
    }

    #[test]
    fn lawn_and_tid_names_strip_leading_zeros_to_an_even_count() {
        assert_eq!(Layout::Lawn.oid_dir(Oid::new(0)), "0x00");
        assert_eq!(Layout::Lawn.oid_dir(Oid::new(0x123)), "0x0123");
        assert_eq!(Layout::Lawn.parse_oid_dir(&["0x0123"]), Some(Oid::new(0x123)));
        assert_eq!(Layout::Lawn.parse_oid_dir(&["0x123"]), None);
        assert_eq!(Layout::Lawn.parse_oid_dir(&["tmp"]), None);
        assert_eq!(blob_file_name(Tid::new(5)), "0x05.blob");
        assert_eq!(parse_blob_file_name("0x03441422948b4399.blob"), Some(Tid::new(0x0344_1422_948b_4399)));
        assert_eq!(parse_blob_file_name("0x05.blob"), Some(Tid::new(5)));
        assert_eq!(parse_blob_file_name("0x05.tmp"), None);
        assert_eq!(parse_blob_file_name("0x0102030405060708090a.blob"), None);
        assert_eq!(Layout::parse("bushy\n"), Some(Layout::Bushy));
        assert_eq!(Layout::parse("lawn"), Some(Layout::Lawn));
        assert_eq!(Layout::parse("flat"), None);
    }

    #[test]
    fn blob_records_are_recognised_by_their_class_pickle() {
        // What ZODB 6.4 writes for a Blob (protocol 3), then protocols 0 and 2.
        assert!(is_blob_record(b"\x80\x03cZODB.blob\nBlob\nq\x00.\x80\x03N."));
        assert!(is_blob_record(b"cZODB.blob\nBlob\np0\n.N."));
        assert!(is_blob_record(b"\x80\x02cZODB.blob\nBlob\nr\x00\x00\x00\x00."));
        // ZODB's unpickler refuses protocol 4, so ZODB says no.
        assert!(!is_blob_record(
            b"\x80\x04\x95\x16\x00\x00\x00\x00\x00\x00\x00\x8c\tZODB.blob\x94\x8c\x04Blob\x94\x93\x94.N."
        ));
        // Other classes, the (class, args) form, and damage are not.
        assert!(!is_blob_record(b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03}q\x01."));
        assert!(!is_blob_record(b"\x80\x03cZODB.blob\nBlob\nq\x00N\x86q\x01.N."));
        assert!(!is_blob_record(b"\x80\x03cZODB.blob\nBlobX\nq\x00."));
        assert!(!is_blob_record(b"\x80\x03cZODB.blob\nBlob"));
        assert!(!is_blob_record(b""));
        assert!(!is_blob_record(b"ZODB.blob"));
        assert!(!is_blob_record(b"\x80\x03cZODB.blob\nBlob\nq"));
    }
}
