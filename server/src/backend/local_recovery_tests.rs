//! The local backend's side of recovery (issue 6): restores with original metadata, deferred
//! sync, and rebuilds (begin → copy → commit/abort, and what an open finds after a crash).

use bytes::Bytes;
use zeoraid_core::ids::{Oid, Tid};
use zeoraid_core::wire::error::ZeoError;
use zeoraid_core::wire::reply::{DataRecord, TxnHeader};
use zeoraid_core::wire::types::{Extension, TxnStatus};
use zeoraid_core::wire::value::{Text, Value};
use zeoraid_core::zeo::backend::{
    BackendIterId, BackendOutcome, BackendRequest, Culprit, TxnOp, UploadId, VoteRequest,
};

use super::local_tests::{store, Fixture};

fn ext(k: &'static str, v: &'static str) -> Extension {
    Extension(vec![(Value::Str(Text::from_static(k)), Value::Str(Text::from_static(v)))])
}

/// Votes and finishes a copied transaction; returns the outcomes of its `Finish`.
fn copy_txn(
    f: &mut Fixture,
    header: &TxnHeader,
    ops: Vec<TxnOp>,
    deferred_sync: bool,
) -> Vec<BackendOutcome> {
    let req = VoteRequest {
        tid: header.tid,
        status: header.status,
        user: header.user.clone(),
        description: header.description.clone(),
        extension: header.extension.clone(),
        ops,
        deferred_sync,
    };
    let out = f.call(BackendRequest::Vote(Box::new(req)));
    assert!(matches!(out, BackendOutcome::Voted { .. }), "{out:?}");
    f.call_all(BackendRequest::Finish { tid: header.tid })
}

fn header(
    tid: Tid,
    status: TxnStatus,
    user: &'static [u8],
    description: &'static [u8],
    extension: Extension,
) -> TxnHeader {
    TxnHeader {
        tid,
        status,
        user: Bytes::from_static(user),
        description: Bytes::from_static(description),
        extension,
    }
}

fn plain(tid: Tid) -> TxnHeader {
    header(tid, TxnStatus::NORMAL, b"", b"", Extension::default())
}

fn restore(oid: u64, serial: Tid, data: Option<&'static [u8]>, prev_txn: Option<Tid>) -> TxnOp {
    TxnOp::Restore { oid: Oid::new(oid), serial, data: data.map(Bytes::from_static), prev_txn }
}

fn upload(f: &mut Fixture, id: u64, content: &[u8]) -> UploadId {
    let upload = UploadId(id);
    assert_eq!(f.call(BackendRequest::BlobUploadStart { upload }), BackendOutcome::Nil);
    let chunk = Bytes::copy_from_slice(content);
    assert_eq!(f.call(BackendRequest::BlobUploadChunk { upload, chunk }), BackendOutcome::Nil);
    upload
}

fn restore_blob(
    oid: u64,
    serial: Tid,
    data: &'static [u8],
    prev_txn: Option<Tid>,
    upload: UploadId,
) -> TxnOp {
    TxnOp::RestoreBlob {
        oid: Oid::new(oid),
        serial,
        data: Bytes::from_static(data),
        prev_txn,
        upload,
        current: Tid::ZERO,
    }
}

/// Every transaction and its records, through the iterator requests.
fn history(f: &mut Fixture) -> Vec<(TxnHeader, Vec<DataRecord>)> {
    let txns = BackendIterId(1000);
    assert_eq!(
        f.call(BackendRequest::IterStart { iter: txns, start: None, stop: None }),
        BackendOutcome::Nil
    );
    let mut out = Vec::new();
    for n in 1001.. {
        let h = match f.call(BackendRequest::IterNext { iter: txns }) {
            BackendOutcome::Txn(Some(h)) => h,
            BackendOutcome::Txn(None) => break,
            o => panic!("{o:?}"),
        };
        let recs = BackendIterId(n);
        let start = BackendRequest::IterRecordStart { iter: recs, txn_iter: txns, tid: h.tid };
        assert_eq!(f.call(start), BackendOutcome::Nil);
        let mut records = Vec::new();
        loop {
            match f.call(BackendRequest::IterRecordNext { iter: recs }) {
                BackendOutcome::Record(Some(r)) => records.push(r),
                BackendOutcome::Record(None) => break,
                o => panic!("{o:?}"),
            }
        }
        out.push((h, records));
    }
    out
}

