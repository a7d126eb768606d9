//! proptest strategies for every typed message, used by the round-trip tests here and by the
//! fuzz crate (feature `arbitrary`).
//!
//! Generated values are *portable*: they survive both encodings unchanged (sequences are
//! tuples, because msgpack cannot tell a list from a tuple; ints fit in 64 bits; no pickle-only
//! globals). Map keys of "extra" entries never collide with keys the typed model parses.
#![allow(missing_docs)]

use super::error::{ConflictDetails, PosKeyDetails, StorageTxnDetails, UndoError, ZeoError};
use super::message::{ClientMessage, MsgId, ServerMessage};
use super::push::Push;
use super::reply::{
    DataRecord, HistoryEntry, Invalidations, LoadBeforeResult, RecordIternextResult, Reply, ServerStatus,
    StorageInfo, TxnHeader, UndoEntry, VoteItem,
};
use super::request::{Method, Request};
use super::types::{Extension, IterId, TxnId, TxnStatus, UndoId};
use super::value::{Text, Value};
use crate::ids::{Oid, Tid};
use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// Keeps the first entry of each key: a Python dict cannot hold a key twice, and a pickle
/// decoder folds repeated keys as Python does.
pub fn unique_keys(mut pairs: Vec<(Value, Value)>) -> Vec<(Value, Value)> {
    let mut seen: Vec<Value> = Vec::new();
    pairs.retain(|(k, _)| {
        if seen.contains(k) {
            false
        } else {
            seen.push(k.clone());
            true
        }
    });
    pairs
}

pub fn oid() -> impl Strategy<Value = Oid> {
    prop_oneof![Just(Oid::ROOT), any::<u64>().prop_map(Oid::new)]
}

pub fn tid() -> impl Strategy<Value = Tid> {
    prop_oneof![Just(Tid::ZERO), Just(Tid::MAX), any::<u64>().prop_map(Tid::new)]
}

pub fn data() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..64).prop_map(Bytes::from),
        1 => vec(any::<u8>(), 250..600).prop_map(Bytes::from),
    ]
}

pub fn text() -> impl Strategy<Value = Text> {
    prop_oneof!["[a-z0-9 ._-]{0,12}".prop_map(Text::from), any::<String>().prop_map(Text::from),]
}

/// A text that no typed map parses as a known key.
pub fn extra_key() -> impl Strategy<Value = Value> {
    "x_[a-z0-9]{0,8}".prop_map(|s| Value::Str(Text::from(s)))
}

pub fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), -1e12f64..1e12f64, (0u64..4_000_000_000).prop_map(|s| s as f64 + 0.25)]
}

pub fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| Value::Int(i128::from(i))),
        any::<u64>().prop_map(|i| Value::Int(i128::from(i))),
        any::<f64>().prop_map(Value::Float),
        data().prop_map(Value::Bytes),
        text().prop_map(Value::Str),
    ]
}

/// Any portable value, nested a few levels.
pub fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::tuple),
            vec((prop_oneof![text().prop_map(Value::Str), data().prop_map(Value::Bytes)], inner), 0..5)
                .prop_map(|m| Value::Map(unique_keys(m))),
        ]
    })
}

pub fn extension() -> impl Strategy<Value = Extension> {
    vec((text().prop_map(Value::Str), value()), 0..4).prop_map(|m| Extension(unique_keys(m)))
}

/// Extension keys merged into history/undo entries must not shadow the entry's own keys.
pub fn merged_extension() -> impl Strategy<Value = Extension> {
    vec((extra_key(), value()), 0..3).prop_map(|m| Extension(unique_keys(m)))
}

pub fn txn_id() -> impl Strategy<Value = TxnId> {
    prop_oneof![
        any::<u64>().prop_map(|i| TxnId(Value::Int(i128::from(i)))),
        any::<i64>().prop_map(|i| TxnId(Value::Int(i128::from(i)))),
        text().prop_map(|t| TxnId(Value::Str(t))),
    ]
}

pub fn status() -> impl Strategy<Value = TxnStatus> {
    prop_oneof![Just(TxnStatus::NORMAL), Just(TxnStatus::PACKED), any::<char>().prop_map(TxnStatus)]
}

fn iid() -> impl Strategy<Value = IterId> {
    any::<i64>().prop_map(IterId)
}

