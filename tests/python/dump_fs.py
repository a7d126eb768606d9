"""Describe everything a FileStorage answers, as one canonical JSON document.

usage: dump_fs.py PATH [--blobs DIR]

Opens PATH read-only with ZODB's FileStorage (using PATH.index when it is there and sane, as
FileStorage always does) and prints the document below on stdout. zeoraid's own storage engine
produces the same document from the same file, so that the two can be compared as parsed JSON
values (not as text). Nothing is written to PATH, PATH.index or the blob directory.

Schema "zeoraid-fsdump/1" (every key shown is always present):

  TID, OID   16 lowercase hex digits (the 8 raw bytes)
  HEX        lowercase hex of raw bytes ("" for none)
  DATA       {"sha256": HEX (64 digits), "len": int}             -- a data record's pickle
  ERROR      {"error": "POSKeyError"}                             -- the call raised POSKeyError
  VALUE      a decoded pickle value, tagged so that str and bytes stay apart:
               None -> null, bool -> true/false, int -> JSON number,
               float -> {"float": number}, str -> {"str": string}, bytes -> {"bytes": HEX},
               list -> {"list": [VALUE]}, tuple -> {"tuple": [VALUE]},
               dict -> {"dict": [[VALUE, VALUE], ...]} sorted by the key's canonical JSON,
               anything else -> {"repr": string}
  EXT        a JSON object: each str key maps to the VALUE of its value; a key that is not a str
             (never written by ZODB >= 5) is written as "!" + canonical JSON of its VALUE

  {
   "format": "zeoraid-fsdump/1",
   "last_transaction": TID,              storage.lastTransaction()
   "len": int,                           len(storage): oids in the index, deleted ones included
   "size": int,                          storage.getSize(): the file's length in bytes
   "transactions": [                     storage.iterator(), in file order
     {"tid": TID, "status": " " | "p" | "u",
      "user": HEX, "description": HEX,
      "extension": EXT,                  the unpickled extension (empty object when none)
      "extension_bytes": HEX,            the extension exactly as stored
      "records": [                       iterating the transaction, in file order
        {"oid": OID, "tid": TID,
         "data": DATA | null,            null: the record undoes the object's creation or
                                         deletes it (back-pointer 0)
         "data_txn": TID | null,         the transaction whose record holds the data, when
                                         this record is a back-pointer (undo, pack)
         "is_blob": bool}]}],            the data is a ZODB.blob.Blob pickle
   "objects": [                          one per oid seen in the iterator, by oid
     {"oid": OID,
      "load": {"data": DATA, "tid": TID} | ERROR,       storage.load(oid)
      "get_tid": {"tid": TID} | ERROR,                  storage.getTid(oid)
      "history": [                                      storage.history(oid, size=100)
        {"tid": TID, "time": float, "user_name": HEX, "description": HEX,
         "size": int,                                   the record's pickle length (0 for a
                                                        back-pointer)
         "extension": EXT}] | ERROR,                    the dict's other keys (the
                                                        transaction's extension)
      "revisions": [                                    one per record of this oid in the
                                                        iterator, by tid
        {"tid": TID,
         "load_serial": DATA | ERROR,                   storage.loadSerial(oid, tid)
         "load_before": LOAD_BEFORE}],                  storage.loadBefore(oid, tid)
      "load_before_max": LOAD_BEFORE}],                 storage.loadBefore(oid, ffffffffffffffff)
     where LOAD_BEFORE = {"data": DATA, "start": TID, "end": TID | null} | null | ERROR
   "undo_log": [                         storage.undoLog(0, 1000), newest first
     {"id": HEX,                         the opaque id, as raw bytes (FileStorage: base64 of tid)
      "tid": TID,                        the tid that id names (FileStorage-specific decoding)
      "time": float, "user_name": HEX, "description": HEX,
      "size": int,                       FileStorage: the transaction record's length
      "extension": EXT}],                the dict's other keys
   "record_iternext": [                  the walk next=None, next=answer[3], ... until None
     {"next_in": OID | null, "oid": OID, "tid": TID, "data": DATA, "next": OID | null}
     or {"next_in": OID, "error": "POSKeyError"}],   the object at next_in cannot be loaded
                                         (deleted, creation undone); the walk goes on with
                                         next_in + 1 and ends when that call raises
                                         ValueError (no oid >= next_in + 1)
   "blobs": {                            null without --blobs
     "layout": string,                   the .layout marker ("bushy", "lawn")
     "files": [                          every committed blob file, by (oid, tid)
       {"oid": OID, "tid": TID, "path": string (relative, "/"-separated),
        "sha256": HEX, "len": int}]} | null
  }

Floats are those Python computes (TimeStamp(tid).timeTime()); compare them as numbers.
"""

