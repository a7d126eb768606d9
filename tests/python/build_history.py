"""Build a long, varied history through a ZEO server (the RAID front), for the recovery tests.

usage: build_history.py HOST:PORT TXNS BLOB_CACHE_DIR [--undo-blobs] [--workers N]

Commits at least 1.1 x TXNS transactions with stock ZEO clients (ZODB.DB over ClientStorage):

  * the bulk: N worker threads (default 4), each with its own connection and its own 16
    PersistentMappings, each transaction changing 3 of them (small values), with a user, a
    description and an extension, no sleeping;
  * blobs: 12 ZODB.blob.Blob objects, created over 3 transactions, then two more revisions each
    (one transaction per revision);
  * undo: 25 transactions each undone at once (DB.undo: an undo record with back-pointers to
    the revision before), and with --undo-blobs also 3 blob revisions undone (a blob record
    with a back-pointer: only on local backends, since stock ZEO has no restoreBlob and a copied
    blob back-pointer becomes a plain blob on a remote target);
  * a pack after the first tenth of the bulk: DB.pack() packs the history up to then, leaving
    packed transactions (status 'p') and removing those whose every record was superseded;
    more blob revisions and undos and at least TXNS transactions follow it, so that the
    packed storage holds at least TXNS transactions.

Prints one JSON object: {"transactions": N committed (the pack removed some), "undos": N, "blob_revisions": N,
"packed_at": unix time, "seconds": elapsed}. Exits 1 on any error (with the traceback).
"""

import argparse
import json
import os
import sys
import threading
import time
import traceback

import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZEO.ClientStorage import ClientStorage
from ZODB.blob import Blob

OBJECTS_PER_WORKER = 16
CHANGES_PER_TXN = 3
BLOBS = 12
UNDOS = 25


def open_db(address, blob_dir=None):
    kw = {"wait_timeout": 30}
    if blob_dir:
        kw.update(blob_dir=blob_dir, shared_blob_dir=False)
    return ZODB.DB(ClientStorage(address, **kw))


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = 0

    def add(self, k=1):
        with self.lock:
            self.n += k


def commit(tm, counter, description, user="builder", **ext):
    t = tm.get()
    t.note(description)
    t.user = user
    for k, v in ext.items():
        t.setExtendedInfo(k, v)
    tm.commit()
    counter.add()


def bulk(address, worker, txns, counter, errors):
    """`txns` transactions on the worker's own objects."""
    try:
        db = open_db(address)
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        tm.begin()
        objs = conn.root()[f"history-{worker}"]
        for i in range(txns):
            for k in range(CHANGES_PER_TXN):
                o = objs[(i * CHANGES_PER_TXN + k) % len(objs)]
                o["v"] = i
                o["w"] = "x" * (i % 40)
            commit(tm, counter, f"worker {worker} txn {i}", f"w{worker}", n=i)
            tm.begin()
        conn.close()
        db.close()
    except Exception:
        errors.append(traceback.format_exc())


def run_bulk(address, workers, txns, counter):
    errors = []
    per = -(-txns // workers)
    threads = [threading.Thread(target=bulk, args=(address, w, per, counter, errors)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("a worker failed:\n" + "\n".join(errors))


def undo_last(db, tm, counter, what):
    """Undoes the newest transaction (ours, just committed)."""
    db.undo(db.undoLog(0, 1)[0]["id"], tm.get())
    commit(tm, counter, f"undo {what}")


def specials(db, tm, conn, counter, stats, undo_blobs, rounds):
    """Blob revisions and undos (single-threaded)."""
    root = conn.root()
    blobs = root["blobs"]
    for r in range(rounds):
        for i in range(BLOBS):
            with blobs[i].open("w") as f:
                f.write(f"blob {i} revision {r} ".encode() * (50 + 10 * i))
            commit(tm, counter, f"blob {i} revision {r}")
            stats["blob_revisions"] += 1
    for u in range(UNDOS):
        o = root["undoable"]
        o["v"] = f"to be undone {u}"
        commit(tm, counter, f"undoable change {u}")
        undo_last(db, tm, counter, f"change {u}")
        stats["undos"] += 1
    if undo_blobs:
        for i in range(3):
            with blobs[i].open("w") as f:
                f.write(b"a blob revision that is undone")
            commit(tm, counter, f"blob {i} revision to undo")
            undo_last(db, tm, counter, f"blob {i} revision")
            stats["undos"] += 1
            stats["blob_revisions"] += 1


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("address")
    p.add_argument("txns", type=int)
    p.add_argument("blob_cache")
    p.add_argument("--undo-blobs", action="store_true")
    p.add_argument("--workers", type=int, default=4)
    a = p.parse_args(argv[1:])
    host, _, port = a.address.rpartition(":")
    address = (host, int(port))
    txns, blob_cache, undo_blobs, workers = a.txns, a.blob_cache, a.undo_blobs, a.workers
    t0 = time.time()
    counter = Counter()
    stats = {"undos": 0, "blob_revisions": 0}

    db = open_db(address, blob_cache)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    tm.begin()
    root = conn.root()
    for w in range(workers):
        root[f"history-{w}"] = [PersistentMapping(v=0, w="") for _ in range(OBJECTS_PER_WORKER)]
    root["undoable"] = PersistentMapping(v="start")
    commit(tm, counter, "set-up")
    # Blobs: created over 3 transactions.
    root["blobs"] = blobs = []
    for i in range(BLOBS):
        b = Blob()
        with b.open("w") as f:
            f.write(f"blob {i} first ".encode() * (100 + i))
        blobs.append(b)
        if i % 4 == 3:
            root["blobs"] = list(blobs)
            commit(tm, counter, f"blobs up to {i}")
            stats["blob_revisions"] += 4

    # A tenth of the bulk before the pack, which removes most of it (a transaction whose every
    # record is superseded goes), then at least `txns` transactions after it, so that the
    # packed storage still holds `txns`.
    tm.begin()
    specials(db, tm, conn, counter, stats, undo_blobs, rounds=1)
    run_bulk(address, workers, txns // 10, counter)
    packed_at = time.time()
    db.pack(packed_at)
    target = counter.n + txns
    tm.begin()
    specials(db, tm, conn, counter, stats, undo_blobs, rounds=1)
    run_bulk(address, workers, max(0, target - counter.n), counter)
    conn.close()
    db.close()
    print(json.dumps({"transactions": counter.n, "undos": stats["undos"],
                      "blob_revisions": stats["blob_revisions"], "packed_at": packed_at,
                      "seconds": round(time.time() - t0, 1)}))
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv)
    except Exception:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
