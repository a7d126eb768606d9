//! Times `Storage::pack` on a `Data.fs` of many transactions.
//!
//! ```text
//! cargo run --release -p zeoraid-server --example pack_bench -- DIR [TRANSACTIONS] [OBJECTS]
//! ```
//! Writes `DIR/Data.fs` (TRANSACTIONS transactions, default 100000, each storing two of OBJECTS
//! objects, default 10000, with 500-byte records; every 100th is an undo of the one before it),
//! keeps a copy `DIR/Data.fs.orig`, then packs to the middle transaction and prints the report;
//! then restores the copy and packs to the last transaction. The packed files are kept as
//! `DIR/Data.fs.middle` and `DIR/Data.fs.last`. Commits run without fsync (only
//! the build is faster; the pack always fsyncs). The tid of each pack time is printed so that
//! Python's FileStorage can pack a copy to the same time (`stop = pack_time - 1`).

use std::path::PathBuf;
use std::time::Instant;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::types::TxnStatus;
use zeoraid_server::storage::{format, BeginTid, Options, Storage, TxnMeta};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: pack_bench DIR [TRANSACTIONS] [OBJECTS]")?);
    let txns: u64 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let objects: u64 = args.next().map_or(Ok(10_000), |a| a.parse())?;
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("Data.fs");
    for f in ["Data.fs", "Data.fs.zr-index", "Data.fs.pack"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let started = Instant::now();
    let (s, _) = Storage::open_path(&path, Options { fsync: false, ..Options::default() })?;
    let mut serials = vec![Tid::ZERO; objects as usize];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut tids = Vec::with_capacity(txns as usize);
    let data = vec![0x42u8; 500];
    for i in 0..txns {
        let tid = Tid::new(0x03ff_0000_0000_0000 + (i + 1) * 1000);
        let meta = TxnMeta::with_raw_extension("bench".into(), format!("txn {i}").into(), Default::default());
        s.begin(meta, BeginTid::Exactly(tid), TxnStatus::NORMAL)?;
        let mut changed = Vec::new();
        if i % 100 == 99 {
            changed = s.undo(&format::undo_id(tids[tids.len() - 1]))?;
        } else {
            for _ in 0..2 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let o = x % objects;
                if changed.contains(&Oid::new(o)) {
                    continue;
                }
                s.store(Oid::new(o), serials[o as usize], &data)?;
                changed.push(Oid::new(o));
            }
        }
        s.vote()?;
        let t = s.finish()?;
        for o in changed {
            serials[o.get() as usize] = t;
        }
        tids.push(t);
    }
    let size = s.size();
    s.close()?;
    println!("built {txns} transactions, {objects} objects, {size} bytes in {:.2?}", started.elapsed());
    std::fs::copy(&path, dir.join("Data.fs.orig"))?;
    for (label, pack_time) in [("middle", tids[tids.len() / 2]), ("last", tids[tids.len() - 1])] {
        std::fs::copy(dir.join("Data.fs.orig"), &path)?;
        let _ = std::fs::remove_file(dir.join("Data.fs.zr-index"));
        let (s, _) = Storage::open_path(&path, Options::default())?;
        let t0 = Instant::now();
        let r = s.pack(pack_time)?;
        let took = t0.elapsed();
        println!(
            "pack to the {label} transaction (tid {:016x}): {took:.2?}; {} -> {} bytes, removed {} transactions and {} records, packed {}, kept {}",
            pack_time.get(),
            r.bytes_before,
            r.bytes_after,
            r.transactions_removed,
            r.records_removed,
            r.transactions_packed,
            r.transactions_kept
        );
        s.close()?;
        std::fs::copy(&path, dir.join(format!("Data.fs.{label}")))?;
    }
    Ok(())
}
