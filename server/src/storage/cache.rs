//! zeoraid's index cache: `Data.fs.zr-index`, next to `Data.fs`.
//!
//! It lets an open skip scanning the part of `Data.fs` it covers. It is only a cache: a
//! missing, stale or damaged one is ignored (with a warning) and the file is scanned.
//!
//! Layout: a bincode header (standard config) `(magic, version, data_len, last_tid, buckets,
//! entries, checksum)`, then the body: per bucket `prefix: u64 LE, count: u32 LE, count × u64
//! LE` packed entries as [`Index`] keeps them. `checksum` is FNV-1a 64 of the body, a word at a time (see
//! [`checksum`]).
//!
//! Written with write-to-temp, fsync, rename, fsync directory, so a crash leaves the old cache
//! or the new one. Before use it is validated against `Data.fs`: the file must be at least
//! `data_len` long, the transaction ending at `data_len` must have tid `last_tid`, and the
//! index must point at that transaction's records (as FileStorage's `_check_sanity` does).

use super::engine::{Committed, Storage};
use super::error::{Result, StorageError};
use super::file::{OpenMode, StorageDir, StorageFile};
use super::format::{MAGIC_LEN, STATUS_UNDONE};
use super::index::{Index, MAX_POS};
use std::collections::BTreeMap;
use std::io;
use zeoraid_core::ids::{Oid, Tid};

const CACHE_MAGIC: [u8; 8] = *b"ZRINDEX\0";
/// 2: the checksum takes the body 8 bytes at a time (version 1 hashed it byte by byte).
const VERSION: u32 = 2;

type Header = ([u8; 8], u32, u64, u64, u64, u64, u64);

/// The cache file's name for `Data.fs` named `name`.
pub(crate) fn file_name(name: &str) -> String {
    format!("{name}.zr-index")
}

/// FNV-1a over the body taken as little-endian 64-bit words (a last partial word padded with
/// zeros), then over its length. It guards against damage, not against an adversary: every step
/// is a bijection of the state, so a change to any single word always changes the result. Eight
/// bytes a step keeps it to a few milliseconds for the 8 MB cache of a million objects (byte by
/// byte, it took 40% of an open from the cache).
fn checksum(data: &[u8]) -> u64 {
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(a)).wrapping_mul(PRIME);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut a = [0u8; 8];
        a[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(a)).wrapping_mul(PRIME);
    }
    (h ^ data.len() as u64).wrapping_mul(PRIME)
}

/// Writes the cache for the committed state.
pub(crate) fn save<D: StorageDir>(s: &Storage<D>) -> Result<()> {
    // A pack replaces Data.fs and removes the cache under this lock.
    let _pack = s.pack.cache_lock();
    let bytes = {
        let c = s.committed();
        encode(&c)?
    };
    let name = file_name(&s.name);
    let tmp = format!("{name}.tmp");
    let shown = s.dir.display(&tmp);
    let io = |op: &'static str| {
        let path = shown.clone();
        move |e: io::Error| StorageError::Io { op, path, source: e }
    };
    let f = s.dir.open(&tmp, OpenMode::Truncate).map_err(io("create"))?;
    f.write_at(&bytes, 0).map_err(io("write"))?;
    f.sync().map_err(io("sync"))?;
    drop(f);
    s.dir.rename(&tmp, &name).map_err(io("rename"))?;
    s.dir.sync().map_err(io("sync directory of"))?;
    Ok(())
}

