//! The misbehaving proxy in turmoil worlds: a tiny ZEO server written here on core::wire, the
//! proxy in front of it, and a test client on core::wire that checks what comes through.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use turmoil::net::{TcpListener, TcpStream};
use zeoraid_core::ids::Tid;
use zeoraid_core::wire::codec::Codec;
use zeoraid_core::wire::error::ZeoError;
use zeoraid_core::wire::frame::{encode_frame, FrameDecoder};
use zeoraid_core::wire::handshake::{
    client_reply, parse_client_handshake, parse_server_announcement, server_announcement, ClientHello,
};
use zeoraid_core::wire::message::{ClientMessage, MsgId, ServerMessage};
use zeoraid_core::wire::push::Push;
use zeoraid_core::wire::reply::Reply;
use zeoraid_core::wire::request::{Method, Request};
use zeoraid_core::wire::types::TxnId;
use zeoraid_core::wire::value::{Text, Value};
use zeoraid_core::wire::Encoding;
use zeoraid_sim::proxy::{serve, FaultKind, FaultLog, InjectedFault, ProxyFaults};

/// The server's last tid before the test transaction.
const T0: Tid = Tid::new(0x03e8_1234_0000_0000);
/// The tid the server commits the test transaction with.
const T1: Tid = Tid::new(0x03e8_1234_0100_0000);
const SERVER_PORT: u16 = 8100;
const PROXY_PORT: u16 = 9000;

/// What the tiny server received, per connection in accept order: the wire name of every
/// decoded message (or `"<undecodable>"`) and the raw payloads.
#[derive(Debug, Default)]
struct Seen {
    conns: Vec<Vec<(String, Vec<u8>)>>,
}

type SeenLog = Arc<Mutex<Seen>>;

fn seen(log: &SeenLog) -> std::sync::MutexGuard<'_, Seen> {
    log.lock().expect("test lock")
}

async fn read_frame(r: &mut OwnedReadHalf, dec: &mut FrameDecoder) -> io::Result<Option<Bytes>> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(f) = dec.next_frame().map_err(io::Error::other)? {
            return Ok(Some(f));
        }
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        dec.push(&buf[..n]);
    }
}

async fn write_payload(w: &mut OwnedWriteHalf, payload: &[u8]) -> io::Result<()> {
    let mut out = Vec::new();
    encode_frame(payload, &mut out).map_err(io::Error::other)?;
    w.write_all(&out).await
}

/// A ZEO server just big enough for the proxy: announces `enc`, answers `register` and
/// `lastTransaction` with T0, `vote` with no oids, `tpc_finish` with T1 after an
/// `invalidateTransaction` push, anything else with None.
async fn tiny_server(enc: Encoding, log: SeenLog) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", SERVER_PORT)).await?;
    loop {
        let (s, _) = listener.accept().await?;
        let conn = {
            let mut l = seen(&log);
            l.conns.push(vec![]);
            l.conns.len() - 1
        };
        let log = log.clone();
        tokio::spawn(async move {
            let (mut r, mut w) = s.into_split();
            let mut dec = FrameDecoder::default();
            write_payload(&mut w, server_announcement(enc)).await?;
            let Some(hello) = read_frame(&mut r, &mut dec).await? else { return Ok::<_, io::Error>(()) };
            let Ok(ClientHello::Protocol(enc)) = parse_client_handshake(&hello) else { return Ok(()) };
            let codec = Codec::new(enc);
            while let Some(frame) = read_frame(&mut r, &mut dec).await? {
                let msg = codec.decode_client(&frame);
                let name = match &msg {
                    Ok(ClientMessage::Call { request, .. } | ClientMessage::Async { request, .. }) => {
                        request.name().as_str().to_owned()
                    }
                    Ok(other) => format!("{other:?}"),
                    Err(_) => "<undecodable>".to_owned(),
                };
                seen(&log).conns[conn].push((name, frame.to_vec()));
                let Ok(ClientMessage::Call { msgid, request }) = msg else { continue };
                let reply = match request.method() {
                    Some(Method::Register | Method::LastTransaction) => Reply::LastTransaction(T0),
                    Some(Method::Vote) => Reply::Vote(vec![]),
                    Some(Method::TpcFinish) => {
                        let push = ServerMessage::Push(Push::InvalidateTransaction { tid: T1, oids: vec![] });
                        let mut out = Vec::new();
                        codec.encode_server(&push, &mut out).map_err(io::Error::other)?;
                        write_payload(&mut w, &out).await?;
                        Reply::TpcFinish(Some(T1))
                    }
                    _ => Reply::Nil,
                };
                let mut out = Vec::new();
                codec
                    .encode_server(&ServerMessage::reply(msgid, &reply), &mut out)
                    .map_err(io::Error::other)?;
                write_payload(&mut w, &out).await?;
            }
            Ok(())
        });
    }
}

