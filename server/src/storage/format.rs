//! The FileStorage record layouts (`ZODB/FileStorage/format.py`), byte for byte.
//!
//! ```text
//! file        := "FS30" transaction*         ("FS21" for files written by ZODB on Python 2)
//! transaction := tid:8 tlen:u64 status:1 ulen:u16 dlen:u16 elen:u16      (23 bytes, ">8sQcHHH")
//!                user:ulen description:dlen extension:elen
//!                data_record*
//!                tlen:u64                                                 (redundant copy)
//! data_record := oid:8 tid:8 prev:u64 tloc:u64 vlen:u16=0 plen:u64       (42 bytes, ">8s8sQQHQ")
//!                ( pickle:plen | back:u64 when plen = 0 )
//! ```
//! All integers are big-endian. `tlen` counts the transaction from its first byte up to, but
//! not including, the redundant copy, so the next transaction starts at `tpos + tlen + 8`.
//! `prev` is the position of the object's previous record (0 for none), `tloc` the position of
//! the enclosing transaction. A back-pointer of 0 means "no data": a deleted object or an
//! undone creation. The extension is a pickle (protocol 3 when ZODB writes it) of the
//! transaction's extension dict, or empty when the dict is empty.
//!
//! Decoders here only split bytes into fields; the engine checks the fields against the file
//! (bounds, `tloc`, order) and reports every violation with its offset.

use zeoraid_core::ids::{Oid, Tid};

/// The file magic ZODB 5 and 6 write on Python 3 (`ZODB._compat.FILESTORAGE_MAGIC`): its
/// pickles are protocol 3. Python 3's FileStorage refuses any other magic.
pub const MAGIC: &[u8; 4] = b"FS30";
/// The magic of files written by ZODB on Python 2 (protocol-2 pickles). Same record layout;
/// Python 3's FileStorage refuses these files until they are converted (`zodbupdate`).
pub const MAGIC_PY2: &[u8; 4] = b"FS21";
/// Length of the magic, which is where the first transaction starts.
pub const MAGIC_LEN: u64 = 4;
/// Length of a transaction header before user, description and extension.
pub const TXN_HEADER_LEN: u64 = 23;
/// Length of a data record header.
pub const DATA_HEADER_LEN: u64 = 42;

/// Status of a committed, unpacked transaction.
pub const STATUS_NORMAL: u8 = b' ';
/// Status of a transaction written by pack.
pub const STATUS_PACKED: u8 = b'p';
/// Status of a transaction being committed (written at vote, cleared at finish).
pub const STATUS_CHECKPOINT: u8 = b'c';
/// Status FileStorage no longer writes ("undone"); its records are skipped.
pub const STATUS_UNDONE: u8 = b'u';

/// Offset of the status byte inside a transaction header.
pub const STATUS_OFFSET: u64 = 16;

/// A transaction header's fixed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnHeaderRec {
    /// Transaction id.
    pub tid: Tid,
    /// Length of the transaction without the redundant trailing copy.
    pub tlen: u64,
    /// Status byte.
    pub status: u8,
    /// User length.
    pub ulen: u16,
    /// Description length.
    pub dlen: u16,
    /// Extension length.
    pub elen: u16,
}

impl TxnHeaderRec {
    /// Splits the 23 header bytes.
    pub fn decode(b: &[u8; 23]) -> TxnHeaderRec {
        TxnHeaderRec {
            tid: Tid::new(be64(&b[0..8])),
            tlen: be64(&b[8..16]),
            status: b[16],
            ulen: be16(&b[17..19]),
            dlen: be16(&b[19..21]),
            elen: be16(&b[21..23]),
        }
    }

    /// The 23 header bytes.
    pub fn encode(&self) -> [u8; 23] {
        let mut b = [0u8; 23];
        b[0..8].copy_from_slice(&self.tid.to_bytes());
        b[8..16].copy_from_slice(&self.tlen.to_be_bytes());
        b[16] = self.status;
        b[17..19].copy_from_slice(&self.ulen.to_be_bytes());
        b[19..21].copy_from_slice(&self.dlen.to_be_bytes());
        b[21..23].copy_from_slice(&self.elen.to_be_bytes());
        b
    }

    /// Length of header plus user, description and extension: where the data records start,
    /// relative to the transaction.
    pub fn header_len(&self) -> u64 {
        TXN_HEADER_LEN + u64::from(self.ulen) + u64::from(self.dlen) + u64::from(self.elen)
    }
}

/// A data record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeaderRec {
    /// Object.
    pub oid: Oid,
    /// Revision tid.
    pub tid: Tid,
    /// Position of the object's previous record, 0 for none.
    pub prev: u64,
    /// Position of the enclosing transaction.
    pub tloc: u64,
    /// Version length: always 0 since ZODB 3.9 (a non-zero value is refused).
    pub vlen: u16,
    /// Pickle length; 0 means an 8-byte back-pointer follows instead.
    pub plen: u64,
}

impl DataHeaderRec {
    /// Splits the 42 header bytes.
    pub fn decode(b: &[u8; 42]) -> DataHeaderRec {
        DataHeaderRec {
            oid: Oid::new(be64(&b[0..8])),
            tid: Tid::new(be64(&b[8..16])),
            prev: be64(&b[16..24]),
            tloc: be64(&b[24..32]),
            vlen: be16(&b[32..34]),
            plen: be64(&b[34..42]),
        }
    }

