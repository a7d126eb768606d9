//! The workload client: a small ZEO client on `core::wire` over turmoil TCP, doing random
//! read-modify-write transactions over a small key space (conflicts are frequent; a conflict is
//! answered by abort and retry), plus `loadBefore` of old revisions. Everything it sees goes
//! to the world's [`Shared`] log.
//!
//! Every call has a deadline ([`CALL_TIMEOUT`]); a timeout or any I/O or protocol error drops
//! the connection, and the client reconnects. A commit whose `tpc_finish` was sent but not
//! answered is recorded with an unknown outcome.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::codec::Codec;
use zeoraid_core::wire::error::ZeoError;
use zeoraid_core::wire::frame::{frame_header, FrameDecoder};
use zeoraid_core::wire::handshake::{client_reply, parse_server_announcement};
use zeoraid_core::wire::message::{ClientMessage, MsgId, ServerMessage};
use zeoraid_core::wire::method::Method;
use zeoraid_core::wire::push::Push;
use zeoraid_core::wire::reply::{Reply, VoteItem};
use zeoraid_core::wire::request::Request;
use zeoraid_core::wire::types::{Extension, TxnId, TxnStatus};
use zeoraid_core::wire::value::Value;
use zeoraid_core::wire::Encoding;

use crate::record::{data_of, now, Commit, Outcome, Read, Shared};

/// The deadline of one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(12);

/// A connection after the handshake.
struct Conn {
    io: turmoil::net::TcpStream,
    codec: Codec,
    frames: FrameDecoder,
    rbuf: Vec<u8>,
    out: Vec<u8>,
    next_id: i64,
    /// The newest invalidation received on this connection, per object: after it, a read of
    /// the object's current revision must give that transaction or a newer one (zeo-protocol
    /// §6.4: invalidations go out only once the transaction is visible).
    invalidated: BTreeMap<Oid, Tid>,
}

type CallResult = Result<Result<Value, ZeoError>, String>;

impl Conn {
    async fn open(addr: SocketAddr, storage: &str) -> Result<Conn, String> {
        let io =
            match tokio::time::timeout(crate::net::CONNECT_TIMEOUT, turmoil::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(format!("connect: {e}")),
                Err(_) => return Err("connect: timed out".into()),
            };
        let mut c = Conn {
            io,
            codec: Codec::new(Encoding::Pickle),
            frames: FrameDecoder::default(),
            rbuf: vec![0; 64 * 1024],
            out: Vec::new(),
            next_id: 1,
            invalidated: BTreeMap::new(),
        };
        let hello = tokio::time::timeout(CALL_TIMEOUT, c.next_frame())
            .await
            .map_err(|_| "handshake: timed out")??;
        let enc = parse_server_announcement(&hello).map_err(|e| format!("handshake: {e}"))?;
        c.codec = Codec::new(enc);
        let reply = client_reply(enc);
        c.out.extend_from_slice(&frame_header(reply.len()).map_err(|e| e.to_string())?);
        c.out.extend_from_slice(&reply);
        c.flush().await?;
        match c.call(Request::Register { storage: storage.into(), read_only: false }).await? {
            Ok(_) => Ok(c),
            Err(e) => Err(format!("register: {}", e.class_path())),
        }
    }

