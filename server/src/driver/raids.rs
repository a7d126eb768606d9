//! The driver's side of the RAIDs: each storage's [`Raid`] and its backends, carrying out
//! the RAID's actions, and the admin requests (status, details, disable, reload).

use std::collections::BTreeMap;

use tracing::{error, info, warn};
use zeoraid_core::ids::BackendId;
use zeoraid_core::raid::{BackendSpec, BackendState, PersistedRaid, Raid, RaidAction, RaidStatus};
use zeoraid_core::zeo::backend::{BackendEvent, BackendInfo, BackendOutcome, BackendReqId};
use zeoraid_core::zeo::events::{Now, StorageIdx};

use super::{Backend, EventSink, Loop};
use crate::admin::{
    recover_limit, AdminReply, AdminRequest, BackendReport, RecoveryEndReport, RecoveryReport, StorageReport,
};
use crate::backend::local::backend_fault;
use crate::backend::Sink;
use crate::config::{BackendSettings, StorageSettings};

/// A backend that was opened (local) or whose connector was started (remote).
#[derive(Debug)]
pub struct Opened<B> {
    /// The backend.
    pub backend: B,
    /// What it reported when opened (`None` for a remote one: its `Up` event comes later).
    pub info: Option<BackendInfo>,
}

/// Opens the backends a `reload` adds, and closes the ones it removes (both without blocking
/// the driver for long: closing runs elsewhere).
pub trait Opener<B>: Send + 'static {
    /// Opens `settings` as a backend of `storage`, delivering to `sink` and `events`.
    fn open(
        &mut self,
        storage: &StorageSettings,
        settings: &BackendSettings,
        sink: Sink,
        events: EventSink,
    ) -> Result<Opened<B>, String>;

    /// Closes a backend taken out of its RAID.
    fn close(&mut self, storage: &str, name: &str, backend: B);
}

/// One backend of a storage as the driver holds it.
#[derive(Debug)]
pub struct BackendSlot<B> {
    /// Its name.
    pub name: String,
    /// The backend; `None` when it could not be opened (the RAID keeps it degraded).
    pub backend: Option<B>,
    /// Its log span (`backend{storage=1 name=a}`).
    pub span: tracing::Span,
}

impl<B> BackendSlot<B> {
    /// A slot for backend `name` of storage `storage`.
    pub fn new(storage: &str, name: &str, backend: Option<B>) -> BackendSlot<B> {
        let span = tracing::info_span!("backend", storage = %storage, name = %name);
        BackendSlot { name: name.to_string(), backend, span }
    }
}

/// One storage: its RAID and its backends.
#[derive(Debug)]
pub struct StorageUnit<B> {
    /// The RAID.
    pub raid: Raid,
    /// Its settings as last applied (reload compares against them).
    pub settings: StorageSettings,
    /// Where its state is saved (`None`: not persisted, for tests).
    pub state_file: Option<crate::raid_state::StateFile>,
    /// Its backends by the RAID's ids.
    pub backends: BTreeMap<BackendId, BackendSlot<B>>,
    /// The newest state version known durable.
    pub saved: u64,
    /// The newest state the RAID asked to save, and its version.
    pub last_state: Option<(u64, PersistedRaid)>,
    /// The first invariant the RAID's checker found broken after some step (kept, with
    /// [`crate::driver::Driver::set_check_invariants`], even if a later step repairs it).
    pub first_broken: Option<String>,
}

/// What a RAID action turns into for the rest of the loop.
pub(super) enum Forward {
    /// An answer for the front.
    Answer { id: BackendReqId, outcome: BackendOutcome },
    /// A state for the saver.
    Save { version: u64, state: PersistedRaid },
    /// The RAID's history moved on without the front (see `RaidAction::HistoryMovedOn`).
    MovedOn { last_tid: zeoraid_core::ids::Tid },
}

