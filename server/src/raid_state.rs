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
//! Written to `<file>.tmp`, fsynced, renamed over the file, then the directory is fsynced: the
//! file is always either the old state or the new one. A missing file is a first start
//! (`Ok(None)`); anything else that is not exactly a valid file (short, long, wrong magic or
//! version, checksum mismatch, undecodable body) is an error naming the file: the server
//! refuses to start rather than guess which backends are in sync. A `.tmp` left by a crash is
//! never read (the next save overwrites it).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use bincode::{Decode, Encode};
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::raid::{BackendState, PersistedBackend, PersistedRaid};

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"ZRRAIDST";
/// The layout version written.
pub const FORMAT_VERSION: u32 = 1;
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

#[derive(Encode, Decode)]
struct DiskRaid {
    backends: Vec<DiskBackend>,
    last_tid: u64,
    oid_hwm: u64,
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
            oid_hwm: p.oid_hwm.get(),
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
            oid_hwm: Oid::new(d.oid_hwm),
            recovery: None,
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
    let mut out = Vec::with_capacity(HEADER + body.len() + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
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
    if version != u64::from(FORMAT_VERSION) {
        return Err(format!("format version {version}, this zeoraid reads {FORMAT_VERSION}"));
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
    let (disk, used): (DiskRaid, usize) =
        bincode::decode_from_slice(&bytes[HEADER..end], bincode::config::standard())
            .map_err(|e| format!("undecodable state: {e}"))?;
    if used != end - HEADER {
        return Err("trailing bytes after the state".to_string());
    }
    Ok(disk.into())
}

/// Reads the state file: `Ok(None)` when it does not exist (first start).
pub fn load(path: &Path) -> Result<Option<PersistedRaid>, StateFileError> {
    let shown = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateFileError::Io { path: shown, op: "read it", source }),
    };
    decode(&bytes).map(Some).map_err(|what| StateFileError::Corrupt { path: shown, what })
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
    let io = |op: &'static str| {
        let path = shown.clone();
        move |source| StateFileError::Io { path, op, source }
    };
    let tmp = tmp_path(path);
    let bytes = encode(state);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io("create its temporary file"))?;
    f.write_all(&bytes).map_err(io("write its temporary file"))?;
    f.sync_all().map_err(io("fsync its temporary file"))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("rename its temporary file over it"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(&dir).and_then(|d| d.sync_all()).map_err(io("fsync its directory"))?;
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
            oid_hwm: Oid::new(70_001),
            recovery: None,
        }
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
