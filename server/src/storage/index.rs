//! The in-memory index: oid → position of the object's current data record.
//!
//! Laid out like ZODB's `fsIndex`: oids are grouped by their high 48 bits into buckets, and a
//! bucket is one sorted `Vec<u64>` whose entries pack the oid's low 16 bits above a 48-bit file
//! position. Entries therefore sort by oid, a lookup is a map lookup plus a binary search, and
//! an object costs 8 bytes plus the vector's spare capacity (under 2×). ZODB allocates oids
//! sequentially, so buckets are dense and the index stays well under 32 bytes per object;
//! only oids scattered over the whole 64-bit space (one per bucket) cost more (~60 bytes).
//!
//! Positions are limited to 2^48 − 1 (256 TiB), as in `fsIndex`.

use std::collections::BTreeMap;
use zeoraid_core::ids::Oid;

/// Largest file position the index can hold.
pub const MAX_POS: u64 = (1 << 48) - 1;

/// oid → position of its current record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    buckets: BTreeMap<u64, Vec<u64>>,
    len: usize,
}

fn split(oid: Oid) -> (u64, u16) {
    (oid.get() >> 16, (oid.get() & 0xffff) as u16)
}

fn low(entry: u64) -> u16 {
    (entry >> 48) as u16
}

fn pos(entry: u64) -> u64 {
    entry & MAX_POS
}

fn join(prefix: u64, low: u16) -> Oid {
    Oid::new((prefix << 16) | u64::from(low))
}

