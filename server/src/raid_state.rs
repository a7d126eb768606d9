//! The RAID state file: a [`PersistedRaid`] on disk.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//!   magic   8 bytes  "ZRRAIDST"
//!   version u32      FORMAT_VERSION
//!   length  u64      of the body
//!   body    length   bincode (standard config) of the state
//!   check   u64      64-bit FNV-1a of everything before it
//! ```
//!
//! Versions: 1 (backends, last tid, oid high-water mark); 2 adds the recovery in progress
//! (target, done tid, whether it rebuilds, rate limit, start); 3 adds the RAID's last optimal
//! backend (set while no backend is optimal: the one that brings a failed RAID back); 4 adds the
//! newest acknowledged tid (the last tid may be above it). Files of versions 1 to 3 still load
//! (no recovery in progress, no last optimal backend, the acknowledged tid equal to the last
//! tid, as they apply) and are rewritten as version 4 at the next save; a version newer than
//! [`FORMAT_VERSION`] is refused with a message saying that a newer zeoraid wrote it.
//!
//! Written to `<file>.tmp`, fsynced, renamed over the file, then the directory is fsynced: the
//! file is always either the old state or the new one. A missing file is a first start
//! (`Ok(None)`); anything else that is not exactly a valid file (short, long, wrong magic or
//! version, checksum mismatch, undecodable body) is an error naming the file: the server
//! refuses to start rather than guess which backends are in sync. A `.tmp` left by a crash is
//! never read (the next save overwrites it).
//!
//! The file lives behind a [`StorageDir`]: [`StateFile::Real`] on the file system (the server),
//! [`StateFile::Mem`] in a crashable [`MemDir`] (the simulation, where a crash keeps only what
//! was synced). [`load`] and [`save`] take a real path; [`load_in`] and [`save_in`] any
//! directory.

use std::path::{Path, PathBuf};

use bincode::{Decode, Encode};
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::mutation::{self, Mutation};
use zeoraid_core::raid::{BackendState, PersistedBackend, PersistedRaid, PersistedRecovery, RateLimit};

use crate::storage::{MemDir, OpenMode, RealDir, StorageDir, StorageFile};

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"ZRRAIDST";
/// The layout version written.
pub const FORMAT_VERSION: u32 = 4;
/// The oldest layout version read.
pub const OLDEST_VERSION: u32 = 1;
/// Largest body accepted (a state is a few hundred bytes).
const MAX_BODY: u64 = 16 << 20;
const HEADER: usize = 8 + 4 + 8;

/// The state file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// An I/O call failed.
    #[error("RAID state file {path}: cannot {op}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file exists but is not a valid state file.
    #[error(
        "RAID state file {path} is unusable ({what}); refusing to start rather than guess which \
         backends are in sync: restore it from a backup, or remove it to start as on a first \
         start (every reachable backend is then taken as it is)"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
}

/// Version 4.
#[derive(Encode, Decode)]
struct DiskRaid {
    backends: Vec<DiskBackend>,
    last_tid: u64,
    acked_tid: u64,
    oid_hwm: u64,
    recovery: Option<DiskRecovery>,
    last_optimal: Option<String>,
}

/// Version 3: no acknowledged tid (it was the last tid).
#[derive(Encode, Decode)]
struct DiskRaidV3 {
    backends: Vec<DiskBackend>,
    last_tid: u64,
    oid_hwm: u64,
    recovery: Option<DiskRecovery>,
    last_optimal: Option<String>,
}

/// Version 2: no last optimal backend.
#[derive(Encode, Decode)]
struct DiskRaidV2 {
    backends: Vec<DiskBackend>,
    last_tid: u64,
    oid_hwm: u64,
    recovery: Option<DiskRecovery>,
}

/// Version 1: no recovery.
#[derive(Encode, Decode)]
struct DiskRaidV1 {
    backends: Vec<DiskBackend>,
    last_tid: u64,
    oid_hwm: u64,
}

#[derive(Encode, Decode)]
struct DiskRecovery {
    target: String,
    done_tid: u64,
    rebuilding: bool,
    limit_bytes: Option<u64>,
    limit_txns: Option<u64>,
    started: f64,
}

#[derive(Encode, Decode)]
struct DiskBackend {
    name: String,
    state: DiskState,
}

