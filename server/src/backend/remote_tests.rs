//! The remote backend's connector against in-process sockets (whole-process tests against
//! runzeo and zeoraid are in `tests/tests/remote_backend.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use zeoraid_core::zeo::backend::{BackendEvent, BackendOutcome, BackendReqId, BackendRequest, Culprit};

use super::remote::{RemoteAddr, RemoteBackend, RemoteConfig};
use super::Sink;
use crate::net::TokioNet;

type Seen<T> = Arc<Mutex<Vec<T>>>;

fn sinks() -> (Sink, super::remote::EventSink, Seen<(BackendReqId, BackendOutcome)>, Seen<BackendEvent>) {
    let outcomes: Seen<(BackendReqId, BackendOutcome)> = Arc::default();
    let events: Seen<BackendEvent> = Arc::default();
    let (o, e) = (Arc::clone(&outcomes), Arc::clone(&events));
    let sink: Sink = Arc::new(move |id, out| o.lock().expect("lock").push((id, out)));
    let ev: super::remote::EventSink = Arc::new(move |x| e.lock().expect("lock").push(x));
    (sink, ev, outcomes, events)
}

fn cfg(address: RemoteAddr, connect_timeout: Duration) -> RemoteConfig {
    RemoteConfig {
        name: "b1".into(),
        address,
        storage: "1".into(),
        read_only: false,
        connect_timeout,
        max_frame: 1 << 20,
    }
}

#[test]
fn addresses_parse_and_display() {
    let a: RemoteAddr = "127.0.0.1:8100".parse().expect("tcp");
    assert_eq!(a.to_string(), "127.0.0.1:8100");
    let u: RemoteAddr = "unix:/tmp/zeo.sock".parse().expect("unix");
    assert_eq!(u, RemoteAddr::Unix("/tmp/zeo.sock".into()));
    assert_eq!(u.to_string(), "unix:/tmp/zeo.sock");
    let l: RemoteAddr = "localhost:8100".parse().expect("resolves");
    assert!(matches!(l, RemoteAddr::Tcp(a) if a.port() == 8100));
    assert!("unix:".parse::<RemoteAddr>().is_err());
    assert!("no port".parse::<RemoteAddr>().is_err());
}

#[tokio::test]
async fn a_server_that_never_answers_is_down_within_the_connect_deadline() {
    // A listener that accepts but never says anything: the handshake times out.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let hold = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            kept.push(s);
        }
    });
    let (sink, ev, outcomes, events) = sinks();
    let b = RemoteBackend::spawn(TokioNet, cfg(RemoteAddr::Tcp(addr), Duration::from_millis(300)), sink, ev);
    b.submit(BackendReqId(1), BackendRequest::NewOids { n: 1 });
    tokio::time::sleep(Duration::from_millis(600)).await;
    {
        let events = events.lock().expect("lock");
        assert!(
            matches!(&events[..], [BackendEvent::Down { reason }] if reason.contains("not registered")),
            "{events:?}"
        );
        let outcomes = outcomes.lock().expect("lock");
        assert!(
            matches!(&outcomes[..], [(BackendReqId(1), BackendOutcome::Failed(e))] if e.culprit == Culprit::Backend),
            "{outcomes:?}"
        );
    }
    b.close().await;
    assert_eq!(outcomes.lock().expect("lock").len(), 1, "nothing else was answered");
    hold.abort();
}

#[tokio::test]
async fn a_refused_connection_reports_down_once_and_closes() {
    // A port nobody listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    let (sink, ev, outcomes, events) = sinks();
    let b = RemoteBackend::spawn(TokioNet, cfg(RemoteAddr::Tcp(addr), Duration::from_secs(1)), sink, ev);
    // Three attempts (0.2 s + 0.4 s of backoff) report Down once.
    tokio::time::sleep(Duration::from_millis(900)).await;
    b.submit(BackendReqId(7), BackendRequest::NewOids { n: 1 });
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.close().await;
    let events = events.lock().expect("lock");
    assert_eq!(events.len(), 1, "{events:?}");
    let outcomes = outcomes.lock().expect("lock");
    assert!(matches!(&outcomes[..], [(BackendReqId(7), BackendOutcome::Failed(_))]), "{outcomes:?}");
}