/// Where `lo` is in bucket `b` (`Ok`), or where it would go (`Err`), as
/// `binary_search_by_key` answers.
///
/// Entries are sorted and unique, so entry `i` holds a low part of at least `first + i`: `lo`
/// can only sit at or before index `lo - first`. ZODB hands out oids one after the other, so a
/// bucket is usually gap-free and that index is the hit: one memory access, where a binary
/// search of a full bucket (65,536 entries, 512 KiB) takes 16 mostly cache-missing probes.
/// Appends in oid order (a scan, new objects) are answered from the last entry.
fn find(b: &[u64], lo: u16) -> Result<usize, usize> {
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else { return Err(0) };
    if lo > low(last) {
        return Err(b.len());
    }
    let Some(guess) = lo.checked_sub(low(first)) else { return Err(0) };
    let guess = usize::from(guess);
    if b.get(guess).is_some_and(|&e| low(e) == lo) {
        return Ok(guess);
    }
    // Every entry past `guess` is above `lo`, so the answer lies in the prefix.
    b[..b.len().min(guess + 1)].binary_search_by_key(&lo, |&e| low(e))
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no objects.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Position of `oid`'s current record.
    pub fn get(&self, oid: Oid) -> Option<u64> {
        let (prefix, lo) = split(oid);
        let b = self.buckets.get(&prefix)?;
        find(b, lo).ok().map(|i| pos(b[i]))
    }

    /// Sets `oid`'s position. Returns `false` (and changes nothing) when `at` exceeds
    /// [`MAX_POS`].
    #[must_use]
    pub fn insert(&mut self, oid: Oid, at: u64) -> bool {
        if at > MAX_POS {
            return false;
        }
        let (prefix, lo) = split(oid);
        let entry = (u64::from(lo) << 48) | at;
        let b = self.buckets.entry(prefix).or_insert_with(|| Vec::with_capacity(1));
        match find(b, lo) {
            Ok(i) => b[i] = entry,
            Err(i) => {
                b.insert(i, entry);
                self.len += 1;
            }
        }
        true
    }

    /// The largest oid, if any.
    pub fn max_oid(&self) -> Option<Oid> {
        let (&prefix, b) = self.buckets.iter().next_back()?;
        b.last().map(|&e| join(prefix, low(e)))
    }

    /// The smallest oid at or after `from`.
    pub fn first_at_or_after(&self, from: Oid) -> Option<Oid> {
        let (prefix, lo) = split(from);
        for (&p, b) in self.buckets.range(prefix..) {
            let start = if p == prefix { b.partition_point(|&e| low(e) < lo) } else { 0 };
            if let Some(&e) = b.get(start) {
                return Some(join(p, low(e)));
            }
        }
        None
    }

    /// Every (oid, position), in oid order.
    pub fn iter(&self) -> impl Iterator<Item = (Oid, u64)> + '_ {
        self.buckets.iter().flat_map(|(&p, b)| b.iter().map(move |&e| (join(p, low(e)), pos(e))))
    }

    /// The raw buckets, for the index cache: (oid >> 16, packed entries).
    pub(crate) fn buckets(&self) -> impl Iterator<Item = (u64, &[u64])> + '_ {
        self.buckets.iter().map(|(&p, b)| (p, b.as_slice()))
    }

    /// Rebuilds from raw buckets; `None` unless every bucket is non-empty, strictly sorted and
    /// the prefixes increase (what [`Index::buckets`] produces).
    pub(crate) fn from_buckets(raw: Vec<(u64, Vec<u64>)>) -> Option<Index> {
        let mut buckets = BTreeMap::new();
        let mut len = 0;
        let mut last_prefix = None;
        for (p, b) in raw {
            if p > u64::MAX >> 16 || last_prefix.is_some_and(|l| l >= p) || b.is_empty() {
                return None;
            }
            if b.windows(2).any(|w| low(w[0]) >= low(w[1])) {
                return None;
            }
            last_prefix = Some(p);
            len += b.len();
            buckets.insert(p, b);
        }
        Some(Index { buckets, len })
    }

    /// Heap bytes held (vector capacities and map entries), to check the memory target.
    pub fn heap_bytes(&self) -> usize {
        // A BTreeMap leaf holds up to 11 entries of (key, Vec) plus ~16 bytes of bookkeeping;
        // count each entry at its share of a full node, plus one node's slack per map.
        let entry = size_of::<u64>() + size_of::<Vec<u64>>();
        let map = self.buckets.len() * (entry + 2) + 11 * entry;
        map + self.buckets.values().map(|b| b.capacity() * 8).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap as Model;

    #[test]
    fn dense_index_stays_under_32_bytes_per_object() {
        let mut ix = Index::new();
        let n = 200_000u64;
        for i in 0..n {
            assert!(ix.insert(Oid::new(i), 4 + i * 100));
        }
        assert_eq!(ix.len(), n as usize);
        let per = ix.heap_bytes() as f64 / n as f64;
        assert!(per <= 32.0, "{per} bytes per object");
        // Scattered inside a 4× range (oids freed by aborted transactions, say).
        let mut ix = Index::new();
        let mut x = 12345u64;
        for _ in 0..n {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            assert!(ix.insert(Oid::new((x >> 20) % (4 * n)), 4));
        }
        let per = ix.heap_bytes() as f64 / ix.len() as f64;
        assert!(per <= 32.0, "{per} bytes per object");
    }

    #[test]
    fn positions_past_48_bits_are_refused() {
        let mut ix = Index::new();
        assert!(ix.insert(Oid::new(1), MAX_POS));
        assert!(!ix.insert(Oid::new(1), MAX_POS + 1));
        assert_eq!(ix.get(Oid::new(1)), Some(MAX_POS));
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreemap(ops in proptest::collection::vec((0u64..300_000, 1u64..MAX_POS), 0..300),
                                   probes in proptest::collection::vec(any::<u64>(), 0..20)) {
            let mut ix = Index::new();
            let mut m = Model::new();
            for (o, p) in ops {
                let o = if o % 7 == 0 { o << 40 } else { o };
                prop_assert!(ix.insert(Oid::new(o), p));
                m.insert(o, p);
            }
            prop_assert_eq!(ix.len(), m.len());
            prop_assert_eq!(ix.max_oid().map(Oid::get), m.keys().next_back().copied());
            let listed: Vec<(u64, u64)> = ix.iter().map(|(o, p)| (o.get(), p)).collect();
            let want: Vec<(u64, u64)> = m.iter().map(|(&o, &p)| (o, p)).collect();
            prop_assert_eq!(&listed, &want);
            for probe in probes.into_iter().chain(m.keys().copied()) {
                prop_assert_eq!(ix.get(Oid::new(probe)), m.get(&probe).copied());
                prop_assert_eq!(ix.first_at_or_after(Oid::new(probe)).map(Oid::get),
                                m.range(probe..).next().map(|(&o, _)| o));
            }
            let raw = ix.buckets().map(|(p, b)| (p, b.to_vec())).collect();
            prop_assert_eq!(Index::from_buckets(raw), Some(ix));
        }

        /// Nearly gap-free buckets, inserted in any order: the guess of `find` is then
        /// sometimes right, sometimes past a gap, sometimes past the bucket's end.
        #[test]
        fn dense_buckets_behave_like_a_btreemap(
            ops in proptest::collection::vec((0u64..700, 1u64..MAX_POS), 0..600),
            probes in proptest::collection::vec(0u64..800, 0..50),
        ) {
            let mut ix = Index::new();
            let mut m = Model::new();
            for (o, p) in ops {
                // Two buckets: 0..=599 in the first, the rest at the start of the second.
                let o = if o < 600 { o } else { 65_536 + o - 600 };
                prop_assert!(ix.insert(Oid::new(o), p));
                m.insert(o, p);
            }
            prop_assert_eq!(ix.len(), m.len());
            for probe in probes.into_iter().chain(m.keys().copied()).chain([65_535, 65_536, 65_537]) {
                prop_assert_eq!(ix.get(Oid::new(probe)), m.get(&probe).copied(), "oid {}", probe);
            }
            let listed: Vec<(u64, u64)> = ix.iter().map(|(o, p)| (o.get(), p)).collect();
            let want: Vec<(u64, u64)> = m.iter().map(|(&o, &p)| (o, p)).collect();
            prop_assert_eq!(&listed, &want);
        }
    }
}
