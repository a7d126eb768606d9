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

/// Opens nothing (reload is not exercised here).
struct NoOpener;

impl Opener<Recorder> for NoOpener {
    fn open(
        &mut self,
        _storage: &crate::config::StorageSettings,
        settings: &crate::config::BackendSettings,
        _sink: Sink,
        _events: EventSink,
    ) -> Result<Opened<Recorder>, String> {
        Err(format!("cannot open {}", settings.name))
    }

    fn close(&mut self, _storage: &str, _name: &str, _backend: Recorder) {}
}

fn info() -> zeoraid_core::zeo::backend::BackendInfo {
    zeoraid_core::zeo::backend::BackendInfo {
        last_tid: zeoraid_core::ids::Tid::ZERO,
        size: Default::default(),
        blobs: false,
        supports_undo: true,
        info_name: "mem".into(),
        read_only: false,
        rebuildable: false,
    }
}

/// Storage "1": a RAID over `names`, each a recorder, the state in `state_file` if given.
fn unit(
    names: &[&str],
    recorders: &[Recorder],
    state_file: Option<crate::raid_state::StateFile>,
) -> StorageUnit<Recorder> {
    use crate::config::{BackendKind, BackendSettings, LocalSettings, StorageSettings};
    let mut settings = crate::config::Config::defaults(std::path::Path::new("unused")).storages.remove(0);
    settings.backends = names
        .iter()
        .map(|n| BackendSettings {
            name: n.to_string(),
            kind: BackendKind::Local(LocalSettings {
                path: format!("unused/{n}").into(),
                blob_dir: None,
                read_only: false,
                fsync: false,
                read_threads: 1,
            }),
        })
        .collect();
    let settings = StorageSettings { ..settings };
    let now = Now { mono: Duration::ZERO, wall: Duration::from_secs(1_700_000_000) };
    let raid = zeoraid_core::raid::Raid::new(
        settings.raid_config(),
        settings.specs(),
        None,
        names.iter().map(|_| Some(info())).collect(),
        now,
    );
    let backends = names
        .iter()
        .zip(recorders)
        .enumerate()
        .map(|(i, (n, r))| (BackendId(i as u32), BackendSlot::new("1", n, Some(r.clone()))))
        .collect();
    StorageUnit::new(raid, settings, state_file, backends)
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
    let sink = driver.sink(StorageIdx(0), BackendId(0));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(driver.run(
        config(),
        vec![listener],
        vec![unit(&["m"], &[Recorder::default()], None)],
        NoOpener,
        Instant::now(),
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
        Vec::<StorageUnit<Recorder>>::new(),
        NoOpener,
        Instant::now(),
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

#[tokio::test]
async fn admin_requests_are_answered_and_the_state_is_saved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("1.raid-state");
    let driver = Driver::new(TokioNet);
    let admin = driver.admin_sender();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let recorders = [Recorder::default(), Recorder::default()];
    let run = tokio::spawn(driver.run(
        config(),
        Vec::new(),
        vec![unit(&["a", "b"], &recorders, Some(crate::raid_state::StateFile::Real(state.clone())))],
        NoOpener,
        Instant::now(),
        async move {
            let _ = stop_rx.await;
        },
        Duration::ZERO,
    ));
    let r = admin.ask(AdminRequest::Status).await.expect("answered");
    assert!(r.ok && r.status.as_deref() == Some("optimal"), "{r:?}");
    let r = admin.ask(AdminRequest::Details).await.expect("answered");
    let names: Vec<&str> = r.storages[0].backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(r.storages[0].backends.iter().all(|b| b.state == "optimal" && b.connected), "{r:?}");
    let r = admin
        .ask(AdminRequest::Disable { storage: Some("2".into()), name: "b".into() })
        .await
        .expect("answered");
    assert_eq!(r.error.as_deref(), Some("no storage named \"2\""));
    let r = admin.ask(AdminRequest::Disable { storage: None, name: "zz".into() }).await.expect("answered");
    assert!(!r.ok && r.error.as_deref().is_some_and(|e| e.contains("zz")), "{r:?}");
    // The first state reached the file.
    let mut saved = None;
    for _ in 0..100 {
        saved = crate::raid_state::load(&state).expect("readable");
        if saved.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let saved = saved.expect("the state file was written");
    assert_eq!(saved.backends.len(), 2);
    // recover: refusals carry the RAID's reason; a started one shows in details with its limit.
    let recover = |storage: Option<&str>, name: &str| AdminRequest::Recover {
        storage: storage.map(str::to_string),
        backend: name.to_string(),
        rate_bytes: None,
        rate_txns: Some(7),
    };
    let r = admin.ask(recover(Some("2"), "b")).await.expect("answered");
    assert_eq!(r.error.as_deref(), Some("no storage named \"2\""));
    let r = admin.ask(recover(None, "zz")).await.expect("answered");
    assert!(!r.ok && r.error.as_deref().is_some_and(|e| e.contains("zz")), "{r:?}");
    let r = admin.ask(recover(None, "a")).await.expect("answered");
    assert!(!r.ok && r.error.as_deref().is_some_and(|e| e.contains("\"a\"")), "an optimal backend: {r:?}");
    let r = admin.ask(AdminRequest::Disable { storage: None, name: "b".into() }).await.expect("answered");
    assert!(r.ok, "{r:?}");
    let r = admin.ask(recover(None, "b")).await.expect("answered");
    assert!(r.ok && r.notes == ["recovery of b started"], "{r:?}");
    let r = admin.ask(recover(None, "b")).await.expect("answered");
    assert!(!r.ok && r.error.as_deref().is_some_and(|e| e.contains("only one recovery")), "{r:?}");
    let r = admin.ask(AdminRequest::Details).await.expect("answered");
    assert_eq!(r.status.as_deref(), Some("recovering"), "{r:?}");
    let p = r.storages[0].recovery.as_ref().expect("the recovery's progress");
    assert_eq!((p.target.as_str(), p.source.as_str()), ("b", "a"));
    assert_eq!((p.limit_bytes, p.limit_txns), (None, Some(7)), "the request's limit");
    stop_tx.send(()).expect("driver running");
    let units =
        tokio::time::timeout(Duration::from_secs(5), run).await.expect("stops in time").expect("no panic");
    // The newest state, with the recovery in progress, is handed back to be saved last.
    let last = units[0].last_state.as_ref().map(|(_, s)| s).expect("a state");
    assert_eq!(last.recovery.as_ref().map(|r| r.target.as_str()), Some("b"), "{last:?}");
    assert!(admin.ask(AdminRequest::Status).await.is_none(), "no answer once the driver is gone");
}

#[tokio::test]
async fn recover_of_a_failed_raids_last_optimal_backend_promotes_it_with_a_note() {
    use zeoraid_core::raid::{BackendState, PersistedBackend, PersistedRaid};
    let driver = Driver::new(TokioNet);
    let admin = driver.admin_sender();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let recorders = [Recorder::default(), Recorder::default()];
    let mut u = unit(&["a", "b"], &recorders, None);
    // A failed RAID: a, its last optimal backend, was disabled by the operator; b is degraded.
    let failed = PersistedRaid {
        backends: vec![
            PersistedBackend { name: "a".into(), state: BackendState::Disabled { since: 1.0 } },
            PersistedBackend {
                name: "b".into(),
                state: BackendState::Degraded { reason: "disconnected".into(), since: 1.0 },
            },
        ],
        last_tid: zeoraid_core::ids::Tid::ZERO,
        acked_tid: zeoraid_core::ids::Tid::ZERO,
        oid_hwm: zeoraid_core::ids::Oid::new(0),
        recovery: None,
        last_optimal: Some("a".into()),
    };
    let now = Now { mono: Duration::ZERO, wall: Duration::from_secs(1_700_000_000) };
    u.raid = zeoraid_core::raid::Raid::new(
        u.settings.raid_config(),
        u.settings.specs(),
        Some(failed),
        vec![Some(info()), Some(info())],
        now,
    );
    let run = tokio::spawn(driver.run(
        config(),
        Vec::new(),
        vec![u],
        NoOpener,
        Instant::now(),
        async move {
            let _ = stop_rx.await;
        },
        Duration::ZERO,
    ));
    let recover = |name: &str| AdminRequest::Recover {
        storage: None,
        backend: name.to_string(),
        rate_bytes: None,
        rate_txns: None,
    };
    let r = admin.ask(AdminRequest::Status).await.expect("answered");
    assert_eq!(r.status.as_deref(), Some("failed"), "{r:?}");
    let r = admin.ask(recover("b")).await.expect("answered");
    assert!(!r.ok && r.error.as_deref().is_some_and(|e| e.contains("bring a back")), "{r:?}");
    let r = admin.ask(recover("a")).await.expect("answered");
    assert!(r.ok && r.notes.len() == 1 && r.notes[0].contains("without a copy"), "{r:?}");
    let r = admin.ask(AdminRequest::Status).await.expect("answered");
    assert_eq!(r.status.as_deref(), Some("degraded"), "{r:?}");
    stop_tx.send(()).expect("driver running");
    tokio::time::timeout(Duration::from_secs(5), run).await.expect("stops in time").expect("no panic");
}