fn tids(f: &mut Fixture) -> Vec<Tid> {
    history(f).into_iter().map(|(h, _)| h.tid).collect()
}

/// The current data of `oid`, or the error's outcome.
fn load(f: &mut Fixture, oid: u64) -> Result<Bytes, Box<BackendOutcome>> {
    match f.call(BackendRequest::LoadBefore { oid: Oid::new(oid), before: Tid::MAX, snapshot: Tid::MAX }) {
        BackendOutcome::LoadBefore(Some(r)) => Ok(r.data),
        o => Err(Box::new(o)),
    }
}

/// The blob of a revision, through `SendBlob`.
fn blob(f: &mut Fixture, oid: u64, serial: Tid) -> Result<Vec<u8>, Box<BackendOutcome>> {
    let all = f.call_all(BackendRequest::SendBlob { oid: Oid::new(oid), serial });
    let (last, chunks) = all.split_last().expect("outcomes");
    if *last != BackendOutcome::Nil {
        return Err(Box::new(last.clone()));
    }
    Ok(chunks
        .iter()
        .flat_map(|c| match c {
            BackendOutcome::BlobChunk(b) => b.to_vec(),
            o => panic!("{o:?}"),
        })
        .collect())
}

fn is_pos_key(o: &BackendOutcome) -> bool {
    matches!(o, BackendOutcome::Failed(e) if matches!(e.error, ZeoError::PosKey(_)))
}

fn rec(oid: u64, tid: Tid, data: Option<&'static [u8]>, data_txn: Option<Tid>) -> DataRecord {
    DataRecord { oid: Oid::new(oid), tid, data: data.map(Bytes::from_static), data_txn }
}

#[test]
fn restores_keep_tids_metadata_back_pointers_deletions_and_blobs() {
    let mut f = Fixture::new(false);
    let (t1, t2, t3) = (f.next_tid(), f.next_tid(), f.next_tid());
    let h1 = header(t1, TxnStatus::NORMAL, b"alice", b"first", ext("k", "v"));
    let h2 = header(t2, TxnStatus::PACKED, b"bob", b"second", Extension::default());
    let h3 = header(t3, TxnStatus::NORMAL, b"", b"third", ext("x", "y"));
    let u1 = upload(&mut f, 1, b"blob one");
    let ops = vec![
        restore(1, t1, Some(b"a1"), None),
        restore_blob(2, t1, b"b-rec", None, u1),
        restore(3, t1, Some(b"c1"), None),
    ];
    let fin = copy_txn(&mut f, &h1, ops, true);
    assert!(matches!(fin.as_slice(), [BackendOutcome::Finished { tid, .. }] if *tid == t1), "{fin:?}");
    let u2 = upload(&mut f, 2, b"blob two");
    let ops = vec![
        restore(1, t2, Some(b"a1"), Some(t1)),
        restore_blob(2, t2, b"b-rec", Some(t1), u2),
        restore(3, t2, None, None),
    ];
    copy_txn(&mut f, &h2, ops, true);
    copy_txn(&mut f, &h3, vec![restore(1, t3, Some(b"a3"), None)], true);
    assert_eq!(f.call(BackendRequest::Sync), BackendOutcome::Nil);

    let got = history(&mut f);
    let headers: Vec<TxnHeader> = got.iter().map(|(h, _)| h.clone()).collect();
    assert_eq!(headers, vec![h1, h2, h3]);
    assert_eq!(
        got[0].1,
        vec![rec(1, t1, Some(b"a1"), None), rec(2, t1, Some(b"b-rec"), None), rec(3, t1, Some(b"c1"), None)]
    );
    // Back-pointers to t1 (same data), and a restored deletion without data.
    assert_eq!(
        got[1].1,
        vec![rec(1, t2, Some(b"a1"), Some(t1)), rec(2, t2, Some(b"b-rec"), Some(t1)), rec(3, t2, None, None)]
    );
    assert_eq!(blob(&mut f, 2, t1).expect("blob of t1"), b"blob one");
    assert_eq!(blob(&mut f, 2, t2).expect("blob of t2"), b"blob two");
    assert_eq!(load(&mut f, 1).expect("oid 1"), Bytes::from_static(b"a3"));
    assert!(is_pos_key(&load(&mut f, 3).expect_err("deleted")));

    // A failed vote consumes a blob restore's upload (the core forgets it), also when it fails
    // before the blob restore is replayed: its file is removed, and a later vote naming it fails.
    let t4 = f.next_tid();
    let u3 = upload(&mut f, 3, b"blob three");
    let tmp = f.dir.path().join("blobs").join("tmp");
    assert_eq!(std::fs::read_dir(&tmp).expect("tmp").count(), 1, "the upload's file");
    let bad = VoteRequest {
        tid: t4,
        status: TxnStatus::NORMAL,
        user: Bytes::new(),
        description: Bytes::new(),
        extension: Extension::default(),
        // The first restore's serial is not the transaction's tid: the vote fails there.
        ops: vec![restore(1, t3, Some(b"z"), None), restore_blob(2, t4, b"b-rec", None, u3)],
        deferred_sync: true,
    };
    let out = f.call(BackendRequest::Vote(Box::new(bad.clone())));
    assert!(matches!(out, BackendOutcome::Failed(_)), "{out:?}");
    assert_eq!(std::fs::read_dir(&tmp).expect("tmp").count(), 0, "the upload's file is removed");
    let retry = VoteRequest { ops: vec![restore_blob(2, t4, b"b-rec", None, u3)], ..bad };
    let out = f.call(BackendRequest::Vote(Box::new(retry)));
    assert!(matches!(out, BackendOutcome::Failed(_)), "the upload was dropped: {out:?}");
    f.backend.take().expect("open").close().expect("close");
}