impl<B> StorageUnit<B> {
    /// A storage of `raid` over `backends`, nothing saved yet.
    pub fn new(
        raid: Raid,
        settings: StorageSettings,
        state_file: Option<crate::raid_state::StateFile>,
        backends: BTreeMap<BackendId, BackendSlot<B>>,
    ) -> StorageUnit<B> {
        StorageUnit { raid, settings, state_file, backends, saved: 0, last_state: None, first_broken: None }
    }
}

impl<B: Backend> StorageUnit<B> {
    /// Runs the RAID's invariant checker; keeps and logs the first broken invariant.
    pub(super) fn check_invariants(&mut self) {
        if self.first_broken.is_some() {
            return;
        }
        if let Err(broken) = self.raid.check() {
            error!("storage {}: RAID invariant broken: {broken}", self.raid.name());
            self.first_broken = Some(broken);
        }
    }

    /// The storage's name.
    pub(super) fn raid_name(&self) -> String {
        self.raid.name().to_string()
    }

    /// Carries out one RAID action (or hands it on).
    pub(super) fn carry_out(&mut self, now: Now, action: RaidAction) -> Option<Forward> {
        match action {
            RaidAction::Submit { backend, id, request } => {
                match self.backends.get(&backend).and_then(|s| s.backend.as_ref()) {
                    Some(b) => b.submit(id, request),
                    None => {
                        // Never opened (or removed): the RAID hears it failed, as from a dead one.
                        let why = "the backend is not open".to_string();
                        self.raid.handle_outcome(now, backend, id, backend_fault(why));
                    }
                }
                None
            }
            RaidAction::Answer { id, outcome } => Some(Forward::Answer { id, outcome }),
            RaidAction::SaveState { version, state } => {
                self.last_state = Some((version, state.clone()));
                Some(Forward::Save { version, state })
            }
            RaidAction::HistoryMovedOn { last_tid } => Some(Forward::MovedOn { last_tid }),
            RaidAction::Disconnect { backend } => {
                if let Some(s) = self.backends.get(&backend) {
                    s.span.in_scope(|| info!("disconnecting"));
                    if let Some(b) = &s.backend {
                        b.disconnect();
                    }
                }
                None
            }
        }
    }

    /// A backend's connection came up or went down.
    pub(super) fn handle_event(&mut self, now: Now, backend: BackendId, event: BackendEvent) {
        let Some(slot) = self.backends.get(&backend) else { return }; // removed meanwhile
        slot.span.in_scope(|| match &event {
            BackendEvent::Up(i) => info!("up: last tid {}, {} object(s)", i.last_tid, i.size.length),
            BackendEvent::Down { reason } => warn!("down: {reason}"),
            BackendEvent::ForeignCommit { tid } => tracing::debug!("another client committed {tid}"),
        });
        self.raid.handle_event(now, backend, event);
    }

    /// This storage's report for `status` and `details`.
    fn report(&self) -> StorageReport {
        StorageReport {
            name: self.raid.name().to_string(),
            status: self.raid.status().word().to_string(),
            backends: self.raid.details().into_iter().map(BackendReport::from).collect(),
            recovery: self.raid.recovery().map(RecoveryReport::from),
            last_recovery: self.raid.last_recovery().map(RecoveryEndReport::from),
            broken_invariant: self.raid.check().err().or_else(|| self.first_broken.clone()),
        }
    }
}

