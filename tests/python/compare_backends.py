"""Check that the backends of a RAID hold one identical history.

usage:
  compare_backends.py compare [--min-transactions N] [--front FILE]
                              --backend NAME DATA_FS BLOB_DIR|- [--backend ...]
  compare_backends.py front pickle|msgpack HOST:PORT [STORAGE]

`compare` opens every backend's Data.fs read-only with ZODB's own FileStorage (a local zeoraid
backend and a stock runzeo backend are both FileStorages) and compares them, in file order:

  * transaction by transaction: tid, status, user, description and the extension (unpickled,
    compared as values: a stock ZEO server pickles the extension dict it receives itself, with
    memo opcodes, so equal extensions can differ in their bytes; such byte differences are
    listed under "notes" without failing the comparison);
  * record by record: oid, tid, the data (sha256 and length) and data_txn (the back-pointer of
    an undo or a pack);
  * blob files: every committed blob file under BLOB_DIR, by (oid, tid), with its sha256 ("-"
    when the backend keeps no blobs; a blob directory that was never created holds none).

It prints one JSON object on stdout:
  {"equal": bool, "transactions": N (of the first backend), "records": N, "blobs": N,
   "last_tid": HEX, "backends": [{"name", "transactions", "records", "blobs", "last_tid"}],
   "differences": ["...", ...],          the first differences found (at most 20)
   "notes": ["...", ...]}                 differences that are not failures (at most 20)
and exits 0 when every backend equals the first one and holds at least N transactions
(`--min-transactions`, default 1), and every transaction the front reported (`--front FILE`,
the output of `front`, or commit_stream.py's acknowledged.json whose last_tid is null) is there
with the same last tid; 1 otherwise; 2 on a usage error.

`front` asks a running ZEO server (the RAID front) as a ZEO client for its last transaction and
the tids its iterator reports, and prints {"last_tid": HEX, "tids": [HEX, ...]}.

Nothing is written to any Data.fs, index or blob directory.
"""

import argparse
import hashlib
import json
import os
import sys

from dump_fs import canonical
from dump_fs import extension

MAX_DIFFERENCES = 20


def h(b):
    return b.hex() if b else None


def digest(data):
    if data is None:
        return None
    return hashlib.sha256(data).hexdigest() + ":" + str(len(data))


def read_history(path):
    """[(txn_key, [record_key, ...], extension_bytes), ...] of a FileStorage, in file order, and
    its last tid."""
    from ZODB.FileStorage import FileStorage

    storage = FileStorage(path, read_only=True)
    try:
        transactions = []
        for txn in storage.iterator():
            key = {
                "tid": h(txn.tid),
                "status": txn.status,
                "user": h(txn.user),
                "description": h(txn.description),
                "extension": canonical(extension(txn.extension)),
            }
            records = [{
                "oid": h(r.oid),
                "tid": h(r.tid),
                "data": digest(r.data),
                "data_txn": h(r.data_txn),
            } for r in txn]
            transactions.append((key, records, h(txn.extension_bytes)))
        return transactions, h(storage.lastTransaction())
    finally:
        storage.close()


def read_blobs(blob_dir):
    """{(oid, tid): sha256} of every committed blob file."""
    from ZODB.blob import FilesystemHelper

    if blob_dir is None:
        return {}
    layout_file = os.path.join(blob_dir, ".layout")
    if not os.path.exists(layout_file):
        # Never created, or created without a blob in it.
        found = []
        for _root, _dirs, files in os.walk(blob_dir):
            found.extend(f for f in files if f.endswith(".blob"))
        if found:
            raise SystemExit(f"{blob_dir} holds blob files but no .layout: {found[:3]}")
        return {}
    with open(layout_file) as f:
        layout = f.read().strip()
    helper = FilesystemHelper(blob_dir, layout)  # reads only; create() is never called
    files = {}
    for _oid, path in helper.listOIDs():
        for name in os.listdir(path):
            full = os.path.join(path, name)
            oid, tid = helper.splitBlobFilename(full)
            if oid is None or not os.path.isfile(full):
                continue
            with open(full, "rb") as f:
                files[(h(oid), h(tid))] = hashlib.sha256(f.read()).hexdigest()
    return files