pub fn request() -> impl Strategy<Value = Request> {
    let a =
        prop_oneof![
            (text(), any::<bool>()).prop_map(|(storage, read_only)| Request::Register { storage, read_only }),
            Just(Request::GetInfo),
            Just(Request::LastTransaction),
            tid().prop_map(|tid| Request::GetInvalidations { tid }),
            option::of(any::<i64>()).prop_map(|n| Request::NewOids { n }),
            Just(Request::NewOid),
            (finite(), any::<bool>()).prop_map(|(time, wait)| Request::Pack { time, wait }),
            (oid(), tid()).prop_map(|(oid, before)| Request::LoadBefore { oid, before }),
            (oid(), tid(), data(), txn_id()).prop_map(|(oid, serial, data, txn)| Request::Storea {
                oid,
                serial,
                data,
                txn
            }),
            (oid(), tid(), txn_id())
                .prop_map(|(oid, serial, txn)| Request::CheckCurrentSerialInTransaction { oid, serial, txn }),
            (oid(), tid(), option::of(data()), option::of(tid()), txn_id()).prop_map(
                |(oid, serial, data, prev_txn, txn)| Request::Restorea { oid, serial, data, prev_txn, txn }
            ),
            Just(Request::StoreBlobStart),
            data().prop_map(|chunk| Request::StoreBlobChunk { chunk }),
        ];
    let b = prop_oneof![
        (oid(), tid(), data(), txn_id()).prop_map(|(oid, serial, data, txn)| Request::StoreBlobEnd {
            oid,
            serial,
            data,
            txn
        }),
        (oid(), tid(), data(), text(), txn_id()).prop_map(|(oid, serial, data, filename, txn)| {
            Request::StoreBlobShared { oid, serial, data, filename, txn }
        }),
        (oid(), tid(), txn_id()).prop_map(|(oid, serial, txn)| Request::DeleteObject { oid, serial, txn }),
        (txn_id(), data(), data(), extension(), option::of(tid()), status()).prop_map(
            |(txn, user, description, extension, tid, status)| Request::TpcBegin {
                txn,
                user,
                description,
                extension,
                tid,
                status
            }
        ),
        txn_id().prop_map(|txn| Request::Vote { txn }),
        txn_id().prop_map(|txn| Request::TpcFinish { txn }),
        txn_id().prop_map(|txn| Request::TpcAbort { txn }),
        (oid(), any::<i64>()).prop_map(|(oid, size)| Request::History { oid, size }),
        option::of(oid()).prop_map(|next| Request::RecordIternext { next }),
        (oid(), tid()).prop_map(|(oid, serial)| Request::SendBlob { oid, serial }),
        oid().prop_map(|oid| Request::GetTid { oid }),
        (oid(), tid()).prop_map(|(oid, serial)| Request::LoadSerial { oid, serial }),
    ];
    let c = prop_oneof![
        (data(), txn_id()).prop_map(|(id, txn)| Request::Undoa { undo_id: UndoId(id), txn }),
        (any::<i64>(), any::<i64>()).prop_map(|(first, last)| Request::UndoLog { first, last }),
        (
            any::<i64>(),
            any::<i64>(),
            option::of(
                vec((text().prop_map(Value::Str), value()), 0..3).prop_map(|m| Value::Map(unique_keys(m)))
            )
        )
            .prop_map(|(first, last, spec)| Request::UndoInfo { first, last, spec }),
        (option::of(tid()), option::of(tid()))
            .prop_map(|(start, stop)| Request::IteratorStart { start, stop }),
        iid().prop_map(|iid| Request::IteratorNext { iid }),
        (iid(), tid()).prop_map(|(txn_iid, tid)| Request::IteratorRecordStart { txn_iid, tid }),
        iid().prop_map(|riid| Request::IteratorRecordNext { riid }),
        vec(iid(), 0..5).prop_map(|iids| Request::IteratorGc { iids }),
        Just(Request::ServerStatus),
        text().prop_map(|label| Request::SetClientLabel { label }),
        Just(Request::Ping),
        ("[a-zA-Z_]{1,16}", vec(value(), 0..4))
            .prop_filter("a registered name", |(n, _)| Method::from_name(n).is_none() && n != ".reply")
            .prop_map(|(name, args)| Request::Unknown { name: Text::from(name), args }),
    ];
    prop_oneof![a, b, c]
}

pub fn msgid() -> impl Strategy<Value = MsgId> {
    prop_oneof![
        any::<i64>().prop_filter("heartbeat", |i| *i != -1).prop_map(MsgId::int),
        (oid(), tid()).prop_map(|(o, t)| MsgId::load_before(o, t)),
        text().prop_map(|t| MsgId(Value::Str(t))),
        Just(MsgId(Value::None)),
        any::<u64>().prop_map(|i| MsgId(Value::Int(i128::from(i)))),
    ]
}

pub fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        8 => (msgid(), request()).prop_map(|(msgid, request)| ClientMessage::Call { msgid, request }),
        4 => (msgid(), request()).prop_map(|(msgid, request)| ClientMessage::Async { msgid, request }),
        1 => Just(ClientMessage::Heartbeat),
    ]
}

