//! The local backend's write sequence: vote (replaying a transaction's operations in stock ZEO's
//! order, conflicts found before anything is written), finish, abort; run on the writer thread.

use super::*;

pub(super) fn vote<D: StorageDir>(
    s: &Shared<D>,
    st: &St<D>,
    voted: &mut Option<Voted>,
    v: VoteRequest,
) -> BackendOutcome {
    if let Some(Voted { tid: t, .. }) = voted.take() {
        // The core never votes over an open transaction; recover by aborting it.
        tracing::warn!(storage = %s.name, tid = %t, "vote while {t} was still open: aborting it");
        let _ = st.abort();
    }
    // Conflicts are found before anything is written, so that a vote that answers conflicts
    // leaves the blob uploads in place for the re-vote (§6.6.2).
    let conflicts = precheck_conflicts(st, &v.ops);
    if !conflicts.is_empty() {
        return BackendOutcome::Conflicts(conflicts);
    }
    let meta = match TxnMeta::new(v.user.clone(), v.description.clone(), &v.extension) {
        Ok(m) => m,
        Err(e) => {
            drop_uploads(s, st, &v.ops);
            return failed(e);
        }
    };
    if let Err(e) = st.begin(meta, BeginTid::Exactly(v.tid), v.status) {
        drop_uploads(s, st, &v.ops);
        return failed(e);
    }
    if v.deferred_sync {
        if let Err(e) = st.defer_sync() {
            let _ = st.abort();
            drop_uploads(s, st, &v.ops);
            return failed(e);
        }
    }
    match replay(s, st, &v.ops) {
        Ok(Replayed::Conflicts(items)) => {
            let _ = st.abort();
            BackendOutcome::Conflicts(items)
        }
        Ok(Replayed::Done { changed, invalidated }) => match st.vote() {
            Ok(()) => {
                *voted = Some(Voted { tid: v.tid, deferred: v.deferred_sync });
                BackendOutcome::Voted { changed, invalidated }
            }
            Err(e) => {
                let _ = st.abort();
                drop_uploads(s, st, &v.ops);
                failed(e)
            }
        },
        Err(e) => {
            let _ = st.abort();
            drop_uploads(s, st, &v.ops);
            failed(e)
        }
    }
}

/// The stores that conflict with the committed state, after later stores of the same object
/// in the transaction are taken into account (a re-store with the committed serial resolves).
pub(super) fn precheck_conflicts<D: StorageDir>(st: &St<D>, ops: &[TxnOp]) -> Vec<VoteItem> {
    let mut pending: BTreeMap<Oid, VoteItem> = BTreeMap::new();
    for op in ops {
        let (oid, serial, data) = match op {
            TxnOp::Store { oid, serial, data } | TxnOp::StoreBlob { oid, serial, data, .. } => {
                (*oid, *serial, data)
            }
            _ => continue,
        };
        match st.get_tid(oid) {
            Ok(current) if current != serial => {
                pending.insert(
                    oid,
                    VoteItem::Conflict { oid, committed: current, read: serial, data: data.clone() },
                );
            }
            _ => {
                pending.remove(&oid);
            }
        }
    }
    pending.into_values().collect()
}

pub(super) enum Replayed {
    Done { changed: Vec<Oid>, invalidated: Vec<Oid> },
    Conflicts(Vec<VoteItem>),
}

