//! Start-up and shutdown of the storages: opening each RAID's backends, reading its state
//! file, creating the [`Raid`], seeding the ZEO front; and at exit closing every backend, then
//! saving each RAID's newest state.
//!
//! Start-up rules:
//! * The state file is read first; a corrupt one stops the start-up with an error naming it
//!   (nothing is opened).
//! * A local backend that fails to open starts degraded (`None` info, logged at warn), except
//!   when its `Data.fs` is locked: another server is using it, and running beside it would
//!   corrupt the state of both, so that is fatal.
//! * Remote backends are connected in parallel (every connector is started first); each has
//!   until its storage's `connect_timeout` after its start to come up, else it starts degraded
//!   (its connector keeps trying, with backoff).
//! * A storage none of whose backends could be opened or reached is fatal too (it could serve
//!   nothing).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tracing::{info, warn};
use zeoraid_core::ids::BackendId;
use zeoraid_core::raid::Raid;
use zeoraid_core::zeo::backend::{BackendEvent, BackendInfo, BackendReqId, BackendRequest};
use zeoraid_core::zeo::events::{Now, StorageIdx, StorageSeed};

use crate::backend::local::{backend_fault, LocalBackend, LocalBackendError, LocalConfig};
use crate::backend::remote::{RemoteBackend, RemoteConfig};
use crate::backend::Sink;
use crate::config::{BackendKind, BackendSettings, Config, StorageSettings};
use crate::driver::{Backend, BackendSlot, Driver, EventSink, Opened, Opener, StorageUnit};
use crate::net::{Net, TokioNet};
use crate::raid_state::{self, StateFile};
use crate::storage::OpenError;

/// A backend of any kind.
#[derive(Debug)]
pub enum AnyBackend {
    /// A local FileStorage.
    Local(LocalBackend),
    /// A remote ZEO server.
    Remote(RemoteBackend),
    /// A local FileStorage that `reload` added, being opened in the background.
    Opening(OpeningLocal),
}

/// A local backend opened on its own thread (for `reload`): `Up(info)` is reported through
/// the event sink when it is open, `Down{reason}` when it cannot be; until then its requests
/// fail (the RAID sends none: a backend added by reload joins degraded).
pub struct OpeningLocal {
    cell: Arc<OnceLock<LocalBackend>>,
    thread: Option<std::thread::JoinHandle<()>>,
    sink: Sink,
}

impl std::fmt::Debug for OpeningLocal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpeningLocal").field("open", &self.cell.get().is_some()).finish_non_exhaustive()
    }
}

