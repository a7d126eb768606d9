//! The nemesis: seeded faults between [`Options::chaos_from`] and [`Options::chaos_until`],
//! driven from outside the hosts between two turmoil steps. Each fault schedules its own
//! healing; at `chaos_until` everything still pending is healed at once.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zeoraid_server::admin::AdminRequest;

use crate::disk::Disk;
use crate::record::Shared;
use crate::world::{AdminQueue, Options};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Both ways between the RAID and a backend or a client.
    Partition,
    /// One way.
    PartitionOneWay,
    /// A held link (messages wait, then all arrive).
    Clog,
    /// Several links held one by one, released in another order.
    SwizzleClog,
    /// Slow links for a while.
    Latency,
    /// A backend host crashes and restarts.
    CrashBackend,
    /// The RAID host crashes and restarts.
    CrashRaid,
    /// `disable` of a random backend.
    AdminDisable,
    /// `recover` of a random backend.
    AdminRecover,
    /// `reload` with the running configuration.
    AdminReload,
    /// The RAID host's wall clock steps back (1–30 s), for good: tids must still increase.
    ClockBack,
    /// A client packs the storage (at a time before every transaction: nothing is removed, so the
    /// reads stay checkable; the RAID must refuse it during a recovery).
    Pack,
}

impl Fault {
    /// Every kind.
    pub const ALL: [Fault; 12] = [
        Fault::Partition,
        Fault::PartitionOneWay,
        Fault::Clog,
        Fault::SwizzleClog,
        Fault::Latency,
        Fault::CrashBackend,
        Fault::CrashRaid,
        Fault::AdminDisable,
        Fault::AdminRecover,
        Fault::AdminReload,
        Fault::Pack,
        Fault::ClockBack,
    ];

    /// Its name in reports and options.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Partition => "partition",
            Fault::PartitionOneWay => "partition-oneway",
            Fault::Clog => "clog",
            Fault::SwizzleClog => "swizzle-clog",
            Fault::Latency => "latency",
            Fault::CrashBackend => "crash-backend",
            Fault::CrashRaid => "crash-raid",
            Fault::AdminDisable => "admin-disable",
            Fault::AdminRecover => "admin-recover",
            Fault::AdminReload => "admin-reload",
            Fault::Pack => "pack",
            Fault::ClockBack => "clock-back",
        }
    }
}

/// How a fault is undone.
#[derive(Debug, Clone)]
enum Heal {
    Repair(String, String),
    RepairOneWay(String, String),
    Release(String, String),
    Latency,
    Restart(String),
}

/// The nemesis of one world.
pub struct Nemesis {
    /// The RAID's ZEO address (for packs).
    server: SocketAddr,
    /// Packs started so far (names their client hosts).
    packs: u32,
    /// How far the RAID host's wall clock is behind (ms).
    clock_back: Arc<AtomicU64>,
    /// The misbehaving proxies, by the backend they stand for: (backend, proxy host, calm
    /// switch). The RAID reaches such a backend only through its proxy, so link faults of that
    /// backend hit the RAID–proxy link; at healing every proxy is restarted calm (no faults).
    proxies: Vec<(String, String, Arc<AtomicBool>)>,
    /// Every host's disk by host name (backends and `raid`): a crash cuts its power.
    disks: Vec<(String, Disk)>,
    rng: ChaCha8Rng,
    from: Duration,
    until: Duration,
    every: Duration,
    faults: Vec<Fault>,
    backends: Vec<String>,
    clients: Vec<String>,
    queue: AdminQueue,
    log: Shared,
    next_at: Duration,
    pending: Vec<(Duration, Heal)>,
    down: Vec<String>,
    healed_at: Option<Duration>,
    reload: zeoraid_server::config::StorageSettings,
}

impl std::fmt::Debug for Nemesis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nemesis").finish_non_exhaustive()
    }
}