#[test]
fn deferred_finishes_are_finished_at_once_and_durable_at_sync_or_at_the_next_live_commit() {
    let mut f = Fixture::with(false, true);
    let (t1, t2) = (f.next_tid(), f.next_tid());
    for (t, data) in [(t1, &b"one"[..]), (t2, &b"two"[..])] {
        let op = TxnOp::Restore {
            oid: Oid::new(1),
            serial: t,
            data: Some(Bytes::copy_from_slice(data)),
            prev_txn: None,
        };
        let fin = copy_txn(&mut f, &plain(t), vec![op], true);
        // No `Committed` partial: the copy goes on without waiting for the sync thread.
        assert!(matches!(fin.as_slice(), [BackendOutcome::Finished { tid, .. }] if *tid == t), "{fin:?}");
    }
    // Written and loadable, but not durable yet: iteration stops before them (their status
    // bytes are written by the next round).
    assert_eq!(load(&mut f, 1).expect("load"), Bytes::from_static(b"two"));
    assert_eq!(tids(&mut f), vec![]);
    assert_eq!(f.call(BackendRequest::Sync), BackendOutcome::Nil);
    assert_eq!(tids(&mut f), vec![t1, t2]);

    // With a blob: in place and readable at once, durable at the next round.
    let tb = f.next_tid();
    let u = upload(&mut f, 9, b"deferred blob");
    let fin = copy_txn(&mut f, &plain(tb), vec![restore_blob(9, tb, b"rec", None, u)], true);
    assert!(matches!(fin.as_slice(), [BackendOutcome::Finished { tid, .. }] if *tid == tb), "{fin:?}");
    assert_eq!(blob(&mut f, 9, tb).expect("blob"), b"deferred blob");
    assert_eq!(tids(&mut f), vec![t1, t2]);
    assert_eq!(f.call(BackendRequest::Sync), BackendOutcome::Nil);
    assert_eq!(tids(&mut f), vec![t1, t2, tb]);

    // More deferred copies, then a live commit: its `Finished` comes after a round that made
    // the copies before it durable too.
    let t3 = f.next_tid();
    let op =
        TxnOp::Restore { oid: Oid::new(2), serial: t3, data: Some(Bytes::from_static(b"x")), prev_txn: None };
    copy_txn(&mut f, &plain(t3), vec![op], true);
    assert_eq!(tids(&mut f), vec![t1, t2, tb]);
    let t4 = f.commit(vec![store(3, Tid::ZERO, b"live")]);
    assert_eq!(tids(&mut f), vec![t1, t2, tb, t3, t4]);

    // A deferred copy left unsynced at close is made durable by the close.
    let t5 = f.next_tid();
    let op =
        TxnOp::Restore { oid: Oid::new(2), serial: t5, data: Some(Bytes::from_static(b"y")), prev_txn: None };
    copy_txn(&mut f, &plain(t5), vec![op], true);
    f.reopen();
    assert_eq!(tids(&mut f), vec![t1, t2, tb, t3, t4, t5]);
    assert_eq!(blob(&mut f, 9, tb).expect("blob"), b"deferred blob");
    assert_eq!(f.call(BackendRequest::Sync), BackendOutcome::Nil, "Sync with nothing pending");
}