/// The worse of two RAID statuses for `zeoraid status`: failed > degraded > recovering >
/// optimal.
pub(super) fn worst(a: RaidStatus, b: RaidStatus) -> RaidStatus {
    let rank = |s: RaidStatus| match s {
        RaidStatus::Optimal => 0,
        RaidStatus::Recovering => 1,
        RaidStatus::Degraded => 2,
        RaidStatus::Failed => 3,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// A reload's plan for one storage.
struct Plan {
    idx: usize,
    remove: Vec<String>,
    add: Vec<BackendSettings>,
}

impl<B: Backend, O: Opener<B>> Loop<B, O> {
    /// Answers an admin request.
    pub(super) fn admin(&mut self, now: Now, request: AdminRequest) -> AdminReply {
        match request {
            AdminRequest::Status | AdminRequest::Details => {
                let status = self.storages.iter().map(|u| u.raid.status()).fold(RaidStatus::Optimal, worst);
                AdminReply {
                    status: Some(status.word().to_string()),
                    storages: self.storages.iter().map(StorageUnit::report).collect(),
                    ..AdminReply::ok()
                }
            }
            AdminRequest::Disable { storage, name } => {
                let u = match self.storage_named(storage.as_deref()) {
                    Ok(u) => u,
                    Err(e) => return AdminReply::error(e),
                };
                match u.raid.disable(now, &name) {
                    Ok(()) => {
                        if let Some(s) = u.raid.backend_id(&name).and_then(|b| u.backends.get(&b)) {
                            s.span.in_scope(|| warn!("disabled by the operator"));
                        }
                        AdminReply { notes: vec![format!("{name} disabled")], ..AdminReply::ok() }
                    }
                    Err(e) => AdminReply::error(e.to_string()),
                }
            }
            AdminRequest::Recover { storage, backend, rate_bytes, rate_txns } => {
                let u = match self.storage_named(storage.as_deref()) {
                    Ok(u) => u,
                    Err(e) => return AdminReply::error(e),
                };
                let limit = recover_limit(u.settings.recovery_rate, rate_bytes, rate_txns);
                match u.raid.recover(now, &backend, limit) {
                    Ok(()) if u.raid.recovery().is_none() => {
                        // The RAID had failed and this was its last optimal backend: promoted.
                        AdminReply {
                            notes: vec![format!(
                                "{backend} was the RAID's last optimal backend and holds every \
                                 acknowledged commit: optimal again without a copy; the RAID serves again"
                            )],
                            ..AdminReply::ok()
                        }
                    }
                    Ok(()) => {
                        let shown = limit.unwrap_or(u.settings.recovery_rate);
                        if let Some(s) = u.raid.backend_id(&backend).and_then(|b| u.backends.get(&b)) {
                            s.span.in_scope(|| info!("recovery requested by the operator (limit: {shown})"));
                        }
                        AdminReply {
                            notes: vec![format!("recovery of {backend} started")],
                            ..AdminReply::ok()
                        }
                    }
                    Err(e) => AdminReply::error(e.to_string()),
                }
            }
            AdminRequest::Reload { storages, mut notes } => match self.reload(now, storages) {
                Ok(mut more) => {
                    notes.append(&mut more);
                    AdminReply { notes, ..AdminReply::ok() }
                }
                Err(e) => AdminReply::error(e),
            },
        }
    }

    /// The storage named `name`, or the only one when `name` is `None`.
    fn storage_named(&mut self, name: Option<&str>) -> Result<&mut StorageUnit<B>, String> {
        match name {
            Some(n) => self
                .storages
                .iter_mut()
                .find(|u| u.raid.name() == n)
                .ok_or_else(|| format!("no storage named {n:?}")),
            None if self.storages.len() == 1 => Ok(&mut self.storages[0]),
            None => Err(format!("there are {} storages: say which (--storage NAME)", self.storages.len())),
        }
    }

    /// `reload`: validates every change against the running RAIDs first, then applies the
    /// additions and removals; returns notes for the operator, or why nothing was changed.
    fn reload(&mut self, now: Now, new: Vec<StorageSettings>) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        let mut current: Vec<&str> = self.storages.iter().map(|u| u.settings.name.as_str()).collect();
        let mut wanted: Vec<&str> = new.iter().map(|s| s.name.as_str()).collect();
        current.sort_unstable();
        wanted.sort_unstable();
        if current != wanted {
            return Err(format!(
                "the storages changed (serving {current:?}, the file has {wanted:?}): adding or removing \
                 storages needs a restart; nothing was changed"
            ));
        }
        let mut plans = Vec::new();
        for n in &new {
            let Some(idx) = self.storages.iter().position(|u| u.settings.name == n.name) else { continue };
            let cur = &self.storages[idx].settings;
            let tuned = |s: &StorageSettings| {
                (
                    s.state_file.clone(),
                    s.call_timeout,
                    s.write_timeout,
                    s.connect_timeout,
                    s.recovery_rate,
                    s.switch_max_lag,
                    s.switch_timeout,
                )
            };
            if tuned(cur) != tuned(n) {
                notes.push(format!(
                    "storage {:?}: state_file, timeout and recovery setting changes take effect at the \
                     next restart",
                    n.name
                ));
            }
            let mut plan = Plan { idx, remove: Vec::new(), add: Vec::new() };
            for b in &n.backends {
                match cur.backends.iter().find(|c| c.name == b.name) {
                    Some(c) if c == b => {}
                    Some(_) => {
                        return Err(format!(
                            "storage {:?} backend {:?}: its definition changed; remove it and add it \
                             under a new name; nothing was changed",
                            n.name, b.name
                        ))
                    }
                    None => plan.add.push(b.clone()),
                }
            }
            for c in &cur.backends {
                if !n.backends.iter().any(|b| b.name == c.name) {
                    plan.remove.push(c.name.clone());
                }
            }
            // The last optimal backend stays.
            let raid = &self.storages[idx].raid;
            let details = raid.details();
            let optimal_left = details
                .iter()
                .filter(|d| d.state == BackendState::Optimal && !plan.remove.contains(&d.name))
                .count();
            if optimal_left == 0 {
                if let Some(last) =
                    details.iter().find(|d| d.state == BackendState::Optimal && plan.remove.contains(&d.name))
                {
                    return Err(format!(
                        "storage {:?}: {}; nothing was changed",
                        n.name,
                        zeoraid_core::raid::AdminError::LastOptimal(last.name.clone())
                    ));
                }
            }
            plans.push(plan);
        }
        let mut errors = Vec::new();
        for plan in plans {
            let idx = plan.idx;
            let Some(n) = new.iter().find(|s| s.name == self.storages[idx].settings.name) else { continue };
            let sname = n.name.clone();
            for name in &plan.remove {
                match self.storages[idx].raid.remove_backend(now, name) {
                    Ok(id) => {
                        if let Some(slot) = self.storages[idx].backends.remove(&id) {
                            slot.span.in_scope(|| info!("removed by reload; closing"));
                            if let Some(b) = slot.backend {
                                self.opener.close(&sname, name, b);
                            }
                        }
                        self.storages[idx].settings.backends.retain(|b| &b.name != name);
                        notes.push(format!("storage {sname:?}: removed {name}"));
                    }
                    Err(e) => errors.push(format!("storage {sname:?}: cannot remove {name}: {e}")),
                }
            }
            for b in plan.add {
                let spec = BackendSpec { name: b.name.clone(), label: b.label() };
                let id = match self.storages[idx].raid.add_backend(now, spec) {
                    Ok(id) => id,
                    Err(e) => {
                        errors.push(format!("storage {sname:?}: cannot add {}: {e}", b.name));
                        continue;
                    }
                };
                let sink = super::sink(&self.tx, StorageIdx(idx), id);
                let events = super::event_sink(&self.tx, StorageIdx(idx), id);
                let mut slot = BackendSlot::new(&sname, &b.name, None);
                let opened = slot.span.in_scope(|| self.opener.open(n, &b, sink, events));
                match opened {
                    Ok(opened) => {
                        slot.span.in_scope(|| info!("added by reload ({}); joins degraded", b.label()));
                        slot.backend = Some(opened.backend);
                        if let Some(info) = opened.info {
                            self.storages[idx].raid.handle_event(now, id, BackendEvent::Up(info));
                        }
                    }
                    Err(e) => slot.span.in_scope(|| warn!("added by reload but cannot be opened: {e}")),
                }
                self.storages[idx].backends.insert(id, slot);
                self.storages[idx].settings.backends.push(b.clone());
                notes.push(format!("storage {sname:?}: added {} (degraded until recovered)", b.name));
            }
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        if notes.is_empty() {
            notes.push("nothing changed".to_string());
        }
        Ok(notes)
    }
}
