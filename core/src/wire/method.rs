//! The names of the methods a ZEO 5/6 server registers, and what the stock client does with
//! each (sync or async).

/// The methods a ZEO 5/6 server registers (§4.1), by wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(missing_docs)] // each variant is the method of the same name
pub enum Method {
    Register,
    GetInfo,
    LastTransaction,
    GetInvalidations,
    NewOids,
    NewOid,
    Pack,
    LoadBefore,
    Storea,
    CheckCurrentSerialInTransaction,
    Restorea,
    StoreBlobStart,
    StoreBlobChunk,
    StoreBlobEnd,
    StoreBlobShared,
    DeleteObject,
    TpcBegin,
    Vote,
    TpcFinish,
    TpcAbort,
    History,
    RecordIternext,
    SendBlob,
    GetTid,
    LoadSerial,
    Undoa,
    UndoLog,
    UndoInfo,
    IteratorStart,
    IteratorNext,
    IteratorRecordStart,
    IteratorRecordNext,
    IteratorGc,
    ServerStatus,
    SetClientLabel,
    Ping,
}

impl Method {
    /// Every method, in the order of the stock `registered_methods`.
    pub const ALL: [Method; 36] = [
        Method::Register,
        Method::GetInfo,
        Method::LastTransaction,
        Method::GetInvalidations,
        Method::NewOids,
        Method::NewOid,
        Method::Pack,
        Method::LoadBefore,
        Method::Storea,
        Method::CheckCurrentSerialInTransaction,
        Method::Restorea,
        Method::StoreBlobStart,
        Method::StoreBlobChunk,
        Method::StoreBlobEnd,
        Method::StoreBlobShared,
        Method::DeleteObject,
        Method::TpcBegin,
        Method::Vote,
        Method::TpcFinish,
        Method::TpcAbort,
        Method::History,
        Method::RecordIternext,
        Method::SendBlob,
        Method::GetTid,
        Method::LoadSerial,
        Method::Undoa,
        Method::UndoLog,
        Method::UndoInfo,
        Method::IteratorStart,
        Method::IteratorNext,
        Method::IteratorRecordStart,
        Method::IteratorRecordNext,
        Method::IteratorGc,
        Method::ServerStatus,
        Method::SetClientLabel,
        Method::Ping,
    ];

    /// The wire name.
    pub const fn name(self) -> &'static str {
        match self {
            Method::Register => "register",
            Method::GetInfo => "get_info",
            Method::LastTransaction => "lastTransaction",
            Method::GetInvalidations => "getInvalidations",
            Method::NewOids => "new_oids",
            Method::NewOid => "new_oid",
            Method::Pack => "pack",
            Method::LoadBefore => "loadBefore",
            Method::Storea => "storea",
            Method::CheckCurrentSerialInTransaction => "checkCurrentSerialInTransaction",
            Method::Restorea => "restorea",
            Method::StoreBlobStart => "storeBlobStart",
            Method::StoreBlobChunk => "storeBlobChunk",
            Method::StoreBlobEnd => "storeBlobEnd",
            Method::StoreBlobShared => "storeBlobShared",
            Method::DeleteObject => "deleteObject",
            Method::TpcBegin => "tpc_begin",
            Method::Vote => "vote",
            Method::TpcFinish => "tpc_finish",
            Method::TpcAbort => "tpc_abort",
            Method::History => "history",
            Method::RecordIternext => "record_iternext",
            Method::SendBlob => "sendBlob",
            Method::GetTid => "getTid",
            Method::LoadSerial => "loadSerial",
            Method::Undoa => "undoa",
            Method::UndoLog => "undoLog",
            Method::UndoInfo => "undoInfo",
            Method::IteratorStart => "iterator_start",
            Method::IteratorNext => "iterator_next",
            Method::IteratorRecordStart => "iterator_record_start",
            Method::IteratorRecordNext => "iterator_record_next",
            Method::IteratorGc => "iterator_gc",
            Method::ServerStatus => "server_status",
            Method::SetClientLabel => "set_client_label",
            Method::Ping => "ping",
        }
    }

    /// The method with this wire name, if the server registers one.
    pub fn from_name(name: &str) -> Option<Method> {
        Method::from_wire_name(name.as_bytes())
    }

    /// [`Method::from_name`] on the name's bytes, as they come off the wire.
    pub fn from_wire_name(name: &[u8]) -> Option<Method> {
        Some(match name {
            b"register" => Method::Register,
            b"get_info" => Method::GetInfo,
            b"lastTransaction" => Method::LastTransaction,
            b"getInvalidations" => Method::GetInvalidations,
            b"new_oids" => Method::NewOids,
            b"new_oid" => Method::NewOid,
            b"pack" => Method::Pack,
            b"loadBefore" => Method::LoadBefore,
            b"storea" => Method::Storea,
            b"checkCurrentSerialInTransaction" => Method::CheckCurrentSerialInTransaction,
            b"restorea" => Method::Restorea,
            b"storeBlobStart" => Method::StoreBlobStart,
            b"storeBlobChunk" => Method::StoreBlobChunk,
            b"storeBlobEnd" => Method::StoreBlobEnd,
            b"storeBlobShared" => Method::StoreBlobShared,
            b"deleteObject" => Method::DeleteObject,
            b"tpc_begin" => Method::TpcBegin,
            b"vote" => Method::Vote,
            b"tpc_finish" => Method::TpcFinish,
            b"tpc_abort" => Method::TpcAbort,
            b"history" => Method::History,
            b"record_iternext" => Method::RecordIternext,
            b"sendBlob" => Method::SendBlob,
            b"getTid" => Method::GetTid,
            b"loadSerial" => Method::LoadSerial,
            b"undoa" => Method::Undoa,
            b"undoLog" => Method::UndoLog,
            b"undoInfo" => Method::UndoInfo,
            b"iterator_start" => Method::IteratorStart,
            b"iterator_next" => Method::IteratorNext,
            b"iterator_record_start" => Method::IteratorRecordStart,
            b"iterator_record_next" => Method::IteratorRecordNext,
            b"iterator_gc" => Method::IteratorGc,
            b"server_status" => Method::ServerStatus,
            b"set_client_label" => Method::SetClientLabel,
            b"ping" => Method::Ping,
            _ => return None,
        })
    }

    /// Whether the stock client sends it as an asynchronous call (no reply).
    pub const fn is_async(self) -> bool {
        matches!(
            self,
            Method::SetClientLabel
                | Method::TpcBegin
                | Method::Storea
                | Method::CheckCurrentSerialInTransaction
                | Method::DeleteObject
                | Method::Restorea
                | Method::Undoa
                | Method::StoreBlobStart
                | Method::StoreBlobChunk
                | Method::StoreBlobEnd
                | Method::StoreBlobShared
                | Method::IteratorGc
        )
    }
}
