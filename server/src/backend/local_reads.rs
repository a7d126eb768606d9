//! The local backend's reads: loads, history, iterators (transaction, record, whole-transaction),
//! undo log, blobs, pack; run on the read threads against the storage that serves.

use super::*;

/// Answers a read (or any request routed to the readers); `SendBlob` streams its chunks here.
pub(super) fn read<D: StorageDir>(
    s: &Shared<D>,
    st: &St<D>,
    id: BackendReqId,
    req: BackendRequest,
) -> BackendOutcome {
    let r = match req {
        BackendRequest::LoadBefore { oid, before, snapshot } => load_before(st, oid, before, snapshot),
        BackendRequest::LoadSerial { oid, serial } => st.load_serial(oid, serial).map(BackendOutcome::Data),
        BackendRequest::GetTid { oid, snapshot } => match load_before(st, oid, Tid::MAX, snapshot) {
            Ok(BackendOutcome::LoadBefore(Some(r))) => Ok(BackendOutcome::Tid(r.start)),
            Ok(_) => Err(StorageError::PosKey { oid }),
            Err(e) => Err(e),
        },
        BackendRequest::History { oid, size } => st.history(oid, size.max(1)).map(BackendOutcome::History),
        BackendRequest::RecordIternext { next } => match st.record_iternext(next) {
            Ok(Some(r)) => Ok(BackendOutcome::RecordIternext(r)),
            // An empty storage: FileStorage raises POSKeyError(z64) too.
            Ok(None) => Err(StorageError::PosKey { oid: next.unwrap_or(Oid::ROOT) }),
            Err(e) => Err(e),
        },
        BackendRequest::NewOids { n } => st.new_oids(n.clamp(1, 100)).map(BackendOutcome::NewOids),
        BackendRequest::UndoLog { first, last } => st.undo_log(first, last).map(BackendOutcome::UndoLog),
        BackendRequest::UndoInfo { first, last, spec } => {
            st.undo_info(first, last, |e| spec_matches(spec.as_ref(), e)).map(BackendOutcome::UndoLog)
        }
        BackendRequest::IterStart { iter, start, stop } => st.txn_cursor(start, stop).map(|cursor| {
            lock(&s.iters).insert(iter, Arc::new(Mutex::new(IterState::Txns { cursor, last: None })));
            BackendOutcome::Nil
        }),
        BackendRequest::IterNext { iter } => iter_next(s, st, iter),
        BackendRequest::IterNextWhole { iter } => iter_next_whole(s, st, iter),
        BackendRequest::IterRecordStart { iter, txn_iter, tid } => iter_record_start(s, iter, txn_iter, tid),
        BackendRequest::IterRecordNext { iter } => iter_record_next(s, st, iter),
        BackendRequest::IterDrop { iters } => {
            let mut m = lock(&s.iters);
            for i in iters {
                m.remove(&i);
            }
            Ok(BackendOutcome::Nil)
        }
        BackendRequest::SendBlob { oid, serial } => send_blob(s, st, id, oid, serial),
        // Routed elsewhere by `submit`; answered here only if a caller mixes queues up.
        other => {
            return backend_fault(format!("request {other:?} sent to the wrong queue"));
        }
    };
    r.unwrap_or_else(failed)
}

/// `loadBefore` as of `snapshot`: the newest revision with `start < min(before, snapshot + 1)`,
/// its `end` hidden when it is after the snapshot.
pub(super) fn load_before<D: StorageDir>(
    st: &St<D>,
    oid: Oid,
    before: Tid,
    snapshot: Tid,
) -> Result<BackendOutcome, StorageError> {
    let limit = snapshot.checked_next().map_or(before, |n| n.min(before));
    let mut r = st.load_before(oid, limit)?;
    if let Some(r) = &mut r {
        if r.end.is_some_and(|e| e > snapshot) {
            r.end = None;
        }
    }
    Ok(BackendOutcome::LoadBefore(r))
}

/// Whether an undo entry has every item of the `undoInfo` spec (a map; anything else matches
/// everything, as Python's `undoInfo` ignores a non-dict spec only by failing — we are lenient).
pub(super) fn spec_matches(spec: Option<&Value>, e: &zeoraid_core::wire::reply::UndoEntry) -> bool {
    let Some(Value::Map(items)) = spec else { return true };
    let v = e.to_value();
    let Value::Map(have) = &v else { return items.is_empty() };
    items.iter().all(|(k, want)| have.iter().any(|(hk, hv)| hk == k && hv == want))
}

pub(super) fn iter_state<D: StorageDir>(s: &Shared<D>, iter: BackendIterId) -> Option<Arc<Mutex<IterState>>> {
    lock(&s.iters).get(&iter).cloned()
}

