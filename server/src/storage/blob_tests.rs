//! Unit tests of blobs: the directory, uploads, commit, abort, undo, restore, reads, open-time
//! recovery and the pack helpers, on the in-memory directory.

use super::blob::layout::Layout;
use super::*;
use bytes::Bytes;
use std::collections::BTreeMap;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::types::TxnStatus;

const NAME: &str = "Data.fs";
/// What ZODB 6.4 writes as the record of a `Blob`.
const BLOB_PICKLE: &[u8] = b"\x80\x03cZODB.blob\nBlob\nq\x00.\x80\x03N.";

fn opts() -> Options {
    Options { blob_dir: Some("blobs".into()), ..Options::default() }
}

fn open(d: &MemDir) -> (Storage<MemDir>, OpenReport) {
    Storage::open(d.clone(), NAME, opts()).expect("open")
}

fn o(n: u64) -> Oid {
    Oid::new(n)
}

fn t(n: u64) -> Tid {
    Tid::new(n)
}

fn meta() -> TxnMeta {
    TxnMeta::with_raw_extension(Bytes::from_static(b"u"), Bytes::from_static(b"d"), Bytes::new())
}

fn begin(s: &Storage<MemDir>, tid: u64) {
    s.begin(meta(), BeginTid::Exactly(t(tid)), TxnStatus::NORMAL).expect("begin");
}

fn commit(s: &Storage<MemDir>) -> Tid {
    s.vote().expect("vote");
    s.finish().expect("finish")
}

/// Uploads `content` in chunks of `chunk` bytes.
fn upload(s: &Storage<MemDir>, content: &[u8], chunk: usize) -> UploadId {
    let id = s.begin_upload().expect("begin upload");
    for c in content.chunks(chunk.max(1)) {
        s.append_upload(id, c).expect("append");
    }
    id
}

/// A transaction storing one blob per (oid, serial, content).
fn commit_blobs(s: &Storage<MemDir>, tid: u64, blobs: &[(u64, u64, &[u8])]) -> Tid {
    begin(s, tid);
    for &(oid, serial, content) in blobs {
        let id = upload(s, content, 7);
        s.store_blob(o(oid), t(serial), BLOB_PICKLE, id).expect("store_blob");
    }
    commit(s)
}

fn blob(s: &Storage<MemDir>, oid: u64, serial: u64) -> Vec<u8> {
    s.open_blob(o(oid), t(serial)).expect("open blob").read_all().expect("read").to_vec()
}

fn files(d: &MemDir) -> BTreeMap<String, Vec<u8>> {
    d.blob_fs("blobs").files()
}

fn tmp_files(d: &MemDir) -> Vec<String> {
    files(d).into_keys().filter(|k| k.starts_with("tmp/")).collect()
}

fn is_missing(r: Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(StorageError::BlobMissing { .. }))
}

#[test]
fn a_new_blob_directory_is_bushy_with_its_marker_and_tmp() {
    let d = MemDir::new();
    let (s, r) = open(&d);
    assert_eq!(r.blobs, BlobRecovery::default());
    assert!(s.has_blobs());
    let b = s.blob_store().expect("blob store");
    assert_eq!(b.layout(), Layout::Bushy);
    assert_eq!(files(&d).get(".layout").map(Vec::as_slice), Some(&b"bushy"[..]));
    assert_eq!(d.blob_fs("blobs").stat("tmp").expect("stat"), Some(blob::EntryKind::Dir));
    drop(s);
    let (s, _) = open(&d);
    assert_eq!(s.blob_store().map(BlobStore::layout), Some(Layout::Bushy));
    // Without a blob directory there are no blob operations.
    let (s, _) = Storage::open(MemDir::new(), NAME, Options::default()).expect("open");
    assert!(!s.has_blobs());
    assert!(matches!(s.begin_upload(), Err(StorageError::NoBlobs)));
    assert!(matches!(s.blob_path(o(1), t(1)), Err(StorageError::NoBlobs)));
}

