//! What the clients do: set-up (register, objects to work on) and the timed loops.
//!
//! A run has two phases. In the set-up phase every client connects, registers and, for
//! `commits`, creates its own `--objects` objects in one unmeasured transaction. Then the
//! [`Schedule`] starts: load for the warm-up, then measure until `end`. An operation counts
//! (ops and latency) when it completes inside `[warm_end, end)`; errors count all run long. No
//! operation is started at or after `end`; one still unanswered at `deadline` counts as a
//! `timeout` error.

use super::conn::{error_kind, Conn, ConnError, Incoming, Inflight};
use super::stats::{ErrorCounts, Samples};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::reply::Reply;
use zeoraid_core::wire::request::{Method, Request};
use zeoraid_core::wire::types::{Extension, TxnId, TxnStatus};
use zeoraid_core::wire::value::Value;

/// A small seeded generator (xorshift64*), enough to pick oids and fill payloads.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator for `seed` and `stream` (e.g. the client number): distinct streams of one
    /// seed give unrelated sequences, and seed 0 is as good as any.
    pub(crate) fn new(seed: u64, stream: u64) -> Rng {
        // splitmix64 of the pair, never 0 (xorshift's fixed point).
        let mut z = seed ^ stream.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A uniform number in `0..n` (`n > 0`), by multiply-shift.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// `pickle.dumps(PersistentMapping, 3)`: the class part of a ZODB record.
const CLASS_PICKLE: &[u8] = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.";
/// The state part, `{"data": {"payload": <bytes>}}` in protocol 3, up to the payload's
/// `BINBYTES` opcode (its 4-byte little-endian length follows)…
const STATE_HEAD: &[u8] = b"\x80\x03}q\x00X\x04\x00\x00\x00dataq\x01}q\x02X\x07\x00\x00\x00payloadq\x03B";
/// …and after the payload.
const STATE_TAIL: &[u8] = b"q\x04ss.";

/// A data record of `size` bytes (or the smallest record, if `size` is below it): the ZODB
/// pickle of a `PersistentMapping` holding random bytes.
pub(crate) fn record(size: usize, rng: &mut Rng) -> Bytes {
    let fixed = CLASS_PICKLE.len() + STATE_HEAD.len() + 4 + STATE_TAIL.len();
    let payload = size.saturating_sub(fixed);
    let mut out = Vec::with_capacity(fixed + payload);
    out.extend_from_slice(CLASS_PICKLE);
    out.extend_from_slice(STATE_HEAD);
    // Below --size's limit of 64 MiB, so it fits.
    out.extend_from_slice(&u32::try_from(payload).unwrap_or(u32::MAX).to_le_bytes());
    while out.len() < fixed - STATE_TAIL.len() + payload {
        let room = fixed - STATE_TAIL.len() + payload - out.len();
        let word = rng.next_u64().to_le_bytes();
        out.extend_from_slice(&word[..room.min(8)]);
    }
    out.extend_from_slice(STATE_TAIL);
    Bytes::from(out)
}

/// When a run measures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// Measuring starts.
    pub(crate) warm_end: Instant,
    /// No operation starts from here on.
    pub(crate) end: Instant,
    /// Operations still unanswered now are abandoned (`timeout` errors).
    pub(crate) deadline: Instant,
}

impl Schedule {
    fn counts(&self, done: Instant) -> bool {
        done >= self.warm_end && done < self.end
    }
}

/// What one client measured.
#[derive(Debug, Default)]
pub(crate) struct ClientResult {
    pub(crate) ops: u64,
    pub(crate) samples: Samples,
    pub(crate) errors: ErrorCounts,
}

/// Awaits `fut` until `deadline`; `None` when it passed.
async fn until<F: std::future::Future>(deadline: Instant, fut: F) -> Option<F::Output> {
    tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), fut).await.ok()
}