/// What the test client got when it waited for a message.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Msg(ServerMessage),
    Closed,
    Timeout,
}

struct Client {
    r: OwnedReadHalf,
    w: OwnedWriteHalf,
    dec: FrameDecoder,
    codec: Codec,
    next: i64,
}

impl Client {
    /// Connects and does the handshake, copying the server's letter.
    async fn connect(addr: &str) -> io::Result<Option<Client>> {
        let (mut r, mut w) = TcpStream::connect(addr).await?.into_split();
        let mut dec = FrameDecoder::default();
        let Some(hello) = read_frame(&mut r, &mut dec).await? else { return Ok(None) };
        let enc = parse_server_announcement(&hello).map_err(io::Error::other)?;
        write_payload(&mut w, &client_reply(enc)).await?;
        Ok(Some(Client { r, w, dec, codec: Codec::new(enc), next: 1 }))
    }

    async fn call(&mut self, request: Request) -> io::Result<MsgId> {
        let msgid = MsgId::int(self.next);
        self.next += 1;
        let mut out = Vec::new();
        let msg = ClientMessage::Call { msgid: msgid.clone(), request };
        self.codec.encode_client(&msg, &mut out).map_err(io::Error::other)?;
        write_payload(&mut self.w, &out).await?;
        Ok(msgid)
    }

    async fn recv(&mut self, within: Duration) -> Got {
        match tokio::time::timeout(within, read_frame(&mut self.r, &mut self.dec)).await {
            Err(_) => Got::Timeout,
            Ok(Ok(None) | Err(_)) => Got::Closed,
            Ok(Ok(Some(f))) => match self.codec.decode_server(&f) {
                Ok(m) => Got::Msg(m),
                Err(_) => Got::Closed,
            },
        }
    }

    /// Waits for the reply to `msgid`, collecting everything received on the way.
    async fn reply_to(&mut self, msgid: &MsgId, within: Duration, got: &mut Vec<Got>) -> Got {
        loop {
            let g = self.recv(within).await;
            got.push(g.clone());
            match &g {
                Got::Msg(ServerMessage::Reply { msgid: m, .. } | ServerMessage::Error { msgid: m, .. })
                    if m == msgid =>
                {
                    return g
                }
                Got::Msg(_) => {}
                Got::Closed | Got::Timeout => return g,
            }
        }
    }
}

fn txn() -> TxnId {
    TxnId(Value::Int(140_000_000_000_007))
}

/// register, lastTransaction, vote, tpc_finish: every message received, and the replies to
/// the four calls (the last ones `Closed`/`Timeout` when the script could not go on).
async fn script(addr: &str, within: Duration) -> io::Result<(Vec<Got>, Vec<Got>)> {
    let mut got = vec![];
    let mut replies = vec![];
    let Some(mut c) = Client::connect(addr).await? else { return Ok((vec![Got::Closed], vec![Got::Closed])) };
    let calls = [
        Request::Register { storage: Text::from("1"), read_only: false },
        Request::LastTransaction,
        Request::Vote { txn: txn() },
        Request::TpcFinish { txn: txn() },
    ];
    for request in calls {
        let Ok(msgid) = c.call(request).await else {
            replies.push(Got::Closed);
            break;
        };
        let r = c.reply_to(&msgid, within, &mut got).await;
        replies.push(r.clone());
        if !matches!(r, Got::Msg(_)) {
            break;
        }
    }
    Ok((got, replies))
}