#[test]
fn layouts_are_read_from_the_marker_and_unknown_ones_refused() {
    let d = MemDir::new();
    let fs = d.blob_fs("blobs");
    fs.create_root().expect("root");
    fs.put(".layout", b"flat\n".to_vec()).expect("put");
    match Storage::open(d.clone(), NAME, opts()) {
        Err(OpenError::BlobLayout { found, path }) => {
            assert_eq!(found, "flat");
            assert!(path.ends_with(".layout"), "{path}");
        }
        other => panic!("{other:?}"),
    }
    fs.put(".layout", b"lawn\n".to_vec()).expect("put");
    let (s, _) = open(&d);
    assert_eq!(s.blob_store().map(BlobStore::layout), Some(Layout::Lawn));
    commit_blobs(&s, 10, &[(0x123, 0, b"lawn blob")]);
    assert!(files(&d).contains_key("0x0123/0x0a.blob"), "{:?}", files(&d).keys());
    assert_eq!(blob(&s, 0x123, 10), b"lawn blob");
}

#[test]
fn a_directory_without_marker_gets_the_layout_zodb_would_pick() {
    // Only hidden entries: bushy, and a writable open writes the marker.
    let d = MemDir::new();
    let fs = d.blob_fs("blobs");
    fs.create_root().expect("root");
    fs.put(".hidden", b"x".to_vec()).expect("put");
    let (s, _) = open(&d);
    assert_eq!(s.blob_store().map(BlobStore::layout), Some(Layout::Bushy));
    assert_eq!(files(&d).get(".layout").map(Vec::as_slice), Some(&b"bushy"[..]));
    // A visible entry: lawn (ZODB's auto_layout_select); read-only writes nothing.
    let d = MemDir::new();
    let fs = d.blob_fs("blobs");
    fs.create_root().expect("root");
    fs.create_dir("0x01").expect("dir");
    let (s, _) = open(&d);
    assert_eq!(s.blob_store().map(BlobStore::layout), Some(Layout::Lawn));
    assert_eq!(files(&d).get(".layout").map(Vec::as_slice), Some(&b"lawn"[..]));
    let ro = Options { read_only: true, ..opts() };
    let d = MemDir::new();
    drop(Storage::open(d.clone(), NAME, Options::default()).expect("create Data.fs"));
    let fs = d.blob_fs("blobs");
    fs.create_root().expect("root");
    fs.create_dir("0x01").expect("dir");
    let (s, _) = Storage::open(d.clone(), NAME, ro.clone()).expect("open read-only");
    assert_eq!(s.blob_store().map(BlobStore::layout), Some(Layout::Lawn));
    assert!(!files(&d).contains_key(".layout"));
    // A missing blob directory is created, except read-only.
    let d = MemDir::new();
    drop(Storage::open(d.clone(), NAME, Options::default()).expect("create Data.fs"));
    assert!(matches!(Storage::open(d.clone(), NAME, ro), Err(OpenError::Missing { .. })));
}

