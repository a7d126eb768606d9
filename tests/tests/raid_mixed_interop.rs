//! The ZEO interop scenarios (`interop/mod.rs`) through a RAID of one local storage and one
//! stock ZEO 6.2 `runzeo` backend; afterwards both backends must hold identical histories.

/// Always this RAID (`ZEORAID_INTEROP_SERVER` is for `zeo_interop`).
const SERVER: Option<&str> = Some("raid-mixed");

mod interop;