impl Nemesis {
    /// The nemesis of `options`' world.
    pub fn new(
        options: &Options,
        backends: &[(String, IpAddr)],
        disks: Vec<(String, Disk)>,
        proxies: Vec<(String, String, Arc<AtomicBool>)>,
        queue: AdminQueue,
        log: Shared,
    ) -> Nemesis {
        Nemesis {
            server: SocketAddr::new(
                backends.first().map_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), |b| b.1),
                crate::hosts::RAID_PORT,
            ),
            packs: 0,
            clock_back: Arc::default(),
            proxies,
            disks,
            rng: ChaCha8Rng::seed_from_u64(options.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(7)),
            from: options.chaos_from,
            until: options.chaos_until,
            every: options.fault_every,
            faults: options.faults.clone(),
            backends: backends.iter().map(|b| b.0.clone()).collect(),
            clients: (0..options.clients).map(|c| format!("c{c}")).collect(),
            queue,
            log,
            next_at: options.chaos_from,
            pending: Vec::new(),
            down: Vec::new(),
            healed_at: None,
            reload: crate::hosts::raid_settings(backends, options.timeouts),
        }
    }

    /// Where packs go: the RAID's ZEO address.
    pub fn pack_at(mut self, server: SocketAddr) -> Nemesis {
        self.server = server;
        self
    }

    /// The RAID host's wall-clock offset the nemesis steps back.
    pub fn clock(mut self, back: Arc<AtomicU64>) -> Nemesis {
        self.clock_back = back;
        self
    }

    /// When every fault was healed (`None` before).
    pub fn healed_at(&self) -> Option<Duration> {
        self.healed_at
    }

    fn gap(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.random_range(lo..=hi))
    }

    /// Called between two steps.
    pub fn tick(&mut self, sim: &mut turmoil::Sim<'_>) {
        let now = sim.elapsed();
        if self.healed_at.is_some() {
            let wipe = std::mem::take(&mut self.log.lock().wipe);
            for b in wipe {
                if let Some((_, d)) = self.disks.iter().find(|(n, _)| *n == b) {
                    sim.crash(b.as_str());
                    d.wipe();
                    sim.bounce(b.as_str());
                    self.log.trace_at(
                        now,
                        format!("operator: {b}'s storage emptied (its history diverged) and restarted"),
                    );
                }
            }
            if std::mem::take(&mut self.log.lock().restart_raid) {
                sim.bounce("raid");
                self.log.trace_at(now, "operator: raid restarted");
            }
            return;
        }
        if now < self.from {
            return;
        }
        if now >= self.until {
            for (_, h) in std::mem::take(&mut self.pending) {
                self.heal(sim, h);
            }
            for (_, host, calm) in &self.proxies {
                calm.store(true, Ordering::Relaxed);
                sim.bounce(host.as_str());
                self.log.trace_at(now, format!("nemesis heal: proxy {host} restarted without faults"));
            }
            self.healed_at = Some(now);
            self.log.lock().healed_at = Some(now);
            self.log.trace_at(sim.elapsed(), "nemesis: every fault healed");
            return;
        }
        let due: Vec<Heal> = {
            let (due, later): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.pending).into_iter().partition(|(at, _)| *at <= now);
            self.pending = later;
            due.into_iter().map(|d| d.1).collect()
        };
        for h in due {
            self.heal(sim, h);
        }
        if now >= self.next_at {
            let kind = self.faults[self.rng.random_range(0..self.faults.len())];
            self.act(sim, now, kind);
            let mean = self.every.as_millis() as u64;
            let g = self.gap(mean / 5, mean * 9 / 5);
            self.next_at = now + g;
        }
    }

    fn pick_backend(&mut self) -> String {
        self.backends[self.rng.random_range(0..self.backends.len())].clone()
    }

    /// The host the RAID talks to for backend `b`: its proxy if it has one.
    fn link_host(&self, b: &str) -> String {
        self.proxies.iter().find(|p| p.0 == b).map_or_else(|| b.to_string(), |p| p.1.clone())
    }

    /// A peer of the RAID host: mostly a backend (its proxy when it has one), sometimes a client.
    fn pick_peer(&mut self) -> String {
        if self.rng.random_bool(0.2) {
            self.clients[self.rng.random_range(0..self.clients.len())].clone()
        } else {
            let b = self.pick_backend();
            self.link_host(&b)
        }
    }

    fn later(&mut self, now: Duration, lo: u64, hi: u64, h: Heal) {
        let at = now + self.gap(lo, hi);
        self.pending.push((at, h));
    }

    fn act(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, kind: Fault) {
        let log = self.log.clone();
        match kind {
            Fault::Partition => {
                let p = self.pick_peer();
                sim.partition("raid", p.as_str());
                log.fault(now, kind.name(), format!("raid <-/-> {p}"));
                self.later(now, 200, 6_000, Heal::Repair("raid".into(), p));
            }
            Fault::PartitionOneWay => {
                let p = self.pick_peer();
                let (a, b) =
                    if self.rng.random_bool(0.5) { ("raid".to_string(), p) } else { (p, "raid".to_string()) };
                sim.partition_oneway(a.as_str(), b.as_str());
                log.fault(now, kind.name(), format!("{a} -/-> {b}"));
                self.later(now, 200, 6_000, Heal::RepairOneWay(a, b));
            }
            Fault::Clog => {
                let p = self.pick_peer();
                sim.hold("raid", p.as_str());
                log.fault(now, kind.name(), format!("raid <-held-> {p}"));
                self.later(now, 100, 4_000, Heal::Release("raid".into(), p));
            }
            Fault::SwizzleClog => {
                let mut set: Vec<String> = self.backends.iter().map(|b| self.link_host(b)).collect();
                set.shuffle(&mut self.rng);
                let n = self.rng.random_range(1..=set.len());
                set.truncate(n);
                for b in &set {
                    sim.hold("raid", b.as_str());
                }
                log.fault(now, kind.name(), format!("raid <-held-> {}", set.join(", ")));
                set.shuffle(&mut self.rng);
                let mut at = now + self.gap(200, 2_000);
                for b in set {
                    self.pending.push((at, Heal::Release("raid".into(), b)));
                    at += self.gap(50, 700);
                }
            }
            Fault::Latency => {
                let ms = self.rng.random_range(100..=2_000);
                sim.set_max_message_latency(Duration::from_millis(ms));
                log.fault(now, kind.name(), format!("max message latency {ms} ms"));
                self.later(now, 500, 5_000, Heal::Latency);
            }
            Fault::CrashBackend => {
                let b = self.pick_backend();
                if self.down.contains(&b) {
                    return;
                }
                sim.crash(b.as_str());
                self.power_cut(&b);
                log.fault(now, kind.name(), format!("{b} crashed (unsynced writes lost)"));
                self.down.push(b.clone());
                self.later(now, 300, 5_000, Heal::Restart(b));
            }
            Fault::CrashRaid => {
                if self.down.iter().any(|d| d == "raid") {
                    return;
                }
                sim.crash("raid");
                self.power_cut("raid");
                log.fault(now, kind.name(), "raid crashed (unsynced writes lost)");
                self.down.push("raid".into());
                self.later(now, 300, 3_000, Heal::Restart("raid".into()));
            }
            Fault::AdminDisable => {
                let b = self.pick_backend();
                log.fault(now, kind.name(), format!("disable {b}"));
                self.push(AdminRequest::Disable { storage: None, name: b });
            }
            Fault::AdminRecover => {
                let b = self.pick_backend();
                log.fault(now, kind.name(), format!("recover {b}"));
                self.push(AdminRequest::Recover {
                    storage: None,
                    backend: b,
                    rate_bytes: None,
                    rate_txns: None,
                });
            }
            Fault::ClockBack => {
                let ms = self.rng.random_range(1_000..=30_000);
                let total = self.clock_back.fetch_add(ms, Ordering::Relaxed) + ms;
                log.fault(
                    now,
                    kind.name(),
                    format!("raid's wall clock steps back {ms} ms (now {total} ms behind)"),
                );
            }
            Fault::Pack => {
                self.packs += 1;
                let name = format!("pack{}", self.packs);
                log.fault(now, kind.name(), format!("{name} packs"));
                sim.client(name.clone(), crate::client::pack_once(self.server, log.clone(), name));
            }
            Fault::AdminReload => {
                log.fault(now, kind.name(), "reload (unchanged configuration)");
                self.push(AdminRequest::Reload { storages: vec![self.reload.clone()], notes: Vec::new() });
            }
        }
    }

    /// The disk of `host` loses what was not synced (its software was just crashed).
    fn power_cut(&self, host: &str) {
        if let Some((_, d)) = self.disks.iter().find(|(n, _)| n == host) {
            d.crash();
        }
    }

    fn push(&self, r: AdminRequest) {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push_back(r);
    }

    fn heal(&mut self, sim: &mut turmoil::Sim<'_>, h: Heal) {
        match h {
            Heal::Repair(a, b) => {
                sim.repair(a.as_str(), b.as_str());
                self.log.trace_at(sim.elapsed(), format!("nemesis heal: {a} <---> {b}"));
            }
            Heal::RepairOneWay(a, b) => {
                sim.repair_oneway(a.as_str(), b.as_str());
                self.log.trace_at(sim.elapsed(), format!("nemesis heal: {a} ---> {b}"));
            }
            Heal::Release(a, b) => {
                sim.release(a.as_str(), b.as_str());
                self.log.trace_at(sim.elapsed(), format!("nemesis heal: {a} <-released-> {b}"));
            }
            Heal::Latency => {
                sim.set_max_message_latency(Duration::from_millis(10));
                self.log.trace_at(sim.elapsed(), "nemesis heal: latency back to 10 ms");
            }
            Heal::Restart(host) => {
                sim.bounce(host.as_str());
                self.down.retain(|d| d != &host);
                self.log.trace_at(sim.elapsed(), format!("nemesis heal: {host} restarted"));
            }
        }
    }
}