#[test]
fn a_blob_is_invisible_until_finish_then_in_its_bushy_place() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    let content: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    let id = upload(&s, &content, BLOB_CHUNK);
    assert_eq!(s.blob_store().expect("blobs").upload_len(id).expect("len"), content.len() as u64);
    begin(&s, 0x0102_0304_0506_0708);
    // What ZEO does: a plain store, then the blob store of the same object.
    s.store(o(1), Tid::ZERO, b"plain").expect("store");
    s.store_blob(o(1), Tid::ZERO, BLOB_PICKLE, id).expect("store_blob");
    assert!(matches!(s.store_blob(o(2), Tid::ZERO, BLOB_PICKLE, id), Err(StorageError::UnknownUpload(_))));
    let tid = t(0x0102_0304_0506_0708);
    assert!(is_missing(s.blob_path(o(1), tid)));
    s.vote().expect("vote");
    assert!(is_missing(s.blob_path(o(1), tid)));
    assert_eq!(tmp_files(&d), vec!["tmp/0000000000000001-0102030405060708.staged"]);
    assert_eq!(s.finish().expect("finish"), tid);
    assert!(tmp_files(&d).is_empty());
    let rel = "0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x01/0x0102030405060708.blob";
    assert_eq!(files(&d).get(rel), Some(&content));
    assert_eq!(s.blob_path(o(1), tid).expect("path").to_string_lossy(), format!("mem:blobs/{rel}"));
    let r = s.open_blob(o(1), tid).expect("open");
    assert_eq!(r.len(), content.len() as u64);
    let chunks: Vec<Bytes> = r.chunks(BLOB_CHUNK).collect::<Result<_>>().expect("chunks");
    assert_eq!(chunks.iter().map(Bytes::len).collect::<Vec<_>>(), vec![59_000, 59_000, 32_000]);
    assert_eq!(chunks.concat(), content);
    assert!(s.has_blob(o(1), tid).expect("has"));
    // The current record is the blob record, as the later store supersedes the plain one.
    assert_eq!(s.load(o(1)).expect("load").0, Bytes::from_static(BLOB_PICKLE));
    assert_eq!(s.blob_store().expect("blobs").revisions(o(1)).expect("revisions"), vec![tid]);
}

#[test]
fn missing_blobs_name_their_path() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    let tid = commit_blobs(&s, 10, &[(1, 0, b"x")]);
    match s.blob_path(o(2), tid) {
        Err(e @ StorageError::BlobMissing { .. }) => {
            assert_eq!(
                e.to_string(),
                "POSKeyError: No blob file at mem:blobs/0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x02/0x0a.blob"
            );
            assert_eq!(e.culprit(), Culprit::Caller);
        }
        other => panic!("{other:?}"),
    }
    assert!(is_missing(s.open_blob(o(1), t(9))));
    assert!(!s.has_blob(o(1), t(11)).expect("has"));
}

#[test]
fn an_empty_blob_is_a_file_of_no_bytes() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    let tid = commit_blobs(&s, 10, &[(1, 0, b"")]);
    let r = s.open_blob(o(1), tid).expect("open");
    assert!(r.is_empty());
    assert_eq!(r.chunks(BLOB_CHUNK).count(), 0);
}

#[test]
fn abort_and_conflicts_leave_no_file_behind() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    let first = commit_blobs(&s, 10, &[(1, 0, b"v1")]);
    let before = files(&d);
    for after_vote in [false, true] {
        begin(&s, 20);
        let id = upload(&s, b"v2", 1);
        s.store_blob(o(1), first, BLOB_PICKLE, id).expect("store_blob");
        if after_vote {
            s.vote().expect("vote");
        }
        s.abort().expect("abort");
        assert_eq!(files(&d), before, "after_vote {after_vote}");
    }
    // A conflict uses the upload up; the transaction goes on.
    begin(&s, 20);
    let id = upload(&s, b"v2", 1);
    assert!(matches!(s.store_blob(o(1), Tid::ZERO, BLOB_PICKLE, id), Err(StorageError::Conflict { .. })));
    assert!(tmp_files(&d).is_empty());
    let id = upload(&s, b"v2", 1);
    assert!(matches!(s.store_blob(o(1), first, b"", id), Err(StorageError::EmptyData { .. })));
    assert!(tmp_files(&d).is_empty());
    s.store(o(2), Tid::ZERO, b"plain").expect("store");
    commit(&s);
    assert_eq!(blob(&s, 1, 10), b"v1");
    // Outside a transaction the store is refused and the upload used up too.
    let id = upload(&s, b"v2", 1);
    assert!(matches!(s.store_blob(o(1), first, BLOB_PICKLE, id), Err(StorageError::WrongTransaction(_))));
    assert!(tmp_files(&d).is_empty());
    // Uploads can be abandoned, and close drops the rest.
    let id = upload(&s, b"gone", 2);
    s.abandon_upload(id).expect("abandon");
    assert!(matches!(s.abandon_upload(id), Err(StorageError::UnknownUpload(_))));
    upload(&s, b"left open", 2);
    assert_eq!(tmp_files(&d).len(), 1);
    s.close().expect("close");
    assert!(tmp_files(&d).is_empty());
}

