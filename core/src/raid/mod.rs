//! The RAID-1 state machine: one storage mirrored over several backends (pure, sans-IO).
//!
//! The ZEO front ([`crate::zeo::server::Server`]) sends its [`BackendRequest`]s for a storage to
//! that storage's [`Raid`] (the driver routes `Action::Backend` to
//! [`Raid::handle_request`]); the RAID fans writes out to every optimal backend, routes reads to
//! one, and answers the front through [`RaidAction::Answer`] with one combined
//! [`BackendOutcome`]: to the front, a RAID is a single backend.
//!
//! SKELETON: the API is fixed; the bodies are being written (until then every request goes to
//! the first optimal backend).

mod types;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

pub use types::*;

use crate::ids::{BackendId, Tid};
use crate::zeo::backend::{
    BackendEvent, BackendInfo, BackendOutcome, BackendReqId, BackendRequest, StorageSize,
};
use crate::zeo::events::Now;

/// One backend as the RAID tracks it.
#[derive(Debug, Clone)]
struct Member {
    spec: BackendSpec,
    state: BackendState,
    info: Option<BackendInfo>,
    connected: bool,
    outstanding: usize,
}

/// The RAID of one storage. See the module doc.
#[derive(Debug)]
pub struct Raid {
    cfg: RaidConfig,
    members: BTreeMap<BackendId, Member>,
    last_tid: Tid,
    size: StorageSize,
    next_id: u64,
    routes: BTreeMap<BackendReqId, (BackendId, BackendReqId)>,
    actions: VecDeque<RaidAction>,
    version: u64,
    persisted: PersistedRaid,
}

impl Raid {
    /// A RAID over `specs` (backend ids are their indexes), started from the persisted state
    /// (`None` on first start) and what each backend reported when it came up (`None` for a
    /// backend that could not be reached within the connect deadline). Decides which
    /// backends are optimal (see the start-up rule) and queues a first `SaveState`.
    pub fn new(
        cfg: RaidConfig,
        specs: Vec<BackendSpec>,
        persisted: Option<PersistedRaid>,
        infos: Vec<Option<BackendInfo>>,
        now: Now,
    ) -> Raid {
        let _ = now;
        let mut members = BTreeMap::new();
        let mut last_tid = Tid::ZERO;
        let mut size = StorageSize::default();
        for (i, spec) in specs.into_iter().enumerate() {
            let info = infos.get(i).cloned().flatten();
            if let Some(info) = &info {
                if info.last_tid > last_tid {
                    last_tid = info.last_tid;
                    size = info.size;
                }
            }
            let connected = info.is_some();
            members.insert(
                BackendId(i as u32),
                Member { spec, state: BackendState::Optimal, info, connected, outstanding: 0 },
            );
        }
        let oid_hwm = persisted.as_ref().map(|p| p.oid_hwm).unwrap_or(crate::ids::Oid::ROOT);
        let persisted = PersistedRaid {
            backends: members
                .values()
                .map(|m| PersistedBackend { name: m.spec.name.clone(), state: m.state.clone() })
                .collect(),
            last_tid,
            oid_hwm,
        };
        let mut raid = Raid {
            cfg,
            members,
            last_tid,
            size,
            next_id: 1,
            routes: BTreeMap::new(),
            actions: VecDeque::new(),
            version: 0,
            persisted,
        };
        raid.save();
        raid
    }

    fn save(&mut self) {
        self.version += 1;
        self.actions
            .push_back(RaidAction::SaveState { version: self.version, state: self.persisted.clone() });
    }

    /// The storage name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The newest tid every optimal backend holds (seeds the front's `last_tid`).
    pub fn last_tid(&self) -> Tid {
        self.last_tid
    }

    /// Object count and size (from the optimal backend that reported it).
    pub fn size(&self) -> StorageSize {
        self.size
    }

    /// Whether every optimal backend keeps blobs.
    pub fn blobs(&self) -> bool {
        self.members
            .values()
            .filter(|m| m.state.is_optimal())
            .all(|m| m.info.as_ref().is_none_or(|i| i.blobs))
    }