#[derive(Encode, Decode)]
enum DiskState {
    Optimal,
    Degraded { reason: String, since: f64 },
    Recovering { since: f64 },
    Disabled { since: f64 },
}

impl From<&PersistedRaid> for DiskRaid {
    fn from(p: &PersistedRaid) -> DiskRaid {
        DiskRaid {
            backends: p
                .backends
                .iter()
                .map(|b| DiskBackend {
                    name: b.name.clone(),
                    state: match &b.state {
                        BackendState::Optimal => DiskState::Optimal,
                        BackendState::Degraded { reason, since } => {
                            DiskState::Degraded { reason: reason.clone(), since: *since }
                        }
                        BackendState::Recovering { since } => DiskState::Recovering { since: *since },
                        BackendState::Disabled { since } => DiskState::Disabled { since: *since },
                    },
                })
                .collect(),
            last_tid: p.last_tid.get(),
            acked_tid: p.acked_tid.get(),
            oid_hwm: p.oid_hwm.get(),
            recovery: p.recovery.as_ref().map(|r| DiskRecovery {
                target: r.target.clone(),
                done_tid: r.done_tid.get(),
                rebuilding: r.rebuilding,
                limit_bytes: r.limit.bytes_per_sec,
                limit_txns: r.limit.txns_per_sec,
                started: r.started,
            }),
            last_optimal: p.last_optimal.clone(),
        }
    }
}

// Each older layout becomes the next one: V1 → V2 → V3 → current.
impl From<DiskRaidV1> for DiskRaidV2 {
    fn from(d: DiskRaidV1) -> DiskRaidV2 {
        DiskRaidV2 { backends: d.backends, last_tid: d.last_tid, oid_hwm: d.oid_hwm, recovery: None }
    }
}

impl From<DiskRaidV2> for DiskRaidV3 {
    fn from(d: DiskRaidV2) -> DiskRaidV3 {
        DiskRaidV3 {
            backends: d.backends,
            last_tid: d.last_tid,
            oid_hwm: d.oid_hwm,
            recovery: d.recovery,
            last_optimal: None,
        }
    }
}

impl From<DiskRaidV3> for DiskRaid {
    fn from(d: DiskRaidV3) -> DiskRaid {
        DiskRaid {
            backends: d.backends,
            last_tid: d.last_tid,
            acked_tid: d.last_tid,
            oid_hwm: d.oid_hwm,
            recovery: d.recovery,
            last_optimal: d.last_optimal,
        }
    }
}