#[test]
fn a_later_blob_store_of_the_same_object_wins() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    begin(&s, 10);
    for content in [&b"first"[..], b"second"] {
        let id = upload(&s, content, 3);
        s.store_blob(o(1), Tid::ZERO, BLOB_PICKLE, id).expect("store_blob");
    }
    let tid = commit(&s);
    assert_eq!(blob(&s, 1, tid.get()), b"second");
    assert_eq!(files(&d).len(), 2, "the marker and one blob: {:?}", files(&d).keys());
}

fn undo_scenario(d: &MemDir) -> Storage<MemDir> {
    let (s, _) = open(d);
    commit_blobs(&s, 10, &[(1, 0, b"one v1"), (2, 0, b"two v1")]);
    commit_blobs(&s, 20, &[(1, 10, b"one v2")]);
    s
}

#[test]
fn undo_gives_the_new_revision_the_blob_it_goes_back_to() {
    for links in [true, false] {
        let d = MemDir::new();
        d.blob_fs("blobs").set_hard_links(links);
        let s = undo_scenario(&d);
        begin(&s, 30);
        assert_eq!(s.undo(&format::undo_id(t(20))).expect("undo"), vec![o(1)]);
        commit(&s);
        assert_eq!(blob(&s, 1, 30), b"one v1", "links {links}");
        assert_eq!(blob(&s, 1, 20), b"one v2");
        assert_eq!(s.load(o(1)).expect("load"), (Bytes::from_static(BLOB_PICKLE), t(30)));
        // Undoing the undo goes back to v2, through a back-pointer chain.
        begin(&s, 40);
        s.undo(&format::undo_id(t(30))).expect("undo the undo");
        commit(&s);
        assert_eq!(blob(&s, 1, 40), b"one v2");
        // Every revision of a blob has the same pickle (the Blob's state is None), so
        // FileStorage's undo sees no conflict in later changes: undoing the creation (txn 10)
        // succeeds, and leaves no blob for the data-less revisions.
        begin(&s, 50);
        assert_eq!(s.undo(&format::undo_id(t(10))).expect("undo creation"), vec![o(1), o(2)]);
        commit(&s);
        assert!(is_missing(s.blob_path(o(1), t(50))));
        assert!(is_missing(s.blob_path(o(2), t(50))));
        assert!(tmp_files(&d).is_empty());
    }
}

#[test]
fn undoing_a_creation_gives_no_blob() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    commit_blobs(&s, 10, &[(1, 0, b"one")]);
    begin(&s, 20);
    s.undo(&format::undo_id(t(10))).expect("undo");
    commit(&s);
    assert!(is_missing(s.blob_path(o(1), t(20))));
    assert!(matches!(s.load(o(1)), Err(StorageError::PosKey { .. })));
}

#[test]
fn an_undo_whose_source_blob_is_missing_fails_and_writes_nothing() {
    let d = MemDir::new();
    let s = undo_scenario(&d);
    let fs = d.blob_fs("blobs");
    fs.remove_file(&Layout::Bushy.blob_file(o(1), t(10))).expect("remove");
    begin(&s, 30);
    match s.undo(&format::undo_id(t(20))) {
        Err(StorageError::BlobMissing { oid, serial, .. }) => assert_eq!((oid, serial), (o(1), t(10))),
        other => panic!("{other:?}"),
    }
    assert!(tmp_files(&d).is_empty());
    // The transaction is still usable.
    s.store(o(3), Tid::ZERO, b"x").expect("store");
    commit(&s);
    assert!(is_missing(s.blob_path(o(1), t(30))));
}