pub(super) fn replay<D: StorageDir>(
    s: &Shared<D>,
    st: &St<D>,
    ops: &[TxnOp],
) -> Result<Replayed, StorageError> {
    let mut conflicts: BTreeMap<Oid, VoteItem> = BTreeMap::new();
    let mut changed: Vec<Oid> = Vec::new();
    let mut invalidated: Vec<Oid> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut note = |oid: Oid, inv: &mut Vec<Oid>| {
        if seen.insert(oid) {
            inv.push(oid);
        }
    };
    for op in zeoraid_core::zeo::backend::zeo_apply_order(ops) {
        match op {
            TxnOp::Store { oid, serial, data } => match st.store(*oid, *serial, data) {
                Ok(()) => {
                    conflicts.remove(oid);
                    note(*oid, &mut invalidated);
                }
                Err(StorageError::Conflict { oid, committed, read }) => {
                    conflicts.insert(oid, VoteItem::Conflict { oid, committed, read, data: data.clone() });
                }
                Err(e) => return Err(e),
            },
            TxnOp::StoreBlob { oid, serial, data, upload } => {
                let Some(u) = lock(&s.uploads).remove(upload) else {
                    return Err(StorageError::UnknownUpload(upload.0));
                };
                match st.store_blob(*oid, *serial, data, u) {
                    Ok(()) => {
                        conflicts.remove(oid);
                        note(*oid, &mut invalidated);
                    }
                    Err(StorageError::Conflict { oid, committed, read }) => {
                        conflicts
                            .insert(oid, VoteItem::Conflict { oid, committed, read, data: data.clone() });
                    }
                    Err(e) => return Err(e),
                }
            }
            TxnOp::CheckCurrent { oid, serial } => st.check_current_serial(*oid, *serial)?,
            TxnOp::Delete { oid, serial } => {
                st.delete(*oid, *serial)?;
                note(*oid, &mut invalidated);
            }
            TxnOp::Restore { oid, serial, data, prev_txn } => {
                st.restore(*oid, *serial, data.as_deref(), *prev_txn)?;
                note(*oid, &mut invalidated);
            }
            TxnOp::RestoreBlob { oid, serial, data, prev_txn, upload, .. } => {
                let Some(u) = lock(&s.uploads).remove(upload) else {
                    return Err(StorageError::UnknownUpload(upload.0));
                };
                st.restore_blob(*oid, *serial, data, *prev_txn, u)?;
                note(*oid, &mut invalidated);
            }
            TxnOp::Undo { undo_id } => {
                for oid in st.undo(&undo_id.0)? {
                    if !changed.contains(&oid) {
                        changed.push(oid);
                    }
                    note(oid, &mut invalidated);
                }
            }
        }
    }
    if conflicts.is_empty() {
        Ok(Replayed::Done { changed, invalidated })
    } else {
        Ok(Replayed::Conflicts(conflicts.into_values().collect()))
    }
}

/// Discards the uploads a failed vote named, blob stores' and blob restores' (the core forgets
/// the transaction). Uploads the replay already consumed are no longer in the map: the engine's
/// abort removed their staged files.
pub(super) fn drop_uploads<D: StorageDir>(s: &Shared<D>, st: &St<D>, ops: &[TxnOp]) {
    let mut m = lock(&s.uploads);
    for op in ops {
        if let TxnOp::StoreBlob { upload, .. } | TxnOp::RestoreBlob { upload, .. } = op {
            if let Some(u) = m.remove(upload) {
                let _ = st.abandon_upload(u);
            }
        }
    }
}

/// `Finish`: `Finished` when durable (or when the vote asked for a deferred sync), else
/// `Committed` (the sync thread answers `Finished`).
pub(super) fn finish<D: StorageDir>(
    s: &Shared<D>,
    st: &St<D>,
    voted: &mut Option<Voted>,
    tid: Tid,
) -> BackendOutcome {
    let deferred = match *voted {
        Some(v) if v.tid == tid => v.deferred,
        _ => {
            let open = voted.map(|v| v.tid);
            return backend_fault(format!("finish of {tid}, but the voted transaction is {open:?}"));
        }
    };
    *voted = None;
    match st.finish_deferred() {
        Ok(t) if deferred || st.durable_tid() >= t => BackendOutcome::Finished { tid: t, size: size_of(st) },
        Ok(t) => BackendOutcome::Committed { tid: t },
        Err(e) => {
            tracing::warn!(storage = %s.name, %tid, error = %e, "finish failed");
            let _ = st.abort();
            failed(e)
        }
    }
}

pub(super) fn abort<D: StorageDir>(st: &St<D>, voted: &mut Option<Voted>, tid: Tid) -> BackendOutcome {
    if voted.is_some_and(|v| v.tid == tid) {
        *voted = None;
        if let Err(e) = st.abort() {
            return failed(e);
        }
    }
    BackendOutcome::Nil
}
