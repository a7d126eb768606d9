//! The front's recent commits, saved at a clean shutdown next to the RAID state file
//! (`<state_file>.recent`) and read at the next start.
//!
//! `getInvalidations` answers from the front's queue of recent commits. A local backend can
//! rebuild that queue from its `Data.fs` at start-up; a RAID of remote ZEO backends cannot, so
//! without this file every client would drop its cache after a restart of zeoraid. The file is
//! used only if its newest commit is exactly the RAID's last tid (nothing was committed since it
//! was written); otherwise (a crash, a commit through another front) it is ignored and clients
//! re-verify, which is always safe.
//!
//! Format: text, one commit per line, `TID OID,OID,…` in hex, oldest first.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use zeoraid_core::ids::{Oid, Tid};

use crate::raid_state::StateFile;
use crate::storage::{OpenMode, StorageDir, StorageFile};

/// Where the recent commits of the RAID whose state lives in `state_file` are saved.
pub fn path_for(state_file: &Path) -> PathBuf {
    let mut p = state_file.as_os_str().to_owned();
    p.push(".recent");
    PathBuf::from(p)
}

/// The file of the recent commits of the RAID whose state is `state`.
pub fn file_for(state: &StateFile) -> StateFile {
    state.sibling(".recent")
}

/// Writes `commits` (oldest first) to `file` (a temporary file, fsynced, then renamed over it;
/// a torn file could otherwise name fewer oids than were committed and still end at the last
/// tid).
pub fn save(file: &StateFile, commits: &[(Tid, Vec<Oid>)]) -> std::io::Result<()> {
    let mut text = String::new();
    for (tid, oids) in commits {
        let _ = write!(text, "{:016x} ", tid.get());
        let list: Vec<String> = oids.iter().map(|o| format!("{:x}", o.get())).collect();
        let _ = writeln!(text, "{}", list.join(","));
    }
    file.with_dir(
        |d, name| save_in(d, name, text.as_bytes()),
        |d, name| save_in(d, name, text.as_bytes()),
        || Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name")),
    )
}

fn save_in<D: StorageDir>(dir: &D, name: &str, text: &[u8]) -> std::io::Result<()> {
    let tmp = format!("{name}.tmp");
    let f = dir.open(&tmp, OpenMode::Truncate)?;
    f.write_at(text, 0)?;
    f.sync()?;
    drop(f);
    dir.rename(&tmp, name)?;
    dir.sync()
}

fn read_in<D: StorageDir>(dir: &D, name: &str) -> std::io::Result<Vec<u8>> {
    let f = dir.open(name, OpenMode::Read)?;
    let len = usize::try_from(f.len()?).map_err(|_| std::io::Error::other("file too large"))?;
    let mut bytes = vec![0; len];
    f.read_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// Reads the commits saved in `file` if they end exactly at `last_tid`; `None` otherwise (no
/// file, unreadable, malformed, or stale).
pub fn load(file: &StateFile, last_tid: Tid) -> Option<Vec<(Tid, Vec<Oid>)>> {
    let bytes = file.with_dir(read_in, read_in, || {
        Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))
    });
    let text = String::from_utf8(bytes.ok()?).ok()?;
    let mut commits = Vec::new();
    for line in text.lines() {
        let (tid, oids) = line.split_once(' ')?;
        let tid = Tid::new(u64::from_str_radix(tid, 16).ok()?);
        let oids = if oids.is_empty() {
            Vec::new()
        } else {
            oids.split(',')
                .map(|o| u64::from_str_radix(o, 16).ok().map(Oid::new))
                .collect::<Option<Vec<_>>>()?
        };
        commits.push((tid, oids));
    }
    (commits.last().map(|c| c.0) == Some(last_tid)).then_some(commits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_commits_come_back_only_when_they_end_at_the_last_tid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_for(&dir.path().join("1.raid-state"));
        let file = StateFile::Real(path.clone());
        assert_eq!(
            file_for(&StateFile::Real(dir.path().join("1.raid-state"))).display(),
            path.display().to_string()
        );
        let commits = vec![(Tid::new(5), vec![Oid::new(1), Oid::new(0x2a)]), (Tid::new(9), vec![])];
        save(&file, &commits).expect("save");
        assert_eq!(load(&file, Tid::new(9)), Some(commits));
        assert_eq!(load(&file, Tid::new(10)), None, "stale");
        std::fs::write(&path, "zz 1\n").expect("write");
        assert_eq!(load(&file, Tid::new(9)), None, "malformed");
        assert_eq!(load(&StateFile::Real(dir.path().join("none")), Tid::new(9)), None);
    }

    #[test]
    fn in_memory_the_saved_commits_survive_a_crash() {
        let dir = crate::storage::MemDir::new();
        let state = StateFile::Mem { dir: dir.clone(), name: "1.raid-state".into() };
        let file = file_for(&state);
        assert_eq!(file.display(), "mem:1.raid-state.recent");
        let commits = vec![(Tid::new(5), vec![Oid::new(7)])];
        save(&file, &commits).expect("save");
        let after = StateFile::Mem {
            dir: dir.crash(crate::storage::CrashMode::DropUnsynced),
            name: "1.raid-state.recent".into(),
        };
        assert_eq!(load(&after, Tid::new(5)), Some(commits));
        assert_eq!(
            load(
                &file_for(&StateFile::Mem { dir: crate::storage::MemDir::new(), name: "x".into() }),
                Tid::new(5)
            ),
            None
        );
    }
}