    async fn next_frame(&mut self) -> Result<Bytes, String> {
        loop {
            if let Some(f) = self.frames.next_frame().map_err(|e| format!("framing: {e}"))? {
                return Ok(f);
            }
            let n = self.io.read(&mut self.rbuf).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed by the server".into());
            }
            self.frames.push(&self.rbuf[..n]);
        }
    }

    fn queue(&mut self, msg: &ClientMessage) -> Result<(), String> {
        let at = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        self.codec.encode_client(msg, &mut self.out).map_err(|e| format!("encode: {e}"))?;
        let h = frame_header(self.out.len() - at - 4).map_err(|e| e.to_string())?;
        self.out[at..at + 4].copy_from_slice(&h);
        Ok(())
    }

    fn send_async(&mut self, request: Request) -> Result<(), String> {
        self.queue(&ClientMessage::Async { msgid: MsgId::int(0), request })
    }

    async fn flush(&mut self) -> Result<(), String> {
        if !self.out.is_empty() {
            let r = tokio::time::timeout(CALL_TIMEOUT, self.io.write_all(&self.out)).await;
            self.out.clear();
            r.map_err(|_| "write: timed out".to_string())?.map_err(|e| format!("write: {e}"))?;
        }
        Ok(())
    }

    /// A call and its reply (pushes skipped); the outer error ends the connection.
    async fn call(&mut self, request: Request) -> CallResult {
        let id = self.next_id;
        self.next_id += 1;
        self.queue(&ClientMessage::Call { msgid: MsgId::int(id), request })?;
        self.flush().await?;
        let wait = async {
            loop {
                let f = self.next_frame().await?;
                match self.codec.decode_server(&f).map_err(|e| format!("decode: {e}"))? {
                    ServerMessage::Push(Push::InvalidateTransaction { tid, oids }) => {
                        for oid in oids {
                            let e = self.invalidated.entry(oid).or_insert(tid);
                            *e = (*e).max(tid);
                        }
                    }
                    ServerMessage::Push(_) => {}
                    ServerMessage::Reply { msgid, result } if msgid == MsgId::int(id) => {
                        return Ok(Ok(result))
                    }
                    ServerMessage::Error { msgid, error } if msgid == MsgId::int(id) => {
                        return Ok(Err(error))
                    }
                    other => return Err(format!("a reply to no call: {other:?}")),
                }
            }
        };
        match tokio::time::timeout(CALL_TIMEOUT, wait).await {
            Ok(r) => r,
            Err(_) => Err("call timed out".into()),
        }
    }
}

/// What a workload client does.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    /// Its number (`c{id}`); client 0 creates the key space.
    pub id: u32,
    /// The RAID server.
    pub server: SocketAddr,
    /// Objects in the key space.
    pub keys: usize,
    /// When to stop (simulated time since the start).
    pub until: Duration,
    /// When the faults are healed: the client slows down after it (a calm phase's load).
    pub calm_from: Duration,
    /// Its RNG seed.
    pub seed: u64,
}

fn txn_id(seq: u64) -> TxnId {
    TxnId(Value::Int(i128::from(seq)))
}

fn short(e: &ZeoError) -> String {
    let p = e.class_path();
    p.as_str().rsplit('.').next().unwrap_or(p.as_str()).to_string()
}

/// Runs the workload until `plan.until`.
pub async fn run(plan: ClientPlan, log: Shared) {
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    let mut conn: Option<Conn> = None;
    let mut seq: u64 = 0;
    let name = format!("c{}", plan.id);
    while now() < plan.until && !log.lock().stop {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(plan.server, "1").await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    log.error("connect");
                    tracing::debug!("{name}: {e}");
                    tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
                    continue;
                }
            },
        };
        let keys = log.lock().keys.clone();
        let step = if keys.is_empty() {
            if plan.id == 0 {
                seq += 1;
                create_keys(c, &log, plan.id, seq, plan.keys).await
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(())
            }
        } else if rng.random_bool(0.25) {
            old_read(c, &log, plan.id, &keys, &mut rng).await
        } else {
            seq += 1;
            rmw(c, &log, plan.id, seq, &keys, &mut rng).await
        };
        if let Err(e) = step {
            tracing::debug!("{name}: connection dropped: {e}");
            log.error("disconnect");
            conn = None;
            tokio::time::sleep(Duration::from_millis(rng.random_range(10..200))).await;
        } else {
            let think =
                if now() >= plan.calm_from { rng.random_range(50..300) } else { rng.random_range(5..80) };
            tokio::time::sleep(Duration::from_millis(think)).await;
        }
    }
}

/// Ends a transaction attempt in the log.
fn record(log: &Shared, client: u32, seq: u64, oids: Vec<Oid>, began: Duration, outcome: Outcome) {
    let ended = now();
    let mut g = log.lock();
    if let Outcome::Acked(_) = outcome {
        g.acks.entry(client).or_default().push(ended);
    }
    g.commits.push(Commit { client, seq, oids, data: data_of(client, seq), outcome, began, ended });
}

