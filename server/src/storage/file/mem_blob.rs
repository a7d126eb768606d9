//! [`MemBlobFs`]: an in-memory directory tree for a blob store, living inside a
//! [`MemDir`]'s state so that one operation counter, one failure point and one crash snapshot
//! cover `Data.fs` and the blob directory together.
//!
//! Every directory remembers which of its entries are durable: a creation, rename, link or
//! removal of an entry becomes durable when that directory is synced (so a rename into a new
//! directory also needs the new directory's own entry in its parent synced). File contents
//! follow the same rules as `Data.fs` (they are inodes of the same [`MemDir`]).

use super::{lock, CrashMode, Inode, MemDir, MemFile, MemFs};
use crate::storage::blob::{BlobFs, EntryKind};
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Dir(u64),
    File(u64),
}

#[derive(Debug, Clone, Default)]
struct DirNode {
    entries: BTreeMap<String, Entry>,
    durable: BTreeMap<String, Entry>,
}

/// The blob trees of a [`MemDir`], one per root path.
#[derive(Debug, Clone, Default)]
pub(super) struct Trees {
    /// Root path → its directory (root creation is durable at once).
    roots: BTreeMap<String, u64>,
    dirs: BTreeMap<u64, DirNode>,
    next_dir: u64,
    /// Refuse hard links (to test the copy fallback).
    no_hard_links: bool,
}

impl Trees {
    /// What survives a crash: with `DropUnsynced` only the durable entries of each directory,
    /// otherwise every entry (directory changes all survive, as for the flat directory).
    pub(super) fn crash(&self, mode: CrashMode) -> Trees {
        let mut out = self.clone();
        for d in out.dirs.values_mut() {
            if mode == CrashMode::DropUnsynced {
                d.entries = d.durable.clone();
            } else {
                d.durable = d.entries.clone();
            }
        }
        out
    }
}

/// A blob directory inside a [`MemDir`] (see [`MemDir::blob_fs`]). Clones share the tree.
#[derive(Debug, Clone)]
pub struct MemBlobFs {
    fs: Arc<Mutex<MemFs>>,
    root: String,
}

fn not_found() -> io::Error {
    io::ErrorKind::NotFound.into()
}

fn split_parent(rel: &str) -> io::Result<(&str, &str)> {
    match rel.rsplit_once('/') {
        Some((p, n)) if !n.is_empty() => Ok((p, n)),
        None if !rel.is_empty() => Ok(("", rel)),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("no file name in {rel:?}"))),
    }
}