pub fn storage_info() -> impl Strategy<Value = StorageInfo> {
    (
        option::of(any::<i64>()),
        option::of(any::<i64>()),
        option::of(text()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(vec((text(), text()), 0..4)),
        vec((extra_key(), value()), 0..2).prop_map(unique_keys),
    )
        .prop_map(|(length, size, name, supports_undo, supports_record_iternext, interfaces, extra)| {
            StorageInfo { length, size, name, supports_undo, supports_record_iternext, interfaces, extra }
        })
}

fn history_entry() -> impl Strategy<Value = HistoryEntry> {
    (finite(), data(), data(), tid(), any::<i64>(), merged_extension()).prop_map(
        |(time, user_name, description, tid, size, extension)| HistoryEntry {
            time,
            user_name,
            description,
            tid,
            size,
            extension,
        },
    )
}

fn undo_entry() -> impl Strategy<Value = UndoEntry> {
    (data(), finite(), data(), option::of(any::<i64>()), data(), merged_extension()).prop_map(
        |(id, time, user_name, size, description, extension)| UndoEntry {
            id: UndoId(id),
            time,
            user_name,
            size,
            description,
            extension,
        },
    )
}

fn server_status() -> impl Strategy<Value = ServerStatus> {
    (
        vec(any::<i64>(), 9),
        option::of(finite()),
        text(),
        prop_oneof![any::<bool>().prop_map(Value::Bool), Just(Value::str_static("stub"))],
        tid(),
        vec((extra_key(), value()), 0..2).prop_map(unique_keys),
    )
        .prop_map(|(n, lock_time, start, alive, last, extra)| ServerStatus {
            connections: n[0],
            loads: n[1],
            stores: n[2],
            commits: n[3],
            aborts: n[4],
            active_txns: n[5],
            lock_time,
            conflicts: n[6],
            conflicts_resolved: n[7],
            start,
            waiting: n[8],
            timeout_thread_is_alive: alive,
            last_transaction: Text::from(last.to_string()),
            extra,
        })
}

/// A typed reply and the method whose call it answers.
pub fn reply() -> impl Strategy<Value = (Method, Reply)> {
    let a = prop_oneof![
        option::of(tid()).prop_map(|t| (Method::Register, Reply::Register(t))),
        storage_info().prop_map(|i| (Method::GetInfo, Reply::GetInfo(i))),
        tid().prop_map(|t| (Method::LastTransaction, Reply::LastTransaction(t))),
        option::of((tid(), vec(oid(), 0..5)).prop_map(|(tid, oids)| Invalidations { tid, oids }))
            .prop_map(|i| (Method::GetInvalidations, Reply::GetInvalidations(i))),
        vec(oid(), 0..101).prop_map(|o| (Method::NewOids, Reply::NewOids(o))),
        option::of((data(), tid(), option::of(tid())).prop_map(|(data, start, end)| LoadBeforeResult {
            data,
            start,
            end
        }))
        .prop_map(|r| (Method::LoadBefore, Reply::LoadBefore(r))),
        data().prop_map(|d| (Method::LoadSerial, Reply::LoadSerial(d))),
        tid().prop_map(|t| (Method::GetTid, Reply::GetTid(t))),
        vec(history_entry(), 0..4).prop_map(|h| (Method::History, Reply::History(h))),
    ];
    let b = prop_oneof![
        (oid(), tid(), data(), option::of(oid())).prop_map(|(oid, tid, data, next)| (
            Method::RecordIternext,
            Reply::RecordIternext(RecordIternextResult { oid, tid, data, next })
        )),
        vec(
            prop_oneof![
                oid().prop_map(VoteItem::Oid),
                (oid(), tid(), tid(), data()).prop_map(|(oid, committed, read, data)| VoteItem::Conflict {
                    oid,
                    committed,
                    read,
                    data
                }),
            ],
            0..4
        )
        .prop_map(|v| (Method::Vote, Reply::Vote(v))),
        option::of(tid()).prop_map(|t| (Method::TpcFinish, Reply::TpcFinish(t))),
        vec(undo_entry(), 0..4).prop_map(|u| (Method::UndoLog, Reply::UndoLog(u))),
        vec(undo_entry(), 0..4).prop_map(|u| (Method::UndoInfo, Reply::UndoLog(u))),
        iid().prop_map(|i| (Method::IteratorStart, Reply::IterId(i))),
        iid().prop_map(|i| (Method::IteratorRecordStart, Reply::IterId(i))),
        option::of((tid(), status(), data(), data(), extension()).prop_map(
            |(tid, status, user, description, extension)| TxnHeader {
                tid,
                status,
                user,
                description,
                extension
            }
        ))
        .prop_map(|h| (Method::IteratorNext, Reply::IteratorNext(h))),
        option::of(
            (oid(), tid(), option::of(data()), option::of(tid()))
                .prop_map(|(oid, tid, data, data_txn)| DataRecord { oid, tid, data, data_txn })
        )
        .prop_map(|r| (Method::IteratorRecordNext, Reply::IteratorRecordNext(r))),
        server_status().prop_map(|s| (Method::ServerStatus, Reply::ServerStatus(Box::new(s)))),
        prop_oneof![Just(Method::Ping), Just(Method::TpcAbort), Just(Method::SendBlob), Just(Method::Pack)]
            .prop_map(|m| (m, Reply::Nil)),
    ];
    prop_oneof![a, b]
}

fn conflict_details() -> impl Strategy<Value = ConflictDetails> {
    (
        text(),
        option::of(oid()),
        option::of(text()),
        option::of((tid(), tid())),
        vec((extra_key(), value()), 0..2).prop_map(unique_keys),
    )
        .prop_map(|(message, oid, class_name, serials, extra)| ConflictDetails {
            message,
            oid,
            class_name,
            serials,
            extra,
        })
}

fn undo_error() -> impl Strategy<Value = UndoError> {
    (text(), option::of(oid())).prop_map(|(reason, oid)| UndoError { reason, oid })
}

pub fn zeo_error() -> impl Strategy<Value = ZeoError> {
    prop_oneof![
        conflict_details().prop_map(ZeoError::Conflict),
        conflict_details().prop_map(ZeoError::ReadConflict),
        (any::<i64>(), any::<i64>(), any::<i64>(), any::<i64>())
            .prop_map(|(p1, p2, p3, reason)| ZeoError::BTreesConflict { p1, p2, p3, reason }),
        oid().prop_map(ZeoError::pos_key),
        (text(), oid(), tid()).prop_map(|(message, oid, serial)| ZeoError::PosKey(PosKeyDetails::Blob {
            message,
            oid,
            serial
        })),
        Just(ZeoError::ReadOnly),
        (option::of(txn_id()), txn_id()).prop_map(|(current, given)| ZeoError::StorageTransaction(
            StorageTxnDetails::Mismatch { current, given }
        )),
        text().prop_map(|m| ZeoError::StorageTransaction(StorageTxnDetails::Message(m))),
        undo_error().prop_map(ZeoError::Undo),
        vec((oid(), undo_error()), 1..4).prop_map(ZeoError::MultipleUndo),
        text().prop_map(ZeoError::ValueError),
        value().prop_map(ZeoError::KeyError),
        text().prop_map(ZeoError::TypeError),
        text().prop_map(ZeoError::AttributeError),
        text().prop_map(ZeoError::AssertionError),
        text().prop_map(ZeoError::Exception),
        ("[a-z]{1,8}\\.[A-Z][a-z]{1,8}", value())
            .prop_map(|(c, payload)| ZeoError::Other { class_path: Text::from(c), payload }),
    ]
}

pub fn push() -> impl Strategy<Value = Push> {
    prop_oneof![
        (tid(), vec(oid(), 0..6)).prop_map(|(tid, oids)| Push::InvalidateTransaction { tid, oids }),
        storage_info().prop_map(Push::Info),
        (oid(), tid()).prop_map(|(oid, serial)| Push::ReceiveBlobStart { oid, serial }),
        (oid(), tid(), data()).prop_map(|(oid, serial, chunk)| Push::ReceiveBlobChunk { oid, serial, chunk }),
        (oid(), tid()).prop_map(|(oid, serial)| Push::ReceiveBlobStop { oid, serial }),
        ("[a-z][a-zA-Z]{0,12}", vec(value(), 0..3))
            .prop_filter("a known push", |(n, _)| {
                !matches!(
                    n.as_str(),
                    "invalidateTransaction"
                        | "info"
                        | "receiveBlobStart"
                        | "receiveBlobChunk"
                        | "receiveBlobStop"
                )
            })
            .prop_map(|(name, args)| Push::Unknown { name: Text::from(name), args }),
    ]
}

/// A server message; replies carry the method they answer so the test can type them back.
pub fn server_message() -> impl Strategy<Value = (Option<Method>, ServerMessage)> {
    prop_oneof![
        (msgid(), reply()).prop_map(|(msgid, (m, r))| (Some(m), ServerMessage::reply(msgid, &r))),
        (msgid(), zeo_error()).prop_map(|(msgid, error)| (None, ServerMessage::Error { msgid, error })),
        push().prop_map(|p| (None, ServerMessage::Push(p))),
    ]
}