fn tid_reply(g: &Got, method: Method) -> Option<Tid> {
    match g {
        Got::Msg(ServerMessage::Reply { result, .. }) => match Reply::from_value(method, result) {
            Ok(Reply::LastTransaction(t) | Reply::TpcFinish(Some(t))) => Some(t),
            _ => None,
        },
        _ => None,
    }
}

fn error_class(g: &Got) -> Option<String> {
    match g {
        Got::Msg(ServerMessage::Error { error, .. }) => Some(error.class_path().as_str().to_owned()),
        _ => None,
    }
}

const INJECTED_CLASSES: [&str; 3] =
    ["ZODB.POSException.StorageError", "ZODB.POSException.StorageSystemError", "builtins.OSError"];

/// One world: the tiny server, the proxy in front of it, and a client running `client`.
struct World {
    seen: SeenLog,
    log: FaultLog,
}

fn world<F, Fut>(sim_seed: u64, proxy_seed: u64, enc: Encoding, faults: ProxyFaults, client: F) -> World
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = turmoil::Result> + 'static,
{
    let seen_log = SeenLog::default();
    let log = FaultLog::new();
    let mut sim =
        turmoil::Builder::new().rng_seed(sim_seed).simulation_duration(Duration::from_secs(600)).build();
    let s = seen_log.clone();
    sim.host("server", move || tiny_server(enc, s.clone()));
    let l = log.clone();
    sim.host("proxy", move || {
        let l = l.clone();
        async move {
            serve(PROXY_PORT, format!("server:{SERVER_PORT}"), faults, proxy_seed, l).await?;
            Ok(())
        }
    });
    sim.client("client", client());
    sim.run().expect("the simulation runs to its end");
    World { seen: seen_log, log }
}

const PROXIED: &str = "proxy:9000";
const DIRECT: &str = "server:8100";
const WITHIN: Duration = Duration::from_secs(10);

#[test]
fn with_no_faults_the_proxy_is_transparent() {
    for enc in [Encoding::Pickle, Encoding::Msgpack] {
        let out = Arc::new(Mutex::new(vec![]));
        let o = out.clone();
        let w = world(1, 1, enc, ProxyFaults::none(), move || async move {
            for addr in [DIRECT, PROXIED] {
                let got = script(addr, WITHIN).await?;
                o.lock().expect("test lock").push(got);
            }
            Ok(())
        });
        let out = out.lock().expect("test lock");
        let [(direct, direct_replies), (proxied, proxied_replies)] = &out[..] else { panic!("{out:?}") };
        assert_eq!(direct_replies.len(), 4, "{direct_replies:?}");
        assert_eq!(tid_reply(&direct_replies[3], Method::TpcFinish), Some(T1));
        assert_eq!(direct, proxied, "{enc:?}");
        assert_eq!(direct_replies, proxied_replies);
        // The push before the tpc_finish reply came through too.
        assert!(proxied.iter().any(|g| matches!(g, Got::Msg(ServerMessage::Push(_)))));
        // The server got the same frames both ways.
        let seen = seen(&w.seen);
        assert_eq!(seen.conns.len(), 2);
        assert_eq!(seen.conns[0], seen.conns[1]);
        assert_eq!((w.log.faults(), w.log.undecodable(), w.log.connections()), (vec![], 0, 1));
    }
}

/// Runs the script through the proxy with only `kind` at probability 1.
fn one_fault(kind: FaultKind, enc: Encoding) -> (Vec<Got>, Vec<Got>, World) {
    let out = Arc::new(Mutex::new(None));
    let o = out.clone();
    let w = world(2, 7, enc, ProxyFaults::only(kind, 1.0), move || async move {
        let got = script(PROXIED, WITHIN).await?;
        *o.lock().expect("test lock") = Some(got);
        Ok(())
    });
    let (got, replies) = out.lock().expect("test lock").take().expect("the client ran");
    (got, replies, w)
}

fn kinds(log: &FaultLog) -> Vec<(FaultKind, String)> {
    log.faults().into_iter().map(|f| (f.kind, f.method)).collect()
}