/// Awaits a connection step until `deadline`. A timeout or a connection error is counted in
/// `errors` and gives `None` (the client stops).
async fn step<T, F>(deadline: Instant, fut: F, errors: &mut ErrorCounts) -> Option<T>
where
    F: std::future::Future<Output = Result<T, ConnError>>,
{
    match until(deadline, fut).await {
        None => {
            errors.add("timeout");
            None
        }
        Some(Err(e)) => {
            errors.add(e.kind());
            None
        }
        Some(Ok(v)) => Some(v),
    }
}

/// Connects, registers (read-write) and asks `get_info`, as a ZODB client does.
pub(crate) async fn open(address: &super::args::Address, storage: &str) -> Result<Conn, ConnError> {
    let mut conn = Conn::connect(address).await?;
    conn.call(Request::Register { storage: storage.into(), read_only: false }).await?;
    conn.call(Request::GetInfo).await?;
    Ok(conn)
}

/// `n` new oids, asked 100 at a time (the most a server hands out per call).
pub(crate) async fn new_oids(conn: &mut Conn, n: usize) -> Result<Vec<Oid>, ConnError> {
    let mut oids = Vec::with_capacity(n);
    while oids.len() < n {
        let v = conn.call(Request::NewOids { n: Some(100) }).await?;
        match Reply::from_value(Method::NewOids, &v) {
            Ok(Reply::NewOids(got)) if !got.is_empty() => oids.extend(got),
            other => return Err(ConnError::Reply { method: "new_oids", detail: format!("{other:?}") }),
        }
    }
    oids.truncate(n);
    Ok(oids)
}

fn txn_id(n: u64) -> TxnId {
    TxnId(Value::Int(i128::from(n)))
}

fn queue_txn(conn: &mut Conn, txn: &TxnId, stores: &[(Oid, Tid)], data: &Bytes) -> Result<i64, ConnError> {
    conn.send_async(Request::TpcBegin {
        txn: txn.clone(),
        user: Bytes::new(),
        description: Bytes::new(),
        extension: Extension::default(),
        tid: None,
        status: TxnStatus::NORMAL,
    })?;
    for &(oid, serial) in stores {
        conn.send_async(Request::Storea { oid, serial, data: data.clone(), txn: txn.clone() })?;
    }
    conn.send_call(Request::Vote { txn: txn.clone() })
}

fn finish_tid(v: &Value) -> Result<Tid, ConnError> {
    match Reply::from_value(Method::TpcFinish, v) {
        Ok(Reply::TpcFinish(Some(tid))) => Ok(tid),
        other => Err(ConnError::Reply { method: "tpc_finish", detail: format!("{other:?}") }),
    }
}

/// Commits `stores` (set-up: every failure is fatal) and returns the tid.
pub(crate) async fn commit(
    conn: &mut Conn,
    txn_no: u64,
    stores: &[(Oid, Tid)],
    data: &Bytes,
) -> Result<Tid, ConnError> {
    let txn = txn_id(txn_no);
    let vote = queue_txn(conn, &txn, stores, data)?;
    conn.flush().await?;
    if let Err(e) = conn.wait_reply(vote).await? {
        return Err(ConnError::Server { method: "vote", class: e.class_path().to_string() });
    }
    let v = conn.call(Request::TpcFinish { txn }).await?;
    finish_tid(&v)
}

/// Creates `n` objects of `data` in transactions of up to 1000 (the `loads` data set).
pub(crate) async fn create_dataset(conn: &mut Conn, n: usize, data: &Bytes) -> Result<Vec<Oid>, ConnError> {
    let oids = new_oids(conn, n).await?;
    for (i, chunk) in oids.chunks(1000).enumerate() {
        let stores: Vec<(Oid, Tid)> = chunk.iter().map(|&o| (o, Tid::ZERO)).collect();
        commit(conn, i as u64 + 1, &stores, data).await?;
    }
    Ok(oids)
}