#[test]
fn restore_blob_writes_the_blob_of_the_restored_revision() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    begin(&s, 10);
    let id = upload(&s, b"restored v1", 4);
    s.restore_blob(o(1), t(10), BLOB_PICKLE, None, id).expect("restore_blob");
    commit(&s);
    // A copy of an undo: a back-pointer record, with its own blob file, as ZODB's restoreBlob.
    begin(&s, 20);
    let id = upload(&s, b"restored v1", 4);
    s.restore_blob(o(1), t(20), BLOB_PICKLE, Some(t(10)), id).expect("restore_blob");
    let id = upload(&s, b"x", 4);
    assert!(matches!(
        s.restore_blob(o(2), t(19), BLOB_PICKLE, None, id),
        Err(StorageError::RestoreSerial { .. })
    ));
    commit(&s);
    assert!(tmp_files(&d).is_empty());
    assert_eq!(blob(&s, 1, 10), b"restored v1");
    assert_eq!(blob(&s, 1, 20), b"restored v1");
    let (_, recs) = s.iterator(Some(t(20)), None).next().expect("txn").expect("ok");
    assert_eq!(recs[0].data_txn, Some(t(10)), "written as a back-pointer");
    assert_eq!(recs[0].data.as_deref(), Some(BLOB_PICKLE));
}

#[test]
fn iteration_tells_blob_records_apart() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    commit_blobs(&s, 10, &[(1, 0, b"b")]);
    begin(&s, 20);
    s.store(o(2), Tid::ZERO, b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03}q\x01.")
        .expect("store");
    commit(&s);
    let mut seen = Vec::new();
    for item in s.iterator(None, None) {
        let (_, recs) = item.expect("iterate");
        for r in recs {
            let is_blob = r.data.as_deref().is_some_and(is_blob_record);
            assert_eq!(is_blob, s.has_blob(r.oid, r.tid).expect("has"));
            seen.push((r.oid, is_blob));
        }
    }
    assert_eq!(seen, vec![(o(1), true), (o(2), false)]);
}

#[test]
fn leftovers_in_tmp_are_cleaned_or_completed_at_open() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    let tid = commit_blobs(&s, 10, &[(1, 0, b"committed")]);
    drop(s);
    let fs = d.blob_fs("blobs");
    // A crash after the commit but before the move: the blob is staged again.
    let rel = Layout::Bushy.blob_file(o(1), tid);
    fs.put("tmp/0000000000000001-000000000000000a.staged", b"committed".to_vec()).expect("put");
    fs.remove_file(&rel).expect("remove");
    // A staged blob of a transaction that never committed, and an abandoned upload.
    fs.put("tmp/0000000000000002-000000000000000b.staged", b"uncommitted".to_vec()).expect("put");
    fs.put("tmp/upload-0.tmp", b"partial".to_vec()).expect("put");
    // Read-only: nothing changes, the committed blob is served from tmp/.
    let (s, r) = Storage::open(d.clone(), NAME, Options { read_only: true, ..opts() }).expect("open");
    assert_eq!(r.blobs, BlobRecovery { completed: 1, discarded: 0, tmp_removed: 0 });
    assert_eq!(blob(&s, 1, 10), b"committed");
    assert!(is_missing(s.blob_path(o(2), t(11))));
    assert_eq!(tmp_files(&d).len(), 3);
    drop(s);
    let (s, r) = open(&d);
    assert_eq!(r.blobs, BlobRecovery { completed: 1, discarded: 1, tmp_removed: 1 });
    assert!(tmp_files(&d).is_empty());
    assert_eq!(files(&d).get(&rel).map(Vec::as_slice), Some(&b"committed"[..]));
    assert_eq!(blob(&s, 1, 10), b"committed");
    drop(s);
    let (_, r) = open(&d);
    assert_eq!(r.blobs, BlobRecovery::default());
}

#[test]
fn a_staged_blob_for_a_record_that_is_no_blob_is_discarded() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    begin(&s, 10);
    s.store(o(1), Tid::ZERO, b"not a blob").expect("store");
    commit(&s);
    drop(s);
    let fs = d.blob_fs("blobs");
    fs.put("tmp/0000000000000001-000000000000000a.staged", b"stale".to_vec()).expect("put");
    let (s, r) = open(&d);
    assert_eq!(r.blobs.discarded, 1);
    assert!(is_missing(s.blob_path(o(1), t(10))));
}