pub(super) fn iter_next<D: StorageDir>(
    s: &Shared<D>,
    st: &St<D>,
    iter: BackendIterId,
) -> Result<BackendOutcome, StorageError> {
    let Some(state) = iter_state(s, iter) else { return Ok(BackendOutcome::Txn(None)) };
    let mut state = lock(&state);
    let IterState::Txns { cursor, last } = &mut *state else { return Ok(BackendOutcome::Txn(None)) };
    match st.next_txn(cursor)? {
        Some(t) => {
            let header = t.header.clone();
            *last = Some(t);
            Ok(BackendOutcome::Txn(Some(header)))
        }
        None => {
            drop(state);
            lock(&s.iters).remove(&iter);
            Ok(BackendOutcome::Txn(None))
        }
    }
}

/// `IterNextWhole`: the next transaction and all its records, read in one job with the
/// engine's cursors; an unknown iterator is at its end, as for `IterNext`.
pub(super) fn iter_next_whole<D: StorageDir>(
    s: &Shared<D>,
    st: &St<D>,
    iter: BackendIterId,
) -> Result<BackendOutcome, StorageError> {
    let Some(state) = iter_state(s, iter) else { return Ok(BackendOutcome::WholeTxn(None)) };
    let mut state = lock(&state);
    let IterState::Txns { cursor, last } = &mut *state else { return Ok(BackendOutcome::WholeTxn(None)) };
    match st.next_txn(cursor)? {
        Some(t) => {
            let mut records = Vec::new();
            let mut rc = t.records();
            while let Some(r) = st.next_record(&mut rc)? {
                records.push(r);
            }
            let header = t.header.clone();
            *last = Some(t);
            Ok(BackendOutcome::WholeTxn(Some(Box::new(WholeTxn { header, records }))))
        }
        None => {
            drop(state);
            lock(&s.iters).remove(&iter);
            Ok(BackendOutcome::WholeTxn(None))
        }
    }
}

pub(super) fn iter_record_start<D: StorageDir>(
    s: &Shared<D>,
    iter: BackendIterId,
    txn_iter: BackendIterId,
    tid: Tid,
) -> Result<BackendOutcome, StorageError> {
    let cursor = iter_state(s, txn_iter).and_then(|state| match &*lock(&state) {
        IterState::Txns { last: Some(t), .. } if t.header.tid == tid => Some(t.records()),
        _ => None,
    });
    let Some(cursor) = cursor else {
        return Ok(client_error(ZeoError::Exception(Text::from(format!(
            "Out-of-order request for record iterator for transaction {tid}"
        )))));
    };
    lock(&s.iters).insert(iter, Arc::new(Mutex::new(IterState::Records(cursor))));
    Ok(BackendOutcome::Nil)
}

pub(super) fn iter_record_next<D: StorageDir>(
    s: &Shared<D>,
    st: &St<D>,
    iter: BackendIterId,
) -> Result<BackendOutcome, StorageError> {
    let Some(state) = iter_state(s, iter) else { return Ok(BackendOutcome::Record(None)) };
    let mut state = lock(&state);
    let IterState::Records(cursor) = &mut *state else { return Ok(BackendOutcome::Record(None)) };
    match st.next_record(cursor)? {
        Some(r) => Ok(BackendOutcome::Record(Some(r))),
        None => {
            drop(state);
            lock(&s.iters).remove(&iter);
            Ok(BackendOutcome::Record(None))
        }
    }
}

pub(super) fn send_blob<D: StorageDir>(
    s: &Shared<D>,
    st: &St<D>,
    id: BackendReqId,
    oid: Oid,
    serial: Tid,
) -> Result<BackendOutcome, StorageError> {
    let reader = st.open_blob(oid, serial)?;
    for chunk in reader.chunks(BLOB_CHUNK) {
        (s.sink)(id, BackendOutcome::BlobChunk(chunk?));
    }
    Ok(BackendOutcome::Nil)
}

pub(super) fn pack<D: StorageDir>(s: &Shared<D>, st: &St<D>, time: f64) -> BackendOutcome {
    if !time.is_finite() || time < 0.0 {
        return client_error(ZeoError::ValueError(Text::from(format!("invalid pack time {time}"))));
    }
    let secs = time.trunc();
    let nanos = ((time - secs) * 1e9) as u32;
    let Some(t) = Tid::from_unix(secs as u64, nanos.min(999_999_999)) else {
        return client_error(ZeoError::ValueError(Text::from(format!("pack time {time} out of range"))));
    };
    match st.pack(t) {
        Ok(report) => {
            tracing::info!(storage = %s.name, ?report.outcome, bytes_before = report.bytes_before,
                bytes_after = report.bytes_after, "pack done");
            BackendOutcome::Packed { size: size_of(st) }
        }
        Err(e) => failed(e),
    }
}