/// A storage with an old history and an old blob: (the data tid, the blob tid).
fn old_storage(f: &mut Fixture) -> (Tid, Tid) {
    let t1 = f.commit(vec![store(1, Tid::ZERO, b"old")]);
    let u = upload(f, 50, b"old blob");
    let t2 = f.commit(vec![TxnOp::StoreBlob {
        oid: Oid::new(5),
        serial: Tid::ZERO,
        data: Bytes::from_static(b"rec"),
        upload: u,
    }]);
    (t1, t2)
}

/// Copies a new history (different tids, another blob) into the storage being rebuilt.
fn copy_new_history(f: &mut Fixture) -> (Tid, Tid) {
    let (n1, n2) = (f.next_tid(), f.next_tid());
    copy_txn(f, &plain(n1), vec![restore(1, n1, Some(b"new"), None)], true);
    let u = upload(f, 60, b"new blob");
    copy_txn(f, &plain(n2), vec![restore_blob(6, n2, b"rec6", None, u)], true);
    assert_eq!(f.call(BackendRequest::Sync), BackendOutcome::Nil);
    (n1, n2)
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn assert_no_rebuild_files(f: &Fixture) {
    let left: Vec<String> =
        names(f.dir.path()).into_iter().filter(|n| n.contains("rebuild") || n.ends_with(".old")).collect();
    assert!(left.is_empty(), "{left:?}");
}

fn assert_serves_new_history(f: &mut Fixture, (n1, n2): (Tid, Tid), (t1, t2): (Tid, Tid)) {
    assert_eq!(tids(f), vec![n1, n2]);
    assert_eq!(load(f, 1).expect("oid 1"), Bytes::from_static(b"new"));
    assert_eq!(blob(f, 6, n2).expect("new blob"), b"new blob");
    assert!(blob(f, 5, t2).is_err(), "the old blob is gone");
    assert!(is_pos_key(&load(f, 5).expect_err("old object")));
    let old_dir = crate::storage::Layout::Bushy.oid_dir(Oid::new(5));
    assert!(!f.dir.path().join("blobs").join(old_dir).exists(), "the old blob directory is gone");
    let _ = t1;
}

#[test]
fn a_rebuild_serves_the_new_storage_and_its_commit_replaces_the_old_one_on_disk() {
    let mut f = Fixture::with(false, true);
    let old = old_storage(&mut f);
    // An upload and an iterator open at the switch are forgotten.
    let stale = upload(&mut f, 70, b"stale");
    assert_eq!(
        f.call(BackendRequest::IterStart { iter: BackendIterId(9), start: None, stop: None }),
        BackendOutcome::Nil
    );
    assert_eq!(f.call(BackendRequest::RebuildBegin), BackendOutcome::Nil);
    assert_eq!(f.call(BackendRequest::IterNext { iter: BackendIterId(9) }), BackendOutcome::Txn(None));
    assert!(matches!(
        f.call(BackendRequest::BlobUploadChunk { upload: stale, chunk: Bytes::from_static(b"x") }),
        BackendOutcome::Failed(_)
    ));
    // Every request is served by the new, empty storage (the fast load path too).
    assert_eq!(f.backend().info().last_tid, Tid::ZERO);
    assert!(is_pos_key(&load(&mut f, 1).expect_err("empty")));
    assert_eq!(tids(&mut f), vec![]);
    assert!(f.dir.path().join("Data.fs.rebuild").exists());
    assert!(f.dir.path().join("blobs.rebuild").is_dir());
    // A pack is refused while the rebuild is open.
    match f.call(BackendRequest::Pack { time: 2e9 }) {
        BackendOutcome::Failed(e) => {
            assert_eq!(e.culprit, Culprit::Backend);
            assert!(format!("{:?}", e.error).contains("rebuilt"), "{e:?}");
        }
        o => panic!("{o:?}"),
    }
    f.last = Tid::ZERO;
    let new = copy_new_history(&mut f);
    assert_eq!(f.call(BackendRequest::RebuildCommit), BackendOutcome::Nil);
    assert_serves_new_history(&mut f, new, old);
    assert_no_rebuild_files(&f);
    assert_eq!(f.backend().info().info_name, f.cfg.path.display().to_string());
    // A live commit after the rebuild, then the storage from disk.
    let t = f.commit(vec![store(1, new.0, b"after")]);
    f.reopen();
    assert_eq!(tids(&mut f), vec![new.0, new.1, t]);
    assert_eq!(load(&mut f, 1).expect("oid 1"), Bytes::from_static(b"after"));
    assert_eq!(blob(&mut f, 6, new.1).expect("new blob"), b"new blob");
    assert!(blob(&mut f, 5, old.1).is_err());
    assert_no_rebuild_files(&f);
}

#[test]
fn an_aborted_rebuild_serves_the_old_storage_again_and_a_second_begin_starts_afresh() {
    let mut f = Fixture::new(false);
    let (t1, t2) = old_storage(&mut f);
    let old_last = f.last;
    assert_eq!(f.call(BackendRequest::RebuildBegin), BackendOutcome::Nil);
    f.last = Tid::ZERO;
    let (n1, _) = copy_new_history(&mut f);
    assert_eq!(load(&mut f, 1).expect("new"), Bytes::from_static(b"new"));
    // Begin again: the half-done rebuild is discarded.
    assert_eq!(f.call(BackendRequest::RebuildBegin), BackendOutcome::Nil);
    assert_eq!(tids(&mut f), vec![]);
    f.last = Tid::ZERO;
    copy_txn(&mut f, &plain(n1), vec![restore(1, n1, Some(b"again"), None)], true);
    assert_eq!(load(&mut f, 1).expect("new"), Bytes::from_static(b"again"));
    assert_eq!(f.call(BackendRequest::RebuildAbort), BackendOutcome::Nil);
    assert_eq!(tids(&mut f), vec![t1, t2]);
    assert_eq!(load(&mut f, 1).expect("old"), Bytes::from_static(b"old"));
    assert_eq!(blob(&mut f, 5, t2).expect("old blob"), b"old blob");
    assert_no_rebuild_files(&f);
    // Abort without a rebuild does nothing; commit without one fails.
    assert_eq!(f.call(BackendRequest::RebuildAbort), BackendOutcome::Nil);
    assert!(matches!(f.call(BackendRequest::RebuildCommit), BackendOutcome::Failed(_)));
    f.last = old_last;
    f.commit(vec![store(1, t1, b"live again")]);
    f.reopen();
    assert_eq!(load(&mut f, 1).expect("old"), Bytes::from_static(b"live again"));
}

#[test]
fn an_open_discards_an_unfinished_rebuild() {
    let mut f = Fixture::new(false);
    let old = old_storage(&mut f);
    assert_eq!(f.call(BackendRequest::RebuildBegin), BackendOutcome::Nil);
    f.last = Tid::ZERO;
    copy_new_history(&mut f);
    // Closed (as a crash would leave it) in the middle of the rebuild.
    f.reopen();
    assert_no_rebuild_files(&f);
    assert_eq!(tids(&mut f), vec![old.0, old.1]);
    assert_eq!(blob(&mut f, 5, old.1).expect("old blob"), b"old blob");
}

#[test]
fn an_open_finishes_a_swap_interrupted_after_its_marker() {
    // Crash points of the swap (rebuild.rs, steps 2–5), from just after the marker to just
    // before its removal.
    for step in 0..4 {
        let mut f = Fixture::with(false, true);
        let old = old_storage(&mut f);
        assert_eq!(f.call(BackendRequest::RebuildBegin), BackendOutcome::Nil);
        f.last = Tid::ZERO;
        let new = copy_new_history(&mut f);
        f.backend.take().expect("open").close().expect("close");
        let d = f.dir.path().to_path_buf();
        std::fs::write(d.join("Data.fs.rebuild-commit"), b"").expect("marker");
        if step >= 1 {
            std::fs::rename(d.join("blobs"), d.join("blobs.old")).expect("blobs aside");
        }
        if step >= 2 {
            std::fs::rename(d.join("blobs.rebuild"), d.join("blobs")).expect("new blobs");
        }
        if step >= 3 {
            let _ = std::fs::remove_file(d.join("Data.fs.zr-index"));
            std::fs::rename(d.join("Data.fs.rebuild"), d.join("Data.fs")).expect("new Data.fs");
        }
        f.reopen();
        assert_serves_new_history(&mut f, new, old);
        assert_no_rebuild_files(&f);
        assert!(!d.join("Data.fs.rebuild-commit").exists());
    }
}