import argparse
import base64
import hashlib
import json
import os
import sys

from ZODB.blob import FilesystemHelper
from ZODB.blob import is_blob_record
from ZODB.FileStorage import FileStorage
from ZODB.POSException import POSKeyError
from ZODB.utils import maxtid
from ZODB.utils import p64
from ZODB.utils import u64

FORMAT = "zeoraid-fsdump/1"
ERROR = {"error": "POSKeyError"}
HISTORY_KEYS = ("tid", "time", "user_name", "description", "size")
UNDO_KEYS = ("id", "time", "user_name", "description", "size")


def h(b):
    return b.hex()


def data_digest(data):
    if data is None:
        return None
    return {"sha256": hashlib.sha256(data).hexdigest(), "len": len(data)}


def value(v):
    """The tagged JSON encoding of a pickle value (see VALUE above)."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return {"float": v}
    if isinstance(v, str):
        return {"str": v}
    if isinstance(v, (bytes, bytearray)):
        return {"bytes": bytes(v).hex()}
    if isinstance(v, list):
        return {"list": [value(x) for x in v]}
    if isinstance(v, tuple):
        return {"tuple": [value(x) for x in v]}
    if isinstance(v, dict):
        items = [[value(k), value(x)] for k, x in v.items()]
        items.sort(key=lambda kv: canonical(kv[0]))
        return {"dict": items}
    return {"repr": repr(v)}


def canonical(v):
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def extension(d, skip=()):
    out = {}
    for k, v in d.items():
        if k in skip:
            continue
        key = k if isinstance(k, str) else "!" + canonical(value(k))
        out[key] = value(v)
    return out


def call(f, *args):
    """f(*args), or None when it raises POSKeyError (the caller writes ERROR then)."""
    try:
        return True, f(*args)
    except POSKeyError:
        return False, None


def load_before(storage, oid, tid):
    ok, r = call(storage.loadBefore, oid, tid)
    if not ok:
        return ERROR
    if r is None:
        return None
    data, start, end = r
    return {"data": data_digest(data), "start": h(start), "end": h(end) if end else None}


def dump_transactions(storage):
    transactions = []
    revisions = {}  # oid -> [tid, ...] in file order
    for txn in storage.iterator():
        records = []
        for r in txn:
            records.append({
                "oid": h(r.oid),
                "tid": h(r.tid),
                "data": data_digest(r.data),
                "data_txn": h(r.data_txn) if r.data_txn else None,
                "is_blob": bool(r.data) and is_blob_record(r.data),
            })
            revisions.setdefault(r.oid, []).append(r.tid)
        transactions.append({
            "tid": h(txn.tid),
            "status": txn.status,
            "user": h(txn.user),
            "description": h(txn.description),
            "extension": extension(txn.extension),
            "extension_bytes": h(txn.extension_bytes),
            "records": records,
        })
    return transactions, revisions


def dump_object(storage, oid, tids):
    ok, r = call(storage.load, oid)
    load = {"data": data_digest(r[0]), "tid": h(r[1])} if ok else ERROR
    ok, tid = call(storage.getTid, oid)
    get_tid = {"tid": h(tid)} if ok else ERROR
    ok, entries = call(storage.history, oid, 100)
    if ok:
        history = [{
            "tid": h(e["tid"]),
            "time": e["time"],
            "user_name": h(e["user_name"]),
            "description": h(e["description"]),
            "size": e["size"],
            "extension": extension(e, HISTORY_KEYS),
        } for e in entries]
    else:
        history = ERROR
    revisions = []
    for tid in sorted(set(tids)):
        ok, data = call(storage.loadSerial, oid, tid)
        revisions.append({
            "tid": h(tid),
            "load_serial": data_digest(data) if ok else ERROR,
            "load_before": load_before(storage, oid, tid),
        })
    return {
        "oid": h(oid),
        "load": load,
        "get_tid": get_tid,
        "history": history,
        "revisions": revisions,
        "load_before_max": load_before(storage, oid, maxtid),
    }


def dump_undo_log(storage):
    out = []
    for e in storage.undoLog(0, 1000):
        raw_id = e["id"] if isinstance(e["id"], bytes) else e["id"].encode("ascii")
        out.append({
            "id": h(raw_id),
            "tid": h(base64.decodebytes(raw_id + b"\n")),
            "time": e["time"],
            "user_name": h(e["user_name"]),
            "description": h(e["description"]),
            "size": e["size"],
            "extension": extension(e, UNDO_KEYS),
        })
    return out


def dump_record_iternext(storage):
    out = []
    if len(storage) == 0:
        return out
    next_in = None
    while True:
        try:
            oid, tid, data, nxt = storage.record_iternext(next_in)
        except POSKeyError:
            if next_in is None:
                raise  # the smallest oid cannot be loaded: which one is it? (never seen)
            out.append({"next_in": h(next_in), "error": "POSKeyError"})
            next_in = p64(u64(next_in) + 1)
            continue
        except ValueError:
            # No oid >= next_in: only possible right after an object that cannot be loaded
            # was the last one.
            if out and "error" in out[-1]:
                return out
            raise
        out.append({
            "next_in": h(next_in) if next_in is not None else None,
            "oid": h(oid),
            "tid": h(tid),
            "data": data_digest(data),
            "next": h(nxt) if nxt is not None else None,
        })
        if nxt is None:
            return out
        next_in = nxt


def dump_blobs(blob_dir):
    with open(os.path.join(blob_dir, ".layout")) as f:
        layout = f.read().strip()
    helper = FilesystemHelper(blob_dir, layout)  # reads only; create() is never called
    files = []
    for oid, path in helper.listOIDs():
        for name in os.listdir(path):
            full = os.path.join(path, name)
            b_oid, tid = helper.splitBlobFilename(full)
            if b_oid is None or not os.path.isfile(full):
                continue
            with open(full, "rb") as f:
                content = f.read()
            files.append({
                "oid": h(b_oid),
                "tid": h(tid),
                "path": os.path.relpath(full, blob_dir).replace(os.sep, "/"),
                "sha256": hashlib.sha256(content).hexdigest(),
                "len": len(content),
            })
    files.sort(key=lambda f: (f["oid"], f["tid"]))
    return {"layout": layout, "files": files}


def dump(path, blob_dir=None):
    storage = FileStorage(path, read_only=True)
    try:
        transactions, revisions = dump_transactions(storage)
        return {
            "format": FORMAT,
            "last_transaction": h(storage.lastTransaction()),
            "len": len(storage),
            "size": storage.getSize(),
            "transactions": transactions,
            "objects": [dump_object(storage, oid, tids) for oid, tids in sorted(revisions.items())],
            "undo_log": dump_undo_log(storage),
            "record_iternext": dump_record_iternext(storage),
            "blobs": dump_blobs(blob_dir) if blob_dir else None,
        }
    finally:
        storage.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", help="the Data.fs to describe")
    parser.add_argument("--blobs", metavar="DIR", help="its blob directory")
    args = parser.parse_args()
    doc = dump(args.path, args.blobs)
    json.dump(doc, sys.stdout, indent=1, sort_keys=True, ensure_ascii=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