#[test]
fn pack_helpers_list_and_remove_revisions_and_prune_directories() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    commit_blobs(&s, 10, &[(1, 0, b"1a"), (0x0101, 0, b"257a")]);
    commit_blobs(&s, 20, &[(1, 10, b"1b")]);
    let b = s.blob_store().expect("blobs");
    assert_eq!(b.list().expect("list"), vec![(o(1), t(10)), (o(1), t(20)), (o(0x0101), t(10))]);
    assert_eq!(b.revisions(o(1)).expect("revisions"), vec![t(10), t(20)]);
    assert_eq!(b.revisions(o(5)).expect("revisions"), vec![]);
    assert!(b.remove_revision(o(1), t(10)).expect("remove"));
    assert!(!b.remove_revision(o(1), t(10)).expect("remove again"));
    assert!(b.remove_revision(o(1), t(20)).expect("remove"));
    assert!(is_missing(s.blob_path(o(1), t(20))));
    // Object 1's directory is gone; the parent it shares with 0x0101 stays.
    let names: Vec<String> = files(&d).into_keys().collect();
    assert_eq!(
        names,
        vec![".layout".to_owned(), "0x00/0x00/0x00/0x00/0x00/0x00/0x01/0x01/0x0a.blob".to_owned()]
    );
    let fs = d.blob_fs("blobs");
    assert_eq!(fs.stat("0x00/0x00/0x00/0x00/0x00/0x00/0x00").expect("stat"), None);
    assert!(b.remove_revision(o(0x0101), t(10)).expect("remove"));
    assert_eq!(fs.list("").expect("list").len(), 2, ".layout and tmp remain");
    assert_eq!(b.list().expect("list"), vec![]);
    // A later commit recreates the directories.
    commit_blobs(&s, 30, &[(1, 20, b"1c")]);
    assert_eq!(blob(&s, 1, 30), b"1c");
}

#[test]
fn uploads_are_refused_read_only_and_unknown_ids_are_the_callers_error() {
    let d = MemDir::new();
    drop(open(&d));
    let (s, _) = Storage::open(d.clone(), NAME, Options { read_only: true, ..opts() }).expect("open");
    assert!(matches!(s.begin_upload(), Err(StorageError::ReadOnly)));
    let (s, _) = open(&d);
    let id = s.begin_upload().expect("upload");
    s.abandon_upload(id).expect("abandon");
    let e = s.append_upload(id, b"x").expect_err("unknown");
    assert!(matches!(e, StorageError::UnknownUpload(_)));
    assert_eq!(e.culprit(), Culprit::Caller);
}

