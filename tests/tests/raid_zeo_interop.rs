//! The ZEO interop scenarios (`interop/mod.rs`) through a RAID of two stock ZEO 6.2 `runzeo`
//! backends (one announcing the front's encoding, the other the other one); afterwards both
//! backends must hold identical histories.

/// Always this RAID (`ZEORAID_INTEROP_SERVER` is for `zeo_interop`).
const SERVER: Option<&str> = Some("raid-zeo");

mod interop;
