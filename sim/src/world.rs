//! One simulated world from a seed: options derived from the seed, the hosts, the monitor, the
//! nemesis, and the run to its end.
//!
//! Timeline: set-up (no faults) until [`Options::chaos_from`], faults until
//! [`Options::chaos_until`] (every fault is healed then: links repaired and released, latency
//! restored, crashed hosts restarted), then a calm phase of [`Options::calm`] where the monitor
//! recovers every backend that is not optimal, one at a time; liveness is judged in it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zeoraid_server::admin::AdminRequest;

use crate::client::{self, ClientPlan};
use crate::disk::Disk;
use crate::hosts::{self, AdminSlot, Timeouts, RAID_PORT};
use crate::nemesis::{Fault, Nemesis};
use crate::proxy::{self, FaultLog, ProxyFaults};
use crate::record::Shared;

/// Simulated time per turmoil step. Every step polls every host and walks every link, so the
/// step count sets the cost of a run: 2 ms halves it against turmoil's default of 1 ms, and
/// stays below the network's 1..10 ms message latency.
const TICK_MS: u64 = 2;

/// Everything a world is made of; derived from the seed by [`Options::from_seed`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The master seed.
    pub seed: u64,
    /// Backend hosts (2..=4).
    pub backends: usize,
    /// Workload clients (2..=4).
    pub clients: usize,
    /// Objects in the key space.
    pub keys: usize,
    /// Faults start.
    pub chaos_from: Duration,
    /// Faults stop (and are healed).
    pub chaos_until: Duration,
    /// The longest calm phase after healing (the run ends earlier once everything converged).
    pub calm: Duration,
    /// Mean pause between two nemesis actions.
    pub fault_every: Duration,
    /// The fault kinds this world draws from.
    pub faults: Vec<Fault>,
    /// The RAID's timeouts.
    pub timeouts: Timeouts,
    /// The backends (by index) that sit behind a misbehaving proxy.
    pub proxied: Vec<usize>,
    /// What those proxies do.
    pub proxy_faults: ProxyFaults,
}

impl Options {
    /// The options of `seed`.
    pub fn from_seed(seed: u64) -> Options {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005e_ed0f_0071);
        let backends = rng.random_range(2..=4);
        let clients = rng.random_range(2..=4);
        let keys = rng.random_range(3..=8);
        let chaos = Duration::from_millis(rng.random_range(8_000..=20_000));
        let mut faults: Vec<Fault> = Fault::ALL.iter().copied().filter(|_| rng.random_bool(0.6)).collect();
        if faults.is_empty() {
            faults.push(Fault::ALL[rng.random_range(0..Fault::ALL.len())]);
        }
        // Drawn last, so that the options above stay what they were before proxies existed.
        let proxied: Vec<usize> = (0..backends - 1).filter(|_| rng.random_bool(0.3)).collect();
        let proxy_faults = ProxyFaults::buggify(&mut rng);
        Options {
            seed,
            backends,
            clients,
            keys,
            chaos_from: Duration::from_secs(2),
            chaos_until: Duration::from_secs(2) + chaos,
            calm: Duration::from_secs(480),
            fault_every: Duration::from_millis(rng.random_range(300..=2_000)),
            faults,
            timeouts: Timeouts::default(),
            proxied,
            proxy_faults,
        }
    }

    /// The end of the run.
    pub fn end(&self) -> Duration {
        self.chaos_until + self.calm
    }

    /// One line for reports.
    pub fn show(&self) -> String {
        let faults: Vec<&str> = self.faults.iter().map(|f| f.name()).collect();
        format!(
            "seed {} backends {} clients {} keys {} chaos {:.1}s..{:.1}s calm {:.0}s fault every ~{:.1}s faults [{}] proxied {:?}",
            self.seed,
            self.backends,
            self.clients,
            self.keys,
            self.chaos_from.as_secs_f64(),
            self.chaos_until.as_secs_f64(),
            self.calm.as_secs_f64(),
            self.fault_every.as_secs_f64(),
            faults.join(","),
            self.proxied.iter().map(|i| format!("b{}", i + 1)).collect::<Vec<_>>()
        )
    }
}

/// What a finished run leaves for the checkers.
#[derive(Debug)]
pub struct Finished {
    /// The options.
    pub options: Options,
    /// The log.
    pub log: Shared,
    /// The backends' disks, by name.
    pub stores: Vec<(String, Disk)>,
    /// When every fault was healed.
    pub healed_at: Duration,
    /// Simulated time of the run.
    pub simulated: Duration,
    /// A turmoil error (a host's software failed), if any.
    pub sim_error: Option<String>,
}

/// Admin requests the nemesis queues for the monitor to send.
pub type AdminQueue = Arc<Mutex<VecDeque<AdminRequest>>>;

