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

/// Where the recent commits of the RAID whose state lives in `state_file` are saved.
pub fn path_for(state_file: &Path) -> PathBuf {
    let mut p = state_file.as_os_str().to_owned();
    p.push(".recent");
    PathBuf::from(p)
}

/// Writes `commits` (oldest first) to `path` (write a temporary file, then rename).
pub fn save(path: &Path, commits: &[(Tid, Vec<Oid>)]) -> std::io::Result<()> {
    let mut text = String::new();
    for (tid, oids) in commits {
        let _ = write!(text, "{:016x} ", tid.get());
        let list: Vec<String> = oids.iter().map(|o| format!("{:x}", o.get())).collect();
        let _ = writeln!(text, "{}", list.join(","));
    }
    let tmp = path.with_extension("recent.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Reads the commits saved at `path` if they end exactly at `last_tid`; `None` otherwise (no
/// file, unreadable, malformed, or stale).
pub fn load(path: &Path, last_tid: Tid) -> Option<Vec<(Tid, Vec<Oid>)>> {
    let text = std::fs::read_to_string(path).ok()?;
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
        let commits = vec![(Tid::new(5), vec![Oid::new(1), Oid::new(0x2a)]), (Tid::new(9), vec![])];
        save(&path, &commits).expect("save");
        assert_eq!(load(&path, Tid::new(9)), Some(commits));
        assert_eq!(load(&path, Tid::new(10)), None, "stale");
        std::fs::write(&path, "zz 1\n").expect("write");
        assert_eq!(load(&path, Tid::new(9)), None, "malformed");
        assert_eq!(load(&dir.path().join("none"), Tid::new(9)), None);
    }
}
