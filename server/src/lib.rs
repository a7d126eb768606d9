//! zeoraid's server-side library: everything that touches files, sockets or clocks.
//!
//! So far this is the local storage engine ([`storage`]), which keeps a ZODB FileStorage
//! (`Data.fs`) that Python's FileStorage can open and that can open Python's.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod config;
pub mod driver;
pub mod net;
pub mod raid_state;
pub mod recent;
pub mod startup;
pub mod storage;