/// The directories a writable local backend lives in (as `serve` creates at start).
fn create_dirs(cfg: &LocalConfig) -> Result<(), String> {
    if cfg.read_only {
        return Ok(());
    }
    let parent = cfg.path.parent().filter(|p| !p.as_os_str().is_empty());
    for d in parent.into_iter().chain(cfg.blob_dir.as_deref()) {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    Ok(())
}

impl OpeningLocal {
    fn start(name: String, cfg: LocalConfig, sink: Sink, events: EventSink) -> Result<OpeningLocal, String> {
        let cell = Arc::new(OnceLock::new());
        let (c, s) = (Arc::clone(&cell), Arc::clone(&sink));
        let span = tracing::Span::current();
        let thread = std::thread::Builder::new()
            .name(format!("zr-{name}-open"))
            .spawn(move || {
                let _g = span.enter();
                if let Err(e) = create_dirs(&cfg) {
                    warn!("cannot be opened: {e}");
                    events(BackendEvent::Down { reason: format!("cannot be opened: {e}") });
                    return;
                }
                match LocalBackend::open(&name, &cfg, s) {
                    Ok((b, report)) => {
                        info!("opened {}: index from {:?}", cfg.path.display(), report.index);
                        let info = b.info();
                        if c.set(b).is_ok() {
                            events(BackendEvent::Up(info));
                        }
                    }
                    Err(e) => {
                        warn!("cannot be opened: {e}");
                        events(BackendEvent::Down { reason: format!("cannot be opened: {e}") });
                    }
                }
            })
            .map_err(|e| format!("cannot start a thread to open it: {e}"))?;
        Ok(OpeningLocal { cell, thread: Some(thread), sink })
    }

    /// Waits for the opening to end (blocking); the backend if it opened.
    fn finish(mut self) -> Option<LocalBackend> {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Arc::try_unwrap(self.cell).ok().and_then(OnceLock::into_inner)
    }
}

impl Backend for AnyBackend {
    fn submit(&self, id: BackendReqId, request: BackendRequest) {
        match self {
            AnyBackend::Local(b) => b.submit(id, request),
            AnyBackend::Remote(b) => b.submit(id, request),
            AnyBackend::Opening(o) => match o.cell.get() {
                Some(b) => b.submit(id, request),
                None => (o.sink)(id, backend_fault("the backend is still being opened".to_string())),
            },
        }
    }

    fn disconnect(&self) {
        match self {
            AnyBackend::Local(_) | AnyBackend::Opening(_) => {}
            AnyBackend::Remote(b) => b.disconnect(),
        }
    }
}

impl AnyBackend {
    /// Closes it (a local one syncs and saves its index; a remote one drops its connection).
    pub async fn close(self) -> Result<(), String> {
        match self {
            AnyBackend::Local(b) => b.close().map_err(|e| e.to_string()),
            AnyBackend::Remote(b) => {
                b.close().await;
                Ok(())
            }
            AnyBackend::Opening(o) => match o.finish() {
                Some(b) => b.close().map_err(|e| e.to_string()),
                None => Ok(()),
            },
        }
    }
}

/// Why a backend could not be opened: fatal, or it starts degraded.
enum OpenFailure {
    Fatal(String),
    Degraded(String),
}

/// Opens one backend: a local one at once; a remote one's connector is started, its `Up`
/// comes through `events` (and `up`, when given, for the start-up to wait on).
fn open_backend(
    storage: &StorageSettings,
    b: &BackendSettings,
    max_frame: u32,
    sink: Sink,
    events: EventSink,
) -> Result<Opened<AnyBackend>, OpenFailure> {
    match &b.kind {
        BackendKind::Local(l) => {
            match LocalBackend::open(&format!("{}{}", storage.name, b.name), &l.local_config(), sink) {
                Ok((backend, report)) => {
                    info!(
                        "opened {}: index from {:?}, {} transaction(s) scanned{}",
                        l.path.display(),
                        report.index,
                        report.scanned_transactions,
                        if report.dropped_tail.is_some() { ", a torn tail was cut back" } else { "" }
                    );
                    let info = backend.info();
                    Ok(Opened { backend: AnyBackend::Local(backend), info: Some(info) })
                }
                Err(e @ LocalBackendError::Open(OpenError::Locked { .. })) => {
                    Err(OpenFailure::Fatal(e.to_string()))
                }
                Err(e) => Err(OpenFailure::Degraded(e.to_string())),
            }
        }
        BackendKind::Zeo(z) => {
            let cfg = RemoteConfig {
                name: format!("{}/{}", storage.name, b.name),
                address: z.address.clone(),
                storage: z.storage.clone(),
                read_only: z.read_only,
                connect_timeout: storage.connect_timeout,
                max_frame,
            };
            info!("connecting to {} (storage {})", z.address, z.storage);
            Ok(Opened {
                backend: AnyBackend::Remote(RemoteBackend::spawn(TokioNet, cfg, sink, events)),
                info: None,
            })
        }
    }
}

/// The [`Opener`] of `reload`.
#[derive(Debug)]
pub struct RealOpener {
    /// `[server] max_frame`, for remote backends.
    pub max_frame: u32,
}

impl Opener<AnyBackend> for RealOpener {
    fn open(
        &mut self,
        storage: &StorageSettings,
        settings: &BackendSettings,
        sink: Sink,
        events: EventSink,
    ) -> Result<Opened<AnyBackend>, String> {
        if let BackendKind::Local(l) = &settings.kind {
            // Opening may scan a big Data.fs: in the background, not on the driver's thread.
            let opening = OpeningLocal::start(
                format!("{}{}", storage.name, settings.name),
                l.local_config(),
                sink,
                events,
            )?;
            return Ok(Opened { backend: AnyBackend::Opening(opening), info: None });
        }
        open_backend(storage, settings, self.max_frame, sink, events).map_err(|e| match e {
            OpenFailure::Fatal(m) | OpenFailure::Degraded(m) => m,
        })
    }

    fn close(&mut self, storage: &str, name: &str, backend: AnyBackend) {
        // Off the driver's thread: a local close joins threads and syncs.
        let what = format!("storage {storage} backend {name}");
        let report = move |r: Result<(), String>| match r {
            Ok(()) => info!("{what} closed"),
            Err(e) => warn!("closing {what}: {e}"),
        };
        match backend {
            AnyBackend::Local(b) => {
                tokio::task::spawn_blocking(move || report(b.close().map_err(|e| e.to_string())));
            }
            AnyBackend::Opening(o) => {
                tokio::task::spawn_blocking(move || match o.finish() {
                    Some(b) => report(b.close().map_err(|e| e.to_string())),
                    None => report(Ok(())),
                });
            }
            AnyBackend::Remote(b) => {
                tokio::spawn(async move {
                    b.close().await;
                    report(Ok(()));
                });
            }
        }
    }
}

/// The opened storages.
#[derive(Debug)]
pub struct Started {
    /// One per storage, in config order.
    pub units: Vec<StorageUnit<AnyBackend>>,
    /// The front's seeds, in the same order.
    pub seeds: Vec<StorageSeed>,
}

/// A remote backend's first `Up`, for the start-up to wait on.
type UpWatch = tokio::sync::watch::Receiver<Option<BackendInfo>>;

/// Opens every storage of `cfg` (see the module doc); `start` is the driver's clock origin.
pub async fn open_storages<N: Net>(
    cfg: &Config,
    driver: &Driver<N>,
    start: Instant,
    queue: usize,
) -> Result<Started, String> {
    // Every state file first: a corrupt one stops everything before anything is opened.
    let mut persisted = Vec::with_capacity(cfg.storages.len());
    for s in &cfg.storages {
        persisted.push(raid_state::load(&s.state_file).map_err(|e| format!("storage {}: {e}", s.name))?);
    }
    // Open the local backends, start every remote connector.
    let mut opened = Vec::with_capacity(cfg.storages.len());
    for (i, s) in cfg.storages.iter().enumerate() {
        let mut slots = BTreeMap::new();
        let mut infos: Vec<Option<BackendInfo>> = Vec::with_capacity(s.backends.len());
        let mut waits: Vec<(BackendId, UpWatch)> = Vec::new();
        let mut failures = Vec::new();
        let deadline = tokio::time::Instant::now() + s.connect_timeout;
        for (j, b) in s.backends.iter().enumerate() {
            let id = BackendId(j as u32);
            let mut slot = BackendSlot::new(&s.name, &b.name, None);
            let sink = driver.sink(StorageIdx(i), id);
            let (up_tx, up_rx) = tokio::sync::watch::channel(None);
            let to_driver = driver.event_sink(StorageIdx(i), id);
            let events: EventSink = Arc::new(move |ev: BackendEvent| {
                if let BackendEvent::Up(info) = &ev {
                    up_tx.send_replace(Some(info.clone()));
                }
                to_driver(ev);
            });
            let result = slot.span.in_scope(|| open_backend(s, b, cfg.server.max_frame, sink, events));
            match result {
                Ok(o) => {
                    if o.info.is_none() {
                        waits.push((id, up_rx));
                    }
                    slot.backend = Some(o.backend);
                    infos.push(o.info);
                }
                Err(OpenFailure::Fatal(e)) => {
                    return Err(format!("storage {} backend {} ({}): {e}", s.name, b.name, where_(b)))
                }
                Err(OpenFailure::Degraded(e)) => {
                    slot.span.in_scope(|| warn!("cannot be opened, starts degraded: {e}"));
                    failures.push(format!("backend {} ({}): {e}", b.name, where_(b)));
                    infos.push(None);
                }
            }
            slots.insert(id, slot);
        }
        opened.push((slots, infos, waits, failures, deadline));
    }
    // Wait for the remote ones, each until its storage's deadline (all in parallel: the
    // deadlines were fixed when the connectors started).
    let mut units = Vec::with_capacity(cfg.storages.len());
    let mut seeds = Vec::with_capacity(cfg.storages.len());
    for ((s, persisted), (slots, mut infos, waits, mut failures, deadline)) in
        cfg.storages.iter().zip(persisted).zip(opened)
    {
        for (id, mut up) in waits {
            let got = tokio::time::timeout_at(deadline, up.wait_for(Option::is_some)).await;
            let info = match got {
                Ok(Ok(info)) => info.clone(),
                _ => None,
            };
            let Some(slot) = slots.get(&id) else { continue };
            match info {
                Some(info) => infos[id.0 as usize] = Some(info),
                None => {
                    let why =
                        format!("not up within the connect timeout ({}s)", s.connect_timeout.as_secs_f64());
                    slot.span.in_scope(|| warn!("{why}; starts degraded, keeps trying"));
                    failures.push(format!("backend {}: {why}", slot.name));
                }
            }
        }
        if infos.iter().all(Option::is_none) {
            return Err(format!(
                "storage {}: no backend could be opened or reached: {}",
                s.name,
                failures.join("; ")
            ));
        }
        if persisted.is_none() {
            info!("storage {}: no state file {} (first start)", s.name, s.state_file.display());
        }
        let now = Now { mono: start.elapsed(), wall: driver.net().wall_clock() };
        let raid = Raid::new(s.raid_config(), s.specs(), persisted, infos, now);
        let unit = StorageUnit::new(raid, s.clone(), Some(StateFile::Real(s.state_file.clone())), slots);
        seeds.push(seed(&unit, s, queue));
        info!("storage {}: RAID {} over {} backend(s)", s.name, unit.raid.status(), s.backends.len());
        for d in unit.raid.details() {
            info!("storage {} backend {} ({}): {}", s.name, d.name, d.label, d.state.word());
        }
        units.push(unit);
    }
    Ok(Started { units, seeds })
}

fn where_(b: &BackendSettings) -> String {
    match &b.kind {
        BackendKind::Local(l) => l.path.display().to_string(),
        BackendKind::Zeo(z) => z.address.to_string(),
    }
}

/// The front's seed of a storage: the RAID's last tid, size and blobs; the recent commits and
/// the `get_info` name of the first optimal local backend.
fn seed(unit: &StorageUnit<AnyBackend>, s: &StorageSettings, queue: usize) -> StorageSeed {
    let details = unit.raid.details();
    let first_local = unit.backends.iter().find_map(|(id, slot)| {
        let optimal = details.get(id.0 as usize).is_some_and(|d| d.state.is_optimal());
        match &slot.backend {
            Some(AnyBackend::Local(b)) if optimal => Some(b),
            _ => None,
        }
    });
    let (recent, info_name) = match first_local.map(|b| b.seed(queue)) {
        Some(Ok(seed)) => (seed.recent, seed.info_name),
        Some(Err(e)) => {
            warn!("storage {}: cannot read the recent commits: {e}", s.name);
            (Vec::new(), s.name.clone())
        }
        None => {
            // No local backend to rebuild them from: the commits saved at the last clean
            // shutdown, if nothing was committed since (crate::recent).
            let saved = unit
                .state_file
                .as_ref()
                .and_then(|f| crate::recent::load(&crate::recent::file_for(f), unit.raid.last_tid()));
            (
                saved.unwrap_or_default(),
                s.backends.first().map_or_else(|| s.name.clone(), BackendSettings::label),
            )
        }
    };
    let read_only = s.backends.iter().all(|b| match &b.kind {
        BackendKind::Local(l) => l.read_only,
        BackendKind::Zeo(z) => z.read_only,
    });
    StorageSeed {
        name: s.name.clone(),
        read_only,
        last_tid: unit.raid.last_tid(),
        recent,
        size: unit.raid.size(),
        info_name,
        blobs: unit.raid.blobs(),
    }
}

/// Shutdown: closes every backend, then saves each RAID's newest state (last, so that it is
/// what the next start reads). Returns the failures.
pub async fn close_storages(units: Vec<StorageUnit<AnyBackend>>) -> Vec<String> {
    let mut failed = Vec::new();
    for u in units {
        let name = u.raid.name().to_string();
        for (_, slot) in u.backends {
            if let Some(b) = slot.backend {
                if let Err(e) = b.close().await {
                    slot.span.in_scope(|| warn!("cannot close: {e}"));
                    failed.push(format!("storage {name} backend {}: cannot close: {e}", slot.name));
                }
            }
        }
        if let (Some(file), Some((version, state))) = (&u.state_file, &u.last_state) {
            match file.save(state) {
                Ok(()) => info!("storage {name}: state version {version} saved"),
                Err(e) => failed.push(format!("storage {name}: {e}")),
            }
        }
    }
    failed
}
