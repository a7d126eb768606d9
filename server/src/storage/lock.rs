//! The storage lock: `Data.fs.lock`, taken exactly as ZODB's FileStorage takes it, so that
//! zeoraid and Python (a FileStorage, a ZEO server, a script) never write one `Data.fs` at once.
//!
//! # What Python does (ZODB 6.4, zc.lockfile 4.0)
//! * `FileStorage(path)` opened for writing creates `LockFile(path + '.lock')` before it opens
//!   `Data.fs`, and releases it in `close()`. A read-only FileStorage takes no lock at all.
//! * `zc.lockfile.LockFile` opens the lock file without truncating it (`'r+'`, or `'a+'` when it
//!   is missing), then on Unix calls `fcntl.flock(fd, LOCK_EX | LOCK_NB)`: a BSD lock on the
//!   open file, not a POSIX record lock. When that fails it raises `zc.lockfile.LockError
//!   ("Couldn't lock '<path>'")`. Once locked it writes its content template followed by a
//!   newline, preceded by one space, at the start of the file and truncates the rest: FileStorage
//!   uses the default template `'{pid}'`, so the file holds `" 12345\n"` (no host name; ZEO's
//!   client cache and others pass `'{pid}/{hostname}'`-style templates, FileStorage does not).
//! * The lock lasts as long as the file stays open: until `close()`, or the process's death,
//!   which the kernel turns into a release. The lock file itself is never removed.
//! * On Windows zc.lockfile locks the first byte with `msvcrt.locking(fd, LK_NBLCK, 1)`.
//!
//! # What zeoraid does
//! The same on Unix, through `rustix::fs::flock` (`File::try_lock` needs Rust 1.89, above our
//! MSRV): a storage opened for writing takes a non-blocking exclusive `flock` on
//! `<name>.lock` before it reads or repairs `Data.fs`, writes `" <pid>\n"` into it, and keeps
//! it until the storage is dropped (or closed). A read-only open takes no lock, as in Python.
//! `flock` locks belong to the open file description, so two opens in one process exclude each
//! other as two processes do. When the lock is held the open fails with
//! [`OpenError::Locked`](super::OpenError::Locked), naming the lock file and the pid written in
//! it.
//!
//! The in-memory directory ([`MemDir`](super::MemDir)) keeps an in-process flag per name
//! instead of a file, so that locking adds no file operation to the crash tests' counts.
//!
//! On other platforms no lock is taken yet (a warning says so): Python's byte lock needs
//! `LockFileEx`, reachable only through `unsafe` FFI or `File::try_lock` (Rust 1.89).

use super::error::OpenError;
use super::file::StorageDir;
use std::io;

/// A held storage lock; dropping it releases the lock.
pub struct DirLock {
    _guard: Box<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for DirLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirLock")
    }
}

impl DirLock {
    /// A lock released when `guard` is dropped.
    pub fn new(guard: impl std::any::Any + Send + Sync) -> DirLock {
        DirLock { _guard: Box::new(guard) }
    }
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another holder has it.
    #[error("locked by {}", show_pid(*.pid))]
    Held {
        /// The pid written in the lock file, if it holds one.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// "process 123", or "another process (no pid in the lock file)".
pub(crate) fn show_pid(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("process {pid}"),
        None => "another process (no pid in the lock file)".to_owned(),
    }
}

/// What zc.lockfile writes into a lock file for FileStorage: `" <pid>\n"`.
pub(crate) fn content() -> String {
    format!(" {}\n", std::process::id())
}

/// The pid in a lock file's content (`" 123\n"`, or `"123/host"` from other templates).
pub(crate) fn parse_pid(content: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(content).ok()?.trim_start();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    text[..digits].parse().ok()
}

/// Takes the lock of storage `name` in `dir` (`<name>.lock`), for an open for writing.
pub(crate) fn lock_storage<D: StorageDir>(dir: &D, name: &str) -> Result<DirLock, OpenError> {
    let lock = format!("{name}.lock");
    dir.lock(&lock).map_err(|e| match e {
        LockError::Held { pid } => OpenError::Locked { lock: dir.display(&lock), pid },
        LockError::Io(source) => OpenError::Io { op: "lock", path: dir.display(&lock), source },
    })
}

/// The lock of the real file system (see the module documentation).
#[cfg(unix)]
pub(crate) fn lock_real_file(path: &std::path::Path) -> Result<DirLock, LockError> {
    use rustix::fs::{flock, FlockOperation};
    use std::os::unix::fs::FileExt;

    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            let mut buf = [0u8; 256];
            let n = file.read_at(&mut buf, 0).unwrap_or(0);
            return Err(LockError::Held { pid: parse_pid(&buf[..n]) });
        }
        Err(e) => return Err(LockError::Io(e.into())),
    }
    let content = content();
    file.write_all_at(content.as_bytes(), 0)?;
    file.set_len(content.len() as u64)?;
    // Closing the file (dropping the guard) releases the lock.
    Ok(DirLock::new(file))
}