impl MemFs {
    fn blob_resolve(&self, root: &str, rel: &str) -> io::Result<Option<Entry>> {
        let Some(&r) = self.blobs.roots.get(root) else { return Ok(None) };
        let mut cur = Entry::Dir(r);
        for c in rel.split('/').filter(|c| !c.is_empty()) {
            let Entry::Dir(d) = cur else { return Ok(None) };
            let node = self.blobs.dirs.get(&d).ok_or_else(not_found)?;
            match node.entries.get(c) {
                Some(&e) => cur = e,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    fn blob_dir(&self, root: &str, rel: &str) -> io::Result<u64> {
        match self.blob_resolve(root, rel)? {
            Some(Entry::Dir(d)) => Ok(d),
            Some(Entry::File(_)) => Err(io::Error::new(io::ErrorKind::NotADirectory, rel.to_owned())),
            None => Err(not_found()),
        }
    }

    fn blob_dir_node(&mut self, d: u64) -> io::Result<&mut DirNode> {
        self.blobs.dirs.get_mut(&d).ok_or_else(not_found)
    }

    /// Where a new entry `rel` of the blob tree `root` goes: its parent directory (which must
    /// exist) and its name (which must be free there), the operation counted (`tick`) once
    /// both are checked.
    fn blob_new_entry<'r>(&mut self, root: &str, rel: &'r str) -> io::Result<(u64, &'r str)> {
        let (parent, name) = split_parent(rel)?;
        let p = self.blob_dir(root, parent)?;
        if self.blobs.dirs.get(&p).is_some_and(|n| n.entries.contains_key(name)) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        self.tick()?;
        Ok((p, name))
    }
}

impl MemDir {
    /// The blob directory `root` of this in-memory directory (created by the blob store).
    pub fn blob_fs(&self, root: &str) -> MemBlobFs {
        MemBlobFs { fs: self.fs.clone(), root: root.to_owned() }
    }
}

impl MemBlobFs {
    /// Every file of the tree (current state, unsynced changes included), by path.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        let fs = lock(&self.fs);
        let mut out = BTreeMap::new();
        let Some(&r) = fs.blobs.roots.get(&self.root) else { return out };
        let mut todo = vec![(String::new(), r)];
        while let Some((prefix, d)) = todo.pop() {
            let Some(node) = fs.blobs.dirs.get(&d) else { continue };
            for (name, e) in &node.entries {
                let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
                match *e {
                    Entry::Dir(c) => todo.push((path, c)),
                    Entry::File(ino) => {
                        out.insert(path, fs.inodes.get(&ino).map(|i| i.current.clone()).unwrap_or_default());
                    }
                }
            }
        }
        out
    }

    /// Makes [`BlobFs::hard_link`] fail (or work again), as on a file system without links.
    pub fn set_hard_links(&self, supported: bool) {
        lock(&self.fs).blobs.no_hard_links = !supported;
    }

    /// Writes file `rel` (its directory must exist) with `data`, durably: test set-up.
    pub fn put(&self, rel: &str, data: Vec<u8>) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        let (parent, name) = split_parent(rel)?;
        let d = fs.blob_dir(&self.root, parent)?;
        let ino = fs.next_inode;
        fs.next_inode += 1;
        fs.inodes.insert(ino, Inode { durable: data.clone(), current: data, pending: Vec::new() });
        let node = fs.blob_dir_node(d)?;
        node.entries.insert(name.to_owned(), Entry::File(ino));
        node.durable.insert(name.to_owned(), Entry::File(ino));
        Ok(())
    }
}

impl BlobFs for MemBlobFs {
    type File = MemFile;

