//! `IterNextWhole`: a transaction and all its records, as a chain of ZEO calls answered as one
//! outcome.
//!
//! ```text
//!  iterator_next(iid) ──None──▶ answered WholeTxn(None) (the server freed the iterator)
//!        │ header
//!        ▼
//!  iterator_record_start(iid, tid) ──riid──▶ iterator_record_next(riid) ─┐ record: kept,
//!                                                  ▲                     │ next call
//!                                                  └─────────────────────┘
//!                                                  None: answered WholeTxn(Some(txn))
//! ```
//! One call of the chain is in flight at a time (the record calls are not pipelined). An error
//! reply fails the request with the error's class; a record iterator left open on the server by
//! a failure is released with `iterator_gc`.

use super::{ClientError, Expect, ZeoClient};
use crate::wire::reply::Reply;
use crate::wire::request::Request;
use crate::wire::types::IterId;
use crate::zeo::backend::{BackendIterId, BackendOutcome, BackendReqId, BackendRequest, WholeTxn};

/// Where an `IterNextWhole` chain is.
#[derive(Debug, Clone)]
pub(super) enum WholeStep {
    /// `iterator_next(iid)` sent.
    Next {
        /// The transaction iterator on the server.
        iid: IterId,
    },
    /// `iterator_record_start` sent for this transaction.
    RecStart(Box<WholeTxn>),
    /// `iterator_record_next(riid)` sent; the records so far are in the transaction.
    Records {
        /// The record iterator on the server.
        riid: IterId,
        /// The transaction read so far.
        txn: Box<WholeTxn>,
    },
}

impl ZeoClient {
    /// Starts the chain for `IterNextWhole { iter }` (the client is `Ready`).
    pub(super) fn start_whole(&mut self, id: BackendReqId, iter: BackendIterId) -> Result<(), ClientError> {
        if let Some(iid) = self.iter_or_wait(id, iter, &BackendRequest::IterNextWhole { iter }) {
            self.call(
                Request::IteratorNext { iid },
                Expect::Whole { id, iter, step: WholeStep::Next { iid } },
            )?;
        }
        Ok(())
    }

    /// A reply to a call of the chain.
    pub(super) fn on_whole_reply(
        &mut self,
        id: BackendReqId,
        iter: BackendIterId,
        step: WholeStep,
        reply: Result<Reply, crate::wire::error::ZeoError>,
    ) -> Result<(), ClientError> {
        match (step, reply) {
            (WholeStep::Next { .. }, Ok(Reply::IteratorNext(None))) => {
                self.iters.remove(&iter); // the server freed it
                self.answer(id, BackendOutcome::WholeTxn(None));
            }
            (WholeStep::Next { iid }, Ok(Reply::IteratorNext(Some(header)))) => {
                let tid = header.tid;
                let txn = Box::new(WholeTxn { header, records: Vec::new() });
                self.call(
                    Request::IteratorRecordStart { txn_iid: iid, tid },
                    Expect::Whole { id, iter, step: WholeStep::RecStart(txn) },
                )?;
            }
            (WholeStep::RecStart(txn), Ok(Reply::IterId(riid))) => {
                self.call(
                    Request::IteratorRecordNext { riid },
                    Expect::Whole { id, iter, step: WholeStep::Records { riid, txn } },
                )?;
            }
            (WholeStep::Records { txn, .. }, Ok(Reply::IteratorRecordNext(None))) => {
                self.answer(id, BackendOutcome::WholeTxn(Some(txn)));
            }
            (WholeStep::Records { riid, mut txn }, Ok(Reply::IteratorRecordNext(Some(r)))) => {
                txn.records.push(r);
                self.call(
                    Request::IteratorRecordNext { riid },
                    Expect::Whole { id, iter, step: WholeStep::Records { riid, txn } },
                )?;
            }
            (step, Err(e)) => {
                if let WholeStep::Records { riid, .. } = step {
                    self.cast(Request::IteratorGc { iids: vec![riid] })?;
                }
                self.answer(id, super::replies::failed(e));
            }
            (step, Ok(other)) => {
                return Err(super::replies::unexpected(&format!("iterator_next_whole at {step:?}"), &other));
            }
        }
        Ok(())
    }
}