/// Begins, stores `oids` (each with its read serial), votes and finishes; records the outcome.
/// The error ends the connection.
async fn commit(
    c: &mut Conn,
    log: &Shared,
    client: u32,
    seq: u64,
    stores: &[(Oid, Tid)],
) -> Result<(), String> {
    let txn = txn_id(seq);
    let oids: Vec<Oid> = stores.iter().map(|s| s.0).collect();
    let began = now();
    let data = data_of(client, seq);
    let fail = |why: String| Outcome::Failed(why);
    c.send_async(Request::TpcBegin {
        txn: txn.clone(),
        user: Bytes::from_static(b"sim"),
        description: Bytes::from(format!("c{client} txn {seq}")),
        extension: Extension::default(),
        tid: None,
        status: TxnStatus::NORMAL,
    })?;
    for &(oid, serial) in stores {
        c.send_async(Request::Storea { oid, serial, data: data.clone(), txn: txn.clone() })?;
    }
    match c.call(Request::Vote { txn: txn.clone() }).await {
        Err(e) => {
            record(log, client, seq, oids, began, fail(format!("vote: {e}")));
            return Err(e);
        }
        Ok(Err(e)) => {
            log.error(&format!("vote {}", short(&e)));
            record(log, client, seq, oids, began, fail(format!("vote: {}", short(&e))));
            return match c.call(Request::TpcAbort { txn }).await {
                Err(e) => Err(e),
                Ok(_) => Ok(()),
            };
        }
        Ok(Ok(v)) => {
            // Conflicts come back as vote items the client would resolve: it does not, it aborts.
            let conflicted = match Reply::from_value(Method::Vote, &v) {
                Ok(Reply::Vote(items)) => items.iter().any(|i| matches!(i, VoteItem::Conflict { .. })),
                other => {
                    record(log, client, seq, oids, began, fail("vote: bad reply".into()));
                    return Err(format!("vote answered {other:?}"));
                }
            };
            if conflicted {
                log.error("vote conflict");
                record(log, client, seq, oids, began, fail("vote: conflict".into()));
                return match c.call(Request::TpcAbort { txn }).await {
                    Err(e) => Err(e),
                    Ok(_) => Ok(()),
                };
            }
        }
    }
    match c.call(Request::TpcFinish { txn }).await {
        Err(e) => {
            record(log, client, seq, oids, began, Outcome::Unknown);
            Err(e)
        }
        Ok(Err(e)) => {
            log.error(&format!("finish {}", short(&e)));
            record(log, client, seq, oids, began, Outcome::Unknown);
            Err(format!("finish failed: {}", short(&e)))
        }
        Ok(Ok(v)) => match Reply::from_value(Method::TpcFinish, &v) {
            Ok(Reply::TpcFinish(Some(tid))) => {
                record(log, client, seq, oids, began, Outcome::Acked(tid));
                Ok(())
            }
            other => {
                record(log, client, seq, oids, began, Outcome::Unknown);
                Err(format!("tpc_finish answered {other:?}"))
            }
        },
    }
}

/// Client 0's set-up: `n` new objects in one transaction.
async fn create_keys(c: &mut Conn, log: &Shared, client: u32, seq: u64, n: usize) -> Result<(), String> {
    let oids = match c.call(Request::NewOids { n: Some(n as i64) }).await? {
        Ok(v) => match Reply::from_value(Method::NewOids, &v) {
            Ok(Reply::NewOids(o)) if o.len() >= n => o[..n].to_vec(),
            other => return Err(format!("new_oids answered {other:?}")),
        },
        Err(e) => {
            log.error(&format!("new_oids {}", short(&e)));
            return Ok(());
        }
    };
    let stores: Vec<(Oid, Tid)> = oids.iter().map(|&o| (o, Tid::ZERO)).collect();
    commit(c, log, client, seq, &stores).await?;
    let created = matches!(log.lock().commits.last(), Some(k) if k.client == client && k.seq == seq && matches!(k.outcome, Outcome::Acked(_)));
    if created {
        log.lock().keys = oids;
        log.trace(format!("c{client}: {n} objects created"));
    }
    Ok(())
}