def compare(args):
    differences = []
    notes = []

    def differ(text):
        if len(differences) < MAX_DIFFERENCES:
            differences.append(text)

    def note(text):
        if len(notes) < MAX_DIFFERENCES:
            notes.append(text)

    backends = []
    for name, path, blob_dir in args.backend:
        if not os.path.isfile(path):
            differ(f"backend {name}: {path} does not exist")
            backends.append((name, [], None, {}))
            continue
        transactions, last = read_history(path)
        blobs = read_blobs(None if blob_dir == "-" else blob_dir)
        backends.append((name, transactions, last, blobs))

    first_name, first, first_last, first_blobs = backends[0]
    for name, transactions, last, blobs in backends[1:]:
        where = f"{name} vs {first_name}"
        if len(transactions) != len(first):
            differ(f"{where}: {len(transactions)} transactions, {len(first)} in {first_name}")
        for i, ((tk, trecs, tbytes), (fk, frecs, fbytes)) in enumerate(zip(transactions, first)):
            if tk != fk:
                differ(f"{where}: transaction #{i}: {tk} != {fk}")
                continue
            if tbytes != fbytes:
                note(f"{where}: transaction {tk['tid']}: the same extension pickled differently: "
                     f"{tbytes} != {fbytes}")
            if trecs != frecs:
                if len(trecs) != len(frecs):
                    differ(f"{where}: transaction {tk['tid']}: {len(trecs)} records, {len(frecs)}")
                for r, f in zip(trecs, frecs):
                    if r != f:
                        differ(f"{where}: transaction {tk['tid']}: record {r} != {f}")
        if last != first_last:
            differ(f"{where}: last transaction {last} != {first_last}")
        for key in sorted(set(blobs) | set(first_blobs)):
            mine, theirs = blobs.get(key), first_blobs.get(key)
            if mine != theirs:
                differ(f"{where}: blob oid {key[0]} tid {key[1]}: sha256 {mine} != {theirs}")

    for name, transactions, _last, _blobs in backends:
        if len(transactions) < args.min_transactions:
            differ(f"backend {name}: {len(transactions)} transactions, expected at least "
                   f"{args.min_transactions}")
    if args.front:
        with open(args.front) as f:
            front = json.load(f)
        for name, transactions, last, _blobs in backends:
            tids = {k["tid"] for k, _, _ in transactions}
            missing = [t for t in front["tids"] if t not in tids]
            if missing:
                differ(f"backend {name}: {len(missing)} transactions the front reported are "
                       f"missing, first {missing[0]}")
            if front["last_tid"] is not None and front["last_tid"] != last:
                differ(f"backend {name}: last transaction {last}, the front said "
                       f"{front['last_tid']}")

    report = {
        "equal": not differences,
        "transactions": len(first),
        "records": sum(len(r) for _, r, _ in first),
        "blobs": len(first_blobs),
        "last_tid": first_last,
        "backends": [{
            "name": name,
            "transactions": len(transactions),
            "records": sum(len(r) for _, r, _ in transactions),
            "blobs": len(blobs),
            "last_tid": last,
        } for name, transactions, last, blobs in backends],
        "differences": differences,
        "notes": notes,
    }
    json.dump(report, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0 if not differences else 1


def front(args):
    from ZEO.ClientStorage import ClientStorage

    host, _, port = args.address.rpartition(":")
    storage = ClientStorage((host, int(port)), storage=args.storage, wait_timeout=30,
                            read_only=True)
    try:
        tids = [h(t.tid) for t in storage.iterator()]
        last = h(storage.lastTransaction())
    finally:
        storage.close()
    json.dump({"last_tid": last, "tids": tids}, sys.stdout)
    sys.stdout.write("\n")
    return 0


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--backend", nargs=3, action="append", required=True,
                   metavar=("NAME", "DATA_FS", "BLOB_DIR"))
    c.add_argument("--min-transactions", type=int, default=1)
    c.add_argument("--front", metavar="FILE")
    f = sub.add_parser("front")
    f.add_argument("encoding", choices=["pickle", "msgpack"])
    f.add_argument("address")
    f.add_argument("storage", nargs="?", default="1")
    args = parser.parse_args(argv[1:])
    if args.command == "compare":
        return compare(args)
    return front(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