    /// The 42 header bytes.
    pub fn encode(&self) -> [u8; 42] {
        let mut b = [0u8; 42];
        b[0..8].copy_from_slice(&self.oid.to_bytes());
        b[8..16].copy_from_slice(&self.tid.to_bytes());
        b[16..24].copy_from_slice(&self.prev.to_be_bytes());
        b[24..32].copy_from_slice(&self.tloc.to_be_bytes());
        b[32..34].copy_from_slice(&self.vlen.to_be_bytes());
        b[34..42].copy_from_slice(&self.plen.to_be_bytes());
        b
    }

    /// Length of the whole record (`None` if it overflows, which only a corrupt `plen` does).
    pub fn record_len(&self) -> Option<u64> {
        DATA_HEADER_LEN.checked_add(if self.plen == 0 { 8 } else { self.plen })
    }
}

/// Reads a big-endian u64 from exactly 8 bytes.
pub fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// A printable form of a status byte for error messages.
pub fn show_status(s: u8) -> String {
    format!("{:?}", char::from(s))
}

// ---- undo ids -------------------------------------------------------------------------------

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// FileStorage's undo id of a transaction: `base64.encodebytes(tid).rstrip()`, i.e. the 12
/// characters of standard padded base64.
pub fn undo_id(tid: Tid) -> Vec<u8> {
    let b = tid.to_bytes();
    let mut out = Vec::with_capacity(12);
    for chunk in b.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

/// The tid inside an undo id, accepting what Python's `base64.decodebytes` accepts for a
/// valid id (surrounding whitespace, newlines). `None` unless it decodes to exactly 8 bytes.
pub fn parse_undo_id(id: &[u8]) -> Option<Tid> {
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::with_capacity(9);
    let mut pad = 0;
    for &c in id {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                pad += 1;
                continue;
            }
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return None,
        };
        if pad > 0 {
            return None;
        }
        bits = (bits << 6) | u32::from(v);
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    if pad > 2 {
        return None;
    }
    Tid::from_slice(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_layouts_match_python_struct() {
        // struct.pack(">8sQcHHH", b"\x03\x4f\xcd\x80\x00\x00\x00\x01", 100, b" ", 1, 2, 3)
        let h = TxnHeaderRec {
            tid: Tid::new(0x034f_cd80_0000_0001),
            tlen: 100,
            status: b' ',
            ulen: 1,
            dlen: 2,
            elen: 3,
        };
        let want = [0x03, 0x4f, 0xcd, 0x80, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 100, b' ', 0, 1, 0, 2, 0, 3];
        assert_eq!(h.encode(), want);
        assert_eq!(TxnHeaderRec::decode(&want), h);
        assert_eq!(h.header_len(), 29);

        // struct.pack(">8s8sQQHQ", oid, tid, 4, 4, 0, 7)
        let d = DataHeaderRec { oid: Oid::new(1), tid: Tid::new(2), prev: 4, tloc: 4, vlen: 0, plen: 7 };
        let e = d.encode();
        assert_eq!(&e[0..8], &[0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&e[32..34], &[0, 0]);
        assert_eq!(&e[34..42], &[0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(DataHeaderRec::decode(&e), d);
        assert_eq!(d.record_len(), Some(49));
        assert_eq!(DataHeaderRec { plen: 0, ..d }.record_len(), Some(50));
        assert_eq!(DataHeaderRec { plen: u64::MAX, ..d }.record_len(), None);
    }

    #[test]
    fn undo_id_matches_python_encodebytes() {
        // base64.encodebytes(b'\x03\xeb\x2d\x4f\x95\x55\x55\x55').rstrip() == b'A+stT5VVVVU='
        let tid = Tid::new(0x03eb_2d4f_9555_5555);
        assert_eq!(undo_id(tid), b"A+stT5VVVVU=");
        assert_eq!(parse_undo_id(b"A+stT5VVVVU="), Some(tid));
        assert_eq!(parse_undo_id(b"A+stT5VVVVU=\n"), Some(tid));
        assert_eq!(undo_id(Tid::new(1)), b"AAAAAAAAAAE=");
        assert_eq!(parse_undo_id(b"AAAA"), None);
        assert_eq!(parse_undo_id(b"A+stT5VVVVU=x"), None);
        assert_eq!(parse_undo_id(b"A+st!5VVVVU="), None);
    }

    proptest! {
        #[test]
        fn undo_ids_round_trip(n: u64) {
            let id = undo_id(Tid::new(n));
            prop_assert_eq!(id.len(), 12);
            prop_assert_eq!(parse_undo_id(&id), Some(Tid::new(n)));
        }

        #[test]
        fn headers_round_trip(tid: u64, tlen: u64, status: u8, u: u16, d: u16, e: u16,
                              oid: u64, prev: u64, tloc: u64, plen: u64) {
            let h = TxnHeaderRec { tid: Tid::new(tid), tlen, status, ulen: u, dlen: d, elen: e };
            prop_assert_eq!(TxnHeaderRec::decode(&h.encode()), h);
            let r = DataHeaderRec { oid: Oid::new(oid), tid: Tid::new(tid), prev, tloc, vlen: 0, plen };
            prop_assert_eq!(DataHeaderRec::decode(&r.encode()), r);
        }
    }
}