fn encode(c: &Committed) -> Result<Vec<u8>> {
    let mut body = Vec::with_capacity(c.index.len() * 8 + 64);
    let mut nb = 0u64;
    for (prefix, b) in c.index.buckets() {
        body.extend_from_slice(&prefix.to_le_bytes());
        body.extend_from_slice(&(b.len() as u32).to_le_bytes());
        for e in b {
            body.extend_from_slice(&e.to_le_bytes());
        }
        nb += 1;
    }
    let header: Header =
        (CACHE_MAGIC, VERSION, c.end, c.last_tid.get(), nb, c.index.len() as u64, checksum(&body));
    let mut out = bincode::encode_to_vec(header, bincode::config::standard()).map_err(|e| {
        StorageError::Io { op: "encode index cache", path: String::new(), source: io::Error::other(e) }
    })?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Loads and validates the cache; `None` (after a warning, unless there is no cache) when it
/// cannot be used for a `Data.fs` of `len` bytes.
pub(crate) fn load<D: StorageDir>(s: &Storage<D>, len: u64) -> Option<Committed> {
    let name = file_name(&s.name);
    match s.dir.exists(&name) {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => {
            tracing::warn!(path = %s.dir.display(&name), error = %e, "cannot stat the index cache; scanning");
            return None;
        }
    }
    match load_checked(s, &name, len) {
        Ok(c) => Some(c),
        Err(why) => {
            tracing::warn!(path = %s.dir.display(&name), reason = %why, "ignoring the index cache; scanning");
            None
        }
    }
}

fn load_checked<D: StorageDir>(
    s: &Storage<D>,
    name: &str,
    len: u64,
) -> std::result::Result<Committed, String> {
    let f = s.dir.open(name, OpenMode::Read).map_err(|e| e.to_string())?;
    let n = f.len().map_err(|e| e.to_string())?;
    let mut bytes = vec![0u8; usize::try_from(n).map_err(|_| "too large".to_owned())?];
    f.read_at(&mut bytes, 0).map_err(|e| e.to_string())?;
    let c = decode(&bytes)?;
    if c.end > len || c.end < MAGIC_LEN {
        return Err(format!("it covers {} bytes but Data.fs has {len}", c.end));
    }
    validate(s, &c)?;
    Ok(c)
}

fn decode(bytes: &[u8]) -> std::result::Result<Committed, String> {
    let (h, used): (Header, usize) = bincode::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| format!("bad header: {e}"))?;
    let (magic, version, end, last_tid, nb, ne, sum) = h;
    if magic != CACHE_MAGIC || version != VERSION {
        return Err(format!("not a zeoraid index cache of version {VERSION}"));
    }
    let body = &bytes[used..];
    if checksum(body) != sum {
        return Err("checksum mismatch".into());
    }
    let mut raw = Vec::new();
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> std::result::Result<&[u8], String> {
        let s = body.get(*at..*at + n).ok_or_else(|| "truncated body".to_owned())?;
        *at += n;
        Ok(s)
    };
    let mut total = 0u64;
    for _ in 0..nb {
        let mut p = [0u8; 8];
        p.copy_from_slice(take(&mut at, 8)?);
        let mut c = [0u8; 4];
        c.copy_from_slice(take(&mut at, 4)?);
        let count = u32::from_le_bytes(c) as usize;
        let entries = take(&mut at, count.checked_mul(8).ok_or("bad count")?)?;
        let b: Vec<u64> = entries
            .chunks_exact(8)
            .map(|e| {
                let mut a = [0u8; 8];
                a.copy_from_slice(e);
                u64::from_le_bytes(a)
            })
            .collect();
        // Checked here, while the entries are in the CPU's cache, rather than in a second pass.
        if b.iter().any(|&e| e & MAX_POS >= end) {
            return Err("index points past the covered data".into());
        }
        total += count as u64;
        raw.push((u64::from_le_bytes(p), b));
    }
    if at != body.len() || total != ne {
        return Err("body does not match its header".into());
    }
    let index = Index::from_buckets(raw).ok_or("buckets out of order")?;
    Ok(Committed::new(index, end, Tid::new(last_tid)))
}

/// Checks the cache against the transaction that ends where it ends.
fn validate<D: StorageDir>(s: &Storage<D>, c: &Committed) -> std::result::Result<(), String> {
    if c.end == MAGIC_LEN {
        return if c.last_tid == Tid::ZERO && c.index.is_empty() {
            Ok(())
        } else {
            Err("inconsistent empty cache".into())
        };
    }
    let (tpos, h) = s
        .prev_txn(c.end, c.end)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no transaction before its end".to_owned())?;
    if h.tid != c.last_tid {
        return Err(format!("Data.fs has tid {} where the cache expects {}", h.tid, c.last_tid));
    }
    if h.status == STATUS_UNDONE {
        return Ok(());
    }
    let mut newest: BTreeMap<Oid, u64> = BTreeMap::new();
    let tend = tpos + h.tlen;
    let mut pos = tpos + h.header_len();
    while pos < tend {
        let r = s.read_data_header(pos, tend, None).map_err(|e| e.to_string())?;
        newest.insert(r.h.oid, pos);
        pos += r.h.record_len().unwrap_or(u64::MAX);
    }
    for (oid, pos) in newest {
        if c.index.get(oid) != Some(pos) {
            return Err(format!("index entry of {oid} does not match the last transaction"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_sees_every_bit_flip_and_the_length() {
        let body: Vec<u8> = (0..29u8).map(|b| b.wrapping_mul(37)).collect();
        let sum = checksum(&body);
        for i in 0..body.len() {
            for bit in 0..8 {
                let mut b = body.clone();
                b[i] ^= 1 << bit;
                assert_ne!(checksum(&b), sum, "byte {i} bit {bit}");
            }
        }
        // Zero padding of the last word is not the same as zero bytes.
        let zeros: Vec<u64> = (0..=16).map(|n| checksum(&vec![0u8; n])).collect();
        for (i, a) in zeros.iter().enumerate() {
            assert!(zeros[i + 1..].iter().all(|b| b != a), "length {i}");
        }
    }

    #[test]
    fn a_cache_pointing_past_its_end_is_refused() {
        let mut index = Index::new();
        assert!(index.insert(Oid::new(1), 100));
        let c = Committed::new(index, 200, Tid::new(5));
        let bytes = encode(&c).expect("encode");
        assert_eq!(decode(&bytes).expect("decode").index, c.index);
        let c = Committed::new(c.index, 100, Tid::new(5));
        let bytes = encode(&c).expect("encode");
        assert_eq!(decode(&bytes).err().as_deref(), Some("index points past the covered data"));
    }
}
