//! Backend failures as the front sees them.

use bytes::Bytes;

use crate::ids::{Oid, Tid};
use crate::wire::error::ZeoError;
use crate::wire::request::Request;
use crate::wire::value::{Text, Value};
use crate::wire::Encoding;
use crate::zeo::backend::{BackendError, BackendOutcome, BackendRequest, Culprit};

use super::harness::{begin, config, store, txn, Harness};

fn failed(msg: &'static str) -> BackendOutcome {
    BackendOutcome::Failed(BackendError {
        error: ZeoError::Exception(Text::from_static(msg)),
        culprit: Culprit::Backend,
    })
}

#[test]
fn a_failed_blob_upload_closes_the_connection() {
    let mut h = Harness::new(config());
    h.client(1, Encoding::Pickle);
    h.auto = false;
    h.cast(1, Request::StoreBlobStart);
    h.cast(1, Request::StoreBlobChunk { chunk: Bytes::from_static(b"x") });
    h.answer_where(|r| matches!(r, BackendRequest::BlobUploadStart { .. }), failed("disk full"));
    assert!(h.closed(1));
    h.deliver_all();
    assert_eq!(h.backends[0].open_handles(), (0, 0), "the upload is dropped");
}

#[test]
fn a_failed_finish_answers_an_error_and_releases_the_lock() {
    let mut h = Harness::new(config());
    h.client(1, Encoding::Msgpack);
    h.client(2, Encoding::Msgpack);
    h.auto = false;
    for c in [1u64, 2] {
        h.cast(c, begin(c as i64));
        h.cast(c, store(Oid::new(c), Tid::ZERO, b"x", c as i64));
        h.call(c, 5, Request::Vote { txn: txn(c as i64) });
    }
    h.deliver_where(|r| matches!(r, BackendRequest::Vote(_)));
    h.call(1, 6, Request::TpcFinish { txn: txn(1) });
    h.answer_where(|r| matches!(r, BackendRequest::Finish { .. }), failed("fsync failed"));
    let got = h.take(1);
    assert_eq!(Harness::result_of(&got, 6), Err(ZeoError::Exception(Text::from_static("fsync failed"))));
    assert!(super::harness::invalidations(&h.take(2)).is_empty());
    // The next voter runs; the failed commit's transaction is gone (abort is a no-op).
    assert!(h.inflight.iter().any(|(_, _, r)| matches!(r, BackendRequest::Vote(_))));
    h.call(1, 7, Request::TpcAbort { txn: txn(1) });
    assert_eq!(Harness::result_of(&h.take(1), 7), Ok(Value::None));
}

#[test]
fn a_failed_read_is_the_error_reply_in_its_slot() {
    let mut h = Harness::new(config());
    h.client(1, Encoding::Pickle);
    h.call(1, 2, Request::LoadBefore { oid: Oid::new(7), before: Tid::MAX });
    h.call(1, 3, Request::History { oid: Oid::new(7), size: 0 });
    let got = h.take(1);
    assert!(matches!(Harness::result_of(&got, 2), Err(ZeoError::PosKey(_))));
    assert!(matches!(Harness::result_of(&got, 3), Err(ZeoError::PosKey(_))));
}