impl From<DiskRaid> for PersistedRaid {
    fn from(d: DiskRaid) -> PersistedRaid {
        PersistedRaid {
            backends: d
                .backends
                .into_iter()
                .map(|b| PersistedBackend {
                    name: b.name,
                    state: match b.state {
                        DiskState::Optimal => BackendState::Optimal,
                        DiskState::Degraded { reason, since } => BackendState::Degraded { reason, since },
                        DiskState::Recovering { since } => BackendState::Recovering { since },
                        DiskState::Disabled { since } => BackendState::Disabled { since },
                    },
                })
                .collect(),
            last_tid: Tid::new(d.last_tid),
            acked_tid: Tid::new(d.acked_tid),
            oid_hwm: Oid::new(d.oid_hwm),
            recovery: d.recovery.map(|r| PersistedRecovery {
                target: r.target,
                done_tid: Tid::new(r.done_tid),
                rebuilding: r.rebuilding,
                limit: RateLimit { bytes_per_sec: r.limit_bytes, txns_per_sec: r.limit_txns },
                started: r.started,
            }),
            last_optimal: d.last_optimal,
        }
    }
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The bytes of the file for `state`.
pub fn encode(state: &PersistedRaid) -> Vec<u8> {
    let body = bincode::encode_to_vec(DiskRaid::from(state), bincode::config::standard()).unwrap_or_default(); // encoding plain structs into a Vec cannot fail
    frame(FORMAT_VERSION, &body)
}

/// Header, body and checksum.
fn frame(version: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len() + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let check = fnv1a(&out);
    out.extend_from_slice(&check.to_le_bytes());
    out
}

/// Decodes the bytes of a state file; `Err` says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<PersistedRaid, String> {
    if bytes.len() < HEADER + 8 {
        return Err(format!(
            "{} bytes, shorter than the {}-byte header and checksum",
            bytes.len(),
            HEADER + 8
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err("not a zeoraid RAID state file (wrong magic)".to_string());
    }
    let word =
        |at: usize, n: usize| bytes[at..at + n].iter().rev().fold(0u64, |v, &b| (v << 8) | u64::from(b));
    let version = word(8, 4);
    if version > u64::from(FORMAT_VERSION) {
        return Err(format!(
            "format version {version} was written by a newer zeoraid; this one reads versions \
             {OLDEST_VERSION} to {FORMAT_VERSION}: run the newer zeoraid"
        ));
    }
    if version < u64::from(OLDEST_VERSION) {
        return Err(format!(
            "format version {version}, this zeoraid reads versions {OLDEST_VERSION} to {FORMAT_VERSION}"
        ));
    }
    let len = word(12, 8);
    if len > MAX_BODY || bytes.len() as u64 != HEADER as u64 + len + 8 {
        return Err(format!(
            "the header announces {len} bytes of state but the file has {} bytes",
            bytes.len()
        ));
    }
    let end = bytes.len() - 8;
    if fnv1a(&bytes[..end]) != word(end, 8) {
        return Err("checksum mismatch".to_string());
    }
    let body = &bytes[HEADER..end];
    let undecodable =
        |e: bincode::error::DecodeError| format!("undecodable state (format version {version}): {e}");
    let (disk, used): (DiskRaid, usize) = match version {
        1 => {
            let (v1, used): (DiskRaidV1, usize) =
                bincode::decode_from_slice(body, bincode::config::standard()).map_err(undecodable)?;
            (DiskRaidV3::from(DiskRaidV2::from(v1)).into(), used)
        }
        2 => {
            let (v2, used): (DiskRaidV2, usize) =
                bincode::decode_from_slice(body, bincode::config::standard()).map_err(undecodable)?;
            (DiskRaidV3::from(v2).into(), used)
        }
        3 => {
            let (v3, used): (DiskRaidV3, usize) =
                bincode::decode_from_slice(body, bincode::config::standard()).map_err(undecodable)?;
            (v3.into(), used)
        }
        _ => bincode::decode_from_slice(body, bincode::config::standard()).map_err(undecodable)?,
    };
    if used != end - HEADER {
        return Err("trailing bytes after the state".to_string());
    }
    Ok(disk.into())
}

/// Where a RAID's state is kept: a real file, or a file of an in-memory directory that can
/// crash (the simulation: a crash keeps only what was synced).
#[derive(Debug, Clone)]
pub enum StateFile {
    /// A file of the real file system.
    Real(PathBuf),
    /// The file `name` of the in-memory directory `dir`.
    Mem {
        /// The directory.
        dir: MemDir,
        /// The file name inside it.
        name: String,
    },
}

impl StateFile {
    /// Reads the state: `Ok(None)` when there is none yet (first start). What a restart (of the
    /// server or of a simulated one) builds its [`zeoraid_core::raid::Raid`] from.
    pub fn load(&self) -> Result<Option<PersistedRaid>, StateFileError> {
        match self {
            StateFile::Real(path) => load(path),
            StateFile::Mem { dir, name } => load_in(dir, name, dir.display(name)),
        }
    }

    /// Writes `state` durably (see the module doc). Blocking on a real file: call it off the
    /// async tasks (the saver uses `spawn_blocking`); immediate in memory.
    pub fn save(&self, state: &PersistedRaid) -> Result<(), StateFileError> {
        match self {
            StateFile::Real(path) => save(path, state),
            StateFile::Mem { dir, name } => save_in(dir, name, dir.display(name), state),
        }
    }

    /// Whether writing it blocks the thread (a real file).
    pub fn blocks(&self) -> bool {
        matches!(self, StateFile::Real(_))
    }

    /// A printable name for logs and errors.
    pub fn display(&self) -> String {
        match self {
            StateFile::Real(path) => path.display().to_string(),
            StateFile::Mem { dir, name } => dir.display(name),
        }
    }

    /// The file next to it with `suffix` appended to its name (`.recent`).
    pub fn sibling(&self, suffix: &str) -> StateFile {
        match self {
            StateFile::Real(path) => {
                let mut s = path.as_os_str().to_owned();
                s.push(suffix);
                StateFile::Real(PathBuf::from(s))
            }
            StateFile::Mem { dir, name } => {
                StateFile::Mem { dir: dir.clone(), name: format!("{name}{suffix}") }
            }
        }
    }

    /// Its directory and file name, for [`StorageDir`] calls.
    pub(crate) fn with_dir<T>(
        &self,
        real: impl FnOnce(&RealDir, &str) -> T,
        mem: impl FnOnce(&MemDir, &str) -> T,
        unsplittable: impl FnOnce() -> T,
    ) -> T {
        match self {
            StateFile::Real(path) => match RealDir::split(path) {
                Some((dir, name)) => real(&dir, &name),
                None => unsplittable(),
            },
            StateFile::Mem { dir, name } => mem(dir, name),
        }
    }
}

/// Reads the state file: `Ok(None)` when it does not exist (first start).
pub fn load(path: &Path) -> Result<Option<PersistedRaid>, StateFileError> {
    let shown = path.display().to_string();
    match RealDir::split(path) {
        Some((dir, name)) => load_in(&dir, &name, shown),
        None => Err(StateFileError::Io {
            path: shown,
            op: "read it",
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
        }),
    }
}

/// Reads `name` in `dir` (`shown` in errors): `Ok(None)` when it does not exist.
pub fn load_in<D: StorageDir>(
    dir: &D,
    name: &str,
    shown: String,
) -> Result<Option<PersistedRaid>, StateFileError> {
    let bytes = match read_all(dir, name) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateFileError::Io { path: shown, op: "read it", source }),
    };
    decode(&bytes).map(Some).map_err(|what| StateFileError::Corrupt { path: shown, what })
}