#[test]
fn error_at_vote_replaces_only_the_vote_reply() {
    for enc in [Encoding::Pickle, Encoding::Msgpack] {
        let (_, replies, w) = one_fault(FaultKind::ErrorAtVote, enc);
        assert_eq!(tid_reply(&replies[1], Method::LastTransaction), Some(T0));
        let class = error_class(&replies[2]).expect("an error reply to vote");
        assert!(INJECTED_CLASSES.contains(&class.as_str()), "{class}");
        // The server did not fail: tpc_finish still commits (the tiny server has no state).
        assert_eq!(tid_reply(&replies[3], Method::TpcFinish), Some(T1));
        assert_eq!(kinds(&w.log), vec![(FaultKind::ErrorAtVote, "vote".to_owned())]);
        assert_eq!(w.log.faults()[0].detail, class);
    }
}

#[test]
fn error_at_finish_replaces_the_finish_reply_of_a_commit_that_happened() {
    for enc in [Encoding::Pickle, Encoding::Msgpack] {
        let (got, replies, w) = one_fault(FaultKind::ErrorAtFinish, enc);
        assert!(matches!(&replies[2], Got::Msg(ServerMessage::Reply { .. })), "{:?}", replies[2]);
        let class = error_class(&replies[3]).expect("an error reply to tpc_finish");
        assert!(INJECTED_CLASSES.contains(&class.as_str()), "{class}");
        // The server committed (and its push came through before the error).
        assert!(got.iter().any(|g| matches!(g, Got::Msg(ServerMessage::Push(_)))));
        assert!(seen(&w.seen).conns[0].iter().any(|(n, _)| n == "tpc_finish"));
        assert_eq!(kinds(&w.log), vec![(FaultKind::ErrorAtFinish, "tpc_finish".to_owned())]);
    }
}

