//! The world's servers, each the production [`Driver`] on [`SimNet`]: backend hosts (`b1..bN`,
//! a RAID of one production [`LocalBackend`] each over the host's [`Disk`], on port
//! [`BACKEND_PORT`]) and the RAID host (`raid`,
//! a RAID over one [`RemoteBackend`] per backend host, on port [`RAID_PORT`]). The storage
//! units are built the way `startup::open_storages` builds them (its shape, not its code).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use zeoraid_core::ids::BackendId;
use zeoraid_core::raid::Raid;
use zeoraid_core::wire::Encoding;
use zeoraid_core::zeo::backend::{BackendEvent, BackendInfo};
use zeoraid_core::zeo::events::{Now, ServerConfig, StorageIdx, StorageSeed};
use zeoraid_server::backend::remote::{RemoteAddr, RemoteBackend, RemoteConfig};
use zeoraid_server::backend::Sink;
use zeoraid_server::config::{
    BackendKind, BackendSettings, Config, ListenAddr, StorageSettings, ZeoSettings,
};
use zeoraid_server::driver::{AdminSender, BackendSlot, Driver, EventSink, Opened, Opener, StorageUnit};

use crate::disk::{open_backend, Disk};
use crate::net::SimNet;
use zeoraid_server::backend::local::LocalBackend;
use zeoraid_server::net::Net;
use zeoraid_server::raid_state::StateFile;
use zeoraid_server::storage::MemDir;

/// A remote backend as the driver uses it (the production `AnyBackend` holds local ones too).
#[derive(Debug)]
pub struct Remote(RemoteBackend);

impl zeoraid_server::driver::Backend for Remote {
    fn submit(
        &self,
        id: zeoraid_core::zeo::backend::BackendReqId,
        request: zeoraid_core::zeo::backend::BackendRequest,
    ) {
        self.0.submit(id, request);
    }
    fn disconnect(&self) {
        self.0.disconnect();
    }
}

/// Where backend hosts serve.
pub const BACKEND_PORT: u16 = 9000;
/// Where the RAID host serves.
pub const RAID_PORT: u16 = 8100;
/// The RAID host's state file, in its [`Disk`].
pub const RAID_STATE: &str = "1.raid-state";
/// The storage name everywhere.
pub const STORAGE: &str = "1";

/// The RAID's timeouts in the simulation (shorter than production's, for short worlds).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A read.
    pub call: Duration,
    /// A vote, finish or abort.
    pub write: Duration,
    /// Connecting and registering.
    pub connect: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            call: Duration::from_secs(5),
            write: Duration::from_secs(8),
            connect: Duration::from_secs(3),
        }
    }
}

/// The backend hosts' `transaction_timeout`. Without one, a RAID host that crashes (a machine
/// crash: no FIN reaches the backend) while it holds a backend's commit lock leaves that lock
/// held by a dead connection forever, and every later vote on that backend times out (seeds 212
/// and 465 of the first batch, with `None`): a deployment must set it on its backend servers.
pub const BACKEND_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The RAID host's own `transaction_timeout` (its front, towards the clients). Without one, a
/// client connection whose close never reaches the RAID host while it holds the front's commit
/// lock after its vote keeps that lock forever: every later vote waits for it (clients time out
/// and reconnect in a loop) and a recovery never switches, since it waits for the voted
/// transaction to end (seed 94: c1's connection, voted, never finished, aborted nor closed). Like
/// the backend hosts, a deployment must set it on the RAID server.
pub const RAID_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

fn server_config(seed: StorageSeed, transaction_timeout: Option<Duration>) -> ServerConfig {
    ServerConfig {
        announce: Encoding::Pickle,
        max_frame: 1 << 24,
        read_only: false,
        transaction_timeout,
        invalidation_queue_size: 100,
        storages: vec![seed],
    }
}

fn seed_of(raid: &Raid, info_name: &str) -> StorageSeed {
    StorageSeed {
        name: STORAGE.to_string(),
        read_only: false,
        last_tid: raid.last_tid(),
        recent: Vec::new(),
        size: raid.size(),
        info_name: info_name.to_string(),
        blobs: raid.blobs(),
    }
}

/// The storage settings of the RAID host: one ZEO backend per backend host.
pub fn raid_settings(backends: &[(String, IpAddr)], t: Timeouts) -> StorageSettings {
    let mut s = Config::defaults(std::path::Path::new("/sim")).storages.remove(0);
    s.name = STORAGE.to_string();
    s.call_timeout = t.call;
    s.write_timeout = t.write;
    s.connect_timeout = t.connect;
    s.backends = backends
        .iter()
        .map(|(name, ip)| BackendSettings {
            name: name.clone(),
            kind: BackendKind::Zeo(ZeoSettings {
                address: RemoteAddr::Tcp(SocketAddr::new(*ip, BACKEND_PORT)),
                storage: STORAGE.to_string(),
                read_only: false,
            }),
        })
        .collect();
    s
}

/// Opens nothing: a backend host's RAID is never reloaded.
struct NoOpener;

impl Opener<LocalBackend<MemDir>> for NoOpener {
    fn open(
        &mut self,
        _: &StorageSettings,
        b: &BackendSettings,
        _: Sink,
        _: EventSink,
    ) -> Result<Opened<LocalBackend<MemDir>>, String> {
        Err(format!("cannot open {} in a backend host", b.name))
    }
    fn close(&mut self, _: &str, _: &str, _: LocalBackend<MemDir>) {}
}