/// `loadBefore(oid, before)`, recorded.
async fn load_before(
    c: &mut Conn,
    log: &Shared,
    client: u32,
    oid: Oid,
    before: Tid,
) -> Result<Option<Option<(Bytes, Tid, Option<Tid>)>>, String> {
    let sent = now();
    match c.call(Request::LoadBefore { oid, before }).await? {
        Ok(v) => match Reply::from_value(Method::LoadBefore, &v) {
            Ok(Reply::LoadBefore(r)) => {
                let answer = r.map(|r| (r.data, r.start, r.end));
                let mut g = log.lock();
                if let (Some((_, start, None)), Some(&inv)) = (&answer, c.invalidated.get(&oid)) {
                    if before == Tid::MAX && *start < inv {
                        g.violations.push(format!(
                            "invariant 3: c{client} was sent the invalidation of {oid} by {inv}, then read its current revision as {start}, older: the invalidation went out before the transaction was visible"
                        ));
                    }
                }
                g.reads.push(Read { client, oid, before, sent, answer: answer.clone(), at: now() });
                Ok(Some(answer))
            }
            other => Err(format!("loadBefore answered {other:?}")),
        },
        Err(e) => {
            log.error(&format!("loadBefore {}", short(&e)));
            Ok(None)
        }
    }
}

/// One read-modify-write transaction over 1 to 3 keys.
async fn rmw(
    c: &mut Conn,
    log: &Shared,
    client: u32,
    seq: u64,
    keys: &[Oid],
    rng: &mut ChaCha8Rng,
) -> Result<(), String> {
    let n = rng.random_range(1..=3.min(keys.len()));
    let mut picked: Vec<Oid> = Vec::new();
    while picked.len() < n {
        let k = keys[rng.random_range(0..keys.len())];
        if !picked.contains(&k) {
            picked.push(k);
        }
    }
    let mut stores = Vec::new();
    for oid in picked {
        match load_before(c, log, client, oid, Tid::MAX).await? {
            Some(Some((_, start, _))) => stores.push((oid, start)),
            _ => return Ok(()),
        }
    }
    commit(c, log, client, seq, &stores).await
}

/// A `loadBefore` of an old revision: before a tid some read of this client saw.
async fn old_read(
    c: &mut Conn,
    log: &Shared,
    client: u32,
    keys: &[Oid],
    rng: &mut ChaCha8Rng,
) -> Result<(), String> {
    let seen: Vec<Tid> = {
        let g = log.lock();
        g.reads
            .iter()
            .rev()
            .filter(|r| r.client == client)
            .filter_map(|r| r.answer.as_ref().map(|a| a.1))
            .take(50)
            .collect()
    };
    if seen.is_empty() {
        return Ok(());
    }
    let before = seen[rng.random_range(0..seen.len())];
    let oid = keys[rng.random_range(0..keys.len())];
    load_before(c, log, client, oid, before).await.map(|_| ())
}

/// Packs the storage once through the RAID, at a time before every transaction (nothing is removed:
/// every revision stays readable, so the read checks hold), and traces the answer. The RAID
/// must refuse it while a recovery runs.
pub async fn pack_once(server: SocketAddr, log: Shared, name: String) -> turmoil::Result {
    let mut c = match Conn::open(server, "1").await {
        Ok(c) => c,
        Err(e) => {
            log.trace(format!("{name}: cannot connect: {e}"));
            return Ok(());
        }
    };
    // Before every transaction, whatever the RAID's clock did (it may be stepped back before
    // the world's epoch): a pack removes nothing then — also not the objects of the key space,
    // which no root references (a pack's garbage collection would take those).
    let time = 1.0;
    let answer = match c.call(Request::Pack { time, wait: true }).await {
        Ok(Ok(_)) => "packed".to_string(),
        Ok(Err(e)) => format!("refused: {}", short(&e)),
        Err(e) => format!("no answer: {e}"),
    };
    log.trace(format!("{name}: {answer}"));
    Ok(())
}