#[test]
fn an_injected_error_keeps_its_class_on_the_wire() {
    // The client decodes what the proxy encoded: a typed error whose class is the injected
    // one, with the msgid of the call.
    let (_, replies, _) = one_fault(FaultKind::ErrorAtVote, Encoding::Pickle);
    match &replies[2] {
        Got::Msg(ServerMessage::Error { msgid, error: ZeoError::Other { class_path, payload } }) => {
            assert_eq!(msgid, &MsgId::int(3));
            assert!(INJECTED_CLASSES.contains(&class_path.as_str()));
            assert!(payload.as_seq().is_some_and(|a| !a.is_empty()), "{payload:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn wrong_answer_alters_the_finish_and_last_transaction_tids() {
    for enc in [Encoding::Pickle, Encoding::Msgpack] {
        let (_, replies, w) = one_fault(FaultKind::WrongAnswer, enc);
        let last = tid_reply(&replies[1], Method::LastTransaction).expect("a tid");
        let finish = tid_reply(&replies[3], Method::TpcFinish).expect("a tid");
        assert_ne!(last, T0);
        assert_ne!(finish, T1);
        assert!(last.get().abs_diff(T0.get()) <= 1 << 32);
        assert!(matches!(&replies[2], Got::Msg(ServerMessage::Reply { .. })));
        assert_eq!(
            kinds(&w.log),
            vec![
                (FaultKind::WrongAnswer, "lastTransaction".to_owned()),
                (FaultKind::WrongAnswer, "tpc_finish".to_owned())
            ]
        );
        assert_eq!(w.log.faults()[1].detail, format!("tid {T1} -> {finish}"));
    }
}

#[test]
fn swallow_leaves_the_call_hanging_on_an_open_connection() {
    let (got, replies, w) = one_fault(FaultKind::Swallow, Encoding::Msgpack);
    // register's reply never comes within 10 s, and the connection is not closed.
    assert_eq!(replies, vec![Got::Timeout]);
    assert_eq!(got, vec![Got::Timeout]);
    assert_eq!(kinds(&w.log), vec![(FaultKind::Swallow, "register".to_owned())]);
    assert_eq!(seen(&w.seen).conns[0].len(), 1, "the server got register and answered it");
}

#[test]
fn slow_replies_arrive_no_sooner_than_the_minimum_delay() {
    let mut faults = ProxyFaults::only(FaultKind::Slow, 1.0);
    (faults.slow_min, faults.slow_max) = (Duration::from_millis(400), Duration::from_millis(900));
    let out = Arc::new(Mutex::new(vec![]));
    let o = out.clone();
    let w = world(3, 3, Encoding::Pickle, faults, move || async move {
        let Some(mut c) = Client::connect(PROXIED).await? else { return Err("closed".into()) };
        for request in [Request::Register { storage: Text::from("1"), read_only: false }, Request::Ping] {
            let start = tokio::time::Instant::now();
            let msgid = c.call(request).await?;
            let g = c.reply_to(&msgid, WITHIN, &mut vec![]).await;
            o.lock().expect("test lock").push((start.elapsed(), g));
        }
        Ok(())
    });
    let out = out.lock().expect("test lock");
    assert_eq!(out.len(), 2);
    for (elapsed, g) in out.iter() {
        assert!(matches!(g, Got::Msg(ServerMessage::Reply { .. })), "{g:?}");
        assert!(*elapsed >= Duration::from_millis(400), "{elapsed:?}");
        assert!(*elapsed < Duration::from_millis(2_000), "{elapsed:?}");
    }
    let faults = w.log.faults();
    assert_eq!(faults.len(), 2);
    for f in &faults {
        assert_eq!(f.kind, FaultKind::Slow);
        let ms: u64 = f.detail.trim_start_matches("held ").trim_end_matches(" ms").parse().expect("ms");
        assert!((400..=900).contains(&ms), "{f}");
    }
}

#[test]
fn cut_after_vote_closes_before_finish_is_answered_at_both_cut_points() {
    const CONNS: usize = 12;
    let out = Arc::new(Mutex::new(vec![]));
    let o = out.clone();
    let w = world(
        4,
        11,
        Encoding::Msgpack,
        ProxyFaults::only(FaultKind::CutAfterVote, 1.0),
        move || async move {
            for _ in 0..CONNS {
                let got = script(PROXIED, WITHIN).await?;
                o.lock().expect("test lock").push(got);
            }
            Ok(())
        },
    );
    let out = out.lock().expect("test lock");
    let faults = w.log.faults();
    assert_eq!(faults.len(), CONNS);
    let seen = seen(&w.seen);
    let mut before = 0;
    for (i, ((_, replies), fault)) in out.iter().zip(&faults).enumerate() {
        // The vote reply came through; tpc_finish got no answer: the connection closed.
        assert!(matches!(&replies[2], Got::Msg(ServerMessage::Reply { .. })), "{i}: {replies:?}");
        assert_eq!(replies.get(3), Some(&Got::Closed), "{i}: {replies:?}");
        assert_eq!(
            (fault.kind, fault.conn, fault.method.as_str()),
            (FaultKind::CutAfterVote, i as u64, "vote")
        );
        // Whether the server saw tpc_finish is what the cut point says.
        let server_saw_finish = seen.conns[i].iter().any(|(n, _)| n == "tpc_finish");
        match fault.detail.as_str() {
            "closed before tpc_finish" => {
                before += 1;
                assert!(!server_saw_finish, "{i}");
            }
            "closed when tpc_finish was answered" => assert!(server_saw_finish, "{i}"),
            other => panic!("{other}"),
        }
    }
    assert!(before > 0 && before < CONNS, "both cut points occur: {before} of {CONNS} before");
}

#[test]
fn undecodable_frames_are_forwarded_unchanged_and_counted() {
    let garbage: &[u8] = b"\x80\x03this is no pickle";
    let out = Arc::new(Mutex::new(None));
    let o = out.clone();
    let w = world(5, 5, Encoding::Pickle, ProxyFaults::none(), move || async move {
        let Some(mut c) = Client::connect(PROXIED).await? else { return Err("closed".into()) };
        write_payload(&mut c.w, garbage).await?;
        let msgid = c.call(Request::LastTransaction).await?;
        let g = c.reply_to(&msgid, WITHIN, &mut vec![]).await;
        *o.lock().expect("test lock") = Some(g);
        Ok(())
    });
    let g = out.lock().expect("test lock").take().expect("ran");
    assert_eq!(tid_reply(&g, Method::LastTransaction), Some(T0));
    let seen = seen(&w.seen);
    assert_eq!(seen.conns[0][0], ("<undecodable>".to_owned(), garbage.to_vec()));
    assert_eq!(w.log.undecodable(), 1);
    assert!(w.log.faults().is_empty());
}

#[test]
fn an_unreachable_upstream_closes_the_client() {
    let out = Arc::new(Mutex::new(None));
    let o = out.clone();
    let log = FaultLog::new();
    let mut sim = turmoil::Builder::new().rng_seed(6).build();
    let l = log.clone();
    sim.host("proxy", move || {
        let l = l.clone();
        // Nothing listens on the upstream port.
        async move {
            serve(PROXY_PORT, "proxy:1".to_owned(), ProxyFaults::none(), 0, l).await?;
            Ok(())
        }
    });
    sim.client("client", async move {
        let c = Client::connect(PROXIED).await?;
        *o.lock().expect("test lock") = Some(c.is_none());
        Ok(())
    });
    sim.run().expect("runs");
    assert_eq!(*out.lock().expect("test lock"), Some(true), "the client saw the connection close");
    assert_eq!(log.connections(), 1);
}

/// Many connections and transactions with every fault at 30%: the fault sequence.
fn mixed_run(sim_seed: u64, proxy_seed: u64) -> Vec<InjectedFault> {
    let mut faults = ProxyFaults::none();
    for kind in FaultKind::ALL {
        faults.set(kind, 0.3);
    }
    let w = world(sim_seed, proxy_seed, Encoding::Msgpack, faults, || async {
        for _ in 0..40 {
            script(PROXIED, Duration::from_secs(3)).await?;
        }
        Ok(())
    });
    w.log.faults()
}

#[test]
fn the_same_seeds_give_the_same_fault_sequence() {
    let a = mixed_run(8, 42);
    assert!(a.len() >= 10, "{a:?}");
    for kind in FaultKind::ALL {
        assert!(a.iter().any(|f| f.kind == kind), "{kind} never injected: {a:?}");
    }
    assert_eq!(a, mixed_run(8, 42));
    assert_ne!(a, mixed_run(8, 43), "another proxy seed, other faults");
}

#[test]
fn garbage_from_the_server_reaches_the_client_unchanged() {
    use rand::{Rng, SeedableRng};
    // A bad announcement, then random frames (some decodable by chance, most not), with every
    // fault at probability 1: nothing answers a call the proxy saw, so nothing is broken; the
    // proxy neither panics nor drops the stream.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
    let mut frames: Vec<Vec<u8>> = vec![b"X9".to_vec()];
    for _ in 0..200 {
        let len = rng.random_range(0..64);
        frames.push((0..len).map(|_| rng.random()).collect());
    }
    let sent = frames.clone();
    let got = Arc::new(Mutex::new(vec![]));
    let g = got.clone();
    let log = FaultLog::new();
    let mut faults = ProxyFaults::none();
    for kind in FaultKind::ALL {
        faults.set(kind, 1.0);
    }
    let mut sim = turmoil::Builder::new().rng_seed(12).build();
    sim.host("server", move || {
        let frames = frames.clone();
        async move {
            let listener = TcpListener::bind(("0.0.0.0", SERVER_PORT)).await?;
            let (s, _) = listener.accept().await?;
            let (_r, mut w) = s.into_split();
            for f in &frames {
                write_payload(&mut w, f).await?;
            }
            // Keep the connection open until the client has read everything.
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        }
    });
    let l = log.clone();
    sim.host("proxy", move || {
        let l = l.clone();
        async move {
            serve(PROXY_PORT, format!("server:{SERVER_PORT}"), faults, 1, l).await?;
            Ok(())
        }
    });
    sim.client("client", async move {
        let (mut r, mut w) = TcpStream::connect(PROXIED).await?.into_split();
        let mut dec = FrameDecoder::default();
        write_payload(&mut w, b"M5").await?;
        while let Ok(Ok(Some(f))) =
            tokio::time::timeout(Duration::from_secs(5), read_frame(&mut r, &mut dec)).await
        {
            g.lock().expect("test lock").push(f.to_vec());
        }
        Ok(())
    });
    sim.run().expect("runs");
    assert_eq!(*got.lock().expect("test lock"), sent);
    assert_eq!(log.faults(), vec![]);
    assert!(log.undecodable() >= 150, "{}", log.undecodable());
}