fn any_addr(port: u16) -> ListenAddr {
    ListenAddr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
}

/// A backend host's software: serves the storage on `disk` until the host crashes.
pub async fn backend_host(name: String, disk: Disk) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut driver = Driver::new(SimNet::default());
    driver.set_check_invariants(true);
    let listener = driver.net().bind(&any_addr(BACKEND_PORT)).await?;
    let backend = open_backend(&name, &disk, driver.sink(StorageIdx(0), BackendId(0)))?;
    let info = backend.info();
    let mut settings = raid_settings(&[], Timeouts::default());
    settings.backends = vec![BackendSettings {
        name: "mem".into(),
        kind: BackendKind::Zeo(ZeoSettings {
            address: RemoteAddr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1)),
            storage: STORAGE.into(),
            read_only: false,
        }),
    }];
    let now = Now { mono: start.elapsed(), wall: driver.net().wall_clock() };
    let raid = Raid::new(settings.raid_config(), settings.specs(), None, vec![Some(info)], now);
    let seed = seed_of(&raid, "mem");
    let mut backends = BTreeMap::new();
    backends.insert(BackendId(0), BackendSlot::new(STORAGE, "mem", Some(backend)));
    let unit = StorageUnit::new(raid, settings, None, backends);
    driver
        .run(
            server_config(seed, Some(BACKEND_TRANSACTION_TIMEOUT)),
            vec![listener],
            vec![unit],
            NoOpener,
            start,
            std::future::pending(),
            Duration::from_secs(1),
        )
        .await;
    Ok(())
}

/// Opens remote backends on [`SimNet`] (for `reload`).
struct SimOpener;

fn spawn_remote(
    storage: &StorageSettings,
    b: &BackendSettings,
    sink: Sink,
    events: EventSink,
) -> Result<Remote, String> {
    let BackendKind::Zeo(z) = &b.kind else {
        return Err(format!("{}: only ZEO backends in the simulation", b.name));
    };
    let cfg = RemoteConfig {
        name: format!("{}/{}", storage.name, b.name),
        address: z.address.clone(),
        storage: z.storage.clone(),
        read_only: z.read_only,
        connect_timeout: storage.connect_timeout,
        max_frame: 1 << 24,
    };
    Ok(Remote(RemoteBackend::spawn(SimNet::default(), cfg, sink, events)))
}

impl Opener<Remote> for SimOpener {
    fn open(
        &mut self,
        storage: &StorageSettings,
        b: &BackendSettings,
        sink: Sink,
        events: EventSink,
    ) -> Result<Opened<Remote>, String> {
        Ok(Opened { backend: spawn_remote(storage, b, sink, events)?, info: None })
    }
    fn close(&mut self, _: &str, _: &str, backend: Remote) {
        tokio::spawn(backend.0.close());
    }
}

/// Where the running RAID host publishes its admin endpoint (replaced at each restart).
pub type AdminSlot = Arc<Mutex<Option<AdminSender>>>;

/// The RAID host's software: connects to the backends (each has until the connect timeout to
/// come up, else starts degraded), then serves until the host crashes.
pub async fn raid_host(
    settings: StorageSettings,
    admin: AdminSlot,
    disk: Disk,
    clock_back: Arc<AtomicU64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut driver = Driver::new(SimNet::with_clock(clock_back));
    driver.set_check_invariants(true);
    let listener = driver.net().bind(&any_addr(RAID_PORT)).await?;
    let deadline = start + settings.connect_timeout;
    let mut slots = BTreeMap::new();
    let mut waits = Vec::new();
    for (j, b) in settings.backends.iter().enumerate() {
        let id = BackendId(j as u32);
        let (up_tx, up_rx) = tokio::sync::watch::channel::<Option<BackendInfo>>(None);
        let to_driver = driver.event_sink(StorageIdx(0), id);
        let events: EventSink = Arc::new(move |ev: BackendEvent| {
            if let BackendEvent::Up(info) = &ev {
                up_tx.send_replace(Some(info.clone()));
            }
            to_driver(ev);
        });
        let backend = spawn_remote(&settings, b, driver.sink(StorageIdx(0), id), events)?;
        slots.insert(id, BackendSlot::new(STORAGE, &b.name, Some(backend)));
        waits.push(up_rx);
    }
    let mut infos = Vec::new();
    for mut up in waits {
        let got = tokio::time::timeout_at(deadline, up.wait_for(Option::is_some)).await;
        infos.push(match got {
            Ok(Ok(i)) => i.clone(),
            _ => None,
        });
    }
    let now = Now { mono: start.elapsed(), wall: driver.net().wall_clock() };
    let state = StateFile::Mem { dir: disk.current(), name: RAID_STATE.to_string() };
    let persisted = state.load()?;
    let raid = Raid::new(settings.raid_config(), settings.specs(), persisted, infos, now);
    let seed = seed_of(&raid, "raid");
    let unit = StorageUnit::new(raid, settings, Some(state), slots);
    *admin.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(driver.admin_sender());
    driver
        .run(
            server_config(seed, Some(RAID_TRANSACTION_TIMEOUT)),
            vec![listener],
            vec![unit],
            SimOpener,
            start,
            std::future::pending(),
            Duration::from_secs(1),
        )
        .await;
    Ok(())
}