    fn create_root(&self) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        if fs.blobs.roots.contains_key(&self.root) {
            return Ok(());
        }
        fs.tick()?;
        let d = fs.blobs.next_dir;
        fs.blobs.next_dir += 1;
        fs.blobs.dirs.insert(d, DirNode::default());
        fs.blobs.roots.insert(self.root.clone(), d);
        Ok(())
    }

    fn stat(&self, rel: &str) -> io::Result<Option<EntryKind>> {
        let fs = lock(&self.fs);
        Ok(fs.blob_resolve(&self.root, rel)?.map(|e| match e {
            Entry::Dir(_) => EntryKind::Dir,
            Entry::File(_) => EntryKind::File,
        }))
    }

    fn list(&self, rel: &str) -> io::Result<Vec<(String, EntryKind)>> {
        let fs = lock(&self.fs);
        let d = fs.blob_dir(&self.root, rel)?;
        let node = fs.blobs.dirs.get(&d).ok_or_else(not_found)?;
        Ok(node
            .entries
            .iter()
            .map(|(n, e)| {
                (n.clone(), if matches!(e, Entry::Dir(_)) { EntryKind::Dir } else { EntryKind::File })
            })
            .collect())
    }

    fn create_dir(&self, rel: &str) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        let (p, name) = fs.blob_new_entry(&self.root, rel)?;
        let d = fs.blobs.next_dir;
        fs.blobs.next_dir += 1;
        fs.blobs.dirs.insert(d, DirNode::default());
        fs.blob_dir_node(p)?.entries.insert(name.to_owned(), Entry::Dir(d));
        Ok(())
    }

    fn create_file(&self, rel: &str) -> io::Result<MemFile> {
        let mut fs = lock(&self.fs);
        let (p, name) = fs.blob_new_entry(&self.root, rel)?;
        let ino = fs.next_inode;
        fs.next_inode += 1;
        fs.inodes.insert(ino, Inode::default());
        fs.blob_dir_node(p)?.entries.insert(name.to_owned(), Entry::File(ino));
        Ok(MemFile { fs: self.fs.clone(), ino, writable: true })
    }

    fn open_file(&self, rel: &str) -> io::Result<MemFile> {
        let fs = lock(&self.fs);
        match fs.blob_resolve(&self.root, rel)? {
            Some(Entry::File(ino)) => Ok(MemFile { fs: self.fs.clone(), ino, writable: false }),
            Some(Entry::Dir(_)) => Err(io::ErrorKind::IsADirectory.into()),
            None => Err(not_found()),
        }
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        let (fp, fname) = split_parent(from)?;
        let (tp, tname) = split_parent(to)?;
        let fd = fs.blob_dir(&self.root, fp)?;
        let td = fs.blob_dir(&self.root, tp)?;
        let e = *fs.blobs.dirs.get(&fd).and_then(|n| n.entries.get(fname)).ok_or_else(not_found)?;
        if !matches!(e, Entry::File(_)) {
            return Err(io::ErrorKind::IsADirectory.into());
        }
        if matches!(fs.blobs.dirs.get(&td).and_then(|n| n.entries.get(tname)), Some(Entry::Dir(_))) {
            return Err(io::ErrorKind::IsADirectory.into());
        }
        fs.tick()?;
        fs.blob_dir_node(fd)?.entries.remove(fname);
        fs.blob_dir_node(td)?.entries.insert(tname.to_owned(), e);
        Ok(())
    }

    fn hard_link(&self, from: &str, to: &str) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        if fs.blobs.no_hard_links {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "hard links are off"));
        }
        let Some(Entry::File(ino)) = fs.blob_resolve(&self.root, from)? else { return Err(not_found()) };
        let (td, tname) = fs.blob_new_entry(&self.root, to)?;
        fs.blob_dir_node(td)?.entries.insert(tname.to_owned(), Entry::File(ino));
        Ok(())
    }

    fn remove_file(&self, rel: &str) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        let (parent, name) = split_parent(rel)?;
        let Ok(p) = fs.blob_dir(&self.root, parent) else { return Ok(()) };
        match fs.blobs.dirs.get(&p).and_then(|n| n.entries.get(name)) {
            None => Ok(()),
            Some(Entry::Dir(_)) => Err(io::ErrorKind::IsADirectory.into()),
            Some(Entry::File(_)) => {
                fs.tick()?;
                fs.blob_dir_node(p)?.entries.remove(name);
                Ok(())
            }
        }
    }

    fn remove_dir(&self, rel: &str) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        let (parent, name) = split_parent(rel)?;
        let p = fs.blob_dir(&self.root, parent)?;
        let d = fs.blob_dir(&self.root, rel)?;
        if fs.blobs.dirs.get(&d).is_some_and(|n| !n.entries.is_empty()) {
            return Err(io::ErrorKind::DirectoryNotEmpty.into());
        }
        fs.tick()?;
        fs.blob_dir_node(p)?.entries.remove(name);
        Ok(())
    }

    fn sync_dir(&self, rel: &str) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        let d = fs.blob_dir(&self.root, rel)?;
        fs.tick()?;
        let node = fs.blob_dir_node(d)?;
        node.durable = node.entries.clone();
        Ok(())
    }

    fn seal(&self, rel: &str) -> io::Result<()> {
        match lock(&self.fs).blob_resolve(&self.root, rel)? {
            Some(Entry::File(_)) => Ok(()),
            _ => Err(not_found()),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            PathBuf::from(format!("mem:{}", self.root))
        } else {
            PathBuf::from(format!("mem:{}/{rel}", self.root))
        }
    }
}