/// Polls `cond` every 10 ms for up to 5 s.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A scripted msgpack ZEO server on a unix socket: announces `M5`, answers `register`,
/// `get_info`, `lastTransaction` and `new_oids`; returns the client's handshake frame.
#[cfg(unix)]
async fn scripted_server(l: tokio::net::UnixListener) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use zeoraid_core::ids::{Oid, Tid};
    use zeoraid_core::wire::codec::Codec;
    use zeoraid_core::wire::frame::{encode_frame, FrameDecoder};
    use zeoraid_core::wire::message::{ClientMessage, ServerMessage};
    use zeoraid_core::wire::reply::{Reply, StorageInfo};
    use zeoraid_core::wire::request::Request;
    use zeoraid_core::wire::Encoding;

    let (mut s, _) = l.accept().await.expect("accept");
    let mut out = Vec::new();
    encode_frame(b"M5", &mut out).expect("frame");
    s.write_all(&out).await.expect("announce");
    let codec = Codec::new(Encoding::Msgpack);
    let mut frames = FrameDecoder::new(1 << 20);
    let mut letter = None;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return letter.unwrap_or_default();
        }
        frames.push(&buf[..n]);
        while let Some(f) = frames.next_frame().expect("client framing") {
            if letter.is_none() {
                letter = Some(f.to_vec());
                continue;
            }
            let ClientMessage::Call { msgid, request } = codec.decode_client(&f).expect("decodes") else {
                continue;
            };
            let reply = match request {
                Request::Register { .. } => Reply::Register(Some(Tid::new(42))),
                Request::GetInfo => {
                    Reply::GetInfo(StorageInfo { name: Some("fake".into()), ..StorageInfo::default() })
                }
                Request::LastTransaction => Reply::LastTransaction(Tid::new(42)),
                Request::NewOids { .. } => Reply::NewOids(vec![Oid::new(1)]),
                // The client's check that the last transaction is held.
                Request::IteratorStart { .. } => Reply::IterId(zeoraid_core::wire::types::IterId(0)),
                Request::IteratorNext { .. } => {
                    Reply::IteratorNext(Some(zeoraid_core::wire::reply::TxnHeader {
                        tid: Tid::new(42),
                        status: zeoraid_core::wire::types::TxnStatus::NORMAL,
                        user: bytes::Bytes::new(),
                        description: bytes::Bytes::new(),
                        extension: zeoraid_core::wire::types::Extension::default(),
                    }))
                }
                _ => Reply::Nil,
            };
            let mut payload = Vec::new();
            codec.encode_server(&ServerMessage::reply(msgid, &reply), &mut payload).expect("encodes");
            let mut out = Vec::new();
            encode_frame(&payload, &mut out).expect("frame");
            s.write_all(&out).await.expect("reply");
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn comes_up_over_a_unix_socket_and_serves_requests() {
    use zeoraid_core::ids::{Oid, Tid};

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("zeo.sock");
    let l = tokio::net::UnixListener::bind(&path).expect("bind");
    let server = tokio::spawn(scripted_server(l));
    let (sink, ev, outcomes, events) = sinks();
    let addr: RemoteAddr = format!("unix:{}", path.display()).parse().expect("addr");
    let b = RemoteBackend::spawn(TokioNet, cfg(addr.clone(), Duration::from_secs(5)), sink, ev);
    eventually("Up", || !events.lock().expect("lock").is_empty()).await;
    {
        let events = events.lock().expect("lock");
        let [BackendEvent::Up(info)] = &events[..] else { panic!("{events:?}") };
        assert_eq!(info.last_tid, Tid::new(42));
        assert_eq!(info.info_name, addr.to_string());
        assert!(!info.blobs);
    }
    b.submit(BackendReqId(3), BackendRequest::NewOids { n: 1 });
    eventually("new_oids", || !outcomes.lock().expect("lock").is_empty()).await;
    assert_eq!(
        outcomes.lock().expect("lock")[..],
        [(BackendReqId(3), BackendOutcome::NewOids(vec![Oid::new(1)]))]
    );
    b.close().await;
    // Closing dropped the connection; the server saw the msgpack letter copied.
    assert_eq!(server.await.expect("server task"), b"M5");
}
