//! The ZEO interop scenarios (`interop/mod.rs`) against the default `zeoraid serve` (a RAID of
//! two local storages), or against the server `ZEORAID_INTEROP_SERVER` names (`runzeo`,
//! `zeoraid`, `raid-local`, `raid-zeo`, `raid-mixed`).

/// No fixed choice: the environment, else the default serve.
const SERVER: Option<&str> = None;

mod interop;