/// The whole content of `name` in `dir` (bounded: a state is small; a huge file is read only
/// far enough to be refused as corrupt).
pub(crate) fn read_all<D: StorageDir>(dir: &D, name: &str) -> std::io::Result<Vec<u8>> {
    let f = dir.open(name, OpenMode::Read)?;
    let len = f.len()?;
    let cap = (HEADER as u64 + MAX_BODY + 8 + 1).min(len);
    let mut bytes = vec![0; usize::try_from(cap).map_err(|_| std::io::Error::other("file too large"))?];
    f.read_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// The temporary file a save writes before renaming it over `path`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes `state` durably: `<path>.tmp`, fsync, rename over `path`, fsync the directory.
pub fn save(path: &Path, state: &PersistedRaid) -> Result<(), StateFileError> {
    let shown = path.display().to_string();
    match RealDir::split(path) {
        Some((dir, name)) => save_in(&dir, &name, shown, state),
        None => Err(StateFileError::Io {
            path: shown,
            op: "create its temporary file",
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
        }),
    }
}

/// Writes `state` durably as `name` in `dir` (`shown` in errors): `<name>.tmp`, fsync,
/// rename over `name`, fsync the directory.
pub fn save_in<D: StorageDir>(
    dir: &D,
    name: &str,
    shown: String,
    state: &PersistedRaid,
) -> Result<(), StateFileError> {
    let io = |op: &'static str| {
        let path = shown.clone();
        move |source| StateFileError::Io { path, op, source }
    };
    let tmp = format!("{name}.tmp");
    let bytes = encode(state);
    let f = dir.open(&tmp, OpenMode::Truncate).map_err(io("create its temporary file"))?;
    f.write_at(&bytes, 0).map_err(io("write its temporary file"))?;
    let fsync = !mutation::active(Mutation::SkipStateFsync);
    if fsync {
        f.sync().map_err(io("fsync its temporary file"))?;
    }
    drop(f);
    dir.rename(&tmp, name).map_err(io("rename its temporary file over it"))?;
    if fsync {
        dir.sync().map_err(io("fsync its directory"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PersistedRaid {
        PersistedRaid {
            backends: vec![
                PersistedBackend { name: "a".into(), state: BackendState::Optimal },
                PersistedBackend {
                    name: "b".into(),
                    state: BackendState::Degraded { reason: "timed out at vote".into(), since: 1.7e9 },
                },
                PersistedBackend { name: "c".into(), state: BackendState::Recovering { since: 2.5 } },
                PersistedBackend { name: "d".into(), state: BackendState::Disabled { since: 3.25 } },
            ],
            last_tid: Tid::new(0x03ff_1234_5678_9abc),
            acked_tid: Tid::new(0x03ff_1234_5678_9abc),
            oid_hwm: Oid::new(70_001),
            recovery: Some(PersistedRecovery {
                target: "c".into(),
                done_tid: Tid::new(0x03ff_1200_0000_0001),
                rebuilding: true,
                limit: RateLimit { bytes_per_sec: Some(20_000_000), txns_per_sec: None },
                started: 1.75e9,
            }),
            last_optimal: None,
        }
    }

    /// A failed RAID's state: no backend optimal, the last optimal one remembered.
    fn failed() -> PersistedRaid {
        let mut s = PersistedRaid { recovery: None, last_optimal: Some("a".into()), ..sample() };
        s.backends[0].state = BackendState::Degraded { reason: "disconnected: reset".into(), since: 1.8e9 };
        s.backends.truncate(2);
        s
    }

    /// A file written by the version-1 code (commit 464d7d2) for `sample()` without its
    /// recovery.
    const V1_FILE: &str =
        "5a52524149445354010000004500000000000000040161000162011174696d6564206f757420617420\
                           766f746500000040fc54d94101630200000000000004400164030000000000000a40fdbc9a78563412\
                           ff03fc711101000de2e7353753c5e0";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    /// A file written by the version-2 code (commit db1401f) for `sample()`.
    const V2_FILE: &str =
        "5a52524149445354020000006100000000000000040161000162011174696d6564206f757420617420\
         766f746500000040fc54d94101630200000000000004400164030000000000000a40fdbc9a78563412\
         ff03fc71110100010163fd010000000012ff030101fc002d31010000000060b813da41d238d28075c6\
         d992";

    #[test]
    fn a_version_1_file_loads_without_a_recovery_and_is_saved_as_version_4() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("1.raid-state");
        std::fs::write(&path, unhex(V1_FILE)).expect("write");
        let loaded = load(&path).expect("a version-1 file loads").expect("present");
        assert_eq!(loaded, PersistedRaid { recovery: None, ..sample() });
        save(&path, &loaded).expect("save");
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes[8..12], 4u32.to_le_bytes(), "rewritten as version 4");
        assert_eq!(load(&path).expect("load"), Some(loaded));
    }

    #[test]
    fn a_version_2_file_loads_without_a_last_optimal_backend_and_is_saved_as_version_4() {
        let bytes = unhex(V2_FILE);
        assert_eq!(bytes[8..12], 2u32.to_le_bytes());
        let loaded = decode(&bytes).expect("a version-2 file loads");
        assert_eq!(loaded, sample(), "recovery kept, no last optimal backend");
        let dir = MemDir::new();
        mem(&dir).save(&loaded).expect("save");
        let again = read_all(&dir, "1.raid-state").expect("read");
        assert_eq!(again[8..12], 4u32.to_le_bytes(), "rewritten as version 4");
        assert_eq!(mem(&dir).load().expect("load"), Some(loaded));
        // A version-4 body announced as version 2 does not decode as one (trailing bytes).
        let body =
            bincode::encode_to_vec(DiskRaid::from(&failed()), bincode::config::standard()).expect("enc");
        assert!(decode(&frame(2, &body)).is_err());
    }

    /// A file written by the version-3 code (commit 4cd6f01) for `failed()`.
    const V3_FILE: &str =
        "5a52524149445354030000004f000000000000000201610113646973636f6e6e65637465643a20726573\
         65740000008074d2da410162011174696d6564206f757420617420766f746500000040fc54d941fdbc9a78\
         563412ff03fc711101000001016175376219180b46da";

    #[test]
    fn a_version_3_file_loads_with_the_acknowledged_tid_at_the_last_tid_and_is_saved_as_version_4() {
        let bytes = unhex(V3_FILE);
        assert_eq!(bytes[8..12], 3u32.to_le_bytes());
        let loaded = decode(&bytes).expect("a version-3 file loads");
        assert_eq!(loaded, failed(), "last optimal backend kept, acknowledged tid = last tid");
        let again = encode(&loaded);
        assert_eq!(again[8..12], 4u32.to_le_bytes(), "rewritten as version 4");
        assert_eq!(decode(&again), Ok(loaded));
        // A version-4 body announced as version 3 does not decode as one (trailing bytes).
        let body =
            bincode::encode_to_vec(DiskRaid::from(&failed()), bincode::config::standard()).expect("enc");
        assert!(decode(&frame(3, &body)).is_err());
    }

    #[test]
    fn the_last_optimal_backend_and_the_acknowledged_tid_round_trip_in_version_4() {
        let behind = PersistedRaid { acked_tid: Tid::new(0x03ff_1234_0000_0001), ..failed() };
        for s in
            [failed(), PersistedRaid { last_optimal: Some("é ü\u{0}".into()), ..failed() }, sample(), behind]
        {
            let bytes = encode(&s);
            assert_eq!(bytes[8..12], 4u32.to_le_bytes());
            assert_eq!(decode(&bytes), Ok(s.clone()));
            let dir = MemDir::new();
            mem(&dir).save(&s).expect("save");
            let after = dir.crash(crate::storage::CrashMode::DropUnsynced);
            assert_eq!(mem(&after).load().expect("load"), Some(s));
        }
    }

    #[test]
    fn the_recovery_in_progress_is_kept_with_its_limit() {
        for limit in [
            RateLimit::UNLIMITED,
            RateLimit { bytes_per_sec: None, txns_per_sec: Some(500) },
            RateLimit { bytes_per_sec: Some(1), txns_per_sec: Some(u64::MAX) },
        ] {
            let mut s = sample();
            if let Some(r) = &mut s.recovery {
                r.limit = limit;
                r.rebuilding = false;
            }
            assert_eq!(decode(&encode(&s)), Ok(s));
        }
        let none = PersistedRaid { recovery: None, ..sample() };
        assert_eq!(decode(&encode(&none)), Ok(none));
    }

    #[test]
    fn a_newer_version_is_refused_saying_so() {
        let body =
            bincode::encode_to_vec(DiskRaid::from(&sample()), bincode::config::standard()).expect("enc");
        let e = decode(&frame(5, &body)).expect_err("version 5");
        assert!(e.contains("format version 5 was written by a newer zeoraid"), "{e}");
        let e = decode(&frame(0, &body)).expect_err("version 0");
        assert!(e.contains("format version 0") && e.contains("versions 1 to 4"), "{e}");
        // A version-4 body announced as version 1 does not decode as one (trailing bytes).
        assert!(decode(&frame(1, &body)).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.raid-state");
        std::fs::write(&path, frame(u32::MAX, &body)).expect("write");
        let err = load(&path).expect_err("newer").to_string();
        assert!(err.contains("s.raid-state") && err.contains("newer zeoraid"), "{err}");
    }

    #[test]
    fn saved_state_loads_back_equal_and_a_missing_file_is_a_first_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("1.raid-state");
        assert!(load(&path).expect("missing is fine").is_none());
        save(&path, &sample()).expect("save");
        assert_eq!(load(&path).expect("load"), Some(sample()));
        assert!(!tmp_path(&path).exists(), "the temporary file was renamed");
        // A second save replaces the first.
        let mut s = sample();
        s.backends.truncate(1);
        s.oid_hwm = Oid::new(80_000);
        save(&path, &s).expect("save");
        assert_eq!(load(&path).expect("load"), Some(s));
    }

    #[test]
    fn every_truncation_and_every_extension_is_refused() {
        let bytes = encode(&sample());
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "a file cut to {n} bytes was accepted");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode(&long).is_err());
        assert_eq!(decode(&bytes), Ok(sample()));
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let bytes = encode(&sample());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x20;
            assert!(decode(&b).is_err(), "byte {i} flipped was accepted");
        }
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.raid-state");
        let mut bytes = encode(&sample());
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let err = load(&path).expect_err("corrupt").to_string();
        assert!(err.contains(&path.display().to_string()) && err.contains("checksum"), "{err}");
        std::fs::write(&path, b"").expect("write");
        let err = load(&path).expect_err("empty").to_string();
        assert!(err.contains("s.raid-state") && err.contains("refusing to start"), "{err}");
    }

    fn mem(dir: &MemDir) -> StateFile {
        StateFile::Mem { dir: dir.clone(), name: "1.raid-state".into() }
    }

    #[test]
    fn in_memory_a_saved_state_survives_a_crash_and_a_missing_one_is_a_first_start() {
        let dir = MemDir::new();
        assert_eq!(mem(&dir).load().expect("missing is fine"), None);
        mem(&dir).save(&sample()).expect("save");
        assert_eq!(mem(&dir).display(), "mem:1.raid-state");
        let after = dir.crash(crate::storage::CrashMode::DropUnsynced);
        assert_eq!(mem(&after).load().expect("load"), Some(sample()));
        assert_eq!(after.names(), ["1.raid-state"], "the temporary file was renamed");
        // Corrupt in memory: the same error as on disk, naming the file.
        let mut bytes = encode(&sample());
        bytes.truncate(bytes.len() - 1);
        after.put("1.raid-state", bytes);
        let err = mem(&after).load().expect_err("corrupt").to_string();
        assert!(err.contains("mem:1.raid-state") && err.contains("refusing to start"), "{err}");
    }

    /// A crash at every step of a save, in every crash mode, leaves the old state or the new
    /// one, never a file that does not load.
    #[test]
    fn a_crash_at_any_step_of_a_save_leaves_the_old_or_the_new_state() {
        use crate::storage::CrashMode;
        let old = PersistedRaid { recovery: None, ..sample() };
        let new = sample();
        let probe = MemDir::new();
        mem(&probe).save(&old).expect("save");
        let before = probe.ops();
        mem(&probe).save(&new).expect("save");
        let steps = probe.ops() - before;
        assert!(steps >= 4, "create, write, fsync, rename, dir fsync: {steps}");
        for fail_at in 1..=steps + 1 {
            let dir = MemDir::new();
            mem(&dir).save(&old).expect("save");
            dir.fail_after(Some(fail_at));
            let r = mem(&dir).save(&new);
            assert_eq!(r.is_ok(), fail_at > steps, "step {fail_at} of {steps}");
            let len = dir.last_pending_len().unwrap_or(0);
            let mut modes = vec![
                CrashMode::DropUnsynced,
                CrashMode::Reorder { mask: 0 },
                CrashMode::Reorder { mask: u64::MAX },
            ];
            modes.extend((0..=len).map(|keep| CrashMode::TearLast { keep }));
            for mode in modes {
                let got = mem(&dir.crash(mode)).load();
                let got = got.unwrap_or_else(|e| panic!("step {fail_at}, {mode:?}: {e}"));
                assert!(
                    got == Some(old.clone()) || got == Some(new.clone()),
                    "step {fail_at}, {mode:?}: {got:?}"
                );
                if r.is_ok() && mode == CrashMode::DropUnsynced {
                    assert_eq!(got, Some(new.clone()), "a completed save is durable");
                }
            }
        }
    }

    /// The mutation `SkipStateFsync` really loses a saved state at a crash.
    #[cfg(feature = "mutations")]
    #[test]
    fn mutation_skip_state_fsync_loses_the_state_at_a_crash() {
        for on in [false, true] {
            let _g = on.then(|| mutation::Scoped::new(Mutation::SkipStateFsync));
            let dir = MemDir::new();
            mem(&dir).save(&sample()).expect("save");
            let after = mem(&dir.crash(crate::storage::CrashMode::DropUnsynced)).load().expect("load");
            assert_eq!(after.is_none(), on, "mutation {on}: {after:?}");
        }
    }

    #[test]
    fn the_tmp_file_left_by_a_crash_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("1.raid-state");
        // Crash before the first rename: only a (half-written) tmp file exists.
        std::fs::write(tmp_path(&path), &encode(&sample())[..10]).expect("write");
        assert!(load(&path).expect("first start").is_none());
        // Crash during a later save: the old state stays, the tmp is overwritten next time.
        save(&path, &sample()).expect("save");
        std::fs::write(tmp_path(&path), b"garbage").expect("write");
        assert_eq!(load(&path).expect("load"), Some(sample()));
        save(&path, &sample()).expect("save over a stale tmp");
        assert_eq!(load(&path).expect("load"), Some(sample()));
    }
}