/// Runs the world of `options`.
pub fn run(options: &Options) -> Finished {
    let log = Shared::default();
    let proxy_log = FaultLog::new();
    crate::panics::install();
    crate::panics::reset();
    let mut sim = turmoil::Builder::new()
        .rng_seed(options.seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(crate::net::EPOCH_SECS))
        .simulation_duration(options.end() + Duration::from_secs(120))
        .tick_duration(Duration::from_millis(TICK_MS))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(10))
        .tcp_capacity(1 << 16)
        .build();
    // Hosts get their addresses in creation order: backends first, then the RAID.
    let mut stores = Vec::new();
    for i in 1..=options.backends {
        let name = format!("b{i}");
        let store = Disk::default();
        stores.push((name.clone(), store.clone()));
        let host = name.clone();
        sim.host(name.as_str(), move || hosts::backend_host(host.clone(), store.clone()));
    }
    // A misbehaving proxy host `pI` in front of some backends (never all): the RAID reaches
    // that backend through it. Its faults stop at the healing (the nemesis restarts it calm).
    let mut proxies = Vec::new();
    let mut addressed: Vec<(String, std::net::IpAddr)> = Vec::new();
    for (i, (name, _)) in stores.iter().enumerate() {
        let upstream = format!("{}:{}", name, hosts::BACKEND_PORT);
        if options.proxied.contains(&i) {
            let host = format!("p{}", i + 1);
            let calm = Arc::new(AtomicBool::new(false));
            let (faults, seed, plog, c) =
                (options.proxy_faults, options.seed ^ (i as u64 + 1), proxy_log.clone(), calm.clone());
            sim.host(host.as_str(), move || {
                let f = if c.load(Ordering::Relaxed) { ProxyFaults::none() } else { faults };
                let (up, l) = (upstream.clone(), plog.clone());
                async move { Ok(proxy::serve(hosts::BACKEND_PORT, up, f, seed, l).await?) }
            });
            addressed.push((name.clone(), sim.lookup(host.as_str())));
            proxies.push((name.clone(), host, calm));
        } else {
            addressed.push((name.clone(), sim.lookup(name.as_str())));
        }
    }
    let backends = addressed;
    let settings = hosts::raid_settings(&backends, options.timeouts);
    let admin: AdminSlot = Arc::default();
    let raid_disk = Disk::default();
    let clock_back = Arc::new(AtomicU64::new(0));
    {
        let admin = admin.clone();
        let (disk, back) = (raid_disk.clone(), clock_back.clone());
        sim.host("raid", move || {
            hosts::raid_host(settings.clone(), admin.clone(), disk.clone(), back.clone())
        });
    }
    let server = SocketAddr::new(sim.lookup("raid"), RAID_PORT);
    let mut seeds = ChaCha8Rng::seed_from_u64(options.seed.wrapping_add(1));
    for c in 0..options.clients {
        let plan = ClientPlan {
            id: c as u32,
            server,
            keys: options.keys,
            until: options.end(),
            calm_from: options.chaos_until,
            seed: seeds.random(),
        };
        let log = log.clone();
        sim.client(format!("c{c}"), async move {
            client::run(plan, log).await;
            Ok(())
        });
    }
    let queue: AdminQueue = Arc::default();
    {
        let (admin, queue, log) = (admin.clone(), queue.clone(), log.clone());
        let clients = options.clients;
        let (heal, end) = (options.chaos_until, options.end());
        sim.client("mon", async move {
            crate::monitor::run(admin, queue, log, clients, heal, end).await;
            Ok(())
        });
    }
    let mut disks: Vec<(String, Disk)> = stores.clone();
    disks.push(("raid".to_string(), raid_disk));
    let mut nemesis = Nemesis::new(options, &backends, disks, proxies, queue, log.clone())
        .pack_at(server)
        .clock(clock_back);
    let mut sim_error = None;
    loop {
        match sim.step() {
            Ok(true) => break,
            Ok(false) => nemesis.tick(&mut sim),
            Err(e) => {
                sim_error = Some(e.to_string());
                break;
            }
        }
    }
    let healed_at = nemesis.healed_at().unwrap_or(options.chaos_until);
    {
        let mut g = log.lock();
        for f in proxy_log.faults() {
            *g.faults.entry(format!("proxy-{}", f.kind.name())).or_default() += 1;
            let at = f.at.as_secs_f64();
            g.trace
                .push(format!("[{at:>9.3}s] proxy: conn {} {}: {} ({})", f.conn, f.method, f.kind, f.detail));
        }
        // Into time order (stable: lines of the same instant keep their order).
        let stamp = |l: &String| -> u64 {
            let t = l.trim_start_matches('[').split('s').next().unwrap_or("").trim();
            (t.parse::<f64>().unwrap_or(f64::MAX) * 1e6) as u64
        };
        g.trace.sort_by_key(stamp);
    }
    let simulated = sim.elapsed();
    Finished { options: options.clone(), log, stores, healed_at, sim_error, simulated }
}
