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
    b_after_close_answers(&outcomes);
    hold.abort();
}

fn b_after_close_answers(outcomes: &Seen<(BackendReqId, BackendOutcome)>) {
    assert_eq!(outcomes.lock().expect("lock").len(), 1, "nothing else was answered");
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
