use super::*;
use crate::net::{Listener, TokioNet};
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeoraid_core::wire::Encoding;

/// A backend that records what it is asked.
#[derive(Debug, Default, Clone)]
struct Recorder(Arc<Mutex<Vec<BackendReqId>>>);

impl Backend for Recorder {
    fn submit(&self, id: BackendReqId, _request: BackendRequest) {
        if let Ok(mut v) = self.0.lock() {
            v.push(id);
        }
    }
}

fn config() -> ServerConfig {
    ServerConfig {
        announce: Encoding::Pickle,
        max_frame: 1 << 20,
        read_only: false,
        transaction_timeout: None,
        invalidation_queue_size: 10,
        storages: Vec::new(),
    }
}

#[tokio::test]
async fn serves_connections_then_shuts_down_closing_them_and_the_listener() {
    let driver = Driver::new(TokioNet);
    let listener = driver.net().bind(&"127.0.0.1:0".parse().expect("addr")).await.expect("bind");
    let addr = listener.local_addr();
    let sink = driver.sink(StorageIdx(0));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(driver.run(
        config(),
        vec![listener],
        vec![Recorder::default()],
        async move {
            let _ = stop_rx.await;
        },
        Duration::from_millis(100),
    ));

    // Handshake on two connections; one sends bytes in odd splits and leaves.
    let mut a = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let mut b = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    for c in [&mut a, &mut b] {
        let mut hello = [0u8; 6];
        c.read_exact(&mut hello).await.expect("handshake");
        assert_eq!(&hello, b"\x00\x00\x00\x02Z5");
    }
    a.write_all(b"\x00\x00\x00\x02Z").await.expect("write");
    a.write_all(b"5\xff\xff").await.expect("write");
    drop(a);
    // A backend outcome after everything is harmless.
    sink(BackendReqId(7), BackendOutcome::Nil);

    stop_tx.send(()).expect("driver running");
    let backends =
        tokio::time::timeout(Duration::from_secs(5), run).await.expect("stops in time").expect("no panic");
    assert_eq!(backends.len(), 1);
    // The open connection was closed, the listener is gone.
    let mut rest = Vec::new();
    let n =
        tokio::time::timeout(Duration::from_secs(5), b.read_to_end(&mut rest)).await.expect("eof in time");
    assert_eq!(n.expect("clean close"), 0);
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn a_peer_that_resets_is_a_disconnect_not_a_failure() {
    let driver = Driver::new(TokioNet);
    let listener = driver.net().bind(&"127.0.0.1:0".parse().expect("addr")).await.expect("bind");
    let addr = listener.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(driver.run(
        config(),
        vec![listener],
        Vec::<Recorder>::new(),
        async move {
            let _ = stop_rx.await;
        },
        Duration::ZERO,
    ));
    for _ in 0..20 {
        let c = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        // RST on close (a zero linger does not block on drop, which is what the deprecation is about).
        #[allow(deprecated)]
        c.set_linger(Some(Duration::ZERO)).expect("linger");
        drop(c);
    }
    let mut ok = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let mut hello = [0u8; 6];
    ok.read_exact(&mut hello).await.expect("still serving");
    stop_tx.send(()).expect("driver running");
    tokio::time::timeout(Duration::from_secs(5), run).await.expect("stops in time").expect("no panic");
}