    /// A request from the front.
    pub fn handle_request(&mut self, now: Now, id: BackendReqId, request: BackendRequest) {
        let _ = now;
        let Some((&b, _)) = self.members.iter().find(|(_, m)| m.state.is_optimal()) else {
            return;
        };
        let sub = BackendReqId(self.next_id);
        self.next_id += 1;
        self.routes.insert(sub, (b, id));
        self.actions.push_back(RaidAction::Submit { backend: b, id: sub, request });
    }

    /// An outcome from `backend` for the RAID's request `id`.
    pub fn handle_outcome(
        &mut self,
        now: Now,
        backend: BackendId,
        id: BackendReqId,
        outcome: BackendOutcome,
    ) {
        let _ = (now, backend);
        let partial = outcome.is_partial();
        let Some(&(_, front)) = self.routes.get(&id) else { return };
        if !partial {
            self.routes.remove(&id);
        }
        self.actions.push_back(RaidAction::Answer { id: front, outcome });
    }

    /// A backend's connection came up or went down.
    pub fn handle_event(&mut self, now: Now, backend: BackendId, event: BackendEvent) {
        let _ = now;
        if let Some(m) = self.members.get_mut(&backend) {
            match event {
                BackendEvent::Up(info) => {
                    m.connected = true;
                    m.info = Some(info);
                }
                BackendEvent::Down { .. } => m.connected = false,
            }
        }
    }

    /// The driver has made `SaveState { version }` durable.
    pub fn handle_state_saved(&mut self, now: Now, version: u64) {
        let _ = (now, version);
    }

    /// Time has passed (call at or after `poll_timeout`).
    pub fn handle_timeout(&mut self, now: Now) {
        let _ = now;
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<RaidAction> {
        self.actions.pop_front()
    }

    /// When to call `handle_timeout` next (monotonic time, as `Now::mono`).
    pub fn poll_timeout(&self) -> Option<Duration> {
        None
    }

    /// The RAID's status.
    pub fn status(&self) -> RaidStatus {
        let optimal = self.members.values().filter(|m| m.state.is_optimal()).count();
        if optimal == 0 {
            RaidStatus::Failed
        } else if optimal == self.members.len() {
            RaidStatus::Optimal
        } else if self.members.values().any(|m| matches!(m.state, BackendState::Recovering { .. })) {
            RaidStatus::Recovering
        } else {
            RaidStatus::Degraded
        }
    }

    /// One row per backend, in id order.
    pub fn details(&self) -> Vec<BackendDetails> {
        self.members
            .values()
            .map(|m| BackendDetails {
                name: m.spec.name.clone(),
                label: m.spec.label.clone(),
                state: m.state.clone(),
                connected: m.connected,
                last_tid: m.info.as_ref().map(|i| i.last_tid),
                outstanding: m.outstanding,
            })
            .collect()
    }

    /// The backend named `name`.
    pub fn backend_id(&self, name: &str) -> Option<BackendId> {
        self.members.iter().find(|(_, m)| m.spec.name == name).map(|(&b, _)| b)
    }

    /// `zeoraid disable NAME`: takes the backend out (refused for the last optimal one).
    pub fn disable(&mut self, now: Now, name: &str) -> Result<(), AdminError> {
        let _ = now;
        self.backend_id(name).map(|_| ()).ok_or_else(|| AdminError::UnknownBackend(name.to_string()))
    }

    /// `reload` adds a backend: it joins degraded ("new, not yet recovered").
    pub fn add_backend(&mut self, now: Now, spec: BackendSpec) -> Result<BackendId, AdminError> {
        let _ = now;
        Err(AdminError::DuplicateBackend(spec.name))
    }

    /// `reload` removes a backend (refused for the last optimal one); the driver then closes it.
    pub fn remove_backend(&mut self, now: Now, name: &str) -> Result<BackendId, AdminError> {
        let _ = now;
        Err(AdminError::UnknownBackend(name.to_string()))
    }

    /// Checks the invariants (see [`BackendState`]); `Err` names the first one broken.
    pub fn check(&self) -> Result<(), String> {
        Ok(())
    }
}
