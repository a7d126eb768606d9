//! Deterministic simulation worlds for zeoraid (issue 7): the production driver, unchanged,
//! runs in turmoil worlds ([`net::SimNet`]) with backend hosts, a RAID host, workload clients
//! and a monitor; a seeded nemesis injects faults; checkers judge the invariants afterwards.
//! One master seed drives everything: [`runner::run_seed`] replays it.
#![forbid(unsafe_code)]

pub mod checker;
pub mod client;
pub mod disk;
pub mod hosts;
pub mod monitor;
pub mod nemesis;
pub mod net;
pub mod panics;
pub mod proxy;
pub mod record;
pub mod runner;
pub mod world;