/// Without a lock on this platform: the lock file is written (so the holder can be found by
/// hand) but nothing excludes a second writer.
#[cfg(not(unix))]
pub(crate) fn lock_real_file(path: &std::path::Path) -> Result<DirLock, LockError> {
    tracing::warn!(path = %path.display(), "no storage lock on this platform: make sure no other process writes this storage");
    std::fs::write(path, content())?;
    Ok(DirLock::new(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemDir, OpenError, Options, Storage};

    #[test]
    fn pids_are_read_from_every_template() {
        assert_eq!(parse_pid(b" 1234\n"), Some(1234));
        assert_eq!(parse_pid(b"1234/host.example\n"), Some(1234));
        assert_eq!(parse_pid(b""), None);
        assert_eq!(parse_pid(b" \n"), None);
        assert_eq!(parse_pid(b"\xff"), None);
        assert_eq!(content(), format!(" {}\n", std::process::id()));
    }

    fn locked_by(r: Result<impl std::fmt::Debug, OpenError>) -> (String, Option<u32>, String) {
        match r {
            Err(e @ OpenError::Locked { .. }) => {
                let message = e.to_string();
                let OpenError::Locked { lock, pid } = e else { unreachable!() };
                (lock, pid, message)
            }
            other => panic!("expected a lock error, got {other:?}"),
        }
    }

    #[test]
    fn two_opens_of_one_real_storage_in_one_process_conflict() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("Data.fs");
        let lock_path = tmp.path().join("Data.fs.lock");
        let (s, _) = Storage::open_path(&path, Options::default()).expect("first open");
        assert_eq!(std::fs::read(&lock_path).expect("lock file"), content().as_bytes());

        let (lock, pid, message) = locked_by(Storage::open_path(&path, Options::default()));
        assert_eq!(lock, lock_path.display().to_string());
        assert_eq!(pid, Some(std::process::id()));
        assert!(message.contains(&lock) && message.contains(&std::process::id().to_string()), "{message}");

        // Read-only opens take no lock, as in Python.
        let ro = Options { read_only: true, ..Options::default() };
        let (r, _) = Storage::open_path(&path, ro.clone()).expect("read-only open beside the writer");
        drop(r);

        // Closing (or dropping) releases the lock; the file stays, as zc.lockfile leaves it.
        s.close().expect("close");
        let (s, _) = Storage::open_path(&path, Options::default()).expect("open after close");
        drop(s);
        assert!(lock_path.exists());
        let (s, _) = Storage::open_path(&path, Options::default()).expect("open after drop");
        drop(s);
    }

    #[test]
    fn a_failed_open_releases_the_lock() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("Data.fs");
        std::fs::write(&path, b"not a FileStorage").expect("write");
        for _ in 0..2 {
            assert!(matches!(
                Storage::open_path(&path, Options::default()),
                Err(OpenError::NotFileStorage { .. })
            ));
        }
        // A missing file that may not be created leaves no lock file behind.
        let missing = tmp.path().join("Missing.fs");
        let opts = Options { create: false, ..Options::default() };
        assert!(matches!(Storage::open_path(&missing, opts), Err(OpenError::Missing { .. })));
        assert!(!tmp.path().join("Missing.fs.lock").exists());
    }

    #[test]
    fn a_lock_file_left_by_a_dead_holder_is_taken_over() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("Data.fs");
        std::fs::write(tmp.path().join("Data.fs.lock"), b" 99999999 and some longer leftover\n")
            .expect("write");
        let (s, _) = Storage::open_path(&path, Options::default()).expect("open");
        assert_eq!(std::fs::read(tmp.path().join("Data.fs.lock")).expect("lock file"), content().as_bytes());
        drop(s);
    }

    #[test]
    fn two_opens_of_one_mem_storage_conflict_until_the_first_is_dropped() {
        let d = MemDir::new();
        let (s, _) = Storage::open(d.clone(), "Data.fs", Options::default()).expect("first open");
        let ops = d.ops();
        let (lock, pid, _) = locked_by(Storage::open(d.clone(), "Data.fs", Options::default()));
        assert_eq!((lock.as_str(), pid), ("mem:Data.fs.lock", Some(std::process::id())));
        assert_eq!(d.ops(), ops, "a refused open changes nothing");
        let ro = Options { read_only: true, ..Options::default() };
        drop(Storage::open(d.clone(), "Data.fs", ro).expect("read-only open"));
        // Another storage of the same directory has its own lock.
        drop(Storage::open(d.clone(), "Other.fs", Options::default()).expect("other storage"));
        drop(s);
        drop(Storage::open(d.clone(), "Data.fs", Options::default()).expect("open after drop"));
        // A crashed directory is a new process: no lock survives.
        let (_held, _) = Storage::open(d.clone(), "Data.fs", Options::default()).expect("open");
        let c = d.crash(crate::storage::CrashMode::DropUnsynced);
        drop(Storage::open(c, "Data.fs", Options::default()).expect("open after a crash"));
    }
}
