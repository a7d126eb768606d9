//! The engine's only way to the disk: a small positional file trait and a directory trait,
//! with a real implementation ([`RealDir`]) and an in-memory one that can crash ([`MemDir`]).
//!
//! Every method takes `&self`: reads run on many threads at once while the single writer
//! appends, and positional I/O needs no shared cursor.

use super::lock::{DirLock, LockError};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

mod mem_blob;
pub use mem_blob::MemBlobFs;

/// A file with positional I/O.
#[allow(clippy::len_without_is_empty)] // an io::Result length; emptiness is never asked
pub trait StorageFile: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset`; [`io::ErrorKind::UnexpectedEof`] when the
    /// file ends first.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// [`StorageFile::read_at`] only if it can be done without waiting for the disk (the bytes
    /// are in memory, e.g. the page cache): `Ok(false)` when it cannot, or cannot tell.
    fn try_read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        let _ = (buf, offset);
        Ok(false)
    }
    /// Writes all of `buf` at `offset`, extending the file (with zeros) if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// The current length.
    fn len(&self) -> io::Result<u64>;
    /// Makes every earlier write and length change durable.
    fn sync(&self) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// How [`StorageDir::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// An existing file, for reading only.
    Read,
    /// An existing file, for reading and writing.
    Write,
    /// For reading and writing, created empty if missing.
    Create,
    /// For reading and writing, created or emptied.
    Truncate,
}

/// A directory holding the storage's files (`Data.fs`, the index cache, truncated tails).
pub trait StorageDir: Send + Sync {
    /// The files it opens.
    type File: StorageFile;
    /// The kind of blob directory that goes with it.
    type Blobs: super::blob::BlobFs;
    /// The blob directory at `path` (relative paths are relative to this directory).
    fn blobs_at(&self, path: &Path) -> Self::Blobs;
    /// Opens `name` (a bare file name inside the directory).
    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Self::File>;
    /// Whether `name` exists.
    fn exists(&self, name: &str) -> io::Result<bool>;
    /// Renames `from` to `to`, replacing `to` atomically.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes `name`; a missing file is not an error.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes earlier creations, renames and removals durable.
    fn sync(&self) -> io::Result<()>;
    /// A printable path for `name`, for errors and logs.
    fn display(&self, name: &str) -> String;
    /// Takes the exclusive lock `name` (`Data.fs.lock`) without waiting, for as long as the
    /// returned guard lives: on the real file system as ZODB's FileStorage locks it (`flock`,
    /// see `storage/lock.rs`), in memory with an in-process flag.
    fn lock(&self, name: &str) -> Result<DirLock, LockError>;
}

// ---- real files ------------------------------------------------------------------------------

/// A directory of the real file system.
#[derive(Debug, Clone)]
pub struct RealDir {
    path: PathBuf,
}

impl RealDir {
    /// The directory at `path` (which must exist).
    pub fn new(path: impl Into<PathBuf>) -> RealDir {
        RealDir { path: path.into() }
    }

    /// Splits a file path into its directory and file name.
    pub fn split(path: &Path) -> Option<(RealDir, String)> {
        let name = path.file_name()?.to_str()?.to_owned();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Some((RealDir::new(dir), name))
    }

    fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// A real file.
#[derive(Debug)]
pub struct RealFile(fs::File);

impl RealFile {
    pub(crate) fn from_std(f: fs::File) -> RealFile {
        RealFile(f)
    }
}

impl StorageFile for RealFile {
    #[cfg(unix)]
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.0, buf, offset)
    }

    /// `preadv2(RWF_NOWAIT)`: fails with `EAGAIN` instead of waiting for the disk.
    #[cfg(all(target_os = "linux", not(target_env = "musl")))]
    fn try_read_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<bool> {
        use rustix::io::{preadv2, Errno, ReadWriteFlags};
        while !buf.is_empty() {
            let mut slices = [io::IoSliceMut::new(buf)];
            match preadv2(&self.0, &mut slices, offset, ReadWriteFlags::NOWAIT) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(Errno::INTR) => {}
                // Not cached (or NOWAIT not supported here): the caller reads the slow way.
                Err(_) => return Ok(false),
            }
        }
        Ok(true)
    }

    #[cfg(windows)]
    fn read_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_read(&self.0, buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    #[cfg(unix)]
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, buf, offset)
    }

    #[cfg(windows)]
    fn write_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_write(&self.0, buf, offset) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn sync(&self) -> io::Result<()> {
        // fdatasync also flushes the size, which is all an append needs to be readable.
        self.0.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl StorageDir for RealDir {
    type File = RealFile;
    type Blobs = super::blob::RealBlobFs;

    fn blobs_at(&self, path: &Path) -> super::blob::RealBlobFs {
        super::blob::RealBlobFs::new(self.path.join(path))
    }

    fn open(&self, name: &str, mode: OpenMode) -> io::Result<RealFile> {
        let mut o = fs::OpenOptions::new();
        match mode {
            OpenMode::Read => o.read(true),
            OpenMode::Write => o.read(true).write(true),
            OpenMode::Create => o.read(true).write(true).create(true),
            OpenMode::Truncate => o.read(true).write(true).create(true).truncate(true),
        };
        o.open(self.join(name)).map(RealFile)
    }

    fn exists(&self, name: &str) -> io::Result<bool> {
        self.join(name).try_exists()
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.join(from), self.join(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.join(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    #[cfg(unix)]
    fn sync(&self) -> io::Result<()> {
        fs::File::open(&self.path)?.sync_all()
    }

    #[cfg(not(unix))]
    fn sync(&self) -> io::Result<()> {
        // Windows cannot open a directory for syncing; NTFS journals renames itself.
        Ok(())
    }

    fn display(&self, name: &str) -> String {
        self.join(name).display().to_string()
    }

    fn lock(&self, name: &str) -> Result<DirLock, LockError> {
        super::lock::lock_real_file(&self.join(name))
    }
}

// ---- in-memory files that can crash -------------------------------------------------------------

/// What survives a simulated crash of a [`MemDir`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Only what was synced: every write, length change, creation, rename and removal since
    /// the last sync of its file (or of the directory) is lost.
    DropUnsynced,
    /// Every unsynced change survives except the very last write or length change, of which
    /// only the first `keep` bytes reach the disk (`keep = 0` drops it; for a length change any
    /// `keep > 0` applies it). Directory changes all survive.
    TearLast {
        /// Bytes of the last write that survive.
        keep: usize,
    },
    /// Unsynced changes of each file survive in any subset: bit `i` of `mask` keeps the file's
    /// `i`-th pending change (changes past the 64th are kept). Models a disk that reorders
    /// writes between syncs. Directory changes all survive.
    Reorder {
        /// Which pending changes survive.
        mask: u64,
    },
}

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8>, seq: u64 },
    SetLen { len: u64, seq: u64 },
}

impl Pending {
    fn seq(&self) -> u64 {
        match self {
            Pending::Write { seq, .. } | Pending::SetLen { seq, .. } => *seq,
        }
    }

    fn apply(&self, buf: &mut Vec<u8>, keep: Option<usize>) {
        match self {
            Pending::Write { offset, data, .. } => {
                let n = keep.unwrap_or(data.len()).min(data.len());
                if n == 0 {
                    return;
                }
                let start = *offset as usize;
                if buf.len() < start + n {
                    buf.resize(start + n, 0);
                }
                buf[start..start + n].copy_from_slice(&data[..n]);
            }
            Pending::SetLen { len, .. } => {
                if keep != Some(0) {
                    buf.resize(*len as usize, 0);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Debug, Default)]
struct MemFs {
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// Mutating operations so far (writes, length changes, syncs, creations, renames, removals).
    ops: u64,
    /// Once `ops` reaches this, every mutating operation fails: the simulated process is dead.
    fail_at: Option<u64>,
    seq: u64,
    /// Blob directories (see `mem_blob`).
    blobs: mem_blob::Trees,
    /// Locks held (by name): a process-local flag, not a file, so locking adds no operation.
    locks: BTreeSet<String>,
}

impl MemFs {
    /// Counts one mutating operation, failing it if the process is "dead".
    fn tick(&mut self) -> io::Result<()> {
        if let Some(at) = self.fail_at {
            if self.ops >= at {
                return Err(io::Error::other("simulated crash: the process is gone"));
            }
        }
        self.ops += 1;
        Ok(())
    }

    fn inode(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

/// An in-memory directory whose files remember what was synced, so tests can crash it.
///
/// Clones share the same files. [`MemDir::crash`] returns a fresh, independent directory
/// holding what a disk would hold after a power cut in the given [`CrashMode`].
#[derive(Debug, Clone, Default)]
pub struct MemDir {
    fs: Arc<Mutex<MemFs>>,
}

/// A file of a [`MemDir`].
#[derive(Debug, Clone)]
pub struct MemFile {
    fs: Arc<Mutex<MemFs>>,
    ino: u64,
    writable: bool,
}

fn lock(fs: &Mutex<MemFs>) -> MutexGuard<'_, MemFs> {
    // A panic while holding the lock can only come from a failing test; keep going.
    fs.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemDir {
    /// An empty directory.
    pub fn new() -> MemDir {
        MemDir::default()
    }

    /// Mutating operations performed so far.
    pub fn ops(&self) -> u64 {
        lock(&self.fs).ops
    }

    /// Makes the `n`-th mutating operation from now (1-based) and every later one fail, as if
    /// the process died just before it. `None` lifts the failure.
    pub fn fail_after(&self, n: Option<u64>) {
        let mut fs = lock(&self.fs);
        fs.fail_at = n.map(|n| fs.ops + n.saturating_sub(1));
    }

    /// Bytes of the last pending (unsynced) write or length change, if any: the range of `keep`
    /// worth trying with [`CrashMode::TearLast`].
    pub fn last_pending_len(&self) -> Option<usize> {
        let fs = lock(&self.fs);
        fs.inodes.values().flat_map(|i| i.pending.iter()).max_by_key(|p| p.seq()).map(|p| match p {
            Pending::Write { data, .. } => data.len(),
            Pending::SetLen { .. } => 1,
        })
    }

    /// Number of pending changes of the file with the most of them (bits of
    /// [`CrashMode::Reorder`] worth trying).
    pub fn max_pending(&self) -> usize {
        lock(&self.fs).inodes.values().map(|i| i.pending.len()).max().unwrap_or(0)
    }

    /// What survives a crash now, as a new directory with no pending changes.
    pub fn crash(&self, mode: CrashMode) -> MemDir {
        let fs = lock(&self.fs);
        let last_seq = fs.inodes.values().flat_map(|i| i.pending.iter()).map(Pending::seq).max();
        let names = match mode {
            CrashMode::DropUnsynced => fs.durable_names.clone(),
            _ => fs.names.clone(),
        };
        let mut inodes = BTreeMap::new();
        for (&ino, node) in &fs.inodes {
            let mut data = node.durable.clone();
            for (i, p) in node.pending.iter().enumerate() {
                let keep = match mode {
                    CrashMode::DropUnsynced => Some(0),
                    CrashMode::TearLast { keep } if Some(p.seq()) == last_seq => Some(keep),
                    CrashMode::TearLast { .. } => None,
                    CrashMode::Reorder { mask } if i < 64 && mask & (1 << i) == 0 => Some(0),
                    CrashMode::Reorder { .. } => None,
                };
                p.apply(&mut data, keep);
            }
            inodes.insert(ino, Inode { durable: data.clone(), current: data, pending: Vec::new() });
        }
        let out = MemFs {
            durable_names: names.clone(),
            names,
            inodes,
            next_inode: fs.next_inode,
            ops: 0,
            fail_at: None,
            seq: 0,
            blobs: fs.blobs.crash(mode),
            // The process that held them died in the crash.
            locks: BTreeSet::new(),
        };
        MemDir { fs: Arc::new(Mutex::new(out)) }
    }

    /// The current (unsynced included) content of `name`.
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        let fs = lock(&self.fs);
        let ino = fs.names.get(name)?;
        fs.inodes.get(ino).map(|i| i.current.clone())
    }

    /// Replaces `name` with `data`, durably (test setup: corrupting or truncating a file).
    pub fn put(&self, name: &str, data: Vec<u8>) {
        let mut fs = lock(&self.fs);
        let ino = match fs.names.get(name) {
            Some(&i) => i,
            None => {
                let i = fs.next_inode;
                fs.next_inode += 1;
                fs.names.insert(name.to_owned(), i);
                fs.durable_names.insert(name.to_owned(), i);
                i
            }
        };
        fs.inodes.insert(ino, Inode { durable: data.clone(), current: data, pending: Vec::new() });
    }

    /// File names present now.
    pub fn names(&self) -> Vec<String> {
        lock(&self.fs).names.keys().cloned().collect()
    }
}

impl MemFile {
    /// Applies one unsynced change (a write or a resize) now, and remembers it until the next
    /// sync so that a crash can drop, tear or reorder it.
    fn mutate(&self, change: impl FnOnce(u64) -> Pending) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        let mut fs = lock(&self.fs);
        fs.tick()?;
        fs.seq += 1;
        let p = change(fs.seq);
        let node = fs.inode(self.ino)?;
        p.apply(&mut node.current, None);
        node.pending.push(p);
        Ok(())
    }
}

impl StorageFile for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        let node = fs.inode(self.ino)?;
        let start = usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let end = start.checked_add(buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        let src = node.current.get(start..end).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn try_read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        self.read_at(buf, offset).map(|()| true)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.mutate(|seq| Pending::Write { offset, data: buf.to_vec(), seq })
    }

    fn len(&self) -> io::Result<u64> {
        let mut fs = lock(&self.fs);
        Ok(fs.inode(self.ino)?.current.len() as u64)
    }

    fn sync(&self) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.tick()?;
        let node = fs.inode(self.ino)?;
        node.durable = node.current.clone();
        node.pending.clear();
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.mutate(|seq| Pending::SetLen { len, seq })
    }
}

impl StorageDir for MemDir {
    type File = MemFile;
    type Blobs = MemBlobFs;

    fn blobs_at(&self, path: &Path) -> MemBlobFs {
        self.blob_fs(&path.to_string_lossy())
    }

    fn open(&self, name: &str, mode: OpenMode) -> io::Result<MemFile> {
        let mut fs = lock(&self.fs);
        let existing = fs.names.get(name).copied();
        let ino = match (existing, mode) {
            (None, OpenMode::Read | OpenMode::Write) => return Err(io::ErrorKind::NotFound.into()),
            (Some(i), OpenMode::Read | OpenMode::Write | OpenMode::Create) => i,
            (Some(i), OpenMode::Truncate) => {
                drop(fs);
                let f = MemFile { fs: self.fs.clone(), ino: i, writable: true };
                f.set_len(0)?;
                return Ok(f);
            }
            (None, OpenMode::Create | OpenMode::Truncate) => {
                fs.tick()?;
                let i = fs.next_inode;
                fs.next_inode += 1;
                fs.inodes.insert(i, Inode::default());
                fs.names.insert(name.to_owned(), i);
                i
            }
        };
        Ok(MemFile { fs: self.fs.clone(), ino, writable: mode != OpenMode::Read })
    }

    fn exists(&self, name: &str) -> io::Result<bool> {
        Ok(lock(&self.fs).names.contains_key(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        let ino = *fs.names.get(from).ok_or(io::ErrorKind::NotFound)?;
        fs.tick()?;
        fs.names.remove(from);
        fs.names.insert(to.to_owned(), ino);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        if fs.names.contains_key(name) {
            fs.tick()?;
            fs.names.remove(name);
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.tick()?;
        fs.durable_names = fs.names.clone();
        Ok(())
    }

    fn display(&self, name: &str) -> String {
        format!("mem:{name}")
    }

    fn lock(&self, name: &str) -> Result<DirLock, LockError> {
        if !lock(&self.fs).locks.insert(name.to_owned()) {
            return Err(LockError::Held { pid: Some(std::process::id()) });
        }
        Ok(DirLock::new(MemLock { fs: self.fs.clone(), name: name.to_owned() }))
    }
}

/// A lock of a [`MemDir`], released on drop.
#[derive(Debug)]
struct MemLock {
    fs: Arc<Mutex<MemFs>>,
    name: String,
}

impl Drop for MemLock {
    fn drop(&mut self) {
        lock(&self.fs).locks.remove(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(f: &impl StorageFile) -> Vec<u8> {
        let mut v = vec![0; f.len().expect("len") as usize];
        f.read_at(&mut v, 0).expect("read");
        v
    }

    #[test]
    fn mem_file_reads_what_was_written_and_fails_past_the_end() {
        let d = MemDir::new();
        let f = d.open("a", OpenMode::Create).expect("open");
        f.write_at(b"hello", 0).expect("write");
        f.write_at(b"!", 7).expect("write");
        assert_eq!(read_all(&f), b"hello\0\0!");
        let mut b = [0; 2];
        assert_eq!(f.read_at(&mut b, 7).map_err(|e| e.kind()), Err(io::ErrorKind::UnexpectedEof));
    }

    #[test]
    fn crash_drops_unsynced_writes_and_names() {
        let d = MemDir::new();
        let f = d.open("a", OpenMode::Create).expect("open");
        d.sync().expect("dir sync");
        f.write_at(b"abc", 0).expect("write");
        f.sync().expect("sync");
        f.write_at(b"def", 3).expect("write");
        f.set_len(2).expect("set_len");
        let g = d.open("b", OpenMode::Create).expect("open b");
        g.write_at(b"x", 0).expect("write");
        g.sync().expect("sync");
        let c = d.crash(CrashMode::DropUnsynced);
        assert_eq!(c.contents("a").expect("a"), b"abc");
        assert!(c.contents("b").is_none(), "b's name was never synced");
    }

    #[test]
    fn tear_keeps_a_prefix_of_the_last_write_only() {
        let d = MemDir::new();
        let f = d.open("a", OpenMode::Create).expect("open");
        f.write_at(b"abc", 0).expect("write");
        f.write_at(b"defg", 3).expect("write");
        assert_eq!(d.last_pending_len(), Some(4));
        for keep in 0..=4 {
            let c = d.crash(CrashMode::TearLast { keep });
            let mut want = b"abc".to_vec();
            want.extend_from_slice(&b"defg"[..keep]);
            assert_eq!(c.contents("a").expect("a"), want, "keep {keep}");
        }
        let c = d.crash(CrashMode::Reorder { mask: 0b10 });
        assert_eq!(c.contents("a").expect("a"), b"\0\0\0defg");
    }

    #[test]
    fn fail_after_kills_every_later_mutation() {
        let d = MemDir::new();
        let f = d.open("a", OpenMode::Create).expect("open");
        d.fail_after(Some(2));
        f.write_at(b"1", 0).expect("first op runs");
        assert!(f.write_at(b"2", 1).is_err());
        assert!(f.sync().is_err());
        assert_eq!(read_all(&f), b"1");
    }

    #[test]
    fn rename_replaces_and_remove_is_idempotent() {
        let d = MemDir::new();
        d.open("t", OpenMode::Create).expect("open").write_at(b"new", 0).expect("w");
        d.open("x", OpenMode::Create).expect("open").write_at(b"old", 0).expect("w");
        d.rename("t", "x").expect("rename");
        assert_eq!(d.contents("x").expect("x"), b"new");
        assert!(!d.exists("t").expect("exists"));
        d.remove("t").expect("missing is fine");
    }

    #[test]
    fn real_dir_round_trip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = RealDir::new(tmp.path());
        let f = d.open("a", OpenMode::Create).expect("open");
        f.write_at(b"abcdef", 0).expect("write");
        f.set_len(4).expect("truncate");
        f.sync().expect("sync");
        assert_eq!(read_all(&f), b"abcd");
        d.rename("a", "b").expect("rename");
        d.sync().expect("dir sync");
        assert!(d.exists("b").expect("exists"));
        d.remove("b").expect("remove");
        d.remove("b").expect("remove again");
    }
}