/// A `commits` client after set-up: its objects exist, with the serial of their creation.
pub(crate) struct CommitClient {
    pub(crate) conn: Conn,
    pub(crate) objects: Vec<(Oid, Tid)>,
    pub(crate) data: Bytes,
    pub(crate) next_txn: u64,
}

impl CommitClient {
    /// Set-up: new oids, then one unmeasured transaction creating the objects.
    pub(crate) async fn prepare(
        mut conn: Conn,
        objects: usize,
        data: Bytes,
    ) -> Result<CommitClient, ConnError> {
        let oids = new_oids(&mut conn, objects).await?;
        let mut stores: Vec<(Oid, Tid)> = oids.iter().map(|&o| (o, Tid::ZERO)).collect();
        let tid = commit(&mut conn, 1, &stores, &data).await?;
        for s in &mut stores {
            s.1 = tid;
        }
        Ok(CommitClient { conn, objects: stores, data, next_txn: 2 })
    }

    /// One measured transaction: `Ok(Ok(()))` committed, `Ok(Err(kind))` refused by the
    /// server (the transaction is gone), `Err` the connection failed.
    async fn commit_once(&mut self) -> Result<Result<(), String>, ConnError> {
        let txn = txn_id(self.next_txn);
        self.next_txn += 1;
        let vote = queue_txn(&mut self.conn, &txn, &self.objects, &self.data)?;
        self.conn.flush().await?;
        match self.conn.wait_reply(vote).await? {
            Err(e) => return Ok(Err(error_kind(&e))),
            Ok(v) => {
                if Reply::from_value(Method::Vote, &v).is_err() {
                    return Err(ConnError::Reply { method: "vote", detail: format!("{v:?}") });
                }
            }
        }
        let finish = self.conn.send_call(Request::TpcFinish { txn })?;
        self.conn.flush().await?;
        let tid = match self.conn.wait_reply(finish).await? {
            Err(e) => return Ok(Err(error_kind(&e))),
            Ok(v) => finish_tid(&v)?,
        };
        for s in &mut self.objects {
            s.1 = tid;
        }
        Ok(Ok(()))
    }

    /// After a refused transaction: abort it (harmless if the server forgot it) and reload
    /// the objects' current serials, so the next transaction does not conflict.
    async fn recover(&mut self) -> Result<(), ConnError> {
        self.conn.call(Request::TpcAbort { txn: txn_id(self.next_txn - 1) }).await?;
        for i in 0..self.objects.len() {
            let oid = self.objects[i].0;
            let v = self.conn.call(Request::LoadBefore { oid, before: Tid::MAX }).await?;
            match Reply::from_value(Method::LoadBefore, &v) {
                Ok(Reply::LoadBefore(Some(r))) => self.objects[i].1 = r.start,
                other => return Err(ConnError::Reply { method: "loadBefore", detail: format!("{other:?}") }),
            }
        }
        Ok(())
    }

    /// Commits until the schedule ends.
    pub(crate) async fn run(mut self, sched: Schedule) -> ClientResult {
        let mut res = ClientResult::default();
        loop {
            let start = Instant::now();
            if start >= sched.end {
                break;
            }
            let Some(outcome) = step(sched.deadline, self.commit_once(), &mut res.errors).await else {
                break;
            };
            match outcome {
                Ok(()) => {
                    let done = Instant::now();
                    if sched.counts(done) {
                        res.ops += 1;
                        res.samples.record(done - start);
                    }
                }
                Err(kind) => {
                    res.errors.add(&kind);
                    if step(sched.deadline, self.recover(), &mut res.errors).await.is_none() {
                        break;
                    }
                }
            }
        }
        for _ in 0..self.conn.strays {
            res.errors.add("stray-reply");
        }
        res
    }
}

/// A `loads` client after set-up.
pub(crate) struct LoadClient {
    pub(crate) conn: Conn,
    pub(crate) oids: Arc<[Oid]>,
    pub(crate) depth: usize,
    pub(crate) rng: Rng,
}