#[test]
fn the_real_file_system_gets_read_only_blobs_hard_links_and_pruned_directories() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("Data.fs");
    let (s, _) = Storage::open_path(&data, Options { blob_dir: Some("blobs".into()), ..Options::default() })
        .expect("open");
    let root = tmp.path().join("blobs");
    assert_eq!(std::fs::read_to_string(root.join(".layout")).expect("marker"), "bushy");
    assert!(root.join("tmp").is_dir());
    let mut committed = Vec::new();
    for (tid, content) in [(10u64, &b"v1"[..]), (20, b"v2")] {
        let id = s.begin_upload().expect("upload");
        s.append_upload(id, content).expect("append");
        s.begin(meta(), BeginTid::Exactly(t(tid)), TxnStatus::NORMAL).expect("begin");
        let serial = committed.last().copied().unwrap_or(Tid::ZERO);
        s.store_blob(o(1), serial, BLOB_PICKLE, id).expect("store_blob");
        s.vote().expect("vote");
        committed.push(s.finish().expect("finish"));
    }
    s.begin(meta(), BeginTid::Exactly(t(30)), TxnStatus::NORMAL).expect("begin");
    s.undo(&format::undo_id(t(20))).expect("undo");
    s.vote().expect("vote");
    s.finish().expect("finish");
    let p10 = s.blob_path(o(1), t(10)).expect("path");
    let p30 = s.blob_path(o(1), t(30)).expect("path");
    assert_eq!(p30, root.join("0x00/0x00/0x00/0x00/0x00/0x00/0x00/0x01/0x1e.blob"));
    assert_eq!(std::fs::read(&p30).expect("read"), b"v1");
    assert!(std::fs::metadata(&p30).expect("stat").permissions().readonly());
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let (a, b) = (std::fs::metadata(&p10).expect("stat"), std::fs::metadata(&p30).expect("stat"));
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "the undo hard-linked the blob");
    }
    assert_eq!(std::fs::read_dir(root.join("tmp")).expect("tmp").count(), 0);
    let b = s.blob_store().expect("blobs");
    for tid in [10, 20, 30] {
        assert!(b.remove_revision(o(1), t(tid)).expect("remove"));
    }
    let left: Vec<String> = std::fs::read_dir(&root)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(left, vec![".layout", "tmp"], "directories left empty are pruned");
    // A lawn directory on disk.
    let lawn = tmp.path().join("lawn");
    std::fs::create_dir(&lawn).expect("mkdir");
    std::fs::write(lawn.join(".layout"), "lawn").expect("marker");
    let (s, _) =
        Storage::open_path(tmp.path().join("Lawn.fs"), Options { blob_dir: Some(lawn.clone()), ..opts() })
            .expect("open");
    let id = s.begin_upload().expect("upload");
    s.append_upload(id, b"lawn").expect("append");
    s.begin(meta(), BeginTid::Exactly(t(10)), TxnStatus::NORMAL).expect("begin");
    s.store_blob(o(0x1234), Tid::ZERO, BLOB_PICKLE, id).expect("store_blob");
    s.vote().expect("vote");
    s.finish().expect("finish");
    assert_eq!(std::fs::read(lawn.join("0x1234/0x0a.blob")).expect("read"), b"lawn");
}

