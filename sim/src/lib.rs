//! Deterministic simulation worlds for zeoraid. Nothing is simulated yet: the suite arrives
//! with the RAID state machine (see the issue "Deterministic simulation suite").
#![forbid(unsafe_code)]

pub mod proxy;