impl LoadClient {
    /// Loads random oids, `depth` in flight, until the schedule ends; then collects the
    /// replies still due.
    pub(crate) async fn run(mut self, sched: Schedule) -> ClientResult {
        let mut res = ClientResult::default();
        let mut inflight: Inflight<Instant> = Inflight::default();
        let n = self.oids.len() as u64;
        loop {
            let now = Instant::now();
            if now < sched.end && n > 0 {
                while inflight.len() < self.depth {
                    let oid = self.oids[self.rng.below(n) as usize];
                    match self.conn.send_call(Request::LoadBefore { oid, before: Tid::MAX }) {
                        Ok(id) => inflight.insert(id, now),
                        Err(e) => {
                            res.errors.add(e.kind());
                            return res;
                        }
                    }
                }
                if step(sched.deadline, self.conn.flush(), &mut res.errors).await.is_none() {
                    break;
                }
            }
            if inflight.is_empty() {
                break;
            }
            let Some(msg) = step(sched.deadline, self.conn.next_message(), &mut res.errors).await else {
                break;
            };
            match inflight.accept(msg) {
                Incoming::Reply { tag: start, result } => match result {
                    Err(e) => res.errors.add(&error_kind(&e)),
                    Ok(v) => match Reply::from_value(Method::LoadBefore, &v) {
                        Ok(Reply::LoadBefore(Some(_))) => {
                            let done = Instant::now();
                            if sched.counts(done) {
                                res.ops += 1;
                                res.samples.record(done - start);
                            }
                        }
                        Ok(_) => res.errors.add("no-data"),
                        Err(_) => res.errors.add("protocol"),
                    },
                },
                Incoming::Push => {}
                Incoming::Stray(_) => res.errors.add("stray-reply"),
            }
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_streams_differ() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(42, 0);
                move |_| r.next_u64()
            })
            .collect();
        let mut r = Rng::new(42, 0);
        assert_eq!(a, (0..5).map(|_| r.next_u64()).collect::<Vec<_>>());
        let mut other = Rng::new(42, 1);
        assert_ne!(a[0], other.next_u64());
        let mut zero = Rng::new(0, 0);
        assert_ne!(zero.next_u64(), 0);
    }

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut r = Rng::new(7, 3);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let x = r.below(10);
            seen[x as usize] += 1;
        }
        // Uniform: each bucket near 1000.
        assert!(seen.iter().all(|&c| (850..1150).contains(&c)), "{seen:?}");
        assert_eq!(r.below(1), 0);
    }

    #[test]
    fn records_have_the_asked_size_and_pickle_framing() {
        let mut r = Rng::new(1, 0);
        for size in [0usize, 50, 85, 86, 100, 1000, 4097] {
            let rec = record(size, &mut r);
            let fixed = CLASS_PICKLE.len() + STATE_HEAD.len() + 4 + STATE_TAIL.len();
            assert_eq!(rec.len(), size.max(fixed), "size {size}");
            assert!(rec.starts_with(CLASS_PICKLE));
            assert!(rec.ends_with(STATE_TAIL));
            let at = CLASS_PICKLE.len() + STATE_HEAD.len();
            let len = u32::from_le_bytes(rec[at..at + 4].try_into().expect("4 bytes")) as usize;
            assert_eq!(len, rec.len() - fixed);
        }
    }

    #[test]
    fn schedule_counts_completions_inside_the_window() {
        let t = Instant::now();
        let s = Schedule {
            warm_end: t + std::time::Duration::from_secs(1),
            end: t + std::time::Duration::from_secs(2),
            deadline: t + std::time::Duration::from_secs(3),
        };
        assert!(!s.counts(t));
        assert!(s.counts(s.warm_end));
        assert!(!s.counts(s.end));
    }
}