#[test]
fn uploads_run_concurrently_and_readers_never_see_an_unfinished_blob() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    let s = &s;
    let ids: Vec<(u64, UploadId)> = std::thread::scope(|sc| {
        let handles: Vec<_> = (1..=4u64)
            .map(|oid| {
                sc.spawn(move || {
                    let id = s.begin_upload().expect("upload");
                    for i in 0..200u64 {
                        s.append_upload(id, &[(oid * 10 + i % 10) as u8; 97]).expect("append");
                    }
                    (oid, id)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    begin(s, 10);
    for &(oid, id) in &ids {
        s.store_blob(o(oid), Tid::ZERO, BLOB_PICKLE, id).expect("store_blob");
    }
    s.vote().expect("vote");
    std::thread::scope(|sc| {
        let reader = sc.spawn(|| {
            // Once the transaction is visible, every blob of it is in place.
            loop {
                let published = s.last_transaction() >= t(10);
                let r = s.blob_path(o(4), t(10));
                if published {
                    assert!(r.is_ok(), "{r:?}");
                    break;
                }
                assert!(r.is_ok() || is_missing(r));
            }
        });
        s.finish().expect("finish");
        reader.join().expect("reader");
    });
    for (oid, _) in ids {
        let want: Vec<u8> = (0..200u64).flat_map(|i| [(oid * 10 + i % 10) as u8; 97]).collect();
        assert_eq!(blob(s, oid, 10), want);
    }
}

#[test]
fn pack_removes_the_blob_files_of_removed_revisions_only() {
    let d = MemDir::new();
    let (s, _) = open(&d);
    commit_blobs(&s, 10, &[(1, 0, b"one-v1"), (2, 0, b"two-v1")]);
    commit_blobs(&s, 20, &[(1, 10, b"one-v2")]);
    commit_blobs(&s, 30, &[(1, 20, b"one-v3")]);
    assert_eq!(s.blob_store().expect("blobs").list().expect("list").len(), 4);

    // Pack to 25: revision 10 of oid 1 is history; 20 is current at the pack time; 30 is after.
    let report = s.pack(t(25)).expect("pack");
    assert_eq!(report.outcome, PackOutcome::Packed);
    assert_eq!(report.blob_files_removed, 1);
    assert!(is_missing(s.open_blob(o(1), t(10))), "the removed revision's blob is gone");
    assert_eq!(blob(&s, 1, 20), b"one-v2");
    assert_eq!(blob(&s, 1, 30), b"one-v3");
    assert_eq!(blob(&s, 2, 10), b"two-v1", "oid 2's only revision is current: kept");
    let mut left = s.blob_store().expect("blobs").list().expect("list");
    left.sort();
    assert_eq!(left, vec![(o(1), t(20)), (o(1), t(30)), (o(2), t(10))]);

    // A blob file left behind (a crash between the rename and the pruning) goes at the next
    // pack, even one that finds no history to remove.
    let leftover = files(&d).into_keys().find(|k| k.ends_with("/0x1e.blob")).expect("rev 30 of oid 1");
    let stale = leftover.replace("/0x1e.blob", "/0x0a.blob");
    d.blob_fs("blobs").put(&stale, b"one-v1".to_vec()).expect("put the leftover back");
    drop(s);
    let (s, _) = open(&d);
    let report = s.pack(t(25)).expect("pack again");
    assert_eq!(report.outcome, PackOutcome::NothingToRemove);
    assert_eq!(report.blob_files_removed, 1, "the leftover is removed");
    assert!(!files(&d).contains_key(&stale));
    assert_eq!(blob(&s, 1, 20), b"one-v2");
}

/// A deferred-sync restore with a blob (the recovery's bulk copy), as `Storage::defer_sync`
/// runs it under group commit.
fn restore_deferred(s: &Storage<MemDir>, tid: u64, oid: u64, content: &[u8]) {
    begin(s, tid);
    s.defer_sync().expect("defer sync");
    let id = upload(s, content, 5);
    s.restore_blob(o(oid), t(tid), BLOB_PICKLE, None, id).expect("restore_blob");
    s.vote().expect("vote");
    assert_eq!(s.finish_deferred().expect("finish"), t(tid));
}

#[test]
fn a_deferred_blob_commit_is_readable_at_once_and_durable_after_the_round() {
    let grouped = || Options { group_commit: true, ..opts() };
    let d = MemDir::new();
    let s = Storage::open(d.clone(), NAME, grouped()).expect("open").0;
    restore_deferred(&s, 10, 1, b"deferred one");
    // Published and in place without waiting for the disk.
    assert_eq!(blob(&s, 1, 10), b"deferred one");
    assert!(tmp_files(&d).is_empty());
    assert_eq!((s.last_transaction(), s.durable_tid()), (t(10), Tid::ZERO));
    // A power cut now loses the transaction; the copy can be redone over whatever it left.
    let crashed = d.crash(CrashMode::DropUnsynced);
    {
        let (c, _) = Storage::open(crashed, NAME, grouped()).expect("open after a crash");
        assert_eq!(c.last_transaction(), Tid::ZERO);
        assert!(is_missing(c.open_blob(o(1), t(10)).map(|_| ())));
        restore_deferred(&c, 10, 1, b"deferred one");
        assert_eq!(c.sync_pending().expect("round"), t(10));
        assert_eq!(blob(&c, 1, 10), b"deferred one");
    }
    // After the round, a power cut keeps the transaction and its blob file.
    restore_deferred(&s, 20, 2, b"deferred two");
    assert_eq!(s.sync_pending().expect("round"), t(20));
    let (c, report) =
        Storage::open(d.crash(CrashMode::DropUnsynced), NAME, opts()).expect("open after a crash");
    assert_eq!(report.dropped_tail, None);
    assert_eq!(c.last_transaction(), t(20));
    assert_eq!(blob(&c, 1, 10), b"deferred one");
    assert_eq!(blob(&c, 2, 20), b"deferred two");
}
